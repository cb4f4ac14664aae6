"""The compose stack, run for real: docker-compose.yaml built, brought up and used through its REST API.

What a user of the production path does first, on this machine: a private Docker Engine
(installed if missing, its own socket, stopped by PID afterwards), the project's image built FROM
a stand-in of the official Airflow image and the other services from stand-ins of theirs
(deploy/test/docker-compose.local.yaml says which and why), then `docker-compose up -d --scale
airflow-worker=2`: every health check and init job (airflow-init, minio-init, mlflow-init,
deploy/postgres/init-databases.sh) has to pass for real, over the compose network's service
names. Then, through the published ports only: the example data into the S3 store with
`mlops example-data`, `churn__train` promotes a champion, `churn__score` runs its mapped tasks on
both Celery workers, a bad trigger is refused with 400, no token is 401, MLflow refuses a client
without its password. `docker-compose down -v` at the end, and the fixture checks that no
container, volume, network, host interface or engine process is left.

`make compose-test BASE=official` runs the same checks against the official images with the
user's own Docker engine and Compose v2, and docker-compose.yaml alone.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from dotenv import dotenv_values

from mlops_pipeline.devtools.airflow_client import AirflowApiError, AirflowClient, DagRun
from mlops_pipeline.devtools.compose_stack import (
    ONE_SHOT_SERVICES,
    OVERRIDE_FILE,
    ComposeProject,
    ContainerState,
    ensure_stand_in_images,
    write_compose_env,
)
from mlops_pipeline.devtools.docker_engine import (
    DockerEngine,
    default_cache_dir,
    engine_leftovers,
    ensure_debian_packages,
    private_docker_engine,
)
from mlops_pipeline.devtools.processes import find_free_port
from mlops_pipeline.predictions import read_manifest
from mlops_pipeline.store import ObjectStore, open_store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
BASE = os.environ.get("MLOPS_COMPOSE_BASE", "local")
MODEL = "churn"
TRAIN, SCORE = f"{MODEL}__train", f"{MODEL}__score"
AS_OF = "2026-02-28"
SCORE_DAY = "2026-03-01"
FILES_PER_DAY = 4  # example_data.SCORING_FILES_PER_DAY: four mapped `score` tasks per run
WORKERS = 2
SERVICES = (
    "postgres", "redis", "minio", "minio-init", "mlflow", "mlflow-init", "airflow-init",
    "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker",
)  # fmt: skip


@dataclass(frozen=True)
class RunningCompose:
    """The stack as the test reaches it: its published addresses and the .env it was started with."""

    project: ComposeProject
    containers: tuple[ContainerState, ...]
    settings: dict[str, str]
    airflow_url: str
    mlflow_url: str
    s3_endpoint: str

    @property
    def store_uri(self) -> str:
        """The pipeline's store, as the Airflow services see it."""
        return f"s3://{self.settings.get('MLOPS_BUCKET') or 'mlops'}/store"

    def store(self) -> ObjectStore:
        """The pipeline's S3 store, through the published MinIO port."""
        return open_store(
            self.store_uri,
            {
                "endpoint_url": self.s3_endpoint,
                "aws_access_key_id": self.settings["S3_ACCESS_KEY_ID"],
                "aws_secret_access_key": self.settings["S3_SECRET_ACCESS_KEY"],
                "region_name": "us-east-1",
            },
        )

    def worker_names(self) -> dict[str, str]:
        """Each Celery worker container's host name (what task instances record) -> its container name."""
        workers = [c.name for c in self.containers if c.service == "airflow-worker"]
        hostnames = self.project.engine.lines("inspect", "--format", "{{.Config.Hostname}}", *workers)
        return dict(zip(hostnames, workers, strict=True))


def _compose_command() -> tuple[str, ...]:
    if BASE == "local":
        return ("docker-compose",)
    if BASE == "official":
        return ("docker", "compose")
    raise pytest.UsageError(f"MLOPS_COMPOSE_BASE={BASE!r}: use local or official")


