"""System test: outages of MLflow and of S3 on the native stack (issue 13's "outage" fault test).

The production-like stack of `tests/system/test_native_stack.py` (Airflow with the CeleryExecutor
and two workers, MLflow on PostgreSQL with its artifacts in S3, moto's S3 server holding the store),
all real processes on loopback. A server is stalled with SIGSTOP sent to its recorded process group
(the server and every process it spawned; each service is started in a session of its own): the
kernel still accepts connections, so the clients' requests go unanswered, as with a hung or
partitioned server, until SIGCONT. Then the server carries out what it had queued, which includes
the requests whose clients have given up: the "lost answer" retries must survive.

1. MLflow stalled for 60 s from the moment `register` is queued: the task's first attempt fails on
   the client timeouts of the stack's settings, a retry registers; the run succeeds and the registry
   holds one version for the training run, which `challenger` and `champion` point at, and the
   promotion history holds one record.
2. S3 stalled from the moment every mapped `score` task of a day has succeeded (`publish` is next)
   until `publish` has failed an attempt: the retry publishes; the partition has one manifest
   generation naming every staged part, and readers see the whole day.

Timings are printed (`pytest -s`).
"""

from __future__ import annotations

import datetime
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from mlops_pipeline.devtools import processes
from mlops_pipeline.devtools.airflow_client import AirflowClient, DagRun, TaskInstance
from mlops_pipeline.devtools.example_data import write_example_data
from mlops_pipeline.devtools.running_stack import RunningStack as Stack
from mlops_pipeline.devtools.running_stack import running_native_stack
from mlops_pipeline.layout import generations_prefix
from mlops_pipeline.predictions import read_manifest, read_partition
from mlops_pipeline.registry import CHALLENGER, CHAMPION, promotion_history
from mlops_pipeline.store import ObjectStore

