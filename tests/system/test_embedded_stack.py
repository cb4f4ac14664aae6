"""System test: the stack `make demo` runs (PostgreSQL, MLflow behind its login, Airflow's components
as separate processes; :mod:`mlops_pipeline.devtools.demo_stack`), with real processes on loopback.

It proves what the demo promises its operator:

* **a burst does not break it**: 100 REST triggers in 30 s across every DAG (good and bad conf,
  1 MB bodies) get 2xx or 4xx, never 5xx; the scheduler is alive and healthy afterwards; every
  accepted good run succeeds;
* **nobody moves an alias around the gates**: MLflow refuses anonymous (and wrongly signed)
  writes with 401 and nothing changes; the tasks sign in as their own user;
* **its state is private**: every file under the stack's root is the owner's only;
* **a dead component is brought back** by the next `ensure_stack` (what `mlops demo` runs), and
  the healthy ones are reused.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mlops_pipeline.devtools import demo_stack, demo_stack_plan, embedded_stack, processes
from mlops_pipeline.devtools.airflow_client import AirflowClient
from mlops_pipeline.devtools.example_data import write_example_data
from mlops_pipeline.store import LocalStore

pytestmark = [pytest.mark.slow, pytest.mark.system, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
MODELS = ("churn", "diabetes", "penguins")
DAGS = (
    "churn__train",
    "churn__score",
    "churn__monitor",
    "churn__rollback",
    "churn__reproduce",
    "diabetes__train",
    "diabetes__rollback",
    "diabetes__reproduce",
    "penguins__train",
    "penguins__score",
    "penguins__monitor",
    "penguins__rollback",
    "penguins__reproduce",
)
BURST_REQUESTS = 100
BURST_SECONDS = 30.0
MEGABYTE = "x" * 1_000_000
# Good runs that finish fast: training dry runs of the two small models (no registry writes
# beyond the MLflow run, no approval).
GOOD_CONFS: tuple[tuple[str, dict[str, object]], ...] = (
    ("penguins__train", {"as_of": "2026-01-01", "dry_run": True}),
    ("diabetes__train", {"as_of": "2026-01-01", "dry_run": True}),
)
GOOD_RUNS = 6


@dataclass(frozen=True)
class Stack:
    """The running stack and how to reach it."""

    plan: demo_stack_plan.StackPlan
    passwords: dict[str, str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The demo's stack in a throwaway project root, on free ports; every process stopped afterwards."""
    previous_umask = demo_stack.set_private_umask()  # as `mlops demo` does, for what this process writes
    layout = embedded_stack.StackLayout(tmp_path_factory.mktemp("embedded") / ".demo")
    try:
        demo_stack.private_root(layout.root)
        write_example_data(LocalStore(layout.store_dir))
        api_port = processes.find_free_port()
        mlflow_port = processes.find_free_port(exclude=[api_port])
        ports = demo_stack.resolve_ports(
            layout.root / "ports.json", airflow=api_port, mlflow=mlflow_port, running=[]
        )
        passwords = {"admin": processes.generate_password(), "viewer": processes.generate_password()}
        processes.write_passwords_file(layout.passwords_file, passwords)
        plan = demo_stack_plan.plan_stack(
            layout,
            ports=ports,
            secrets=demo_stack.resolve_secrets(layout.root / "secrets.json"),
            dags_folder=REPO / "dags",
            plugins_folder=REPO / "plugins",
            passwords_file=layout.passwords_file,
            cache_dir=REPO / ".cache" / "pycache",
        )
        demo_stack.ensure_stack(plan, timeout=240)
        with AirflowClient(plan.airflow_url) as client:
            client.login("admin", passwords["admin"])
            for dag_id in DAGS:
                client.wait_for_parsed(dag_id, timeout=180)
        yield Stack(plan=plan, passwords=passwords)
    finally:
        demo_stack.stop_stack(layout, timeout=15)
        os.umask(previous_umask)


