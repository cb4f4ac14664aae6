"""The native production-like stack: what docker-compose.yaml runs, as local processes.

:func:`start_native_stack` (``mlops stack up``, the system test ``tests/system/test_native_stack.py``)
runs Airflow's api-server, scheduler, dag-processor and triggerer with the CeleryExecutor (broker:
Redis; metadata and Celery results: PostgreSQL), Celery workers, an MLflow server on PostgreSQL
with its artifacts in S3, and moto's S3 server (standing in for MinIO) holding the object store.
It is configured from one mapping with compose's variable names (:func:`native_stack_settings`).
PostgreSQL and Redis are the machine's own servers: each stack gets throwaway databases and a
Redis database index of its own, recorded before they are created and released when it stops
(also after a failed start).

Nothing here imports Airflow or MLflow: they are driven through their command lines and HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlops_pipeline.devtools.embedded_stack import (
    AIRFLOW_COMPONENTS,
    AirflowSettings,
    StackLayout,
    airflow_command,
    build_env,
    start_airflow_components,
    start_mlflow,
    wait_for_airflow,
    wait_for_mlflow,
)
from mlops_pipeline.devtools.processes import (
    LOCALHOST,
    ServiceRecord,
    StackError,
    StopResult,
    find_free_port,
    start_service,
    stop_all,
    stop_service,
    tail,
    venv_bin,
    wait_for_http,
    wait_until,
    write_passwords_file,
    write_private,
)
from mlops_pipeline.devtools.prometheus_servers import (
    PROMETHEUS,
    PUSHGATEWAY,
    PrometheusServers,
    start_prometheus_servers,
)
from mlops_pipeline.settings import WORKER_NAME_VAR, WorkerSettings

DEFAULT_POSTGRES_URI = "postgresql://postgres@127.0.0.1:5432"
DEFAULT_REDIS_URI = "redis://127.0.0.1:6379"
NATIVE_COMPONENTS: tuple[str, ...] = (*AIRFLOW_COMPONENTS, "triggerer")
# Airflow records `hostname_callable()` as each task instance's hostname. The workers of a native
# stack share one machine, so each gets its Celery node name in this variable (see worker_hostname).
HOSTNAME_CALLABLE = "mlops_pipeline.devtools.native_stack.worker_hostname"
# As in docker-compose.yaml (MLOPS_BUCKET, MLFLOW_BUCKET).
STORE_URI = "s3://mlops/store"
MLFLOW_ARTIFACTS_URI = "s3://mlflow/artifacts"
# moto accepts any credentials; they only have to be the same for every client of the stack.
LOCAL_S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "mlops-local",
    "AWS_SECRET_ACCESS_KEY": "mlops-local-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
SKOPS_LOOKUP_WARNINGS = "ignore:::skops.io._utils"
_REDIS_CLAIM_KEY = "mlops-native-stack:claimed-by"
_RESOURCES_FILE = "native-stack.json"
_SETTINGS_FILE = "stack.env"


def worker_hostname() -> str:
    """Airflow's `[core] hostname_callable` in the native stack: the Celery worker's name, else the FQDN.

    Set through `AIRFLOW__CORE__HOSTNAME_CALLABLE`; outside a worker (scheduler, API server) the
    variable is unset and this is Airflow's default, the machine's FQDN.
    """
    return WorkerSettings().worker_name or socket.getfqdn()


def celery_worker_name(index: int) -> str:
    """The Celery node name of worker `index` (1-based): `worker<index>@<host>`."""
    return f"worker{index}@{socket.gethostname()}"


# --- throwaway databases and a Redis database of the stack's own ------------------------------


def _postgres_connection(postgres_uri: str) -> Any:
    import psycopg2  # only the native stack needs it

    connection = psycopg2.connect(f"{postgres_uri.rstrip('/')}/postgres", connect_timeout=10)
    connection.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    return connection


def create_database(postgres_uri: str, name: str) -> None:
    """CREATE DATABASE `name` on the server at `postgres_uri` (`postgresql://user@host:port`)."""
    from psycopg2 import sql

    connection = _postgres_connection(postgres_uri)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        connection.close()


def drop_database(postgres_uri: str, name: str) -> None:
    """DROP DATABASE IF EXISTS `name`, closing the connections still open to it (PostgreSQL 13+)."""
    from psycopg2 import sql

    connection = _postgres_connection(postgres_uri)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        connection.close()


def list_databases(postgres_uri: str, prefix: str = "") -> list[str]:
    """Names of the server's databases starting with `prefix`."""
    connection = _postgres_connection(postgres_uri)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",))
            return sorted(str(row[0]) for row in cursor.fetchall())
    finally:
        connection.close()


