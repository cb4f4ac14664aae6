"""What the embedded stack of `mlops demo` should be, decided without starting or writing anything.

Pure functions and small values, so that every decision :mod:`.demo_stack` acts on can be tested
without a process: the services and their start order (:data:`SERVICES`), each service's command,
environment, folder and port (:func:`plan_stack` → :class:`StackPlan`), the fingerprint of the
settings that define a service (:attr:`ServicePlan.fingerprint`: a change means a restart), whether
to reuse, start or restart a service from its record, liveness and health (:func:`decide`), a
service's health from Airflow's health endpoint (:func:`airflow_component_health`), and the lines
of `mlops status` (:func:`service_status`, :func:`format_status`). Starting, probing and stopping
the processes, and the state files (secrets, ports), are :mod:`.demo_stack`'s.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from mlops_pipeline.devtools import embedded_stack, local_postgres
from mlops_pipeline.devtools.processes import LOCALHOST, ServiceRecord

POSTGRES = "postgres"
MLFLOW = "mlflow"
AIRFLOW_PARTS: tuple[str, ...] = ("api-server", "scheduler", "dag-processor", "triggerer")
AIRFLOW_SERVICES: tuple[str, ...] = tuple(f"airflow-{part}" for part in AIRFLOW_PARTS)
SERVICES: tuple[str, ...] = (POSTGRES, MLFLOW, *AIRFLOW_SERVICES)
# What `/api/v2/monitor/health` calls each component (the API server answers for the database).
HEALTH_KEYS = {
    "airflow-api-server": "metadatabase",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag_processor",
    "airflow-triggerer": "triggerer",
}
MLFLOW_ADMIN_USER = "admin"
MLFLOW_PIPELINE_USER = "pipeline"
SECRET_NAMES: tuple[str, ...] = (
    "postgres_superuser",
    "airflow_db",
    "mlflow_db",
    "mlflow_admin",
    "mlflow_pipeline",
    "mlflow_flask_secret_key",
)
# Environment variables that define a service; a change of any of them means a restart.
_DEFINING_PREFIXES = ("AIRFLOW__", "AIRFLOW_HOME", "MLFLOW_", "MLOPS_", "PGPASSWORD", "PYTHONPYCACHEPREFIX")


@dataclass(frozen=True)
class StackPorts:
    """The ports of one embedded stack (all on 127.0.0.1; the log servers bind all interfaces)."""

    airflow: int
    mlflow: int
    postgres: int
    worker_log: int
    trigger_log: int


# --------------------------------------------------------------------------------------------
# Plans: what each service should be
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServicePlan:
    """How one service is started: command, environment, folder, recorded details, account."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    port: int
    details: Mapping[str, str] = field(default_factory=dict)
    run_as: str | None = None

    @property
    def fingerprint(self) -> str:
        """A digest of what defines the service (command and settings), recorded with it.

        A running service whose fingerprint differs is restarted. Only the variables that define
        the stack count, not the rest of the caller's shell (a new terminal restarts nothing).
        """
        defining = sorted((k, v) for k, v in self.env.items() if k.startswith(_DEFINING_PREFIXES))
        payload = json.dumps([list(self.argv), defining, self.run_as])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StackPlan:
    """Every service of the stack and what its clients need to reach it."""

    layout: embedded_stack.StackLayout
    airflow: embedded_stack.AirflowSettings
    ports: StackPorts
    secrets: Mapping[str, str]
    services: Mapping[str, ServicePlan]
    airflow_env: Mapping[str, str]

    @property
    def airflow_url(self) -> str:
        """The Airflow API server and UI."""
        return self.airflow.base_url

    @property
    def mlflow_url(self) -> str:
        """The MLflow server and UI."""
        return f"http://{LOCALHOST}:{self.ports.mlflow}"

    @property
    def mlflow_admin(self) -> tuple[str, str]:
        """The MLflow admin's name and password (people sign in with it)."""
        return MLFLOW_ADMIN_USER, self.secrets["mlflow_admin"]

    @property
    def mlflow_pipeline(self) -> tuple[str, str]:
        """The MLflow user the tasks sign in as."""
        return MLFLOW_PIPELINE_USER, self.secrets["mlflow_pipeline"]

    @property
    def postgres_data(self) -> Path:
        """PostgreSQL's data folder."""
        return self.layout.root / "postgres"

    def databases(self) -> tuple[local_postgres.Database, ...]:
        """Airflow's database, MLflow's, and the one of MLflow's users and permissions."""
        airflow = self.secrets["airflow_db"]
        mlflow = self.secrets["mlflow_db"]
        return (
            local_postgres.Database("airflow", "airflow", airflow),
            local_postgres.Database("mlflow", "mlflow", mlflow),
            local_postgres.Database("mlflow_auth", "mlflow", mlflow),
        )


