"""System test: the real Airflow components (api-server, scheduler, dag-processor as separate
processes, LocalExecutor, a throwaway SQLite metadata DB) and a real MLflow server, driven only
through their HTTP APIs, as `mlops demo` and any other client drive them.

It proves what unit and `dag.test()` tests cannot: the DAG files parse in the dag-processor, the
REST API authenticates with JWTs and validates params before a run exists, and a triggered
`churn__train` run goes through the scheduler and executor to a champion in MLflow's registry.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
import pytest
from mlflow import MlflowClient

from mlops_pipeline.devtools import embedded_stack, processes
from mlops_pipeline.devtools.airflow_client import AirflowApiError, AirflowClient, AirflowNotFoundError
from mlops_pipeline.devtools.example_data import write_example_data
from mlops_pipeline.store import LocalStore

pytestmark = [pytest.mark.slow, pytest.mark.system, pytest.mark.timeout(480)]

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "churn__train"
# Scheduler first (no new task starts), the API server last (running tasks report to it).
STOP_ORDER = ("airflow-scheduler", "airflow-dag-processor", "airflow-api-server", "mlflow")


@dataclass(frozen=True)
class Stack:
    """The running services and how to reach them."""

    airflow_url: str
    mlflow_url: str
    passwords: dict[str, str]
    store: LocalStore


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Airflow's components and MLflow on free ports, every process stopped by PID afterwards."""
    layout = embedded_stack.StackLayout(tmp_path_factory.mktemp("system-stack"))
    store = LocalStore(layout.store_dir)
    write_example_data(store)
    ports: list[int] = []
    for _ in range(4):
        ports.append(processes.find_free_port(exclude=ports))
    mlflow_port, api_port, worker_log_port, trigger_log_port = ports
    passwords = {"admin": processes.generate_password(), "viewer": processes.generate_password()}
    processes.write_passwords_file(layout.passwords_file, passwords)
    settings = embedded_stack.AirflowSettings(
        home=layout.airflow_home,
        api_port=api_port,
        dags_folder=REPO / "dags",
        plugins_folder=REPO / "plugins",
        passwords_file=layout.passwords_file,
        worker_log_server_port=worker_log_port,
        trigger_log_server_port=trigger_log_port,
    )
    mlflow_url = f"http://{processes.LOCALHOST}:{mlflow_port}"
    cache_dir = REPO / ".cache" / "pycache"
    # build_env drops the AIRFLOW__* settings tests/conftest.py exported for in-process tests.
    mlflow_env = embedded_stack.build_env(
        store_uri=store.root_uri, tracking_uri=mlflow_url, cache_dir=cache_dir
    )
    airflow_env = embedded_stack.build_env(
        store_uri=store.root_uri, tracking_uri=mlflow_url, airflow=settings, cache_dir=cache_dir
    )
    try:
        mlflow = embedded_stack.start_mlflow(layout, port=mlflow_port, env=mlflow_env)
        components = embedded_stack.start_airflow_components(layout, settings, airflow_env)  # migrates first
        embedded_stack.wait_for_mlflow(mlflow, timeout=120)
        embedded_stack.wait_for_airflow(
            settings.base_url,
            timeout=180,
            records=components,
            components=("metadatabase", "scheduler", "dag_processor"),
        )
        with AirflowClient(settings.base_url) as client:
            client.login("admin", passwords["admin"])
            wait_for_parsed(client, DAG_ID, timeout=120)
        yield Stack(airflow_url=settings.base_url, mlflow_url=mlflow_url, passwords=passwords, store=store)
    finally:
        processes.stop_all(layout.state_dir, timeout=15, order=STOP_ORDER)


