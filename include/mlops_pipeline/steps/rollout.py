"""The rollout steps the train and score DAGs share: a candidate's shadow period started (in
`<model>__train`'s `promote`) and concluded (`<model>__score`'s `conclude_shadow`).

Kept apart from `steps/train.py` and `steps/score.py` because both belong to one concern, the
rollout (:mod:`mlops_pipeline.rollout` holds its records and pure decisions).
"""

from __future__ import annotations

from typing import Any

from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.steps import RunInfo
from mlops_pipeline.steps.results import Registered, ShadowConcluded, promotion
from mlops_pipeline.store import ObjectStore


def enter_shadow(spec: ModelSpec, store: ObjectStore, registered: Registered, run: RunInfo) -> str | None:
    """`<model>__train`'s `promote`, first: start the registered version's shadow period instead of promoting it, when the spec asks for
    one and there is a champion to compare with; why (for the skipped `promote`), else None."""
    from mlops_pipeline import registry, rollout

    if not spec.rollout.shadow_days:
        return None
    client = registry.configured_client()
    champion = registry.alias_version(client, spec.name, registry.CHAMPION)
    if champion is None or str(champion.version) == registered["version"]:
        return None  # a first model has nothing to be compared with
    started = rollout.start_shadow(
        store,
        rollout.ShadowStarted(
            model=spec.name,
            version=registered["version"],
            champion_version=str(champion.version),
            shadow_days=spec.rollout.shadow_days,
            dag_run_id=run.dag_run_id,
            at=run.event_time,
        ),
    )
    _tag_outcome(
        client,
        spec.name,
        started.version,
        "shadow",
        [f"{started.shadow_days} scoring days beside champion v{started.champion_version}"],
    )
    return (
        f"{spec.name} v{started.version} is the challenger in a shadow period of {started.shadow_days} scoring "
        f"days beside champion v{started.champion_version}: each score run scores it in shadow, and the run "
        "that completes the evidence promotes or refuses it"
    )


def conclude_shadow(spec: ModelSpec, store: ObjectStore, run: RunInfo) -> ShadowConcluded:
    """`<model>__score`'s `conclude_shadow`, after a day is published: decide the challenger's open
    shadow period on its evidence so far (`rollout.decide_shadow`), and promote or refuse it; once
    per period (the outcome is create-only)."""
    from mlops_pipeline import registry, rollout

    client = registry.configured_client()
    challenger = registry.alias_version(client, spec.name, registry.CHALLENGER)
    champion = registry.alias_version(client, spec.name, registry.CHAMPION)
    started = (
        None if challenger is None else rollout.shadow_started(store, spec.name, str(challenger.version))
    )
    result: ShadowConcluded = {
        "challenger_version": None if challenger is None else str(challenger.version),
        "champion_version": None if champion is None else str(champion.version),
        "action": "none",
        "reasons": ["no candidate is in a shadow period"],
        "days": [],
        "promotion": None,
    }
    if challenger is None or champion is None or started is None:
        return result
    version, current = str(challenger.version), str(champion.version)
    outcome = rollout.shadow_outcome(store, spec.name, version)
    if outcome is None:
        evidence = rollout.shadow_evidence(store, spec, version, current)
        decision = rollout.decide_shadow(spec, evidence, version, current)
        result |= {"action": decision.action, "reasons": decision.reasons, "days": evidence.days}
        if decision.action == "wait":
            return result
        outcome = rollout.record_outcome(store, rollout.outcome_of(started, current, decision, evidence, run))
    result |= {
        "action": outcome.decision.action,
        "reasons": outcome.decision.reasons,
        "days": outcome.evidence.days,
    }
    if outcome.decision.action == "refuse":
        _tag_outcome(client, spec.name, version, "refused", outcome.decision.reasons)
        client.delete_registered_model_alias(spec.name, registry.CHALLENGER)
        return result
    if current != version:  # a retry after the move finds it done
        record = registry.promote(
            client,
            store,
            challenger,
            actor=run.actor,
            dag_run_id=run.dag_run_id,
            at=run.event_time,
            reason="shadow period: " + "; ".join(outcome.decision.reasons),
        )
        _tag_outcome(client, spec.name, version, "promoted", outcome.decision.reasons)
        result["promotion"] = promotion(record)
    return result


def _tag_outcome(client: Any, model: str, version: str, state: str, reasons: list[str]) -> None:
    """Show the rollout's state and its reasons on the version, where the MLflow UI lists it."""
    client.set_model_version_tag(model, version, "rollout", state)
    client.set_model_version_tag(model, version, "rollout_reason", "; ".join(reasons)[:5000])
