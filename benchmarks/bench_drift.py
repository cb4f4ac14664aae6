"""Benchmark: `check_drift` against Evidently's DataDriftPreset with its defaults on the full data.

    .venv/bin/python benchmarks/bench_drift.py --rows 1000000 --json

Data: the churn model's 14 features (11 numeric, 3 categorical), generated with vectorised numpy,
`--rows` rows per side, the same reference and current for both checks. Scenarios:

* `none`: current drawn from the same distribution as the reference (a fresh sample);
* `num_shift`: `monthly_charges` shifted by 0.5 reference standard deviations;
* `cat_reweight`: the plan mix moved from 45/35/20 to 20/35/45;
* `many_small`: every numeric column shifted by its own amount between 0 and 0.2 sd (several just
  either side of the 0.1 threshold) and the region mix moved a little.

Each check runs in its own child process (so its peak RSS is its own): ours with the default
DriftSpec (Wasserstein normed / Jensen-Shannon, threshold 0.1, sample_rows 50,000), and Evidently's
`DataDriftPreset()` with no options on the full frames (above 1,000 rows its defaults are the same
methods and threshold, chosen per column; the methods it chose are checked to be ours). A third child
runs the check on a *uniform random* sample of `sample_rows` rows per side instead of the quantile
sketch, to show what the sketch buys near the threshold.

`verdicts_equal` is over **all** scenarios: every column's verdict of ours equals Evidently's full-data
verdict in every scenario. Times are medians over the scenarios and exclude imports; `peak_rss_mb`
is the largest peak RSS of our child (data generated in it, Evidently imported, the check run).
With `--compare-rows M` the verdict comparison runs at M rows per side (Evidently full is ~1 min per
scenario at 1M), while our timing still runs at `--rows` on every scenario and Evidently's on one.
The last line is the JSON summary (with `--json`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from mlops_pipeline.devtools import example_data as ex
from mlops_pipeline.spec import DriftSpec

CATEGORICAL = ("plan", "region", "payment_method")
NUMERIC = tuple(name for name in ex.CHURN_FEATURES if name not in CATEGORICAL)
KINDS = {**dict.fromkeys(NUMERIC, "num"), **dict.fromkeys(CATEGORICAL, "cat")}
SCENARIOS = ("none", "num_shift", "cat_reweight", "many_small")

PLANS = np.array(ex.PLANS, dtype=object)
REGIONS = np.array(ex.REGIONS, dtype=object)
PAYMENTS = np.array(ex.PAYMENT_METHODS, dtype=object)
PLAN_P = (0.45, 0.35, 0.20)
PLAN_P_REWEIGHTED = (0.20, 0.35, 0.45)
REGION_P = (0.28, 0.22, 0.25, 0.25)
REGION_P_NUDGED = (0.24, 0.26, 0.25, 0.25)
PAYMENT_P = (0.40, 0.25, 0.20, 0.15)
# many_small: a shift per numeric column, in reference standard deviations.
SMALL_SHIFTS = dict(
    zip(NUMERIC, (0.0, 0.03, 0.06, 0.08, 0.09, 0.097, 0.103, 0.11, 0.12, 0.15, 0.2), strict=True)
)
REFERENCE_SEED, CURRENT_SEED = 11, 12


def churn_like(
    rows: int,
    seed: int,
    plan_p: tuple[float, ...] = PLAN_P,
    region_p: tuple[float, ...] = REGION_P,
    shifts: dict[str, float] | None = None,
) -> pd.DataFrame:
    """`rows` rows with the churn schema; int64/float64 numbers (NaN in two nullable ones), text
    categories; `shifts` (absolute amounts) added to numeric columns as the frame is built."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(3, size=rows, p=plan_p)
    region = rng.choice(4, size=rows, p=region_p)
    payment = rng.choice(4, size=rows, p=PAYMENT_P)
    age = np.clip(np.rint(rng.normal(44.0, 13.0, rows)), 18, 90).astype(np.int64)
    tenure = np.clip(np.floor(rng.gamma(1.4, 18.0, rows)), 0, 120).astype(np.int64)
    devices = np.clip(1 + rng.poisson(0.8 + 0.9 * plan), 1, 20).astype(np.int64)
    monthly = np.round(
        np.clip(np.array([35.0, 65.0, 100.0])[plan] + 4.0 * devices + rng.normal(0, 12, rows), 5, 495), 2
    )
    total = np.round(monthly * np.maximum(tenure, 1) * rng.uniform(0.85, 1.02, rows), 2)
    total[rng.random(rows) < 0.03] = np.nan
    usage = np.round(np.array([12.0, 35.0, 80.0])[plan] * rng.lognormal(0.0, 0.5, rows), 2)
    session = np.round(rng.gamma(4.0, 11.0, rows), 2)
    login = np.rint(rng.exponential(5.0, rows)).astype(np.int64)
    support = rng.poisson(1.5 + 0.3 * (plan == 0)).astype(np.int64)
    late = rng.poisson(1.2, rows).astype(np.int64)
    satisfaction = np.round(np.clip(rng.normal(6.8, 1.5, rows), 0, 10), 1)
    satisfaction[rng.random(rows) < 0.04] = np.nan
    columns: dict[str, np.ndarray] = {
        "tenure_months": tenure,
        "monthly_charges": monthly,
        "total_charges": total,
        "support_calls": support,
        "data_usage_gb": usage,
        "avg_session_minutes": session,
        "days_since_last_login": login,
        "num_devices": devices,
        "late_payments": late,
        "satisfaction_score": satisfaction,
        "age": age,
        "plan": PLANS[plan],
        "region": REGIONS[region],
        "payment_method": PAYMENTS[payment],
    }
    for column, amount in (shifts or {}).items():
        columns[column] = columns[column] + amount
    return pd.DataFrame(columns)


