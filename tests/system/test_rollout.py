"""System test: a model's rollout, under the real scheduler, triggerer and API server, driven
through the REST API as an operator drives it.

`dag.test()` runs each DAG alone (the e2e tests); here Airflow runs them as it does in production:
a promotion's champion event starts the re-scoring run, the monitor starts `<model>__rollback`, the
rollback starts the re-scoring of the days it takes back, and Airflow's Human-in-the-loop step waits
in the triggerer for an answer through `PATCH .../hitlDetails`.

Approval (specs `diabetes`, assigned to `approver` with 15 min to answer, and `quick`, the same
model with 20 s and no approvers): `<model>__train` registers a candidate and ends;
`<model>__approve` waits in Required Actions; only an assigned person's answer counts; a newer
candidate supersedes a waiting one; nobody answering in time is a refusal. Every outcome is in the
promotion history with who and why, and none holds up the next training run.

Shadow, canary and rollback (spec `churn`, offline gates relaxed so that live evidence decides):
v1 is promoted; v2 enters a two-day shadow period with a canary share, is published for its share
of ids and promoted on its evidence; then the team ships a crippled estimator without a shadow
period (the spec edited in place, as a team would): v3 is promoted at once, the monitor sees its
late labels far below v2's, rolls it back once with an alert, and every day v3 published is
re-scored by v2.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from mlops_pipeline import approval, registry
from mlops_pipeline.canary import canary_mask
from mlops_pipeline.devtools import embedded_stack, processes
from mlops_pipeline.devtools.airflow_client import AirflowApiError, AirflowClient
from mlops_pipeline.devtools.example_data import DIABETES_DS, write_example_data
from mlops_pipeline.layout import PREDICTIONS
from mlops_pipeline.predictions import read_manifest, read_partition
from mlops_pipeline.rollout import shadow_outcome
from mlops_pipeline.store import LocalStore

pytestmark = [pytest.mark.slow, pytest.mark.system, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
STOP_ORDER = (
    "airflow-scheduler",
    "airflow-triggerer",
    "airflow-dag-processor",
    "airflow-api-server",
    "mlflow",
)
AS_OF = DIABETES_DS.isoformat()


@dataclass(frozen=True)
class Stack:
    """The running services and how to reach them."""

    airflow_url: str
    mlflow_url: str
    passwords: dict[str, str]
    store: LocalStore
    scheduler_log: Path
    models: Path
    alerts: list[dict[str, Any]]


CANARY_SHARE = 0.25


def churn_spec(*, crippled: bool) -> str:
    """The churn spec with a rollout policy and relaxed offline gates: live evidence decides.

    Healthy: a two-day shadow period with a canary share. Crippled: a one-split estimator the
    relaxed gates let through, promoted at once (no shadow period): the monitor must catch it."""
    spec = yaml.safe_load((REPO / "include/models/churn.yaml").read_text())
    spec["gates"] |= {"floors": {"roc_auc": 0.5}, "max_regression": 1.0, "slices": []}
    spec["rollout"] = {
        "shadow_days": 0 if crippled else 2,
        "min_labels": 100,
        "max_live_regression": 0.02,
        "rollback": {"max_live_drop": 0.05, "min_labels": 100},
    }
    if crippled:
        spec["estimator"]["params"] = {"max_iter": 1, "max_depth": 1, "learning_rate": 0.01}
    else:
        spec["rollout"]["canary_share"] = CANARY_SHARE
    return yaml.safe_dump(spec, sort_keys=False)


def write_specs(models: Path) -> None:
    """`diabetes` assigned to `approver`, `quick`, which times out in 20 s, and the healthy churn."""
    text = (REPO / "include/models/diabetes.yaml").read_text()
    assert "approval_required: true" in text
    models.mkdir()
    (models / "diabetes.yaml").write_text(text + "approvers: [approver]\napproval_timeout: PT15M\n")
    (models / "quick.yaml").write_text(
        text.replace("name: diabetes", "name: quick") + "approval_timeout: 20\n"
    )
    (models / "churn.yaml").write_text(churn_spec(crippled=False))


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, alert_sink: tuple[str, list[dict[str, Any]]], webhook_env: Any
) -> Iterator[Stack]:
    """Airflow's components with a triggerer, and MLflow, on free ports; stopped by PID afterwards.
    Alerts go to a local webhook."""
    root = tmp_path_factory.mktemp("approval-stack")
    layout = embedded_stack.StackLayout(root / "stack")
    store = LocalStore(layout.store_dir)
    write_example_data(store)
    write_specs(root / "models")
    ports: list[int] = []
    for _ in range(4):
        ports.append(processes.find_free_port(exclude=ports))
    mlflow_port, api_port, worker_log_port, trigger_log_port = ports
    passwords = {name: processes.generate_password() for name in ("admin", "approver")}
    processes.write_passwords_file(layout.passwords_file, passwords)
    settings = embedded_stack.AirflowSettings(
        home=layout.airflow_home,
        api_port=api_port,
        dags_folder=REPO / "dags",
        plugins_folder=REPO / "plugins",
        passwords_file=layout.passwords_file,
        worker_log_server_port=worker_log_port,
        trigger_log_server_port=trigger_log_port,
        users=("admin:admin", "approver:user"),
    )
    mlflow_url = f"http://{processes.LOCALHOST}:{mlflow_port}"
    cache_dir = REPO / ".cache" / "pycache"
    mlflow_env = embedded_stack.build_env(
        store_uri=store.root_uri, tracking_uri=mlflow_url, cache_dir=cache_dir
    )
    airflow_env = embedded_stack.build_env(
        store_uri=store.root_uri,
        tracking_uri=mlflow_url,
        airflow=settings,
        cache_dir=cache_dir,
        extra={
            "MLOPS_MODELS_DIR": str(root / "models"),
            **webhook_env(alert_sink[0]),
        },
    )
    try:
        mlflow = embedded_stack.start_mlflow(layout, port=mlflow_port, env=mlflow_env)
        components = embedded_stack.start_airflow_components(
            layout, settings, airflow_env, components=(*embedded_stack.AIRFLOW_COMPONENTS, "triggerer")
        )
        embedded_stack.wait_for_mlflow(mlflow, timeout=120)
        embedded_stack.wait_for_airflow(
            settings.base_url,
            timeout=180,
            records=components,
            components=("metadatabase", "scheduler", "dag_processor", "triggerer"),
        )
        with AirflowClient(settings.base_url) as client:
            client.login("admin", passwords["admin"])
            for dag_id in (
                "diabetes__train",
                "diabetes__approve",
                "quick__train",
                "quick__approve",
                "churn__train",
                "churn__score",
                "churn__monitor",
                "churn__rollback",
            ):
                client.wait_for_parsed(dag_id, timeout=120)
        yield Stack(
            airflow_url=settings.base_url,
            mlflow_url=mlflow_url,
            passwords=passwords,
            store=store,
            scheduler_log=layout.log_file("airflow-scheduler"),
            models=root / "models",
            alerts=alert_sink[1],
        )
    finally:
        processes.stop_all(layout.state_dir, timeout=15, order=STOP_ORDER)


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Iterator[AirflowClient]:
    with AirflowClient(stack.airflow_url) as client:
        client.login("admin", stack.passwords["admin"])
        yield client


@pytest.fixture(scope="module")
def approver(stack: Stack) -> Iterator[AirflowClient]:
    with AirflowClient(stack.airflow_url) as client:
        client.login("approver", stack.passwords["approver"])
        yield client


@pytest.fixture(scope="module")
def mlflow_registry(stack: Stack) -> MlflowClient:
    return MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)


def run_to_end(admin: AirflowClient, dag_id: str, conf: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """Trigger `dag_id` with `conf`, wait for it to succeed, and return its run id and each task's state."""
    run = admin.trigger_dag_run(dag_id, conf)
    finished = admin.wait_for_dag_run(dag_id, run.run_id, timeout=300, interval=2)
    states = {ti.label: ti.state for ti in admin.list_task_instances(dag_id, run.run_id)}
    assert finished.state == "success", (dag_id, conf, states)
    return run.run_id, states


