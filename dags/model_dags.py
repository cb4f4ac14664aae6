"""DAG factory: every model spec in include/models/ becomes `<model>__train`, `<model>__rollback`
and `<model>__reproduce` and, when the spec has a scoring section, `<model>__score` and `<model>__monitor`
(`approval_dags.py` adds `<model>__approve` for a spec with `approval_required`).

This file only declares. Each task is a thin wrapper around the function of the same name in
`mlops_pipeline.steps.<kind>` (`train`, `score`, `monitor`, `rollback`); the payloads between tasks
are typed in `mlops_pipeline.steps.results`. Heavy libraries (pandas, sklearn, MLflow, Great
Expectations, Evidently) are imported inside the tasks, never at parse time. Invalid specs are skipped here and reported as an import error by `model_spec_errors.py`,
so one broken spec never takes down the DAGs of the others.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, dag, get_current_context, task

from mlops_pipeline.airflow_glue import (
    MLOpsNotifier,
    champion_asset,
    dag_defaults,
    predictions_asset,
    promoted_as_of,
    rejections_fail_the_task,
    resolve_as_of,
    run_info,
    score_schedule,
    strict_params,
    task_store,
)
from mlops_pipeline.alerts import RETRAIN_TRIGGERED, ROLLBACK_TRIGGERED
from mlops_pipeline.spec import ModelSpec, default_models_dir, load_specs
from mlops_pipeline.steps.conf import DATE_PATTERN, MAX_MODEL_VERSION, MAX_REASON_LENGTH, MAX_ROLLBACK_REASON
from mlops_pipeline.steps.results import (
    Candidate,
    Evaluation,
    InputFile,
    Promotion,
    Published,
    Registered,
    Reproduced,
    ScoredInput,
    ScorePlan,
    ShadowConcluded,
    Snapshot,
    Validated,
    WindowChecked,
)


def date_param(title: str, description: str) -> Param:
    """An optional ISO day (YYYY-MM-DD): empty means the run's data interval."""
    return Param(
        None,
        type=["null", "string"],
        format="date",
        pattern=DATE_PATTERN,
        maxLength=10,
        title=title,
        description=description,
    )


def version_param(description: str) -> Param:
    """An optional model version number, within what MLflow's registry can hold."""
    return Param(
        None,
        type=["null", "integer"],
        minimum=1,
        maximum=MAX_MODEL_VERSION,
        title="Model version",
        description=description,
    )


TRAIN_DOC = """
### {name}: train → gate → promote

{description}

`ingest` snapshots the data window (immutable, sha256-addressed) → `validate` runs the Great
Expectations suite generated from the spec (failing rows are quarantined) → `train` fits the
pipeline and logs it to MLflow with its lineage → `evaluate` compares it with the champion on the
same holdout and writes the gate report → `register` sets the `challenger` alias → {promote}

**Params**: `as_of` (last day of data, default: end of the run's data interval), `window_days`
(default {window_days}), `dry_run` (stop after the gate report; nothing is registered).
"""


PROMOTE_DOC = """`promote` moves `champion` and records the promotion (with a `rollout.shadow_days` policy and a
champion to compare with, it is skipped instead: the candidate enters its shadow period, decided by
the score runs)."""
APPROVAL_DOC = """`request_approval` starts `{name}__approve` (run `v<version>__approval`), where a person
promotes or rejects the candidate in the Required Actions page; this run ends there."""


