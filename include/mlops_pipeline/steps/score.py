"""The task bodies of `<model>__score`: plan → inputs → score (mapped, one per input file) → publish.

Each function is the body of the task of the same name. `plan` resolves the model version once and
checks its artifact before anything is written; each `score` stages one file's parts under the
run's token; `publish` checks the staged parts and publishes the partition's manifest last (see the
protocol at the top of :mod:`mlops_pipeline.predictions`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, cast

from mlops_pipeline import layout
from mlops_pipeline.spec import ModelSpec

if TYPE_CHECKING:
    from mlops_pipeline.rules import RepeatedIds
from mlops_pipeline.steps import RunInfo, StepRejected, claim_evidence, fault_point
from mlops_pipeline.steps.results import (
    InputFile,
    ModelRef,
    Published,
    ScoredInput,
    ScorePlan,
    StagedPart,
)
from mlops_pipeline.store import ObjectStore


def _model_ref(version: Any) -> ModelRef:
    from mlops_pipeline import registry

    return {
        "name": version.name,
        "version": str(version.version),
        "model_uri": f"models:/{version.name}/{version.version}",
        "artifact_sha256": registry.expected_sha256(version),
    }


def plan(
    spec: ModelSpec,
    store: ObjectStore,
    ds: date,
    pinned_version: str | None,
    shadow: bool,
    run: RunInfo,
    attempt: int = 1,
) -> ScorePlan:
    """Resolve the model version once for the whole run, verify its artifact, and list the inputs.

    Nothing is written before the artifact's sha256 has been checked. Stale staged parts of this
    partition (crashed runs) are cleaned here.
    """
    from mlops_pipeline import registry
    from mlops_pipeline.ingest import split_source_uri
    from mlops_pipeline.layout import PREDICTIONS, SHADOW
    from mlops_pipeline.predictions import clean_stale_parts
    from mlops_pipeline.store import glob_keys

    if spec.scoring is None:
        raise StepRejected(f"{spec.name} has no scoring section in its spec")
    client = registry.configured_client()
    try:
        primary = _model_ref(registry.scoring_version(client, spec.name, pinned_version))
        registry.verify_artifact(primary["model_uri"], primary["artifact_sha256"], spec)
        challenger: ModelRef | None = None
        canary_share = 0.0
        if pinned_version is None and spec.rollout.shadow_days:
            # A candidate in its shadow period is scored beside the champion every day (and
            # serves the canary's ids).
            from mlops_pipeline.rollout import in_shadow

            candidate = registry.alias_version(client, spec.name, registry.CHALLENGER)
            if candidate is not None and in_shadow(store, spec.name, str(candidate.version)):
                shadow, canary_share = True, spec.rollout.canary_share
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
        "canary_share": canary_share if challenger is not None else 0.0,
        "input_root": input_store.root_uri,
        "inputs": [InputFile(index=index, key=key) for index, key in enumerate(keys)],
        "stale_objects_deleted": cleaned,
        "started": time.time(),
    }


def inputs(plan: ScorePlan) -> list[InputFile]:
    """The input files to map `score` over (Airflow maps over a whole XCom, not a key of one)."""
    return list(plan["inputs"])


@dataclass(frozen=True)
class ScoringDay:
    """What every input file of one run's day is scored with and staged under."""

    spec: ModelSpec
    store: ObjectStore  # where the parts, id hashes and quarantined rows are written
    input_store: ObjectStore  # where the input files are read from
    ds: str
    token: str  # the run's staging token (`layout.part_key`)
    model: tuple[Any, Any]  # (pipeline, RunStamp)
    shadow_model: tuple[Any, Any] | None
    quarantine_prefix: str
    canary_share: float = 0.0  # ids whose published row is the shadow model's (`canary.py`)


