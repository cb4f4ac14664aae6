"""The package's Airflow adapter: context → plain values, the store for a task, assets, schedules,
the DAG defaults every DAG kind shares, failure mapping and notifiers. (The one other Airflow-aware
module is `approval_step`, the approve task's operator and trigger, kept apart because only DAGs
of specs with `approval_required` need the Human-in-the-loop classes.)

Kept small on purpose: everything else in the package runs without Airflow, so it can be tested
and reused (CLI, benchmarks) without a scheduler. Light at import (the DAG files import it while
parsing): the step modules, pandas and MLflow are imported inside the tasks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, BaseNotifier
from airflow.sdk.exceptions import AirflowFailException

from mlops_pipeline.alerts import TASK_FAILED
from mlops_pipeline.settings import get_settings
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.steps import RunInfo, StepRejected
from mlops_pipeline.steps.conf import refuse_unknown_conf
from mlops_pipeline.store import ObjectStore, open_store, s3_client_kwargs_from_connection


def task_store() -> ObjectStore:
    """The configured object store, with S3 credentials from the Airflow connection when one is set.

    The one way tasks and the UI plugin open the store; URIs outside its root (source, input and
    label patterns) are opened from it (`ObjectStore.open_uri`), so they get the same credentials.
    """
    settings = get_settings()
    if settings.aws_conn_id and settings.store_uri.startswith("s3://"):
        from airflow.sdk import Connection

        connection = Connection.get(settings.aws_conn_id)
        kwargs = s3_client_kwargs_from_connection(
            connection.login, connection.password, connection.extra_dejson, settings.s3_endpoint_url
        )
        return open_store(settings.store_uri, kwargs)
    return open_store(settings.store_uri)


class MLOpsNotifier(BaseNotifier):
    """An alert of the pipeline (:mod:`mlops_pipeline.alerts`), sent by Airflow's HTTP and SMTP notifiers.

    `message` is templated (the task's context); a failure's reason is the task's exception. Each
    configured channel is tried on its own; a failing one is logged, never raised.
    """

    template_fields = ("message",)

    def __init__(self, message: str, kind: str = TASK_FAILED) -> None:
        super().__init__()
        self.message = message
        self.kind = kind

    def notify(self, context: Any) -> None:
        """Build the alert from the context and send it to every configured channel (else log it)."""
        import logging

        from mlops_pipeline import alerts
        from mlops_pipeline.settings import AlertSettings

        log = logging.getLogger("mlops_pipeline.alerts")
        dag_run, ti = context.get("dag_run"), context.get("ti")
        alert = alerts.build_alert(
            self.kind,
            self.message,
            dag_id=getattr(dag_run, "dag_id", None),
            run_id=getattr(dag_run, "run_id", None),
            task_id=getattr(ti, "task_id", None),
            reason=alerts.reason_of(context.get("exception")) if self.kind == TASK_FAILED else "",
            link=getattr(ti, "log_url", None),
            base_url=_airflow_base_url(),
        )
        settings = AlertSettings()
        channels = alert_channels(settings)
        if not channels:
            log.warning("MLOps alert: %s", alert.to_json())
            if settings.alert_webhook_url:
                log.error(
                    "MLOPS_ALERT_WEBHOOK_URL is no longer read: define an HTTP connection for the webhook"
                    " and set MLOPS_ALERT_HTTP_CONN_ID (and MLOPS_ALERT_HTTP_ENDPOINT); see the README, Alerts"
                )
        for channel, notifier in channels:
            try:
                notifier(alert).notify(context)
            except Exception as exc:  # any failure of a channel: logged, the task goes on
                log.error(
                    "MLOps alert could not be sent by %s: %s; alert was %s", channel, exc, alert.to_json()
                )
            else:
                log.info("MLOps alert sent by %s: %s", channel, alert.subject())


def alert_channels(settings: Any) -> list[tuple[str, Any]]:
    """The configured channels: (name, alert -> the provider's notifier that sends it)."""
    channels: list[tuple[str, Any]] = []
    if settings.alert_http_conn_id:
        from airflow.providers.http.notifications.http import HttpNotifier

        def webhook(alert: Any) -> BaseNotifier:
            return HttpNotifier(
                http_conn_id=settings.alert_http_conn_id,
                endpoint=settings.alert_http_endpoint,
                json=alert.to_json(),
                headers={"Content-Type": "application/json"},
            )

        channels.append((f"webhook (connection {settings.alert_http_conn_id})", webhook))
    if settings.alert_smtp_conn_id and settings.email_recipients():
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        def email(alert: Any) -> BaseNotifier:
            return SmtpNotifier(
                to=settings.email_recipients(),
                from_email=settings.alert_email_from,
                subject=alert.subject(),
                html_content=alert.html(),
                smtp_conn_id=settings.alert_smtp_conn_id,
            )

        channels.append((f"email (connection {settings.alert_smtp_conn_id})", email))
    return channels


def _airflow_base_url() -> str:
    from airflow.sdk.configuration import conf

    return str(conf.get("api", "base_url", fallback="http://localhost:8080/"))


START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
# Tasks talk to the store and MLflow: transient failures are retried; rejections are not.
TASK_RETRIES = 2
TASK_RETRY_DELAY = timedelta(seconds=15)


def dag_defaults(spec: ModelSpec, kind: str) -> dict[str, Any]:
    """What every DAG of a model shares: start date, no catchup, one active run, tags, owner, retries,
    and an alert for every task that fails for good."""
    return {
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": 1,
        "tags": ["mlops", kind, spec.name, *spec.tags],
        "default_args": {
            "owner": spec.owner,
            "retries": TASK_RETRIES,
            "retry_delay": TASK_RETRY_DELAY,
            # Every task that fails for good (after its retries) alerts, with its exception as the reason.
            "on_failure_callback": MLOpsNotifier(
                f"{spec.name} {kind}: task {{{{ ti.task_id }}}} failed", kind=TASK_FAILED
            ),
        },
    }


def champion_asset(model: str) -> Asset:
    """The asset that changes whenever `model`'s champion alias moves."""
    return Asset(name=f"{model}__champion", uri=f"x-mlops://models/{model}/champion", group="model")


def predictions_asset(model: str) -> Asset:
    """The asset that changes whenever a partition of `model`'s predictions is published."""
    return Asset(name=f"{model}__predictions", uri=f"x-mlops://predictions/{model}", group="predictions")


def score_schedule(spec: ModelSpec) -> Any:
    """The score DAG's schedule: the spec's cron (if any) or a new champion, whichever comes first."""
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    champion = champion_asset(spec.name)
    if spec.schedules.score is None:
        return [champion]
    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(spec.schedules.score, timezone="UTC"), assets=[champion]
    )


def promoted_as_of(context: Any) -> str | None:
    """The data day of the promotion that triggered this run (from the champion asset event), if any."""
    for events in context.get("triggering_asset_events", {}).values():
        for event in reversed(list(events)):
            if (event.extra or {}).get("as_of"):
                return str(event.extra["as_of"])
    return None


def run_info(context: Any) -> RunInfo:
    """Who started this run, and its own timestamp (never the wall clock)."""
    dag_run = context["dag_run"]
    moment = dag_run.logical_date or dag_run.run_after
    actor = getattr(dag_run, "triggering_user_name", None) or str(dag_run.run_type)
    return RunInfo(
        dag_id=dag_run.dag_id,
        dag_run_id=dag_run.run_id,
        actor=actor,
        event_time=moment.isoformat(),
        run_after=dag_run.run_after.isoformat() if dag_run.run_after else "",
    )


def resolve_as_of(context: Any, override: str | None) -> date:
    """The last day of data a run uses: the `as_of` param, else the last day of the data interval."""
    if override:
        return date.fromisoformat(override)
    interval_end = context.get("data_interval_end")
    if interval_end is None:
        interval_end = context["dag_run"].run_after
    # The interval end is exclusive: a daily run for 2026-03-01 ends at 2026-03-02T00:00.
    return (interval_end - timedelta(microseconds=1)).date()


@contextmanager
def rejections_fail_the_task() -> Iterator[None]:
    """Turn a step's rejection (bad data, failed gate) into a failed task that is not retried."""
    try:
        yield
    except StepRejected as exc:
        raise AirflowFailException(str(exc)) from exc


def strict_params(context: Any) -> dict[str, Any]:
    """The run's params, once its conf is known to hold only the params its DAG declares.

    Airflow 3.3 validates declared params at the API but accepts any other conf key (see
    `mlops_pipeline.steps.conf`), so the first task of every DAG calls this before its first side
    effect: an unknown key fails the task, not retried, with the keys named.
    """
    dag_run = context["dag_run"]
    with rejections_fail_the_task():
        refuse_unknown_conf(dag_run.conf, context["dag"].params.keys(), dag_run.dag_id)
    return dict(context["params"])