def plan_stack(
    layout: embedded_stack.StackLayout,
    *,
    ports: StackPorts,
    secrets: Mapping[str, str],
    dags_folder: Path,
    plugins_folder: Path | None,
    passwords_file: Path,
    cache_dir: Path | None = None,
    extra: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
) -> StackPlan:
    """What every service of the stack in `layout` is (pure: starts and writes nothing).

    `extra` (e.g. MLOPS_CODE_VERSION) goes to the Airflow components and so to every task.
    """
    store_uri = layout.store_dir.resolve().as_uri()
    tracking_uri = f"http://{LOCALHOST}:{ports.mlflow}"
    airflow_db, mlflow_db, auth_db = (
        local_postgres.Database("airflow", "airflow", secrets["airflow_db"]),
        local_postgres.Database("mlflow", "mlflow", secrets["mlflow_db"]),
        local_postgres.Database("mlflow_auth", "mlflow", secrets["mlflow_db"]),
    )
    settings = embedded_stack.AirflowSettings(
        home=layout.airflow_home,
        api_port=ports.airflow,
        dags_folder=dags_folder,
        plugins_folder=plugins_folder,
        passwords_file=passwords_file,
        worker_log_server_port=ports.worker_log,
        trigger_log_server_port=ports.trigger_log,
        sql_alchemy_conn=local_postgres.sqlalchemy_uri(ports.postgres, airflow_db),
    )

    def env(
        extra_env: Mapping[str, str] | None = None, **kwargs: embedded_stack.AirflowSettings
    ) -> dict[str, str]:
        return embedded_stack.build_env(
            store_uri=store_uri,
            tracking_uri=tracking_uri,
            cache_dir=cache_dir,
            base=base_env,
            extra=extra_env,
            airflow=kwargs.get("airflow"),
        )

    airflow_env = env(
        {
            **(extra or {}),
            # The tasks' own MLflow user (MLflow's client reads these two variables).
            "MLFLOW_TRACKING_USERNAME": MLFLOW_PIPELINE_USER,
            "MLFLOW_TRACKING_PASSWORD": secrets["mlflow_pipeline"],
        },
        airflow=settings,
    )
    mlflow_dir = layout.mlflow_dir.resolve()
    mlflow_env = env(
        {
            # libpq's password for both of MLflow's databases; none in a URI or a file.
            "PGPASSWORD": secrets["mlflow_db"],
            "MLFLOW_AUTH_CONFIG_PATH": str(mlflow_dir / "basic_auth.ini"),
            "MLFLOW_AUTH_ADMIN_USERNAME": MLFLOW_ADMIN_USER,
            "MLFLOW_AUTH_ADMIN_PASSWORD": secrets["mlflow_admin"],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets["mlflow_flask_secret_key"],
        }
    )
    postgres_env = env()
    data_dir = (layout.root / "postgres").resolve()
    services = {
        POSTGRES: ServicePlan(
            POSTGRES,
            tuple(local_postgres.postgres_command(data_dir, ports.postgres)),
            postgres_env,
            layout.root.resolve(),
            ports.postgres,
            {"url": f"postgresql://{LOCALHOST}:{ports.postgres}"},
            run_as=local_postgres.run_as_user(),
        ),
        MLFLOW: ServicePlan(
            MLFLOW,
            tuple(
                embedded_stack.mlflow_server_command(
                    backend_store_uri=local_postgres.sqlalchemy_uri(
                        ports.postgres, mlflow_db, with_password=False
                    ),
                    artifacts_destination=str(mlflow_dir / "artifacts"),
                    port=ports.mlflow,
                    app_name=embedded_stack.MLFLOW_AUTH_APP,
                )
            ),
            mlflow_env,
            mlflow_dir,
            ports.mlflow,
            {
                "url": tracking_uri,
                "auth_database_uri": local_postgres.sqlalchemy_uri(
                    ports.postgres, auth_db, with_password=False
                ),
            },
        ),
    }
    for part in AIRFLOW_PARTS:
        name = f"airflow-{part}"
        port = {"api-server": ports.airflow, "scheduler": ports.worker_log, "triggerer": ports.trigger_log}
        services[name] = ServicePlan(
            name,
            tuple(embedded_stack.airflow_component_command(part, settings)),
            airflow_env,
            settings.home.resolve(),
            port.get(part, 0),
            {"url": settings.base_url, "home": str(settings.home.resolve()), "tracking_uri": tracking_uri},
        )
    return StackPlan(
        layout=layout,
        airflow=settings,
        ports=ports,
        secrets=dict(secrets),
        services=services,
        airflow_env=airflow_env,
    )


