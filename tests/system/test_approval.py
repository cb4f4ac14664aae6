"""System test: approval as a real step, under the real scheduler, triggerer and API server.

`dag.test()` cannot run Airflow's Human-in-the-loop step (its wait lives in the triggerer and its
answer comes through the REST API), so the approval is proven here, as an operator drives it:
`<model>__train` registers a candidate and ends; `<model>__approve` waits in Required Actions; a
person answers through `PATCH .../hitlDetails`, only if assigned; a newer candidate supersedes a
waiting one; nobody answering in time is a refusal. Every outcome is in the promotion history with
who and why, and none holds up the next training run.

Two specs from a temp models folder: `diabetes` (approvers: approver; 15 min to answer) and
`quick`, the same model with 20 s to answer and no approvers, for the timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from mlops_pipeline import approval, registry
from mlops_pipeline.devtools import embedded_stack, processes
from mlops_pipeline.devtools.airflow_client import AirflowApiError, AirflowClient
from mlops_pipeline.devtools.example_data import DIABETES_DS, write_example_data
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


def write_specs(models: Path) -> None:
    """`diabetes` assigned to `approver`, and `quick`, which times out in 20 s."""
    text = (REPO / "include/models/diabetes.yaml").read_text()
    assert "approval_required: true" in text
    models.mkdir()
    (models / "diabetes.yaml").write_text(text + "approvers: [approver]\napproval_timeout: PT15M\n")
    (models / "quick.yaml").write_text(
        text.replace("name: diabetes", "name: quick") + "approval_timeout: 20\n"
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Airflow's components with a triggerer, and MLflow, on free ports; stopped by PID afterwards."""
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
        extra={"MLOPS_MODELS_DIR": str(root / "models")},
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
            for dag_id in ("diabetes__train", "diabetes__approve", "quick__train", "quick__approve"):
                client.wait_for_parsed(dag_id, timeout=120)
        yield Stack(airflow_url=settings.base_url, mlflow_url=mlflow_url, passwords=passwords, store=store)
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


def train(admin: AirflowClient, model: str) -> str:
    """Run `<model>__train` to its end (it does not wait for the approval) and return the version."""
    run = admin.trigger_dag_run(f"{model}__train", {"as_of": AS_OF})
    finished = admin.wait_for_dag_run(f"{model}__train", run.run_id, timeout=300, interval=2)
    states = {ti.label: ti.state for ti in admin.list_task_instances(f"{model}__train", run.run_id)}
    assert finished.state == "success", states
    assert states["request_approval"] == "success", states
    return str(admin.get_xcom(f"{model}__train", run.run_id, "register")["version"])


def hitl_path(model: str, version: str) -> str:
    return f"/api/v2/dags/{model}__approve/dagRuns/v{version}__approval/taskInstances/approve/-1/hitlDetails"


