"""System test: a Celery worker dies mid-task on the native stack; the task is retried on the other one.

Issue 13's fault: a worker is SIGKILLed while it runs a task, with no chance to clean up or to
report (its whole process tree is stopped first, then killed: the Celery main process, its pool
children, the task supervisors and the task processes). Airflow notices the task's missing
heartbeat (`[scheduler] task_instance_heartbeat_timeout`, 60 s in the stack's settings), the task
is retried on the surviving worker, and the run succeeds. What must hold afterwards:

1. **Promotion** (`churn__train`, the first champion): the worker dies in `promote` after the
   `champion` alias moved and before the history record was written. The retry moves nothing a
   second time: one promotion record for the run, MLflow's alias on the version, one version, and
   one asset event (one re-scoring run).
2. **Scoring** (`churn__score`, the re-scoring that promotion triggers): the worker dies in
   mapped `score` tasks after they staged their part files. The retries stage their own parts;
   the day has exactly one manifest generation, naming every part, none of them the killed tries'
   staging; readers (`predictions.read_partition`) see each row once.

How the kill lands mid-task every time: the victim worker is started with `MLOPS_FAULT_PAUSE`
(`mlops_pipeline.faults.pause_point`), so its task holds still at the named point; the test waits
for the point's effect (the alias in MLflow, the staged part in S3) before killing. The other
worker has no pause, so the retry runs through.

Workers: at the start only worker 1 runs (worker 2 is stopped), so the training run and its
`promote` are on worker 1. Worker 2 is started (pausing in `score`) while `promote` is held, then
worker 1 is killed: the promote retry can only go to worker 2. Once the retry runs there, worker 1
is restarted without a pause, as an operator's supervisor (systemd, Kubernetes) would restart a
dead worker; the re-scoring run then puts `score` tasks on both, worker 2's hold still and worker 2
is killed, so their retries can only go to worker 1. Worker 2 is left dead: nothing else is to run,
and the fixture's stop checks that nothing of it is left.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import psutil
import pytest
from mlflow import MlflowClient

from mlops_pipeline import layout
from mlops_pipeline.devtools import native_stack, processes
from mlops_pipeline.devtools.airflow_client import AirflowClient, AirflowNotFoundError
from mlops_pipeline.devtools.example_data import write_example_data
from mlops_pipeline.devtools.running_stack import RunningStack, running_native_stack
from mlops_pipeline.predictions import read_manifest, read_partition
from mlops_pipeline.registry import promotion_history
from mlops_pipeline.settings import FAULT_PAUSE_VAR

pytestmark = [pytest.mark.slow, pytest.mark.system, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
MODEL = "churn"
TRAIN, SCORE = f"{MODEL}__train", f"{MODEL}__score"
AS_OF = "2026-02-28"  # the first champion's last day: its promotion re-scores this day
FILES_PER_DAY = 4  # example_data.SCORING_FILES_PER_DAY
ROWS_PER_DAY = 800
ID_COLUMN = "id"  # predictions carry the input's id column as `id` (scoring.output_schema)
T = TypeVar("T")


@dataclass(frozen=True)
class Stack(RunningStack):
    """The running native stack and its workers' log-server ports (for restarts)."""

    log_ports: dict[int, int]  # worker index -> log server port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The native stack with two workers and the example data; all of it stopped by PID and its
    databases dropped afterwards, checked (also the workers this test killed and restarted)."""
    with running_native_stack(
        tmp_path_factory.mktemp("worker-death"),
        repo=REPO,
        dag_ids=(TRAIN, SCORE),
        write_data=write_example_data,
    ) as running:
        log_ports = {}
        for index in (1, 2):
            record = processes.read_record(running.state_dir, f"celery-worker{index}")
            assert record is not None
            log_ports[index] = int(record.details["log_server_port"])
        yield Stack(running.native, running.passwords, running.store, log_ports)


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Iterator[AirflowClient]:
    with AirflowClient(stack.native.airflow_url) as client:
        client.login("admin", stack.passwords["admin"])
        yield client


# --- workers: stop, start (with a pause point), crash ----------------------------------------


def worker_service(index: int) -> str:
    return f"celery-worker{index}"


def start_worker(stack: Stack, index: int, pause: str | None = None) -> None:
    """(Re)start worker `index` under its node name and log port; with `pause`, its tasks hold
    still at that pause point. Returns once the worker is connected to the broker."""
    env = {key: value for key, value in stack.native.env.items() if key != FAULT_PAUSE_VAR}
    if pause is not None:
        env[FAULT_PAUSE_VAR] = pause
    record = native_stack.start_celery_worker(
        stack.native.layout,
        stack.native.airflow,
        env,
        index=index,
        log_server_port=stack.log_ports[index],
        concurrency=stack.native.concurrency,
    )
    native_stack.wait_for_celery_worker(record, timeout=180)


def crash_worker(stack: Stack, index: int) -> int:
    """SIGKILL worker `index` and every process of it, as a power cut would; how many processes.

    The Celery main process, its descendants (pool children, task supervisors, task processes),
    its process group and every process carrying its marker are all SIGSTOPped first, so none of
    them reacts to the others' deaths (reports a failure, acknowledges a message), then SIGKILLed.
    The PID record stays, as after a real crash (the fixture's stop removes it).
    """
    record = processes.read_record(stack.state_dir, worker_service(index))
    assert record is not None and processes.is_alive(record), f"worker {index} is not running"
    leader = psutil.Process(record.pid)
    victims = {leader.pid: leader, **{p.pid: p for p in leader.children(recursive=True)}}
    victims.update({p.pid: p for p in processes._group_members(record)})
    victims.update({p.pid: p for p in processes._marked_processes(record.marker)})
    assert len(victims) >= 3, f"worker {index}: expected the main process, a pool child and a task"
    for process in victims.values():
        process.suspend()
    for process in victims.values():
        process.kill()
    _gone, alive = psutil.wait_procs(list(victims.values()), timeout=15)
    assert not alive, alive
    if (popen := processes._CHILDREN.pop(record.pid, None)) is not None:
        popen.wait(timeout=5)  # our child: reap it, so it is gone rather than a zombie
    assert not processes.is_alive(record)
    assert not processes._marked_processes(record.marker)
    return len(victims)


# --- the REST API ---------------------------------------------------------------------------


def task_instances(client: AirflowClient, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The run's task instances as the REST API returns them (with `hostname` and `try_number`)."""
    response = client.request(
        "GET",
        f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}/taskInstances",
        params={"limit": 1000},
    )
    assert response.status_code == 200, response.text
    return list(response.json()["task_instances"])


