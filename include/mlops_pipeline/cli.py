"""The `mlops` command: the embedded demo stack (`demo`, `down`) and the example data (`example-data`).

`mlops demo` (run by `make demo`) starts an MLflow server and `airflow standalone` on 127.0.0.1
in the background, with all their state under `<project>/.demo/`, writes the example data into
the file store `.demo/store`, triggers `churn__train` through Airflow's REST API (as any other
client would) and reports where to look. Services that a previous `mlops demo` started are
reused, so a second call just triggers another run. `mlops down` stops what `demo` started, by
the PIDs it recorded.

`mlops stack up` (run by `make stack`) starts the production-like stack of docker-compose.yaml as
local processes instead (CeleryExecutor with two workers on this machine's PostgreSQL and Redis,
MLflow on PostgreSQL, an S3 API server holding the store), state in `<project>/.demo/stack/`;
`mlops stack down` stops it and drops its throwaway databases.

Settings come from the environment, then `<project>/.env`: `AIRFLOW_PORT`, `MLFLOW_PORT`,
`AIRFLOW_ADMIN_PASSWORD`, `AIRFLOW_VIEWER_PASSWORD` (see `.env.example`). Passwords that are not
set are generated once into `.demo/credentials.json` (mode 600).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx

from mlops_pipeline import localstack
from mlops_pipeline.airflow_client import (
    FAILED_TASK_STATES,
    AirflowApiError,
    AirflowClient,
    AirflowNotFoundError,
    DagRun,
    DagRunTimeoutError,
    TaskInstance,
)

DEMO_MODEL = "churn"
DEMO_DAG = f"{DEMO_MODEL}__train"
# The first training window ends before the defective export (2026-03-10) and the drift (2026-04).
DEMO_CONF: dict[str, object] = {"as_of": "2026-02-28"}
# Then the champion scores the next day's customers (four input files: four mapped tasks).
SCORE_DAG = f"{DEMO_MODEL}__score"
SCORE_CONF: dict[str, object] = {"ds": "2026-03-01"}
USERS = ("admin", "viewer")
PASSWORD_SETTINGS = {"admin": "AIRFLOW_ADMIN_PASSWORD", "viewer": "AIRFLOW_VIEWER_PASSWORD"}
DEFAULT_AIRFLOW_PORT = 8080
DEFAULT_MLFLOW_PORT = 5000
# Settings passed through from the environment / .env to the tasks when set.
PASSTHROUGH_SETTINGS = ("MLOPS_CODE_VERSION", "MLOPS_MODELS_DIR")

EXIT_OK, EXIT_RUN_FAILED, EXIT_SETUP_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 130


class DemoError(RuntimeError):
    """The demo could not be set up; the message says what to change."""


def say(message: str = "") -> None:
    """Print one line of progress at once (the demo runs for minutes)."""
    print(message, flush=True)


# --------------------------------------------------------------------------------------------
# Configuration and credentials
# --------------------------------------------------------------------------------------------


def default_project_dir() -> Path:
    """The project checkout: where this package lives (installed editable from include/), else the cwd."""
    candidate = Path(__file__).resolve().parents[2]
    if (candidate / "dags").is_dir() and (candidate / "pyproject.toml").is_file():
        return candidate
    return Path.cwd()


def parse_dotenv(text: str) -> dict[str, str]:
    """`KEY=value` lines of a .env file; comments, blank lines and an `export ` prefix allowed, quotes stripped."""
    values = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key.strip()] = value
    return values


@dataclass(frozen=True)
class DemoConfig:
    """What the user can set for the demo; empty values count as unset."""

    airflow_port: int
    mlflow_port: int
    passwords: dict[str, str]  # only the passwords the user set
    passthrough: dict[str, str] = field(default_factory=dict)


def _port(values: Mapping[str, str], name: str, default: int) -> int:
    raw = values.get(name) or str(default)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise DemoError(f"{name}={raw!r} is not a port number (1-65535)")
    return int(raw)


def load_demo_config(environ: Mapping[str, str], dotenv_file: Path | None) -> DemoConfig:
    """The demo's settings: the environment first, then the .env file."""
    values = (
        parse_dotenv(dotenv_file.read_text()) if dotenv_file is not None and dotenv_file.is_file() else {}
    )
    values.update({key: value for key, value in environ.items() if value})
    return DemoConfig(
        airflow_port=_port(values, "AIRFLOW_PORT", DEFAULT_AIRFLOW_PORT),
        mlflow_port=_port(values, "MLFLOW_PORT", DEFAULT_MLFLOW_PORT),
        passwords={user: values[name] for user, name in PASSWORD_SETTINGS.items() if values.get(name)},
        passthrough={name: values[name] for name in PASSTHROUGH_SETTINGS if values.get(name)},
    )