def wait_for_question(admin: AirflowClient, model: str, version: str, timeout: float = 180) -> dict[str, Any]:
    """The approve task's question, once it waits for an answer (deferred to the triggerer)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            instances = {
                ti.task_id: ti.state
                for ti in admin.list_task_instances(f"{model}__approve", f"v{version}__approval")
            }
        except AirflowApiError:  # the run is not created yet
            instances = {}
        if instances.get("approve") == "deferred":
            return admin.request("GET", hitl_path(model, version)).json()
        assert time.monotonic() < deadline, f"v{version} never waited for an answer: {instances}"
        time.sleep(2)


def answer(client: AirflowClient, model: str, version: str, chosen: str, reason: str) -> Any:
    return client.request(
        "PATCH",
        hitl_path(model, version),
        json={"chosen_options": [chosen], "params_input": {"reason": reason}},
    )


def approval_outcome(admin: AirflowClient, model: str, version: str) -> tuple[str, dict[str, str]]:
    """Wait for `v<version>__approval` to finish: its state, and each task's (a failed task's log
    is in the assertion message)."""
    dag_id, run_id = f"{model}__approve", f"v{version}__approval"
    finished = admin.wait_for_dag_run(dag_id, run_id, timeout=240, interval=2)
    instances = admin.list_task_instances(dag_id, run_id)
    for ti in instances:
        if ti.state == "failed":
            log = admin.get_task_log(dag_id, run_id, ti.task_id, max(ti.try_number, 1))
            raise AssertionError(f"{dag_id} {run_id}: {ti.task_id} failed:\n{log[-4000:]}")
    return finished.state, {ti.task_id: ti.state for ti in instances}


def history(stack: Stack, model: str) -> list[registry.PromotionRecord]:
    return registry.promotion_history(stack.store, model)


def test_only_an_assigned_approver_answers_and_their_approval_promotes(
    stack: Stack, admin: AirflowClient, approver: AirflowClient, mlflow_registry: MlflowClient
) -> None:
    version = train(admin, "diabetes")
    question = wait_for_question(admin, "diabetes", version)
    assert question["subject"] == f"Promote diabetes v{version} to champion?"
    assert "/mlops/runs/diabetes__train/" in question["body"] and "rmse" in question["body"]
    assert [user["id"] for user in question["assigned_users"]] == ["approver"]
    assert mlflow_registry.get_registered_model("diabetes").aliases.get("champion") is None

    with pytest.raises(AirflowApiError) as refused:
        answer(admin, "diabetes", version, "Promote", "admin is not assigned")
    assert refused.value.status_code == 403
    answer(approver, "diabetes", version, "Promote", "first model, holdout within budget")

    state, tasks = approval_outcome(admin, "diabetes", version)
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
    champion = mlflow_registry.get_model_version_by_alias("diabetes", "champion").version
    older = train(admin, "diabetes")
    wait_for_question(admin, "diabetes", older)
    newer = train(admin, "diabetes")  # training is not held up by the waiting candidate

    state, tasks = approval_outcome(admin, "diabetes", older)
    assert state == "success" and tasks["promote"] == "skipped", tasks
    assert approval.recorded_decision(stack.store, "diabetes", older).outcome == "superseded"
    with pytest.raises(AirflowApiError) as late:  # the superseded question no longer takes an answer
        answer(approver, "diabetes", older, "Promote", "too late")
    assert late.value.status_code == 409

    wait_for_question(admin, "diabetes", newer)
    answer(approver, "diabetes", newer, "Reject", "residuals grow with age")
    state, tasks = approval_outcome(admin, "diabetes", newer)
    assert state == "success" and tasks["promote"] == "skipped", tasks

    refusals = [r for r in history(stack, "diabetes") if r.action == "reject"]
    assert [(r.to_version, r.actor) for r in refusals] == [(older, "superseded"), (newer, "approver")]
    assert refusals[0].reason == f"diabetes v{older} not approved: superseded by v{newer}, a newer candidate"
    assert refusals[1].reason == f"diabetes v{newer} rejected by approver: residuals grow with age"
    assert mlflow_registry.get_model_version_by_alias("diabetes", "champion").version == champion
    assert "challenger" not in mlflow_registry.get_registered_model("diabetes").aliases


def test_nobody_answering_in_time_is_a_recorded_refusal_that_blocks_nothing(
    stack: Stack, admin: AirflowClient, mlflow_registry: MlflowClient
) -> None:
    version = train(admin, "quick")
    state, tasks = approval_outcome(admin, "quick", version)
    assert state == "success" and tasks["promote"] == "skipped", tasks
    refusal = history(stack, "quick")[-1]
    assert (refusal.action, refusal.to_version, refusal.actor) == ("reject", version, "timeout")
    assert refusal.reason == f"quick v{version} not approved: no answer within 20 s"
    assert mlflow_registry.get_model_version("quick", version).tags["approval"] == "timed_out"
    # The next candidate is asked about as the first one was.
    following = train(admin, "quick")
    assert int(following) > int(version)
    wait_for_question(admin, "quick", following)
