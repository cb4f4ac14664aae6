"""Rollout: the shadow period's records and its pure decision (wait, promote, refuse), and the
automatic rollback's (every reason with its numbers)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mlops_pipeline.rollout import (
    ShadowDecision,
    ShadowEvidence,
    ShadowStarted,
    decide_rollback,
    decide_shadow,
    in_shadow,
    outcome_of,
    previous_champion,
    record_outcome,
    record_rollback,
    shadow_outcome,
    start_shadow,
)
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.steps import RunInfo


def rollout_spec(**rollout: Any) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": "churn",
            "task": "binary",
            "source": {"uri": "landing/churn/ds={ds}/*.csv"},
            "id_column": "id",
            "target": "label",
            "features": {"x": {"type": "number"}},
            "estimator": {"kind": "logistic_regression"},
            "gates": {"primary_metric": "roc_auc"},
            "scoring": {"input": {"uri": "incoming/churn/ds={ds}/*.parquet"}},
            "labels": {"uri": "labels/churn/ds={ds}/*.csv"},
            "rollout": {"shadow_days": 2, "min_labels": 100, "max_live_regression": 0.02, **rollout},
        }
    )


def evidence(
    days: int = 2, challenger: float = 0.80, champion: float = 0.81, labels: int = 500, **kw
) -> ShadowEvidence:
    return ShadowEvidence(
        days=[f"2026-03-0{d + 1}" for d in range(days)],
        rows=1000,
        label_agreement=kw.get("agreement", 0.95),
        live={
            "2": {"roc_auc": challenger, "labelled_rows": float(labels)},
            "1": {"roc_auc": champion, "labelled_rows": 500.0},
        },
    )


def test_it_waits_until_every_shadow_day_is_scored() -> None:
    decision = decide_shadow(rollout_spec(), evidence(days=1), "2", "1")
    assert decision == ShadowDecision("wait", ["1 of 2 shadow days scored (2026-03-01)"])


def test_two_labels_never_decide() -> None:
    decision = decide_shadow(rollout_spec(), evidence(labels=2), "2", "1")
    assert decision.action == "wait"
    assert decision.reasons == ["late labels: v2 has 2 labelled rows of the 100 needed to compare"]


def test_a_challenger_within_the_tolerance_is_promoted_with_its_numbers() -> None:
    decision = decide_shadow(rollout_spec(), evidence(challenger=0.80, champion=0.81), "2", "1")
    assert decision.action == "promote"
    assert decision.reasons[0] == (
        "live roc_auc v2 0.8000 vs champion v1 0.8100 on 500 and 500 labelled rows (tolerance 0.02): no worse"
    )
    assert decision.reasons[-1] == "2 shadow days: 2026-03-01, 2026-03-02"


def test_a_worse_challenger_is_refused() -> None:
    decision = decide_shadow(rollout_spec(), evidence(challenger=0.70, champion=0.81), "2", "1")
    assert decision.action == "refuse" and decision.reasons[0].endswith(": worse")


def test_lower_is_better_metrics_compare_the_other_way() -> None:
    spec = rollout_spec().model_copy(
        update={"gates": rollout_spec().gates.model_copy(update={"primary_metric": "log_loss"})}
    )
    live = {"2": {"log_loss": 0.50, "labelled_rows": 500.0}, "1": {"log_loss": 0.40, "labelled_rows": 500.0}}
    worse = ShadowEvidence(["a", "b"], 10, None, live)
    assert decide_shadow(spec, worse, "2", "1").action == "refuse"
    better = ShadowEvidence(["a", "b"], 10, None, {**live, "2": {"log_loss": 0.39, "labelled_rows": 500.0}})
    assert decide_shadow(spec, better, "2", "1").action == "promote"


def test_too_little_agreement_refuses_even_a_better_challenger() -> None:
    decision = decide_shadow(
        rollout_spec(min_agreement=0.9), evidence(challenger=0.9, agreement=0.5), "2", "1"
    )
    assert decision.action == "refuse"
    assert "labels agree with the champion's on 0.5000 of 1000 rows (at least 0.9 needed)" in decision.reasons


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scoring": None, "labels": None}, "needs a scoring section"),
        (
            {
                "task": "regression",
                "estimator": {"kind": "ridge"},
                "gates": {"primary_metric": "rmse"},
                "rollout": {"shadow_days": 1, "min_agreement": 0.9},
            },
            "min_agreement is for classification",
        ),
    ],
)
def test_the_spec_refuses_a_rollout_that_cannot_work(change: dict, message: str) -> None:
    raw = rollout_spec().model_dump(mode="json", by_alias=True) | change
    with pytest.raises(ValueError, match=message):
        ModelSpec.model_validate(raw)


def test_a_period_is_started_and_concluded_once(local_store) -> None:
    started = ShadowStarted("churn", "2", "1", 2, "manual__a", "2026-03-01T00:00:00+00:00")
    assert start_shadow(local_store, started) == started
    later = ShadowStarted("churn", "2", "1", 5, "manual__b", "2026-03-02T00:00:00+00:00")
    assert start_shadow(local_store, later) == started  # a retry keeps the first record
    assert in_shadow(local_store, "churn", "2") and not in_shadow(local_store, "churn", "3")

    run = RunInfo("churn__score", "scheduled__x", "scheduler", "2026-03-02T00:00:00+00:00")
    decision = ShadowDecision("promote", ["live roc_auc …"])
    first = record_outcome(local_store, outcome_of(started, "1", decision, evidence(), run))
    again = record_outcome(
        local_store, outcome_of(started, "1", ShadowDecision("refuse", ["x"]), evidence(), run)
    )
    assert again == first == shadow_outcome(local_store, "churn", "2")
    assert not in_shadow(local_store, "churn", "2")


# --- automatic rollback -------------------------------------------------------------------------------


def watched_spec(**rollback: Any) -> ModelSpec:
    return rollout_spec(shadow_days=0, rollback={"max_live_drop": 0.05, "min_labels": 100, **rollback})


def live(champion: float, previous: float, labels: int = 500) -> dict[str, dict[str, float]]:
    return {
        "4": {"roc_auc": champion, "labelled_rows": float(labels)},
        "2": {"roc_auc": previous, "labelled_rows": 500.0},
    }


def test_a_champion_far_below_the_one_it_replaced_is_rolled_back() -> None:
    decision = decide_rollback(watched_spec(), live(0.60, 0.80), "4", "2")
    assert (decision.action, decision.to_version) == ("rollback", "2")
    assert decision.reasons == [
        "live roc_auc of champion v4 0.6000 vs v2 0.8000 before it, on 500 and 500 labelled rows: "
        "a drop of 0.2000, over the limit of 0.05"
    ]


def test_a_drop_within_the_limit_keeps_the_champion() -> None:
    decision = decide_rollback(watched_spec(), live(0.77, 0.80), "4", "2")
    assert decision.action == "none" and decision.reasons[0].endswith("within the limit of 0.05")


def test_too_few_labels_never_roll_back() -> None:
    decision = decide_rollback(watched_spec(), live(0.10, 0.80, labels=2), "4", "2")
    assert decision.action == "wait" and "v4 has 2 labelled rows of the 100 needed" in decision.reasons[0]


def test_without_a_policy_or_a_replaced_champion_nothing_is_decided() -> None:
    assert decide_rollback(rollout_spec(), live(0.1, 0.9), "4", "2").action == "none"
    assert decide_rollback(watched_spec(), live(0.1, 0.9), "4", None).reasons == ["v4 replaced no champion"]


def test_the_previous_champion_is_the_one_the_latest_promotion_replaced() -> None:
    def record(action: str, source: str | None, target: str) -> SimpleNamespace:
        return SimpleNamespace(action=action, from_version=source, to_version=target)

    history = [record("promote", None, "1"), record("promote", "1", "2"), record("promote", "2", "4")]
    assert previous_champion(history, "4") == "2"
    # A champion restored by a rollback replaced nothing by merit: it is never rolled back in turn.
    assert previous_champion([*history, record("rollback", "4", "2")], "2") is None


def test_an_automatic_rollback_is_recorded_once(local_store) -> None:
    decision = decide_rollback(watched_spec(), live(0.60, 0.80), "4", "2")
    assert record_rollback(local_store, "churn", decision, "run-1") is True
    assert record_rollback(local_store, "churn", decision, "run-2") is False