def train_dag(spec: ModelSpec) -> DAG:
    """The `<model>__train` DAG of one spec."""

    @dag(
        dag_id=f"{spec.name}__train",
        description=f"Train, gate and promote {spec.name}",
        doc_md=TRAIN_DOC.format(
            name=spec.name,
            description=spec.description,
            window_days=spec.source.window_days,
            promote=APPROVAL_DOC.format(name=spec.name) if spec.approval_required else PROMOTE_DOC,
        ),
        schedule=spec.schedules.train,
        **dag_defaults(spec, "train"),
        params={
            "as_of": date_param(
                "As of (YYYY-MM-DD)",
                "Last day of data to train on. Empty: the last day of the run's data interval.",
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
            "reason": Param(
                "",
                type="string",
                maxLength=MAX_REASON_LENGTH,
                title="Reason",
                description="Why this run was started; the monitor sets it when drift triggers retraining.",
            ),
        },
    )
    def lifecycle() -> None:
        @task
        def ingest() -> Snapshot:
            from mlops_pipeline.steps import train as steps

            context = get_current_context()
            params = strict_params(context)  # the first task: unknown conf keys stop the run here
            as_of = resolve_as_of(context, params["as_of"])
            with rejections_fail_the_task():
                return steps.ingest(spec, task_store(), as_of, params["window_days"])

        @task
        def validate(manifest: Snapshot) -> Validated:
            from mlops_pipeline.steps import train as steps

            with rejections_fail_the_task():
                return steps.validate(spec, task_store(), manifest, run_info(get_current_context()))

        @task
        def train(manifest: Snapshot, validated: Validated) -> Candidate:
            from mlops_pipeline.steps import train as steps

            with rejections_fail_the_task():
                return steps.train(spec, task_store(), manifest, validated, run_info(get_current_context()))

        @task
        def evaluate(validated: Validated, candidate: Candidate) -> Evaluation:
            from mlops_pipeline.steps import train as steps

            with rejections_fail_the_task():
                return steps.evaluate(
                    spec, task_store(), validated, candidate, run_info(get_current_context())
                )

        @task
        def register(manifest: Snapshot, candidate: Candidate, evaluation: Evaluation) -> Registered:
            from airflow.sdk.exceptions import AirflowSkipException

            from mlops_pipeline.steps import train as steps

            context = get_current_context()
            if context["params"]["dry_run"]:
                raise AirflowSkipException("dry run: nothing is registered")
            return steps.register(spec, manifest, candidate, evaluation, run_info(context))

        @task(outlets=[champion_asset(spec.name)])
        def promote(registered: Registered, manifest: Snapshot) -> Promotion:
            from airflow.sdk.exceptions import AirflowSkipException

            from mlops_pipeline.steps import rollout
            from mlops_pipeline.steps import train as steps

            context = get_current_context()
            if shadowing := rollout.enter_shadow(spec, task_store(), registered, run_info(context)):
                raise AirflowSkipException(shadowing)  # skipped: no champion event
            with rejections_fail_the_task():
                promoted = steps.promote(spec, task_store(), registered, run_info(context))
            # Consumers (the score DAG) re-score the last day of this model's data with it.
            context["outlet_events"][champion_asset(spec.name)].extra = {
                "version": promoted["champion_version"],
                "as_of": manifest["as_of"],
            }
            return promoted

        manifest = ingest()
        validated = validate(manifest)
        candidate = train(manifest, validated)
        evaluation = evaluate(validated, candidate)
        registered = register(manifest, candidate, evaluation)
        if not spec.approval_required:
            promote(registered, manifest)
            return

        @task
        def approval_conf(registered: Registered, manifest: Snapshot) -> dict[str, object]:
            """The conf of the `<model>__approve` run that asks about this candidate."""
            return {"version": int(registered["version"]), "as_of": manifest["as_of"]}

        from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

        # The person answers in its own DAG run: this run ends here, so a candidate waiting for an
        # answer never holds up the next training run (which supersedes it).
        TriggerDagRunOperator(
            task_id="request_approval",
            trigger_dag_id=f"{spec.name}__approve",
            trigger_run_id="v{{ ti.xcom_pull(task_ids='register')['version'] }}__approval",
            conf=approval_conf(registered, manifest),
            skip_when_already_exists=True,  # a retry after the run was created
        )

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
        **dag_defaults(spec, "rollback"),
        params={
            "to_version": version_param(
                "Version to make champion. Empty: the champion before the current one."
            ),
            "reason": Param(
                "manual rollback",
                type="string",
                minLength=3,
                maxLength=MAX_ROLLBACK_REASON,
                title="Reason",
                description="Why: recorded in the promotion history.",
            ),
        },
    )
    def roll_back() -> None:
        @task(outlets=[champion_asset(spec.name)])
        def rollback() -> Promotion:
            from mlops_pipeline.steps import rollback as steps

            context = get_current_context()
            params = strict_params(context)  # before the alias can move
            version = params["to_version"]
            with rejections_fail_the_task():
                return steps.rollback(
                    spec,
                    task_store(),
                    None if version is None else str(int(version)),
                    params["reason"],
                    run_info(context),
                )

        rolled_back = rollback()
        if spec.scoring is not None:

            @task
            def days_to_rescore(promoted: Promotion) -> list[dict[str, str]]:
                """One score run's conf per day the rolled-back version published."""
                from mlops_pipeline.steps import rollback as steps

                return steps.days_to_rescore(spec, task_store(), promoted)

            from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

            TriggerDagRunOperator.partial(task_id="rescore", trigger_dag_id=f"{spec.name}__score").expand(
                conf=days_to_rescore(rolled_back)
            )

    return roll_back()