def scenario_frames(scenario: str, rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The reference and current frames of one scenario (deterministic)."""
    reference = churn_like(rows, REFERENCE_SEED)
    if scenario == "cat_reweight":
        return reference, churn_like(rows, CURRENT_SEED, plan_p=PLAN_P_REWEIGHTED)
    if scenario == "many_small":
        region_p, shifts = REGION_P_NUDGED, SMALL_SHIFTS
    else:
        region_p, shifts = REGION_P, {"monthly_charges": 0.5} if scenario == "num_shift" else {}
    # Shifted while the frame is built, so no unshifted copy is left behind in memory.
    amounts = {column: sds * float(reference[column].std(ddof=0)) for column, sds in shifts.items() if sds}
    return reference, churn_like(rows, CURRENT_SEED, region_p=region_p, shifts=amounts)


def _status_mb(key: str) -> float:
    """VmRSS / VmHWM of this process from /proc (Linux), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def _reset_peak_rss() -> None:
    """Free what data generation left behind and restart the peak (VmHWM) from the current RSS, so
    the peak measured afterwards is the check's: imports + the two frames + the check's own memory."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _evidently_verdicts(snapshot: Any) -> dict[str, dict[str, Any]]:
    from evidently.legacy.calculations.stattests.registry import _registered_stat_tests

    # A method Evidently chose itself is reported by its display name: map it back to the name.
    names = {
        test.display_name: name for name, tests in _registered_stat_tests.items() for test in tests.values()
    }
    result = snapshot.dict()
    status = {
        test["metric_config"]["metric_id"]: str(getattr(test["status"], "value", test["status"]))
        for test in result["tests"]
    }
    verdicts = {}
    for metric in result["metrics"]:
        if metric["config"]["type"].endswith(":ValueDrift"):
            verdicts[metric["config"]["column"]] = {
                "drifted": status[metric["id"]] == "FAIL",
                "score": float(metric["value"]),
                "method": names.get(metric["config"]["method"], metric["config"]["method"]),
            }
    return verdicts


def child(mode: str, scenario: str, rows: int, sample_rows: int) -> dict[str, Any]:
    """Run one check in this process; return its time, peak RSS and per-column verdicts."""
    started = time.perf_counter()
    import evidently  # noqa: F401 - imported before timing: the import is not the check

    from mlops_pipeline.drift import check_drift

    import_s = time.perf_counter() - started
    reference, current = scenario_frames(scenario, rows)
    data_mb = (reference.memory_usage(deep=False).sum() + current.memory_usage(deep=False).sum()) / 2**20
    _reset_peak_rss()
    rss_before = _status_mb("VmRSS")
    spec = DriftSpec(sample_rows=sample_rows)
    started, cpu_started = time.perf_counter(), time.process_time()
    if mode == "ours":
        report = check_drift(reference, current, KINDS, spec)
        verdicts = {
            c.column: {"drifted": c.drifted, "score": c.score, "method": c.method} for c in report.columns
        }
    elif mode == "random":
        rng = np.random.default_rng(0)

        def pick(data: pd.DataFrame) -> pd.DataFrame:
            size = min(len(data), spec.sample_rows)
            return data.iloc[np.sort(rng.choice(len(data), size, replace=False))]

        report = check_drift(pick(reference), pick(current), KINDS, spec)
        verdicts = {
            c.column: {"drifted": c.drifted, "score": c.score, "method": c.method} for c in report.columns
        }
    else:
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        definition = DataDefinition(numerical_columns=list(NUMERIC), categorical_columns=list(CATEGORICAL))
        snapshot = Report([DataDriftPreset()], include_tests=True).run(
            current_data=Dataset.from_pandas(current, data_definition=definition),
            reference_data=Dataset.from_pandas(reference, data_definition=definition),
        )
        verdicts = _evidently_verdicts(snapshot)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "mode": mode,
        "scenario": scenario,
        "rows": rows,
        "seconds": round(seconds, 3),
        "cpu_s": round(cpu_seconds, 3),
        "import_s": round(import_s, 2),
        "data_mb": round(data_mb),
        "rss_before_check_mb": round(rss_before),
        "peak_rss_mb": round(_status_mb("VmHWM")),
        "verdicts": verdicts,
    }


def _run_child(mode: str, scenario: str, rows: int, sample_rows: int) -> dict[str, Any]:
    env = {**os.environ, "DO_NOT_TRACK": "1", "EVIDENTLY_DISABLE_TELEMETRY": "1"}
    command = [sys.executable, __file__, "--child", mode, "--scenario", scenario, "--rows", str(rows)]
    command += ["--sample-rows", str(sample_rows)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode}/{scenario} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(ours: dict[str, Any], full: dict[str, Any]) -> dict[str, Any]:
    """Columns whose verdict differs, the largest score difference, and method mismatches."""
    a, b = ours["verdicts"], full["verdicts"]
    return {
        "differing": sorted(c for c in a if a[c]["drifted"] != b[c]["drifted"]),
        "max_score_diff": max(abs(a[c]["score"] - b[c]["score"]) for c in a),
        "method_mismatch": sorted(c for c in a if a[c]["method"] != b[c]["method"]),
        "drifted_full": sorted(c for c in b if b[c]["drifted"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per side")
    parser.add_argument(
        "--compare-rows", type=int, default=None, help="rows per side of the verdict comparison"
    )
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument(
        "--sample-rows", type=int, default=DriftSpec().sample_rows, help="drift.sample_rows of our check"
    )
    parser.add_argument("--no-random", action="store_true", help="skip the uniform random sample contrast")
    parser.add_argument("--json", action="store_true", help="end with a JSON summary line")
    parser.add_argument("--child", choices=("ours", "evidently", "random"), help=argparse.SUPPRESS)
    parser.add_argument("--scenario", choices=SCENARIOS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.scenario, args.rows, args.sample_rows)))
        return

    compare_rows = args.compare_rows or args.rows
    run_child = functools.partial(_run_child, sample_rows=args.sample_rows)
    ours = {s: run_child("ours", s, args.rows) for s in args.scenarios}
    for s, result in ours.items():
        print(f"ours      {s:13s} {_timing(result)}", flush=True)
    if compare_rows == args.rows:
        ours_cmp = ours
    else:
        ours_cmp = {s: run_child("ours", s, compare_rows) for s in args.scenarios}
    full, random_, details = {}, {}, {}
    for s in args.scenarios:
        full[s] = run_child("evidently", s, compare_rows)
        details[s] = compare(ours_cmp[s], full[s])
        if not args.no_random:
            random_[s] = run_child("random", s, compare_rows)
            details[s]["random_differing"] = compare(random_[s], full[s])["differing"]
        print(f"evidently {s:13s} {_timing(full[s])}  {json.dumps(details[s])}", flush=True)
    full_timed = list(full.values())
    if compare_rows != args.rows:
        full_timed = [run_child("evidently", "num_shift", args.rows)]
        print(f"evidently {'num_shift':13s} {_timing(full_timed[0])}", flush=True)

    def median(results: list[dict[str, Any]], key: str) -> float:
        return round(statistics.median(r[key] for r in results), 2)

    ours_s, evidently_s = median(list(ours.values()), "seconds"), median(full_timed, "seconds")
    summary: dict[str, Any] = {
        "rows": args.rows,
        "ours_s": ours_s,
        "evidently_full_s": evidently_s,
        "speedup": round(evidently_s / ours_s, 1),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in ours.values()),
        "verdicts_equal": all(not d["differing"] and not d["method_mismatch"] for d in details.values()),
        "verdicts_scope": f"all {len(args.scenarios)} scenarios ({', '.join(args.scenarios)}), every column",
        "verdict_rows": compare_rows,
        "max_score_diff": float(f"{max(d['max_score_diff'] for d in details.values()):.2g}"),
        "ours_cpu_s": median(list(ours.values()), "cpu_s"),
        "evidently_full_cpu_s": median(full_timed, "cpu_s"),
        "rss_before_check_mb": max(r["rss_before_check_mb"] for r in ours.values()),
        "evidently_full_peak_rss_mb": max(r["peak_rss_mb"] for r in full_timed),
        "timing": "median over the scenarios, imports excluded, one child process per check",
    }
    if random_:
        summary["random_sample_verdicts_equal"] = all(not d["random_differing"] for d in details.values())
        summary["random_sample_differing"] = {
            s: d["random_differing"] for s, d in details.items() if d["random_differing"]
        }
    print(json.dumps(summary) if args.json else summary)


def _timing(result: dict[str, Any]) -> str:
    return (
        f"{result['rows']:>9,} rows  {result['seconds']:7.2f} s (cpu {result['cpu_s']:.2f} s)"
        f"  peak {result['peak_rss_mb']} MB"
    )


if __name__ == "__main__":
    main()
