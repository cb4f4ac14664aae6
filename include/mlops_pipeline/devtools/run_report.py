"""What the demo prints about a finished run: its tasks, the failed ones with their logs, the gate and the scoring.
The demo's runs are named here (the demo starts them, this module reports on them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

from mlops_pipeline.devtools.airflow_client import (
    FAILED_TASK_STATES,
    AirflowApiError,
    AirflowClient,
    AirflowNotFoundError,
    DagRun,
    TaskInstance,
)

# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

DEMO_MODEL = "churn"
DEMO_DAG = f"{DEMO_MODEL}__train"
# The first training window ends before the defective export (2026-03-10) and the drift (2026-04).
DEMO_CONF: dict[str, object] = {"as_of": "2026-02-28"}
# Then the champion scores the next day's customers (four input files: four mapped tasks).
SCORE_DAG = f"{DEMO_MODEL}__score"
SCORE_CONF: dict[str, object] = {"ds": "2026-03-01"}


def format_duration(seconds: float) -> str:
    """`42s` or `3m05s`."""
    whole = round(seconds)
    return f"{whole}s" if whole < 60 else f"{whole // 60}m{whole % 60:02d}s"


def format_task_change(elapsed: float, ti: TaskInstance) -> str:
    """One progress line: time since the trigger, task, its new state (and the try when retried)."""
    retry = f" (try {ti.try_number})" if ti.try_number > 1 else ""
    return f"  {format_duration(elapsed):>6}  {ti.label:<12} {ti.state}{retry}"


@dataclass(frozen=True)
class FailedTask:
    """A task that failed: its state, its log file and the log's error lines."""

    label: str
    state: str
    log_file: str | None
    errors: str


@dataclass(frozen=True)
class RunReport:
    """What a finished run produced, for the closing summary."""

    dag_id: str
    run_id: str
    state: str
    duration_s: float
    champion_version: str | None = None
    gate: Mapping[str, object] | None = None  # the `evaluate` task's return value
    data_docs_uri: str | None = None
    failed_tasks: tuple[FailedTask, ...] = ()


def _gate_line(gate: Mapping[str, object]) -> str:
    verdict = "passed" if gate.get("passed") else "failed"
    against = gate.get("champion_version")
    if against:
        return f"{verdict}, compared with champion version {against} on the same holdout"
    return f"{verdict} (first model: absolute floors only, no champion to compare with)"


def _failed_task_lines(failed: Sequence[FailedTask]) -> list[str]:
    lines: list[str] = []
    for task in failed:
        lines += [
            "",
            f"Task {task.label}: {task.state}",
            f"  log file: {task.log_file or 'not found (see the UI)'}",
        ]
        lines += [f"  {line}" for line in task.errors.splitlines()]
    return lines


def format_score_report(
    run_id: str,
    state: str,
    duration_s: float,
    published: Mapping[str, object] | None,
    failed: Sequence[FailedTask] = (),
) -> str:
    """What the scoring run published (the partition, its rows, the model version), or why it failed."""
    lines = ["", f"Run {run_id} of {SCORE_DAG}: {state.upper()} after {format_duration(duration_s)}"]
    if published:
        lines += [
            f"  predictions:  {published.get('rows')} rows for ds={published.get('ds')} scored by "
            f"version {published.get('model_version')} ({published.get('quarantined_rows')} quarantined)",
            f"  manifest:     {published.get('manifest_uri')}",
        ]
    return "\n".join(lines + _failed_task_lines(failed))