def reproduce_dag(spec: ModelSpec) -> DAG:
    """The `<model>__reproduce` DAG of one spec."""

    @dag(
        dag_id=f"{spec.name}__reproduce",
        description=f"Rebuild a version of {spec.name} from its lineage and prove it is the same model",
        doc_md=(
            f"### {spec.name}: reproduce a version\n\nRe-trains `version` from what was recorded with it "
            "(its snapshot, the spec as used, the seed) and checks that its holdout predictions are "
            "bit-identical and its model file has the same sha256. The report "
            "(`reports/<model>/<run>/reproduction.json`) names the first difference (spec, data, "
            "predictions, artifact) and what changed in the environment since (code version, lock "
            "file, package versions); the version is tagged `reproduction: identical|different`."
        ),
        schedule=None,
        **dag_defaults(spec, "reproduce"),
        params={
            "version": Param(
                1,
                type="integer",
                minimum=1,
                maximum=MAX_MODEL_VERSION,
                title="Model version",
                description="The registered version to rebuild.",
            ),
        },
    )
    def reproducing() -> None:
        @task
        def reproduce() -> Reproduced:
            from mlops_pipeline.steps import reproduce as steps

            context = get_current_context()
            params = strict_params(context)
            with rejections_fail_the_task():
                return steps.reproduce(spec, task_store(), str(int(params["version"])), run_info(context))

        reproduce()

    return reproducing()


SCORE_DOC = """
### {name}: batch scoring

Scores the day's input files (`{pattern}`) with one model version, resolved once at the start
(`champion`, or the pinned `model_version`) after checking its artifact's sha256. Each file is a
mapped `score` task that streams it in batches of {batch_rows} rows; rows that break the spec's
schema are quarantined (the run fails above {limit:.0%}). `publish` checks the staged parts and
publishes `predictions/{name}/ds=<ds>/_manifest.json` last: readers see the whole partition or
none of it, and a rerun replaces it whole. With `shadow`, the `challenger` scores the same rows
into `predictions_shadow/` and its agreement with the champion is recorded.{rollout}

**Params**: `ds` (default: the run's data interval), `model_version` (pin), `shadow`.
"""


