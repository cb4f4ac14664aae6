"""The task bodies of `<model>__train`: ingest → validate → train → evaluate → register → promote.

Each function is the body of the task of the same name. With `approval_required`, `promote` is
not in this DAG: `request_approval` starts `<model>__approve` (`steps.approve`) instead.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import date
from typing import Any, Literal, cast

from mlops_pipeline import layout
from mlops_pipeline.ingest import SnapshotManifest
from mlops_pipeline.settings import get_settings
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.steps import RunInfo, StepRejected, claim_evidence
from mlops_pipeline.steps.results import (
    Candidate,
    Evaluation,
    Promotion,
    Registered,
    Snapshot,
    Validated,
    promotion,
)
from mlops_pipeline.store import ObjectStore

log = logging.getLogger(__name__)


def ingest(spec: ModelSpec, store: ObjectStore, as_of: date, window_days: int | None) -> Snapshot:
    """Snapshot the data window ending `as_of`; the manifest as a dict.

    A window without files, or with a file that cannot be parsed, is refused (no retry: the same
    bytes fail again); an unreadable file is recorded under `quarantine/` first.
    """
    from mlops_pipeline.ingest import (
        NoSourceDataError,
        UnreadableSourceError,
        ingest_window,
        record_unreadable,
    )

    try:
        manifest = ingest_window(spec, store, as_of, window_days or spec.source.window_days)
    except NoSourceDataError as exc:
        raise StepRejected(str(exc)) from exc
    except UnreadableSourceError as exc:
        record = record_unreadable(store, spec.name, exc)
        raise StepRejected(
            f"{exc}. Nothing was snapshotted; fix or remove the file and rerun. Record: {record}"
        ) from exc
    return cast(Snapshot, asdict(manifest))


def validate(spec: ModelSpec, store: ObjectStore, manifest: Snapshot, run: RunInfo) -> Validated:
    """Validate the snapshot with Great Expectations; publish results, quarantine, and the clean rows."""
    from mlops_pipeline.candidates import columns_with_missing
    from mlops_pipeline.ingest import read_snapshot_table
    from mlops_pipeline.targets import TargetError
    from mlops_pipeline.validation import publish_validation, validate_frame

    snapshot = SnapshotManifest(**manifest)
    # Before the work: a run that may not write its evidence is refused at once.
    claim_evidence(
        store,
        run,
        layout.validation_prefix(spec.name, run.dag_run_id),
        layout.quarantine_prefix(spec.name, run.dag_run_id),
    )
    try:
        outcome = validate_frame(read_snapshot_table(store, snapshot), spec)
    except TargetError as exc:  # labels a `warn` policy let through, which the model cannot use
        raise StepRejected(f"validation of {_described(snapshot)}: {exc}") from exc
    artifacts = publish_validation(outcome, store, spec.name, run.dag_run_id)
    summary: dict[str, Any] = {
        "passed": outcome.passed,
        "rows": outcome.row_count,
        "quarantined_rows": outcome.quarantined_count,
        "quarantine_share": outcome.quarantine_share,
        "warnings": list(outcome.warnings),
        "result_uri": artifacts.result_uri,
        "data_docs_uri": artifacts.data_docs_uri,
        "quarantine_uri": artifacts.quarantine_uri,
    }
    if not outcome.passed:
        raise StepRejected(
            f"validation of {_described(snapshot)} failed: {outcome.failure_reason}. "
            f"Report: {artifacts.summary_uri}; Data Docs: {artifacts.data_docs_uri}"
            + (f"; quarantined rows: {artifacts.quarantine_uri}" if artifacts.quarantine_uri else "")
        )
    split = _write_split(spec, store, run, outcome.clean)
    return cast(
        Validated,
        {
            **summary,
            "clean_rows": len(outcome.clean),
            **split,
            "columns_with_missing": columns_with_missing(outcome.clean),
        },
    )


# Source files named in a refusal; the snapshot's manifest lists every one of them.
NAMED_SOURCE_FILES = 5


def _described(snapshot: SnapshotManifest) -> str:
    """The snapshot and the source files it was read from, for a refusal an operator can act on."""
    files = snapshot.source_files
    named = ", ".join(files[:NAMED_SOURCE_FILES])
    if len(files) > NAMED_SOURCE_FILES:
        named += f" and {len(files) - NAMED_SOURCE_FILES} more (listed in the snapshot's manifest)"
    return f"{snapshot.data_uri} (read from {named})"


def _write_split(spec: ModelSpec, store: ObjectStore, run: RunInfo, clean: Any) -> dict[str, Any]:
    """Split the clean rows by hashed id once and store each side as Parquet; keys and row counts."""
    from mlops_pipeline.training import clean_sides_parquet

    written: dict[str, Any] = {}
    for side, (data, rows) in clean_sides_parquet(clean, spec).items():
        key = layout.clean_rows_key(spec.name, run.dag_run_id, cast(Literal["train", "holdout"], side))
        store.write_bytes(key, data)
        written[f"{side}_key"], written[f"{side}_rows"] = key, rows
    log.info(
        "clean rows split by hashed id: %d to train on, %d in the holdout",
        written["train_rows"],
        written["holdout_rows"],
    )
    return written


def _read_side(store: ObjectStore, key: str, columns: list[str]) -> tuple[Any, Any]:
    """One side of the clean rows, only `columns` of it, and the file's schema, from one download."""
    from mlops_pipeline.training import read_clean_side

    return read_clean_side(store.read_bytes(key), columns)


