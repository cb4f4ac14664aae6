"""The steps of the training lifecycle, independent of any orchestrator.

Each step takes plain values (a spec, store and tracking URIs, ids, dates), does its I/O at the
edges, and returns a small JSON-serialisable dict of URIs and facts for the next step: tasks pass
URIs, never data. Failures that retrying cannot fix raise :class:`StepRejected`; the Airflow glue
turns it into a failed task without retries. Heavy libraries are imported inside the steps, so
each task pays only for what it uses.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from mlops_pipeline import layout
from mlops_pipeline.ingest import SnapshotManifest
from mlops_pipeline.settings import get_settings
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.store import ObjectStore, open_store


class StepRejected(RuntimeError):
    """The step refused its input (bad data, failed gate): retrying will not help."""


class InjectedFault(StepRejected):
    """A failure injected on purpose (reliability tests); not retried, so a test sees it at once."""


FAULT_POINT_VAR = "MLOPS_FAULT_POINT"


def fault_point(name: str) -> None:
    """Raise :class:`InjectedFault` when the environment asks for a fault at `name` (tests only)."""
    import os

    if os.environ.get(FAULT_POINT_VAR) == name:
        raise InjectedFault(f"fault injected at {name} ({FAULT_POINT_VAR})")


@dataclass(frozen=True)
class RunInfo:
    """Who and what started the run: recorded in MLflow tags and the promotion history."""

    dag_id: str
    dag_run_id: str
    actor: str
    event_time: str  # the run's own timestamp (logical date or run_after), never the wall clock

    def tags(self) -> dict[str, str]:
        """MLflow tags that link back to the Airflow run."""
        return {
            "airflow.dag_id": self.dag_id,
            "airflow.dag_run_id": self.dag_run_id,
            "airflow.actor": self.actor,
        }


def default_store() -> ObjectStore:
    """The configured object store."""
    return open_store(get_settings().store_uri)


def ingest(spec: ModelSpec, store: ObjectStore, as_of: date, window_days: int | None) -> dict[str, Any]:
    """Snapshot the data window ending `as_of`; the manifest as a dict."""
    from mlops_pipeline.ingest import NoSourceDataError, ingest_window

    try:
        manifest = ingest_window(spec, store, as_of, window_days or spec.source.window_days)
    except NoSourceDataError as exc:
        raise StepRejected(str(exc)) from exc
    return asdict(manifest)


def validate(spec: ModelSpec, store: ObjectStore, manifest: dict[str, Any], run: RunInfo) -> dict[str, Any]:
    """Validate the snapshot with Great Expectations; publish results, quarantine, and the clean rows."""
    from mlops_pipeline.ingest import read_snapshot
    from mlops_pipeline.validation import publish_validation, validate_frame

    snapshot = SnapshotManifest(**manifest)
    outcome = validate_frame(read_snapshot(store, snapshot), spec)
    artifacts = publish_validation(outcome, store, spec.name, run.dag_run_id)
    summary = {
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
            f"validation of {snapshot.data_uri} failed: {outcome.failure_reason}. "
            f"Report: {artifacts.summary_uri}; Data Docs: {artifacts.data_docs_uri}"
            + (f"; quarantined rows: {artifacts.quarantine_uri}" if artifacts.quarantine_uri else "")
        )
    clean_key = f"{layout.validation_prefix(spec.name, run.dag_run_id)}/clean.parquet"
    buffer = io.BytesIO()
    outcome.clean.to_parquet(buffer, index=False)
    store.write_bytes(clean_key, buffer.getvalue())
    return {**summary, "clean_key": clean_key, "clean_rows": len(outcome.clean)}


def _read_clean(store: ObjectStore, validated: dict[str, Any]) -> Any:
    import pandas as pd

    return pd.read_parquet(io.BytesIO(store.read_bytes(validated["clean_key"])))


def train(
    spec: ModelSpec, store: ObjectStore, manifest: dict[str, Any], validated: dict[str, Any], run: RunInfo
) -> dict[str, Any]:
    """Fit the pipeline on the clean rows and log it to MLflow with its lineage; the logged candidate."""
    from mlops_pipeline import registry
    from mlops_pipeline.evaluation import model_metrics
    from mlops_pipeline.training import split_frame, train_model

    settings = get_settings()
    registry.connect(settings.mlflow_tracking_uri)
    clean = _read_clean(store, validated)
    try:
        result = train_model(clean, spec)
    except ValueError as exc:
        raise StepRejected(str(exc)) from exc
    train_metrics = {
        f"train_{k}": v
        for k, v in model_metrics(result.pipeline, split_frame(clean, spec).train, spec).items()
    }
    candidate = registry.log_candidate(
        result,
        spec,
        SnapshotManifest(**manifest),
        clean,
        train_metrics,
        run_tags={**run.tags(), "mlops.quarantined_rows": str(validated["quarantined_rows"])},
        code=registry.code_version(settings.code_version),
    )
    return asdict(candidate)


def evaluate(
    spec: ModelSpec,
    store: ObjectStore,
    validated: dict[str, Any],
    candidate: dict[str, Any],
    run: RunInfo,
) -> dict[str, Any]:
    """Score candidate and champion on the same holdout, apply the gates, publish the gate report."""
    import mlflow

    from mlops_pipeline import registry
    from mlops_pipeline.evaluation import (
        evaluate_gates,
        latency_p95_ms_per_1k,
        model_metrics,
        render_html,
        slice_metrics,
    )
    from mlops_pipeline.training import split_frame

    client = registry.connect(get_settings().mlflow_tracking_uri)
    holdout = split_frame(_read_clean(store, validated), spec).holdout
    pipeline = registry.load_verified(candidate["model_uri"], candidate["artifact_sha256"])
    candidate_metrics = model_metrics(pipeline, holdout, spec)
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
        slice_metrics(pipeline, holdout, spec),
        latency_p95_ms_per_1k(pipeline, holdout, spec),
        candidate["model_size_mb"],
        candidate={"run_id": candidate["run_id"], "holdout_rows": len(holdout)},
        champion=champion_info,
    )
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
    result = {
        "passed": report.passed,
        "failures": report.failures,
        "report_json_uri": json_uri,
        "report_html_uri": html_uri,
        "candidate_metrics": candidate_metrics,
        "champion_version": champion_info["version"] if champion_info else None,
    }
    if not report.passed:
        raise StepRejected(
            f"gate failed for {spec.name}: " + "; ".join(report.failures) + f". Report: {html_uri}"
        )
    return result


def register(
    spec: ModelSpec,
    manifest: dict[str, Any],
    candidate: dict[str, Any],
    evaluation: dict[str, Any],
    run: RunInfo,
) -> dict[str, Any]:
    """Register the candidate that passed its gates and point `challenger` at it."""
    from mlops_pipeline import registry

    client = registry.connect(get_settings().mlflow_tracking_uri)
    version = registry.register_candidate(
        client,
        spec,
        registry.LoggedCandidate(**candidate),
        data_sha256=manifest["sha256"],
        gate_report_uri=evaluation["report_json_uri"],
        extra_tags={**run.tags(), "data_uri": manifest["data_uri"]},
    )
    return {"version": str(version.version), "model_uri": f"models:/{spec.name}/{version.version}"}


def promote(spec: ModelSpec, store: ObjectStore, registered: dict[str, Any], run: RunInfo) -> dict[str, Any]:
    """Move `champion` to the registered version and record the promotion."""
    from mlops_pipeline import registry

    client = registry.connect(get_settings().mlflow_tracking_uri)
    version = client.get_model_version(spec.name, registered["version"])
    record = registry.promote(
        client, store, version, actor=run.actor, dag_run_id=run.dag_run_id, at=run.event_time
    )
    return {"champion_version": record.to_version, "previous_version": record.from_version, **asdict(record)}


def rollback(
    spec: ModelSpec, store: ObjectStore, to_version: str | None, reason: str, run: RunInfo
) -> dict[str, Any]:
    """Move `champion` back to the previous champion, or to `to_version`, and record it."""
    from mlops_pipeline import registry

    client = registry.connect(get_settings().mlflow_tracking_uri)
    try:
        record = registry.rollback(
            client,
            store,
            spec.name,
            to_version=to_version,
            actor=run.actor,
            dag_run_id=run.dag_run_id,
            at=run.event_time,
            reason=reason,
        )
    except registry.RegistryError as exc:
        raise StepRejected(str(exc)) from exc
    return {"champion_version": record.to_version, "previous_version": record.from_version, **asdict(record)}


# --- batch scoring -----------------------------------------------------------------------------


def _model_ref(version: Any) -> dict[str, str]:
    from mlops_pipeline import registry

    return {
        "name": version.name,
        "version": str(version.version),
        "model_uri": f"models:/{version.name}/{version.version}",
        "artifact_sha256": registry.expected_sha256(version),
    }


def score_plan(
    spec: ModelSpec,
    store: ObjectStore,
    ds: date,
    pinned_version: str | None,
    shadow: bool,
    run: RunInfo,
    attempt: int = 1,
) -> dict[str, Any]:
    """Resolve the model version once for the whole run, verify its artifact, and list the inputs.

    Nothing is written before the artifact's sha256 has been checked. Stale staged parts of this
    partition (crashed runs) are cleaned here.
    """
    from mlops_pipeline import registry
    from mlops_pipeline.ingest import split_source_uri
    from mlops_pipeline.predictions import PREDICTIONS, SHADOW, clean_stale_parts
    from mlops_pipeline.store import glob_keys

    if spec.scoring is None:
        raise StepRejected(f"{spec.name} has no scoring section in its spec")
    client = registry.connect(get_settings().mlflow_tracking_uri)
    try:
        primary = _model_ref(registry.scoring_version(client, spec.name, pinned_version))
        registry.verify_artifact(primary["model_uri"], primary["artifact_sha256"], spec)
        challenger = None
        if shadow:
            version = registry.alias_version(client, spec.name, registry.CHALLENGER)
            if version is not None and str(version.version) != primary["version"]:
                challenger = _model_ref(version)
                registry.verify_artifact(challenger["model_uri"], challenger["artifact_sha256"], spec)
    except (registry.RegistryError, registry.ArtifactIntegrityError) as exc:
        raise StepRejected(str(exc)) from exc
    input_store, pattern = split_source_uri(spec.scoring.input.uri, store)
    keys = sorted(glob_keys(input_store, pattern.format(ds=ds.isoformat())))
    if not keys:
        raise StepRejected(
            f"no input files to score for {spec.name} on {ds} "
            f"(pattern {spec.scoring.input.uri!r} under {input_store.root_uri})"
        )
    ds_text = ds.isoformat()
    cleaned = clean_stale_parts(store, PREDICTIONS, spec.name, ds_text)
    cleaned += clean_stale_parts(store, SHADOW, spec.name, ds_text)
    return {
        "ds": ds_text,
        # Unique per plan: a rerun of a published run (same run id, even the same try number after
        # a clear) must stage its parts apart from the files the current manifest names.
        "token": f"{run.dag_run_id}-try{attempt}-{uuid.uuid4().hex[:8]}",
        "model": primary,
        "shadow_model": challenger,
        "shadow_requested": shadow,
        "input_root": input_store.root_uri,
        "inputs": [{"index": index, "key": key} for index, key in enumerate(keys)],
        "stale_objects_deleted": cleaned,
        "started": time.time(),
    }


def stage_scored_input(
    spec: ModelSpec,
    store: ObjectStore,
    input_store: ObjectStore,
    key: str,
    index: int,
    ds: str,
    token: str,
    model: tuple[Any, Any],
    shadow_model: tuple[Any, Any] | None,
    quarantine_prefix: str,
) -> dict[str, Any]:
    """Score the input `key` of `input_store` (the file's position in the run: `index`) with
    `model` = (pipeline, RunStamp) and stage the parts under the run's `token` in `store`.

    With `shadow_model`, it scores the same rows into the shadow staging folder. Quarantined rows
    go to `<quarantine_prefix>/score/part-<index>.parquet`. Raises StepRejected when the file is
    refused (missing column, a `fail` rule broken). What the `score` tasks do, minus MLflow.
    """
    import tempfile
    from pathlib import Path

    from mlops_pipeline.predictions import PREDICTIONS, SHADOW, part_key, upload_part
    from mlops_pipeline.scoring import ScoringRejected, score_file, sha256_file

    assert spec.scoring is not None
    pipeline, stamp = model
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        local_input = folder / "input"
        input_store.download_file(key, local_input)
        input_sha256 = sha256_file(local_input)
        shadow = None if shadow_model is None else (*shadow_model, folder / "shadow.parquet")
        try:
            result = score_file(
                local_input,
                spec.scoring.input.format,
                spec,
                pipeline,
                stamp,
                folder / "out.parquet",
                folder / "quarantine.parquet",
                batch_rows=spec.scoring.batch_rows,
                shadow=shadow,
            )
        except ScoringRejected as exc:
            raise StepRejected(f"{input_store.uri(key)}: {exc}") from exc
        part = upload_part(
            store,
            folder / "out.parquet",
            part_key(PREDICTIONS, spec.name, ds, token, index),
            key,
            input_sha256,
        )
        shadow_part = None
        if shadow is not None:
            shadow_part = asdict(
                upload_part(
                    store, shadow[2], part_key(SHADOW, spec.name, ds, token, index), key, input_sha256
                )
            )
        quarantine_key = None
        if result.quarantine_rows:
            quarantine_key = f"{quarantine_prefix}/score/part-{index:05d}.parquet"
            store.upload_file(folder / "quarantine.parquet", quarantine_key)
    return {
        "index": index,
        "input_key": key,
        "input_sha256": input_sha256,
        "part": asdict(part),
        "shadow_part": shadow_part,
        "quarantine_key": quarantine_key,
        "stats": result.stats.to_dict(),
        "agreement": asdict(result.agreement) if result.agreement else None,
        "classes": _classes_json(pipeline, spec),
        "shadow_classes": None if shadow_model is None else _classes_json(shadow_model[0], spec),
    }


def score_input(
    spec: ModelSpec, store: ObjectStore, plan: dict[str, Any], item: dict[str, Any], run: RunInfo
) -> dict[str, Any]:
    """Score one input file with the planned model version into the run's staging prefix."""
    from datetime import datetime

    from mlops_pipeline import registry
    from mlops_pipeline.scoring import RunStamp

    assert spec.scoring is not None
    registry.connect(get_settings().mlflow_tracking_uri)
    model = plan["model"]
    try:
        pipeline = registry.load_verified(model["model_uri"], model["artifact_sha256"])
        shadow_pipeline = None
        if plan["shadow_model"]:
            shadow_pipeline = registry.load_verified(
                plan["shadow_model"]["model_uri"], plan["shadow_model"]["artifact_sha256"]
            )
    except registry.ArtifactIntegrityError as exc:
        raise StepRejected(str(exc)) from exc
    logical_ts = datetime.fromisoformat(run.event_time)
    stamp = RunStamp(spec.name, model["version"], run.dag_run_id, logical_ts)
    shadow_model = None
    if shadow_pipeline is not None:
        shadow_stamp = RunStamp(spec.name, plan["shadow_model"]["version"], run.dag_run_id, logical_ts)
        shadow_model = (shadow_pipeline, shadow_stamp)
    # Inputs under the store's own root reuse its client (and its connection's credentials).
    input_store = store if plan["input_root"] == store.root_uri else open_store(plan["input_root"])
    return stage_scored_input(
        spec,
        store,
        input_store,
        item["key"],
        int(item["index"]),
        plan["ds"],
        plan["token"],
        (pipeline, stamp),
        shadow_model,
        layout.quarantine_prefix(spec.name, run.dag_run_id),
    )


def _classes_json(pipeline: Any, spec: ModelSpec) -> list[Any] | None:
    from mlops_pipeline.scoring import model_classes

    classes = model_classes(pipeline, spec)
    return None if classes is None else classes.tolist()


def _schema_from_classes(classes: list[Any] | None) -> Any:
    import numpy as np

    from mlops_pipeline.scoring import output_schema

    return output_schema(None if classes is None else np.asarray(classes))


def score_publish(
    spec: ModelSpec, store: ObjectStore, plan: dict[str, Any], results: list[dict[str, Any]], run: RunInfo
) -> dict[str, Any]:
    """Check the staged parts and publish the partition (manifest last); log the run's metrics to MLflow."""
    import hashlib
    import json

    from mlops_pipeline.predictions import (
        PREDICTIONS,
        SHADOW,
        PartFile,
        PublishError,
        clean_stale_parts,
        publish_partition,
    )
    from mlops_pipeline.scoring import Agreement, ScoreStats

    assert spec.scoring is not None
    results = sorted(results, key=lambda r: r["index"])
    stats = ScoreStats()
    agreement = Agreement() if plan["shadow_model"] else None
    for result in results:
        stats.add(ScoreStats.from_dict(result["stats"]))
        if agreement is not None and result["agreement"]:
            agreement.merge(Agreement(**result["agreement"]))
    share = stats.rows_quarantined / stats.rows_in if stats.rows_in else 0.0
    ds = plan["ds"]
    quarantine_reason = None
    if stats.rows_quarantined:
        quarantine_reason = f"{layout.quarantine_prefix(spec.name, run.dag_run_id)}/score/reason.json"
        reason = {
            "model": spec.name,
            "ds": ds,
            "run_id": run.dag_run_id,
            "rows": stats.rows_quarantined,
            "share": share,
            "rules": stats.quarantined_by_rule,
            "files": [r["quarantine_key"] for r in results if r["quarantine_key"]],
        }
        store.write_bytes(quarantine_reason, json.dumps(reason, indent=2, sort_keys=True).encode())
    if share > spec.scoring.max_quarantine_share:
        raise StepRejected(
            f"{stats.rows_quarantined} of {stats.rows_in} input rows ({share:.1%}) of {spec.name} on {ds} could "
            f"not be scored ({stats.quarantined_by_rule}), over the limit of {spec.scoring.max_quarantine_share:.1%}; "
            f"nothing published. Quarantine: {store.uri(quarantine_reason or '')}"
        )
    inputs = "\n".join(f"{r['input_key']} {r['input_sha256']}" for r in results)
    data_sha256 = hashlib.sha256(inputs.encode()).hexdigest()
    schema = _schema_from_classes(results[0]["classes"])
    agreement_summary = agreement.summary() if agreement is not None else None
    details = {
        "model_version": plan["model"]["version"],
        "model_uri": plan["model"]["model_uri"],
        "artifact_sha256": plan["model"]["artifact_sha256"],
        "run_id": run.dag_run_id,
        "logical_ts": run.event_time,
        "token": plan["token"],
        "data_sha256": data_sha256,
        "input_rows": stats.rows_in,
        "quarantined_rows": stats.rows_quarantined,
        "quarantine_reason": store.uri(quarantine_reason) if quarantine_reason else None,
        "shadow_agreement": agreement_summary,
    }
    fault_point("before_manifest")
    try:
        manifest = publish_partition(
            store,
            PREDICTIONS,
            spec.name,
            ds,
            [PartFile(**r["part"]) for r in results],
            expected_rows=stats.rows_in - stats.rows_quarantined,
            schema=schema,
            details=details,
        )
        shadow_manifest = None
        if plan["shadow_model"]:
            shadow_manifest = publish_partition(
                store,
                SHADOW,
                spec.name,
                ds,
                [PartFile(**r["shadow_part"]) for r in results],
                expected_rows=stats.rows_in - stats.rows_quarantined,
                schema=_schema_from_classes(results[0]["shadow_classes"]),
                details={
                    **details,
                    "model_version": plan["shadow_model"]["version"],
                    "model_uri": plan["shadow_model"]["model_uri"],
                    "artifact_sha256": plan["shadow_model"]["artifact_sha256"],
                    "champion_version": plan["model"]["version"],
                },
            )
    except PublishError as exc:
        raise StepRejected(str(exc)) from exc
    clean_stale_parts(store, PREDICTIONS, spec.name, ds)
    clean_stale_parts(store, SHADOW, spec.name, ds)
    wall_seconds = max(time.time() - float(plan["started"]), 1e-9)
    metrics = scoring_metrics(spec, stats, wall_seconds, agreement_summary)
    _log_scoring_run(spec, ds, plan, run, metrics, data_sha256)
    return {
        "ds": ds,
        "rows": manifest["rows"],
        "quarantined_rows": stats.rows_quarantined,
        "model_version": plan["model"]["version"],
        "manifest_uri": store.uri(f"predictions/{spec.name}/ds={ds}/_manifest.json"),
        "generation": manifest["generation"],
        "shadow_version": plan["shadow_model"]["version"] if plan["shadow_model"] else None,
        "shadow_manifest_generation": shadow_manifest["generation"] if shadow_manifest else None,
        "shadow_agreement": agreement_summary,
        "metrics": metrics,
    }


def scoring_metrics(
    spec: ModelSpec, stats: Any, wall_seconds: float, agreement: dict[str, float] | None
) -> dict[str, float]:
    """The run's metrics: volume, speed, quarantine, prediction distribution, missing values per feature."""
    scored = max(stats.rows_scored, 1)
    metrics = {
        "rows_in": float(stats.rows_in),
        "rows_scored": float(stats.rows_scored),
        "rows_quarantined": float(stats.rows_quarantined),
        "seconds": wall_seconds,
        "scoring_seconds": stats.seconds,
        "rows_per_s": stats.rows_in / wall_seconds,
        "prediction_mean": stats.prediction_sum / scored,
    }
    if spec.task == "classification":
        for label, count in stats.predicted_labels.items():
            metrics[f"predicted_share.{label}"] = count / scored
    else:
        mean = stats.prediction_sum / scored
        metrics["prediction_std"] = max(stats.prediction_sq_sum / scored - mean * mean, 0.0) ** 0.5
    for feature, nulls in stats.nulls_by_feature.items():
        metrics[f"missing_rate.{feature}"] = nulls / scored
    if agreement:
        metrics["shadow_label_agreement"] = agreement["label_agreement"]
        metrics["shadow_mean_abs_diff"] = agreement["mean_abs_diff"]
    return metrics


def _log_scoring_run(
    spec: ModelSpec, ds: str, plan: dict[str, Any], run: RunInfo, metrics: dict[str, float], data_sha256: str
) -> None:
    import mlflow

    experiment = mlflow.set_experiment(f"{spec.name}-scoring")
    tags = {**run.tags(), "ds": ds, "model_version": plan["model"]["version"], "data_sha256": data_sha256}
    with mlflow.start_run(experiment_id=experiment.experiment_id, run_name=f"{spec.name} {ds}", tags=tags):
        mlflow.log_params(
            {"model_version": plan["model"]["version"], "ds": ds, "shadow": bool(plan["shadow_model"])}
        )
        mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})  # NaN-free


