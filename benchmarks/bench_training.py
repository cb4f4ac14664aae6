"""Benchmark of the training path: ingest → validate → train → evaluate, against what the fit allows.

    .venv/bin/python benchmarks/bench_training.py --rows 1000000 --json

Generates `--rows` rows of the churn example schema (`example_data.churn_batch` of the example's
minor-defect day: 1% of the rows carry one defect each, so the quarantine path runs) into one
landing day as one CSV file, where the churn spec's `source.uri` points, in a file store
(`LocalStore`), with a local MLflow tracking server (`mlflow server` on 127.0.0.1, a SQLite
database and an artifact folder, started before the timings and stopped after): the steps talk
to it over HTTP, as Airflow's tasks talk to the demo's and the compose stack's MLflow server (an
in-process SQLite store would make every step import and check MLflow's SQL schema, which no task
does). Then it measures in the same run:

* **pipeline** (`pipeline_s`): the bodies of the `churn__train` tasks `ingest`, `validate`,
  `train` and `evaluate` (`steps.train.*`, the functions the DAG's tasks call, with a one-day
  window), each in a fresh Python process as Airflow runs a task: interpreter start-up and imports
  count. `steps` holds each process's wall seconds; `peak_rss_mb` the largest peak resident set
  (`VmHWM`) of the four processes.
* **limit** (`limit_s`): one fresh process that reads the same rows from a typed Parquet file,
  applies the same row rules vectorised (`rules.check_rows`), drops the rows they quarantine,
  splits, fits the same pipeline (`training.build_pipeline`) and computes the holdout metrics
  (`evaluation.model_metrics`). Start-up and imports count here too; no MLflow, no reports.

`ratio_to_limit = limit_s / pipeline_s` (1.0: the path costs nothing beyond reading, checking and
fitting). The last line printed is one JSON object:
`{"rows", "pipeline_s", "limit_s", "ratio_to_limit", "steps": {name: seconds}, "peak_rss_mb",
"limit_peak_rss_mb", ...}`; progress goes to stderr. `--repeat N` runs both N times, interleaved
(pipeline, limit, pipeline, ...), and keeps the best of each: the machine is shared.

Targets (issue 12): `ratio_to_limit >= 0.5` at 1M rows and `>= 0.75` at 5M rows; `peak_rss_mb <=
1.5 x limit_peak_rss_mb` at 5M; a 10M-row run completes on a 24 GB machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SPEC_PATH = REPO / "include/models/churn.yaml"
STEPS = ("ingest", "validate", "train", "evaluate")
RUN_ID = "manual__bench_training"
CSV_CHUNK_ROWS = 500_000


def log(message: str) -> None:
    """Progress and details, on stderr (stdout ends with the JSON line)."""
    print(message, file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def landing_day() -> datetime.date:
    """The example's minor-defect day: 1% defective rows, under the churn spec's quarantine limit."""
    from mlops_pipeline.devtools import example_data

    return example_data.MINOR_DEFECT_DAY


# --- setup ------------------------------------------------------------------------------------------


def write_data(workdir: Path, rows: int) -> None:
    """The landing CSV (as the source sends it) and the typed Parquet copy the limit reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops_pipeline.devtools import example_data

    day = landing_day()
    frame = example_data.churn_batch(day, rows=rows)
    landing = workdir / "store" / example_data.CHURN_LANDING / f"ds={day.isoformat()}"
    landing.mkdir(parents=True)
    with (landing / "part-0.csv").open("w", encoding="utf-8", newline="") as handle:
        for start in range(0, rows, CSV_CHUNK_ROWS):
            chunk = frame.iloc[start : start + CSV_CHUNK_ROWS]
            chunk.to_csv(handle, index=False, header=start == 0, lineterminator="\n")
    typed = frame.copy()
    typed["data_usage_gb"] = typed["data_usage_gb"].where(typed["data_usage_gb"] != "n/a").astype("float64")
    pq.write_table(pa.Table.from_pandas(typed, preserve_index=False), workdir / "typed.parquet")


