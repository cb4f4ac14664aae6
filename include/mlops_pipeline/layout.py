"""Every key and prefix of the object store: the one module that knows the layout.

```
raw/<model>/ds=<as_of>/<sha256[:16]>/      snapshot.parquet + manifest.json (content-addressed, immutable)
validation/<model>/<run>/                  result.json, summary.json, data_docs/index.html, clean_{train,holdout}.parquet
quarantine/<model>/<run>/                  rows.parquet + reason.json (training); score/part-*.parquet + score/reason.json
quarantine/<model>/_unreadable/<kind>/ds=<ds>/<sha16>.json   a source, scoring input or labels file that could not be read (create-only)
reports/<model>/<run>/                     gate_report.{json,html}; data_drift.*, prediction_drift.*, monitoring.json
predictions/<model>/ds=<ds>/               _manifest.json (published last), _manifests/<generation>.json, _runs/<token>/part-*.parquet
predictions_shadow/<model>/ds=<ds>/        the same for the challenger's shadow scoring
monitoring/<model>/windows|triggers/<end>.json   window verdicts (replaced on rerun); retraining triggers (create-only)
registry/<model>/history/<sequence>.json   promotion history (create-only)
registry/<model>/promotions/<run>-v<version>.json   one run's promotion, claimed before the alias moves (create-only)
registry/<model>/rollouts/v<version>/      approval.json, started.json, outcome.json, rollback.json (create-only)
```
`<run>` is `run_segment(run id)`: the Airflow run id made safe for keys plus a hash of the exact
id, so the UI plugin can find a run's reports from the run id alone, even when the task that
wrote them failed (a refused batch, a failed gate), and no two runs share a folder; each such
folder's `_owner.json` names the run that owns it (`evidence.py`).
Nothing else in the package writes a key literal: the functions here name every one.
"""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Literal

from mlops_pipeline.store import safe_segment

# --- raw snapshots ---------------------------------------------------------------------------------


def snapshot_prefix(model: str, as_of: date, sha256: str) -> str:
    """Where a snapshot lives: content-addressed under its as-of partition."""
    return f"raw/{model}/ds={as_of.isoformat()}/{sha256[:16]}"


def snapshot_data_key(model: str, as_of: date, sha256: str) -> str:
    """A snapshot's rows (string columns; its sha256 is the content hash of `ingest.content_sha256`)."""
    return f"{snapshot_prefix(model, as_of, sha256)}/snapshot.parquet"


def snapshot_manifest_key(model: str, as_of: date, sha256: str) -> str:
    """A snapshot's manifest (written last: a folder without one is an interrupted ingest)."""
    return f"{snapshot_prefix(model, as_of, sha256)}/manifest.json"


# --- one run's evidence ---------------------------------------------------------------------------


# Hex digits of sha256(run id) in a run's segment: 64 bits, so finding a run id that lands in a
# given run's folder is a second-preimage search, not a guess.
RUN_SEGMENT_HASH_CHARS = 16


def run_segment(run_id: str) -> str:
    """A run's folder name: its id made readable for keys (cut to 100 characters) and a hash of
    the exact id, so that ids which read alike (`+00:00` vs `_00_00`) never share a folder."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:RUN_SEGMENT_HASH_CHARS]
    return f"{safe_segment(run_id)[:100]}-{digest}"


def evidence_owner_key(prefix: str) -> str:
    """Which run owns the evidence under `prefix` (create-only: `evidence.claim`)."""
    return f"{prefix}/_owner.json"


# --- one training run's validation and quarantine ------------------------------------------------


def validation_prefix(model: str, run_id: str) -> str:
    """One run's validation outputs."""
    return f"validation/{model}/{run_segment(run_id)}"


def validation_result_key(model: str, run_id: str) -> str:
    """The GX validation result (JSON) of one run."""
    return f"{validation_prefix(model, run_id)}/result.json"


def validation_summary_key(model: str, run_id: str) -> str:
    """The summary of one run's validation: rules, counts, policy outcomes."""
    return f"{validation_prefix(model, run_id)}/summary.json"


def data_docs_key(model: str, run_id: str) -> str:
    """The GX Data Docs page of one run's validation."""
    return f"{validation_prefix(model, run_id)}/data_docs/index.html"