def tries(
    client: AirflowClient, dag_id: str, run_id: str, task_id: str, map_index: int = -1
) -> list[dict[str, Any]]:
    """Every try of one task instance (hostname and state of each), oldest first."""
    path = f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
    response = client.request("GET", path + (f"/{map_index}/tries" if map_index >= 0 else "/tries"))
    assert response.status_code == 200, response.text
    return sorted(response.json()["task_instances"], key=lambda ti: ti["try_number"])


def label(ti: dict[str, Any]) -> str:
    return ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll `check()` until it returns something other than None/False; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def assert_succeeded(client: AirflowClient, dag_id: str, run_id: str, timeout: float) -> list[dict[str, Any]]:
    """Wait for the run; it and each of its tasks succeeded. Its task instances."""
    run = client.wait_for_dag_run(dag_id, run_id, timeout=timeout, interval=2)
    tis = task_instances(client, dag_id, run_id)
    states = {label(ti): ti["state"] for ti in tis}
    assert run.state == "success", (dag_id, run_id, states)
    assert set(states.values()) == {"success"}, (dag_id, run_id, states)
    return tis


def assert_retried_on(
    client: AirflowClient, dag_id: str, run_id: str, ti: dict[str, Any], killed: str, survivor: str
) -> None:
    """The task instance's first try ran on the killed worker and did not succeed; the second
    (and last) ran on the survivor and succeeded."""
    history = tries(client, dag_id, run_id, ti["task_id"], ti["map_index"])
    assert [t["try_number"] for t in history] == [1, 2], (label(ti), history)
    assert (history[0]["hostname"], history[1]["hostname"]) == (killed, survivor), (label(ti), history)
    assert history[0]["state"] != "success" and history[1]["state"] == "success", (label(ti), history)


