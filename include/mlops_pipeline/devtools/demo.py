"""`mlops demo`, `mlops status` and `mlops down`: the embedded stack on this machine, and one run of the main job.

`mlops demo` (run by `make demo`) starts PostgreSQL, an MLflow server behind a login and Airflow's
api-server, scheduler, dag-processor and triggerer on 127.0.0.1 in the background
(:mod:`.demo_stack`), with all their state under `<project>/.demo/` (umask 077), writes the
example data into the file store `.demo/store`, triggers `churn__train` through Airflow's REST
API (as any other client would) and reports where to look. Services that a previous `mlops demo`
started are reused when they are alive, unchanged and healthy; the others are restarted, so a
second call repairs the stack and triggers another run. `mlops status` shows each service;
`mlops down` stops what `demo` started, by the PIDs it recorded.

Settings come from the environment, then `<project>/.env` (:class:`mlops_pipeline.settings.DemoSettings`):
`AIRFLOW_PORT`, `MLFLOW_PORT`, `AIRFLOW_ADMIN_PASSWORD`, `AIRFLOW_VIEWER_PASSWORD` (see
`.env.example`). Passwords that are not set are generated once into `.demo/credentials.json` (mode 600).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pydantic
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from mlops_pipeline.devtools import demo_stack, demo_stack_plan, embedded_stack, processes
from mlops_pipeline.devtools.airflow_client import (
    AirflowClient,
    AirflowNotFoundError,
    DagRunTimeoutError,
    TaskInstance,
)
from mlops_pipeline.devtools.run_report import (
    DEMO_CONF,
    DEMO_DAG,
    SCORE_CONF,
    SCORE_DAG,
    failed_tasks,
    format_duration,
    format_report,
    format_score_report,
    format_task_change,
    return_value,
    run_report,
)
from mlops_pipeline.settings import DemoSettings

USERS = ("admin", "viewer")
PASSWORD_SETTINGS = {"admin": "AIRFLOW_ADMIN_PASSWORD", "viewer": "AIRFLOW_VIEWER_PASSWORD"}
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


@dataclass(frozen=True)
class DemoConfig:
    """What the user can set for the demo; empty values count as unset."""

    airflow_port: int
    mlflow_port: int
    passwords: dict[str, str]  # only the passwords the user set
    passthrough: dict[str, str] = field(default_factory=dict)


def load_demo_config(environ: Mapping[str, str], dotenv_file: Path | None) -> DemoConfig:
    """The demo's settings: `environ` first, then the .env file (read by pydantic-settings)."""
    given = {name: value for name, value in environ.items() if name in _DEMO_VARIABLES and value}
    try:
        # `_env_file` is BaseSettings' own init argument, which mypy's view of the class does not show.
        settings = _DemoSettingsFrom(_env_file=dotenv_file, **given)  # type: ignore[call-arg,arg-type]
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in first["loc"])
        raise DemoError(f"{name}={first.get('input')!r} is not valid: {first['msg']}") from exc
    values = {
        "AIRFLOW_ADMIN_PASSWORD": settings.airflow_admin_password,
        "AIRFLOW_VIEWER_PASSWORD": settings.airflow_viewer_password,
        "MLOPS_CODE_VERSION": settings.mlops_code_version,
        "MLOPS_MODELS_DIR": settings.mlops_models_dir,
    }
    return DemoConfig(
        airflow_port=settings.airflow_port,
        mlflow_port=settings.mlflow_port,
        passwords={user: value for user, name in PASSWORD_SETTINGS.items() if (value := values[name])},
        passthrough={name: value for name in PASSTHROUGH_SETTINGS if (value := values[name])},
    )


class _DemoSettingsFrom(DemoSettings):
    """DemoSettings read from the given values and the .env file only, not from this process's
    environment: the caller passes the environment it means (tests pass their own)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, dotenv_settings)


_DEMO_VARIABLES = frozenset(
    str(field.validation_alias) for field in DemoSettings.model_fields.values() if field.validation_alias
)


@dataclass(frozen=True)
class Credentials:
    """The Airflow users' passwords, and which of them were generated (stored in credentials.json)."""

    passwords: dict[str, str]
    generated: frozenset[str]
    file: Path