def clean_rows_key(model: str, run_id: str, side: Literal["train", "holdout"]) -> str:
    """One side of the rows that passed validation: `train` (what the train task fits on) or
    `holdout` (what the evaluate task scores), split once by the validate task."""
    return f"{validation_prefix(model, run_id)}/clean_{side}.parquet"


def quarantine_prefix(model: str, run_id: str) -> str:
    """One run's quarantined rows and the reason."""
    return f"quarantine/{model}/{run_segment(run_id)}"


def quarantine_rows_key(model: str, run_id: str) -> str:
    """The training rows one run's validation quarantined (each with the rules it broke)."""
    return f"{quarantine_prefix(model, run_id)}/rows.parquet"


def quarantine_reason_key(model: str, run_id: str) -> str:
    """Why one run's validation quarantined rows."""
    return f"{quarantine_prefix(model, run_id)}/reason.json"


def score_quarantine_part_key(quarantine_prefix: str, index: int) -> str:
    """The rows of input file `index` that a scoring run could not score, under the run's quarantine prefix."""
    return f"{quarantine_prefix}/score/part-{index:05d}.parquet"


def score_quarantine_reason_key(model: str, run_id: str) -> str:
    """Why a scoring run quarantined rows (rules, counts, files)."""
    return f"{quarantine_prefix(model, run_id)}/score/reason.json"


# --- reports -------------------------------------------------------------------------------------


def reports_prefix(model: str, run_id: str) -> str:
    """One run's reports."""
    return f"reports/{model}/{run_segment(run_id)}"


def gate_report_key(model: str, run_id: str, extension: str = "html") -> str:
    """One run's gate report, `html` or `json`."""
    return f"{reports_prefix(model, run_id)}/gate_report.{extension}"


def drift_report_key(model: str, run_id: str, name: str, extension: str) -> str:
    """One monitoring run's Evidently report `name` (`data_drift`, `prediction_drift`), `html` or `json`."""
    return f"{reports_prefix(model, run_id)}/{name}.{extension}"


def reproduction_report_key(model: str, run_id: str) -> str:
    """One reproduce run's report: each check of a version rebuilt from its lineage (JSON)."""
    return f"{reports_prefix(model, run_id)}/reproduction.json"


def monitoring_summary_key(model: str, run_id: str) -> str:
    """What one monitoring run checked and found (JSON)."""
    return f"{reports_prefix(model, run_id)}/monitoring.json"


# --- published predictions ---------------------------------------------------------------------

PREDICTIONS = "predictions"
SHADOW = "predictions_shadow"
MANIFEST = "_manifest.json"


def partition_prefix(area: str, model: str, ds: str) -> str:
    """Where one day's published predictions live (`area`: PREDICTIONS or SHADOW)."""
    return f"{area}/{model}/ds={ds}"


def manifest_key(area: str, model: str, ds: str) -> str:
    """The partition's manifest: readers trust only the files it names."""
    return f"{partition_prefix(area, model, ds)}/{MANIFEST}"


def generations_prefix(area: str, model: str, ds: str) -> str:
    """Where every published generation's manifest is kept (create-only)."""
    return f"{partition_prefix(area, model, ds)}/_manifests"


def generation_key(area: str, model: str, ds: str, generation: int) -> str:
    """The manifest of one generation of a partition."""
    return f"{generations_prefix(area, model, ds)}/{generation:06d}.json"


def staging_root(area: str, model: str, ds: str) -> str:
    """The folder of every run's staging prefix of one partition."""
    return f"{partition_prefix(area, model, ds)}/_runs"


def staging_prefix(area: str, model: str, ds: str, token: str) -> str:
    """Where one run writes its parts before publishing."""
    return f"{staging_root(area, model, ds)}/{safe_segment(token)}"


def part_key(area: str, model: str, ds: str, token: str, index: int, attempt: int = 1) -> str:
    """The staged part for the input file at `index` (inputs sorted by key), written by the
    `attempt`-th try of its task: a retry stages apart from what a killed try may have left (or, if
    it is not dead after all, may still write), so the manifest names only the retry's file."""
    suffix = "" if attempt <= 1 else f"-try{attempt}"
    return f"{staging_prefix(area, model, ds, token)}/part-{index:05d}{suffix}.parquet"