def format_report(
    report: RunReport, airflow_url: str, mlflow_url: str, login: Sequence[str], mlflow_login: str = ""
) -> str:
    """The closing summary: outcome, champion, gate report, Data Docs, failing tasks, UIs and logins."""
    run_url = f"{airflow_url}/dags/{report.dag_id}/runs/{quote(report.run_id, safe='')}"
    lines = [
        "",
        f"Run {report.run_id} of {report.dag_id}: {report.state.upper()} after {format_duration(report.duration_s)}",
        f"  in the UI:    {run_url}",
    ]
    if report.state == "success":
        champion = (
            f"{DEMO_MODEL} version {report.champion_version}  "
            f"({mlflow_url}/#/models/{DEMO_MODEL}/versions/{report.champion_version})"
            if report.champion_version
            else f"none: model {DEMO_MODEL!r} has no `champion` alias"
        )
        lines.append(f"  champion:     {champion}")
    if report.gate:
        lines.append(f"  gate:         {_gate_line(report.gate)}")
        lines.append(f"  gate report:  {report.gate.get('report_html_uri')}")
    elif report.state == "success":
        lines.append("  gate report:  not recorded (no return value of task `evaluate`)")
    if report.gate or report.data_docs_uri:
        pages = f"{airflow_url}/mlops/runs/{report.dag_id}/{quote(report.run_id, safe='')}"
        lines.append(f"  in a browser: {pages}/gate-report  and  {pages}/data-docs  (Airflow login)")
    if report.data_docs_uri:
        lines.append(f"  data docs:    {report.data_docs_uri}")
    elif report.state == "success":
        lines.append("  data docs:    not recorded (no return value of task `validate`)")
    lines += _failed_task_lines(report.failed_tasks)
    lines += [
        "",
        f"Airflow UI:  {airflow_url}   login: " + "; ".join(login[:2]),
        *(f"             {line}" for line in login[2:]),
        f"MLflow UI:   {mlflow_url}" + (f"   login: {mlflow_login}" if mlflow_login else ""),
        "make down to stop (everything stays in .demo/ for the next `make demo`; `make clean` deletes it).",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def champion_version(mlflow_url: str, model: str, auth: tuple[str, str] | None = None) -> str | None:
    """The version the `champion` alias of `model` points at (MLflow REST API); None if there is none.

    `auth` is a (user, password) for an MLflow server behind its basic-auth app.
    """
    response = httpx.get(
        f"{mlflow_url}/api/2.0/mlflow/registered-models/alias",
        params={"name": model, "alias": "champion"},
        auth=auth,
        timeout=30,
    )
    if response.status_code == 404:  # RESOURCE_DOES_NOT_EXIST: no such model, or no such alias
        return None
    response.raise_for_status()
    return str(response.json()["model_version"]["version"])


def return_value(client: AirflowClient, run: DagRun, task_id: str) -> dict[str, object] | None:
    try:
        value = client.get_xcom(run.dag_id, run.run_id, task_id)
    except AirflowNotFoundError:
        return None
    return value if isinstance(value, dict) else None


def task_log_file(airflow_home: Path, dag_id: str, run_id: str, ti: TaskInstance) -> Path | None:
    """The try's log file under `<airflow_home>/logs` (Airflow's default layout), None if it is not there."""
    task_dir = airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={ti.task_id}"
    if ti.map_index >= 0:
        task_dir = task_dir / f"map_index={ti.map_index}"
    path = task_dir / f"attempt={max(ti.try_number, 1)}.log"
    return path if path.is_file() else None


def failed_tasks(client: AirflowClient, run: DagRun, airflow_home: Path, lines: int = 20) -> list[FailedTask]:
    """The run's failed tasks (those merely upstream_failed only if nothing else failed) with their errors.

    The errors are the log's error lines (with the exception chain) from the REST API; without
    any, its last `lines` lines.
    """
    tis = [ti for ti in client.list_task_instances(run.dag_id, run.run_id) if ti.state in FAILED_TASK_STATES]
    result = []
    for ti in [ti for ti in tis if ti.state == "failed"] or tis:
        path = task_log_file(airflow_home, run.dag_id, run.run_id, ti)
        try_number = max(ti.try_number, 1)
        try:
            text = client.get_task_log(
                run.dag_id,
                run.run_id,
                ti.task_id,
                try_number,
                map_index=ti.map_index,
                levels={"error", "critical"},
            )
            if not text:
                full = client.get_task_log(
                    run.dag_id, run.run_id, ti.task_id, try_number, map_index=ti.map_index
                )
                text = "\n".join(full.splitlines()[-lines:])
        except AirflowApiError as exc:
            text = f"(log not available through the API: {exc.detail})"
        result.append(FailedTask(ti.label, str(ti.state), str(path) if path else None, text))
    return result


def run_report(
    client: AirflowClient,
    run: DagRun,
    duration: float,
    mlflow_url: str,
    airflow_home: Path,
    mlflow_auth: tuple[str, str] | None = None,
) -> RunReport:
    """Collect what a finished run produced: champion, gate result, Data Docs, failures."""
    validated = return_value(client, run, "validate") or {}
    succeeded = run.state == "success"
    return RunReport(
        dag_id=run.dag_id,
        run_id=run.run_id,
        state=run.state,
        duration_s=duration,
        champion_version=champion_version(mlflow_url, DEMO_MODEL, mlflow_auth) if succeeded else None,
        gate=return_value(client, run, "evaluate"),
        data_docs_uri=str(validated["data_docs_uri"]) if validated.get("data_docs_uri") else None,
        failed_tasks=() if succeeded else tuple(failed_tasks(client, run, airflow_home)),
    )