def _redis(redis_uri: str, index: int) -> Any:
    import redis  # only the native stack needs it

    return redis.Redis.from_url(f"{redis_uri.rstrip('/')}/{index}", socket_timeout=10)


def claim_redis_db(redis_uri: str, token: str) -> int:
    """An empty Redis database index (1..n-1; 0 is everyone's default), claimed with a marker key.

    The marker is set with NX and the database must hold nothing else, so two stacks (or another
    user of the server) never share one; :func:`release_redis_db` flushes it.
    """
    admin = _redis(redis_uri, 0)
    try:
        count = int(admin.config_get("databases").get("databases", 16))
    except Exception:  # CONFIG may be disabled; 16 is Redis's default
        count = 16
    for index in range(1, count):
        client = _redis(redis_uri, index)
        if client.dbsize() == 0 and client.set(_REDIS_CLAIM_KEY, token, nx=True):
            if client.dbsize() == 1:
                return index
            client.delete(_REDIS_CLAIM_KEY)  # something else arrived meanwhile: not empty, not ours
    raise StackError(f"no empty Redis database at {redis_uri} (indexes 1..{count - 1} are all in use)")


def release_redis_db(redis_uri: str, index: int, token: str) -> bool:
    """FLUSHDB database `index` if our claim is still on it; False if it is someone else's now."""
    client = _redis(redis_uri, index)
    claim = client.get(_REDIS_CLAIM_KEY)
    if claim is not None and claim.decode() != token:
        return False
    client.flushdb()
    return True


@dataclass(frozen=True)
class NativeResources:
    """What a native stack holds on the shared PostgreSQL and Redis servers.

    Written to `<root>/native-stack.json` before anything is created, so that a start that fails
    half-way is still cleaned up by :func:`release_native_resources`.
    """

    token: str
    postgres_uri: str
    databases: tuple[str, ...]
    redis_uri: str
    redis_db: int | None = None


def _resources_file(layout: StackLayout) -> Path:
    return layout.root / _RESOURCES_FILE


def _write_resources(layout: StackLayout, resources: NativeResources) -> None:
    write_private(_resources_file(layout), json.dumps(asdict(resources), indent=2) + "\n")