def token(stack: Stack) -> str:
    response = httpx.post(
        f"{stack.plan.airflow_url}/auth/token",
        json={"username": "admin", "password": stack.passwords["admin"]},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


# --------------------------------------------------------------------------------------------
# The burst
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    """One request of the burst and what kind it is."""

    dag_id: str
    body: bytes
    kind: str  # "good": must be accepted and succeed; "bad": must be refused (4xx); "any": 2xx or 4xx


def burst_requests() -> list[Trigger]:
    """100 triggers: GOOD_RUNS good ones, the rest refusals of every kind, 1 MB bodies among them."""

    def body(conf: object, **extra: object) -> bytes:
        return json.dumps({"logical_date": None, "conf": conf, **extra}).encode()

    bad: list[Trigger] = []
    for dag_id in DAGS:
        kind = dag_id.split("__")[1]
        day = {"train": "as_of", "score": "ds", "monitor": "end"}.get(kind)
        if day:
            bad += [
                Trigger(dag_id, body({day: "last tuesday"}), "bad"),
                Trigger(dag_id, body({day: MEGABYTE}), "bad"),  # 1 MB where 10 characters fit
            ]
        if kind in ("train", "monitor"):
            bad += [
                Trigger(dag_id, body({"window_days": -3}), "bad"),
                Trigger(dag_id, body({"dry_run": "yes"}), "bad"),
            ]
        if kind == "train":
            bad.append(Trigger(dag_id, body({"reason": MEGABYTE}), "bad"))
        if kind == "reproduce":
            bad += [
                Trigger(dag_id, body({"version": 0}), "bad"),
                Trigger(dag_id, body({"version": MEGABYTE}), "bad"),
            ]
        if kind == "rollback":
            bad += [
                Trigger(dag_id, body({"to_version": 99999999999999999999}), "bad"),
                Trigger(dag_id, body({"reason": MEGABYTE}), "bad"),
                Trigger(dag_id, body({"reason": "no"}), "bad"),
            ]
        bad += [
            Trigger(dag_id, b'{"logical_date": null, "conf": {', "bad"),  # not JSON
            Trigger(dag_id, body({}, logical_date="not a date"), "bad"),
        ]
    bad.append(Trigger("no_such_dag", body({}), "bad"))
    # An unknown key with a 1 MB value: Airflow accepts unknown top-level keys; the first task
    # refuses the run. Either way the API must answer 2xx or 4xx.
    bad.append(Trigger("churn__rollback", body({"junk": MEGABYTE}), "any"))
    good = [
        Trigger(dag_id, body(conf), "good")
        for dag_id, conf in (GOOD_CONFS[i % len(GOOD_CONFS)] for i in range(GOOD_RUNS))
    ]
    filler = BURST_REQUESTS - len(good) - len(bad)
    assert filler >= 0, f"{len(bad)} bad triggers leave no room for {len(good)} good ones"
    requests = bad + [bad[i % len(bad)] for i in range(filler)]
    # The good ones spread through the burst, not all at the start.
    step = len(requests) // (len(good) + 1)
    for index, trigger in enumerate(good):
        requests.insert((index + 1) * step + index, trigger)
    assert len(requests) == BURST_REQUESTS
    return requests


def test_a_burst_of_triggers_gets_no_5xx_and_every_good_run_succeeds(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {token(stack)}", "Content-Type": "application/json"}
    requests = burst_requests()
    interval = BURST_SECONDS / len(requests)
    start = time.monotonic()

    def send(item: tuple[int, Trigger]) -> tuple[Trigger, int, str]:
        index, trigger = item
        time.sleep(max(0.0, start + index * interval - time.monotonic()))
        response = httpx.post(
            f"{stack.plan.airflow_url}/api/v2/dags/{trigger.dag_id}/dagRuns",
            content=trigger.body,
            headers=headers,
            timeout=60,
        )
        run_id = response.json().get("dag_run_id", "") if response.is_success else response.text[:200]
        return trigger, response.status_code, str(run_id)

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(send, enumerate(requests)))
    elapsed = time.monotonic() - start
    classes = Counter(f"{code // 100}xx" for _trigger, code, _ in answers)
    print(f"burst: {len(answers)} triggers in {elapsed:.1f} s: {dict(classes)}")

    assert classes.get("5xx", 0) == 0, [(t.dag_id, c, text) for t, c, text in answers if c >= 500]
    wrong = [(t.dag_id, t.body[:80], c) for t, c, _ in answers if t.kind == "bad" and c < 400]
    assert not wrong, f"bad conf accepted: {wrong}"
    refused_good = [(t.dag_id, c, text) for t, c, text in answers if t.kind == "good" and c >= 300]
    assert not refused_good
    good_runs = [(t.dag_id, run_id) for t, c, run_id in answers if t.kind == "good"]

    scheduler = processes.running_service(stack.plan.layout.state_dir, "airflow-scheduler")
    assert scheduler is not None, "the scheduler died during the burst"
    with AirflowClient(stack.plan.airflow_url) as client:
        client.login("admin", stack.passwords["admin"])
        deadline = time.monotonic() + 420
        states: dict[tuple[str, str], str] = {}
        for dag_id, run_id in good_runs:
            run = client.wait_for_dag_run(dag_id, run_id, timeout=max(10.0, deadline - time.monotonic()))
            states[(dag_id, run_id)] = str(run.state)
    print(f"burst: {sum(s == 'success' for s in states.values())} of {len(states)} good runs succeeded")
    assert all(state == "success" for state in states.values()), states
    health = demo_stack.probe_airflow(stack.plan.airflow_url)
    assert demo_stack_plan.airflow_component_health(health, "airflow-scheduler").healthy
    assert processes.running_service(stack.plan.layout.state_dir, "airflow-scheduler") == scheduler


# --------------------------------------------------------------------------------------------
# MLflow's login
# --------------------------------------------------------------------------------------------


def test_mlflow_refuses_anonymous_writes_and_nothing_changes(stack: Stack) -> None:
    url = f"{stack.plan.mlflow_url}/api/2.0/mlflow"
    pipeline = stack.plan.mlflow_pipeline
    name = "auth_probe"
    with httpx.Client(auth=pipeline, timeout=30) as signed_in:
        experiment = signed_in.post(f"{url}/experiments/create", json={"name": f"{name}-{time.time_ns()}"})
        experiment.raise_for_status()
        run = signed_in.post(
            f"{url}/runs/create", json={"experiment_id": experiment.json()["experiment_id"]}
        ).json()["run"]["info"]
        signed_in.post(f"{url}/registered-models/create", json={"name": name}).raise_for_status()
        for _ in range(2):
            signed_in.post(
                f"{url}/model-versions/create",
                json={"name": name, "source": f"runs:/{run['run_id']}/model", "run_id": run["run_id"]},
            ).raise_for_status()
        signed_in.post(
            f"{url}/registered-models/alias", json={"name": name, "alias": "champion", "version": "1"}
        ).raise_for_status()
        signed_in.post(
            f"{url}/model-versions/set-tag",
            json={"name": name, "version": "1", "key": "gates_passed", "value": "true"},
        ).raise_for_status()

    attacks = [
        ("POST", "registered-models/alias", {"name": name, "alias": "champion", "version": "2"}),
        ("DELETE", "registered-models/alias", {"name": name, "alias": "champion"}),
        (
            "POST",
            "model-versions/set-tag",
            {"name": name, "version": "2", "key": "gates_passed", "value": "true"},
        ),
        (
            "POST",
            "model-versions/set-tag",
            {"name": name, "version": "1", "key": "artifact_sha256", "value": "0" * 64},
        ),
        ("POST", "registered-models/set-tag", {"name": name, "key": "owner", "value": "mallory"}),
    ]
    for auth in (None, ("pipeline", "not-the-password"), ("mallory", "guess")):
        with httpx.Client(auth=auth, timeout=30) as client:
            for method, path, payload in attacks:
                response = client.request(method, f"{url}/{path}", json=payload)
                assert response.status_code == 401, (auth, path, response.status_code, response.text[:200])
            assert client.get(f"{url}/registered-models/get", params={"name": name}).status_code == 401

    with httpx.Client(auth=pipeline, timeout=30) as signed_in:
        alias = signed_in.get(f"{url}/registered-models/alias", params={"name": name, "alias": "champion"})
        assert alias.json()["model_version"]["version"] == "1"
        tags = {t["key"]: t["value"] for t in alias.json()["model_version"].get("tags", [])}
        assert tags == {"gates_passed": "true"}
        second = signed_in.get(f"{url}/model-versions/get", params={"name": name, "version": "2"}).json()
        assert not second["model_version"].get("tags")
        model = signed_in.get(f"{url}/registered-models/get", params={"name": name}).json()
        assert not model["registered_model"].get("tags")


def test_the_tasks_sign_in_to_mlflow_as_their_own_user(stack: Stack) -> None:
    env = stack.plan.airflow_env
    assert env["MLFLOW_TRACKING_USERNAME"] == demo_stack_plan.MLFLOW_PIPELINE_USER
    assert env["MLFLOW_TRACKING_PASSWORD"] == stack.plan.secrets["mlflow_pipeline"]
    assert stack.plan.secrets["mlflow_admin"] not in env.values()  # the people's admin stays out
    response = httpx.get(
        f"{stack.plan.mlflow_url}/api/2.0/mlflow/users/current",
        auth=stack.plan.mlflow_pipeline,
        timeout=30,
    )
    if response.status_code == 404:  # older servers: ask for the user by name
        response = httpx.get(
            f"{stack.plan.mlflow_url}/api/2.0/mlflow/users/get",
            params={"username": "pipeline"},
            auth=stack.plan.mlflow_admin,
            timeout=30,
        )
    assert response.status_code == 200, response.text[:300]
    assert response.json()["user"]["username"] == "pipeline"


# --------------------------------------------------------------------------------------------
# Private state, repair
# --------------------------------------------------------------------------------------------


def test_every_state_file_is_private(stack: Stack) -> None:
    root = stack.plan.layout.root
    named = [
        root / "secrets.json",
        root / "ports.json",
        stack.plan.layout.passwords_file,
        stack.plan.layout.mlflow_dir / "basic_auth.ini",
        stack.plan.layout.airflow_home / "airflow.cfg",
        stack.plan.layout.log_file("airflow-scheduler"),
        stack.plan.layout.log_file("postgres"),
        root / "postgres" / "PG_VERSION",
    ]
    for path in named:
        assert path.is_file(), path
    exposed = []
    for folder, dirs, files in os.walk(root):
        for entry in [*dirs, *files]:
            path = Path(folder) / entry
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_symlink():
                continue
            if mode & 0o077:
                exposed.append(f"{oct(mode)} {path.relative_to(root)}")
    assert not exposed, exposed
    # The root itself: the owner's, at most passable (not listable) by PostgreSQL's account.
    assert stat.S_IMODE(root.stat().st_mode) & 0o066 == 0


def test_a_killed_component_is_restarted_and_the_rest_reused(stack: Stack) -> None:
    layout = stack.plan.layout
    victim = processes.running_service(layout.state_dir, "airflow-dag-processor")
    others = {name: processes.running_service(layout.state_dir, name) for name in demo_stack_plan.SERVICES}
    assert victim is not None
    os.kill(victim.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while processes.is_alive(victim) and time.monotonic() < deadline:
        time.sleep(0.2)
    status = {s.name: s for s in demo_stack.stack_status(stack.plan)}
    assert not status["airflow-dag-processor"].running
    assert demo_stack_plan.format_status(status.values()).count("EXITED") == 1

    exited = demo_stack.clean_up_exited(layout)  # what `mlops demo` does before it picks ports
    assert [r.pid for r in exited] == [victim.pid]
    decisions = demo_stack.ensure_stack(stack.plan, timeout=180)

    assert decisions["airflow-dag-processor"].action == "start"
    assert {name for name, d in decisions.items() if d.action != "reuse"} == {"airflow-dag-processor"}
    for name, record in others.items():
        if name != "airflow-dag-processor":
            assert processes.running_service(layout.state_dir, name) == record
    statuses = demo_stack.stack_status(stack.plan)
    assert all(s.running for s in statuses), demo_stack_plan.format_status(statuses)
