"""One Airflow and one MLflow on this machine: their environment, commands, state folders and health.

:func:`build_env` turns a few inputs (store URI, tracking URI, an :class:`AirflowSettings`) into
the environment every service process gets, starting from the caller's environment *minus* any
inherited ``AIRFLOW__*``/``MLFLOW_*``/``MLOPS_*`` settings: a stack is defined by its inputs, not
by what the shell (or a test's conftest) happened to export. The demo (``mlops demo``: ``airflow
standalone``), the system tests (api-server, scheduler and dag-processor as separate processes)
and the e2e tests (an MLflow server) all start their processes through it; the native stack
(:mod:`.native_stack`) builds on it.

Nothing here imports Airflow or MLflow: they are driven through their command lines and HTTP.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from mlops_pipeline.devtools.processes import (
    LOCALHOST,
    MARKER_VAR,
    ServiceRecord,
    ServiceStartError,
    StackError,
    start_service,
    tail,
    venv_bin,
    wait_for_http,
)

# Airflow's default parallelism (32) starts 32 LocalExecutor workers, ~5.9 GB RSS; 4 keeps it ~1.8 GB.
DEFAULT_PARALLELISM = 4
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
_SCRUBBED_PREFIXES = ("AIRFLOW__", "_AIRFLOW", "MLOPS_", "MLFLOW_")
# PYTHONDONTWRITEBYTECODE: every Airflow task is a fresh interpreter; without bytecode each one
# recompiles sklearn, MLflow and GX (2-3x slower imports). `build_env(cache_dir=...)` keeps the
# .pyc files out of the source tree instead.
_SCRUBBED_NAMES = frozenset({"AIRFLOW_HOME", "AIRFLOW_CONFIG", MARKER_VAR, "PYTHONDONTWRITEBYTECODE"})


@dataclass(frozen=True)
class AirflowSettings:
    """How one local Airflow is configured: everything :func:`build_env` needs beyond the URIs.

    The log-server ports always bind all interfaces; callers pick free ones
    (:func:`find_free_port`) so two stacks on one machine do not collide.
    """

    home: Path
    api_port: int
    dags_folder: Path
    passwords_file: Path
    worker_log_server_port: int
    trigger_log_server_port: int
    users: tuple[str, ...] = ("admin:admin", "viewer:viewer")
    plugins_folder: Path | None = None
    sql_alchemy_conn: str | None = None
    parallelism: int = DEFAULT_PARALLELISM

    @property
    def database_uri(self) -> str:
        """The metadata database: the given URI, else SQLite inside the home."""
        return self.sql_alchemy_conn or f"sqlite:///{self.home.resolve() / 'airflow.db'}"

    @property
    def base_url(self) -> str:
        """Where the API server (and UI) answers."""
        return f"http://{LOCALHOST}:{self.api_port}"


def build_env(
    *,
    store_uri: str,
    tracking_uri: str,
    airflow: AirflowSettings | None = None,
    cache_dir: Path | None = None,
    extra: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for the stack's processes (Airflow components, their tasks, MLflow server).

    `base` defaults to this process's environment; inherited Airflow/MLflow/MLOPS settings are
    dropped. The venv's bin goes first on PATH because Airflow starts `airflow` and `python`
    subprocesses by name. `cache_dir` becomes PYTHONPYCACHEPREFIX. `extra` is applied last.
    """
    source = os.environ if base is None else base
    env = {
        key: value
        for key, value in source.items()
        if key not in _SCRUBBED_NAMES and not key.startswith(_SCRUBBED_PREFIXES)
    }
    bin_dir = str(venv_bin())
    rest = [part for part in env.get("PATH", "").split(os.pathsep) if part and part != bin_dir]
    env["PATH"] = os.pathsep.join([bin_dir, *rest])
    env["VIRTUAL_ENV"] = str(venv_bin().parent)
    if cache_dir is not None:
        env["PYTHONPYCACHEPREFIX"] = str(cache_dir.resolve())
    env.update(
        {
            "MLOPS_STORE_URI": store_uri,
            "MLFLOW_TRACKING_URI": tracking_uri,
            # No telemetry: the stack must not call out (and there may be no network).
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            # Progress bars of artifact downloads fill task logs with hundreds of lines.
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "GX_ANALYTICS_ENABLED": "false",
            # MLflow's job consumers (6 extra processes, +11 s start-up) serve features we do not use.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
    )
    if airflow is not None:
        env.update(_airflow_variables(airflow))
    env.update(extra or {})
    return env


def _airflow_variables(settings: AirflowSettings) -> dict[str, str]:
    variables = {
        "AIRFLOW_HOME": str(settings.home.resolve()),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_folder.resolve()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # A local stack must run at once; pausing is a production decision made per DAG.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(settings.parallelism),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.database_uri,
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(settings.users),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(settings.passwords_file.resolve()),
        # The API binds 0.0.0.0 unless told otherwise; the base URL and the execution API URL must
        # follow a non-default port or task processes cannot report back.
        "AIRFLOW__API__HOST": LOCALHOST,
        "AIRFLOW__API__PORT": str(settings.api_port),
        "AIRFLOW__API__BASE_URL": settings.base_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.base_url}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(settings.worker_log_server_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(settings.trigger_log_server_port),
    }
    if settings.plugins_folder is not None:
        variables["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(settings.plugins_folder.resolve())
    return variables


def mlflow_server_command(
    *, backend_store_uri: str, artifacts_destination: str, port: int, app_name: str | None = None
) -> list[str]:
    """`mlflow server` on 127.0.0.1:`port`, one worker, proxied artifacts, framable by the Airflow UI.

    The default X-Frame-Options (SAMEORIGIN) would stop the Airflow plugin showing MLflow pages.
    `app_name="basic-auth"` puts every request but `/health` behind a login (see
    :func:`mlflow_auth_config`).
    """
    auth = ["--app-name", app_name] if app_name else []
    return [
        str(venv_bin() / "mlflow"),
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts_destination,
        "--host",
        LOCALHOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--x-frame-options",
        "NONE",
        *auth,
    ]


MLFLOW_AUTH_APP = "basic-auth"


def mlflow_auth_config(database_uri: str) -> str:
    """The basic-auth app's ini file (MLFLOW_AUTH_CONFIG_PATH), as deploy/mlflow/basic_auth.ini has it.

    Every signed-in user may read; writing needs EDIT/MANAGE, which the creator of an experiment
    or model gets; anonymous requests get 401. No secret here: the admin's password comes from
    MLFLOW_AUTH_ADMIN_PASSWORD and the database's from PGPASSWORD. Checked passwords are cached
    for 60 s: each check is a PBKDF2 hash (tens of ms), paid on every request of every task
    otherwise; with one server worker no other copy of the cache can go stale.
    """
    return (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {database_uri}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        "auth_cache_ttl_seconds = 60\n"
    )


def ensure_mlflow_user(
    tracking_uri: str,
    admin: tuple[str, str],
    user: tuple[str, str],
    *,
    is_admin: bool = True,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """Create MLflow user `user` = (name, password), or reset its password; make it an admin or not.

    Signed in as `admin`. What deploy/mlflow/create_user.py does for compose, through the REST
    API (no MLflow import in the CLI). The pipeline's user is an admin there for the reason given
    in that file. Returns "created" or "updated".
    """
    name, password = user
    base = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/users"
    with httpx.Client(auth=admin, timeout=30, transport=transport) as client:
        found = client.get(f"{base}/get", params={"username": name})
        if found.status_code == 200:
            action = "updated"
            response = client.patch(f"{base}/update-password", json={"username": name, "password": password})
        elif found.status_code == 404:
            action = "created"
            response = client.post(f"{base}/create", json={"username": name, "password": password})
        else:
            response = found
        if response.is_success:
            response = client.patch(f"{base}/update-admin", json={"username": name, "is_admin": is_admin})
    if not response.is_success:
        raise StackError(
            f"could not set up MLflow user {name!r}: HTTP {response.status_code} {response.text[:300]}"
        )
    return action


def airflow_command(*args: str) -> list[str]:
    """`airflow <args>` with the venv's executable."""
    return [str(venv_bin() / "airflow"), *args]


# --------------------------------------------------------------------------------------------
# Stacks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackLayout:
    """Where one local stack keeps its state: everything lives under `root`."""

    root: Path

    @property
    def airflow_home(self) -> Path:
        """AIRFLOW_HOME (airflow.cfg, SQLite DB, task logs under logs/)."""
        return self.root / "airflow"

    @property
    def mlflow_dir(self) -> Path:
        """MLflow's SQLite database and artifacts."""
        return self.root / "mlflow"

    @property
    def logs_dir(self) -> Path:
        """One log file per service."""
        return self.root / "logs"

    @property
    def state_dir(self) -> Path:
        """PID records."""
        return self.root / "run"

    @property
    def store_dir(self) -> Path:
        """The embedded object store."""
        return self.root / "store"

    @property
    def passwords_file(self) -> Path:
        """SimpleAuthManager's passwords file."""
        return self.airflow_home / "simple_auth_manager_passwords.json"

    def log_file(self, name: str) -> Path:
        """The log file of service `name`."""
        return self.logs_dir / f"{name}.log"


def start_mlflow(
    layout: StackLayout,
    *,
    port: int,
    env: Mapping[str, str],
    name: str = "mlflow",
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    app_name: str | None = None,
    details: Mapping[str, str] | None = None,
) -> ServiceRecord:
    """Start an MLflow tracking server on 127.0.0.1:`port`.

    By default its SQLite backend and artifacts live under `layout.mlflow_dir`; the native stack
    passes a PostgreSQL `backend_store_uri` and an `s3://` `artifacts_destination` (the server then
    needs `MLFLOW_S3_ENDPOINT_URL` and AWS credentials in `env`; clients need neither). The
    embedded demo passes `app_name=MLFLOW_AUTH_APP` (and the auth settings in `env`).
    """
    mlflow_dir = layout.mlflow_dir.resolve()
    mlflow_dir.mkdir(parents=True, exist_ok=True)
    command = mlflow_server_command(
        backend_store_uri=backend_store_uri or f"sqlite:///{mlflow_dir / 'mlflow.db'}",
        artifacts_destination=artifacts_destination or str(mlflow_dir / "artifacts"),
        port=port,
        app_name=app_name,
    )
    return start_service(
        name,
        command,
        env=env,
        state_dir=layout.state_dir,
        log_file=layout.log_file(name),
        cwd=mlflow_dir,
        details={"url": f"http://{LOCALHOST}:{port}", "port": str(port), **(details or {})},
    )


def wait_for_mlflow(record: ServiceRecord, *, timeout: float = 90.0) -> None:
    """Wait until the recorded MLflow server's `/health` answers OK; fail fast if it dies."""
    wait_for_http(f"{record.details['url']}/health", timeout=timeout, records=[record], what="MLflow server")


def airflow_migrate(env: Mapping[str, str], log_file: Path) -> None:
    """Run `airflow db migrate` to completion (writes airflow.cfg with its secrets, then the schema)."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        result = subprocess.run(
            airflow_command("db", "migrate"),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise ServiceStartError(
            f"`airflow db migrate` failed (exit {result.returncode}); last lines of {log_file}:\n{tail(log_file, 25)}",
            log_file,
        )


def _airflow_details(settings: AirflowSettings) -> dict[str, str]:
    return {
        "url": settings.base_url,
        "port": str(settings.api_port),
        "home": str(settings.home.resolve()),
        "worker_log_server_port": str(settings.worker_log_server_port),
        "trigger_log_server_port": str(settings.trigger_log_server_port),
    }


def start_airflow_standalone(
    layout: StackLayout,
    settings: AirflowSettings,
    env: Mapping[str, str],
    *,
    name: str = "airflow",
    details: Mapping[str, str] | None = None,
) -> ServiceRecord:
    """Start `airflow standalone` (it migrates the DB, then runs scheduler, dag-processor, api-server, triggerer).

    `details` are recorded with the service, beside its URL, port and home.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    return start_service(
        name,
        airflow_command("standalone"),
        env=env,
        state_dir=layout.state_dir,
        log_file=layout.log_file(name),
        cwd=settings.home,
        details={**_airflow_details(settings), **(details or {})},
    )


AIRFLOW_COMPONENTS: tuple[str, ...] = ("api-server", "scheduler", "dag-processor")


def airflow_component_command(component: str, settings: AirflowSettings) -> list[str]:
    """`airflow <component>`; the API server on 127.0.0.1 with one worker."""
    argv = airflow_command(component)
    if component == "api-server":
        argv += ["--host", LOCALHOST, "--port", str(settings.api_port), "--workers", "1"]
    return argv


def start_airflow_component(
    layout: StackLayout,
    settings: AirflowSettings,
    env: Mapping[str, str],
    component: str,
    *,
    details: Mapping[str, str] | None = None,
) -> ServiceRecord:
    """Start one Airflow component as service `airflow-<component>` (the DB must be migrated)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    return start_service(
        f"airflow-{component}",
        airflow_component_command(component, settings),
        env=env,
        state_dir=layout.state_dir,
        log_file=layout.log_file(f"airflow-{component}"),
        cwd=settings.home,
        details={**_airflow_details(settings), **(details or {})},
    )


def start_airflow_components(
    layout: StackLayout,
    settings: AirflowSettings,
    env: Mapping[str, str],
    *,
    components: Iterable[str] = AIRFLOW_COMPONENTS,
) -> list[ServiceRecord]:
    """Run `airflow db migrate`, then start each component as its own service `airflow-<component>`.

    This is how a deployment runs Airflow (and how `mlops demo` and the system tests run it), as
    opposed to `standalone`, which supervises all components from one process and does not
    restart one that exits.
    """
    airflow_migrate(env, layout.log_file("airflow-db-migrate"))
    return [start_airflow_component(layout, settings, env, component) for component in components]


def airflow_is_healthy(
    response: httpx.Response, components: Iterable[str] = ("metadatabase", "scheduler")
) -> bool:
    """Whether a `GET /api/v2/monitor/health` response says every named component is healthy."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and all(
        isinstance(body.get(name), dict) and body[name].get("status") == "healthy" for name in components
    )


def wait_for_airflow(
    base_url: str,
    *,
    timeout: float = 180.0,
    records: Iterable[ServiceRecord] = (),
    components: Iterable[str] = ("metadatabase", "scheduler"),
) -> None:
    """Wait until the API server answers and `components` report healthy; fail fast if a process dies."""
    wanted = tuple(components)
    wait_for_http(
        f"{base_url}/api/v2/monitor/health",
        timeout=timeout,
        records=records,
        ready=lambda response: airflow_is_healthy(response, wanted),
        what="Airflow",
    )