@dataclass(frozen=True)
class Credentials:
    """The Airflow users' passwords, and which of them were generated (stored in credentials.json)."""

    passwords: dict[str, str]
    generated: frozenset[str]
    file: Path


def resolve_credentials(
    path: Path, given: Mapping[str, str], generate: Callable[[], str] = localstack.generate_password
) -> Credentials:
    """A password for every user: as given (from .env), else generated once and kept in `path` (mode 600)."""
    stored: dict[str, str] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
        except ValueError as exc:
            raise DemoError(f"{path} is not valid JSON ({exc}); delete it to generate new passwords") from exc
        stored = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
    generated = {user: stored.get(user) or generate() for user in USERS if user not in given}
    if {**stored, **generated} != stored:
        localstack.write_private(path, json.dumps({**stored, **generated}, indent=2) + "\n")
    return Credentials(passwords={**generated, **given}, generated=frozenset(generated), file=path)


def credentials_lines(credentials: Credentials, project: Path) -> list[str]:
    """How to log in: generated passwords are shown, the user's own are named by their setting."""
    lines = []
    for user in USERS:
        if user in credentials.generated:
            lines.append(f"{user} / {credentials.passwords[user]}")
        else:
            lines.append(f"{user} / (your {PASSWORD_SETTINGS[user]})")
    where = _relative(credentials.file, project) if credentials.generated else None
    return lines + ([f"(generated passwords are kept in {where})"] if where else [])


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """`42s` or `3m05s`."""
    seconds = int(round(seconds))
    return f"{seconds}s" if seconds < 60 else f"{seconds // 60}m{seconds % 60:02d}s"


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


def format_report(report: RunReport, airflow_url: str, mlflow_url: str, login: Sequence[str]) -> str:
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
        f"MLflow UI:   {mlflow_url}",
        "make down to stop (everything stays in .demo/ for the next `make demo`; `make clean` deletes it).",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------------------------


def ensure_example_data(store_dir: Path) -> str:
    """Write the example data into the file store at `store_dir` unless it is there; a line saying which."""
    from mlops_pipeline.example_data import (
        CHURN_LABELS,
        CHURN_LANDING,
        DEFAULT_END,
        DIABETES_DS,
        DIABETES_LANDING,
        scoring_keys,
    )
    from mlops_pipeline.store import LocalStore

    store = LocalStore(store_dir)
    # The last file of each kind: a store written by an older version lacks some of them.
    wanted = (
        f"{CHURN_LANDING}/ds={DEFAULT_END:%Y-%m-%d}/batch.csv",
        scoring_keys(DEFAULT_END)[-1],
        f"{CHURN_LABELS}/ds={DEFAULT_END:%Y-%m-%d}/labels.csv",
        f"{DIABETES_LANDING}/ds={DIABETES_DS:%Y-%m-%d}/data.csv",
    )
    if all(store.exists(key) for key in wanted):
        return f"example data: already in {store.root_uri}"
    from mlops_pipeline.example_data import write_example_data

    summary = write_example_data(store)
    return f"example data: wrote {len(summary.dates)} days of churn batches and the diabetes data to {store.root_uri}"


