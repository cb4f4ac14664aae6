"""Unit tests of the `mlops` CLI's own logic: settings and credentials, output, failure reports,
and `down`. Starting the real stack is covered by `make demo` and tests/system/."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import httpx
import pytest

from mlops_pipeline import cli, localstack
from mlops_pipeline.airflow_client import AirflowClient, DagRun, TaskInstance

RUN_ID = "manual__2026-03-01T10:00:00+00:00"


# --- settings ---------------------------------------------------------------------------------


def test_parse_dotenv() -> None:
    text = (
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
    assert cli.parse_dotenv(text) == {
        "AIRFLOW_PORT": "8181",
        "MLFLOW_PORT": "5151",
        "AIRFLOW_ADMIN_PASSWORD": "with # hash",
        "AIRFLOW_VIEWER_PASSWORD": "quoted",
        "MLOPS_CODE_VERSION": "abc123",
        "EMPTY": "",
    }


def test_environment_beats_dotenv_and_empty_means_unset(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "AIRFLOW_PORT=8181\nMLFLOW_PORT=5151\nAIRFLOW_ADMIN_PASSWORD=from-file\nAIRFLOW_VIEWER_PASSWORD=\n"
    )
    config = cli.load_demo_config(
        {"MLFLOW_PORT": "5252", "AIRFLOW_PORT": "", "MLOPS_MODELS_DIR": "/m"}, dotenv
    )
    assert (config.airflow_port, config.mlflow_port) == (8181, 5252)
    assert config.passwords == {"admin": "from-file"}
    assert config.passthrough == {"MLOPS_MODELS_DIR": "/m"}


def test_defaults_without_dotenv(tmp_path: Path) -> None:
    config = cli.load_demo_config({}, tmp_path / "missing.env")
    assert (config.airflow_port, config.mlflow_port, config.passwords) == (8080, 5000, {})


@pytest.mark.parametrize("value", ["abc", "0", "70000", "-1"])
def test_a_bad_port_names_its_setting(value: str) -> None:
    with pytest.raises(cli.DemoError, match="AIRFLOW_PORT"):
        cli.load_demo_config({"AIRFLOW_PORT": value}, None)


# --- credentials ------------------------------------------------------------------------------


def counter():
    count = iter(range(100))
    return lambda: f"generated-{next(count)}"


def test_passwords_are_generated_once_privately_and_reused(tmp_path: Path) -> None:
    path = tmp_path / ".demo" / "credentials.json"
    first = cli.resolve_credentials(path, {}, generate=counter())
    assert first.passwords == {"admin": "generated-0", "viewer": "generated-1"}
    assert first.generated == {"admin", "viewer"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == first.passwords

    second = cli.resolve_credentials(path, {}, generate=counter())
    assert second.passwords == first.passwords


def test_given_passwords_win_and_are_not_written(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    credentials = cli.resolve_credentials(path, {"admin": "mine"}, generate=counter())
    assert credentials.passwords == {"admin": "mine", "viewer": "generated-0"}
    assert credentials.generated == {"viewer"}
    assert "mine" not in path.read_text()


def test_no_file_when_every_password_is_given(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    credentials = cli.resolve_credentials(path, {"admin": "a", "viewer": "v"})
    assert not path.exists()
    assert cli.credentials_lines(credentials, tmp_path) == [
        "admin / (your AIRFLOW_ADMIN_PASSWORD)",
        "viewer / (your AIRFLOW_VIEWER_PASSWORD)",
    ]


def test_a_corrupt_credentials_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text("{oops")
    with pytest.raises(cli.DemoError, match="delete it"):
        cli.resolve_credentials(path, {})


def test_credentials_lines_show_generated_passwords_and_where_they_are(tmp_path: Path) -> None:
    credentials = cli.resolve_credentials(tmp_path / ".demo" / "credentials.json", {}, generate=counter())
    assert cli.credentials_lines(credentials, tmp_path) == [
        "admin / generated-0",
        "viewer / generated-1",
        "(generated passwords are kept in .demo/credentials.json)",
    ]


# --- output -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.4, "59s"), (60, "1m00s"), (185, "3m05s")])
def test_format_duration(seconds: float, text: str) -> None:
    assert cli.format_duration(seconds) == text


def test_format_task_change() -> None:
    assert (
        cli.format_task_change(12, TaskInstance("validate", -1, "running", 1))
        == "     12s  validate     running"
    )
    assert cli.format_task_change(75, TaskInstance("score", 2, "failed", 3)).endswith(
        "score[2]     failed (try 3)"
    )


LOGIN = ["admin / a", "viewer / v", "(generated passwords are kept in .demo/credentials.json)"]


def test_success_report_names_champion_gate_data_docs_uis_and_how_to_stop() -> None:
    report = cli.RunReport(
        dag_id="churn__train",
        run_id=RUN_ID,
        state="success",
        duration_s=95,
        champion_version="2",
        gate={
            "passed": True,
            "champion_version": "1",
            "report_html_uri": "file:///s/reports/gate_report.html",
        },
        data_docs_uri="file:///s/validation/data_docs/index.html",
    )
    text = cli.format_report(report, "http://127.0.0.1:8080", "http://127.0.0.1:5000", LOGIN)
    assert "SUCCESS after 1m35s" in text
    assert "http://127.0.0.1:8080/dags/churn__train/runs/manual__2026-03-01T10%3A00%3A00%2B00%3A00" in text
    assert "champion:     churn version 2  (http://127.0.0.1:5000/#/models/churn/versions/2)" in text
    assert "gate:         passed, compared with champion version 1 on the same holdout" in text
    assert "gate report:  file:///s/reports/gate_report.html" in text
    assert "data docs:    file:///s/validation/data_docs/index.html" in text
    assert "Airflow UI:  http://127.0.0.1:8080   login: admin / a; viewer / v" in text
    assert "MLflow UI:   http://127.0.0.1:5000" in text
    assert "make down to stop" in text


def test_first_model_report_says_there_was_no_champion_to_compare() -> None:
    report = cli.RunReport(
        "churn__train", RUN_ID, "success", 50, "1", gate={"passed": True, "champion_version": None}
    )
    assert "first model" in cli.format_report(report, "http://a", "http://m", LOGIN)


def test_failure_report_lists_failed_tasks_with_log_file_and_errors() -> None:
    report = cli.RunReport(
        dag_id="churn__train",
        run_id=RUN_ID,
        state="failed",
        duration_s=20,
        failed_tasks=(
            cli.FailedTask(
                "validate", "failed", "/demo/airflow/logs/x/attempt=1.log", "error Task failed\n    Boom"
            ),
        ),
    )
    text = cli.format_report(report, "http://a", "http://m", LOGIN)
    assert "FAILED after 20s" in text
    assert "champion" not in text and "gate report" not in text
    assert "Task validate: failed" in text
    assert "log file: /demo/airflow/logs/x/attempt=1.log" in text
    assert "      Boom" in text


def test_task_log_file_follows_airflow_s_layout(tmp_path: Path) -> None:
    ti = TaskInstance("validate", -1, "failed", 2)
    expected = tmp_path / "logs" / "dag_id=d" / f"run_id={RUN_ID}" / "task_id=validate" / "attempt=2.log"
    assert cli.task_log_file(tmp_path, "d", RUN_ID, ti) is None
    expected.parent.mkdir(parents=True)
    expected.write_text("log")
    assert cli.task_log_file(tmp_path, "d", RUN_ID, ti) == expected


def fake_airflow(routes: dict[str, object]) -> AirflowClient:
    """A client whose server answers each path (prefix match, longest first) with the given JSON."""

    def handler(request: httpx.Request) -> httpx.Response:
        for prefix in sorted(routes, key=len, reverse=True):
            if request.url.path.startswith(prefix):
                body = routes[prefix]
                return body if isinstance(body, httpx.Response) else httpx.Response(200, json=body)
        return httpx.Response(404, json={"detail": "not found"})

    return AirflowClient("http://airflow", "token", transport=httpx.MockTransport(handler))


def test_failed_tasks_prefer_the_failed_one_and_its_error_lines(tmp_path: Path) -> None:
    base = f"/api/v2/dags/d/dagRuns/{RUN_ID}/taskInstances"
    client = fake_airflow(
        {
            base: {
                "task_instances": [
                    {"task_id": "ingest", "map_index": -1, "state": "success", "try_number": 1},
                    {"task_id": "validate", "map_index": -1, "state": "failed", "try_number": 1},
                    {"task_id": "train", "map_index": -1, "state": "upstream_failed", "try_number": 0},
                ]
            },
            f"{base}/validate/logs/1": {
                "content": [
                    {"timestamp": "t0", "level": "info", "event": "starting"},
                    {
                        "timestamp": "t1",
                        "level": "error",
                        "event": "Task failed with exception",
                        "error_detail": [
                            {"exc_type": "StepRejected", "exc_value": "40% bad rows", "frames": []}
                        ],
                    },
                ]
            },
        }
    )
    run = DagRun("d", RUN_ID, "failed", {}, None, None)
    [failed] = cli.failed_tasks(client, run, tmp_path)
    assert (failed.label, failed.state, failed.log_file) == ("validate", "failed", None)
    assert failed.errors == "t1 error Task failed with exception\n    StepRejected: 40% bad rows"


def test_wait_for_dag_fails_at_once_on_import_errors() -> None:
    client = fake_airflow(
        {
            "/api/v2/importErrors": {
                "import_errors": [{"filename": "/p/dags/model_dags.py", "stack_trace": "SyntaxError: bad"}]
            },
        }
    )
    with pytest.raises(cli.DemoError, match="(?s)do not import.*model_dags.py.*SyntaxError: bad"):
        cli.wait_for_dag(client, "churn__train", timeout=60, log_hint="x")


def test_wait_for_dag_unpauses_a_paused_dag(capsys) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if request.url.path == "/api/v2/importErrors":
            return httpx.Response(200, json={"import_errors": []})
        paused = request.method == "GET"
        return httpx.Response(200, json={"dag_id": "churn__train", "is_paused": paused, "fileloc": "/p/x.py"})

    client = AirflowClient("http://airflow", "t", transport=httpx.MockTransport(handler))
    cli.wait_for_dag(client, "churn__train", timeout=5, log_hint="x")
    assert calls == ["GET", "GET", "PATCH"]
    assert "churn__train: unpaused" in capsys.readouterr().out


# --- commands ---------------------------------------------------------------------------------


def test_down_without_a_demo_says_so(tmp_path: Path, capsys) -> None:
    assert cli.main(["down", "--project-dir", str(tmp_path)]) == 0
    assert "nothing to stop" in capsys.readouterr().out


def test_down_stops_what_demo_recorded(tmp_path: Path, capsys) -> None:
    layout = localstack.StackLayout(tmp_path / ".demo")
    record = localstack.start_service(
        "mlflow",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env=dict(os.environ),
        state_dir=layout.state_dir,
        log_file=layout.log_file("mlflow"),
    )
    try:
        assert cli.main(["down", "--project-dir", str(tmp_path)]) == 0
    finally:
        localstack.stop_all(layout.state_dir, timeout=2)
    assert f"stopped mlflow (pid {record.pid})" in capsys.readouterr().out
    assert not localstack.is_alive(record)


def test_conf_must_be_a_json_object() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["demo", "--conf", '{"as_of": "2026-03-10"}']).conf == {"as_of": "2026-03-10"}
    for bad in ("[1]", "{not json"):
        with pytest.raises(SystemExit):
            parser.parse_args(["demo", "--conf", bad])


@pytest.mark.slow
def test_example_data_command_writes_the_store(tmp_path: Path, capsys) -> None:
    assert cli.main(["example-data", "--store", (tmp_path / "store").as_uri()]) == 0
    assert (tmp_path / "store" / "landing" / "churn" / "ds=2026-02-28" / "batch.csv").is_file()
    assert "96000 churn rows" in capsys.readouterr().out
    # The demo's own check sees it as already there and does not rewrite it.
    assert cli.ensure_example_data(tmp_path / "store").startswith("example data: already in")
