"""Unit tests of `mlops_pipeline.devtools.embedded_stack`: the stack's environment, commands, health and layout."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from mlops_pipeline.devtools import embedded_stack, processes


def test_build_env_scrubs_inherited_settings_and_sets_the_stack_s_own() -> None:
    base = {
        "PATH": f"/usr/bin{os.pathsep}{processes.venv_bin()}",
        "HOME": "/home/someone",
        "AIRFLOW_HOME": "/tmp/conftest-home",
        "AIRFLOW__CORE__DAGS_FOLDER": "/elsewhere",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////tmp/other.db",
        "MLOPS_STORE_URI": "file:///wrong",
        "MLOPS_MODELS_DIR": "/wrong/models",
        "MLFLOW_TRACKING_URI": "http://wrong",
        "PYTHONDONTWRITEBYTECODE": "1",
        processes.MARKER_VAR: "someone-else",
    }
    env = embedded_stack.build_env(store_uri="file:///store", tracking_uri="http://127.0.0.1:5555", base=base)

    assert env["HOME"] == "/home/someone"
    assert not any(key.startswith("AIRFLOW") for key in env)
    assert "MLOPS_MODELS_DIR" not in env
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert processes.MARKER_VAR not in env
    assert env["MLOPS_STORE_URI"] == "file:///store"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5555"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    # The venv's bin comes first, once.
    path = env["PATH"].split(os.pathsep)
    assert path[0] == str(processes.venv_bin())
    assert path.count(str(processes.venv_bin())) == 1


def test_build_env_configures_airflow_on_localhost_with_its_ports(tmp_path: Path) -> None:
    settings = embedded_stack.AirflowSettings(
        home=tmp_path / "home",
        api_port=18080,
        dags_folder=tmp_path / "dags",
        plugins_folder=tmp_path / "plugins",
        passwords_file=tmp_path / "passwords.json",
        worker_log_server_port=18793,
        trigger_log_server_port=18794,
    )
    env = embedded_stack.build_env(
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
    argv = embedded_stack.mlflow_server_command(
        backend_store_uri="sqlite:////x/m.db", artifacts_destination="/x/a", port=5111
    )
    assert argv[0] == str(processes.venv_bin() / "mlflow")
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "5111"
    assert argv[argv.index("--workers") + 1] == "1"
    assert argv[argv.index("--x-frame-options") + 1] == "NONE"


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
    assert embedded_stack.airflow_is_healthy(response) is healthy


def test_layout_keeps_everything_under_its_root(tmp_path: Path) -> None:
    layout = embedded_stack.StackLayout(tmp_path)
    for path in (layout.airflow_home, layout.mlflow_dir, layout.logs_dir, layout.state_dir, layout.store_dir):
        assert path.parent == tmp_path
    assert layout.passwords_file.parent == layout.airflow_home
    assert layout.log_file("mlflow") == tmp_path / "logs" / "mlflow.log"
