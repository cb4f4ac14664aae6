"""Unit tests of `mlops_pipeline.devtools.demo_stack_plan`: what the demo's services should be
(the tasks' own MLflow user, MLflow behind its login, the settings fingerprint), the
reuse-or-restart decision, health from Airflow's health endpoint, and the `mlops status` table."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from mlops_pipeline.devtools import demo_stack_plan, embedded_stack, processes
from mlops_pipeline.devtools.demo_stack_plan import Decision, Health, ServiceStatus

PORTS = demo_stack_plan.StackPorts(
    airflow=8080, mlflow=5000, postgres=55432, worker_log=8793, trigger_log=8794
)


def record(**details: str) -> processes.ServiceRecord:
    return processes.ServiceRecord(
        name="airflow-scheduler",
        pid=4242,
        create_time=1.0,
        argv=("airflow", "scheduler"),
        log_file="/x.log",
        marker="m",
        started_at="2026-03-01T10:00:00+00:00",
        details=dict(details),
    )


def plan(tmp_path: Path, **overrides: object) -> demo_stack_plan.StackPlan:
    layout = embedded_stack.StackLayout(tmp_path / ".demo")
    kwargs: dict = {
        "ports": PORTS,
        "secrets": {name: f"secret-{name}" for name in demo_stack_plan.SECRET_NAMES},
        "dags_folder": tmp_path / "dags",
        "plugins_folder": tmp_path / "plugins",
        "passwords_file": layout.passwords_file,
        "base_env": {"PATH": "/usr/bin", "HOME": "/root"},
    }
    kwargs.update(overrides)
    return demo_stack_plan.plan_stack(layout, **kwargs)


# --- decisions -------------------------------------------------------------------------------


def test_only_a_live_unchanged_healthy_service_is_reused() -> None:
    ok = Health(True, "healthy")
    assert demo_stack_plan.decide(None, False, ok, "f1") == Decision("start", "not running")
    assert demo_stack_plan.decide(record(fingerprint="f1"), False, ok, "f1").action == "start"
    assert "had exited (pid 4242" in demo_stack_plan.decide(record(fingerprint="f1"), False, ok, "f1").reason
    assert demo_stack_plan.decide(record(fingerprint="f0"), True, ok, "f1") == Decision(
        "restart", "its settings changed"
    )
    sick = demo_stack_plan.decide(record(fingerprint="f1"), True, Health(False, "unhealthy"), "f1")
    assert sick == Decision("restart", "not healthy (unhealthy)")
    assert demo_stack_plan.decide(record(fingerprint="f1"), True, ok, "f1").action == "reuse"


def test_airflow_component_health_reads_the_health_endpoint() -> None:
    body = {
        "metadatabase": {"status": "healthy"},
        "scheduler": {"status": "unhealthy", "latest_scheduler_heartbeat": "2026-03-01T10:00:00"},
        "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": "2026-03-01T10:01:00"},
    }
    assert demo_stack_plan.airflow_component_health(body, "airflow-api-server") == Health(True, "healthy")
    scheduler = demo_stack_plan.airflow_component_health(body, "airflow-scheduler")
    assert scheduler == Health(False, "unhealthy, last heartbeat 2026-03-01T10:00:00")
    assert demo_stack_plan.airflow_component_health(body, "airflow-dag-processor").healthy
    assert demo_stack_plan.airflow_component_health(body, "airflow-triggerer") == Health(
        False, "not reported by the API server"
    )
    assert not demo_stack_plan.airflow_component_health(None, "airflow-scheduler").healthy


# --- plans -----------------------------------------------------------------------------------


def test_the_tasks_get_their_own_mlflow_user_and_mlflow_runs_behind_its_login(tmp_path: Path) -> None:
    stack = plan(tmp_path)
    scheduler = stack.services["airflow-scheduler"]
    assert scheduler.env["MLFLOW_TRACKING_USERNAME"] == "pipeline"
    assert scheduler.env["MLFLOW_TRACKING_PASSWORD"] == "secret-mlflow_pipeline"
    assert "secret-mlflow_admin" not in scheduler.env.values()
    assert scheduler.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        "postgresql+psycopg2://airflow:secret-airflow_db@127.0.0.1:55432/airflow"
    )
    mlflow = stack.services["mlflow"]
    assert mlflow.argv[-2:] == ("--app-name", "basic-auth")
    assert "postgresql+psycopg2://mlflow@127.0.0.1:55432/mlflow" in mlflow.argv  # password: PGPASSWORD
    assert mlflow.env["PGPASSWORD"] == "secret-mlflow_db"
    assert mlflow.env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "secret-mlflow_admin"
    assert "MLFLOW_TRACKING_PASSWORD" not in mlflow.env
    assert stack.services["postgres"].argv[-4:] == (
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
    )
    assert stack.services["airflow-api-server"].argv[-6:] == (
        "--host",
        "127.0.0.1",
        "--port",
        "8080",
        "--workers",
        "1",
    )
    assert [db.name for db in stack.databases()] == ["airflow", "mlflow", "mlflow_auth"]


def test_the_fingerprint_follows_the_stack_settings_not_the_shell(tmp_path: Path) -> None:
    first = plan(tmp_path).services["airflow-scheduler"].fingerprint
    other_shell = plan(tmp_path, base_env={"PATH": "/usr/bin", "HOME": "/root", "TERM": "xterm"})
    assert other_shell.services["airflow-scheduler"].fingerprint == first
    changed = plan(tmp_path, extra={"MLOPS_CODE_VERSION": "abc"})
    assert changed.services["airflow-scheduler"].fingerprint != first
    moved = plan(tmp_path, ports=demo_stack_plan.StackPorts(8080, 5000, 55433, 8793, 8794))
    assert moved.services["airflow-scheduler"].fingerprint != first  # a new database port
    assert moved.services["mlflow"].fingerprint != plan(tmp_path).services["mlflow"].fingerprint


# --- status ----------------------------------------------------------------------------------


def test_status_table_shows_pid_port_state_and_since() -> None:
    now = datetime(2026, 3, 1, 10, 5, tzinfo=UTC)
    live = demo_stack_plan.service_status(
        "airflow-scheduler", record(port="8793"), True, Health(True, "healthy, last heartbeat x")
    )
    dead = demo_stack_plan.service_status("postgres", record(port="55432"), False, Health(False, "refuses"))
    none = demo_stack_plan.service_status("mlflow", None, False, Health(False, "x"))
    assert live == ServiceStatus(
        "airflow-scheduler", 4242, 8793, True, True, "2026-03-01T10:00:00+00:00", "healthy, last heartbeat x"
    )
    table = demo_stack_plan.format_status([live, dead, none], now=now).splitlines()
    assert table[0].split() == ["service", "pid", "port", "state", "since", "detail"]
    assert table[1].split()[:4] == ["airflow-scheduler", "4242", "8793", "healthy"]
    assert "(5 min ago)" in table[1]
    assert table[2].split()[:4] == ["postgres", "4242", "55432", "EXITED"]
    assert table[3].split()[:4] == ["mlflow", "-", "-", "-"]