def score_dag(spec: ModelSpec) -> DAG:
    """The `<model>__score` DAG of one spec with a scoring section."""
    assert spec.scoring is not None

    @dag(
        dag_id=f"{spec.name}__score",
        description=f"Score {spec.name}'s daily batch and publish the predictions",
        doc_md=SCORE_DOC.format(
            name=spec.name,
            pattern=spec.scoring.input.uri,
            batch_rows=spec.scoring.batch_rows,
            limit=spec.scoring.max_quarantine_share,
            rollout=(
                f" A challenger in its shadow period ({spec.rollout.shadow_days} scoring days) is "
                "shadowed on every run; `conclude_shadow` promotes or refuses it once its evidence is "
                "complete (skipped while it waits)."
                if spec.rollout.shadow_days
                else ""
            ),
        ),
        schedule=score_schedule(spec),
        **dag_defaults(spec, "score"),
        params={
            "ds": date_param("Partition date (YYYY-MM-DD)", "Day to score. Empty: the run's data interval."),
            "model_version": version_param("Score with this registered version. Empty: the champion."),
            "shadow": Param(
                False,
                type="boolean",
                title="Shadow scoring",
                description="Also score with the challenger into predictions_shadow/ and record agreement.",
            ),
        },
    )
    def scoring() -> None:
        @task
        def plan() -> ScorePlan:
            from airflow.sdk.exceptions import AirflowSkipException

            from mlops_pipeline.steps import score as steps

            context = get_current_context()
            params = strict_params(context)  # the first task: unknown conf keys stop the run here
            version = params["model_version"]
            ds = params["ds"]
            if ds is None and context.get("triggering_asset_events"):
                # Started by a new champion: re-score the last day it was trained on.
                ds = promoted_as_of(context)
                if ds is None:
                    raise AirflowSkipException(
                        "the champion changed without a data day (a rollback): nothing to re-score"
                    )
            with rejections_fail_the_task():
                return steps.plan(
                    spec,
                    task_store(),
                    resolve_as_of(context, ds),
                    None if version is None else str(int(version)),
                    params["shadow"],
                    run_info(context),
                    attempt=context["ti"].try_number,
                )

        @task(map_index_template="{{ input_key }}")
        def score(plan: ScorePlan, item: InputFile) -> ScoredInput:
            from mlops_pipeline.steps import score as steps

            context = get_current_context()
            context["input_key"] = item["key"]  # type: ignore[typeddict-unknown-key]
            with rejections_fail_the_task():
                return steps.score(
                    spec, task_store(), plan, item, run_info(context), attempt=context["ti"].try_number
                )

        @task(outlets=[predictions_asset(spec.name)])
        def publish(plan: ScorePlan, results: list[ScoredInput]) -> Published:
            from mlops_pipeline.steps import score as steps

            context = get_current_context()
            with rejections_fail_the_task():
                published = steps.publish(spec, task_store(), plan, list(results), run_info(context))
            context["outlet_events"][predictions_asset(spec.name)].extra = {
                "ds": published["ds"],
                "manifest": published["manifest_uri"],
                "model_version": published["model_version"],
            }
            return published

        @task
        def inputs(plan: ScorePlan) -> list[InputFile]:
            """The input files to map `score` over (Airflow maps over a whole XCom, not a key of one)."""
            from mlops_pipeline.steps import score as steps

            return steps.inputs(plan)

        @task(outlets=[champion_asset(spec.name)])
        def conclude_shadow(published: Published) -> ShadowConcluded:
            """Promote or refuse a challenger whose shadow period's evidence is complete."""
            from airflow.sdk.exceptions import AirflowSkipException

            from mlops_pipeline.steps import rollout as steps

            context = get_current_context()
            concluded = steps.conclude_shadow(spec, task_store(), run_info(context))
            if concluded["promotion"] is None:
                # No move of the champion: skipped, so no champion event is emitted.
                raise AirflowSkipException(f"{concluded['action']}: {'; '.join(concluded['reasons'])}")
            context["outlet_events"][champion_asset(spec.name)].extra = {
                "version": concluded["promotion"]["champion_version"],
                "as_of": published["ds"],
            }
            return concluded

        planned = plan()
        scored = score.partial(plan=planned).expand(item=inputs(planned))
        published = publish(planned, scored)
        if spec.rollout.shadow_days:  # without a shadow period a score run decides no promotion
            conclude_shadow(published)

    return scoring()


MONITOR_DOC = """
### {name}: monitoring

Compares the last `window_days` days of published predictions (and the inputs they were scored
from) with the champion's training snapshot, found through its lineage tags: data drift on the
features and prediction drift on the outputs with Evidently (distance measures, so identical
data never alarms at any sample size), and live performance where labels have arrived. Reports
go to `reports/{name}/<run>/`, scores to the MLflow experiment `{name}-monitoring`.
`retrain` triggers `{name}__train` when {needed} of the last {considered} windows alarmed, at
most once per {cooldown} days. A check that cannot run (no predictions, no reference) fails the
run: it never counts as drift.

**Params**: `end` (last day of the window; default: the run's data interval), `window_days`, `dry_run`.
"""