# --- monitoring --------------------------------------------------------------------------------


def _feature_kinds(spec: ModelSpec) -> dict[str, str]:
    return {name: ("cat" if f.type == "category" else "num") for name, f in spec.features.items()}


def _read_frame(store: ObjectStore, key: str, fmt: str) -> Any:
    import pandas as pd

    data = io.BytesIO(store.read_bytes(key))
    if fmt == "parquet":
        return pd.read_parquet(data)
    return pd.read_csv(data, dtype=str, keep_default_na=False, na_values=[""])


def _current_window(
    spec: ModelSpec, store: ObjectStore, days: list[date]
) -> tuple[Any, Any, list[str], list[str]]:
    """Published predictions of the window and the inputs they were scored from (manifests only)."""
    import pandas as pd

    from mlops_pipeline.ingest import split_source_uri
    from mlops_pipeline.predictions import PREDICTIONS, read_manifest, read_partition

    assert spec.scoring is not None
    input_store, _ = split_source_uri(spec.scoring.input.uri, store)
    predictions, inputs, used, missing = [], [], [], []
    for day in days:
        ds = day.isoformat()
        manifest = read_manifest(store, PREDICTIONS, spec.name, ds)
        table = read_partition(store, spec.name, ds) if manifest else None
        if manifest is None or table is None:
            missing.append(ds)
            continue
        predictions.append(table.to_pandas().assign(ds=ds))
        for entry in manifest["files"]:
            inputs.append(_read_frame(input_store, entry["input_key"], spec.scoring.input.format))
        used.append(ds)
    if not used:
        raise StepRejected(
            f"cannot check {spec.name} for {days[0]}..{days[-1]}: no published predictions in the window "
            "(score those days first); this is not drift"
        )
    scored = pd.concat(predictions, ignore_index=True)
    features = pd.concat(inputs, ignore_index=True)
    # Quarantined rows were never scored: compare exactly the rows that were.
    features = features[features[spec.id_column].astype(str).isin(set(scored["id"]))]
    return scored, features, used, missing