@contextlib.contextmanager
def _engine(run_dir: Path) -> Iterator[DockerEngine]:
    if BASE == "official":
        yield DockerEngine(host=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"), data_root=None)
        return
    ensure_debian_packages()
    with private_docker_engine(run_dir / "engine", default_cache_dir() / "docker-data") as engine:
        started = time.monotonic()
        built = ensure_stand_in_images(engine, REPO, run_dir)
        print(f"stand-in images: built {built or 'none'} in {time.monotonic() - started:.0f} s")
        yield engine


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCompose]:
    """The stack built and up with two workers, every service ready; down -v afterwards, nothing left."""
    run_dir = tmp_path_factory.mktemp("compose")
    interfaces_before = set(psutil.net_if_addrs())
    command = _compose_command()
    ports = {}
    for setting in ("AIRFLOW_PORT", "MLFLOW_PORT", "MINIO_API_PORT", "MINIO_CONSOLE_PORT"):
        ports[setting] = str(find_free_port(exclude=[int(p) for p in ports.values()]))
    name = f"mlops-compose-test-{secrets.token_hex(3)}"
    env_file = write_compose_env(REPO, run_dir / "compose.env", {"COMPOSE_PROJECT_NAME": name, **ports})
    settings = {key: value or "" for key, value in dotenv_values(env_file).items()}
    with _engine(run_dir) as engine:
        files = (REPO / "docker-compose.yaml",) + ((REPO / OVERRIDE_FILE,) if BASE == "local" else ())
        project = ComposeProject(engine, command, REPO, files, env_file, name)
        try:
            started = time.monotonic()
            project.run("build", timeout=1800)
            built = time.monotonic()
            project.run("up", "--detach", "--scale", f"airflow-worker={WORKERS}", timeout=900)
            states = project.wait_ready(SERVICES, timeout=600)
            print(f"build {built - started:.0f} s, up and healthy {time.monotonic() - built:.0f} s")
            yield RunningCompose(
                project=project,
                containers=tuple(states),
                settings=settings,
                airflow_url=f"http://127.0.0.1:{ports['AIRFLOW_PORT']}",
                mlflow_url=f"http://127.0.0.1:{ports['MLFLOW_PORT']}",
                s3_endpoint=f"http://127.0.0.1:{ports['MINIO_API_PORT']}",
            )
        except BaseException:
            print(project.logs(lines=80))
            raise
        finally:
            project.down()
            if engine.data_root is not None:
                leftovers = engine_leftovers(engine)
                # Old layers of earlier builds: the cache keeps only what the current images use.
                engine.docker("image", "prune", "--force", timeout=300)
            else:
                leftovers = None
    if leftovers is not None:
        assert leftovers.empty, f"left in the engine after down -v: {leftovers}"
    new_interfaces = set(psutil.net_if_addrs()) - interfaces_before
    assert not new_interfaces, f"network interfaces left behind: {sorted(new_interfaces)}"


@pytest.fixture(scope="module")
def admin(compose: RunningCompose) -> Iterator[AirflowClient]:
    with AirflowClient(compose.airflow_url) as client:
        client.login(
            compose.settings.get("AIRFLOW_ADMIN_USERNAME") or "admin",
            compose.settings["AIRFLOW_ADMIN_PASSWORD"],
        )
        yield client


def test_every_service_is_up_and_healthy_with_two_celery_workers(compose: RunningCompose) -> None:
    by_service: dict[str, list[ContainerState]] = {}
    for state in compose.containers:
        by_service.setdefault(state.service, []).append(state)
    assert set(by_service) == set(SERVICES)
    assert len(by_service["airflow-worker"]) == WORKERS
    for service, states in by_service.items():
        for state in states:
            assert state.ready, state
            if service not in ONE_SHOT_SERVICES:
                # Every long-running service has a health check, and it passed.
                assert state.health == "healthy", state


def test_the_rest_api_refuses_a_missing_token_and_a_bad_trigger(
    compose: RunningCompose, admin: AirflowClient
) -> None:
    assert httpx.get(f"{compose.airflow_url}/api/v2/dags", timeout=30).status_code == 401
    admin.wait_for_parsed(SCORE, timeout=300)
    with pytest.raises(AirflowApiError) as refused:
        admin.trigger_dag_run(SCORE, {"ds": "yesterday"})
    assert refused.value.status_code == 400
    assert "Invalid input for param ds" in str(refused.value)


def test_mlflow_behind_the_compose_network_needs_its_password(compose: RunningCompose) -> None:
    search = f"{compose.mlflow_url}/api/2.0/mlflow/experiments/search"
    assert httpx.post(search, json={"max_results": 1}, timeout=30).status_code == 401
    pipeline = (
        compose.settings.get("MLFLOW_PIPELINE_USERNAME") or "pipeline",
        compose.settings["MLFLOW_PIPELINE_PASSWORD"],
    )
    assert httpx.post(search, json={"max_results": 1}, auth=pipeline, timeout=30).status_code == 200