def _start_or_reuse_mlflow(
    layout: localstack.StackLayout, port: int, cache_dir: Path
) -> tuple[localstack.ServiceRecord, bool]:
    if (record := localstack.running_service(layout.state_dir, "mlflow")) is not None:
        return record, False
    env = localstack.build_env(
        store_uri=layout.store_dir.resolve().as_uri(),
        tracking_uri=f"http://{localstack.LOCALHOST}:{port}",
        cache_dir=cache_dir,
    )
    return localstack.start_mlflow(layout, port=port, env=env), True


def _start_or_reuse_airflow(
    layout: localstack.StackLayout,
    project: Path,
    config: DemoConfig,
    tracking_uri: str,
    cache_dir: Path,
) -> tuple[localstack.ServiceRecord, bool]:
    store_uri = layout.store_dir.resolve().as_uri()
    record = localstack.running_service(layout.state_dir, "airflow")
    if record is not None and record.details.get("tracking_uri") == tracking_uri:
        return record, False
    if record is not None:
        say(f"airflow: restarting, its tasks use another MLflow ({record.details.get('tracking_uri')})")
    localstack.stop_service(layout.state_dir, "airflow")
    localstack.ensure_port_free(config.airflow_port, "the Airflow API server and UI", "AIRFLOW_PORT")
    worker_log_port = localstack.find_free_port(exclude=[config.airflow_port])
    settings = localstack.AirflowSettings(
        home=layout.airflow_home,
        api_port=config.airflow_port,
        dags_folder=project / "dags",
        plugins_folder=project / "plugins",
        passwords_file=layout.passwords_file,
        # The log servers bind all interfaces: free ports, so no other Airflow on the machine clashes.
        worker_log_server_port=worker_log_port,
        trigger_log_server_port=localstack.find_free_port(exclude=[worker_log_port, config.airflow_port]),
    )
    env = localstack.build_env(
        store_uri=store_uri,
        tracking_uri=tracking_uri,
        airflow=settings,
        cache_dir=cache_dir,
        extra=config.passthrough,
    )
    # Recorded so that a later `mlops demo` can tell whether the running Airflow still fits.
    details = {"tracking_uri": tracking_uri, "store_uri": store_uri}
    return localstack.start_airflow_standalone(layout, settings, env, details=details), True


