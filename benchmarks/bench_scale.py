"""Benchmark of scaling out: one scoring run on one Celery worker against the same run on two.

    .venv/bin/python benchmarks/bench_scale.py --json [--files 8 --rows-per-file 100000 --concurrency 2]

Starts the native production-like stack (`mlops_pipeline.native_stack.start_native_stack`: the
CeleryExecutor on this machine's PostgreSQL and Redis, two Celery workers, MLflow on PostgreSQL,
moto's S3 server holding the store), writes the February example data and one large scoring day
(`--files` Parquet files of `--rows-per-file` rows under `incoming/churn/ds=<ds>/`, where the
churn spec's `scoring.input.uri` points; `ds` lies outside the example data, so nothing else is
in that folder), trains the first champion through the REST API and lets its asset-triggered
score run warm up both workers. Then, through the REST API only (`churn__score` with conf `ds`):

* **one worker** (`one_worker_s`): worker 2 is stopped; the run's tasks all go to worker 1;
* **two workers** (`two_workers_s`): worker 2 is started again; the same day is scored again (a
  rerun replaces the partition).

Each worker runs `--concurrency` task processes (the stack's default: 2). A run's time is its
`end_date - start_date` in Airflow (plan, the mapped `score` tasks, publish, and the scheduling
between them); the span of the mapped tasks alone is in the details. With `--repeat N` the two
measurements alternate N times and the best of each is kept.

The machine's cores bound what a second worker can add: on 2 cores one worker with concurrency 2
already runs two task processes at once. The last line printed is one JSON object:
`{"rows", "one_worker_s", "two_workers_s", "speedup"}` (speedup = one_worker_s / two_workers_s);
progress and details (cores, per-run times, which worker ran each task) go to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mlops_pipeline.devtools import embedded_stack, native_stack, processes
from mlops_pipeline.devtools.airflow_client import AirflowClient, AirflowNotFoundError
from mlops_pipeline.devtools.example_data import write_example_data, write_scoring_inputs
from mlops_pipeline.predictions import read_manifest
from mlops_pipeline.store import open_store

REPO = Path(__file__).resolve().parents[1]
MODEL = "churn"
TRAIN, SCORE = f"{MODEL}__train", f"{MODEL}__score"
AS_OF = datetime.date(2026, 2, 28)  # the first champion's last training day (as in the demo)
# Outside the example data (2026-01-01..04-30) and before its drift episode: a clean day of its own.
BENCH_DAY = datetime.date(2025, 12, 15)


def log(message: str) -> None:
    """Progress and details, on stderr (stdout ends with the JSON line)."""
    print(message, file=sys.stderr, flush=True)


def _ts(value: str | None) -> datetime.datetime:
    assert value, "a finished run or task has start and end dates"
    return datetime.datetime.fromisoformat(value)


def task_instances(client: AirflowClient, run_id: str) -> list[dict[str, Any]]:
    """The score run's task instances as the REST API returns them (with hostname and dates)."""
    response = client.request(
        "GET", f"/api/v2/dags/{SCORE}/dagRuns/{quote(run_id, safe='')}/taskInstances", params={"limit": 1000}
    )
    response.raise_for_status()
    return list(response.json()["task_instances"])


def score_once(client: AirflowClient, ds: str, label: str) -> dict[str, Any]:
    """Trigger one score run of `ds`, wait for it, and time it (run and mapped-task span)."""
    run = client.trigger_dag_run(SCORE, {"ds": ds})
    run = client.wait_for_dag_run(SCORE, run.run_id, timeout=1800, interval=1)
    tis = task_instances(client, run.run_id)
    if run.state != "success":
        raise SystemExit(
            f"{label}: run {run.run_id} {run.state}: {[(t['task_id'], t['state']) for t in tis]}"
        )
    mapped = [ti for ti in tis if ti["task_id"] == "score"]
    span = max(_ts(t["end_date"]) for t in mapped) - min(_ts(t["start_date"]) for t in mapped)
    result = {
        "label": label,
        "run_id": run.run_id,
        "run_s": round((_ts(run.end_date) - _ts(run.start_date)).total_seconds(), 2),
        "mapped_span_s": round(span.total_seconds(), 2),
        "tasks": {
            f"{t['task_id']}[{t['map_index']}]" if t["map_index"] >= 0 else t["task_id"]: {
                "host": t["hostname"],
                "s": round(float(t.get("duration") or 0.0), 2),
            }
            for t in tis
        },
    }
    log(f"{label}: run {result['run_s']} s, mapped tasks {result['mapped_span_s']} s")
    return result