def wait_for_parsed(client: AirflowClient, dag_id: str, timeout: float) -> None:
    """Poll until the dag-processor has parsed `dag_id`; fail at once on import errors."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.get_dag(dag_id)
            return
        except AirflowNotFoundError:
            errors = client.list_import_errors()
            assert not errors, "\n".join(f"{e.filename}: {e.stack_trace}" for e in errors)
            assert time.monotonic() < deadline, f"{dag_id} not parsed after {timeout} s"
            time.sleep(2)


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Iterator[AirflowClient]:
    with AirflowClient(stack.airflow_url) as client:
        client.login("admin", stack.passwords["admin"])
        yield client


def test_requests_without_a_valid_token_are_refused(stack: Stack, admin: AirflowClient) -> None:
    runs_before = admin.count_dag_runs(DAG_ID)
    url = f"{stack.airflow_url}/api/v2/dags/{DAG_ID}/dagRuns"
    body = {"logical_date": None, "conf": {"as_of": "2026-02-28"}}

    assert httpx.post(url, json=body, timeout=30).status_code == 401
    bad_token = httpx.post(url, json=body, headers={"Authorization": "Bearer not-a-jwt"}, timeout=30)
    assert bad_token.status_code == 403  # Airflow 3.3: a token that does not verify is Forbidden
    with AirflowClient(stack.airflow_url) as anonymous, pytest.raises(AirflowApiError) as wrong_password:
        anonymous.login("admin", "not-the-password")
    assert wrong_password.value.status_code == 401

    assert admin.count_dag_runs(DAG_ID) == runs_before


def test_a_viewer_may_read_but_not_trigger(stack: Stack, admin: AirflowClient) -> None:
    runs_before = admin.count_dag_runs(DAG_ID)
    with AirflowClient(stack.airflow_url) as viewer:
        viewer.login("viewer", stack.passwords["viewer"])
        assert viewer.get_dag(DAG_ID).dag_id == DAG_ID
        with pytest.raises(AirflowApiError) as excinfo:
            viewer.trigger_dag_run(DAG_ID, {"as_of": "2026-02-28"})
    assert excinfo.value.status_code == 403
    assert admin.count_dag_runs(DAG_ID) == runs_before


def test_bad_params_are_refused_before_a_run_exists(admin: AirflowClient) -> None:
    runs_before = admin.count_dag_runs(DAG_ID)
    with pytest.raises(AirflowApiError) as excinfo:
        admin.trigger_dag_run(DAG_ID, {"window_days": -3})
    assert excinfo.value.status_code == 400
    assert "window_days" in excinfo.value.detail
    with pytest.raises(AirflowApiError) as not_a_date:
        admin.trigger_dag_run(DAG_ID, {"as_of": "last tuesday"})
    assert not_a_date.value.status_code == 400 and "as_of" in not_a_date.value.detail
    assert admin.count_dag_runs(DAG_ID) == runs_before


def test_a_triggered_run_promotes_a_champion_with_lineage(stack: Stack, admin: AirflowClient) -> None:
    run = admin.trigger_dag_run(DAG_ID, {"as_of": "2026-02-28"})
    finished = admin.wait_for_dag_run(DAG_ID, run.run_id, timeout=300, interval=2)

    states = {ti.label: ti.state for ti in admin.list_task_instances(DAG_ID, run.run_id)}
    assert finished.state == "success", states
    assert set(states.values()) == {"success"}

    registry = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    champion = registry.get_model_version_by_alias("churn", "champion")
    promoted = admin.get_xcom(DAG_ID, run.run_id, "promote")
    assert str(promoted["champion_version"]) == champion.version
    assert re.fullmatch(r"[0-9a-f]{64}", champion.tags["artifact_sha256"])
    # The data hash is the ingested snapshot's: the identity of the training data.
    manifest = admin.get_xcom(DAG_ID, run.run_id, "ingest")
    assert champion.tags["data_sha256"] == manifest["sha256"]

    # The reports the run names exist in the store.
    evaluation = admin.get_xcom(DAG_ID, run.run_id, "evaluate")
    validation = admin.get_xcom(DAG_ID, run.run_id, "validate")
    for uri in (evaluation["report_html_uri"], validation["data_docs_uri"]):
        assert uri.startswith(stack.store.root_uri)
        assert Path(unquote(urlparse(uri).path)).exists(), uri


def _wait_for_new_run(admin: AirflowClient, dag_id: str, known: set[str], timeout: float) -> str:
    """The id of the first run of `dag_id` not in `known`, once the scheduler has created it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = [run.run_id for run in admin.list_dag_runs(dag_id) if run.run_id not in known]
        if fresh:
            return fresh[0]
        time.sleep(2)
    raise AssertionError(f"no new run of {dag_id} within {timeout} s")


