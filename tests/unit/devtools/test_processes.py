"""Unit tests of `mlops_pipeline.devtools.processes` with real processes: tiny `python` services started,
checked and stopped through PID records, and real sockets for the port checks."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path

import psutil
import pytest

from mlops_pipeline.devtools import embedded_stack, processes


def http_server(layout: embedded_stack.StackLayout, name: str = "web") -> tuple[processes.ServiceRecord, int]:
    port = processes.find_free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", processes.LOCALHOST]
    record = processes.start_service(
        name,
        argv,
        env=dict(os.environ),
        state_dir=layout.state_dir,
        log_file=layout.log_file(name),
        cwd=layout.root,
        details={"url": f"http://{processes.LOCALHOST}:{port}"},
    )
    return record, port


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_passwords_file_is_private(tmp_path: Path) -> None:
    path = processes.write_passwords_file(tmp_path / "a" / "pw.json", {"admin": "s3cret"})
    assert json.loads(path.read_text()) == {"admin": "s3cret"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_generated_passwords_differ() -> None:
    passwords = {processes.generate_password() for _ in range(20)}
    assert len(passwords) == 20
    assert all(len(p) == 16 for p in passwords)


def test_port_in_use_is_refused_naming_owner_and_setting() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((processes.LOCALHOST, 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not processes.is_port_free(port)
        with pytest.raises(processes.PortInUseError) as excinfo:
            processes.ensure_port_free(port, "the Airflow API server", "AIRFLOW_PORT")
    message = str(excinfo.value)
    assert f"port {port}" in message
    assert "AIRFLOW_PORT" in message
    assert f"pid {os.getpid()}" in message
    assert processes.is_port_free(port)
    processes.ensure_port_free(port, "x", "X_PORT")  # free again: no error


def test_port_bound_on_all_interfaces_counts_as_taken() -> None:
    # Airflow's log servers bind 0.0.0.0; that blocks 127.0.0.1 too.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        assert not processes.is_port_free(sock.getsockname()[1])


def test_find_free_port_skips_excluded_ports() -> None:
    first = processes.find_free_port()
    assert processes.find_free_port(exclude=[first]) != first


def test_start_wait_and_stop_a_service(layout: embedded_stack.StackLayout) -> None:
    record, port = http_server(layout)
    pid_path = processes.pid_file(layout.state_dir, "web")
    assert stat.S_IMODE(pid_path.stat().st_mode) == 0o600
    assert processes.read_record(layout.state_dir, "web") == record
    assert processes.is_alive(record)

    response = processes.wait_for_http(record.details["url"], timeout=20, records=[record])
    assert response.status_code == 200
    assert processes.running_service(layout.state_dir, "web") == record
    assert not processes.is_port_free(port)

    results = processes.stop_all(layout.state_dir, timeout=5)
    assert [(r.name, r.pid, r.was_running, r.killed) for r in results] == [("web", record.pid, True, 0)]
    assert not psutil.pid_exists(record.pid)
    assert not pid_path.exists()
    assert processes.running_service(layout.state_dir, "web") is None
    assert "starting web" in Path(record.log_file).read_text()


def test_a_second_copy_is_refused_while_the_first_runs(layout: embedded_stack.StackLayout) -> None:
    record, _ = http_server(layout)
    with pytest.raises(processes.StackError, match=f"already running \\(pid {record.pid}\\)"):
        http_server(layout)


def test_stop_reaches_children_that_left_the_process_group(
    layout: embedded_stack.StackLayout, tmp_path: Path
) -> None:
    # Like Airflow's task processes: a grandchild in a session of its own, out of the group's reach.
    child_pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)\n"
        f"open({str(child_pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n"
    )
    record = processes.start_service(
        "parent",
        [sys.executable, "-c", script],
        env=dict(os.environ),
        state_dir=layout.state_dir,
        log_file=layout.log_file("parent"),
    )
    wait_until(lambda: child_pid_file.exists() and child_pid_file.read_text())
    child = psutil.Process(int(child_pid_file.read_text()))
    assert os.getpgid(child.pid) != os.getpgid(record.pid)

    result = processes.stop_service(layout.state_dir, "parent", timeout=5)

    assert result is not None and result.processes == 2
    wait_until(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE)
    assert not psutil.pid_exists(record.pid)


def test_stop_also_sweeps_leftovers_of_a_service_whose_leader_died(
    layout: embedded_stack.StackLayout, tmp_path: Path
) -> None:
    child_pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)\n"
        f"open({str(child_pid_file)!r}, 'w').write(str(child.pid))\n"
    )
    record = processes.start_service(
        "leader",
        [sys.executable, "-c", script],
        env=dict(os.environ),
        state_dir=layout.state_dir,
        log_file=layout.log_file("leader"),
    )
    wait_until(lambda: not processes.is_alive(record))
    wait_until(lambda: child_pid_file.exists() and child_pid_file.read_text())
    child = psutil.Process(int(child_pid_file.read_text()))

    result = processes.stop_service(layout.state_dir, "leader", timeout=5)

    assert result is not None and not result.was_running and result.processes == 1
    wait_until(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE)


def test_a_reused_pid_is_not_ours_and_is_left_alone(layout: embedded_stack.StackLayout) -> None:
    # A record whose PID now belongs to another process (here: this test) with another start time.
    me = psutil.Process()
    stale = processes.ServiceRecord(
        name="old",
        pid=me.pid,
        create_time=me.create_time() - 3600,
        argv=("something", "long", "gone"),
        log_file="/nonexistent.log",
        marker="no-process-has-this-marker",
        started_at="2026-01-01T00:00:00+00:00",
    )
    layout.state_dir.mkdir(parents=True)
    processes.pid_file(layout.state_dir, "old").write_text(json.dumps(stale.__dict__))

    assert processes.read_record(layout.state_dir, "old") == stale
    assert not processes.is_alive(stale)
    assert processes.running_service(layout.state_dir, "old") is None

    result = processes.stop_service(layout.state_dir, "old", timeout=1)

    assert result is not None and not result.was_running and result.processes == 0
    assert me.is_running()  # we are still here
    assert not processes.pid_file(layout.state_dir, "old").exists()


def test_unreadable_records_are_cleaned_up(layout: embedded_stack.StackLayout) -> None:
    layout.state_dir.mkdir(parents=True)
    processes.pid_file(layout.state_dir, "broken").write_text("{not json")
    assert processes.read_record(layout.state_dir, "broken") is None
    assert processes.stop_all(layout.state_dir) == []
    assert not processes.pid_file(layout.state_dir, "broken").exists()


def test_stop_all_without_state_is_a_no_op(tmp_path: Path) -> None:
    assert processes.stop_all(tmp_path / "nothing-here") == []


def test_stop_all_stops_named_services_first(layout: embedded_stack.StackLayout) -> None:
    http_server(layout, "a-first-alphabetically")
    http_server(layout, "z-but-first-in-order")
    results = processes.stop_all(layout.state_dir, timeout=5, order=["z-but-first-in-order", "not-recorded"])
    assert [r.name for r in results] == ["z-but-first-in-order", "a-first-alphabetically"]


def test_waiting_fails_fast_with_the_log_when_the_service_dies(layout: embedded_stack.StackLayout) -> None:
    record = processes.start_service(
        "crash",
        [sys.executable, "-c", "import sys; print('config is broken', flush=True); sys.exit(3)"],
        env=dict(os.environ),
        state_dir=layout.state_dir,
        log_file=layout.log_file("crash"),
    )
    started = time.monotonic()
    with pytest.raises(processes.ServiceStartError, match="config is broken") as excinfo:
        processes.wait_for_http(
            f"http://127.0.0.1:{processes.find_free_port()}", timeout=30, records=[record]
        )
    assert time.monotonic() - started < 10
    assert excinfo.value.log_file == Path(record.log_file)


def test_waiting_times_out_naming_the_url() -> None:
    url = f"http://127.0.0.1:{processes.find_free_port()}/health"
    with pytest.raises(processes.ServiceStartError, match="not healthy after 1 s") as excinfo:
        processes.wait_for_http(url, timeout=1, interval=0.2, what="Thing")
    assert url in str(excinfo.value)


def test_waiting_until_ready_fails_fast_when_the_service_dies(layout: embedded_stack.StackLayout) -> None:
    record = processes.start_service(
        "crash",
        [sys.executable, "-c", "import sys; print('no broker', flush=True); sys.exit(3)"],
        env=dict(os.environ),
        state_dir=layout.state_dir,
        log_file=layout.log_file("crash"),
    )
    started = time.monotonic()
    with pytest.raises(processes.ServiceStartError, match="crash exited during start-up") as excinfo:
        processes.wait_until(record, lambda: False, timeout=30, what="crash", interval=0.1)
    assert time.monotonic() - started < 10
    assert "no broker" in str(excinfo.value)


def test_waiting_until_ready_returns_once_ready_and_times_out_naming_what(
    layout: embedded_stack.StackLayout,
) -> None:
    record = processes.start_service(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(30)"],
        env=dict(os.environ),
        state_dir=layout.state_dir,
        log_file=layout.log_file("sleeper"),
    )
    try:
        answers = iter([False, False, True])
        processes.wait_until(record, lambda: next(answers), timeout=10, what="sleeper", interval=0)
        with pytest.raises(processes.ServiceStartError, match="sleeper on port 1 was not ready after 0 s"):
            processes.wait_until(record, lambda: False, timeout=0, what="sleeper on port 1")
    finally:
        processes.stop_service(layout.state_dir, "sleeper", timeout=5)


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    assert processes.tail(path, 2) == "line 98\nline 99"
    assert processes.tail(tmp_path / "missing.log") == ""


def test_stopping_an_exited_service_stops_what_it_left_in_its_group(tmp_path: Path) -> None:
    # The child has no marker in its environment (as when a process title overwrites it): only
    # its process group ties it to the service that died.
    state = tmp_path / "run"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], env={})\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    record = processes.start_service(
        "leaky",
        [sys.executable, "-c", script],
        env=dict(os.environ),
        state_dir=state,
        log_file=tmp_path / "leaky.log",
    )
    log = tmp_path / "leaky.log"
    deadline = time.monotonic() + 20
    while not (lines := log.read_text().strip().splitlines()) or not lines[-1].isdigit():
        assert time.monotonic() < deadline, "the service never started its child"
        time.sleep(0.1)
    orphan = psutil.Process(int(lines[-1]))
    os.kill(record.pid, signal.SIGKILL)
    psutil.wait_procs([psutil.Process(record.pid)], timeout=5)

    result = processes.stop_service(state, "leaky", timeout=5)

    assert result is not None and not result.was_running and result.processes >= 1
    orphan.wait(timeout=5)
    assert not orphan.is_running()