pytestmark = [pytest.mark.slow, pytest.mark.system, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
MODEL = "churn"
TRAIN, SCORE = f"{MODEL}__train", f"{MODEL}__score"
AS_OF = "2026-02-28"  # trains on the 28 days up to here (the spec's window_days)
FIRST_DAY = "2026-02-01"
SCORE_DAY = "2026-02-27"  # scored through the REST API (the promotion re-scores AS_OF itself)
FILES_PER_DAY = 4  # example_data.SCORING_FILES_PER_DAY: four mapped `score` tasks
ROWS_PER_DAY = 800
MLFLOW_OUTAGE_SECONDS = 60.0  # as the issue has it
# S3 stays stalled until `publish` has failed once; its calls give up after 3 x 15 s (the stack's
# MLOPS_S3_TIMEOUT and AWS_MAX_ATTEMPTS), so this bound is only reached when something is wrong.
S3_OUTAGE_LIMIT_SECONDS = 180.0
POLL_SECONDS = 0.5
STARTED = frozenset({"queued", "running"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The native stack with two workers and February's example data in its S3 store; all of it
    stopped by PID and its databases dropped afterwards (checked), also when starting fails."""

    def february(store: ObjectStore) -> None:
        write_example_data(store, datetime.date.fromisoformat(FIRST_DAY), datetime.date.fromisoformat(AS_OF))

    with running_native_stack(
        tmp_path_factory.mktemp("outage-stack"), repo=REPO, dag_ids=(TRAIN, SCORE), write_data=february
    ) as running:
        yield running


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Iterator[AirflowClient]:
    with AirflowClient(stack.native.airflow_url) as client:
        client.login("admin", stack.passwords["admin"])
        yield client


@pytest.fixture(scope="module")
def registry_client(stack: Stack) -> MlflowClient:
    return MlflowClient(tracking_uri=stack.native.mlflow_url, registry_uri=stack.native.mlflow_url)


# --- stalling a service -----------------------------------------------------------------------


def service_tree(stack: Stack, name: str) -> list[psutil.Process]:
    """The recorded service `name` and every process it spawned (e.g. MLflow's uvicorn under the CLI)."""
    record = processes.running_service(stack.native.layout.state_dir, name)
    assert record is not None, f"{name} is not running"
    root = psutil.Process(record.pid)
    return [root, *root.children(recursive=True)]


@contextmanager
def stalled(stack: Stack, name: str) -> Iterator[list[psutil.Process]]:
    """SIGSTOP the service's whole process group (its session: the server and all it spawned)
    for the duration of the block; SIGCONT on leaving it, whatever happens inside."""
    tree = service_tree(stack, name)
    group = os.getpgid(tree[0].pid)
    assert group == tree[0].pid  # started in a session of its own: the group is the service's
    os.killpg(group, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 10
        while not all(process.status() == psutil.STATUS_STOPPED for process in tree):
            assert time.monotonic() < deadline, [(p.pid, p.status()) for p in tree]
            time.sleep(0.05)
        yield tree
    finally:
        os.killpg(group, signal.SIGCONT)
    assert all(process.status() != psutil.STATUS_STOPPED for process in tree)


# --- watching a run through the REST API -------------------------------------------------------


def tasks_of(client: AirflowClient, dag_id: str, run_id: str) -> dict[str, TaskInstance]:
    return {ti.label: ti for ti in client.list_task_instances(dag_id, run_id)}


def wait_for_tasks(
    client: AirflowClient,
    run: DagRun,
    ready: Callable[[dict[str, TaskInstance]], bool],
    *,
    timeout: float,
    what: str,
) -> dict[str, TaskInstance]:
    """Poll the run's task instances until `ready` holds; fail if the run ends first."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = tasks_of(client, run.dag_id, run.run_id)
        if ready(tasks):
            return tasks
        states = {label: (ti.state, ti.try_number) for label, ti in tasks.items()}
        if client.get_dag_run(run.dag_id, run.run_id).finished:
            raise AssertionError(f"{run.dag_id} {run.run_id} finished before {what}: {states}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s: {states}")
        time.sleep(POLL_SECONDS)


def assert_succeeded(client: AirflowClient, run: DagRun) -> dict[str, TaskInstance]:
    tasks = tasks_of(client, run.dag_id, run.run_id)
    states = {label: ti.state for label, ti in tasks.items()}
    assert run.state == "success", (run.dag_id, run.run_id, states)
    assert set(states.values()) == {"success"}, (run.dag_id, run.run_id, states)
    return tasks


def failed_try_log(client: AirflowClient, run: DagRun, task_id: str) -> str:
    return client.get_task_log(run.dag_id, run.run_id, task_id, 1, levels={"error", "critical"})


# --- the scenarios ----------------------------------------------------------------------------


def test_mlflow_stalled_during_register_leaves_one_version_and_one_promotion(
    stack: Stack, admin: AirflowClient, registry_client: MlflowClient
) -> None:
    started = time.monotonic()
    run = admin.trigger_dag_run(TRAIN, {"as_of": AS_OF})
    # From `queued` on, evaluate is done and register has not yet sent anything: each of its
    # MLflow requests meets the stalled server (waiting for `running` could come too late).
    wait_for_tasks(admin, run, lambda tasks: tasks["register"].state in STARTED, timeout=600, what="register")
    print(f"register queued after {time.monotonic() - started:.0f} s: MLflow stalled")
    seen: list[tuple[float, str | None, int]] = []
    with stalled(stack, "mlflow"):
        outage = time.monotonic()
        while (elapsed := time.monotonic() - outage) < MLFLOW_OUTAGE_SECONDS:
            ti = tasks_of(admin, TRAIN, run.run_id)["register"]
            if not seen or seen[-1][1:] != (ti.state, ti.try_number):
                seen.append((round(elapsed), ti.state, ti.try_number))
            time.sleep(POLL_SECONDS)
    print(f"MLflow resumed after {MLFLOW_OUTAGE_SECONDS:.0f} s; register (s, state, try): {seen}")

    finished = admin.wait_for_dag_run(TRAIN, run.run_id, timeout=300, interval=2)
    tasks = assert_succeeded(admin, finished)
    print(f"train finished after {time.monotonic() - started:.0f} s")
    # The first attempt failed on the stalled server (the client's timeout), a retry registered.
    assert tasks["register"].try_number >= 2, seen
    log = failed_try_log(admin, finished, "register")
    assert "timed out" in log.lower() or "timeout" in log.lower(), log[-2000:]

    # One version for the training run, and it is the one the run registered and promoted.
    training_run = admin.get_xcom(TRAIN, run.run_id, "train")["run_id"]
    versions = registry_client.search_model_versions(f"name = '{MODEL}'")
    assert [v.run_id for v in versions] == [training_run], [(v.version, v.run_id) for v in versions]
    (version,) = versions
    assert admin.get_xcom(TRAIN, run.run_id, "register")["version"] == str(version.version)
    assert version.tags["training_run_id"] == training_run and version.tags["gates_passed"] == "true"
    for alias in (CHALLENGER, CHAMPION):
        assert registry_client.get_model_version_by_alias(MODEL, alias).version == version.version
    history = promotion_history(stack.store, MODEL)
    assert [(r.action, r.dag_run_id, r.from_version, r.to_version) for r in history] == [
        ("promote", run.run_id, None, str(version.version))
    ]


def test_s3_stalled_during_publish_leaves_one_manifest_generation(
    stack: Stack, admin: AirflowClient, registry_client: MlflowClient
) -> None:
    champion = registry_client.get_model_version_by_alias(MODEL, CHAMPION).version
    started = time.monotonic()
    # The promotion above re-scores its last training day (an asset event): let that run finish,
    # so that the outage meets one run only.
    for earlier in admin.list_dag_runs(SCORE):
        assert_succeeded(admin, admin.wait_for_dag_run(SCORE, earlier.run_id, timeout=420, interval=2))
    run = admin.trigger_dag_run(SCORE, {"ds": SCORE_DAY})

    def scored(tasks: dict[str, TaskInstance]) -> bool:
        mapped = [ti for ti in tasks.values() if ti.task_id == "score"]
        return len(mapped) == FILES_PER_DAY and all(ti.state == "success" for ti in mapped)

    tasks = wait_for_tasks(admin, run, scored, timeout=420, what="every score task succeeded")
    # Nothing of publish has run yet: each of its S3 requests meets the stalled server.
    assert tasks["publish"].state in {None, "scheduled", *STARTED}, tasks["publish"]
    assert tasks["publish"].try_number <= 1, tasks["publish"]
    print(f"scored after {time.monotonic() - started:.0f} s: S3 stalled, publish {tasks['publish'].state}")
    with stalled(stack, "s3"):
        outage = time.monotonic()
        failed = wait_for_tasks(
            admin,
            run,
            lambda tasks: tasks["publish"].state == "up_for_retry" or tasks["publish"].try_number > 1,
            timeout=S3_OUTAGE_LIMIT_SECONDS,
            what="a failed publish attempt",
        )["publish"]
        print(f"publish failed once after {time.monotonic() - outage:.0f} s ({failed}): S3 resumed")

    finished = admin.wait_for_dag_run(SCORE, run.run_id, timeout=300, interval=2)
    tasks = assert_succeeded(admin, finished)
    print(f"score {SCORE_DAY} finished after {time.monotonic() - started:.0f} s")
    assert tasks["publish"].try_number >= 2
    log = failed_try_log(admin, finished, "publish")
    assert "timeout" in log.lower() or "timed out" in log.lower(), log[-2000:]

    # One generation, naming exactly the parts the score tasks staged, and readers see the day.
    generations = stack.store.list(generations_prefix("predictions", MODEL, SCORE_DAY))
    assert len(generations) == 1, generations
    manifest = read_manifest(stack.store, "predictions", MODEL, SCORE_DAY)
    assert manifest is not None and manifest["generation"] == 1
    assert manifest["run_id"] == run.run_id and str(manifest["model_version"]) == str(champion)
    staged = sorted(
        admin.get_xcom(SCORE, run.run_id, "score", map_index=index)["part"]["key"]
        for index in range(FILES_PER_DAY)
    )
    assert sorted(entry["key"] for entry in manifest["files"]) == staged
    assert all(stack.store.exists(key) for key in staged)
    assert manifest["rows"] + manifest["quarantined_rows"] == ROWS_PER_DAY
    table = read_partition(stack.store, MODEL, SCORE_DAY)
    assert table is not None and table.num_rows == manifest["rows"]
    ids = table.column("id").to_pylist()
    assert len(set(ids)) == len(ids)  # every row once: no part published twice
    assert admin.get_xcom(SCORE, run.run_id, "publish")["generation"] == 1
