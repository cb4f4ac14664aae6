"""The `mlops` command: the embedded demo stack (`demo`, `status`, `down`), the native stack (`stack up|down`), the example data (`example-data`) and a first spec for your own table (`spec infer`).

`mlops demo`, `mlops status` and `mlops down`: see :mod:`mlops_pipeline.devtools.demo`.

`mlops spec infer DATA --target COL [--id COL] [--task …] [--name …] [--source-uri …]` prints a
commented, valid spec inferred from a local CSV or Parquet sample (feature types, ranges, allowed
values, the task and classes, the id column or none, gate floors below a cross-validated baseline;
:mod:`mlops_pipeline.devtools.spec_infer`); redirect it to `include/models/<name>.yaml`. Exit 2
with the reason on stderr when the sample cannot give a spec.

`mlops stack up` (run by `make stack`) starts the production-like stack of docker-compose.yaml as
local processes instead (CeleryExecutor with two workers on this machine's PostgreSQL and Redis,
MLflow on PostgreSQL, an S3 API server holding the store; :mod:`mlops_pipeline.devtools.native_stack`),
state in `<project>/.demo/stack/`; `mlops stack down` stops it and drops its throwaway databases.

`mlops reproduce MODEL VERSION` rebuilds a registered version from its lineage, here, with the
settings of the environment (`MLOPS_STORE_URI`, `MLFLOW_TRACKING_URI` and their credentials), and
prints each check (:mod:`mlops_pipeline.reproduction`; the `<model>__reproduce` DAG does the same
in Airflow). Exit 0 when the rebuild is the same model, 1 when it differs, 2 when it cannot start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mlops_pipeline.devtools import embedded_stack, native_stack, processes
from mlops_pipeline.devtools.airflow_client import (
    AirflowApiError,
)
from mlops_pipeline.devtools.demo import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_SETUP_FAILED,
    DemoError,
    credentials_lines,
    default_project_dir,
    demo,
    down,
    load_demo_config,
    relative_path,
    resolve_credentials,
    say,
    status,
)
from mlops_pipeline.devtools.run_report import DEMO_CONF


def stack(project: Path, action: str, *, workers: int = 2) -> int:
    """`mlops stack up|down`: the native production-like stack (see native_stack.start_native_stack)."""
    layout = embedded_stack.StackLayout(project / ".demo" / "stack")
    if action == "down":
        results, released = native_stack.stop_native_stack(layout)
        for result in results:
            killed = f", {result.killed} needed SIGKILL" if result.killed else ""
            state = "stopped" if result.was_running else "was not running; cleaned up"
            say(f"{result.name} (pid {result.pid}) {state}: {result.processes} processes{killed}")
        say(f"released: {', '.join(released)}" if released else "no databases to drop")
        return EXIT_OK
    config = load_demo_config(os.environ, project / ".env")
    credentials = resolve_credentials(layout.root / "credentials.json", config.passwords)
    processes.ensure_port_free(config.airflow_port, "the Airflow API server and UI", "AIRFLOW_PORT")
    processes.ensure_port_free(config.mlflow_port, "the MLflow server", "MLFLOW_PORT")
    say(
        f"mlops stack: CeleryExecutor with {workers} workers, PostgreSQL, Redis, S3, Prometheus;"
        f" state in {layout.root}"
    )
    native = native_stack.start_native_stack(
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
    from mlops_pipeline.devtools.example_data import write_example_data
    from mlops_pipeline.store import open_store

    summary = write_example_data(open_store(native.store_uri, native.s3_client_kwargs()))
    resources = native_stack.read_native_resources(layout)
    login = credentials_lines(credentials, project)
    say(
        "\n".join(
            [
                f"Airflow UI:  {native.airflow_url}   login: " + "; ".join(login[:2]),
                *(f"             {line}" for line in login[2:]),
                f"MLflow UI:   {native.mlflow_url}",
                f"S3 API:      {native.settings['MLOPS_S3_ENDPOINT_URL']}   store {native.store_uri}, "
                f"example data {summary.dates[0]}..{summary.dates[-1]}",
                *(
                    [
                        f"Prometheus:  {native.prometheus.prometheus_url}/graph   (alerts: /alerts); "
                        f"Pushgateway {native.prometheus.pushgateway_url}"
                    ]
                    if native.prometheus
                    else []
                ),
                f"workers:     {', '.join(native.workers)} (concurrency {native.concurrency} each)",
                f"databases:   {', '.join(resources.databases) if resources else '?'}; "
                f"broker {native.settings['AIRFLOW__CELERY__BROKER_URL']}",
                f"settings:    {relative_path(layout.root / 'stack.env', project)} (docker-compose.yaml's variables)",
                f"logs:        {relative_path(layout.logs_dir, project)}/",
                "`mlops stack down` stops everything and drops the databases (the S3 server keeps nothing).",
            ]
        )
    )
    return EXIT_OK


def reproduce(model: str, version: int) -> int:
    """`mlops reproduce MODEL VERSION`: rebuild a version from its lineage and compare (see above)."""
    from pydantic import ValidationError

    from mlops_pipeline import registry
    from mlops_pipeline.reproduction import reproduce_version
    from mlops_pipeline.settings import get_settings
    from mlops_pipeline.store import open_store

    try:
        settings = get_settings()
        report = reproduce_version(
            registry.configured_client(), open_store(settings.store_uri), model, str(version)
        )
    except (ValidationError, ValueError, registry.RegistryError) as exc:
        print(f"mlops reproduce: {exc}", file=sys.stderr, flush=True)
        return EXIT_SETUP_FAILED
    for check in report.checks:
        say(f"{'ok  ' if check.passed else 'DIFF'} {check.name}: {check.detail}")
    for difference in report.environment_differences:
        say(f"     environment since training: {difference}")
    if report.identical:
        say(f"{model} v{version} was rebuilt exactly from its lineage")
        return EXIT_OK
    say(f"{model} v{version} could not be reproduced exactly: {report.first_difference}")
    return EXIT_RUN_FAILED


def example_data(store_uri: str) -> int:
    """`mlops example-data --store URI`: write the example data into any store."""
    from mlops_pipeline.devtools.example_data import write_example_data
    from mlops_pipeline.store import open_store

    summary = write_example_data(open_store(store_uri))
    say(
        f"wrote {summary.churn_rows} churn rows ({summary.dates[0]}..{summary.dates[-1]}) to {summary.churn_uri} "
        f", {summary.diabetes_rows} diabetes rows to {summary.diabetes_uri} "
        f"and {summary.penguins_rows} penguins to {summary.penguins_uri}"
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


def _version(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a version is a number from 1, not {text!r}")
    return int(text)


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
    status_cmd = commands.add_parser(
        "status", help="each service of the demo's stack: pid, port, healthy or not, since when"
    )
    stack_cmd = commands.add_parser(
        "stack", help="start (up) or stop (down) the production-like stack as local processes, no Docker"
    )
    stack_cmd.add_argument("action", choices=("up", "down"))
    stack_cmd.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
    for command in (demo_cmd, down_cmd, status_cmd, stack_cmd):
        command.add_argument(
            "--project-dir", type=Path, default=None, help="the project checkout (default: detected)"
        )
    reproduce_cmd = commands.add_parser(
        "reproduce",
        help="rebuild a registered version from its recorded snapshot, spec and seed and prove it is the same model",
    )
    reproduce_cmd.add_argument("model", help="the model's name")
    reproduce_cmd.add_argument("version", type=_version, help="the registered version to rebuild")
    data_cmd = commands.add_parser("example-data", help="write the example data into a store")
    data_cmd.add_argument("--store", required=True, help="file:///absolute/path or s3://bucket/prefix")
    spec_cmd = commands.add_parser("spec", help="model specs: `infer` prints a first spec for a sample table")
    spec_actions = spec_cmd.add_subparsers(dest="spec_action", required=True)
    infer_cmd = spec_actions.add_parser(
        "infer",
        help="print a commented, valid spec YAML inferred from a CSV or Parquet sample "
        "(redirect it to include/models/<name>.yaml)",
    )
    infer_cmd.add_argument("data", type=Path, help="a local .csv or .parquet file")
    infer_cmd.add_argument("--target", required=True, help="the label column")
    infer_cmd.add_argument(
        "--id",
        dest="id_column",
        default=None,
        help="the unique row id (default: a unique `id` or `*_id` column)",
    )
    infer_cmd.add_argument(
        "--task",
        choices=("binary", "multiclass", "regression", "classification"),
        default=None,
        help="default: inferred from the target",
    )
    infer_cmd.add_argument("--name", default=None, help="the model name (default: the file name, made safe)")
    infer_cmd.add_argument(
        "--source-uri",
        default=None,
        help="the source uri pattern (default: landing/<name>/ds={ds}/*.<format>)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mlops` script; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "example-data":
        return example_data(args.store)
    if args.command == "reproduce":
        return reproduce(args.model, args.version)
    if args.command == "spec":
        import pandas as pd

        from mlops_pipeline.devtools import spec_infer, spec_profile

        try:
            fmt = spec_profile.sample_format(args.data)
            frame = (
                pd.read_parquet(args.data)
                if fmt == "parquet"
                # As the pipeline reads its sources: text, and only an empty field is missing.
                else pd.read_csv(args.data, dtype=str, keep_default_na=False, na_values=[""])
            )
            inferred = spec_infer.infer_spec(
                frame,
                args.target,
                name=args.name or spec_profile.default_name(args.data),
                id_column=args.id_column,
                task=args.task,
                source_uri=args.source_uri,
                source_format=fmt,
                sample_label=str(args.data),
            )
        except (OSError, ValueError) as exc:
            print(f"mlops spec infer: {exc}", file=sys.stderr, flush=True)
            return EXIT_SETUP_FAILED
        print(inferred.yaml_text, end="", flush=True)
        return EXIT_OK
    project = (args.project_dir or default_project_dir()).resolve()
    if args.command == "down":
        return down(project)
    if args.command == "status":
        try:
            return status(project)
        except (DemoError, processes.StackError) as exc:
            print(f"mlops status: {exc}", file=sys.stderr, flush=True)
            return EXIT_SETUP_FAILED
    if args.command == "stack":
        try:
            return stack(project, args.action, workers=args.workers)
        except (DemoError, processes.StackError) as exc:
            print(f"mlops stack: {exc}", file=sys.stderr, flush=True)
            return EXIT_SETUP_FAILED
    try:
        return demo(project, timeout=args.timeout, conf=args.conf)
    except (DemoError, processes.StackError, AirflowApiError) as exc:
        print(f"mlops demo: {exc}", file=sys.stderr, flush=True)
        return EXIT_SETUP_FAILED
    except KeyboardInterrupt:
        print(
            "\ninterrupted; the services keep running (`make down` stops them)", file=sys.stderr, flush=True
        )
        return EXIT_INTERRUPTED
