"""Unit tests of `mlops_pipeline.localstack` with real processes: tiny `python` services started,
checked and stopped through PID records, real sockets for the port checks, and the machine's own
PostgreSQL and Redis servers for the native stack's throwaway databases."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from mlops_pipeline import localstack


@pytest.fixture
def layout(tmp_path: Path):
    stack = localstack.StackLayout(tmp_path / "stack")
    yield stack
    localstack.stop_all(stack.state_dir, timeout=5)  # never leave a process behind, even on failure


def http_server(layout: localstack.StackLayout, name: str = "web") -> tuple[localstack.ServiceRecord, int]:
    port = localstack.find_free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", localstack.LOCALHOST]
    record = localstack.start_service(
        name,
        argv,
        env=dict(os.environ),
        state_dir=layout.state_dir,
        log_file=layout.log_file(name),
        cwd=layout.root,
        details={"url": f"http://{localstack.LOCALHOST}:{port}"},
    )
    return record, port


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# --- environment ------------------------------------------------------------------------------


def test_build_env_scrubs_inherited_settings_and_sets_the_stack_s_own() -> None:
    base = {
        "PATH": f"/usr/bin{os.pathsep}{localstack.venv_bin()}",
        "HOME": "/home/someone",
        "AIRFLOW_HOME": "/tmp/conftest-home",
        "AIRFLOW__CORE__DAGS_FOLDER": "/elsewhere",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////tmp/other.db",
        "MLOPS_STORE_URI": "file:///wrong",
        "MLOPS_MODELS_DIR": "/wrong/models",
        "MLFLOW_TRACKING_URI": "http://wrong",
        "PYTHONDONTWRITEBYTECODE": "1",
        localstack.MARKER_VAR: "someone-else",
    }
    env = localstack.build_env(store_uri="file:///store", tracking_uri="http://127.0.0.1:5555", base=base)

    assert env["HOME"] == "/home/someone"
    assert not any(key.startswith("AIRFLOW") for key in env)
    assert "MLOPS_MODELS_DIR" not in env
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert localstack.MARKER_VAR not in env
    assert env["MLOPS_STORE_URI"] == "file:///store"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5555"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    # The venv's bin comes first, once.
    path = env["PATH"].split(os.pathsep)
    assert path[0] == str(localstack.venv_bin())
    assert path.count(str(localstack.venv_bin())) == 1


def test_build_env_configures_airflow_on_localhost_with_its_ports(tmp_path: Path) -> None:
    settings = localstack.AirflowSettings(
        home=tmp_path / "home",
        api_port=18080,
        dags_folder=tmp_path / "dags",
        plugins_folder=tmp_path / "plugins",
        passwords_file=tmp_path / "passwords.json",
        worker_log_server_port=18793,
        trigger_log_server_port=18794,
    )
    env = localstack.build_env(
        store_uri="file:///s",
        tracking_uri="http://t",
        airflow=settings,
        cache_dir=tmp_path / "pyc",
        extra={"AIRFLOW__CORE__PARALLELISM": "2"},
        base={"PATH": "/usr/bin", "AIRFLOW__API__HOST": "0.0.0.0"},
    )

    assert env["AIRFLOW_HOME"] == str((tmp_path / "home").resolve())
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__PORT"] == "18080"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18080"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "18793"
    assert env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] == "18794"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    assert (
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{(tmp_path / 'home').resolve()}/airflow.db"
    )
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin,viewer:viewer"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"].endswith("passwords.json")
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str((tmp_path / "plugins").resolve())
    assert env["AIRFLOW__CORE__PARALLELISM"] == "2"  # `extra` wins
    assert env["PYTHONPYCACHEPREFIX"] == str((tmp_path / "pyc").resolve())


def test_mlflow_command_binds_localhost_with_one_worker() -> None:
    argv = localstack.mlflow_server_command(
        backend_store_uri="sqlite:////x/m.db", artifacts_destination="/x/a", port=5111
    )
    assert argv[0] == str(localstack.venv_bin() / "mlflow")
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "5111"
    assert argv[argv.index("--workers") + 1] == "1"
    assert argv[argv.index("--x-frame-options") + 1] == "NONE"


def test_passwords_file_is_private(tmp_path: Path) -> None:
    path = localstack.write_passwords_file(tmp_path / "a" / "pw.json", {"admin": "s3cret"})
    assert json.loads(path.read_text()) == {"admin": "s3cret"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_generated_passwords_differ() -> None:
    passwords = {localstack.generate_password() for _ in range(20)}
    assert len(passwords) == 20
    assert all(len(p) == 16 for p in passwords)


# --- ports ------------------------------------------------------------------------------------


def test_port_in_use_is_refused_naming_owner_and_setting() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((localstack.LOCALHOST, 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not localstack.is_port_free(port)
        with pytest.raises(localstack.PortInUseError) as excinfo:
            localstack.ensure_port_free(port, "the Airflow API server", "AIRFLOW_PORT")
    message = str(excinfo.value)
    assert f"port {port}" in message
    assert "AIRFLOW_PORT" in message
    assert f"pid {os.getpid()}" in message
    assert localstack.is_port_free(port)
    localstack.ensure_port_free(port, "x", "X_PORT")  # free again: no error


def test_port_bound_on_all_interfaces_counts_as_taken() -> None:
    # Airflow's log servers bind 0.0.0.0; that blocks 127.0.0.1 too.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        assert not localstack.is_port_free(sock.getsockname()[1])


def test_find_free_port_skips_excluded_ports() -> None:
    first = localstack.find_free_port()
    assert localstack.find_free_port(exclude=[first]) != first


# --- processes --------------------------------------------------------------------------------


def test_start_wait_and_stop_a_service(layout: localstack.StackLayout) -> None:
    record, port = http_server(layout)
    pid_path = localstack.pid_file(layout.state_dir, "web")
    assert stat.S_IMODE(pid_path.stat().st_mode) == 0o600
    assert localstack.read_record(layout.state_dir, "web") == record
    assert localstack.is_alive(record)

    response = localstack.wait_for_http(record.details["url"], timeout=20, records=[record])
    assert response.status_code == 200
    assert localstack.running_service(layout.state_dir, "web") == record
    assert not localstack.is_port_free(port)

    results = localstack.stop_all(layout.state_dir, timeout=5)
    assert [(r.name, r.pid, r.was_running, r.killed) for r in results] == [("web", record.pid, True, 0)]
    assert not psutil.pid_exists(record.pid)
    assert not pid_path.exists()
    assert localstack.running_service(layout.state_dir, "web") is None
    assert "starting web" in Path(record.log_file).read_text()


def test_a_second_copy_is_refused_while_the_first_runs(layout: localstack.StackLayout) -> None:
    record, _ = http_server(layout)
    with pytest.raises(localstack.LocalStackError, match=f"already running \\(pid {record.pid}\\)"):
        http_server(layout)


def test_stop_reaches_children_that_left_the_process_group(
    layout: localstack.StackLayout, tmp_path: Path
) -> None:
    # Like Airflow's task processes: a grandchild in a session of its own, out of the group's reach.
    child_pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)\n"
        f"open({str(child_pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n"
    )
    record = localstack.start_service(
        "parent",
        [sys.executable, "-c", script],
        env=dict(os.environ),
        state_dir=layout.state_dir,
        log_file=layout.log_file("parent"),
    )
    wait_until(lambda: child_pid_file.exists() and child_pid_file.read_text())
    child = psutil.Process(int(child_pid_file.read_text()))
    assert os.getpgid(child.pid) != os.getpgid(record.pid)

    result = localstack.stop_service(layout.state_dir, "parent", timeout=5)

    assert result is not None and result.processes == 2
    wait_until(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE)
    assert not psutil.pid_exists(record.pid)


def test_stop_also_sweeps_leftovers_of_a_service_whose_leader_died(
    layout: localstack.StackLayout, tmp_path: Path
) -> None:
    child_pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)\n"
        f"open({str(child_pid_file)!r}, 'w').write(str(child.pid))\n"
    )
    record = localstack.start_service(
        "leader",
        [sys.executable, "-c", script],
        env=dict(os.environ),
        state_dir=layout.state_dir,
        log_file=layout.log_file("leader"),
    )
    wait_until(lambda: not localstack.is_alive(record))
    wait_until(lambda: child_pid_file.exists() and child_pid_file.read_text())
    child = psutil.Process(int(child_pid_file.read_text()))

    result = localstack.stop_service(layout.state_dir, "leader", timeout=5)

    assert result is not None and not result.was_running and result.processes == 1
    wait_until(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE)


def test_a_reused_pid_is_not_ours_and_is_left_alone(layout: localstack.StackLayout) -> None:
    # A record whose PID now belongs to another process (here: this test) with another start time.
    me = psutil.Process()
    stale = localstack.ServiceRecord(
        name="old",
        pid=me.pid,
        create_time=me.create_time() - 3600,
        argv=("something", "long", "gone"),
        log_file="/nonexistent.log",
        marker="no-process-has-this-marker",
        started_at="2026-01-01T00:00:00+00:00",
    )
    layout.state_dir.mkdir(parents=True)
    localstack.pid_file(layout.state_dir, "old").write_text(json.dumps(stale.__dict__))

    assert localstack.read_record(layout.state_dir, "old") == stale
    assert not localstack.is_alive(stale)
    assert localstack.running_service(layout.state_dir, "old") is None

    result = localstack.stop_service(layout.state_dir, "old", timeout=1)

    assert result is not None and not result.was_running and result.processes == 0
    assert me.is_running()  # we are still here
    assert not localstack.pid_file(layout.state_dir, "old").exists()


def test_unreadable_records_are_cleaned_up(layout: localstack.StackLayout) -> None:
    layout.state_dir.mkdir(parents=True)
    localstack.pid_file(layout.state_dir, "broken").write_text("{not json")
    assert localstack.read_record(layout.state_dir, "broken") is None
    assert localstack.stop_all(layout.state_dir) == []
    assert not localstack.pid_file(layout.state_dir, "broken").exists()


def test_stop_all_without_state_is_a_no_op(tmp_path: Path) -> None:
    assert localstack.stop_all(tmp_path / "nothing-here") == []


def test_stop_all_stops_named_services_first(layout: localstack.StackLayout) -> None:
    http_server(layout, "a-first-alphabetically")
    http_server(layout, "z-but-first-in-order")
    results = localstack.stop_all(layout.state_dir, timeout=5, order=["z-but-first-in-order", "not-recorded"])
    assert [r.name for r in results] == ["z-but-first-in-order", "a-first-alphabetically"]


def test_waiting_fails_fast_with_the_log_when_the_service_dies(layout: localstack.StackLayout) -> None:
    record = localstack.start_service(
        "crash",
        [sys.executable, "-c", "import sys; print('config is broken', flush=True); sys.exit(3)"],
        env=dict(os.environ),
        state_dir=layout.state_dir,
        log_file=layout.log_file("crash"),
    )
    started = time.monotonic()
    with pytest.raises(localstack.ServiceStartError, match="config is broken") as excinfo:
        localstack.wait_for_http(
            f"http://127.0.0.1:{localstack.find_free_port()}", timeout=30, records=[record]
        )
    assert time.monotonic() - started < 10
    assert excinfo.value.log_file == Path(record.log_file)


def test_waiting_times_out_naming_the_url() -> None:
    url = f"http://127.0.0.1:{localstack.find_free_port()}/health"
    with pytest.raises(localstack.ServiceStartError, match="not healthy after 1 s") as excinfo:
        localstack.wait_for_http(url, timeout=1, interval=0.2, what="Thing")
    assert url in str(excinfo.value)


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    assert localstack.tail(path, 2) == "line 98\nline 99"
    assert localstack.tail(tmp_path / "missing.log") == ""


@pytest.mark.parametrize(
    ("body", "healthy"),
    [
        ({"metadatabase": {"status": "healthy"}, "scheduler": {"status": "healthy"}}, True),
        ({"metadatabase": {"status": "healthy"}, "scheduler": {"status": "unhealthy"}}, False),
        ({"metadatabase": {"status": "healthy"}}, False),
        (["not", "a", "dict"], False),
    ],
)
def test_airflow_health(body, healthy: bool) -> None:
    response = httpx.Response(200, json=body)
    assert localstack.airflow_is_healthy(response) is healthy


def test_layout_keeps_everything_under_its_root(tmp_path: Path) -> None:
    layout = localstack.StackLayout(tmp_path)
    for path in (layout.airflow_home, layout.mlflow_dir, layout.logs_dir, layout.state_dir, layout.store_dir):
        assert path.parent == tmp_path
    assert layout.passwords_file.parent == layout.airflow_home
    assert layout.log_file("mlflow") == tmp_path / "logs" / "mlflow.log"


# --- the native stack's share of the machine's PostgreSQL and Redis servers (real servers) ----


@pytest.fixture
def db_prefix() -> Iterator[str]:
    """A database name prefix of this test's own; whatever it left is dropped afterwards."""
    import uuid

    prefix = f"mlops_unit_{uuid.uuid4().hex[:8]}"
    yield prefix
    for name in localstack.list_databases(localstack.DEFAULT_POSTGRES_URI, prefix):
        localstack.drop_database(localstack.DEFAULT_POSTGRES_URI, name)


