"""DAG factory: every model spec with `approval_required: true` gets `<model>__approve`, the run in
which a person promotes or rejects one candidate (`<model>__train`'s `request_approval` starts it).

Declarations only, like `model_dags.py`: the task bodies are `mlops_pipeline.steps.approve`, the
wait is `mlops_pipeline.approval_step.CandidateApproval` (Airflow's Human-in-the-loop step).
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, dag, get_current_context, task

from mlops_pipeline.airflow_glue import (
    MLOpsNotifier,
    champion_asset,
    dag_defaults,
    rejections_fail_the_task,
    run_info,
    strict_params,
    task_store,
)
from mlops_pipeline.alerts import APPROVAL_WAITING
from mlops_pipeline.spec import ModelSpec, default_models_dir, load_specs
from mlops_pipeline.steps.conf import DATE_PATTERN, MAX_MODEL_VERSION
from mlops_pipeline.steps.results import ApprovalDecided, ApprovalRequest, Promotion

APPROVE_DOC = """
### {name}: approve a candidate

`request` checks the candidate (registered, passed its gates, not decided yet) → `approve` waits in
**Required Actions** for a person{who} to choose Promote or Reject, with a reason → `decide` records
the decision on the version (tags `approval`, `approval_by`, `approval_reason`) and, unless it is an
approval, in the promotion history → `promote` makes it champion (or starts its shadow period).

Nobody answering within {timeout} is a refusal; so is a newer candidate taking `challenger`
while this one waits (superseded: the newer one is asked about instead). Runs one at a time.

**Params**: `version` (the candidate), `as_of` (its last day of data: re-scored once it is champion).
"""


def approve_dag(spec: ModelSpec) -> DAG:
    """The `<model>__approve` DAG of one spec with `approval_required`."""
    from mlops_pipeline.approval_step import CandidateApproval

    who = f" ({', '.join(spec.approvers)})" if spec.approvers else ""

    @dag(
        dag_id=f"{spec.name}__approve",
        description=f"A person promotes or rejects a candidate of {spec.name}",
        doc_md=APPROVE_DOC.format(name=spec.name, who=who, timeout=spec.approval_timeout),
        schedule=None,
        **dag_defaults(spec, "approve"),
        params={
            "version": Param(
                type="integer",
                minimum=1,
                maximum=MAX_MODEL_VERSION,
                title="Model version",
                description="The registered candidate to approve or reject.",
            ),
            "as_of": Param(
                None,
                type=["null", "string"],
                format="date",
                pattern=DATE_PATTERN,
                maxLength=10,
                title="Trained as of (YYYY-MM-DD)",
                description="The candidate's last day of data: the score DAG re-scores it on promotion.",
            ),
        },
    )
    def approving() -> None:
        @task
        def request() -> ApprovalRequest:
            from mlops_pipeline.steps import approve as steps

            context = get_current_context()
            params = strict_params(context)
            with rejections_fail_the_task():
                return steps.request(
                    spec, task_store(), str(int(params["version"])), params["as_of"], run_info(context)
                )

        approve = CandidateApproval(
            task_id="approve",
            model=spec.name,
            request_task_id="request",
            retries=0,  # a person's answer is not asked twice
            subject=f"Promote {spec.name} v{{{{ ti.xcom_pull(task_ids='request')['version'] }}}} to champion?",
            body=(
                "The candidate passed its gates"
                "{% set asked = ti.xcom_pull(task_ids='request') %}"
                "{% if asked['champion_version'] %} against champion v{{ asked['champion_version'] }}{% endif %}."
                "\n\nHoldout metrics: {{ asked['holdout_metrics'] }}"
                "{% if asked['gate_report_path'] %}\n\nGate report: {{ asked['gate_report_path'] }}{% endif %}"
                f"\n\nNo answer within {spec.approval_timeout} refuses it."
            ),
            assigned_users=[{"id": user, "name": user} for user in spec.approvers] or None,
            response_timeout=spec.approval_timeout,
            notifiers=[
                MLOpsNotifier(
                    f"{spec.name} v{{{{ ti.xcom_pull(task_ids='request')['version'] }}}} waits for approval:"
                    " {{ task.answer_url(ti) }}",
                    kind=APPROVAL_WAITING,
                )
            ],
        )

        @task
        def decide(asked: ApprovalRequest) -> ApprovalDecided:
            from mlops_pipeline.steps import approve as steps

            context = get_current_context()
            answer = context["ti"].xcom_pull(task_ids="approve")
            return steps.decide(spec, task_store(), asked, answer, run_info(context))

        @task(outlets=[champion_asset(spec.name)])
        def promote(decided: ApprovalDecided, asked: ApprovalRequest) -> Promotion:
            from airflow.sdk.exceptions import AirflowSkipException

            from mlops_pipeline.steps import approve as steps

            context = get_current_context()
            if not decided["approved"]:
                raise AirflowSkipException(decided["summary"])  # skipped: no champion event
            with rejections_fail_the_task():
                promoted = steps.promote(spec, task_store(), decided, run_info(context))
            if isinstance(promoted, str):
                raise AirflowSkipException(promoted)  # its shadow period started instead
            context["outlet_events"][champion_asset(spec.name)].extra = {
                "version": promoted["champion_version"],
                "as_of": asked["as_of"],
            }
            return promoted

        asked = request()
        decided = decide(asked)
        asked >> approve >> decided
        promote(decided, asked)

    return approving()


for _spec in load_specs(default_models_dir()).specs.values():
    if _spec.approval_required:
        globals()[f"{_spec.name}__approve"] = approve_dag(_spec)
