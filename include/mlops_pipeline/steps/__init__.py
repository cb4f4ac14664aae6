"""The task bodies of the DAGs, independent of any orchestrator: one module per DAG kind.

`steps.train` (`<model>__train`), `steps.score` (`<model>__score`), `steps.monitor`
(`<model>__monitor`), `steps.rollback` (`<model>__rollback`), `steps.approve` (`<model>__approve`),
`steps.reproduce` and `steps.rollout` (the shadow period's steps); each function is named like the
task whose body it is. A step takes plain values (a spec, a store, dates, the payloads of earlier
tasks as typed in :mod:`steps.results`), does its I/O at the edges, and returns a small
JSON-serialisable payload of URIs and facts for the next task: tasks pass URIs, never data.

Failures that retrying cannot fix raise :class:`StepRejected`; the Airflow glue turns it into a
failed task without retries. This module stays light (no pandas, no MLflow): the DAG files import
it at parse time. Heavy libraries are imported inside the steps, so each task pays only for what
it uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops_pipeline.settings import FAULT_POINT_VAR, fault_point_requested

if TYPE_CHECKING:
    from mlops_pipeline.evidence import EvidenceOwner
    from mlops_pipeline.store import ObjectStore

__all__ = ["FAULT_POINT_VAR", "InjectedFault", "RunInfo", "StepRejected", "claim_evidence", "fault_point"]


class StepRejected(RuntimeError):
    """The step refused its input (bad data, failed gate): retrying will not help."""


class InjectedFault(StepRejected):
    """A failure injected on purpose (reliability tests); not retried, so a test sees it at once."""


def fault_point(name: str) -> None:
    """Raise :class:`InjectedFault` when the environment asks for a fault at `name` (tests only)."""
    if fault_point_requested() == name:
        raise InjectedFault(f"fault injected at {name} ({FAULT_POINT_VAR})")


@dataclass(frozen=True)
class RunInfo:
    """Who and what started the run: recorded in MLflow tags and the promotion history."""

    dag_id: str
    dag_run_id: str
    actor: str
    event_time: str  # the run's own timestamp (logical date or run_after), never the wall clock
    # When Airflow created the run (its `run_after`): with the ids, tells a retry of this run
    # from another run that reuses its id (`evidence.EvidenceOwner`).
    run_after: str = ""

    def tags(self) -> dict[str, str]:
        """MLflow tags that link back to the Airflow run."""
        return {
            "airflow.dag_id": self.dag_id,
            "airflow.dag_run_id": self.dag_run_id,
            "airflow.actor": self.actor,
        }

    def evidence_owner(self) -> EvidenceOwner:
        """This run as the owner of the evidence it writes."""
        from mlops_pipeline.evidence import EvidenceOwner

        return EvidenceOwner(dag_id=self.dag_id, run_id=self.dag_run_id, run_after=self.run_after)


def claim_evidence(store: ObjectStore, run: RunInfo, *prefixes: str) -> None:
    """Claim the run's evidence folders before writing there (`evidence.claim`): a folder of
    another run is a refusal, with nothing written."""
    from mlops_pipeline.evidence import EvidenceOwnedError, claim

    try:
        for prefix in prefixes:
            claim(store, prefix, run.evidence_owner())
    except EvidenceOwnedError as exc:
        raise StepRejected(str(exc)) from exc