def start_mlflow(workdir: Path) -> str:
    """Start the local MLflow server (`embedded_stack.mlflow_server_command`, as the demo runs it
    but without login) and create the experiment; its tracking URI."""
    from mlflow import MlflowClient

    from mlops_pipeline.devtools import embedded_stack, processes

    port = processes.find_free_port()
    record = processes.start_service(
        "mlflow",
        embedded_stack.mlflow_server_command(
            backend_store_uri=f"sqlite:///{workdir / 'mlflow.db'}",
            artifacts_destination=(workdir / "artifacts").as_uri(),
            port=port,
        ),
        env=child_env(workdir),
        state_dir=workdir / "services",
        log_file=workdir / "services" / "mlflow.log",
    )
    uri = f"http://{embedded_stack.LOCALHOST}:{port}"
    processes.wait_for_http(f"{uri}/health", timeout=120, records=[record], what="the MLflow server")
    (workdir / "tracking_uri").write_text(uri)
    MlflowClient(uri).create_experiment("churn")
    return uri


def stop_mlflow(workdir: Path) -> None:
    """Stop the server `start_mlflow` started (if it did)."""
    from mlops_pipeline.devtools import processes

    processes.stop_all(workdir / "services")


def _tracking_uri(workdir: Path) -> str:
    """The MLflow server's URI once `start_mlflow` has written it (before: not needed yet)."""
    written = workdir / "tracking_uri"
    return written.read_text() if written.exists() else ""


def child_env(workdir: Path) -> dict[str, str]:
    """The environment of the MLflow server and of a step process: the one the embedded stack gives
    its services and tasks (`embedded_stack.build_env`: no telemetry, no progress bars, no GX
    analytics, no MLflow job consumers), on the file store and the local MLflow."""
    from mlops_pipeline.devtools import embedded_stack

    # As `make` runs everything: cached bytecode (this machine sets PYTHONDONTWRITEBYTECODE, and
    # without the cache every fresh process recompiles mlflow/GX/sklearn: seconds per step).
    inherited = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    return embedded_stack.build_env(
        store_uri=(workdir / "store").as_uri(),
        tracking_uri=_tracking_uri(workdir),
        cache_dir=Path(os.environ.get("PYTHONPYCACHEPREFIX", str(REPO / ".cache/pycache"))),
        extra={"MLOPS_CODE_VERSION": "bench", "GIT_PYTHON_REFRESH": "quiet"},
        base=inherited,
    )


# --- the steps, each run in its own process ------------------------------------------------------------


def run_step(name: str, workdir: Path) -> None:
    """Body of a step process: the task's function on the outputs of the earlier steps."""
    from mlops_pipeline.settings import get_settings
    from mlops_pipeline.spec import load_spec
    from mlops_pipeline.steps import RunInfo, StepRejected
    from mlops_pipeline.steps import train as steps
    from mlops_pipeline.store import open_store

    spec = load_spec(SPEC_PATH)
    store = open_store(get_settings().store_uri)
    run = RunInfo("churn__train", RUN_ID, "bench", f"{landing_day().isoformat()}T00:00:00+00:00")
    state = workdir / "state"

    def earlier(step: str) -> Any:
        return json.loads((state / f"{step}.json").read_text())

    result: Any
    try:
        if name == "ingest":
            result = steps.ingest(spec, store, landing_day(), 1)
        elif name == "validate":
            result = steps.validate(spec, store, earlier("ingest"), run)
        elif name == "train":
            result = steps.train(spec, store, earlier("ingest"), earlier("validate"), run)
        else:
            result = steps.evaluate(spec, store, earlier("validate"), earlier("train"), run)
        outcome = "ok"
    except StepRejected as exc:
        result, outcome = {"rejected": str(exc)}, "rejected"
    (state / f"{name}.json").write_text(json.dumps(result, default=str))
    (state / f"{name}.rss").write_text(json.dumps({"peak_rss_mb": peak_rss_mb(), "outcome": outcome}))


def run_limit(workdir: Path) -> None:
    """Body of the limit process: read Parquet, the row rules, split, fit, holdout metrics."""
    import pandas as pd

    from mlops_pipeline.evaluation import model_metrics
    from mlops_pipeline.rules import check_rows
    from mlops_pipeline.spec import load_spec
    from mlops_pipeline.training import build_pipeline, features_frame, split_frame, target_series

    spec = load_spec(SPEC_PATH)
    frame = pd.read_parquet(workdir / "typed.parquet")
    clean = frame[~check_rows(frame, spec).quarantine]
    split = split_frame(clean, spec)
    pipeline = build_pipeline(spec).fit(features_frame(split.train, spec), target_series(split.train, spec))
    metrics = model_metrics(pipeline, split.holdout, spec)
    (workdir / "limit.json").write_text(
        json.dumps({"metrics": metrics, "peak_rss_mb": peak_rss_mb(), "clean_rows": len(clean)})
    )