def resolve_credentials(
    path: Path, given: Mapping[str, str], generate: Callable[[], str] = processes.generate_password
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
        processes.write_private(path, json.dumps({**stored, **generated}, indent=2) + "\n")
    return Credentials(passwords={**generated, **given}, generated=frozenset(generated), file=path)


def credentials_lines(credentials: Credentials, project: Path) -> list[str]:
    """How to log in: generated passwords are shown, the user's own are named by their setting."""
    lines = []
    for user in USERS:
        if user in credentials.generated:
            lines.append(f"{user} / {credentials.passwords[user]}")
        else:
            lines.append(f"{user} / (your {PASSWORD_SETTINGS[user]})")
    where = relative_path(credentials.file, project) if credentials.generated else None
    return lines + ([f"(generated passwords are kept in {where})"] if where else [])


def relative_path(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------------------------


def ensure_example_data(store_dir: Path) -> str:
    """Write the example data into the file store at `store_dir` unless it is there; a line saying which."""
    from mlops_pipeline.devtools.example_data import (
        CHURN_LABELS,
        CHURN_LANDING,
        DEFAULT_END,
        DIABETES_DS,
        DIABETES_LANDING,
        PENGUINS_DS,
        PENGUINS_LANDING,
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
        f"{PENGUINS_LANDING}/ds={PENGUINS_DS:%Y-%m-%d}/penguins.csv",
    )
    if all(store.exists(key) for key in wanted):
        return f"example data: already in {store.root_uri}"
    from mlops_pipeline.devtools.example_data import write_example_data

    summary = write_example_data(store)
    return f"example data: wrote {len(summary.dates)} days of churn batches, the diabetes and the penguins data to {store.root_uri}"


def build_plan(project: Path, config: DemoConfig, credentials: Credentials) -> demo_stack_plan.StackPlan:
    """The demo's stack under `<project>/.demo`: ports from the settings, secrets generated once."""
    layout = embedded_stack.StackLayout(project / ".demo")
    demo_stack.private_root(layout.root)
    for record in demo_stack.clean_up_exited(layout):
        say(f"{record.name}: had exited (pid {record.pid}, started {record.started_at}); starting it again")
    running = [name for name in demo_stack_plan.SERVICES if processes.running_service(layout.state_dir, name)]
    ports = demo_stack.resolve_ports(
        layout.root / "ports.json", airflow=config.airflow_port, mlflow=config.mlflow_port, running=running
    )
    processes.write_passwords_file(layout.passwords_file, credentials.passwords)
    return demo_stack_plan.plan_stack(
        layout,
        ports=ports,
        secrets=demo_stack.resolve_secrets(layout.root / "secrets.json"),
        dags_folder=project / "dags",
        plugins_folder=project / "plugins",
        passwords_file=layout.passwords_file,
        cache_dir=project / ".cache" / "pycache",
        extra=config.passthrough,
    )


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
# Commands
# --------------------------------------------------------------------------------------------


def demo(project: Path, *, timeout: float, conf: Mapping[str, object] | None = None) -> int:
    """`mlops demo`: start (or reuse, or repair) the stack, trigger churn__train through the REST API, report."""
    demo_stack.set_private_umask()
    layout = embedded_stack.StackLayout(project / ".demo")
    config = load_demo_config(os.environ, project / ".env")
    demo_stack.private_root(layout.root)
    credentials = resolve_credentials(layout.root / "credentials.json", config.passwords)
    login = credentials_lines(credentials, project)
    say(f"mlops demo: PostgreSQL, MLflow and Airflow on {processes.LOCALHOST}, state in {layout.root}")
    say(ensure_example_data(layout.store_dir))
    plan = build_plan(project, config, credentials)
    started = time.monotonic()
    decisions = demo_stack.ensure_stack(plan, say=say, timeout=300)
    for name, decision in decisions.items():
        record = processes.running_service(layout.state_dir, name)
        verb = "already running" if decision.action == "reuse" else "started"
        say(f"{name}: {verb} (pid {record.pid if record else '?'})")
    logs = relative_path(layout.logs_dir, project)
    airflow_url, mlflow_url = plan.airflow_url, plan.mlflow_url
    say(
        f"stack: healthy ({format_duration(time.monotonic() - started)}); service logs in {logs}/; `mlops status` shows it"
    )
    mlflow_user, mlflow_password = plan.mlflow_admin
    mlflow_login = (
        f"{mlflow_user} / {mlflow_password} (kept in {relative_path(layout.root / 'secrets.json', project)})"
    )

    with AirflowClient(airflow_url) as client:
        client.login("admin", credentials.passwords["admin"])
        wait_for_dag(client, DEMO_DAG, timeout=240, log_hint=f"{logs}/airflow-dag-processor.log")
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
        report = run_report(
            client, run, time.monotonic() - t0, mlflow_url, layout.airflow_home, plan.mlflow_admin
        )
        scored = None
        score_text = ""
        if run.state == "success":
            wait_for_dag(client, SCORE_DAG, timeout=240, log_hint=f"{logs}/airflow-dag-processor.log")
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
                return_value(client, scored, "publish"),
                score_failures,
            )
    say(format_report(report, airflow_url, mlflow_url, login, mlflow_login))
    if scored is not None:
        say(score_text)
    ok = run.state == "success" and (scored is None or scored.state == "success")
    return EXIT_OK if ok else EXIT_RUN_FAILED


def down(project: Path) -> int:
    """`mlops down`: stop every service `mlops demo` recorded, with every process they spawned."""
    layout = embedded_stack.StackLayout(project / ".demo")
    results = demo_stack.stop_stack(layout)
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


def status(project: Path) -> int:
    """`mlops status`: each service of the demo's stack: pid, port, healthy or not, since when.

    Exit 0 when every service is healthy, 1 otherwise (so scripts can wait on it). Reads the
    recorded ports and secrets; starts, writes and changes nothing.
    """
    layout = embedded_stack.StackLayout(project / ".demo")
    if not layout.state_dir.is_dir() or not any(layout.state_dir.glob("*.pid")):
        say(f"no demo stack recorded in {layout.root}: `make demo` starts one")
        return EXIT_RUN_FAILED
    config = load_demo_config(os.environ, project / ".env")
    try:
        ports = json.loads((layout.root / "ports.json").read_text())
        secrets = json.loads((layout.root / "secrets.json").read_text())
    except (OSError, ValueError) as exc:
        raise DemoError(
            f"the stack in {layout.root} is incomplete ({exc}); `make down`, then `make demo`"
        ) from exc
    plan = demo_stack_plan.plan_stack(
        layout,
        ports=demo_stack_plan.StackPorts(
            airflow=_recorded_port(layout, "airflow-api-server", config.airflow_port),
            mlflow=_recorded_port(layout, demo_stack_plan.MLFLOW, config.mlflow_port),
            postgres=int(ports["postgres"]),
            worker_log=int(ports["worker_log"]),
            trigger_log=int(ports["trigger_log"]),
        ),
        secrets=secrets,
        dags_folder=project / "dags",
        plugins_folder=project / "plugins",
        passwords_file=layout.passwords_file,
    )
    statuses = demo_stack.stack_status(plan)
    say(demo_stack_plan.format_status(statuses))
    say(
        f"Airflow {plan.airflow_url}   MLflow {plan.mlflow_url}   logs in {relative_path(layout.logs_dir, project)}/"
    )
    return EXIT_OK if all(status.healthy for status in statuses) else EXIT_RUN_FAILED


def _recorded_port(layout: embedded_stack.StackLayout, name: str, configured: int) -> int:
    """The port the running service `name` was started on (the setting may have changed since)."""
    record = processes.read_record(layout.state_dir, name)
    port = record.details.get("port", "") if record else ""
    return int(port) if port.isdigit() else configured
