"""Local services (Airflow, MLflow) as background processes on 127.0.0.1, tracked by PID records.

:func:`build_env` turns a few inputs (store URI, tracking URI, an :class:`AirflowSettings`) into
the environment every service process gets, starting from the caller's environment *minus* any
inherited ``AIRFLOW__*``/``MLFLOW_*``/``MLOPS_*`` settings: a stack is defined by its inputs, not
by what the shell (or a test's conftest) happened to export. The demo (``mlops demo``: ``airflow
standalone``), the system tests (api-server, scheduler and dag-processor as separate processes)
and the e2e tests (an MLflow server) all start their processes through it.

Each service runs in its own session with its output in a log file, and is recorded in
``<state_dir>/<name>.pid`` (JSON: pid, process start time, command, log file). The start time
guards against PID reuse. Every process we start carries a marker variable that its children
inherit; stopping signals the process group, every descendant and every process still carrying
the marker (Airflow's task processes leave the group), waits, then kills what is left.

The native production-like stack (:func:`start_native_stack`, `mlops stack up`, the system test
`tests/system/test_native_stack.py`) runs what docker-compose.yaml runs, without Docker: Airflow's
components with the CeleryExecutor on this machine's PostgreSQL and Redis, Celery workers, MLflow
on PostgreSQL with artifacts in S3, and moto's S3 server for the object store. It is configured
from one mapping with compose's variable names (:func:`native_stack_settings`), and uses throwaway
databases and a Redis database index of its own, recorded before they are created and released
when it stops (also after a failed start).

Nothing here imports Airflow or MLflow: they are driven through their command lines and HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import psutil

LOCALHOST = "127.0.0.1"
# Airflow's default parallelism (32) starts 32 LocalExecutor workers, ~5.9 GB RSS; 4 keeps it ~1.8 GB.
DEFAULT_PARALLELISM = 4
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
# Every process we start, and every child inheriting its environment, carries this variable.
MARKER_VAR = "MLOPS_LOCALSTACK_SERVICE"

_SCRUBBED_PREFIXES = ("AIRFLOW__", "_AIRFLOW", "MLOPS_", "MLFLOW_")
# PYTHONDONTWRITEBYTECODE: every Airflow task is a fresh interpreter; without bytecode each one
# recompiles sklearn, MLflow and GX (2-3x slower imports). `build_env(cache_dir=...)` keeps the
# .pyc files out of the source tree instead.
_SCRUBBED_NAMES = frozenset({"AIRFLOW_HOME", "AIRFLOW_CONFIG", MARKER_VAR, "PYTHONDONTWRITEBYTECODE"})


class LocalStackError(RuntimeError):
    """A local service could not be started, reached or stopped; the message says what to do."""


class PortInUseError(LocalStackError):
    """A port we need is taken by a process that is not one of ours."""


class ServiceStartError(LocalStackError):
    """A service died or did not become healthy in time; `log_file` holds its output."""

    def __init__(self, message: str, log_file: Path | None = None) -> None:
        super().__init__(message)
        self.log_file = log_file


# --------------------------------------------------------------------------------------------
# Environment and commands
# --------------------------------------------------------------------------------------------


def venv_bin() -> Path:
    """The bin directory of this interpreter's environment (the project's venv)."""
    return Path(sys.executable).parent


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


def mlflow_server_command(*, backend_store_uri: str, artifacts_destination: str, port: int) -> list[str]:
    """`mlflow server` on 127.0.0.1:`port`, one worker, proxied artifacts, framable by the Airflow UI.

    The default X-Frame-Options (SAMEORIGIN) would stop the Airflow plugin showing MLflow pages.
    """
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
    ]


def airflow_command(*args: str) -> list[str]:
    """`airflow <args>` with the venv's executable."""
    return [str(venv_bin() / "airflow"), *args]


def generate_password() -> str:
    """A random password for a generated local user (URL-safe, 16 characters)."""
    return secrets.token_urlsafe(12)


