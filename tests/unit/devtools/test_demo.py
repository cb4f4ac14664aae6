"""Unit tests of `mlops_pipeline.devtools.demo`: settings, credentials, waiting for a DAG, `mlops down`."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import httpx
import pytest

from mlops_pipeline.devtools import cli, demo, embedded_stack, processes
from mlops_pipeline.devtools.airflow_client import AirflowClient

RUN_ID = "manual__2026-03-01T10:00:00+00:00"


def test_dotenv_syntax_comments_export_quotes_and_inline_comments(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# a comment\n"
        "\n"
        "AIRFLOW_PORT=8181\n"
        "export MLFLOW_PORT = 5151\n"
        "AIRFLOW_ADMIN_PASSWORD='with # hash'\n"
        'AIRFLOW_VIEWER_PASSWORD="quoted"\n'
        "MLOPS_CODE_VERSION=abc123 # inline comment\n"
        "EMPTY=\n"
        "not a setting\n"
    )
    config = demo.load_demo_config({}, dotenv)
    assert (config.airflow_port, config.mlflow_port) == (8181, 5151)
    assert config.passwords == {"admin": "with # hash", "viewer": "quoted"}
    assert config.passthrough == {"MLOPS_CODE_VERSION": "abc123"}


def test_environment_beats_dotenv_and_empty_means_unset(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "AIRFLOW_PORT=8181\nMLFLOW_PORT=5151\nAIRFLOW_ADMIN_PASSWORD=from-file\nAIRFLOW_VIEWER_PASSWORD=\n"
    )
    config = demo.load_demo_config(
        {"MLFLOW_PORT": "5252", "AIRFLOW_PORT": "", "MLOPS_MODELS_DIR": "/m"}, dotenv
    )
    assert (config.airflow_port, config.mlflow_port) == (8181, 5252)
    assert config.passwords == {"admin": "from-file"}
    assert config.passthrough == {"MLOPS_MODELS_DIR": "/m"}


def test_defaults_without_dotenv(tmp_path: Path) -> None:
    config = demo.load_demo_config({}, tmp_path / "missing.env")
    assert (config.airflow_port, config.mlflow_port, config.passwords) == (8080, 5000, {})


@pytest.mark.parametrize("value", ["abc", "0", "70000", "-1"])
def test_a_bad_port_names_its_setting(value: str) -> None:
    with pytest.raises(demo.DemoError, match="AIRFLOW_PORT"):
        demo.load_demo_config({"AIRFLOW_PORT": value}, None)


def counter():
    count = iter(range(100))
    return lambda: f"generated-{next(count)}"


def test_passwords_are_generated_once_privately_and_reused(tmp_path: Path) -> None:
    path = tmp_path / ".demo" / "credentials.json"
    first = demo.resolve_credentials(path, {}, generate=counter())
    assert first.passwords == {"admin": "generated-0", "viewer": "generated-1"}
    assert first.generated == {"admin", "viewer"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == first.passwords

    second = demo.resolve_credentials(path, {}, generate=counter())
    assert second.passwords == first.passwords


def test_given_passwords_win_and_are_not_written(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    credentials = demo.resolve_credentials(path, {"admin": "mine"}, generate=counter())
    assert credentials.passwords == {"admin": "mine", "viewer": "generated-0"}
    assert credentials.generated == {"viewer"}
    assert "mine" not in path.read_text()


def test_no_file_when_every_password_is_given(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    credentials = demo.resolve_credentials(path, {"admin": "a", "viewer": "v"})
    assert not path.exists()
    assert demo.credentials_lines(credentials, tmp_path) == [
        "admin / (your AIRFLOW_ADMIN_PASSWORD)",
        "viewer / (your AIRFLOW_VIEWER_PASSWORD)",
    ]


def test_credentials_lines_show_generated_passwords_and_where_they_are(tmp_path: Path) -> None:
    credentials = demo.resolve_credentials(tmp_path / ".demo" / "credentials.json", {}, generate=counter())
    assert demo.credentials_lines(credentials, tmp_path) == [
        "admin / generated-0",
        "viewer / generated-1",
        "(generated passwords are kept in .demo/credentials.json)",
    ]


def test_wait_for_dag_fails_at_once_on_import_errors(fake_airflow) -> None:
    client = fake_airflow(
        {
            "/api/v2/importErrors": {
                "import_errors": [{"filename": "/p/dags/model_dags.py", "stack_trace": "SyntaxError: bad"}]
            },
        }
    )
    with pytest.raises(demo.DemoError, match=r"(?s)do not import.*model_dags.py.*SyntaxError: bad"):
        demo.wait_for_dag(client, "churn__train", timeout=60, log_hint="x")


def test_wait_for_dag_unpauses_a_paused_dag(capsys) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if request.url.path == "/api/v2/importErrors":
            return httpx.Response(200, json={"import_errors": []})
        paused = request.method == "GET"
        return httpx.Response(200, json={"dag_id": "churn__train", "is_paused": paused, "fileloc": "/p/x.py"})

    client = AirflowClient("http://airflow", "t", transport=httpx.MockTransport(handler))
    demo.wait_for_dag(client, "churn__train", timeout=5, log_hint="x")
    assert calls == ["GET", "GET", "PATCH"]
    assert "churn__train: unpaused" in capsys.readouterr().out


def test_down_without_a_demo_says_so(tmp_path: Path, capsys) -> None:
    assert cli.main(["down", "--project-dir", str(tmp_path)]) == 0
    assert "nothing to stop" in capsys.readouterr().out


def test_down_stops_what_demo_recorded(tmp_path: Path, capsys) -> None:
    layout = embedded_stack.StackLayout(tmp_path / ".demo")
    record = processes.start_service(
        "mlflow",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env=dict(os.environ),
        state_dir=layout.state_dir,
        log_file=layout.log_file("mlflow"),
    )
    try:
        assert cli.main(["down", "--project-dir", str(tmp_path)]) == 0
    finally:
        processes.stop_all(layout.state_dir, timeout=2)
    assert f"stopped mlflow (pid {record.pid})" in capsys.readouterr().out
    assert not processes.is_alive(record)