def stage_scored_input(
    day: ScoringDay,
    key: str,
    index: int,
    attempt: int = 1,
    *,
    replacing: ScoredInput | None = None,
    repeated_elsewhere: RepeatedIds | None = None,
) -> ScoredInput:
    """Score the input `key` of the day's input store (the file's position in the run: `index`)
    with the day's model and stage the parts under its token, named for the task's `attempt`
    (`layout.part_key`), with the file's distinct id hashes beside them.

    With a shadow model, it scores the same rows into the shadow staging folder. Quarantined rows
    go to `<quarantine_prefix>/score/part-<index>.parquet`. Raises StepRejected when the file is
    refused (missing column, a `fail` rule broken). What each `score` task does, minus MLflow.

    Publish scores a file again when other files of the day hold some of its ids: `replacing` is
    the first scoring's result (its parts are replaced by `layout.rescored_part_key` ones, its id
    hashes kept) and `repeated_elsewhere` the ids repeated across the day's files.
    """
    import tempfile
    from pathlib import Path

    import numpy as np

    from mlops_pipeline.ingest import UnreadableSourceError, record_unreadable
    from mlops_pipeline.layout import PREDICTIONS, SHADOW, id_hashes_key, part_key, rescored_part_key
    from mlops_pipeline.predictions import upload_part
    from mlops_pipeline.scoring import score_file, sha256_file
    from mlops_pipeline.scoring_inputs import ScoringRejected, UnreadableInput

    spec, store, input_store, ds, token = day.spec, day.store, day.input_store, day.ds, day.token
    shadow_model = day.shadow_model
    assert spec.scoring is not None
    pipeline, stamp = day.model
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
                source_name=key,
                repeated_elsewhere=repeated_elsewhere,
            )
        except UnreadableInput as exc:
            # Nothing is staged for this file, so the day cannot be published: record why, refuse once.
            error = UnreadableSourceError(
                "scoring input",
                input_store.uri(key),
                ds,
                exc.reason,
                input_sha256,
                local_input.stat().st_size,
            )
            record = record_unreadable(store, spec.name, error)
            raise StepRejected(
                f"{error}. Nothing of {ds} is published; replace or remove the file and rerun. Record: {record}"
            ) from exc
        except ScoringRejected as exc:
            raise StepRejected(
                f"scoring input {input_store.uri(key)} of {ds}: {exc}; nothing of {ds} is published"
            ) from exc
        if replacing is None:
            primary_key = part_key(PREDICTIONS, spec.name, ds, token, index, attempt)
            shadow_key = part_key(SHADOW, spec.name, ds, token, index, attempt)
            hashes_key = id_hashes_key(spec.name, ds, token, index, attempt)
            np.save(folder / "ids.npy", result.id_hashes, allow_pickle=False)
            store.upload_file(folder / "ids.npy", hashes_key)
        else:
            primary_key = rescored_part_key(replacing["part"]["key"])
            replaced_shadow = replacing["shadow_part"]
            shadow_key = rescored_part_key(
                replaced_shadow["key"]
                if replaced_shadow
                else part_key(SHADOW, spec.name, ds, token, index, attempt)
            )
            hashes_key = replacing["id_hashes_key"]
        published, canary_rows, canary_note = folder / "out.parquet", 0, None
        if shadow is not None and day.canary_share > 0:
            from mlops_pipeline.canary import merge_canary

            try:
                canary_rows = merge_canary(
                    folder / "out.parquet", shadow[2], folder / "canary.parquet", day.canary_share, spec.name
                )
                published = folder / "canary.parquet"
            except ValueError as exc:  # the challenger cannot share the partition: the champion serves all
                canary_note = f"no canary rows in {key}: {exc}"
        part = upload_part(store, published, primary_key, key, input_sha256)
        shadow_part: StagedPart | None = None
        if shadow is not None:
            shadow_part = cast(
                StagedPart, asdict(upload_part(store, shadow[2], shadow_key, key, input_sha256))
            )
        quarantine_key = None
        if result.quarantine_rows:
            quarantine_key = layout.score_quarantine_part_key(day.quarantine_prefix, index)
            store.upload_file(folder / "quarantine.parquet", quarantine_key)
    return {
        "index": index,
        "input_key": key,
        "input_sha256": input_sha256,
        "part": cast(StagedPart, asdict(part)),
        "shadow_part": shadow_part,
        "quarantine_key": quarantine_key,
        "id_hashes_key": hashes_key,
        "stats": result.stats.to_dict(),
        "agreement": asdict(result.agreement) if result.agreement else None,
        "canary_rows": canary_rows,
        "canary_note": canary_note,
        "classes": _classes_json(pipeline, spec),
        "shadow_classes": None if shadow_model is None else _classes_json(shadow_model[0], spec),
    }


