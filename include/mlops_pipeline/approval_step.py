"""The approve task of `<model>__approve`: Airflow's Human-in-the-loop step, made to end when a
newer candidate supersedes the one it waits on.

Airflow-aware like `airflow_glue` (kept apart so that only the DAGs of specs with
`approval_required` import the HITL provider). Airflow 3.3's `HITLOperator` parks its task in
`awaiting_input`, which only a person's answer or the scheduler's timeout sweep can end; nothing
would end the wait of a candidate a newer one has replaced. So `CandidateApproval` waits through
its own trigger instead (Airflow's `HITLTrigger`, the provider's path before 3.3, still served by
the triggerer, the Required Actions page and the HITL REST API), which also watches `challenger`:

- a person's answer through the UI or `PATCH .../hitlDetails` resumes the task at once (Airflow);
- after `response_timeout` the trigger applies the default, Reject (`HITLTrigger`);
- when the registry's `challenger` is a newer version, the trigger answers Reject itself, with
  "superseded by v<N>" as the reason, and the task resumes with `superseded_by` set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.providers.standard.triggers.hitl import HITLTrigger, HITLTriggerEventSuccessPayload
from airflow.sdk import Param
from airflow.triggers.base import TriggerEvent

from mlops_pipeline.approval import MAX_REASON, OPTIONS, REJECT

log = logging.getLogger(__name__)
# How often the trigger looks for an answer and for a newer candidate: one cheap DB read and one
# registry alias lookup, so a minute's delay costs nothing and keeps the registry quiet.
POLL_SECONDS = 10.0


def newer_candidate(model: str, version: str) -> str | None:
    """The version holding `challenger` when it is newer than `version`; None if not, or if the
    registry cannot be reached (the wait goes on: an outage must not refuse a candidate)."""
    from mlops_pipeline import registry

    try:
        challenger = registry.alias_version(registry.configured_client(), model, registry.CHALLENGER)
    except Exception as exc:  # the registry is down or refuses: look again at the next poll
        log.warning("could not read %s's challenger alias: %s", model, exc)
        return None
    if challenger is not None and int(challenger.version) > int(version):
        return str(challenger.version)
    return None


class CandidateApprovalTrigger(HITLTrigger):
    """`HITLTrigger` that also ends the wait when a newer candidate holds `challenger`."""

    def __init__(self, *, model: str, version: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.version = version

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """This class's path and arguments: the triggerer rebuilds the trigger from them."""
        _, kwargs = super().serialize()
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {**kwargs, "model": self.model, "version": self.version},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait for an answer, the timeout or a newer candidate, whichever comes first."""
        from airflow.sdk.timezone import utcnow
        from asgiref.sync import sync_to_async

        while True:
            # Look only after one interval: an event within a moment of the deferral can reach the
            # scheduler before it has seen the deferring worker exit, and Airflow then fails the
            # re-queued task as "killed externally" (its resume guard covers `scheduled`, not
            # `queued`). A person's answer never waits on this loop, and ten seconds cost nothing.
            await asyncio.sleep(self.poke_interval)
            if self.timeout_datetime and self.timeout_datetime < utcnow():
                yield await self._handle_timeout()
                return
            if event := await self._handle_response():  # type: ignore[no-untyped-call]
                yield event
                return
            if newer := await sync_to_async(newer_candidate)(self.model, self.version):
                yield await self._supersede(newer)
                return

    async def _supersede(self, newer: str) -> TriggerEvent:
        """Answer Reject on the candidate's behalf, so the Required Actions page stops listing it."""
        from airflow.sdk.execution_time.hitl import update_hitl_detail_response
        from asgiref.sync import sync_to_async

        reason = {"reason": f"superseded by v{newer}"}
        try:
            response = await sync_to_async(update_hitl_detail_response)(
                ti_id=self.ti_id, chosen_options=[REJECT], params_input=reason
            )
        except Exception:  # a person answered in the same moment: their answer stands
            if event := await self._handle_response():  # type: ignore[no-untyped-call]
                return event
            raise
        payload: dict[str, Any] = dict(
            HITLTriggerEventSuccessPayload(
                chosen_options=[REJECT],
                params_input=reason,  # type: ignore[typeddict-item]
                responded_by_user=None,
                responded_at=response.responded_at,  # type: ignore[typeddict-item]
                timedout=False,
            )
        )
        return TriggerEvent({**payload, "superseded_by": newer})  # type: ignore[no-untyped-call]


class CandidateApproval(HITLOperator):
    """Ask a person to promote or reject `model` v<the `request` task's version>.

    Options Promote / Reject with a free-text reason; the timeout's default is Reject. The result
    (an XCom) is `HITLOperator`'s plus `timedout` and `superseded_by`, read by
    `approval.ApprovalAnswer.from_step`.
    """

    def __init__(self, *, model: str, request_task_id: str, **kwargs: Any) -> None:
        # Airflow hands every task the DAG's params; on a HITL step they would become form fields
        # (the run's version and as_of, editable by the person): the form is the reason alone.
        kwargs.pop("params", None)
        super().__init__(
            options=list(OPTIONS),
            defaults=[REJECT],
            params={
                "reason": Param(
                    "",
                    type="string",
                    maxLength=MAX_REASON,
                    title="Reason",
                    description="Why: recorded in the promotion history and on the model version.",
                )
            },
            **kwargs,
        )
        self.model = model
        self.request_task_id = request_task_id

    def answer_url(self, ti: Any) -> str:
        """The Required Actions page of this task instance (absolute when `[api] base_url` is set)."""
        try:
            return self.generate_link_to_ui(task_instance=ti)
        except ValueError:  # no base_url configured: the path is still what a browser opens
            return f"/dags/{ti.dag_id}/runs/{ti.run_id}/tasks/{ti.task_id}/required_actions"

    def execute(self, context: Any) -> None:
        """Write the request (Airflow's HITL detail), notify, and wait through the trigger."""
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail
        from airflow.sdk.timezone import utcnow

        ti = context["task_instance"]
        version = str(ti.xcom_pull(task_ids=self.request_task_id)["version"])
        upsert_hitl_detail(
            ti_id=ti.id,
            options=self.options,
            subject=self.subject,
            body=self.body,
            defaults=self.defaults,
            multiple=self.multiple,
            params=self.serialized_params,
            assigned_users=self.assigned_users,
        )
        timeout_at = utcnow() + self.response_timeout if self.response_timeout else None
        for notifier in self.notifiers:
            notifier(context)
        self.defer(
            trigger=CandidateApprovalTrigger(
                model=self.model,
                version=version,
                ti_id=ti.id,
                options=self.options,
                defaults=self.defaults,
                params=self.serialized_params,
                multiple=self.multiple,
                timeout_datetime=timeout_at,
                poke_interval=POLL_SECONDS,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """The answer, with whether it was the timeout's and which version superseded it."""
        result = super().execute_complete(context, event)
        return {
            **result,
            "timedout": bool(event.get("timedout")),
            "superseded_by": event.get("superseded_by"),
        }
