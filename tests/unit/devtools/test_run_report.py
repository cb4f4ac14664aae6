"""Unit tests of `mlops_pipeline.devtools.run_report`: what the demo prints about a finished run."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_pipeline.devtools import demo, run_report
from mlops_pipeline.devtools.airflow_client import DagRun, TaskInstance

RUN_ID = "manual__2026-03-01T10:00:00+00:00"
LOGIN = ["admin / a", "viewer / v", "(generated passwords are kept in .demo/credentials.json)"]


def test_a_corrupt_credentials_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text("{oops")
    with pytest.raises(demo.DemoError, match="delete it"):
        demo.resolve_credentials(path, {})


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.4, "59s"), (60, "1m00s"), (185, "3m05s")])
def test_format_duration(seconds: float, text: str) -> None:
    assert run_report.format_duration(seconds) == text


def test_format_task_change() -> None:
    assert (
        run_report.format_task_change(12, TaskInstance("validate", -1, "running", 1))
        == "     12s  validate     running"
    )
    assert run_report.format_task_change(75, TaskInstance("score", 2, "failed", 3)).endswith(
        "score[2]     failed (try 3)"
    )


def test_success_report_names_champion_gate_data_docs_uis_and_how_to_stop() -> None:
    report = run_report.RunReport(
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
    text = run_report.format_report(report, "http://127.0.0.1:8080", "http://127.0.0.1:5000", LOGIN)
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
    report = run_report.RunReport(
        "churn__train", RUN_ID, "success", 50, "1", gate={"passed": True, "champion_version": None}
    )
    assert "first model" in run_report.format_report(report, "http://a", "http://m", LOGIN)


def test_failure_report_lists_failed_tasks_with_log_file_and_errors() -> None:
    report = run_report.RunReport(
        dag_id="churn__train",
        run_id=RUN_ID,
        state="failed",
        duration_s=20,
        failed_tasks=(
            run_report.FailedTask(
                "validate", "failed", "/demo/airflow/logs/x/attempt=1.log", "error Task failed\n    Boom"
            ),
        ),
    )
    text = run_report.format_report(report, "http://a", "http://m", LOGIN)
    assert "FAILED after 20s" in text
    assert "champion" not in text and "gate report" not in text
    assert "Task validate: failed" in text
    assert "log file: /demo/airflow/logs/x/attempt=1.log" in text
    assert "      Boom" in text


def test_task_log_file_follows_airflow_s_layout(tmp_path: Path) -> None:
    ti = TaskInstance("validate", -1, "failed", 2)
    expected = tmp_path / "logs" / "dag_id=d" / f"run_id={RUN_ID}" / "task_id=validate" / "attempt=2.log"
    assert run_report.task_log_file(tmp_path, "d", RUN_ID, ti) is None
    expected.parent.mkdir(parents=True)
    expected.write_text("log")
    assert run_report.task_log_file(tmp_path, "d", RUN_ID, ti) == expected


def test_failed_tasks_prefer_the_failed_one_and_its_error_lines(tmp_path: Path, fake_airflow) -> None:
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
    [failed] = run_report.failed_tasks(client, run, tmp_path)
    assert (failed.label, failed.state, failed.log_file) == ("validate", "failed", None)
    assert failed.errors == "t1 error Task failed with exception\n    StepRejected: 40% bad rows"