def _run_report(admin: AirflowClient, run: DagRun) -> str:
    """Each task's state, and the last lines of every failed task's log: what a failed run says."""
    tis = admin.list_task_instances(run.dag_id, run.run_id)
    parts = [f"{run.dag_id} {run.run_id}: {run.state}; " + ", ".join(f"{ti.label}={ti.state}" for ti in tis)]
    for ti in tis:
        if ti.state in ("failed", "up_for_retry"):
            log = admin.get_task_log(
                run.dag_id, run.run_id, ti.task_id, max(ti.try_number, 1), map_index=ti.map_index
            )
            parts.append(f"--- {ti.label} (on {ti.hostname}) ---\n" + "\n".join(log.splitlines()[-40:]))
    return "\n".join(parts)


def _champion(compose: RunningCompose) -> str:
    admin_auth = (
        compose.settings.get("MLFLOW_ADMIN_USERNAME") or "admin",
        compose.settings["MLFLOW_ADMIN_PASSWORD"],
    )
    response = httpx.get(
        f"{compose.mlflow_url}/api/2.0/mlflow/registered-models/alias",
        params={"name": MODEL, "alias": "champion"},
        auth=admin_auth,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["model_version"]["version"])


def _check_scoring_run(
    compose: RunningCompose, admin: AirflowClient, run: DagRun, ds: str, version: str
) -> None:
    assert run.state == "success", _run_report(admin, run)
    tis = admin.list_task_instances(SCORE, run.run_id)
    assert {ti.state for ti in tis} == {"success"}, [(ti.label, ti.state) for ti in tis]
    mapped = [ti for ti in tis if ti.task_id == "score"]
    assert len(mapped) == FILES_PER_DAY, [ti.label for ti in tis]
    workers = compose.worker_names()
    ran_on = {ti.label: workers.get(ti.hostname or "", ti.hostname) for ti in mapped}
    print(f"{run.run_id}: {ran_on}")
    # Two slots per worker, four files at once: both workers must have taken some.
    assert set(ran_on.values()) == set(workers.values()), ran_on
    manifest = read_manifest(compose.store(), "predictions", MODEL, ds)
    assert manifest is not None, f"predictions/{MODEL}/ds={ds} has no manifest"
    assert manifest["run_id"] == run.run_id and str(manifest["model_version"]) == version
    assert len(manifest["files"]) == FILES_PER_DAY and manifest["rows"] > 0


def test_train_promotes_a_champion_and_scoring_runs_on_both_workers(
    compose: RunningCompose, admin: AirflowClient
) -> None:
    started = time.monotonic()
    # The example data, written by the CLI a user runs, through the published S3 port.
    written = subprocess.run(
        [str(REPO / ".venv/bin/mlops"), "example-data", "--store", compose.store_uri],
        env={
            **os.environ,
            "MLOPS_S3_ENDPOINT_URL": compose.s3_endpoint,
            "AWS_ACCESS_KEY_ID": compose.settings["S3_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": compose.settings["S3_SECRET_ACCESS_KEY"],
            "AWS_DEFAULT_REGION": "us-east-1",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert written.returncode == 0, written.stderr[-3000:]
    for dag_id in (TRAIN, SCORE):
        admin.wait_for_parsed(dag_id, timeout=300)
        admin.set_paused(dag_id, False)  # DAGS_ARE_PAUSED_AT_CREATION in the compose file

    train = admin.wait_for_dag_run(TRAIN, admin.trigger_dag_run(TRAIN, {"as_of": AS_OF}).run_id, timeout=900)
    assert train.state == "success", _run_report(admin, train)
    champion = _champion(compose)
    assert champion == "1"
    print(f"train: champion v{champion} after {time.monotonic() - started:.0f} s")

    # The promotion's asset event scores the last training day; then a day asked for over REST.
    asset_runs = []
    deadline = time.monotonic() + 120
    while not asset_runs and time.monotonic() < deadline:
        asset_runs = admin.list_dag_runs(SCORE)
        time.sleep(2)
    assert asset_runs, "the promotion triggered no scoring run"
    asset_run = admin.wait_for_dag_run(SCORE, asset_runs[0].run_id, timeout=600)
    _check_scoring_run(compose, admin, asset_run, AS_OF, champion)
    requested = admin.trigger_dag_run(SCORE, {"ds": SCORE_DAY})
    _check_scoring_run(
        compose, admin, admin.wait_for_dag_run(SCORE, requested.run_id, timeout=600), SCORE_DAY, champion
    )
    print(f"scored {AS_OF} and {SCORE_DAY} after {time.monotonic() - started:.0f} s")