def _scoring_day(spec: ModelSpec, store: ObjectStore, plan: ScorePlan, run: RunInfo) -> ScoringDay:
    """The planned day with its models loaded and verified and its input store opened."""
    model, shadow_model = _loaded_models(plan, run)
    return ScoringDay(
        spec,
        store,
        # Inputs under the store's own root reuse its client; others get the same credentials.
        store.open_uri(plan["input_root"]),
        plan["ds"],
        plan["token"],
        model,
        shadow_model,
        layout.quarantine_prefix(spec.name, run.dag_run_id),
        float(plan.get("canary_share", 0.0)),
    )


def _loaded_models(plan: ScorePlan, run: RunInfo) -> tuple[tuple[Any, Any], tuple[Any, Any] | None]:
    """The planned model (and shadow model) as (verified pipeline, RunStamp)."""
    from datetime import datetime

    from mlops_pipeline import registry
    from mlops_pipeline.scoring import RunStamp

    registry.import_model_format()
    registry.configured_client()
    logical_ts = datetime.fromisoformat(run.event_time)
    models: list[tuple[Any, Any]] = []
    try:
        for ref in (plan["model"], plan["shadow_model"]):
            if ref is not None:
                pipeline = registry.load_verified(ref["model_uri"], ref["artifact_sha256"])
                models.append((pipeline, RunStamp(ref["name"], ref["version"], run.dag_run_id, logical_ts)))
    except registry.ArtifactIntegrityError as exc:
        raise StepRejected(str(exc)) from exc
    return models[0], (models[1] if len(models) > 1 else None)


def score(
    spec: ModelSpec, store: ObjectStore, plan: ScorePlan, item: InputFile, run: RunInfo, attempt: int = 1
) -> ScoredInput:
    """Score one input file with the planned model version into the run's staging prefix.

    `attempt` (the task's try number) names the staged part: what a killed try left is never the
    file the retry stages, and only the files the successful tries return reach the manifest.
    """
    from mlops_pipeline.faults import pause_point

    assert spec.scoring is not None
    day = _scoring_day(spec, store, plan, run)
    claim_evidence(store, run, day.quarantine_prefix)
    staged = stage_scored_input(day, item["key"], int(item["index"]), attempt)
    # The worker-death test kills the task here: its part is staged, the task has not returned.
    pause_point("score_staged")
    return staged


def _staged_id_hashes(store: ObjectStore, result: ScoredInput) -> Any:
    """The distinct id hashes its `score` task staged for one input file (a sorted uint64 array)."""
    import io

    import numpy as np

    return np.load(io.BytesIO(store.read_bytes(result["id_hashes_key"])), allow_pickle=False)


def rescore_files_with_ids_of_other_files(
    spec: ModelSpec, store: ObjectStore, plan: ScorePlan, results: list[ScoredInput], run: RunInfo
) -> tuple[list[ScoredInput], list[ScoredInput]]:
    """The day's results with every file that shares ids with another file scored again, those
    ids breaking `unique:<id>` (policy `scoring.duplicate_ids`) as ids repeated within one file do;
    and the results it replaced.

    Each `score` task sees its own file only; this is where the day is seen whole. A clean day
    (the normal case) costs one small read per file (8 bytes a row); a day with ids in more than
    one file costs the scoring of the files that hold them, once more, by the code that scored them.
    """
    import logging

    import numpy as np

    from mlops_pipeline.rules import RepeatedIds

    if len(results) < 2:
        return results, []
    hashes = [_staged_id_hashes(store, result) for result in results]
    repeated = RepeatedIds.across(hashes)
    if not len(repeated):
        return results, []
    affected = [index for index, held in enumerate(hashes) if np.isin(held, repeated.hashes).any()]
    files = [results[index]["input_key"] for index in affected]
    logging.getLogger(__name__).info(
        "%d id(s) occur in more than one input file of %s on %s (%s): scoring those files again with "
        "them under rule unique:%s",
        len(repeated),
        spec.name,
        plan["ds"],
        ", ".join(files),
        spec.id_column,
    )
    day = _scoring_day(spec, store, plan, run)
    rescored = list(results)
    for index in affected:
        result = results[index]
        try:
            rescored[index] = stage_scored_input(
                day, result["input_key"], int(result["index"]), replacing=result, repeated_elsewhere=repeated
            )
        except StepRejected as exc:
            raise StepRejected(
                f"{len(repeated)} id(s) of {spec.name} on {plan['ds']} occur in more than one input file "
                f"({', '.join(files)}): {exc}"
            ) from exc
    return rescored, [results[index] for index in affected]


