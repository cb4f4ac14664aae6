"""Calibration of `check_drift`: false alarms on identical distributions, detection of a real shift.

    .venv/bin/python benchmarks/calibrate_drift.py --json [--resamples 50] [--sizes 1000 10000 ...]

* **False-alarm rate** at each size (default 1k, 10k, 100k and 1M rows per side): reference and
  current are independent samples of the same churn-like generator (benchmarks/bench_drift.py,
  14 columns); a resample is a false alarm when *any* column drifted. Target: at most 5% at every
  size. The largest score seen is reported next to the threshold (0.1), as the noise floor.
* **Detection rate** at 10k rows: `monthly_charges` of the current side shifted by 0.5 reference
  standard deviations; detected when that column drifted (and "exactly" when no other did).
  Target: at least 95%.

Every check uses the default DriftSpec (normed Wasserstein / Jensen-Shannon, threshold 0.1,
sample_rows 50,000: the 100k- and 1M-row checks run on quantile sketches). Each resample draws new data
(seeds 2i and 2i+1 of a per-size stream). The last line is the JSON summary (with `--json`).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

# Run as a script, this folder is on sys.path: the generator is shared with the benchmark.
from bench_drift import KINDS, churn_like

from mlops_pipeline.spec import DriftSpec

FALSE_ALARM_TARGET = 0.05
DETECTION_TARGET = 0.95
SHIFTED = "monthly_charges"


def false_alarms(rows: int, resamples: int, drift: DriftSpec) -> dict[str, Any]:
    """Share of resamples of identical distributions in which any column drifted."""
    from mlops_pipeline.drift import check_drift

    started = time.perf_counter()
    alarms, max_scores, alarm_columns = 0, [], {}
    for i in range(resamples):
        base = 1_000 * rows.bit_length() + 2 * i  # a separate seed stream per size
        report = check_drift(churn_like(rows, base), churn_like(rows, base + 1), KINDS, drift)
        drifted = report.drifted_columns()
        alarms += bool(drifted)
        for column in drifted:
            alarm_columns[column] = alarm_columns.get(column, 0) + 1
        max_scores.append(max(item.score for item in report.columns))
    return {
        "rows": rows,
        "resamples": resamples,
        "alarms": alarms,
        "rate": alarms / resamples,
        "max_score": round(float(np.max(max_scores)), 4),
        "p95_max_score": round(float(np.quantile(max_scores, 0.95)), 4),
        "alarm_columns": alarm_columns,
        "seconds": round(time.perf_counter() - started, 1),
    }


def detection(rows: int, resamples: int, shift_sd: float, drift: DriftSpec) -> dict[str, Any]:
    """Share of resamples in which a `shift_sd` sd shift of one column was detected."""
    from mlops_pipeline.drift import check_drift

    started = time.perf_counter()
    detected = exact = 0
    scores = []
    for i in range(resamples):
        base = 7_000_000 + 2 * i
        reference, current = churn_like(rows, base), churn_like(rows, base + 1)
        current[SHIFTED] = current[SHIFTED] + shift_sd * float(reference[SHIFTED].std(ddof=0))
        report = check_drift(reference, current, KINDS, drift)
        drifted = report.drifted_columns()
        detected += SHIFTED in drifted
        exact += drifted == [SHIFTED]
        scores.append(next(item.score for item in report.columns if item.column == SHIFTED))
    return {
        "rows": rows,
        "shift_sd": shift_sd,
        "column": SHIFTED,
        "resamples": resamples,
        "rate": detected / resamples,
        "exact_rate": exact / resamples,
        "min_score": round(float(np.min(scores)), 4),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resamples", type=int, default=50, help="resamples per size (default 50)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--detect-rows", type=int, default=10_000)
    parser.add_argument("--shift-sd", type=float, default=0.5)
    parser.add_argument("--json", action="store_true", help="end with a JSON summary line")
    args = parser.parse_args()

    drift = DriftSpec()
    started = time.perf_counter()
    import evidently  # noqa: F401 - once, before any timing

    sizes = []
    for rows in args.sizes:
        result = false_alarms(rows, args.resamples, drift)
        sizes.append(result)
        print(json.dumps({"false_alarms": result}), flush=True)
    detected = detection(args.detect_rows, args.resamples, args.shift_sd, drift)
    print(json.dumps({"detection": detected}), flush=True)
    summary = {
        "threshold": drift.threshold,
        "false_alarm_rate": {str(r["rows"]): r["rate"] for r in sizes},
        "false_alarm_max_score": {str(r["rows"]): r["max_score"] for r in sizes},
        "resamples": args.resamples,
        "detection_rate": detected["rate"],
        "detection_exact_rate": detected["exact_rate"],
        "detection_rows": detected["rows"],
        "shift_sd": detected["shift_sd"],
        "seconds_per_size": {str(r["rows"]): r["seconds"] for r in sizes},
        "targets_met": all(r["rate"] <= FALSE_ALARM_TARGET for r in sizes)
        and detected["rate"] >= DETECTION_TARGET,
        "seconds_total": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary) if args.json else summary)


if __name__ == "__main__":
    main()