def read_native_resources(layout: StackLayout) -> NativeResources | None:
    """The recorded resources of the native stack in `layout`, None if there is no readable record."""
    try:
        raw = json.loads(_resources_file(layout).read_text())
        return NativeResources(
            token=str(raw["token"]),
            postgres_uri=str(raw["postgres_uri"]),
            databases=tuple(str(name) for name in raw["databases"]),
            redis_uri=str(raw["redis_uri"]),
            redis_db=None if raw.get("redis_db") is None else int(raw["redis_db"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def release_native_resources(layout: StackLayout) -> list[str]:
    """Drop the stack's databases and flush its Redis database; return what was released.

    Every resource is tried; the record is removed only when all were released, otherwise a
    :class:`StackError` lists what is left (and a later call tries again).
    """
    resources = read_native_resources(layout)
    if resources is None:
        return []
    released, errors = [], []
    for name in resources.databases:
        try:
            drop_database(resources.postgres_uri, name)
            released.append(f"database {name}")
        except Exception as exc:
            errors.append(f"database {name}: {exc}")
    if resources.redis_db is not None:
        try:
            if release_redis_db(resources.redis_uri, resources.redis_db, resources.token):
                released.append(f"redis database {resources.redis_db}")
        except Exception as exc:
            errors.append(f"redis database {resources.redis_db}: {exc}")
    if errors:
        raise StackError("could not release: " + "; ".join(errors))
    _resources_file(layout).unlink(missing_ok=True)
    return released


# --- settings: the variables docker-compose.yaml sets ------------------------------------------


def native_stack_settings(
    *,
    postgres_uri: str,
    airflow_database: str,
    mlflow_database: str,
    redis_uri: str,
    redis_db: int,
    s3_port: int,
    mlflow_port: int,
) -> dict[str, str]:
    """The stack's infrastructure settings, under the names docker-compose.yaml gives them.

    This mapping is the one source every service of the native stack is configured from (it goes
    into each process's environment; the databases, the Redis index, the buckets, the ports and the
    MLflow server's stores are all read back from it) and is written to `<root>/stack.env`.
    """
    server = postgres_uri.rstrip("/").split("://", 1)[1]  # user[:password]@host:port
    # The driver is named everywhere: SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3,
    # which is not installed (psycopg2 is; Airflow derives its async URL with asyncpg from it).
    s3_endpoint = f"http://{LOCALHOST}:{s3_port}"
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{server}/{airflow_database}",
        "AIRFLOW__CELERY__BROKER_URL": f"{redis_uri.rstrip('/')}/{redis_db}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{server}/{airflow_database}",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": HOSTNAME_CALLABLE,
        "MLOPS_STORE_URI": STORE_URI,
        "MLOPS_S3_ENDPOINT_URL": s3_endpoint,
        "MLFLOW_TRACKING_URI": f"http://{LOCALHOST}:{mlflow_port}",
        # Read by `mlflow server` itself (its options' environment variables).
        "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://{server}/{mlflow_database}",
        "MLFLOW_ARTIFACTS_DESTINATION": MLFLOW_ARTIFACTS_URI,
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        **LOCAL_S3_CREDENTIALS,
        # How long a task's call waits on a stalled MLflow or S3 server before it fails (the same
        # values in docker-compose.yaml). The clients' defaults hang a task for minutes per call
        # while a server is stopped, paused or cut off (MLflow: 120 s per request, 7 retries with
        # backoff; botocore: 60 s per read, 3 attempts), with nothing in the task log. With these
        # a call fails within about half a minute and Airflow's task retries (2, 15 s apart, shown
        # in the UI) take over; registering and publishing are idempotent for them. Both servers
        # answer the pipeline's requests in well under a second; 15 s per read still covers the
        # MLflow server storing an uploaded model in S3 before it answers the upload.
        # MLflow: one request and one retry, 2 x 15 s (urllib3 does not back off before the first).
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        # S3 (mlops_pipeline.store): botocore's standard retries said outright, 3 attempts x 15 s
        # plus at most 3 s of backoff.
        "MLOPS_S3_TIMEOUT": "15",
        "AWS_RETRY_MODE": "standard",
        "AWS_MAX_ATTEMPTS": "3",
        # Loading a skops model looks every scipy ufunc up in every loaded module; Airflow's
        # deprecated-import shims (airflow.utils.timezone, ...) answer each lookup with a
        # DeprecatedImportWarning: ~1,160 log lines per model load, 40 s per scoring task on
        # 2 busy cores. Warnings raised from that one skops module are not worth a log line.
        "PYTHONWARNINGS": SKOPS_LOOKUP_WARNINGS,
        # A task whose worker died (SIGKILL, OOM, lost host) is retried once the scheduler sees its
        # heartbeat stop: after `task_instance_heartbeat_timeout`, checked every `..._detection_interval`.
        # Airflow's default of 300 s leaves a dead worker's task "running" for five minutes; the task
        # supervisor heartbeats every 5 s (`[workers] min_heartbeat_interval`) from its own process,
        # so 60 s is twelve missed beats: no live task is failed over a slow beat, and a dead one is
        # retried on another worker within ~70 s (+ retry_delay). The same values in docker-compose.yaml.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "10",
        # Not Celery's redelivery: with task_acks_late (the Celery provider's default) a dead worker's
        # message stays unacknowledged in Redis until this visibility timeout, then is delivered again,
        # and Airflow refuses it (the task instance is no longer queued). Kept at the provider's 24 h,
        # said explicitly: a short one would redeliver every task that runs longer than it, while it
        # runs. The retry above is the scheduler's, from the missing heartbeat.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
    }


def _port_of(url: str) -> int:
    port = urlparse(url).port
    if port is None:
        raise StackError(f"{url} names no port")
    return port


def _bucket_of(uri: str) -> str:
    bucket = urlparse(uri).netloc
    if not bucket:
        raise StackError(f"{uri} names no bucket")
    return bucket


def s3_client_kwargs(settings: Mapping[str, str]) -> dict[str, Any]:
    """boto3 client settings for the stack's S3 server, from its settings."""
    return {
        "endpoint_url": settings["MLOPS_S3_ENDPOINT_URL"],
        "aws_access_key_id": settings["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": settings["AWS_SECRET_ACCESS_KEY"],
        "region_name": settings["AWS_DEFAULT_REGION"],
    }


def start_s3_server(
    layout: StackLayout, *, port: int, env: Mapping[str, str], name: str = "s3"
) -> ServiceRecord:
    """Start moto's S3 API server on 127.0.0.1:`port` (it keeps everything in memory)."""
    executable = venv_bin() / "moto_server"
    if not executable.exists():
        raise StackError(f"{executable} not found: `make install` installs moto[server] (dev group)")
    return start_service(
        name,
        [str(executable), "-H", LOCALHOST, "-p", str(port)],
        env=env,
        state_dir=layout.state_dir,
        log_file=layout.log_file(name),
        cwd=layout.root,
        details={"url": f"http://{LOCALHOST}:{port}", "port": str(port)},
    )


def create_buckets(settings: Mapping[str, str]) -> list[str]:
    """Create the store's and MLflow's buckets (named in the settings) if they do not exist."""
    import boto3

    client = boto3.client("s3", **s3_client_kwargs(settings))
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    wanted = [_bucket_of(settings["MLOPS_STORE_URI"]), _bucket_of(settings["MLFLOW_ARTIFACTS_DESTINATION"])]
    for bucket in wanted:
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)
    return wanted


def start_celery_worker(
    layout: StackLayout,
    settings: AirflowSettings,
    env: Mapping[str, str],
    *,
    index: int,
    log_server_port: int,
    concurrency: int = 2,
) -> ServiceRecord:
    """Start `airflow celery worker` number `index` as service `celery-worker<index>`.

    Each worker gets its own node name (`-H worker<index>@<host>`, also recorded as the hostname
    of the task instances it runs) and its own log-server port: they share one machine.
    """
    node = celery_worker_name(index)
    name = f"celery-worker{index}"
    worker_env = {
        **env,
        WORKER_NAME_VAR: node,
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_server_port),
    }
    argv = airflow_command("celery", "worker", "--concurrency", str(concurrency), "--celery-hostname", node)
    settings.home.mkdir(parents=True, exist_ok=True)
    return start_service(
        name,
        argv,
        env=worker_env,
        state_dir=layout.state_dir,
        log_file=layout.log_file(name),
        cwd=settings.home,
        details={"node": node, "concurrency": str(concurrency), "log_server_port": str(log_server_port)},
    )


def _log_since_start(record: ServiceRecord) -> str:
    text = tail(record.log_file, lines=100_000)
    marker = f"starting {record.name}:"
    position = text.rfind(marker)
    return text[position:] if position >= 0 else text


def wait_for_celery_worker(record: ServiceRecord, *, timeout: float = 120.0) -> None:
    """Wait until the worker's log says `<node> ready.` (connected to the broker); fail fast if it dies."""
    ready = f"{record.details['node']} ready."
    wait_until(record, lambda: ready in _log_since_start(record), timeout=timeout, what=record.name)


@dataclass(frozen=True)
class NativeStack:
    """A running native stack: its layout, Airflow settings, settings (compose names) and workers."""

    layout: StackLayout
    airflow: AirflowSettings
    settings: dict[str, str]
    env: dict[str, str]  # every service's environment: build_env + the settings
    workers: tuple[str, ...]  # Celery node names
    concurrency: int
    prometheus: PrometheusServers | None = None  # the runs push their metrics to its Pushgateway

    @property
    def airflow_url(self) -> str:
        """The API server (and UI)."""
        return self.airflow.base_url

    @property
    def mlflow_url(self) -> str:
        """The MLflow tracking server (and UI)."""
        return self.settings["MLFLOW_TRACKING_URI"]

    @property
    def store_uri(self) -> str:
        """The object store's root (`s3://…`)."""
        return self.settings["MLOPS_STORE_URI"]

    def s3_client_kwargs(self) -> dict[str, Any]:
        """boto3 client settings for the stack's S3 server."""
        return s3_client_kwargs(self.settings)


def native_stop_phases(names: Iterable[str]) -> list[list[str]]:
    """The recorded services in stop order, in phases whose services stop together.

    The scheduler first (nothing new is queued), then the workers (running tasks still report to
    the API server), the triggerer and the dag-processor, and last the API server, MLflow, S3 and
    Prometheus with its Pushgateway.
    """
    recorded = set(names)
    workers = sorted(name for name in recorded if name.startswith("celery-worker"))
    phases = [
        ["airflow-scheduler"],
        [*workers, "airflow-triggerer", "airflow-dag-processor"],
        ["airflow-api-server", "mlflow", "s3", PROMETHEUS, PUSHGATEWAY],
    ]
    return [[name for name in phase if name in recorded] for phase in phases]


def start_native_stack(
    layout: StackLayout,
    *,
    dags_folder: Path,
    passwords: Mapping[str, str],
    plugins_folder: Path | None = None,
    workers: int = 2,
    concurrency: int = 2,
    api_port: int | None = None,
    mlflow_port: int | None = None,
    s3_port: int | None = None,
    postgres_uri: str = DEFAULT_POSTGRES_URI,
    redis_uri: str = DEFAULT_REDIS_URI,
    cache_dir: Path | None = None,
    extra: Mapping[str, str] | None = None,
    metrics: bool = True,
    timeout: float = 300.0,
) -> NativeStack:
    """Start the native production-like stack under `layout.root` and wait until every service is ready.

    Ports left as None are picked free. `extra` is added to every process's environment. With
    `metrics`, Prometheus and a Pushgateway run too (:mod:`.prometheus_servers`) and every run
    pushes its figures there (``MLOPS_PUSHGATEWAY_URL``, as docker-compose.yaml sets it). On any
    failure everything started so far is stopped and the databases are dropped before the error
    propagates; otherwise :func:`stop_native_stack` does that.
    """
    if workers < 1 or concurrency < 1:
        raise StackError("a native stack needs at least one worker with a concurrency of at least 1")
    if read_native_resources(layout) is not None or any(layout.state_dir.glob("*.pid")):
        raise StackError(f"a stack is already recorded in {layout.root}; stop it first")
    used: list[int] = [port for port in (api_port, mlflow_port, s3_port) if port is not None]

    def free() -> int:
        port = find_free_port(exclude=used)
        used.append(port)
        return port

    api_port = api_port or free()
    mlflow_port = mlflow_port or free()
    s3_port = s3_port or free()
    trigger_log_port = free()
    worker_log_ports = [free() for _ in range(workers)]

    token = secrets.token_hex(4)
    resources = NativeResources(
        token=token,
        postgres_uri=postgres_uri,
        databases=(f"mlops_airflow_{token}", f"mlops_mlflow_{token}"),
        redis_uri=redis_uri,
    )
    layout.root.mkdir(parents=True, exist_ok=True)
    _write_resources(layout, resources)
    try:
        redis_db = claim_redis_db(redis_uri, token)
        resources = NativeResources(**{**asdict(resources), "redis_db": redis_db})
        _write_resources(layout, resources)
        for name in resources.databases:
            create_database(postgres_uri, name)
        settings = native_stack_settings(
            postgres_uri=postgres_uri,
            airflow_database=resources.databases[0],
            mlflow_database=resources.databases[1],
            redis_uri=redis_uri,
            redis_db=redis_db,
            s3_port=s3_port,
            mlflow_port=mlflow_port,
        )
        prometheus = None
        if metrics:
            prometheus = start_prometheus_servers(layout.root, layout.state_dir, os.environ)
            settings["MLOPS_PUSHGATEWAY_URL"] = prometheus.pushgateway_url
        write_private(
            layout.root / _SETTINGS_FILE,
            "# The native stack's settings (docker-compose.yaml's names); `mlops stack down` drops it all.\n"
            + "".join(f"{key}={value}\n" for key, value in settings.items()),
        )
        write_passwords_file(layout.passwords_file, passwords)
        airflow = AirflowSettings(
            home=layout.airflow_home,
            api_port=api_port,
            dags_folder=dags_folder,
            plugins_folder=plugins_folder,
            passwords_file=layout.passwords_file,
            worker_log_server_port=worker_log_ports[0],
            trigger_log_server_port=trigger_log_port,
            sql_alchemy_conn=settings["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
            parallelism=workers * concurrency,
        )
        env = build_env(
            store_uri=settings["MLOPS_STORE_URI"],
            tracking_uri=settings["MLFLOW_TRACKING_URI"],
            airflow=airflow,
            cache_dir=cache_dir,
            extra={**settings, **(extra or {})},
        )
        s3 = start_s3_server(layout, port=_port_of(settings["MLOPS_S3_ENDPOINT_URL"]), env=env)
        mlflow = start_mlflow(
            layout,
            port=_port_of(settings["MLFLOW_TRACKING_URI"]),
            env=env,
            backend_store_uri=settings["MLFLOW_BACKEND_STORE_URI"],
            artifacts_destination=settings["MLFLOW_ARTIFACTS_DESTINATION"],
        )
        wait_for_http(f"{settings['MLOPS_S3_ENDPOINT_URL']}/moto-api/", timeout=60, records=[s3], what="S3")
        create_buckets(settings)
        components = start_airflow_components(layout, airflow, env, components=NATIVE_COMPONENTS)
        worker_records = [
            start_celery_worker(
                layout, airflow, env, index=index, log_server_port=port, concurrency=concurrency
            )
            for index, port in enumerate(worker_log_ports, start=1)
        ]
        wait_for_mlflow(mlflow, timeout=timeout)
        wait_for_airflow(
            airflow.base_url,
            timeout=timeout,
            records=[*components, *worker_records],
            components=("metadatabase", "scheduler", "dag_processor", "triggerer"),
        )
        for record in worker_records:
            wait_for_celery_worker(record, timeout=timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            stop_native_stack(layout)
        raise
    return NativeStack(
        layout=layout,
        airflow=airflow,
        settings=settings,
        env=env,
        workers=tuple(record.details["node"] for record in worker_records),
        concurrency=concurrency,
        prometheus=prometheus,
    )


def stop_native_stack(layout: StackLayout, *, timeout: float = 20.0) -> tuple[list[StopResult], list[str]]:
    """Stop every service of the native stack in `layout`, then drop its databases and flush its Redis DB.

    Returns what was stopped and what was released; safe to call again (and after a failed start).
    """
    from concurrent.futures import ThreadPoolExecutor

    names = [path.stem for path in layout.state_dir.glob("*.pid")] if layout.state_dir.is_dir() else []
    results: list[StopResult] = []
    for phase in native_stop_phases(names):
        if phase:  # one after the other they took 30 s; together, the slowest of each phase
            with ThreadPoolExecutor(max_workers=len(phase)) as pool:
                stopped = pool.map(lambda name: stop_service(layout.state_dir, name, timeout=timeout), phase)
                results += [result for result in stopped if result is not None]
    results += stop_all(layout.state_dir, timeout=timeout)  # anything else recorded there
    return results, release_native_resources(layout)