def _classes_json(pipeline: Any, spec: ModelSpec) -> list[Any] | None:
    from mlops_pipeline.scoring import model_classes

    classes = model_classes(pipeline, spec)
    return None if classes is None else classes.tolist()


def _schema_from_classes(classes: list[Any] | None) -> Any:
    import numpy as np

    from mlops_pipeline.scoring import output_schema

    return output_schema(None if classes is None else np.asarray(classes))


def publish(
    spec: ModelSpec, store: ObjectStore, plan: ScorePlan, results: list[ScoredInput], run: RunInfo
) -> Published:
    """Check the staged parts and publish the partition (manifest last); log the run's metrics to MLflow.

    Files that share ids with another file of the day are scored again first, those ids under
    `unique:<id>` (:func:`rescore_files_with_ids_of_other_files`); the parts they replace are
    deleted once the partition is published.
    """
    import hashlib
    import json

    from mlops_pipeline.layout import PREDICTIONS, SHADOW
    from mlops_pipeline.predictions import PartFile, PublishError, clean_stale_parts, publish_partition
    from mlops_pipeline.scoring import Agreement, ScoreStats

    assert spec.scoring is not None
    results = sorted(results, key=lambda r: r["index"])
    results, replaced = rescore_files_with_ids_of_other_files(spec, store, plan, results, run)
    stats = ScoreStats()
    agreement = Agreement() if plan["shadow_model"] else None
    for result in results:
        stats.add(ScoreStats.from_dict(result["stats"]))
        if agreement is not None and result["agreement"]:
            agreement.merge(Agreement(**result["agreement"]))
    share = stats.rows_quarantined / stats.rows_in if stats.rows_in else 0.0
    ds = plan["ds"]
    if refusal := day_volume_refusal(spec, ds, stats.rows_in, [r["input_key"] for r in results]):
        raise StepRejected(refusal)
    quarantine_reason = None
    if stats.rows_quarantined:
        quarantine_reason = layout.score_quarantine_reason_key(spec.name, run.dag_run_id)
        reason = {
            "model": spec.name,
            "ds": ds,
            "run_id": run.dag_run_id,
            "rows": stats.rows_quarantined,
            "share": share,
            "rules": stats.quarantined_by_rule,
            "files": [r["quarantine_key"] for r in results if r["quarantine_key"]],
            # The input files holding ids that another file of the day holds too (all their rows
            # break unique:<id>, as ids repeated within one file do).
            "files_sharing_ids": [r["input_key"] for r in replaced],
        }
        store.write_bytes(quarantine_reason, json.dumps(reason, indent=2, sort_keys=True).encode())
    if share > spec.scoring.max_quarantine_share:
        raise StepRejected(
            f"{stats.rows_quarantined} of {stats.rows_in} input rows ({share:.1%}) of {spec.name} on {ds} could "
            f"not be scored ({stats.quarantined_by_rule}, in {_quarantined_inputs(results)}), over the limit of "
            f"{spec.scoring.max_quarantine_share:.1%}; "
            f"nothing published. Quarantine: {store.uri(quarantine_reason or '')}"
        )
    inputs = "\n".join(f"{r['input_key']} {r['input_sha256']}" for r in results)
    data_sha256 = hashlib.sha256(inputs.encode()).hexdigest()
    schema = _schema_from_classes(results[0]["classes"])
    agreement_summary = agreement.summary() if agreement is not None else None
    published_rows = stats.rows_in - stats.rows_quarantined
    canary_rows = sum(int(r.get("canary_rows", 0)) for r in results)
    rows_by_version = {plan["model"]["version"]: published_rows - canary_rows}
    if canary_rows and plan["shadow_model"]:
        rows_by_version[plan["shadow_model"]["version"]] = canary_rows
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
        "rows_by_version": rows_by_version,
        "canary_share": plan.get("canary_share", 0.0),
        "canary_notes": [r["canary_note"] for r in results if r.get("canary_note")],
        # Said outright, so a reader can tell a day that was empty from one that was lost.
        "empty_day": stats.rows_in == 0,
    }
    fault_point("before_manifest")
    try:
        # A retry of a publish whose worker died after writing its generation publishes no second
        # one: publish_partition finds its own (same run, token and files) and finishes it.
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
                [PartFile(**r["shadow_part"]) for r in results if r["shadow_part"] is not None],
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
    for result in replaced:  # in the published run's folder, but named by no manifest
        for part in (result["part"], result["shadow_part"]):
            if part is not None:
                store.delete(part["key"])
    wall_seconds = max(time.time() - float(plan["started"]), 1e-9)
    metrics = scoring_metrics(spec, stats, wall_seconds, agreement_summary)
    metrics |= {
        f"rows_share.v{version}": rows / max(published_rows, 1) for version, rows in rows_by_version.items()
    }
    _log_scoring_run(spec, ds, plan, run, metrics, data_sha256)
    published: Published = {
        "ds": ds,
        "rows": manifest["rows"],
        "quarantined_rows": stats.rows_quarantined,
        "model_version": plan["model"]["version"],
        "manifest_uri": store.uri(layout.manifest_key(layout.PREDICTIONS, spec.name, ds)),
        "generation": manifest["generation"],
        "shadow_version": plan["shadow_model"]["version"] if plan["shadow_model"] else None,
        "shadow_manifest_generation": shadow_manifest["generation"] if shadow_manifest else None,
        "shadow_agreement": agreement_summary,
        "rows_by_version": rows_by_version,
        "metrics": metrics,
    }
    from mlops_pipeline import telemetry

    telemetry.push(telemetry.score_run_metrics(spec.name, published, stats, spec.is_classification))
    return published