def write_private(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically, readable and writable by the owner only (mode 600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return path


def write_passwords_file(path: Path, passwords: Mapping[str, str]) -> Path:
    """Write SimpleAuthManager's passwords file (`{"user": "password"}`), mode 600."""
    return write_private(path, json.dumps(dict(passwords), indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------


def is_port_free(port: int) -> bool:
    """Whether a server could listen on `port`: a bind succeeds on 127.0.0.1 and on all interfaces.

    Both are tried because Airflow's log servers bind 0.0.0.0, which also blocks 127.0.0.1.
    """
    for address in (LOCALHOST, "0.0.0.0"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # Without SO_REUSEADDR a port in TIME_WAIT after a clean stop would count as taken.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def find_free_port(exclude: Iterable[int] = ()) -> int:
    """A port nothing listens on now (the OS picks it); `exclude` skips ports already handed out."""
    excluded = set(exclude)
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOCALHOST, 0))
            port = int(sock.getsockname()[1])
        if port not in excluded and is_port_free(port):
            return port
    raise LocalStackError("could not find a free port after 50 tries")


def port_owner(port: int) -> str | None:
    """Best effort: 'pid N (name)' of the process listening on `port`, None if unknown."""
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            try:
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
            except psutil.Error:
                return f"pid {conn.pid}"
    return None


def ensure_port_free(port: int, what: str, setting: str) -> None:
    """Raise :class:`PortInUseError` naming the port, its owner and the setting that moves us elsewhere."""
    if is_port_free(port):
        return
    owner = port_owner(port)
    raise PortInUseError(
        f"port {port} for {what} is already in use"
        + (f" by {owner}" if owner else "")
        + f"; stop that process or set {setting} to a free port (in the environment or .env)"
    )


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceRecord:
    """One background service we started: what `<state_dir>/<name>.pid` holds."""

    name: str
    pid: int
    create_time: float
    argv: tuple[str, ...]
    log_file: str
    marker: str
    started_at: str
    details: dict[str, str] = field(default_factory=dict)  # e.g. url, port


@dataclass(frozen=True)
class StopResult:
    """What stopping one service did."""

    name: str
    pid: int
    was_running: bool
    processes: int  # processes signalled (the service and everything it spawned)
    killed: int  # of those, how many needed SIGKILL


# Popen objects of services this interpreter started, so stopping reaps them (no zombies) when
# the caller is their parent, as in the tests.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def pid_file(state_dir: Path, name: str) -> Path:
    """Where the record of service `name` lives."""
    return state_dir / f"{name}.pid"


def start_service(
    name: str,
    argv: list[str],
    *,
    env: Mapping[str, str],
    state_dir: Path,
    log_file: Path,
    cwd: Path | None = None,
    details: Mapping[str, str] | None = None,
) -> ServiceRecord:
    """Start `argv` in the background in a new session, output appended to `log_file`, and record it.

    Refuses to start a second copy while the recorded one is alive.
    """
    if (existing := running_service(state_dir, name)) is not None:
        raise LocalStackError(f"{name} is already running (pid {existing.pid}); stop it first")
    state_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    marker = f"{state_dir.resolve()}::{name}"
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    with log_file.open("ab") as log:
        log.write(f"\n===== {started_at} starting {name}: {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv,
            env={**env, MARKER_VAR: marker},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: Ctrl-C in the terminal does not reach it, and its group can be signalled.
            start_new_session=True,
        )
    _CHILDREN[process.pid] = process
    try:
        create_time = psutil.Process(process.pid).create_time()
    except psutil.NoSuchProcess:
        create_time = 0.0  # died at once; waiting for it reports the log
    record = ServiceRecord(
        name=name,
        pid=process.pid,
        create_time=create_time,
        argv=tuple(argv),
        log_file=str(log_file.resolve()),
        marker=marker,
        started_at=started_at,
        details=dict(details or {}),
    )
    write_private(pid_file(state_dir, name), json.dumps(asdict(record), indent=2) + "\n")
    return record


def read_record(state_dir: Path, name: str) -> ServiceRecord | None:
    """The recorded service `name`, alive or not; None if there is no readable record."""
    try:
        raw = json.loads(pid_file(state_dir, name).read_text())
        return ServiceRecord(
            name=str(raw["name"]),
            pid=int(raw["pid"]),
            create_time=float(raw["create_time"]),
            argv=tuple(raw["argv"]),
            log_file=str(raw["log_file"]),
            marker=str(raw["marker"]),
            started_at=str(raw["started_at"]),
            details={str(k): str(v) for k, v in dict(raw.get("details") or {}).items()},
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_alive(record: ServiceRecord) -> bool:
    """Whether the recorded process still runs: same PID *and* same start time (PIDs get reused)."""
    try:
        process = psutil.Process(record.pid)
        return (
            process.status() != psutil.STATUS_ZOMBIE and abs(process.create_time() - record.create_time) < 1.0
        )
    except psutil.Error:
        return False


def running_service(state_dir: Path, name: str) -> ServiceRecord | None:
    """The record of `name` if its process is alive, else None."""
    record = read_record(state_dir, name)
    return record if record is not None and is_alive(record) else None


def _marked_processes(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARKER_VAR) == marker:
                found.append(process)
        except psutil.Error:
            continue  # gone, a zombie, or not ours to read
    return found


def _signal_all(processes: Iterable[psutil.Process], kill: bool = False) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill() if kill else process.terminate()


def stop_service(state_dir: Path, name: str, *, timeout: float = 20.0) -> StopResult | None:
    """Stop service `name` and everything it spawned, then remove its record; None if no record.

    SIGTERM to its process group, its descendants and every process carrying its marker; after
    `timeout` seconds SIGKILL to whatever is left (including processes spawned meanwhile).
    A recorded PID that now belongs to another process (PID reuse) is left alone.
    """
    record = read_record(state_dir, name)
    if record is None:
        pid_file(state_dir, name).unlink(missing_ok=True)
        return None
    was_running = is_alive(record)
    targets = {p.pid: p for p in _marked_processes(record.marker)}
    if was_running:
        try:
            leader = psutil.Process(record.pid)
            targets[leader.pid] = leader
            targets.update({child.pid: child for child in leader.children(recursive=True)})
        except psutil.Error:
            pass
        with contextlib.suppress(OSError):
            os.killpg(record.pid, signal.SIGTERM)  # pgid == pid: started with start_new_session
    _signal_all(targets.values())
    _gone, alive = psutil.wait_procs(list(targets.values()), timeout=timeout)
    late = [p for p in _marked_processes(record.marker) if p.pid not in targets]
    leftovers = alive + late
    _signal_all(leftovers, kill=True)
    psutil.wait_procs(leftovers, timeout=5)
    if (popen := _CHILDREN.pop(record.pid, None)) is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5)
    pid_file(state_dir, name).unlink(missing_ok=True)
    return StopResult(
        name=name,
        pid=record.pid,
        was_running=was_running,
        processes=len(targets) + len(late),
        killed=len(leftovers),
    )


def stop_all(state_dir: Path, *, timeout: float = 20.0, order: Iterable[str] = ()) -> list[StopResult]:
    """Stop every recorded service in `state_dir`; names in `order` first (e.g. the scheduler first)."""
    if not state_dir.is_dir():
        return []
    names = sorted(path.stem for path in state_dir.glob("*.pid"))
    first = [name for name in order if name in names]
    results = []
    for name in first + [name for name in names if name not in first]:
        if (result := stop_service(state_dir, name, timeout=timeout)) is not None:
            results.append(result)
    return results


def tail(path: Path | str, lines: int = 30) -> str:
    """The last `lines` lines of a text file ('' if it does not exist)."""
    try:
        with Path(path).open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            data = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def wait_for_http(
    url: str,
    *,
    timeout: float,
    records: Iterable[ServiceRecord] = (),
    ready: Callable[[httpx.Response], bool] | None = None,
    what: str | None = None,
    interval: float = 1.0,
) -> httpx.Response:
    """Poll `url` until it answers 200 (and `ready(response)` holds); return that response.

    Fails fast with the log's tail if one of the `records`' processes dies, and after `timeout`
    seconds with a message naming their log files.
    """
    watched = list(records)
    label = what or url
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(timeout=5.0) as client:
        while True:
            for record in watched:
                if not is_alive(record):
                    raise ServiceStartError(
                        f"{record.name} exited during start-up; last lines of {record.log_file}:\n"
                        f"{tail(record.log_file, 25)}",
                        Path(record.log_file),
                    )
            try:
                response = client.get(url)
                if response.status_code == 200 and (ready is None or ready(response)):
                    return response
                last = f"HTTP {response.status_code}: {response.text[:300]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                logs = ", ".join(record.log_file for record in watched)
                raise ServiceStartError(
                    f"{label} was not healthy after {timeout:.0f} s at {url} (last: {last})"
                    + (f"; see {logs}" if logs else ""),
                    Path(watched[0].log_file) if watched else None,
                )
            time.sleep(interval)


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
) -> ServiceRecord:
    """Start an MLflow tracking server on 127.0.0.1:`port`.

    By default its SQLite backend and artifacts live under `layout.mlflow_dir`; the native stack
    passes a PostgreSQL `backend_store_uri` and an `s3://` `artifacts_destination` (the server then
    needs `MLFLOW_S3_ENDPOINT_URL` and AWS credentials in `env`; clients need neither).
    """
    mlflow_dir = layout.mlflow_dir.resolve()
    mlflow_dir.mkdir(parents=True, exist_ok=True)
    command = mlflow_server_command(
        backend_store_uri=backend_store_uri or f"sqlite:///{mlflow_dir / 'mlflow.db'}",
        artifacts_destination=artifacts_destination or str(mlflow_dir / "artifacts"),
        port=port,
    )
    return start_service(
        name,
        command,
        env=env,
        state_dir=layout.state_dir,
        log_file=layout.log_file(name),
        cwd=mlflow_dir,
        details={"url": f"http://{LOCALHOST}:{port}", "port": str(port)},
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


def start_airflow_components(
    layout: StackLayout,
    settings: AirflowSettings,
    env: Mapping[str, str],
    *,
    components: Iterable[str] = AIRFLOW_COMPONENTS,
) -> list[ServiceRecord]:
    """Run `airflow db migrate`, then start each component as its own service `airflow-<component>`.

    This is how a deployment runs Airflow (and what the system tests check), as opposed to
    `standalone`, which supervises all components from one process.
    """
    airflow_migrate(env, layout.log_file("airflow-db-migrate"))
    records = []
    for component in components:
        argv = airflow_command(component)
        if component == "api-server":
            argv += ["--host", LOCALHOST, "--port", str(settings.api_port), "--workers", "1"]
        records.append(
            start_service(
                f"airflow-{component}",
                argv,
                env=env,
                state_dir=layout.state_dir,
                log_file=layout.log_file(f"airflow-{component}"),
                cwd=settings.home,
                details=_airflow_details(settings),
            )
        )
    return records


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


# --------------------------------------------------------------------------------------------
# The native production-like stack
# --------------------------------------------------------------------------------------------
#
# What docker-compose.yaml runs, as local processes: Airflow's api-server, scheduler, dag-processor
# and triggerer with the CeleryExecutor (broker: Redis; metadata and Celery results: PostgreSQL),
# Celery workers, an MLflow server on PostgreSQL with its artifacts in S3, and an S3 API (moto's
# server, standing in for MinIO) holding the object store. PostgreSQL and Redis are the machine's
# own servers: each stack gets throwaway databases and a Redis database index of its own, recorded
# before they are created and released by `stop_native_stack`, also after a failed start.

DEFAULT_POSTGRES_URI = "postgresql://postgres@127.0.0.1:5432"
DEFAULT_REDIS_URI = "redis://127.0.0.1:6379"
NATIVE_COMPONENTS: tuple[str, ...] = (*AIRFLOW_COMPONENTS, "triggerer")
# Airflow records `hostname_callable()` as each task instance's hostname. The workers of a native
# stack share one machine, so each gets its Celery node name in this variable (see worker_hostname).
WORKER_NAME_VAR = "MLOPS_WORKER_NAME"
HOSTNAME_CALLABLE = "mlops_pipeline.localstack.worker_hostname"
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
_REDIS_CLAIM_KEY = "mlops-localstack:claimed-by"
_RESOURCES_FILE = "native-stack.json"
_SETTINGS_FILE = "stack.env"


def worker_hostname() -> str:
    """Airflow's `[core] hostname_callable` in the native stack: the Celery worker's name, else the FQDN.

    Set through `AIRFLOW__CORE__HOSTNAME_CALLABLE`; outside a worker (scheduler, API server) the
    variable is unset and this is Airflow's default, the machine's FQDN.
    """
    return os.environ.get(WORKER_NAME_VAR) or socket.getfqdn()


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
    raise LocalStackError(f"no empty Redis database at {redis_uri} (indexes 1..{count - 1} are all in use)")


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
    :class:`LocalStackError` lists what is left (and a later call tries again).
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
        raise LocalStackError("could not release: " + "; ".join(errors))
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
        # Loading a skops model looks every scipy ufunc up in every loaded module; Airflow's
        # deprecated-import shims (airflow.utils.timezone, ...) answer each lookup with a
        # DeprecatedImportWarning: ~1,160 log lines per model load, 40 s per scoring task on
        # 2 busy cores. Warnings raised from that one skops module are not worth a log line.
        "PYTHONWARNINGS": SKOPS_LOOKUP_WARNINGS,
    }


def _port_of(url: str) -> int:
    port = urlparse(url).port
    if port is None:
        raise LocalStackError(f"{url} names no port")
    return port


def _bucket_of(uri: str) -> str:
    bucket = urlparse(uri).netloc
    if not bucket:
        raise LocalStackError(f"{uri} names no bucket")
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
        raise LocalStackError(f"{executable} not found: `make install` installs moto[server] (dev group)")
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
    deadline = time.monotonic() + timeout
    while ready not in _log_since_start(record):
        if not is_alive(record):
            raise ServiceStartError(
                f"{record.name} exited during start-up; last lines of {record.log_file}:\n"
                f"{tail(record.log_file, 25)}",
                Path(record.log_file),
            )
        if time.monotonic() >= deadline:
            raise ServiceStartError(
                f"{record.name} was not ready after {timeout:.0f} s; see {record.log_file}",
                Path(record.log_file),
            )
        time.sleep(1.0)


@dataclass(frozen=True)
class NativeStack:
    """A running native stack: its layout, Airflow settings, settings (compose names) and workers."""

    layout: StackLayout
    airflow: AirflowSettings
    settings: dict[str, str]
    env: dict[str, str]  # every service's environment: build_env + the settings
    workers: tuple[str, ...]  # Celery node names
    concurrency: int

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
    the API server), the triggerer and the dag-processor, and last the API server, MLflow and S3.
    """
    recorded = set(names)
    workers = sorted(name for name in recorded if name.startswith("celery-worker"))
    phases = [
        ["airflow-scheduler"],
        [*workers, "airflow-triggerer", "airflow-dag-processor"],
        ["airflow-api-server", "mlflow", "s3"],
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
    timeout: float = 300.0,
) -> NativeStack:
    """Start the native production-like stack under `layout.root` and wait until every service is ready.

    Ports left as None are picked free. `extra` is added to every process's environment. On any
    failure everything started so far is stopped and the databases are dropped before the error
    propagates; otherwise :func:`stop_native_stack` does that.
    """
    if workers < 1 or concurrency < 1:
        raise LocalStackError("a native stack needs at least one worker with a concurrency of at least 1")
    if read_native_resources(layout) is not None or any(layout.state_dir.glob("*.pid")):
        raise LocalStackError(f"a stack is already recorded in {layout.root}; stop it first")
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