def _clean_columns(schema: Any, validated: Validated) -> Any:
    """What MLflow records of all the clean rows (`candidates.CleanColumns`) from a side's Parquet
    schema and the payload, without reading the rows."""
    from mlops_pipeline.candidates import CleanColumns

    empty = schema.empty_table().to_pandas()
    return CleanColumns(
        dtypes={str(name): dtype for name, dtype in empty.dtypes.items()},
        rows=validated["clean_rows"],
        columns_with_missing=frozenset(validated["columns_with_missing"]),
    )


def train(
    spec: ModelSpec, store: ObjectStore, manifest: Snapshot, validated: Validated, run: RunInfo
) -> Candidate:
    """Fit the pipeline on the clean rows and log it to MLflow with its lineage; the logged candidate."""
    from mlops_pipeline import candidates, registry
    from mlops_pipeline.evaluation import metrics_sample, model_metrics
    from mlops_pipeline.training import fit_train_rows, model_columns

    settings = get_settings()
    registry.import_model_format()
    registry.configured_client()
    train_rows, schema = _read_side(store, validated["train_key"], model_columns(spec, evaluation=False))
    try:
        result = fit_train_rows(train_rows, spec, validated["holdout_rows"])
    except ValueError as exc:
        raise StepRejected(str(exc)) from exc
    # On a fixed-seed sample of the training rows: they describe the fit (the gates judge the
    # holdout), and predicting every training row again costs seconds per million rows.
    sample = metrics_sample(train_rows, spec.split.seed)
    train_metrics = {f"train_{k}": v for k, v in model_metrics(result.pipeline, sample, spec).items()}
    candidate = candidates.log_candidate(
        result,
        spec,
        SnapshotManifest(**manifest),
        train_rows,
        train_metrics,
        run_tags={**run.tags(), "mlops.quarantined_rows": str(validated["quarantined_rows"])},
        code=candidates.code_version(settings.code_version),
        training_metrics_rows=len(sample),
        clean_columns=_clean_columns(schema, validated),
    )
    return cast(Candidate, asdict(candidate))