def monitor_dag(spec: ModelSpec) -> DAG:
    """The `<model>__monitor` DAG of one spec with a scoring section."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    @dag(
        dag_id=f"{spec.name}__monitor",
        description=f"Drift and performance of {spec.name}; triggers retraining",
        doc_md=MONITOR_DOC.format(
            name=spec.name,
            needed=spec.drift.windows_needed,
            considered=spec.drift.windows_considered,
            cooldown=spec.drift.cooldown_days,
        ),
        schedule=spec.schedules.monitor,
        **dag_defaults(spec, "monitor"),
        params={
            "end": date_param(
                "Window end (YYYY-MM-DD)", "Last day of the window. Empty: the run's data interval."
            ),
            "window_days": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                maximum=365,
                title="Window (days)",
                description=f"Days of scored data to check. Empty: the spec's {spec.drift.window_days}.",
            ),
            "dry_run": Param(
                False,
                type="boolean",
                title="Dry run",
                description="Check and report, but record nothing and never trigger retraining.",
            ),
        },
    )
    def monitoring() -> None:
        @task
        def check() -> WindowChecked:
            from mlops_pipeline.steps import monitor as steps

            context = get_current_context()
            params = strict_params(context)  # the first task: unknown conf keys stop the run here
            with rejections_fail_the_task():
                return steps.check(
                    spec,
                    task_store(),
                    resolve_as_of(context, params["end"]),
                    params["window_days"],
                    params["dry_run"],
                    run_info(context),
                )

        @task.short_circuit
        def retrain_needed(result: WindowChecked) -> bool:
            """Skip `retrain` unless the decision says so."""
            return bool(result["trigger"])

        retrain = TriggerDagRunOperator(
            task_id="retrain",
            trigger_dag_id=f"{spec.name}__train",
            conf={
                "as_of": "{{ ti.xcom_pull(task_ids='check')['end'] }}",
                # Within train's maxLength however many columns drifted (Jinja keeps up to 5
                # characters over the length before truncating, hence the margin).
                "reason": "{{ ti.xcom_pull(task_ids='check')['decision']['reason']"
                f" | truncate({MAX_REASON_LENGTH - 10}, True) }}}}",
            },
            on_success_callback=MLOpsNotifier(
                f"{spec.name}: retraining triggered: "
                "{{ ti.xcom_pull(task_ids='check')['decision']['reason'] }}",
                kind=RETRAIN_TRIGGERED,
            ),
        )
        result = check()
        retrain_needed(result) >> retrain
        if spec.rollout.rollback is not None:

            @task.short_circuit
            def rollback_needed(result: WindowChecked) -> dict[str, object] | None:
                """The rollback DAG's conf when the window's evidence rolls the champion back, else
                nothing (and `rollback` is skipped)."""
                decided = result["rollback"]
                if not decided["trigger"] or decided["to_version"] is None:
                    return None
                reason = f"automatic: {decided['reason']}"
                return {"to_version": int(decided["to_version"]), "reason": reason[:MAX_ROLLBACK_REASON]}

            TriggerDagRunOperator(
                task_id="rollback",
                trigger_dag_id=f"{spec.name}__rollback",
                conf=rollback_needed(result),
                on_success_callback=MLOpsNotifier(
                    f"{spec.name}: champion rolled back automatically: "
                    "{{ ti.xcom_pull(task_ids='check')['rollback']['reason'] }}",
                    kind=ROLLBACK_TRIGGERED,
                ),
            )

    return monitoring()


for _spec in load_specs(default_models_dir()).specs.values():
    globals()[f"{_spec.name}__train"] = train_dag(_spec)
    globals()[f"{_spec.name}__rollback"] = rollback_dag(_spec)
    globals()[f"{_spec.name}__reproduce"] = reproduce_dag(_spec)
    if _spec.scoring is not None:
        globals()[f"{_spec.name}__score"] = score_dag(_spec)
        globals()[f"{_spec.name}__monitor"] = monitor_dag(_spec)