def test_throwaway_databases_are_created_listed_and_dropped_even_while_in_use(db_prefix: str) -> None:
    import psycopg2

    uri = localstack.DEFAULT_POSTGRES_URI
    localstack.create_database(uri, f"{db_prefix}_airflow")
    localstack.create_database(uri, f"{db_prefix}_mlflow")
    assert localstack.list_databases(uri, db_prefix) == [f"{db_prefix}_airflow", f"{db_prefix}_mlflow"]

    in_use = psycopg2.connect(f"{uri}/{db_prefix}_airflow", connect_timeout=10)
    try:
        localstack.drop_database(uri, f"{db_prefix}_airflow")  # WITH (FORCE): a client does not block it
    finally:
        in_use.close()
    localstack.drop_database(uri, f"{db_prefix}_never_created")  # IF EXISTS
    assert localstack.list_databases(uri, db_prefix) == [f"{db_prefix}_mlflow"]


def test_a_redis_database_is_claimed_empty_kept_apart_and_released_only_by_its_owner() -> None:
    import redis

    uri = localstack.DEFAULT_REDIS_URI
    first = localstack.claim_redis_db(uri, "stack-a")
    second = localstack.claim_redis_db(uri, "stack-b")
    try:
        assert first != second and 0 not in (first, second)
        client = redis.Redis.from_url(f"{uri}/{first}")
        client.set("celery-task", "x")
        assert not localstack.release_redis_db(uri, first, "stack-b"), "not stack-b's to flush"
        assert client.get("celery-task") == b"x"
        assert localstack.release_redis_db(uri, first, "stack-a")
        assert client.dbsize() == 0
    finally:
        localstack.release_redis_db(uri, first, "stack-a")
        localstack.release_redis_db(uri, second, "stack-b")