@pytest.mark.timeout(900)
def test_monitoring_triggers_retraining_and_the_new_champion_rescores(
    stack: Stack, admin: AirflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """monitor -> train -> score under the real scheduler: drift in April triggers retraining, whose
    promotion (an asset event) makes the score DAG re-score the last day with the new champion."""
    from datetime import date

    from mlops_pipeline import steps
    from mlops_pipeline.predictions import read_manifest
    from mlops_pipeline.settings import get_settings
    from mlops_pipeline.spec import load_spec
    from mlops_pipeline.steps import score as score_steps

    registry = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    if not registry.search_model_versions("name='churn'"):
        run = admin.trigger_dag_run(DAG_ID, {"as_of": "2026-02-28"})
        assert admin.wait_for_dag_run(DAG_ID, run.run_id, timeout=300).state == "success"
    old_champion = registry.get_model_version_by_alias("churn", "champion").version

    # Days scored by the current champion, as daily score runs would have (same functions as its tasks).
    monkeypatch.setenv("MLOPS_STORE_URI", stack.store.root_uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow_url)
    get_settings.cache_clear()
    spec = load_spec(REPO / "include/models/churn.yaml")
    try:
        for day in (1, 2, 3, 4):
            info = steps.RunInfo(
                "churn__score", f"backfill__2026-04-0{day}", "test", f"2026-04-0{day}T00:00:00+00:00"
            )
            plan = score_steps.plan(spec, stack.store, date(2026, 4, day), None, False, info)
            results = [score_steps.score(spec, stack.store, plan, item, info) for item in plan["inputs"]]
            score_steps.publish(spec, stack.store, plan, results, info)
    finally:
        get_settings.cache_clear()

    trains = {run.run_id for run in admin.list_dag_runs(DAG_ID)}
    scores = {run.run_id for run in admin.list_dag_runs("churn__score")}
    for end in ("2026-04-03", "2026-04-04"):  # two drifted windows of three: N=2 of M=3
        run = admin.trigger_dag_run("churn__monitor", {"end": end, "window_days": 3})
        finished = admin.wait_for_dag_run("churn__monitor", run.run_id, timeout=240)
        assert finished.state == "success", admin.list_task_instances("churn__monitor", run.run_id)
    checked = admin.get_xcom("churn__monitor", run.run_id, "check")
    assert checked["trigger"] is True and "data drift in" in checked["decision"]["reason"]

    retrain_id = _wait_for_new_run(admin, DAG_ID, trains, timeout=60)
    retrain = admin.wait_for_dag_run(DAG_ID, retrain_id, timeout=360)
    assert retrain.state == "success", admin.list_task_instances(DAG_ID, retrain_id)
    assert retrain.conf["as_of"] == "2026-04-04" and retrain.conf["reason"] == checked["decision"]["reason"]
    new_champion = registry.get_model_version_by_alias("churn", "champion").version
    assert new_champion != old_champion

    # The promotion's asset event starts the score DAG, which re-publishes 2026-04-04.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        manifest = read_manifest(stack.store, "predictions", "churn", "2026-04-04")
        if manifest["model_version"] == new_champion:
            break
        failed = [
            r for r in admin.list_dag_runs("churn__score") if r.run_id not in scores and r.state == "failed"
        ]
        assert not failed, [admin.list_task_instances("churn__score", r.run_id) for r in failed]
        time.sleep(3)
    assert manifest["model_version"] == new_champion and manifest["generation"] == 2
    (rescored,) = [r for r in admin.list_dag_runs("churn__score") if r.run_id not in scores]
    assert admin.wait_for_dag_run("churn__score", rescored.run_id, timeout=120).state == "success"