def _quarantined_inputs(results: list[ScoredInput]) -> str:
    """The input files that had quarantined rows, with how many, for a refusal message."""
    return ", ".join(
        f"{r['input_key']} ({r['stats']['rows_quarantined']} rows)"
        for r in results
        if r["stats"]["rows_quarantined"]
    )


def day_volume_refusal(spec: ModelSpec, ds: str, rows_in: int, inputs: list[str]) -> str | None:
    """Why a day's input rows are too few to publish (`scoring.min_rows`, `scoring.allow_empty`), or None."""
    assert spec.scoring is not None
    if rows_in == 0 and spec.scoring.allow_empty:
        return None
    if rows_in >= max(spec.scoring.min_rows, 1):
        return None
    if rows_in == 0:
        return (
            f"the input file(s) of {spec.name} on {ds} ({', '.join(inputs)}) hold no rows (rule min_rows); "
            "nothing published. "
            "If the day is rightly empty, set scoring.allow_empty: true (with min_rows: 0) to publish an "
            "empty partition; else deliver the day's rows and rerun"
        )
    return (
        f"the input file(s) of {spec.name} on {ds} ({', '.join(inputs)}) hold {rows_in} rows, fewer than "
        f"scoring.min_rows "
        f"{spec.scoring.min_rows} (rule min_rows); nothing published. Deliver the missing rows and rerun, "
        "or lower scoring.min_rows"
    )


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
    if spec.is_classification:
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
    spec: ModelSpec, ds: str, plan: ScorePlan, run: RunInfo, metrics: dict[str, float], data_sha256: str
) -> None:
    import mlflow

    experiment = mlflow.set_experiment(f"{spec.name}-scoring")
    tags = {**run.tags(), "ds": ds, "model_version": plan["model"]["version"], "data_sha256": data_sha256}
    with mlflow.start_run(experiment_id=experiment.experiment_id, run_name=f"{spec.name} {ds}", tags=tags):
        mlflow.log_params(
            {"model_version": plan["model"]["version"], "ds": ds, "shadow": bool(plan["shadow_model"])}
        )
        mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})  # NaN-free