def test_native_resources_are_released_once_and_the_record_removed(
    layout: localstack.StackLayout, db_prefix: str
) -> None:
    uri = localstack.DEFAULT_POSTGRES_URI
    localstack.create_database(uri, f"{db_prefix}_airflow")
    index = localstack.claim_redis_db(localstack.DEFAULT_REDIS_URI, "stack-c")
    resources = localstack.NativeResources(
        token="stack-c",
        postgres_uri=uri,
        databases=(f"{db_prefix}_airflow",),
        redis_uri=localstack.DEFAULT_REDIS_URI,
        redis_db=index,
    )
    localstack._write_resources(layout, resources)
    assert localstack.read_native_resources(layout) == resources

    released = localstack.release_native_resources(layout)
    assert released == [f"database {db_prefix}_airflow", f"redis database {index}"]
    assert localstack.list_databases(uri, db_prefix) == []
    assert localstack.read_native_resources(layout) is None
    assert localstack.release_native_resources(layout) == []


def test_worker_hostname_is_the_worker_s_name_else_the_fqdn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(localstack.WORKER_NAME_VAR, "worker2@host")
    assert localstack.worker_hostname() == "worker2@host"
    monkeypatch.delenv(localstack.WORKER_NAME_VAR)
    assert localstack.worker_hostname() == socket.getfqdn()
    assert localstack.celery_worker_name(3) == f"worker3@{socket.gethostname()}"