def _reference(spec: ModelSpec, store: ObjectStore, client: Any) -> tuple[Any, Any, Any]:
    """The champion's version, its training snapshot (found through its lineage tags), and its pipeline."""
    import hashlib

    import pandas as pd

    from mlops_pipeline import registry

    champion = registry.alias_version(client, spec.name, registry.CHAMPION)
    if champion is None:
        raise StepRejected(
            f"cannot check {spec.name}: it has no champion, so there is no reference; this is not drift"
        )
    data_uri, data_sha256 = champion.tags.get("data_uri"), champion.tags.get("data_sha256")
    prefix = store.root_uri.rstrip("/") + "/"
    if not data_uri or not data_sha256 or not data_uri.startswith(prefix):
        raise StepRejected(
            f"cannot check {spec.name}: champion v{champion.version} has no training snapshot in {store.root_uri} "
            f"(tags data_uri={data_uri!r}, data_sha256={data_sha256!r}); this is not drift"
        )
    from urllib.parse import unquote

    data = store.read_bytes(unquote(data_uri[len(prefix) :]))
    if hashlib.sha256(data).hexdigest() != data_sha256:
        raise StepRejected(f"the reference snapshot {data_uri} does not match its sha256 {data_sha256}")
    reference = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""])
    return champion, reference, registry.load_version(client, champion)