# --- the test -------------------------------------------------------------------------------


def test_a_killed_worker_s_tasks_are_retried_on_the_other_without_a_second_move_or_a_partial_partition(
    stack: Stack, admin: AirflowClient
) -> None:
    registry = MlflowClient(tracking_uri=stack.native.mlflow_url, registry_uri=stack.native.mlflow_url)
    first_worker, second_worker = stack.native.workers
    started = time.monotonic()

    def elapsed() -> str:
        return f"{time.monotonic() - started:.0f} s"

    # Only worker 1 runs, and its promote holds still after moving the alias.
    processes.stop_service(stack.state_dir, worker_service(2), timeout=30)
    processes.stop_service(stack.state_dir, worker_service(1), timeout=30)
    start_worker(stack, 1, pause="promote_alias_moved")
    print(f"worker 1 pausing in promote, worker 2 stopped: {elapsed()}")

    # --- 1. The worker dies in `promote`, between the alias move and the history record. ---
    train_id = admin.trigger_dag_run(TRAIN, {"as_of": AS_OF}).run_id

    def promote_held() -> dict[str, Any] | None:
        tis = {ti["task_id"]: ti for ti in task_instances(admin, TRAIN, train_id)}
        promote = tis.get("promote")
        failed = {
            name: ti["state"] for name, ti in tis.items() if ti["state"] in ("failed", "upstream_failed")
        }
        assert not failed, failed
        if promote is None or promote["state"] != "running" or promote["hostname"] != first_worker:
            return None
        try:
            registry.get_model_version_by_alias(MODEL, "champion")
        except Exception:
            return None  # the alias has not moved yet
        return promote

    promote = wait_for(promote_held, timeout=600, what="promote holding after the alias move on worker 1")
    version = registry.get_model_version_by_alias(MODEL, "champion").version
    assert promote["try_number"] == 1
    assert promotion_history(stack.store, MODEL) == []  # the alias moved, nothing is recorded yet
    print(f"promote of v{version} held on {first_worker}: {elapsed()}")

    start_worker(stack, 2, pause="score_staged")  # the retry's only place to go
    killed = crash_worker(stack, 1)
    print(f"worker 1 killed ({killed} processes): {elapsed()}")

    def promote_retried() -> dict[str, Any] | None:
        ti = next(ti for ti in task_instances(admin, TRAIN, train_id) if ti["task_id"] == "promote")
        return ti if ti["try_number"] >= 2 and ti["state"] in ("running", "success") else None

    retry = wait_for(promote_retried, timeout=240, what="promote retried after worker 1's heartbeat stopped")
    assert retry["hostname"] == second_worker, retry
    print(f"promote retried on {second_worker}: {elapsed()}")
    start_worker(stack, 1)  # the operator's supervisor restarts the dead worker, with no pause
    print(f"worker 1 restarted: {elapsed()}")

    tis = assert_succeeded(admin, TRAIN, train_id, timeout=240)
    promote = next(ti for ti in tis if ti["task_id"] == "promote")
    assert_retried_on(admin, TRAIN, train_id, promote, first_worker, second_worker)
    assert all(ti["try_number"] == 1 for ti in tis if ti["task_id"] != "promote"), tis
    # The alias moved exactly once: one record for the run, from no champion to the version.
    history = promotion_history(stack.store, MODEL)
    assert [(r.action, r.dag_run_id, r.from_version, r.to_version) for r in history] == [
        ("promote", train_id, None, str(version))
    ]
    assert registry.get_model_version_by_alias(MODEL, "champion").version == version
    versions = registry.search_model_versions(f"name='{MODEL}'")
    assert [v.version for v in versions] == [version]
    assert versions[0].tags.get("promoted_by") == history[0].actor
    assert admin.get_xcom(TRAIN, train_id, "promote")["champion_version"] == str(version)
    print(f"train {AS_OF} succeeded, one promotion recorded: {elapsed()}")

    # --- 2. The worker dies in mapped `score` tasks, after they staged their parts. ---
    score_runs = wait_for(
        lambda: admin.list_dag_runs(SCORE), timeout=120, what="the asset-triggered score run"
    )
    assert len(score_runs) == 1, score_runs  # one promotion, one asset event
    score_id = score_runs[0].run_id

    def planned() -> dict[str, Any] | None:
        try:
            return admin.get_xcom(SCORE, score_id, "plan")
        except AirflowNotFoundError:
            return None

    plan = wait_for(planned, timeout=240, what="the score run's plan")
    token = plan["token"]

    def staged_key(map_index: int, attempt: int = 1) -> str:
        return layout.part_key(layout.PREDICTIONS, MODEL, AS_OF, token, map_index, attempt)

    def scores_held() -> list[dict[str, Any]] | None:
        tis = [ti for ti in task_instances(admin, SCORE, score_id) if ti["task_id"] == "score"]
        assert not [ti for ti in tis if ti["state"] in ("failed", "upstream_failed")], tis
        held = [ti for ti in tis if ti["state"] == "running" and ti["hostname"] == second_worker]
        # Every score task on worker 2 has staged its part and holds (concurrency 2: two of four).
        if len(held) < stack.native.concurrency:
            return None
        return held if all(stack.store.exists(staged_key(ti["map_index"])) for ti in held) else None

    held = wait_for(scores_held, timeout=300, what="score tasks holding after staging on worker 2")
    killed_indexes = sorted(ti["map_index"] for ti in held)
    killed_staging = {staged_key(index) for index in killed_indexes}
    print(f"score{killed_indexes} staged and held on {second_worker}: {elapsed()}")
    killed = crash_worker(stack, 2)
    print(f"worker 2 killed ({killed} processes): {elapsed()}")

    tis = assert_succeeded(admin, SCORE, score_id, timeout=400)
    print(f"score {AS_OF} succeeded: {elapsed()}")
    mapped = {ti["map_index"]: ti for ti in tis if ti["task_id"] == "score"}
    assert sorted(mapped) == list(range(FILES_PER_DAY))
    for index in killed_indexes:
        assert_retried_on(admin, SCORE, score_id, mapped[index], second_worker, first_worker)
    assert all(
        ti["try_number"] == 1
        for ti in tis
        if ti["task_id"] != "score" or ti["map_index"] not in killed_indexes
    )

    # One generation, naming every part: the retries' own, never what the killed tries staged.
    generations = [
        key
        for key in stack.store.list(layout.generations_prefix(layout.PREDICTIONS, MODEL, AS_OF))
        if key.endswith(".json")
    ]
    assert len(generations) == 1, generations
    manifest = read_manifest(stack.store, layout.PREDICTIONS, MODEL, AS_OF)
    assert manifest is not None
    assert (manifest["generation"], manifest["run_id"], manifest["token"]) == (1, score_id, token)
    assert str(manifest["model_version"]) == str(version)
    named = [part["key"] for part in manifest["files"]]
    expected = [staged_key(i, 2 if i in killed_indexes else 1) for i in range(FILES_PER_DAY)]
    assert named == sorted(expected), named
    assert not killed_staging & set(named)
    assert all(stack.store.exists(key) for key in named)
    # Readers see the manifest's files only: every row once, none from the killed tries twice.
    table = read_partition(stack.store, MODEL, AS_OF)
    assert table is not None
    assert table.num_rows == manifest["rows"] == sum(part["rows"] for part in manifest["files"])
    assert manifest["rows"] + manifest["quarantined_rows"] == ROWS_PER_DAY
    ids = table.column(ID_COLUMN).to_pylist()
    assert len(set(ids)) == len(ids)
    published = admin.get_xcom(SCORE, score_id, "publish")
    assert published["generation"] == 1 and str(published["model_version"]) == str(version)
    # Still one score run: the promote retry emitted no second asset event.
    assert [run.run_id for run in admin.list_dag_runs(SCORE)] == [score_id]
    print(f"one generation, {len(named)} parts, {table.num_rows} rows: {elapsed()}")
