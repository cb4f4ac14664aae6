"""The payloads passed between tasks (Airflow XComs): one TypedDict each, the contract of the DAGs.

Each is what a step returns and what the next steps, the DAG file's templates, the UI plugin and
the demo read. They stay plain JSON (TypedDicts are dicts at run time), so XComs, the REST API's
`returnValue` and older runs read the same; the types make every key a checked name instead of a
string read in several files. Light on purpose: the DAG files import this at parse time.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TypedDict, cast

if TYPE_CHECKING:
    from mlops_pipeline.registry import PromotionRecord

# --- <model>__train --------------------------------------------------------------------------------


class Snapshot(TypedDict):
    """`ingest`: the immutable snapshot of the data window (`ingest.SnapshotManifest` as a dict)."""

    model: str
    as_of: str
    window_start: str
    window_days: int
    rows: int
    columns: list[str]
    sha256: str  # the dataset's identity everywhere downstream
    data_uri: str
    source_files: list[str]
    missing_days: list[str]


class Validated(TypedDict):
    """`validate`: the outcome of the GX suite, where its evidence is, and the clean rows."""

    passed: bool
    rows: int
    quarantined_rows: int
    quarantine_share: float
    warnings: list[str]
    result_uri: str
    data_docs_uri: str
    quarantine_uri: str | None
    clean_rows: int
    # The clean rows split once here (by hashed id, `training.holdout_mask`), each side its own
    # file: train reads only its rows, evaluate only the holdout, and neither hashes ids again.
    train_key: str
    train_rows: int
    holdout_key: str
    holdout_rows: int
    columns_with_missing: list[str]  # of all clean rows: the logged dataset's schema says which are required


class Candidate(TypedDict):
    """`train`: the pipeline logged to MLflow, not yet registered (`registry.LoggedCandidate` as a dict)."""

    run_id: str
    model_id: str
    model_uri: str
    artifact_sha256: str
    model_size_mb: float
    experiment_id: str


class Evaluation(TypedDict):
    """`evaluate`: the gate report's verdict and where the report is."""

    passed: bool
    failures: list[str]
    report_json_uri: str
    report_html_uri: str
    candidate_metrics: dict[str, float]
    champion_version: str | None


class Registered(TypedDict):
    """`register`: the new model version (alias `challenger`)."""

    version: str
    model_uri: str


class Promotion(TypedDict):
    """`promote` and `rollback`: the move of the `champion` alias (`registry.PromotionRecord` plus two names)."""

    champion_version: str
    previous_version: str | None
    action: str
    model: str
    from_version: str | None
    to_version: str
    actor: str
    dag_run_id: str
    at: str
    reason: str
    gate_report_uri: str | None
    data_sha256: str | None


def promotion(record: PromotionRecord) -> Promotion:
    """The payload of a move of `champion` (a `registry.PromotionRecord`), for promote and rollback."""
    return cast(
        Promotion,
        {"champion_version": record.to_version, "previous_version": record.from_version, **asdict(record)},
    )


# --- <model>__approve -------------------------------------------------------------------------------


class ApprovalRequest(TypedDict):
    """`request`: the candidate a person is asked about, and what they need to answer."""

    model: str
    version: str
    as_of: str | None  # the last day the candidate was trained on: re-scored when it is promoted
    gate_report_path: str | None  # the plugin's page of the training run's gate report
    holdout_metrics: dict[str, float]
    champion_version: str | None


class ApprovalDecided(TypedDict):
    """`decide`: the recorded decision (`approval.ApprovalDecision`) and what it did to the registry."""

    model: str
    version: str
    outcome: str  # approved, rejected, timed_out or superseded
    by: str
    reason: str
    dag_run_id: str
    at: str
    approved: bool
    summary: str


class Reproduced(TypedDict):
    """`reproduce`: a version rebuilt exactly from its lineage (`reproduction.ReproductionReport`)."""

    version: str
    identical: bool
    report_uri: str
    checks: list[str]  # what each check found
    environment_differences: list[str]  # then -> now; none changed the model