def evaluate(
    spec: ModelSpec,
    store: ObjectStore,
    validated: Validated,
    candidate: Candidate,
    run: RunInfo,
) -> Evaluation:
    """Score candidate and champion on the same holdout, apply the gates, publish the gate report."""
    from mlops_pipeline import registry

    registry.import_model_format()
    import mlflow

    from mlops_pipeline.evaluation import (
        evaluate_gates,
        latency_p95_ms_per_1k,
        model_metrics,
        predict_frame,
        render_html,
        slice_metrics,
    )
    from mlops_pipeline.fairness import fairness_report
    from mlops_pipeline.training import model_columns

    client = registry.configured_client()
    holdout, _ = _read_side(store, validated["holdout_key"], model_columns(spec, evaluation=True))
    pipeline = registry.load_verified(candidate["model_uri"], candidate["artifact_sha256"])
    # The holdout is predicted once: its metrics and every slice's come from these predictions.
    log.info("scoring the candidate on the holdout: %d rows", len(holdout))
    predictions = predict_frame(pipeline, holdout, spec)
    candidate_metrics = predictions.metrics()
    champion = registry.alias_version(client, spec.name, registry.CHAMPION)
    champion_metrics = None
    champion_info = None
    if champion is not None:
        champion_metrics = model_metrics(registry.load_version(client, champion), holdout, spec)
        champion_info = {"version": str(champion.version), "run_id": champion.run_id}
    report = evaluate_gates(
        spec,
        candidate_metrics,
        champion_metrics,
        slice_metrics(pipeline, holdout, spec, predictions),
        latency_p95_ms_per_1k(pipeline, holdout, spec),
        candidate["model_size_mb"],
        candidate={"run_id": candidate["run_id"], "holdout_rows": len(holdout)},
        champion=champion_info,
        fairness=fairness_report(predictions, holdout, spec),
    )
    claim_evidence(store, run, layout.reports_prefix(spec.name, run.dag_run_id))
    json_key = layout.gate_report_key(spec.name, run.dag_run_id, "json")
    html_key = layout.gate_report_key(spec.name, run.dag_run_id, "html")
    store.write_bytes(json_key, report.to_json())
    store.write_bytes(html_key, render_html(report).encode())
    json_uri, html_uri = store.uri(json_key), store.uri(html_key)
    with mlflow.start_run(run_id=candidate["run_id"]):
        mlflow.log_metrics({f"holdout_{k}": v for k, v in candidate_metrics.items()})
        if champion_metrics:
            mlflow.log_metrics({f"champion_holdout_{k}": v for k, v in champion_metrics.items()})
        mlflow.log_metric("gate_passed", float(report.passed))
        mlflow.set_tags({"gate_report_uri": json_uri, "gate_passed": str(report.passed).lower()})
    result: Evaluation = {
        "passed": report.passed,
        "failures": report.failures,
        "report_json_uri": json_uri,
        "report_html_uri": html_uri,
        "candidate_metrics": candidate_metrics,
        "champion_version": champion_info["version"] if champion_info else None,
    }
    from mlops_pipeline import telemetry

    telemetry.push(telemetry.gate_metrics(spec.name, result))
    if not report.passed:
        raise StepRejected(
            f"gate failed for {spec.name}: " + "; ".join(report.failures) + f". Report: {html_uri}"
        )
    return result


def register(
    spec: ModelSpec,
    manifest: Snapshot,
    candidate: Candidate,
    evaluation: Evaluation,
    run: RunInfo,
) -> Registered:
    """Register the candidate that passed its gates and point `challenger` at it."""
    from mlops_pipeline import registry

    client = registry.configured_client()
    version = registry.register_candidate(
        client,
        spec,
        registry.LoggedCandidate(**candidate),
        data_sha256=manifest["sha256"],
        gate_report_uri=evaluation["report_json_uri"],
        extra_tags={**run.tags(), "data_uri": manifest["data_uri"]},
    )
    return {"version": str(version.version), "model_uri": f"models:/{spec.name}/{version.version}"}


def promote(spec: ModelSpec, store: ObjectStore, registered: Registered, run: RunInfo) -> Promotion:
    """Move `champion` to the registered version and record the promotion."""
    from mlops_pipeline import registry

    client = registry.configured_client()
    version = client.get_model_version(spec.name, registered["version"])
    record = registry.promote(
        client, store, version, actor=run.actor, dag_run_id=run.dag_run_id, at=run.event_time
    )
    return promotion(record)