def wait_for_dag(client: AirflowClient, dag_id: str, timeout: float, log_hint: str) -> None:
    """Wait until `dag_id` is parsed, then unpause it; fail at once, with the errors, if its file does not import."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            dag = client.get_dag(dag_id)
        except AirflowNotFoundError:
            dag = None
        errors = client.list_import_errors()
        blocking = [e for e in errors if dag is None or e.filename == dag.fileloc]
        if blocking:
            details = "\n\n".join(f"{e.filename}:\n{e.stack_trace.strip()}" for e in blocking)
            raise DemoError(f"DAG files do not import, so {dag_id} cannot run:\n\n{details}")
        if dag is not None:
            for error in errors:
                last_line = (error.stack_trace.strip().splitlines() or ["?"])[-1]
                say(f"warning: {error.filename} does not import ({last_line}); {dag_id} is not affected")
            if dag.is_paused:
                client.set_paused(dag_id, False)
                say(f"{dag_id}: unpaused")
            return
        if time.monotonic() >= deadline:
            raise DemoError(f"{dag_id} was not parsed after {timeout:.0f} s; see {log_hint}")
        time.sleep(2)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def champion_version(mlflow_url: str, model: str) -> str | None:
    """The version the `champion` alias of `model` points at (MLflow REST API); None if there is none."""
    response = httpx.get(
        f"{mlflow_url}/api/2.0/mlflow/registered-models/alias",
        params={"name": model, "alias": "champion"},
        timeout=30,
    )
    if response.status_code == 404:  # RESOURCE_DOES_NOT_EXIST: no such model, or no such alias
        return None
    response.raise_for_status()
    return str(response.json()["model_version"]["version"])


def _return_value(client: AirflowClient, run: DagRun, task_id: str) -> dict[str, object] | None:
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
    client: AirflowClient, run: DagRun, duration: float, mlflow_url: str, airflow_home: Path
) -> RunReport:
    """Collect what a finished run produced: champion, gate result, Data Docs, failures."""
    validated = _return_value(client, run, "validate") or {}
    succeeded = run.state == "success"
    return RunReport(
        dag_id=run.dag_id,
        run_id=run.run_id,
        state=run.state,
        duration_s=duration,
        champion_version=champion_version(mlflow_url, DEMO_MODEL) if succeeded else None,
        gate=_return_value(client, run, "evaluate"),
        data_docs_uri=str(validated["data_docs_uri"]) if validated.get("data_docs_uri") else None,
        failed_tasks=() if succeeded else tuple(failed_tasks(client, run, airflow_home)),
    )


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def demo(project: Path, *, timeout: float, conf: Mapping[str, object] | None = None) -> int:
    """`mlops demo`: start (or reuse) the stack, trigger churn__train through the REST API, report."""
    layout = localstack.StackLayout(project / ".demo")
    config = load_demo_config(os.environ, project / ".env")
    credentials = resolve_credentials(layout.root / "credentials.json", config.passwords)
    login = credentials_lines(credentials, project)
    say(f"mlops demo: Airflow + MLflow on {localstack.LOCALHOST}, state in {layout.root}")
    say(ensure_example_data(layout.store_dir))
    localstack.write_passwords_file(layout.passwords_file, credentials.passwords)

    # Check both ports before starting anything, so a conflict leaves nothing half-started.
    for name, port, what, setting in (
        ("mlflow", config.mlflow_port, "the MLflow server", "MLFLOW_PORT"),
        ("airflow", config.airflow_port, "the Airflow API server and UI", "AIRFLOW_PORT"),
    ):
        if localstack.running_service(layout.state_dir, name) is None:
            localstack.stop_service(layout.state_dir, name)  # a stale record, and anything it left behind
            localstack.ensure_port_free(port, what, setting)
    cache_dir = project / ".cache" / "pycache"
    mlflow, mlflow_started = _start_or_reuse_mlflow(layout, config.mlflow_port, cache_dir)
    mlflow_url = mlflow.details["url"]
    say(f"mlflow: {'started' if mlflow_started else 'already running'} (pid {mlflow.pid}) at {mlflow_url}")
    airflow, airflow_started = _start_or_reuse_airflow(layout, project, config, mlflow_url, cache_dir)
    airflow_url = airflow.details["url"]
    say(
        f"airflow: {'started' if airflow_started else 'already running'} (pid {airflow.pid}) at {airflow_url}"
    )
    for record, port, setting in (
        (mlflow, config.mlflow_port, "MLFLOW_PORT"),
        (airflow, config.airflow_port, "AIRFLOW_PORT"),
    ):
        if record.details["port"] != str(port):
            say(
                f"note: {record.name} stays on port {record.details['port']}; {setting}={port} applies after `make down`"
            )

    started = time.monotonic()
    logs = _relative(layout.logs_dir, project)
    localstack.wait_for_mlflow(mlflow, timeout=120)
    say(f"mlflow: healthy ({format_duration(time.monotonic() - started)})")
    localstack.wait_for_airflow(airflow_url, timeout=300, records=[airflow])
    say(f"airflow: healthy ({format_duration(time.monotonic() - started)}); service logs in {logs}/")

    with AirflowClient(airflow_url) as client:
        client.login("admin", credentials.passwords["admin"])
        wait_for_dag(client, DEMO_DAG, timeout=240, log_hint=f"{logs}/airflow.log")
        conf = DEMO_CONF if conf is None else conf
        run = client.trigger_dag_run(DEMO_DAG, conf)
        say(f"triggered {DEMO_DAG} through the REST API: run {run.run_id}, conf {json.dumps(conf)}")
        t0 = time.monotonic()

        def progress(ti: TaskInstance) -> None:
            if ti.state:  # tasks not scheduled yet have no state: nothing to say
                say(format_task_change(time.monotonic() - t0, ti))

        try:
            run = client.wait_for_dag_run(DEMO_DAG, run.run_id, timeout=timeout, on_task_change=progress)
        except DagRunTimeoutError as exc:
            say(f"{exc}; it keeps running, follow it at {airflow_url}. `make down` stops everything.")
            return EXIT_RUN_FAILED
        report = run_report(client, run, time.monotonic() - t0, mlflow_url, layout.airflow_home)
        scored = None
        score_text = ""
        if run.state == "success":
            wait_for_dag(client, SCORE_DAG, timeout=240, log_hint=f"{logs}/airflow.log")
            scored = client.trigger_dag_run(SCORE_DAG, SCORE_CONF)
            say(
                f"triggered {SCORE_DAG} through the REST API: run {scored.run_id}, conf {json.dumps(SCORE_CONF)}"
            )
            t0 = time.monotonic()
            try:
                scored = client.wait_for_dag_run(
                    SCORE_DAG, scored.run_id, timeout=timeout, on_task_change=progress
                )
            except DagRunTimeoutError as exc:
                say(f"{exc}; it keeps running, follow it at {airflow_url}. `make down` stops everything.")
                return EXIT_RUN_FAILED
            score_failures = (
                [] if scored.state == "success" else failed_tasks(client, scored, layout.airflow_home)
            )
            score_text = format_score_report(
                scored.run_id,
                scored.state,
                time.monotonic() - t0,
                _return_value(client, scored, "publish"),
                score_failures,
            )
    say(format_report(report, airflow_url, mlflow_url, login))
    if scored is not None:
        say(score_text)
    ok = run.state == "success" and (scored is None or scored.state == "success")
    return EXIT_OK if ok else EXIT_RUN_FAILED


def down(project: Path) -> int:
    """`mlops down`: stop every service `mlops demo` recorded, with every process they spawned."""
    layout = localstack.StackLayout(project / ".demo")
    results = localstack.stop_all(layout.state_dir, order=("airflow", "mlflow"))
    if not results:
        say(f"nothing to stop: no services recorded in {layout.state_dir}")
    for result in results:
        if result.was_running:
            killed = f", {result.killed} of them needed SIGKILL" if result.killed else ""
            say(
                f"stopped {result.name} (pid {result.pid}) and what it started: {result.processes} processes{killed}"
            )
        elif result.processes:
            say(
                f"{result.name} (pid {result.pid}) had exited; stopped {result.processes} processes it left behind"
            )
        else:
            say(f"{result.name} (pid {result.pid}) was not running; removed its record")
    return EXIT_OK


def stack(project: Path, action: str, *, workers: int = 2) -> int:
    """`mlops stack up|down`: the native production-like stack (see localstack.start_native_stack)."""
    layout = localstack.StackLayout(project / ".demo" / "stack")
    if action == "down":
        results, released = localstack.stop_native_stack(layout)
        for result in results:
            killed = f", {result.killed} needed SIGKILL" if result.killed else ""
            state = "stopped" if result.was_running else "was not running; cleaned up"
            say(f"{result.name} (pid {result.pid}) {state}: {result.processes} processes{killed}")
        say(f"released: {', '.join(released)}" if released else "no databases to drop")
        return EXIT_OK
    config = load_demo_config(os.environ, project / ".env")
    credentials = resolve_credentials(layout.root / "credentials.json", config.passwords)
    localstack.ensure_port_free(config.airflow_port, "the Airflow API server and UI", "AIRFLOW_PORT")
    localstack.ensure_port_free(config.mlflow_port, "the MLflow server", "MLFLOW_PORT")
    say(f"mlops stack: CeleryExecutor with {workers} workers, PostgreSQL, Redis, S3; state in {layout.root}")
    native = localstack.start_native_stack(
        layout,
        dags_folder=project / "dags",
        plugins_folder=project / "plugins",
        passwords=credentials.passwords,
        workers=workers,
        api_port=config.airflow_port,
        mlflow_port=config.mlflow_port,
        cache_dir=project / ".cache" / "pycache",
        extra=config.passthrough,
    )
    from mlops_pipeline.example_data import write_example_data
    from mlops_pipeline.store import open_store

    summary = write_example_data(open_store(native.store_uri, native.s3_client_kwargs()))
    resources = localstack.read_native_resources(layout)
    login = credentials_lines(credentials, project)
    say(
        "\n".join(
            [
                f"Airflow UI:  {native.airflow_url}   login: " + "; ".join(login[:2]),
                *(f"             {line}" for line in login[2:]),
                f"MLflow UI:   {native.mlflow_url}",
                f"S3 API:      {native.settings['MLOPS_S3_ENDPOINT_URL']}   store {native.store_uri}, "
                f"example data {summary.dates[0]}..{summary.dates[-1]}",
                f"workers:     {', '.join(native.workers)} (concurrency {native.concurrency} each)",
                f"databases:   {', '.join(resources.databases) if resources else '?'}; "
                f"broker {native.settings['AIRFLOW__CELERY__BROKER_URL']}",
                f"settings:    {_relative(layout.root / 'stack.env', project)} (docker-compose.yaml's variables)",
                f"logs:        {_relative(layout.logs_dir, project)}/",
                "`mlops stack down` stops everything and drops the databases (the S3 server keeps nothing).",
            ]
        )
    )
    return EXIT_OK


def example_data(store_uri: str) -> int:
    """`mlops example-data --store URI`: write the example data into any store."""
    from mlops_pipeline.example_data import write_example_data
    from mlops_pipeline.store import open_store

    summary = write_example_data(open_store(store_uri))
    say(
        f"wrote {summary.churn_rows} churn rows ({summary.dates[0]}..{summary.dates[-1]}) to {summary.churn_uri} "
        f"and {summary.diabetes_rows} diabetes rows to {summary.diabetes_uri}"
    )
    return EXIT_OK


def _json_object(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The `mlops` argument parser."""
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo_cmd = commands.add_parser("demo", help="start Airflow + MLflow locally and train the example model")
    demo_cmd.add_argument(
        "--timeout", type=float, default=1200, help="seconds to wait for the run (default 1200)"
    )
    demo_cmd.add_argument(
        "--conf",
        type=_json_object,
        default=None,
        help=f"the run's params as JSON (default {json.dumps(DEMO_CONF)}); "
        'e.g. {"as_of": "2026-03-10", "window_days": 1} is a defective batch that validation stops',
    )
    down_cmd = commands.add_parser("down", help="stop everything `mlops demo` started")
    stack_cmd = commands.add_parser(
        "stack", help="start (up) or stop (down) the production-like stack as local processes, no Docker"
    )
    stack_cmd.add_argument("action", choices=("up", "down"))
    stack_cmd.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
    for command in (demo_cmd, down_cmd, stack_cmd):
        command.add_argument(
            "--project-dir", type=Path, default=None, help="the project checkout (default: detected)"
        )
    data_cmd = commands.add_parser("example-data", help="write the example data into a store")
    data_cmd.add_argument("--store", required=True, help="file:///absolute/path or s3://bucket/prefix")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mlops` script; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "example-data":
        return example_data(args.store)
    project = (args.project_dir or default_project_dir()).resolve()
    if args.command == "down":
        return down(project)
    if args.command == "stack":
        try:
            return stack(project, args.action, workers=args.workers)
        except (DemoError, localstack.LocalStackError) as exc:
            print(f"mlops stack: {exc}", file=sys.stderr, flush=True)
            return EXIT_SETUP_FAILED
    try:
        return demo(project, timeout=args.timeout, conf=args.conf)
    except (DemoError, localstack.LocalStackError, AirflowApiError) as exc:
        print(f"mlops demo: {exc}", file=sys.stderr, flush=True)
        return EXIT_SETUP_FAILED
    except KeyboardInterrupt:
        print(
            "\ninterrupted; the services keep running (`make down` stops them)", file=sys.stderr, flush=True
        )
        return EXIT_INTERRUPTED
