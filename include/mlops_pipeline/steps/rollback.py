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