def timed_process(args: list[str], workdir: Path) -> float:
    """Run this file in a fresh process with `args`; its wall seconds."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, *args, "--workdir", str(workdir)],
        env=child_env(workdir),
        cwd=workdir,
        check=True,
    )
    return time.perf_counter() - started


def reset_outputs(workdir: Path) -> None:
    """Forget an earlier repetition's outputs, so that every step does its full work again."""
    for folder in ("raw", "validation", "quarantine", "reports", "training"):
        shutil.rmtree(workdir / "store" / folder, ignore_errors=True)
    shutil.rmtree(workdir / "state", ignore_errors=True)
    (workdir / "state").mkdir()


def measure_pipeline(workdir: Path) -> dict[str, Any]:
    """One run of the four step processes."""
    reset_outputs(workdir)
    seconds: dict[str, float] = {}
    rss: dict[str, float] = {}
    for name in STEPS:
        seconds[name] = round(timed_process(["--step", name], workdir), 3)
        report = json.loads((workdir / "state" / f"{name}.rss").read_text())
        rss[name] = round(report["peak_rss_mb"], 1)
        log(f"  {name}: {seconds[name]:.2f} s, peak RSS {rss[name]:.0f} MiB ({report['outcome']})")
        if report["outcome"] != "ok":
            log(f"  {name} refused: {(workdir / 'state' / f'{name}.json').read_text()}")
            break
    return {"seconds": seconds, "rss": rss, "total": round(sum(seconds.values()), 3)}


def main() -> None:
    """Set up, measure pipeline and limit (interleaved), print the summary as the last line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--step", choices=[*STEPS, "limit"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step is not None:
        if args.step == "limit":
            run_limit(args.workdir)
        else:
            run_step(args.step, args.workdir)
        return

    workdir = Path(tempfile.mkdtemp(prefix="bench-training-"))
    try:
        log(f"generating {args.rows:,} rows into {workdir} ...")
        started = time.perf_counter()
        write_data(workdir, args.rows)
        start_mlflow(workdir)
        log(f"setup: {time.perf_counter() - started:.1f} s; load average {os.getloadavg()}")
        pipelines: list[dict[str, Any]] = []
        limits: list[dict[str, Any]] = []
        for repetition in range(args.repeat):
            log(f"repetition {repetition + 1}: pipeline")
            pipelines.append(measure_pipeline(workdir))
            log(f"repetition {repetition + 1}: limit")
            limit_s = timed_process(["--step", "limit"], workdir)
            limits.append({"seconds": round(limit_s, 3), **json.loads((workdir / "limit.json").read_text())})
            log(f"  limit: {limit_s:.2f} s, peak RSS {limits[-1]['peak_rss_mb']:.0f} MiB")
        best = min(pipelines, key=lambda p: p["total"])
        best_limit = min(limits, key=lambda limit: limit["seconds"])
        state = workdir / "state"
        evaluation = (
            json.loads((state / "evaluate.json").read_text()) if (state / "evaluate.json").exists() else {}
        )
        summary = {
            "rows": args.rows,
            "pipeline_s": best["total"],
            "limit_s": best_limit["seconds"],
            "ratio_to_limit": round(best_limit["seconds"] / best["total"], 3),
            "steps": best["seconds"],
            "peak_rss_mb": max(best["rss"].values()),
            "limit_peak_rss_mb": round(best_limit["peak_rss_mb"], 1),
            "steps_peak_rss_mb": best["rss"],
            "holdout_metrics": evaluation.get("candidate_metrics"),
            "limit_holdout_metrics": best_limit["metrics"],
            "load_average": os.getloadavg(),
        }
        print(json.dumps(summary) if args.json else json.dumps(summary, indent=2))
    finally:
        stop_mlflow(workdir)
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