def wait_for_parsed(client: AirflowClient, dag_ids: tuple[str, ...], timeout: float) -> None:
    """Until the dag-processor has parsed every DAG in `dag_ids`."""
    deadline = time.monotonic() + timeout
    for dag_id in dag_ids:
        while True:
            try:
                client.get_dag(dag_id)
                break
            except AirflowNotFoundError:
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"{dag_id} not parsed after {timeout} s: {client.list_import_errors()}"
                    ) from None
                time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=8, help="input files of the day (default 8)")
    parser.add_argument("--rows-per-file", type=int, default=100_000, help="rows per file (default 100,000)")
    parser.add_argument("--concurrency", type=int, default=2, help="task processes per worker (default 2)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="alternations of the two measurements; best kept"
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    parser.add_argument("--workdir", type=Path, help="where the stack's state goes (default: a temp dir)")
    args = parser.parse_args(argv)

    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    layout = embedded_stack.StackLayout(root / "stack")
    passwords = {"admin": processes.generate_password(), "viewer": processes.generate_password()}
    ds = BENCH_DAY.isoformat()
    cores = os.cpu_count()
    log(
        f"bench_scale: {args.files} files x {args.rows_per_file} rows, concurrency {args.concurrency}, {cores} cores"
    )
    one: list[dict[str, Any]] = []
    two: list[dict[str, Any]] = []
    try:
        t0 = time.monotonic()
        native = native_stack.start_native_stack(
            layout,
            dags_folder=REPO / "dags",
            plugins_folder=REPO / "plugins",
            passwords=passwords,
            workers=2,
            concurrency=args.concurrency,
            cache_dir=REPO / ".cache" / "pycache",
        )
        log(f"stack up in {time.monotonic() - t0:.0f} s (state in {root})")
        store = open_store(native.store_uri, native.s3_client_kwargs())
        write_example_data(store, start=AS_OF - datetime.timedelta(days=27), end=AS_OF)
        write_scoring_inputs(store, BENCH_DAY, rows=args.files * args.rows_per_file, files=args.files)
        log(f"data written ({args.files * args.rows_per_file} rows to score on {ds})")
        with AirflowClient(native.airflow_url) as client:
            client.login("admin", passwords["admin"])
            wait_for_parsed(client, (TRAIN, SCORE), timeout=300)
            train = client.trigger_dag_run(TRAIN, {"as_of": AS_OF.isoformat()})
            train = client.wait_for_dag_run(TRAIN, train.run_id, timeout=900)
            if train.state != "success":
                raise SystemExit(f"training run {train.run_id} {train.state}")
            # Warm-up: the score run the promotion triggers (both workers, compiled bytecode cached).
            deadline = time.monotonic() + 120
            while not (runs := client.list_dag_runs(SCORE)) and time.monotonic() < deadline:
                time.sleep(2)
            for run in runs:
                client.wait_for_dag_run(SCORE, run.run_id, timeout=600)
            log(f"champion trained and warm-up scored after {time.monotonic() - t0:.0f} s")

            for attempt in range(args.repeat):
                processes.stop_service(layout.state_dir, "celery-worker2")
                one.append(score_once(client, ds, f"one worker #{attempt + 1}"))
                worker = native_stack.start_celery_worker(
                    layout,
                    native.airflow,
                    native.env,
                    index=2,
                    log_server_port=processes.find_free_port(),
                    concurrency=args.concurrency,
                )
                native_stack.wait_for_celery_worker(worker)
                two.append(score_once(client, ds, f"two workers #{attempt + 1}"))
        manifest = read_manifest(store, "predictions", MODEL, ds)
        assert manifest is not None
        rows = int(manifest["rows"])
    finally:
        native_stack.stop_native_stack(layout)

    best_one = min(one, key=lambda r: r["run_s"])
    best_two = min(two, key=lambda r: r["run_s"])
    details = {
        "cores": cores,
        "files": args.files,
        "rows_per_file": args.rows_per_file,
        "concurrency": args.concurrency,
        "runs": one + two,
        "rows_per_s_one_worker": round(rows / best_one["run_s"], 1),
        "rows_per_s_two_workers": round(rows / best_two["run_s"], 1),
        "mapped_span_speedup": round(best_one["mapped_span_s"] / best_two["mapped_span_s"], 3),
    }
    log(json.dumps(details, indent=2))
    result = {
        "rows": rows,
        "one_worker_s": best_one["run_s"],
        "two_workers_s": best_two["run_s"],
        "speedup": round(best_one["run_s"] / best_two["run_s"], 3),
    }
    print(json.dumps(result) if args.json else result, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
