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
from mlops_pipeline.devtools.airflow_client import AirflowApiError, AirflowClient
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
            for dag_id in (DAG_ID, "diabetes__approve"):  # two DAG files
                client.wait_for_parsed(dag_id, timeout=120)
        yield Stack(airflow_url=settings.base_url, mlflow_url=mlflow_url, passwords=passwords, store=store)
    finally:
        processes.stop_all(layout.state_dir, timeout=15, order=STOP_ORDER)


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


# Every param of every DAG of one model, each with values its schema refuses: (dag, conf, param).
BIG = "x" * 1_000_000  # the 1 MB values the issue saw stored
BAD_CONF = [
    ("churn__train", {"as_of": "last tuesday"}, "as_of"),
    ("churn__train", {"as_of": "20260228"}, "as_of"),
    ("churn__train", {"as_of": BIG}, "as_of"),
    ("churn__train", {"window_days": 0}, "window_days"),
    ("churn__train", {"window_days": 3651}, "window_days"),
    ("churn__train", {"dry_run": "yes"}, "dry_run"),
    ("churn__train", {"reason": BIG}, "reason"),
    ("churn__rollback", {"to_version": 99999999999999999999, "reason": "too big"}, "to_version"),
    ("churn__rollback", {"to_version": 0, "reason": "too small"}, "to_version"),
    ("churn__rollback", {"to_version": "latest", "reason": "not a number"}, "to_version"),
    ("churn__rollback", {"reason": "no"}, "reason"),
    ("churn__rollback", {"reason": BIG}, "reason"),
    ("churn__reproduce", {"version": 0}, "version"),
    ("churn__reproduce", {"version": "latest"}, "version"),
    ("churn__score", {"ds": "2026-02-30"}, "ds"),
    ("churn__score", {"ds": BIG}, "ds"),
    ("churn__score", {"model_version": 99999999999999999999}, "model_version"),
    ("churn__score", {"model_version": -1}, "model_version"),
    ("churn__score", {"shadow": "true"}, "shadow"),
    ("diabetes__approve", {"version": 0}, "version"),
    ("diabetes__approve", {"version": "latest"}, "version"),
    ("diabetes__approve", {"version": 1, "as_of": BIG}, "as_of"),
    ("churn__monitor", {"end": "yesterday"}, "end"),
    ("churn__monitor", {"window_days": 366}, "window_days"),
    ("churn__monitor", {"dry_run": 1}, "dry_run"),
]


def test_the_bad_conf_table_covers_every_param_the_api_serves(admin: AirflowClient) -> None:
    from mlops_pipeline.steps.conf import MAX_MODEL_VERSION

    for dag_id in {dag_id for dag_id, _, _ in BAD_CONF}:
        served = admin.request("GET", f"/api/v2/dags/{dag_id}/details").json()["params"]
        assert {name for d, _, name in BAD_CONF if d == dag_id} == set(served), dag_id
        for name, param in served.items():
            schema = param["schema"]
            if "string" in schema["type"]:
                assert schema["maxLength"] <= 2000, (dag_id, name)
            if "integer" in schema["type"]:
                assert schema["minimum"] >= 1 and schema["maximum"] <= MAX_MODEL_VERSION, (dag_id, name)


@pytest.mark.parametrize(
    ("dag_id", "conf", "param"),
    BAD_CONF,
    ids=[f"{dag_id}-{param}-{i}" for i, (dag_id, _, param) in enumerate(BAD_CONF)],
)
def test_every_param_of_every_dag_refuses_bad_values_at_the_api(
    admin: AirflowClient, dag_id: str, conf: dict, param: str
) -> None:
    runs_before = admin.count_dag_runs(dag_id)
    with pytest.raises(AirflowApiError) as excinfo:
        admin.trigger_dag_run(dag_id, conf)
    assert excinfo.value.status_code == 400
    assert excinfo.value.detail.startswith(f"Invalid input for param {param}:"), excinfo.value.detail[:300]
    assert admin.count_dag_runs(dag_id) == runs_before


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


def _store_keys(store: LocalStore, *prefixes: str) -> dict[str, bytes]:
    """Every object under `prefixes` with its content, to compare before and after."""
    return {key: store.read_bytes(key) for prefix in prefixes for key in store.list(prefix)}


