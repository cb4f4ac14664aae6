"""DAG factory: every model spec in include/models/ becomes `<model>__train` and `<model>__rollback`.

This file only declares. Each task is a thin wrapper around `mlops_pipeline.steps`; heavy
libraries (sklearn, MLflow, Great Expectations) are imported inside the tasks, never at parse
time. Invalid specs are skipped here and reported as an import error by `model_spec_errors.py`,
so one broken spec never takes down the DAGs of the others.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param, dag, get_current_context, task

from mlops_pipeline.airflow_glue import champion_asset, rejections_fail_the_task, resolve_as_of, run_info
from mlops_pipeline.spec import ModelSpec, default_models_dir, load_specs

START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
# Tasks talk to the store and MLflow: transient failures are retried; rejections are not.
EXTERNAL = {"retries": 2, "retry_delay": timedelta(seconds=15)}

TRAIN_DOC = """
### {name}: train → gate → promote

{description}

`ingest` snapshots the data window (immutable, sha256-addressed) → `validate` runs the Great
Expectations suite generated from the spec (failing rows are quarantined) → `train` fits the
pipeline and logs it to MLflow with its lineage → `evaluate` compares it with the champion on the
same holdout and writes the gate report → `register` sets the `challenger` alias →{approve}
`promote` moves `champion` and records the promotion.

**Params**: `as_of` (last day of data, default: end of the run's data interval), `window_days`
(default {window_days}), `dry_run` (stop after the gate report; nothing is registered).
"""


def train_dag(spec: ModelSpec) -> DAG:
    """The `<model>__train` DAG of one spec."""

    @dag(
        dag_id=f"{spec.name}__train",
        description=f"Train, gate and promote {spec.name}",
        doc_md=TRAIN_DOC.format(
            name=spec.name,
            description=spec.description,
            window_days=spec.source.window_days,
            approve=" `approve` (a person approves in the UI) →" if spec.approval_required else "",
        ),
        schedule=spec.schedules.train,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["mlops", "train", spec.name, *spec.tags],
        default_args={"owner": spec.owner, "retries": 0},
        params={
            "as_of": Param(
                None,
                type=["null", "string"],
                format="date",
                title="As of (YYYY-MM-DD)",
                description="Last day of data to train on. Empty: the last day of the run's data interval.",
            ),
            "window_days": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                maximum=3650,
                title="Window (days)",
                description=f"Days of data ending at as_of. Empty: the spec's {spec.source.window_days}.",
            ),
            "dry_run": Param(
                False,
                type="boolean",
                title="Dry run",
                description="Validate, train and evaluate, but register and promote nothing.",
            ),
        },
    )
    def lifecycle() -> None:
        @task(**EXTERNAL)
        def ingest() -> dict:
            from mlops_pipeline import steps

            context = get_current_context()
            as_of = resolve_as_of(context, context["params"]["as_of"])
            with rejections_fail_the_task():
                return steps.ingest(spec, steps.default_store(), as_of, context["params"]["window_days"])

        @task(**EXTERNAL)
        def validate(manifest: dict) -> dict:
            from mlops_pipeline import steps

            with rejections_fail_the_task():
                return steps.validate(spec, steps.default_store(), manifest, run_info(get_current_context()))

        @task(**EXTERNAL)
        def train(manifest: dict, validated: dict) -> dict:
            from mlops_pipeline import steps

            with rejections_fail_the_task():
                return steps.train(
                    spec, steps.default_store(), manifest, validated, run_info(get_current_context())
                )

        @task(**EXTERNAL)
        def evaluate(validated: dict, candidate: dict) -> dict:
            from mlops_pipeline import steps

            with rejections_fail_the_task():
                return steps.evaluate(
                    spec, steps.default_store(), validated, candidate, run_info(get_current_context())
                )

        @task(**EXTERNAL)
        def register(manifest: dict, candidate: dict, evaluation: dict) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException

            from mlops_pipeline import steps

            context = get_current_context()
            if context["params"]["dry_run"]:
                raise AirflowSkipException("dry run: nothing is registered")
            return steps.register(spec, manifest, candidate, evaluation, run_info(context))

        @task(outlets=[champion_asset(spec.name)], **EXTERNAL)
        def promote(registered: dict) -> dict:
            from mlops_pipeline import steps

            with rejections_fail_the_task():
                return steps.promote(spec, steps.default_store(), registered, run_info(get_current_context()))

        manifest = ingest()
        validated = validate(manifest)
        candidate = train(manifest, validated)
        evaluation = evaluate(validated, candidate)
        registered = register(manifest, candidate, evaluation)
        promoted = promote(registered)
        if spec.approval_required:
            from airflow.providers.standard.operators.hitl import ApprovalOperator

            approve = ApprovalOperator(
                task_id="approve",
                subject=f"Promote {spec.name} v{{{{ ti.xcom_pull(task_ids='register')['version'] }}}} to champion?",
                body=(
                    "The candidate passed its gates.\n\n"
                    "Gate report: {{ ti.xcom_pull(task_ids='evaluate')['report_html_uri'] }}\n\n"
                    "Holdout metrics: {{ ti.xcom_pull(task_ids='evaluate')['candidate_metrics'] }}"
                ),
            )
            registered >> approve >> promoted

    return lifecycle()


def rollback_dag(spec: ModelSpec) -> DAG:
    """The `<model>__rollback` DAG of one spec."""

    @dag(
        dag_id=f"{spec.name}__rollback",
        description=f"Move {spec.name}'s champion back",
        doc_md=(
            f"### {spec.name}: rollback\n\nMoves the `champion` alias back to the previous champion, "
            "or to `to_version` (which must once have passed its gates), and records it in the "
            "promotion history. Takes seconds."
        ),
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["mlops", "rollback", spec.name, *spec.tags],
        default_args={"owner": spec.owner, "retries": 0},
        params={
            "to_version": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                title="Version",
                description="Version to make champion. Empty: the champion before the current one.",
            ),
            "reason": Param(
                "manual rollback",
                type="string",
                minLength=3,
                maxLength=500,
                title="Reason",
                description="Why: recorded in the promotion history.",
            ),
        },
    )
    def roll_back() -> None:
        @task(outlets=[champion_asset(spec.name)], **EXTERNAL)
        def rollback() -> dict:
            from mlops_pipeline import steps

            context = get_current_context()
            version = context["params"]["to_version"]
            with rejections_fail_the_task():
                return steps.rollback(
                    spec,
                    steps.default_store(),
                    None if version is None else str(version),
                    context["params"]["reason"],
                    run_info(context),
                )

        rollback()

    return roll_back()


for _spec in load_specs(default_models_dir()).specs.values():
    globals()[f"{_spec.name}__train"] = train_dag(_spec)
    globals()[f"{_spec.name}__rollback"] = rollback_dag(_spec)