# --- <model>__score --------------------------------------------------------------------------------


class ModelRef(TypedDict):
    """One registered version, resolved once per scoring run, with the sha256 its artifact must have."""

    name: str
    version: str
    model_uri: str
    artifact_sha256: str


class InputFile(TypedDict):
    """One input file of a scoring run: what one mapped `score` task scores."""

    index: int
    key: str


class ScorePlan(TypedDict):
    """`plan`: the version(s) to score with, the input files, and the run's staging token."""

    ds: str
    token: str
    model: ModelRef
    shadow_model: ModelRef | None
    shadow_requested: bool
    # The share of ids the challenger serves in the published partition (a canary during its
    # shadow period); 0: none.
    canary_share: float
    input_root: str
    inputs: list[InputFile]
    stale_objects_deleted: int
    started: float


class StagedPart(TypedDict):
    """One staged output file (`predictions.PartFile` as a dict)."""

    key: str
    rows: int
    sha256: str
    bytes: int
    input_key: str
    input_sha256: str


class ScoredInput(TypedDict):
    """`score`: one input file scored into the run's staging prefix."""

    index: int
    input_key: str
    input_sha256: str
    part: StagedPart
    shadow_part: StagedPart | None
    quarantine_key: str | None
    # The file's distinct ids as sorted uint64 hashes (`.npy`, staged beside the part): publish
    # compares them across the day's files (`unique:<id>` across files).
    id_hashes_key: str
    stats: dict[str, Any]  # scoring.ScoreStats.to_dict()
    agreement: dict[str, Any] | None  # scoring.Agreement as a dict
    canary_rows: int  # published rows of this file served by the challenger (the canary)
    canary_note: str | None  # why the file has no canary rows although the plan asked for some
    classes: list[Any] | None
    shadow_classes: list[Any] | None


class Published(TypedDict):
    """`publish`: the published partition and the run's metrics."""

    ds: str
    rows: int
    quarantined_rows: int
    model_version: str
    manifest_uri: str
    generation: int
    shadow_version: str | None
    shadow_manifest_generation: int | None
    shadow_agreement: dict[str, float] | None
    rows_by_version: dict[str, int]  # published rows per model version (a canary serves some)
    metrics: dict[str, float]


class ShadowConcluded(TypedDict):
    """`conclude_shadow`: what the shadow period's evidence decided (`rollout.ShadowDecision`)."""

    challenger_version: str | None
    champion_version: str | None
    action: str  # none (no period open), wait, promote or refuse
    reasons: list[str]
    days: list[str]
    promotion: Promotion | None


# --- <model>__monitor ------------------------------------------------------------------------------


class RetrainDecision(TypedDict):
    """Whether the window's check triggers retraining (`monitoring.Decision` as a dict)."""

    retrain: bool
    reason: str
    alarming_windows: list[str]


class RollbackCheck(TypedDict):
    """Whether the window's live evidence rolls the champion back (`rollout.RollbackDecision`)."""

    action: str  # none, wait or rollback
    trigger: bool  # a rollback decided, recorded for the first time, not a dry run
    champion_version: str
    to_version: str | None
    reason: str


class WindowChecked(TypedDict):
    """`check`: one window's verdict (`monitoring.WindowVerdict` fields), the decision, and the evidence."""

    end: str
    start: str
    data_drift: bool
    prediction_drift: bool
    performance_drop: bool
    drifted_columns: list[str]
    run_id: str
    alarming: bool
    decision: RetrainDecision
    trigger: bool
    dry_run: bool
    days_used: list[str]
    days_missing: list[str]
    performance: dict[str, dict[str, float]]
    performance_drops: list[str]
    data_drift_report: str
    prediction_drift_report: str
    drift_scores: dict[str, float]
    evidently_workspace_runs: list[str]
    rollback: RollbackCheck