def id_hashes_key(model: str, ds: str, token: str, index: int, attempt: int = 1) -> str:
    """The distinct id hashes of input file `index`, staged by its `score` task's `attempt`-th try
    beside its part, for publish to find ids that occur in more than one input file of the day."""
    suffix = "" if attempt <= 1 else f"-try{attempt}"
    return f"{staging_prefix(PREDICTIONS, model, ds, token)}/ids-{index:05d}{suffix}.npy"


def rescored_part_key(key: str) -> str:
    """The part that replaces staged part `key` when publish scores its input again with the ids
    other files of the day repeat quarantined: named after the part it replaces, so a retried
    publish writes the same key (and, scoring being deterministic, the same bytes)."""
    return f"{key.removesuffix('.parquet')}-unique.parquet"


# --- monitoring decisions and the promotion history -----------------------------------------------


def verdicts_prefix(model: str) -> str:
    """Where the monitoring window verdicts of a model are."""
    return f"monitoring/{model}/windows"


def verdict_key(model: str, end: str) -> str:
    """Where a window's verdict is recorded (a rerun of the same window replaces it)."""
    return f"{verdicts_prefix(model)}/{end}.json"


def triggers_prefix(model: str) -> str:
    """Where the retraining triggers of a model are."""
    return f"monitoring/{model}/triggers"


def trigger_key(model: str, end: str) -> str:
    """Where a retraining trigger is recorded (create-only: one per window end)."""
    return f"{triggers_prefix(model)}/{end}.json"


def promotion_history_prefix(model: str) -> str:
    """Where a model's promotion history is (one create-only record per move of `champion`)."""
    return f"registry/{model}/history"


def promotion_record_key(model: str, sequence: int) -> str:
    """The `sequence`-th record of a model's promotion history."""
    return f"{promotion_history_prefix(model)}/{sequence:06d}.json"


def promotion_claim_key(model: str, run_id: str, version: str) -> str:
    """One run's promotion of `version` as its first attempt saw it (create-only: `registry.promote`),
    so that a retry of the run moves nothing twice. Not under the history prefix: it is no move."""
    return f"registry/{model}/promotions/{run_segment(run_id)}-v{safe_segment(version)}.json"


def rollout_prefix(model: str, version: str) -> str:
    """One candidate's rollout: its shadow period's start and outcome (create-only records)."""
    return f"registry/{model}/rollouts/v{safe_segment(version)}"


def rollout_started_key(model: str, version: str) -> str:
    """When and against which champion a candidate entered its shadow period."""
    return f"{rollout_prefix(model, version)}/started.json"


def rollout_outcome_key(model: str, version: str) -> str:
    """How a candidate's shadow period ended (promoted or refused) with the evidence's numbers."""
    return f"{rollout_prefix(model, version)}/outcome.json"


def rollout_rollback_key(model: str, version: str) -> str:
    """The automatic rollback of champion `version` the monitor triggered (create-only: once)."""
    return f"{rollout_prefix(model, version)}/rollback.json"


def approval_key(model: str, version: str) -> str:
    """A person's answer on a candidate (approved, rejected, timed out, superseded; create-only: once)."""
    return f"{rollout_prefix(model, version)}/approval.json"


# --- source files that could not be read ------------------------------------------------------------

# The folder segment of unreadable-file records. It starts with `_`, which `safe_segment` strips from
# every run's folder name, so it can never be a run's quarantine folder.
UNREADABLE_SEGMENT = "_unreadable"


def unreadable_prefix(model: str, kind: str, ds: str) -> str:
    """Where the records of one day's unreadable files of one kind (`source`, `scoring`, `labels`) are."""
    return f"quarantine/{model}/{UNREADABLE_SEGMENT}/{safe_segment(kind)}/ds={ds}"


def unreadable_record_key(model: str, kind: str, ds: str, sha256: str) -> str:
    """The record of one unreadable file (create-only), addressed by the sha256 of its bytes: the same
    bytes refused again find their record already there; other bytes get their own."""
    return f"{unreadable_prefix(model, kind, ds)}/{sha256[:16]}.json"