def test_unknown_conf_keys_fail_the_first_task_of_every_dag_with_nothing_changed(
    stack: Stack, admin: AirflowClient
) -> None:
    """Airflow 3.3 accepts conf keys no param declares (the API answers 200 and creates the run;
    see mlops_pipeline.steps.conf): the first task of each DAG refuses them, once, before any side
    effect. The rollback is the sharpest case: without the check it would move the champion."""
    from mlops_pipeline import layout

    registry = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    if not registry.search_model_versions("name='churn'"):
        run = admin.trigger_dag_run(DAG_ID, {"as_of": "2026-02-28"})
        assert admin.wait_for_dag_run(DAG_ID, run.run_id, timeout=300).state == "success"
    champion = registry.get_model_version_by_alias("churn", "champion")
    # A second version that passed its gates: a rollback to it would succeed if it were not refused.
    target = registry.create_model_version(
        "churn",
        source=champion.source,
        run_id=champion.run_id,
        tags=champion.tags,
        # MLflow 3: a `models:/m-…` source must come with its logged model's id (not always filled in)
        model_id=champion.model_id or champion.source.removeprefix("models:/"),
    )
    watched = (
        layout.promotion_history_prefix("churn"),
        "raw/churn/ds=2026-02-27",
        "predictions/churn/ds=2026-03-02",
        "monitoring/churn",
    )
    before = _store_keys(stack.store, *watched)

    # dag -> (its first task, a conf with one unknown key, that key)
    triggers = {
        "churn__rollback": (
            "rollback",
            {"to_version": int(target.version), "reason": "junk key", "junk": 1},
            "junk",
        ),
        "churn__train": (
            "ingest",
            {"as_of": "2026-02-27", "dry_run": True, "as_off": "2026-02-26"},
            "as_off",
        ),
        "churn__score": ("plan", {"ds": "2026-03-02", "shadoww": True}, "shadoww"),
        "churn__reproduce": ("reproduce", {"version": int(champion.version), "versoin": 2}, "versoin"),
        "churn__monitor": ("check", {"end": "2026-04-04", "window_days": 3, "extra": BIG}, "extra"),
        # Before anyone is asked: the question is never put for a run with a conf it does not know.
        "diabetes__approve": ("request", {"version": int(champion.version), "verison": 1}, "verison"),
    }
    # Accepted by the API, as Airflow accepts any undeclared key: the run exists, the task refuses.
    runs = {dag_id: admin.trigger_dag_run(dag_id, conf) for dag_id, (_, conf, _) in triggers.items()}
    for dag_id, (first_task, _, unknown) in triggers.items():
        run = runs[dag_id]
        finished = admin.wait_for_dag_run(dag_id, run.run_id, timeout=300, interval=2)
        instances = {ti.task_id: ti for ti in admin.list_task_instances(dag_id, run.run_id)}
        assert finished.state == "failed", instances
        first = instances[first_task]
        assert (first.state, first.try_number) == ("failed", 1), first  # refused once, not retried
        others = [ti.state for task_id, ti in instances.items() if task_id != first_task]
        assert set(others) <= {"upstream_failed", None}, instances
        log = admin.get_task_log(dag_id, run.run_id, first_task, 1)
        assert f"{dag_id} does not know the conf key {unknown!r}" in log, log[-2000:]
        assert BIG not in log  # the refusal quotes key names, never values

    assert registry.get_model_version_by_alias("churn", "champion").version == champion.version
    assert not registry.get_model_version("churn", target.version).aliases
    assert "reproduction" not in registry.get_model_version("churn", champion.version).tags
    assert _store_keys(stack.store, *watched) == before


def _plugin(stack: Stack, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{stack.airflow_url}/mlops{path}", headers=headers, timeout=30)


def test_the_plugin_serves_nothing_without_login_and_refuses_odd_ids(stack: Stack) -> None:
    """The plugin's pages in the real API server: login first, 400 for ids Airflow could not have
    created, 404 bodies that name no server path, and no OpenAPI schema or docs at all."""
    from mlops_pipeline import layout

    run_id = "manual__2026-01-31T00:00:00+00:00"
    stack.store.write_bytes(layout.gate_report_key("churn", run_id), b"<html>gate report: PASSED</html>")
    with AirflowClient(stack.airflow_url) as client:
        token = client.login("admin", stack.passwords["admin"])
    pages = [f"/runs/churn__train/{run_id}/{page}" for page in ("data-docs", "gate-report", "mlflow-run")]

    for path in [*pages, "/runs/churn__train/%2E%2E/gate-report", "/openapi.json", "/docs"]:
        assert _plugin(stack, path).status_code in (401, 404), path
    for path in pages:
        assert _plugin(stack, path).status_code == 401, path
        assert _plugin(stack, path, "not-a-jwt").status_code == 403, path
    for path in ("/openapi.json", "/docs", "/redoc"):
        for auth in (None, token):
            response = _plugin(stack, path, auth)
            assert response.status_code == 404 and "openapi" not in response.text.lower(), path

    assert "PASSED" in _plugin(stack, pages[1], token).text
    for odd in ("%2E%2E", "a..b", "r" * 5000, "a%20b", "%22%3E%3Cscript%3E"):
        for page in ("data-docs", "gate-report", "mlflow-run"):
            response = _plugin(stack, f"/runs/churn__train/{odd}/{page}", token)
            assert response.status_code == 400, (odd[:20], page, response.text[:200])
            assert response.json()["detail"].startswith("malformed id: a run id")
    assert _plugin(stack, f"/runs/{'d' * 300}/{run_id}/gate-report", token).status_code == 400

    for path in (
        "/runs/churn__train/manual__never-ran/gate-report",
        "/runs/churn__train/manual__never-ran/data-docs",
        "/runs/churn__train/manual__never-ran/mlflow-run",
    ):
        response = _plugin(stack, path, token)
        assert response.status_code == 404, path
        assert str(stack.store.root) not in response.text and "file:" not in response.text, response.text


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
