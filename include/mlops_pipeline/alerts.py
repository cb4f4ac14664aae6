"""What an alert says, and where it goes: one :class:`Alert` per event, sent through Airflow's notifiers.

Events that alert: a task of any DAG that failed for good (after its retries, with the reason:
bad data, a refused gate, a server that stayed down), a candidate that waits for approval, a
retraining and a rollback triggered by the monitor. Each alert names the model, the DAG run, the
task and the reason, and links to pages a browser opens: the task instance in the Airflow UI and,
where there is one, the plugin's page of the run's report (never an `s3://` or `file://` URI).

Channels (:class:`mlops_pipeline.settings.AlertSettings`), each configured by an Airflow
connection and sent by that provider's notifier, so credentials, TLS and retries are Airflow's:

- webhook: ``MLOPS_ALERT_HTTP_CONN_ID`` (an HTTP connection) and ``MLOPS_ALERT_HTTP_ENDPOINT``,
  the alert POSTed as JSON (``text`` first, as chat webhooks expect) by the HTTP provider's
  ``HttpNotifier``;
- email: ``MLOPS_ALERT_SMTP_CONN_ID`` and ``MLOPS_ALERT_EMAIL_TO`` by the SMTP provider's
  ``SmtpNotifier``.

With neither, an alert is logged as a warning. A channel that fails is logged, never raised: an
alert must not fail the task it reports on, nor keep the other channel from sending.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass
from urllib.parse import quote

# The kinds of alert (the DAG files name them through mlops_pipeline.airflow_glue).
TASK_FAILED, APPROVAL_WAITING = "task_failed", "approval_waiting"
RETRAIN_TRIGGERED, ROLLBACK_TRIGGERED = "retrain_triggered", "rollback_triggered"
# A task's exception can be long (a gate report's every failure): enough to read the cause.
MAX_REASON = 2000
PLUGIN_PREFIX = "/mlops"


@dataclass(frozen=True)
class Alert:
    """One event an operator should hear about (sent as JSON by the webhook, as the email's body)."""

    text: str  # one paragraph, what a chat message shows
    kind: str
    model: str | None
    dag_id: str | None
    run_id: str | None
    task_id: str | None
    reason: str
    link: str | None  # the task instance in the Airflow UI
    report_link: str | None  # the plugin's page of the run's report, when there is one

    def to_json(self) -> dict[str, str | None]:
        """The webhook's body."""
        return asdict(self)

    def subject(self) -> str:
        """The email's subject: the first line of the text, short."""
        first = self.text.splitlines()[0] if self.text else self.kind
        return first if len(first) <= 150 else first[:147] + "..."

    def html(self) -> str:
        """The email's body: the text and each link as a link."""
        links = [
            (label, url)
            for label, url in (("Task in Airflow", self.link), ("Report", self.report_link))
            if url
        ]
        items = "".join(f'<li><a href="{html.escape(url)}">{label}</a></li>' for label, url in links)
        return f"<p>{html.escape(self.text)}</p>" + (f"<ul>{items}</ul>" if items else "")


def model_of(dag_id: str | None) -> str | None:
    """The model a DAG belongs to: every DAG id of the pipeline is ``<model>__<kind>``."""
    return dag_id.split("__", 1)[0] if dag_id and "__" in dag_id else None


def report_link(base_url: str, dag_id: str | None, run_id: str | None, task_id: str | None) -> str | None:
    """The plugin's page of the report the failed task wrote or checked, if it has one."""
    if not (dag_id and run_id and dag_id.endswith("__train")):
        return None
    page = {"validate": "data-docs", "evaluate": "gate-report"}.get(task_id or "")
    if page is None:
        return None
    return f"{base_url.rstrip('/')}{PLUGIN_PREFIX}/runs/{quote(dag_id)}/{quote(run_id, safe='')}/{page}"


def reason_of(exception: BaseException | str | None) -> str:
    """A failure's reason as an operator reads it: the exception's message, else its type."""
    if exception is None:
        return ""
    text = str(exception).strip() or type(exception).__name__
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def build_alert(
    kind: str,
    message: str,
    *,
    dag_id: str | None,
    run_id: str | None,
    task_id: str | None,
    reason: str,
    link: str | None,
    base_url: str,
) -> Alert:
    """The alert of one event: the rendered `message`, the reason, the run's identity and the links (pure).

    The text reads on its own in a chat message: what happened, why, which run, where to look.
    """
    report = report_link(base_url, dag_id, run_id, task_id) if kind == TASK_FAILED else None
    lines = [message if not reason or reason in message else f"{message}: {reason}"]
    lines.append(" · ".join(part for part in (dag_id, f"run {run_id}" if run_id else None, task_id) if part))
    lines += [url for url in (link, f"Report: {report}" if report else None) if url]
    return Alert(
        text="\n".join(line for line in lines if line),
        kind=kind,
        model=model_of(dag_id),
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        reason=reason,
        link=link,
        report_link=report,
    )
