"""Alerts: what one says (model, run, task, reason, links a browser opens) and how it is sent, by
Airflow's own HTTP and SMTP notifiers through connections, to a real local webhook and a real
SMTP server; a channel that fails is logged and keeps neither the task nor the other channel
from going on.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlops_pipeline import alerts
from mlops_pipeline.airflow_glue import MLOpsNotifier, dag_defaults

BASE = "http://airflow.example:8080"
LOG_URL = f"{BASE}/dags/churn__train/runs/manual__2026-03-01/tasks/evaluate?try_number=3"


def context(exception: BaseException | None = None, task_id: str = "evaluate") -> dict[str, Any]:
    return {
        "dag_run": SimpleNamespace(dag_id="churn__train", run_id="manual__2026-03-01"),
        "ti": SimpleNamespace(task_id=task_id, log_url=LOG_URL),
        "exception": exception,
    }


@pytest.fixture
def channels(monkeypatch: pytest.MonkeyPatch, alert_sink, smtp_sink, webhook_env) -> tuple[list, list]:
    """Both channels on: the webhook (alert_sink) and email (smtp_sink); what each received."""
    url, posted = alert_sink
    env, mailed = smtp_sink
    posted.clear()
    mailed.clear()
    for name, value in {**webhook_env(url), **env}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE)
    return posted, mailed


def test_an_alert_names_the_model_the_run_the_task_the_reason_and_links_to_pages() -> None:
    alert = alerts.build_alert(
        alerts.TASK_FAILED,
        "churn train: task evaluate failed",
        dag_id="churn__train",
        run_id="manual__2026-03-01T00:00:00+00:00",
        task_id="evaluate",
        reason="gate failed for churn: roc_auc 0.61 < 0.70",
        link=LOG_URL,
        base_url=BASE + "/",
    )
    assert alert.model == "churn"
    assert alert.text.splitlines() == [
        "churn train: task evaluate failed: gate failed for churn: roc_auc 0.61 < 0.70",
        "churn__train · run manual__2026-03-01T00:00:00+00:00 · evaluate",
        LOG_URL,
        f"Report: {alert.report_link}",
    ]
    # The plugin's gate report page, the run id quoted as a path segment: a link a browser opens.
    assert alert.report_link == (
        f"{BASE}/mlops/runs/churn__train/manual__2026-03-01T00%3A00%3A00%2B00%3A00/gate-report"
    )
    assert '<a href="http://airflow.example:8080/mlops/runs/' in alert.html()


def test_only_train_tasks_with_a_report_link_to_one() -> None:
    assert alerts.report_link(BASE, "churn__train", "r", "validate").endswith("/data-docs")
    assert alerts.report_link(BASE, "churn__train", "r", "register") is None
    assert alerts.report_link(BASE, "churn__score", "r", "evaluate") is None


def test_a_long_reason_is_cut_and_an_empty_one_named_by_its_type() -> None:
    assert len(alerts.reason_of(RuntimeError("x" * 5000))) == alerts.MAX_REASON
    assert alerts.reason_of(TimeoutError()) == "TimeoutError"


def test_every_dag_alerts_when_a_task_fails_for_good() -> None:
    from mlops_pipeline.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "include/models/churn.yaml")
    defaults = dag_defaults(spec, "score")["default_args"]
    notifier = defaults["on_failure_callback"]
    assert isinstance(notifier, MLOpsNotifier) and notifier.kind == alerts.TASK_FAILED


def test_a_failure_is_posted_to_the_webhook_and_emailed(channels) -> None:
    posted, mailed = channels
    MLOpsNotifier("churn train: task evaluate failed").notify(context(RuntimeError("gate failed: roc_auc")))
    (body,) = posted
    assert body["kind"] == "task_failed" and body["model"] == "churn" and body["task_id"] == "evaluate"
    assert body["reason"] == "gate failed: roc_auc"
    assert body["text"].startswith("churn train: task evaluate failed: gate failed: roc_auc")
    assert body["link"] == LOG_URL and body["report_link"].startswith(f"{BASE}/mlops/runs/churn__train/")
    (mail,) = mailed
    assert mail["Subject"] == "churn train: task evaluate failed: gate failed: roc_auc"
    assert {a.strip() for a in mail["To"].split(",")} == {"oncall@example.com", "ml-team@example.com"}
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert f'<a href="{LOG_URL}">Task in Airflow</a>' in html.replace("&amp;", "&")


def test_a_dead_webhook_is_logged_and_the_email_still_goes(channels, monkeypatch, caplog) -> None:
    posted, mailed = channels
    monkeypatch.setenv("MLOPS_ALERT_HTTP_ENDPOINT", "/gone")  # the sink answers 410
    with caplog.at_level("ERROR", logger="mlops_pipeline.alerts"):
        MLOpsNotifier("churn: retraining triggered", kind=alerts.RETRAIN_TRIGGERED).notify(context())
    assert "could not be sent by webhook" in caplog.text
    assert posted == [] and len(mailed) == 1 and "retraining triggered" in mailed[0]["Subject"]


def test_without_a_channel_the_alert_is_logged(monkeypatch, caplog) -> None:
    for name in ("MLOPS_ALERT_HTTP_CONN_ID", "MLOPS_ALERT_SMTP_CONN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLOPS_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/old")
    with caplog.at_level("WARNING", logger="mlops_pipeline.alerts"):
        MLOpsNotifier("drift in region", kind=alerts.RETRAIN_TRIGGERED).notify(context())
    assert "drift in region" in caplog.text and "churn__train" in caplog.text
    # The old setting is said to be unread, not silently ignored.
    assert "MLOPS_ALERT_WEBHOOK_URL is no longer read" in caplog.text
