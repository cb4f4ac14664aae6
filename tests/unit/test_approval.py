"""A person's approval as data: the step's answer read, the decision taken on it (pure), recorded once."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from mlops_pipeline import approval
from mlops_pipeline.approval import ApprovalAnswer, decide_approval
from mlops_pipeline.spec import load_spec
from mlops_pipeline.store import LocalStore

REPO = Path(__file__).resolve().parents[2]
THREE_DAYS = timedelta(days=3)


def answer(chosen: list[str], reason: str = "", user: str | None = "alice", **extra: object) -> dict:
    """What `CandidateApproval.execute_complete` returns."""
    return {
        "chosen_options": chosen,
        "params_input": {"reason": reason},
        "responded_by_user": None if user is None else {"id": user, "name": user},
        "timedout": user is None,
        "superseded_by": None,
        **extra,
    }


def decide(payload: dict, newest: str | None = "4", version: str = "4"):
    return decide_approval(
        "diabetes",
        version,
        ApprovalAnswer.from_step(payload),
        newest,
        THREE_DAYS,
        dag_run_id="v4__approval",
        at="2026-03-01T00:00:00+00:00",
    )


def test_a_person_who_chooses_promote_approves_in_their_name() -> None:
    decision = decide(answer(["Promote"], "  holdout rmse is better  "))
    assert decision.approved
    assert (decision.outcome, decision.by, decision.reason) == ("approved", "alice", "holdout rmse is better")
    assert decision.summary() == "diabetes v4 approved by alice: holdout rmse is better"


def test_a_rejection_names_who_and_why_and_has_a_reason_even_when_none_was_given() -> None:
    rejected = decide(answer(["Reject"], "calibration looks off", user="bob"))
    assert not rejected.approved
    assert rejected.summary() == "diabetes v4 rejected by bob: calibration looks off"
    assert decide(answer(["Reject"], user="bob")).reason == "rejected without a reason"


def test_nobody_answering_is_a_timeout_not_a_rejection_by_someone() -> None:
    timed_out = decide(answer(["Reject"], user=None))
    assert (timed_out.outcome, timed_out.by) == ("timed_out", "timeout")
    assert timed_out.reason == "no answer within 3 days"
    assert not timed_out.approved


def test_a_newer_candidate_supersedes_even_an_approval() -> None:
    by_trigger = decide(answer(["Reject"], "superseded by v5", user=None, timedout=False, superseded_by="5"))
    assert (by_trigger.outcome, by_trigger.reason) == ("superseded", "superseded by v5, a newer candidate")
    # Approved in the moment the newer one registered: the older model is still not promoted.
    raced = decide(answer(["Promote"], "fine"), newest="5")
    assert raced.outcome == "superseded" and not raced.approved
    # The challenger being this version (or an older one) supersedes nothing.
    assert decide(answer(["Promote"], "fine"), newest="4").approved
    assert decide(answer(["Promote"], "fine"), newest=None).approved


def test_anything_but_exactly_one_promote_is_no_approval() -> None:
    assert not decide(answer(["Promote", "Reject"])).approved
    assert not decide(answer([])).approved
    assert ApprovalAnswer.from_step(answer(["Promote"], "x" * 2000)).reason == "x" * approval.MAX_REASON


@pytest.mark.parametrize(
    ("timeout", "read"),
    [
        (timedelta(days=1), "1 day"),
        (timedelta(hours=2, minutes=30), "2 h 30 min"),
        (timedelta(seconds=45), "45 s"),
    ],
)
def test_the_timeout_reads_as_an_operator_would_say_it(timeout: timedelta, read: str) -> None:
    assert approval._duration(timeout) == read


def test_a_decision_is_recorded_once_and_a_second_answer_gets_the_first(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    first = decide(answer(["Reject"], "no", user="bob"))
    assert approval.recorded_decision(store, "diabetes", "4") is None
    assert approval.record_decision(store, first) == first
    second = decide(answer(["Promote"], "yes"))
    assert approval.record_decision(store, second) == first
    assert approval.recorded_decision(store, "diabetes", "4") == first


def test_the_spec_takes_a_timeout_and_approvers_only_with_approval_required(tmp_path: Path) -> None:
    text = (REPO / "include/models/diabetes.yaml").read_text()
    path = tmp_path / "diabetes.yaml"
    path.write_text(text + "approval_timeout: PT30M\napprovers: [alice, bob]\n")
    spec = load_spec(path)
    assert spec.approval_timeout == timedelta(minutes=30) and spec.approvers == ["alice", "bob"]
    path.write_text(
        text.replace("approval_required: true", "approval_required: false") + "approvers: [alice]\n"
    )
    with pytest.raises(ValueError, match="approvers and approval_timeout need approval_required: true"):
        load_spec(path)
    path.write_text(text + "approval_timeout: 0\n")
    with pytest.raises(ValueError, match="approval_timeout"):
        load_spec(path)
