"""A person's approval of a candidate: the answer Airflow's Human-in-the-loop step collected, the
decision taken on it, and its record.

`<model>__train` registers a candidate and asks `<model>__approve` for an answer, so that a
candidate waiting for a person never holds up the next training run. The approve run waits in
Airflow's Required Actions page (`mlops_pipeline.approval_step.CandidateApproval`) until one of:

1. a person answers (Promote or Reject, with a reason): the answer is theirs, named;
2. `approval_timeout` passes: the timeout's default, Reject, is applied (nobody answered);
3. a newer candidate takes the `challenger` alias: this one is superseded and its wait ends.

`decide_approval` (pure) turns the answer into an `ApprovalDecision`, recorded once per version
(`record_decision`, create-only). Only an approved candidate goes on to be promoted (or to enter
its shadow period); every other outcome is also written to the promotion history, with who and why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, Literal

from mlops_pipeline import layout
from mlops_pipeline.store import ObjectExistsError, ObjectStore

PROMOTE = "Promote"
REJECT = "Reject"
OPTIONS = (PROMOTE, REJECT)
MAX_REASON = 500
Outcome = Literal["approved", "rejected", "timed_out", "superseded"]


@dataclass(frozen=True)
class ApprovalAnswer:
    """What the Human-in-the-loop step returned, as plain values."""

    chosen: str
    reason: str
    responder: str | None  # the Airflow user who answered; None when nobody did
    timed_out: bool
    superseded_by: str | None

    @classmethod
    def from_step(cls, payload: Mapping[str, Any]) -> ApprovalAnswer:
        """Read the approve task's result (`CandidateApproval.execute_complete`)."""
        chosen = list(payload.get("chosen_options") or [])
        user = payload.get("responded_by_user") or None
        reason = (payload.get("params_input") or {}).get("reason") or ""
        return cls(
            chosen=chosen[0] if len(chosen) == 1 else REJECT,  # anything else is no approval
            reason=str(reason).strip()[:MAX_REASON],
            responder=None if user is None else str(user.get("name") or user.get("id")),
            timed_out=bool(payload.get("timedout")) and user is None,
            superseded_by=payload.get("superseded_by"),
        )


@dataclass(frozen=True)
class ApprovalDecision:
    """The recorded outcome of one candidate's approval."""

    model: str
    version: str
    outcome: Outcome
    by: str  # who decided: a user, or "timeout" / "superseded" when nobody did
    reason: str
    dag_run_id: str
    at: str

    @property
    def approved(self) -> bool:
        """Whether the candidate goes on to be promoted (or to enter its shadow period)."""
        return self.outcome == "approved"

    def summary(self) -> str:
        """One line for the operator: what happened, by whom, why."""
        if self.outcome == "approved":
            return f"{self.model} v{self.version} approved by {self.by}: {self.reason}"
        if self.outcome == "rejected":
            return f"{self.model} v{self.version} rejected by {self.by}: {self.reason}"
        return f"{self.model} v{self.version} not approved: {self.reason}"

    def to_json(self) -> bytes:
        """Stable JSON bytes."""
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()


def decide_approval(
    model: str,
    version: str,
    answer: ApprovalAnswer,
    newest_candidate: str | None,
    timeout: timedelta,
    *,
    dag_run_id: str,
    at: str,
) -> ApprovalDecision:
    """The decision on `version`'s approval (pure).

    A newer candidate wins over any answer: once one holds `challenger` (`newest_candidate`), an
    older candidate is superseded even if approved in the moment between, so that an approval
    never promotes a model older than the one waiting behind it.
    """

    def decision(outcome: Outcome, by: str, reason: str) -> ApprovalDecision:
        return ApprovalDecision(model, version, outcome, by, reason, dag_run_id, at)

    newer = answer.superseded_by
    if newer is None and newest_candidate is not None and int(newest_candidate) > int(version):
        newer = newest_candidate
    if newer is not None:
        return decision("superseded", "superseded", f"superseded by v{newer}, a newer candidate")
    if answer.timed_out:
        return decision("timed_out", "timeout", f"no answer within {_duration(timeout)}")
    who = answer.responder or "unknown"
    if answer.chosen == PROMOTE:
        return decision("approved", who, answer.reason or "approved")
    return decision("rejected", who, answer.reason or "rejected without a reason")


def _duration(value: timedelta) -> str:
    """`3 days`, `2 h 30 min`, `45 s`: the timeout as an operator reads it."""
    seconds = int(value.total_seconds())
    if seconds % 86400 == 0:
        days = seconds // 86400
        return f"{days} day" + ("s" if days != 1 else "")
    parts = [(seconds // 3600, "h"), (seconds % 3600 // 60, "min"), (seconds % 60, "s")]
    return " ".join(f"{n} {unit}" for n, unit in parts if n)


def recorded_decision(store: ObjectStore, model: str, version: str) -> ApprovalDecision | None:
    """The decision recorded on `version`, if any."""
    key = layout.approval_key(model, version)
    if not store.exists(key):
        return None
    return ApprovalDecision(**json.loads(store.read_bytes(key)))


def record_decision(store: ObjectStore, decision: ApprovalDecision) -> ApprovalDecision:
    """Record the decision once (create-only); a retry, or a second answer, gets the first one."""
    try:
        store.create_only(layout.approval_key(decision.model, decision.version), decision.to_json())
    except ObjectExistsError:
        recorded = recorded_decision(store, decision.model, decision.version)
        assert recorded is not None
        return recorded
    return decision