def _prediction_frame(spec: ModelSpec, labels: Any, positive: Any) -> Any:
    import pandas as pd

    columns: dict[str, Any] = {"prediction": pd.Series(labels).astype(str)}
    if positive is not None:
        columns["proba_positive"] = pd.Series(positive, dtype="float64")
    return pd.DataFrame(columns)


def monitor(
    spec: ModelSpec, store: ObjectStore, end: date, window: int | None, dry_run: bool, run: RunInfo
) -> dict[str, Any]:
    """Check one window for data drift, prediction drift and performance; record it and decide on retraining."""
    import tempfile
    from pathlib import Path

    import mlflow
    import numpy as np

    from mlops_pipeline import drift, monitoring, registry
    from mlops_pipeline.training import features_frame

    if spec.scoring is None:
        raise StepRejected(f"{spec.name} has no scoring section: there are no predictions to monitor")
    client = registry.connect(get_settings().mlflow_tracking_uri)
    days = monitoring.window_days(end, window or spec.drift.window_days)
    scored, current_raw, used, missing = _current_window(spec, store, days)
    champion, reference_raw, pipeline = _reference(spec, store, client)

    kinds = _feature_kinds(spec)
    # Compare like with like: rows that scoring would have quarantined are not in the current data.
    from mlops_pipeline.scoring import check_rows

    reference_raw = reference_raw[~check_rows(reference_raw, spec).quarantine]
    reference = features_frame(reference_raw, spec)
    current = features_frame(current_raw, spec)
    data_report = drift.check_drift(reference, current, kinds, spec.drift)

    # Prediction drift: the champion on its own training data versus what was published.
    output_drift = spec.drift.model_copy(update={"column_thresholds": {}, "column_methods": {}})
    if spec.task == "classification":
        probabilities = pipeline.predict_proba(reference)
        reference_out = _prediction_frame(
            spec, pipeline.classes_[np.argmax(probabilities, axis=1)], probabilities[:, -1]
        )
        positive = sorted(c for c in scored.columns if c.startswith("proba_"))[-1]
        current_out = _prediction_frame(spec, scored["prediction"], scored[positive])
        out_kinds = {"prediction": "cat", "proba_positive": "num"}
    else:
        reference_out = _prediction_frame(spec, pipeline.predict(reference), None).astype(
            {"prediction": float}
        )
        current_out = _prediction_frame(spec, scored["prediction"], None).astype({"prediction": float})
        out_kinds = {"prediction": "num"}
    prediction_report = drift.check_drift(reference_out, current_out, out_kinds, output_drift)

    labels = monitoring.read_labels(store, spec, [date.fromisoformat(d) for d in used])
    performance = monitoring.performance_by_version(scored, labels, spec) if len(labels) else {}
    drops = monitoring.below_floors(performance, spec)

    prefix = layout.reports_prefix(spec.name, run.dag_run_id)
    with tempfile.TemporaryDirectory() as tmp:
        for name, report in (("data_drift", data_report), ("prediction_drift", prediction_report)):
            html, js = Path(tmp) / f"{name}.html", Path(tmp) / f"{name}.json"
            drift.save_report(report, html, js)
            store.upload_file(html, f"{prefix}/{name}.html")
            store.upload_file(js, f"{prefix}/{name}.json")
    workspace_runs: list[str] = []
    if workspace := get_settings().evidently_workspace:
        workspace_runs = drift.add_to_workspace(
            workspace,
            f"{spec.name} monitoring",
            {
                f"data drift {days[0]}..{end}": data_report,
                f"prediction drift {days[0]}..{end}": prediction_report,
            },
        )
    window_summary = {
        "days_used": used,
        "days_missing": missing,
        "reference": {"version": str(champion.version), "data_uri": champion.tags.get("data_uri")},
        "data_drift": data_report.to_dict(),
        "prediction_drift": prediction_report.to_dict(),
        "performance": performance,
        "performance_drops": drops,
    }
    store.write_bytes(f"{prefix}/monitoring.json", json.dumps(window_summary, indent=2, default=str).encode())

    verdict = monitoring.WindowVerdict(
        end=end.isoformat(),
        start=days[0].isoformat(),
        data_drift=data_report.dataset_drift,
        prediction_drift=bool(prediction_report.drifted_columns()),
        performance_drop=bool(drops),
        drifted_columns=data_report.drifted_columns(),
        run_id=run.dag_run_id,
    )
    if not dry_run:
        monitoring.record_verdict(store, spec.name, verdict)
    history = monitoring.verdicts(store, spec.name)
    if dry_run:
        history = [v for v in history if v.end != verdict.end] + [verdict]
        history.sort(key=lambda v: v.end)
    decision = monitoring.decide(history, monitoring.trigger_days(store, spec.name), spec.drift, verdict.end)
    trigger = decision.retrain and not dry_run
    if trigger and not monitoring.record_trigger(store, spec.name, verdict.end, decision, run.dag_run_id):
        trigger = False

    metrics = {f"drift_score.{c.column}": c.score for c in data_report.columns}
    metrics |= {f"prediction_drift_score.{c.column}": c.score for c in prediction_report.columns}
    metrics |= {"drifted_share": data_report.drifted_share, "rows_current": float(len(current))}
    for version, values in performance.items():
        metrics |= {f"live_{metric}.v{version}": value for metric, value in values.items()}
    experiment = mlflow.set_experiment(f"{spec.name}-monitoring")
    with mlflow.start_run(
        experiment_id=experiment.experiment_id,
        run_name=f"window {days[0]}..{end}",
        tags={**run.tags(), "window_start": days[0].isoformat(), "window_end": end.isoformat()},
    ):
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})
        mlflow.log_params(
            {"window_days": len(days), "reference_version": str(champion.version), "dry_run": dry_run}
        )
        mlflow.set_tags({"retrain_triggered": str(trigger).lower(), "decision": decision.reason[:5000]})
    return monitoring.summary(
        verdict,
        decision,
        {
            "trigger": trigger,
            "dry_run": dry_run,
            "days_used": used,
            "days_missing": missing,
            "performance": performance,
            "performance_drops": drops,
            "data_drift_report": store.uri(f"{prefix}/data_drift.html"),
            "prediction_drift_report": store.uri(f"{prefix}/prediction_drift.html"),
            "drift_scores": {c.column: c.score for c in data_report.columns},
            "evidently_workspace_runs": workspace_runs,
        },
    )