# --------------------------------------------------------------------------------------------
# Health and decisions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    """One probe's verdict on a service."""

    healthy: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    """What to do with one service: reuse it, start it, or stop and start it again."""

    action: Literal["reuse", "start", "restart"]
    reason: str


def decide(record: ServiceRecord | None, alive: bool, health: Health, fingerprint: str) -> Decision:
    """Reuse a service only when it is alive, started with the wanted settings, and healthy."""
    if record is None:
        return Decision("start", "not running")
    if not alive:
        return Decision("start", f"had exited (pid {record.pid}, started {record.started_at})")
    if record.details.get("fingerprint") != fingerprint:
        return Decision("restart", "its settings changed")
    if not health.healthy:
        return Decision("restart", f"not healthy ({health.detail})")
    return Decision("reuse", "healthy")


def airflow_component_health(body: object, service: str) -> Health:
    """The health of `service` from a `GET /api/v2/monitor/health` body (None: no answer)."""
    if not isinstance(body, dict):
        return Health(False, "the API server does not answer")
    entry = body.get(HEALTH_KEYS[service])
    if not isinstance(entry, dict):
        return Health(False, "not reported by the API server")
    status = entry.get("status")
    heartbeat = next((v for k, v in entry.items() if k.startswith("latest") and v), None)
    detail = f"{status}" + (f", last heartbeat {heartbeat}" if heartbeat else "")
    return Health(status == "healthy", detail)


# --------------------------------------------------------------------------------------------
# The lines of `mlops status`
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceStatus:
    """One line of `mlops status`."""

    name: str
    pid: int | None
    port: int | None
    running: bool
    healthy: bool
    since: str | None
    detail: str


def service_status(name: str, record: ServiceRecord | None, alive: bool, health: Health) -> ServiceStatus:
    """The status of one service from its record, whether it lives, and its probe."""
    if record is None:
        return ServiceStatus(name, None, None, False, False, None, "not started")
    port = int(record.details["port"]) if record.details.get("port", "").isdigit() else None
    if not alive:
        return ServiceStatus(name, record.pid, port, False, False, record.started_at, "exited")
    return ServiceStatus(name, record.pid, port, True, health.healthy, record.started_at, health.detail)


def format_status(statuses: Iterable[ServiceStatus], now: datetime | None = None) -> str:
    """A table: service, pid, port, state (healthy / UNHEALTHY / EXITED / -), since, detail."""
    now = now or datetime.now(UTC)
    rows = [("service", "pid", "port", "state", "since", "detail")]
    for status in statuses:
        state = (
            "healthy"
            if status.healthy
            else "UNHEALTHY"
            if status.running
            else "EXITED"
            if status.pid
            else "-"
        )
        since = ""
        if status.since:
            try:
                started = datetime.fromisoformat(status.since)
                since = f"{status.since} ({_ago(now - started)})"
            except ValueError:
                since = status.since
        rows.append(
            (
                status.name,
                str(status.pid or "-"),
                str(status.port or "-"),
                state,
                since or "-",
                status.detail,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)) + "  " + row[5]
        for row in rows
    ).rstrip()


def _ago(delta: object) -> str:
    seconds = int(delta.total_seconds()) if hasattr(delta, "total_seconds") else 0
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"
