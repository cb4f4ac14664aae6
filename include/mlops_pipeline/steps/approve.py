"""The task bodies of `<model>__approve`: ask a person about one candidate, then act on the answer.

`request` checks the candidate and gathers what the person needs (its holdout metrics, the gate
report's page); the wait itself is Airflow's Human-in-the-loop step
(`mlops_pipeline.approval_step.CandidateApproval`); `decide` records the decision once and, when
it is not an approval, writes the refusal to the promotion history; `promote` promotes an approved
candidate, or starts its shadow period, exactly as `<model>__train`'s `promote` does without
approval.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.steps import RunInfo, StepRejected
from mlops_pipeline.steps.results import ApprovalDecided, ApprovalRequest, Promotion, Registered
from mlops_pipeline.store import ObjectStore


def request(
    spec: ModelSpec, store: ObjectStore, version: str, as_of: str | None, run: RunInfo
) -> ApprovalRequest:
    """The candidate `version` as the person is asked about it; refused when it is no candidate
    (unknown, failed its gates) or was already decided (an answer counts once)."""
    from mlops_pipeline import approval, registry

    client = registry.configured_client()
    try:
        found = registry.existing_version(client, spec.name, version)
    except registry.RegistryError as exc:
        raise StepRejected(str(exc)) from exc
    if found.tags.get("gates_passed") != "true":
        raise StepRejected(f"{spec.name} v{version} did not pass its gates: there is nothing to approve")
    if recorded := approval.recorded_decision(store, spec.name, version):
        raise StepRejected(f"{spec.name} v{version} was already decided: {recorded.summary()}")
    champion = registry.alias_version(client, spec.name, registry.CHAMPION)
    train_dag, train_run = found.tags.get("airflow.dag_id"), found.tags.get("airflow.dag_run_id")
    candidate_run = client.get_run(found.run_id) if found.run_id else None
    metrics = {} if candidate_run is None else candidate_run.data.metrics
    return {
        "model": spec.name,
        "version": version,
        "as_of": as_of,
        "gate_report_path": (
            f"/mlops/runs/{train_dag}/{train_run}/gate-report" if train_dag and train_run else None
        ),
        "holdout_metrics": {
            name.removeprefix("holdout_"): round(value, 6)
            for name, value in sorted(metrics.items())
            if name.startswith("holdout_")
        },
        "champion_version": None if champion is None else str(champion.version),
    }


def decide(
    spec: ModelSpec,
    store: ObjectStore,
    asked: ApprovalRequest,
    answer: Mapping[str, Any],
    run: RunInfo,
) -> ApprovalDecided:
    """Turn the step's answer into the decision (`approval.decide_approval`), record it once, show
    it on the model version, and write a refusal to the promotion history (taking `challenger`
    from the candidate)."""
    from mlops_pipeline import approval, registry

    client = registry.configured_client()
    challenger = registry.alias_version(client, spec.name, registry.CHALLENGER)
    decision = approval.record_decision(
        store,
        approval.decide_approval(
            spec.name,
            asked["version"],
            approval.ApprovalAnswer.from_step(answer),
            None if challenger is None else str(challenger.version),
            spec.approval_timeout,
            dag_run_id=run.dag_run_id,
            at=run.event_time,
        ),
    )
    for key, value in (
        ("approval", decision.outcome),
        ("approval_by", decision.by),
        ("approval_reason", decision.reason),
    ):
        client.set_model_version_tag(spec.name, decision.version, key, value)
    if not decision.approved:
        registry.record_refusal(
            client,
            store,
            client.get_model_version(spec.name, decision.version),
            actor=decision.by,
            dag_run_id=run.dag_run_id,
            at=run.event_time,
            reason=decision.summary(),
        )
    return {
        "model": decision.model,
        "version": decision.version,
        "outcome": decision.outcome,
        "by": decision.by,
        "reason": decision.reason,
        "dag_run_id": decision.dag_run_id,
        "at": decision.at,
        "approved": decision.approved,
        "summary": decision.summary(),
    }


def promote(spec: ModelSpec, store: ObjectStore, decided: ApprovalDecided, run: RunInfo) -> Promotion | str:
    """Promote the approved candidate (the history names who approved it and why), or start its
    shadow period when the spec has one: then why it was not promoted (for the skipped task)."""
    from mlops_pipeline import registry
    from mlops_pipeline.steps import rollout
    from mlops_pipeline.steps.results import promotion

    if not decided["approved"]:
        raise StepRejected(f"not approved: {decided['summary']}")  # the DAG skips promote before this
    registered: Registered = {
        "version": decided["version"],
        "model_uri": f"models:/{spec.name}/{decided['version']}",
    }
    if shadowing := rollout.enter_shadow(spec, store, registered, run):
        return shadowing
    client = registry.configured_client()
    try:
        record = registry.promote(
            client,
            store,
            client.get_model_version(spec.name, decided["version"]),
            actor=decided["by"],
            dag_run_id=run.dag_run_id,
            at=run.event_time,
            reason=f"passed its gates; approved by {decided['by']}: {decided['reason']}",
        )
    except registry.RegistryError as exc:
        raise StepRejected(str(exc)) from exc
    return promotion(record)
