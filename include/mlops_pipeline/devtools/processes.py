"""Background processes on 127.0.0.1, tracked by PID records: start, find, wait for and stop them.

Each service runs in its own session with its output in a log file, and is recorded in
``<state_dir>/<name>.pid`` (JSON: pid, process start time, command, log file). The start time
guards against PID reuse. Every process we start carries a marker variable that its children
inherit; stopping signals the process group, every descendant and every process still carrying
the marker (Airflow's task processes leave the group), waits, then kills what is left.

The stacks built from these (:mod:`.embedded_stack`: ``mlops demo``, the e2e and system tests;
:mod:`.native_stack`: ``mlops stack up``) only say which processes to start with which settings.
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

import httpx
import psutil

LOCALHOST = "127.0.0.1"
# Every process we start, and every child inheriting its environment, carries this variable.
MARKER_VAR = "MLOPS_DEVTOOLS_SERVICE"


class StackError(RuntimeError):
    """A local service could not be started, reached or stopped; the message says what to do."""


class PortInUseError(StackError):
    """A port we need is taken by a process that is not one of ours."""


class ServiceStartError(StackError):
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
    raise StackError("could not find a free port after 50 tries")


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


def account_kwargs(user: str | None) -> dict[str, Any]:
    """Popen arguments that run a child as account `user` (None: as ourselves)."""
    if user is None:
        return {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


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
    run_as: str | None = None,
) -> ServiceRecord:
    """Start `argv` in the background in a new session, output appended to `log_file`, and record it.

    Refuses to start a second copy while the recorded one is alive. `run_as` names another account
    to run it as (we must be root), e.g. for PostgreSQL, which refuses to run as root.
    """
    if (existing := running_service(state_dir, name)) is not None:
        raise StackError(f"{name} is already running (pid {existing.pid}); stop it first")
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
            **account_kwargs(run_as),
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


def _group_members(record: ServiceRecord) -> list[psutil.Process]:
    """Processes still in the service's process group (pgid == its pid, as started with a new session).

    Finds what outlives a killed service even when the marker cannot be read: Airflow's
    serve-logs and LocalExecutor workers set their process title, which overwrites the memory
    /proc/<pid>/environ shows. Only processes started after the service count (PID reuse).
    """
    found = []
    for process in psutil.process_iter():
        try:
            if (
                os.getpgid(process.pid) == record.pid
                and process.create_time() >= record.create_time - 1.0
                and process.status() != psutil.STATUS_ZOMBIE  # e.g. the dead leader, not yet reaped
            ):
                found.append(process)
        except (psutil.Error, OSError):
            continue
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
    targets = {p.pid: p for p in [*_marked_processes(record.marker), *_group_members(record)]}
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


def start_failure(record: ServiceRecord) -> ServiceStartError:
    """The error for a service that exited while starting: its log's last lines."""
    return ServiceStartError(
        f"{record.name} exited during start-up; last lines of {record.log_file}:\n{tail(record.log_file, 25)}",
        Path(record.log_file),
    )


def wait_until(
    record: ServiceRecord, ready: Callable[[], bool], *, timeout: float, what: str, interval: float = 1.0
) -> None:
    """Poll `ready()` until it holds; fail fast if `record`'s process dies (:func:`start_failure`),
    and after `timeout` seconds with a message naming `what` and the log file."""
    deadline = time.monotonic() + timeout
    while not ready():
        if not is_alive(record):
            raise start_failure(record)
        if time.monotonic() >= deadline:
            raise ServiceStartError(
                f"{what} was not ready after {timeout:.0f} s; see {record.log_file}", Path(record.log_file)
            )
        time.sleep(interval)


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
                    raise start_failure(record)
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