def trained_version(admin: AirflowClient, model: str, conf: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """Run `<model>__train` to its end and return the registered version and the run's task states."""
    run_id, states = run_to_end(admin, f"{model}__train", conf)
    return str(admin.get_xcom(f"{model}__train", run_id, "register")["version"]), states


def train(admin: AirflowClient, model: str) -> str:
    """Train a model that asks for approval (the run does not wait for the answer): its version."""
    version, states = trained_version(admin, model, {"as_of": AS_OF})
    assert states["request_approval"] == "success", states
    return version


def hitl_path(model: str, version: str) -> str:
    return f"/api/v2/dags/{model}__approve/dagRuns/v{version}__approval/taskInstances/approve/-1/hitlDetails"


def wait_for_question(
    stack: Stack, admin: AirflowClient, model: str, version: str, timeout: float = 180
) -> dict[str, Any]:
    """The approve task's question, once it waits for an answer (deferred to the triggerer, and
    the scheduler has seen the worker that deferred it exit).

    The second condition is for the test's speed, not a person's: an answer within a moment of
    the deferral reaches the scheduler before that exit, and Airflow 3.3 then fails the re-queued
    task as "killed externally" (its resume-after-defer guard covers `scheduled`, not `queued`).
    Nobody answers that fast but a test, so the test waits for the scheduler's own log line.
    """
    exited = (
        "Received executor event with state success for task instance TaskInstanceKey("
        f"dag_id='{model}__approve', task_id='approve', run_id='v{version}__approval', try_number=1"
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            instances = {
                ti.task_id: ti.state
                for ti in admin.list_task_instances(f"{model}__approve", f"v{version}__approval")
            }
        except AirflowApiError:  # the run is not created yet
            instances = {}
        if instances.get("approve") == "deferred" and exited in stack.scheduler_log.read_text():
            return admin.request("GET", hitl_path(model, version)).json()
        assert time.monotonic() < deadline, f"v{version} never waited for an answer: {instances}"
        time.sleep(2)


def answer(client: AirflowClient, model: str, version: str, chosen: str, reason: str) -> Any:
    return client.request(
        "PATCH",
        hitl_path(model, version),
        json={"chosen_options": [chosen], "params_input": {"reason": reason}},
    )


def approval_outcome(
    stack: Stack, admin: AirflowClient, model: str, version: str
) -> tuple[str, dict[str, str]]:
    """Wait for `v<version>__approval` to finish: its state, and each task's (a failed task's log
    and what the scheduler said about the run are in the assertion message)."""
    dag_id, run_id = f"{model}__approve", f"v{version}__approval"
    finished = admin.wait_for_dag_run(dag_id, run_id, timeout=240, interval=2)
    instances = admin.list_task_instances(dag_id, run_id)
    for ti in instances:
        if ti.state == "failed":
            log = admin.get_task_log(dag_id, run_id, ti.task_id, max(ti.try_number, 1))
            scheduler = [
                line
                for line in stack.scheduler_log.read_text().splitlines()
                if run_id in line and dag_id in line and "executor" in line.lower()
            ]
            raise AssertionError(
                f"{dag_id} {run_id}: {ti.task_id} failed:\n{log[-4000:]}\nscheduler:\n"
                + "\n".join(scheduler[-10:])
            )
    return finished.state, {ti.task_id: ti.state for ti in instances}


def history(stack: Stack, model: str) -> list[registry.PromotionRecord]:
    return registry.promotion_history(stack.store, model)


def test_only_an_assigned_approver_answers_and_their_approval_promotes(
    stack: Stack, admin: AirflowClient, approver: AirflowClient, mlflow_registry: MlflowClient
) -> None:
    version = train(admin, "diabetes")
    question = wait_for_question(stack, admin, "diabetes", version)
    assert question["subject"] == f"Promote diabetes v{version} to champion?"
    assert "/mlops/runs/diabetes__train/" in question["body"] and "rmse" in question["body"]
    assert [user["id"] for user in question["assigned_users"]] == ["approver"]
    assert mlflow_registry.get_registered_model("diabetes").aliases.get("champion") is None

    with pytest.raises(AirflowApiError) as refused:
        answer(admin, "diabetes", version, "Promote", "admin is not assigned")
    assert refused.value.status_code == 403
    answer(approver, "diabetes", version, "Promote", "first model, holdout within budget")

    state, tasks = approval_outcome(stack, admin, "diabetes", version)
    assert state == "success" and tasks["promote"] == "success", tasks
    assert mlflow_registry.get_model_version_by_alias("diabetes", "champion").version == version
    promoted = history(stack, "diabetes")[-1]
    assert (promoted.action, promoted.to_version, promoted.actor) == ("promote", version, "approver")
    assert promoted.reason == "passed its gates; approved by approver: first model, holdout within budget"
    tags = mlflow_registry.get_model_version("diabetes", version).tags
    assert (tags["approval"], tags["approval_by"]) == ("approved", "approver")


def test_a_newer_candidate_supersedes_a_waiting_one_and_a_rejection_is_recorded(
    stack: Stack, admin: AirflowClient, approver: AirflowClient, mlflow_registry: MlflowClient
) -> None:
    champion = mlflow_registry.get_registered_model("diabetes").aliases.get("champion")
    older = train(admin, "diabetes")
    wait_for_question(stack, admin, "diabetes", older)
    newer = train(admin, "diabetes")  # training is not held up by the waiting candidate

    state, tasks = approval_outcome(stack, admin, "diabetes", older)
    assert state == "success" and tasks["promote"] == "skipped", tasks
    assert approval.recorded_decision(stack.store, "diabetes", older).outcome == "superseded"
    with pytest.raises(AirflowApiError) as late:  # the superseded question no longer takes an answer
        answer(approver, "diabetes", older, "Promote", "too late")
    assert late.value.status_code == 409

    wait_for_question(stack, admin, "diabetes", newer)
    answer(approver, "diabetes", newer, "Reject", "residuals grow with age")
    state, tasks = approval_outcome(stack, admin, "diabetes", newer)
    assert state == "success" and tasks["promote"] == "skipped", tasks

    refusals = [r for r in history(stack, "diabetes") if r.action == "reject"]
    assert [(r.to_version, r.actor) for r in refusals] == [(older, "superseded"), (newer, "approver")]
    assert refusals[0].reason == f"diabetes v{older} not approved: superseded by v{newer}, a newer candidate"
    assert refusals[1].reason == f"diabetes v{newer} rejected by approver: residuals grow with age"
    assert mlflow_registry.get_registered_model("diabetes").aliases.get("champion") == champion
    assert "challenger" not in mlflow_registry.get_registered_model("diabetes").aliases


def test_nobody_answering_in_time_is_a_recorded_refusal_that_blocks_nothing(
    stack: Stack, admin: AirflowClient, mlflow_registry: MlflowClient
) -> None:
    version = train(admin, "quick")
    state, tasks = approval_outcome(stack, admin, "quick", version)
    assert state == "success" and tasks["promote"] == "skipped", tasks
    refusal = history(stack, "quick")[-1]
    assert (refusal.action, refusal.to_version, refusal.actor) == ("reject", version, "timeout")
    assert refusal.reason == f"quick v{version} not approved: no answer within 20 s"
    assert mlflow_registry.get_model_version("quick", version).tags["approval"] == "timed_out"
    # The next candidate is asked about as the first one was.
    following = train(admin, "quick")
    assert int(following) > int(version)
    wait_for_question(stack, admin, "quick", following)


# --- shadow, canary, automatic rollback ---------------------------------------------------------------


def wait_for(what: str, check: Any, timeout: float = 300) -> Any:
    """Poll `check()` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(2)
    return value


def published_by(stack: Stack, ds: str, version: str) -> Any:
    """Wait until the published partition of `ds` is `version`'s (a run Airflow started itself)
    and return its manifest."""
    wait_for(
        f"churn {ds} published by v{version}",
        lambda: (read_manifest(stack.store, PREDICTIONS, "churn", ds) or {}).get("model_version") == version,
    )
    return read_manifest(stack.store, PREDICTIONS, "churn", ds)


def score_runs_settled(admin: AirflowClient) -> None:
    """Wait until no churn__score run is queued or running (champion events start some)."""
    wait_for(
        "churn__score runs to end",
        lambda: all(run.finished for run in admin.list_dag_runs("churn__score")),
    )


@dataclass
class Rollout:
    """What the rollout's steps showed, for the tests to check."""

    versions: dict[str, str]
    train_tasks: dict[str, dict[str, str]]
    score_tasks: dict[str, dict[str, str]]
    monitor_tasks: dict[str, str]
    canary_day: Any  # the 2026-03-01 partition (a pyarrow table), served by champion and challenger
    canary_manifest: dict[str, Any]
    rollback_runs: list[Any]


@pytest.fixture(scope="module")
def rollout(stack: Stack, admin: AirflowClient) -> Rollout:
    """Drive churn's rollout as its team would, through the REST API; the scheduler does the rest."""
    versions: dict[str, str] = {}
    trained: dict[str, dict[str, str]] = {}
    scored: dict[str, dict[str, str]] = {}
    week = {"window_days": 7}

    versions["v1"], trained["v1"] = trained_version(admin, "churn", {"as_of": "2026-02-21", **week})
    published_by(stack, "2026-02-21", versions["v1"])  # the new champion re-scores its data day
    score_runs_settled(admin)
    versions["v2"], trained["v2"] = trained_version(admin, "churn", {"as_of": "2026-02-28", **week})

    _, scored["2026-03-01"] = run_to_end(admin, "churn__score", {"ds": "2026-03-01"})
    canary_day = read_partition(stack.store, "churn", "2026-03-01")
    canary_manifest = read_manifest(stack.store, PREDICTIONS, "churn", "2026-03-01") or {}
    _, scored["2026-03-02"] = run_to_end(admin, "churn__score", {"ds": "2026-03-02"})
    published_by(stack, "2026-03-02", versions["v2"])  # promoted at the period's end: re-scored
    score_runs_settled(admin)
    _, scored["2026-03-03"] = run_to_end(admin, "churn__score", {"ds": "2026-03-03"})

    # The team ships a crippled estimator without a shadow period: the spec edited in place.
    (stack.models / "churn.yaml").write_text(churn_spec(crippled=True))
    wait_for(
        "the dag-processor to parse the edited spec (no shadow period: no conclude_shadow task)",
        lambda: (
            "conclude_shadow"
            not in {
                t["task_id"] for t in admin.request("GET", "/api/v2/dags/churn__score/tasks").json()["tasks"]
            }
        ),
        timeout=180,
    )
    versions["v3"], trained["v3"] = trained_version(admin, "churn", {"as_of": "2026-02-28", **week})
    published_by(stack, "2026-02-28", versions["v3"])
    score_runs_settled(admin)
    _, scored["2026-03-04"] = run_to_end(admin, "churn__score", {"ds": "2026-03-04"})

    _, monitor = run_to_end(admin, "churn__monitor", {"end": "2026-03-04", "window_days": 2})
    rollback_runs = wait_for(
        "churn__rollback to end",
        lambda: (runs := admin.list_dag_runs("churn__rollback")) and all(r.finished for r in runs) and runs,
    )
    for ds in ("2026-02-28", "2026-03-04"):  # the days v3 published, taken back
        published_by(stack, ds, versions["v2"])
    score_runs_settled(admin)
    return Rollout(
        versions=versions,
        train_tasks=trained,
        score_tasks=scored,
        monitor_tasks=monitor,
        canary_day=canary_day,
        canary_manifest=canary_manifest,
        rollback_runs=rollback_runs,
    )


def test_a_candidate_in_its_shadow_period_serves_its_canary_share_and_is_promoted_on_its_evidence(
    rollout: Rollout, stack: Stack
) -> None:
    v1, v2 = rollout.versions["v1"], rollout.versions["v2"]
    assert rollout.train_tasks["v1"]["promote"] == "success"  # nothing to compare with
    assert rollout.train_tasks["v2"]["promote"] == "skipped", rollout.train_tasks["v2"]  # shadow instead
    assert rollout.score_tasks["2026-03-01"]["conclude_shadow"] == "skipped"  # day 1 of 2: waits

    ids = rollout.canary_day.column("id").to_pylist()
    served = np.asarray([str(v) for v in rollout.canary_day.column("model_version").to_pylist()])
    assert (served == np.where(canary_mask(ids, CANARY_SHARE, "churn"), v2, v1)).all()
    assert rollout.canary_manifest["rows_by_version"] == {
        v1: int((served == v1).sum()),
        v2: int((served == v2).sum()),
    }
    assert abs(rollout.canary_manifest["rows_by_version"][v2] / len(ids) - CANARY_SHARE) < 0.06

    assert rollout.score_tasks["2026-03-02"]["conclude_shadow"] == "success"
    outcome = shadow_outcome(stack.store, "churn", v2)
    assert outcome is not None and outcome.decision.action == "promote", outcome
    assert outcome.evidence.days == ["2026-03-01", "2026-03-02"]
    promoted = next(r for r in history(stack, "churn") if r.to_version == v2)
    assert promoted.from_version == v1 and promoted.reason.startswith(f"shadow period: live roc_auc v{v2} ")


def test_a_worse_new_champion_is_rolled_back_automatically_and_its_days_rescored(
    rollout: Rollout, stack: Stack, mlflow_registry: MlflowClient
) -> None:
    v2, v3 = rollout.versions["v2"], rollout.versions["v3"]
    assert rollout.train_tasks["v3"]["promote"] == "success"  # no shadow period: promoted at once
    assert rollout.monitor_tasks["rollback"] == "success", rollout.monitor_tasks
    (run,) = rollout.rollback_runs
    assert run.state == "success" and run.conf["to_version"] == int(v2), run
    assert run.conf["reason"].startswith(f"automatic: live roc_auc of champion v{v3} ")
    assert mlflow_registry.get_model_version_by_alias("churn", "champion").version == v2
    assert mlflow_registry.get_model_version("churn", v3).tags["rolled_back_at"]
    actions = [(r.action, r.from_version, r.to_version) for r in history(stack, "churn")]
    assert actions[-2:] == [("promote", v2, v3), ("rollback", v3, v2)], actions
    alerts = [a["text"] for a in stack.alerts if "rolled back automatically" in a["text"]]
    assert len(alerts) == 1 and f"champion v{v3}" in alerts[0], alerts
    for ds in ("2026-02-28", "2026-03-04"):  # every day v3 published is v2's again, whole
        manifest = read_manifest(stack.store, PREDICTIONS, "churn", ds) or {}
        assert manifest["rows_by_version"] == {v2: manifest["rows"]}, (ds, manifest)
