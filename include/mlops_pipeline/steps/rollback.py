"""The task body of `<model>__rollback`: move `champion` back, in seconds, recorded in the history."""

from __future__ import annotations

from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.steps import RunInfo, StepRejected
from mlops_pipeline.steps.results import Promotion, promotion
from mlops_pipeline.store import ObjectStore


def rollback(
    spec: ModelSpec, store: ObjectStore, to_version: str | None, reason: str, run: RunInfo
) -> Promotion:
    """Move `champion` back to the previous champion, or to `to_version`, and record it."""
    from mlops_pipeline import registry

    client = registry.configured_client()
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
    return promotion(record)


def days_to_rescore(spec: ModelSpec, store: ObjectStore, rolled_back: Promotion) -> list[dict[str, str]]:
    """The conf of one `<model>__score` run per day whose published partition the rolled-back
    version wrote: each is scored again (atomically, as always) with the restored champion."""
    from mlops_pipeline.layout import PREDICTIONS
    from mlops_pipeline.predictions import published_days, read_manifest

    if spec.scoring is None or rolled_back["from_version"] is None:
        return []
    days = []
    for ds in published_days(store, PREDICTIONS, spec.name):
        manifest = read_manifest(store, PREDICTIONS, spec.name, ds)
        if manifest is not None and str(manifest.get("model_version")) == rolled_back["from_version"]:
            days.append({"ds": ds})
    return days
