"""Data drift: does the current window's data still look like the reference data?

The check *is* Evidently's `DataDriftPreset` (one `ValueDrift` metric and test per column, and
`DriftedColumnsCount`), run with the methods and thresholds of the model spec's `drift` section:

* **Distances, never p-values.** The methods are named explicitly (Wasserstein distance normed by
  the reference's standard deviation for numeric columns, Jensen-Shannon distance for categorical
  ones, or the spec's overrides), so Evidently never picks a p-value test on its own (it does on
  samples of at most 1,000 rows, and those tests alarm on identical data once samples are large).
  A distance measures *how far* the distributions moved, so the threshold means the same at 1k rows
  and at 1M rows.
* **A noise floor for small windows.** Two samples of the same distribution still differ by chance,
  by about 1/sqrt(rows): at a few hundred rows a side that alone can reach 0.1. So the default
  threshold of each column is raised to the score identical data exceed with probability
  `drift.false_alarm_rate` / columns (from the statistic's large-sample law, see
  :func:`noise_floors`); a whole check of identical data then alarms at most that often. From a
  few thousand rows up the floor is below the threshold and changes nothing. A threshold the spec
  sets for one column is used as written.
* **Scores from the metrics, verdicts from the tests.** A column's score is its `ValueDrift` value and
  it drifted when its `ValueDrift` test failed; the method and threshold Evidently actually used are
  read back and must be the ones asked for, so a silent fallback cannot go unnoticed.
* **Nulls are not drift.** Evidently drops nulls (NaN, None) before comparing; a change in the null
  rate is the validation step's business. A column with no values at all on one side is an error.

Size. Evidently is slow and memory-hungry on large windows: 1M vs 1M rows takes 35-63 s and
1.2-1.3 GB (it computes every column's drift three times and builds plotly figures on the way),
while 50k vs 50k takes about 2 s with nearly the same scores. So each side holding more than
`drift.sample_rows` (default 50,000) rows is reduced to `sample_rows` rows before Evidently sees it,
but *not* by a uniform random sample: a random sample moves a normed Wasserstein score by about
±0.005 (one sd, 100k of 1M rows), so a column whose true score is within ~0.01 of the threshold
gets a verdict that depends on the seed (27% of seeds flipped at a true score of 0.104 against 0.1).
Instead each column is reduced to a **quantile sketch** of the full data:

* numeric: the order statistics at the midpoints of `k` equal blocks of the sorted non-null values
  (`k` = the side's non-null share of `sample_rows`), i.e. the quantile function at (i + 0.5) / k.
  Its Wasserstein distance to the full data is at most (max - min) / k, and in practice ~1e-6 of a
  standard deviation, so the normed Wasserstein score equals the full-data score for all practical
  purposes (and so does every other score, as the sketch reproduces the histogram to 1/k);
* categorical: every value (and the nulls) repeated in proportion to its full-data frequency,
  rounded by largest remainders, so shares are exact to 1/`sample_rows` and the Jensen-Shannon
  distance is the full-data one to ~1e-5.

The sketch of each column is shuffled (seeded by `seed`, which affects nothing but row order), so
the rows Evidently compares are not real rows: each column is exact on its own but the columns are
unrelated, which a per-column univariate check does not need. Windows at or below `sample_rows` go to
Evidently unchanged. The HTML and JSON are Evidently's own, with the sizes in the snapshot metadata.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlops_pipeline.spec import DriftSpec

ColumnKind = Literal["num", "cat"]
_KINDS = ("num", "cat")


@dataclass(frozen=True)
class ColumnDrift:
    """One column's verdict: Evidently's score with the method and threshold it used."""

    column: str
    kind: str  # "num" | "cat"
    method: str
    score: float
    threshold: float
    drifted: bool
    # The score identical distributions reach by chance at these sample sizes (0 when not computed);
    # unless the spec sets the column's threshold, `threshold` is the larger of the spec's threshold
    # and this floor.
    noise_floor: float = 0.0


@dataclass(frozen=True)
class DriftReport:
    """The outcome of :func:`check_drift`.

    `sampled_rows` is the number of rows per side Evidently compared: a side with more rows than
    that was reduced to a quantile sketch of exactly `sampled_rows` rows, a smaller side was compared
    whole (so it compared `min(side rows, sampled_rows)` rows).
    """

    columns: tuple[ColumnDrift, ...]
    drifted_share: float
    dataset_drift: bool
    reference_rows: int
    current_rows: int
    sampled_rows: int
    snapshot: Any = field(repr=False, compare=False)

    @property
    def sketched(self) -> bool:
        """Whether either side was reduced to a quantile sketch."""
        return max(self.reference_rows, self.current_rows) > self.sampled_rows

    def drifted_columns(self) -> list[str]:
        """The columns that drifted, in the order they were checked."""
        return [item.column for item in self.columns if item.drifted]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (everything but the Evidently snapshot)."""
        return {
            "columns": [
                {
                    "column": item.column,
                    "kind": item.kind,
                    "method": item.method,
                    "score": _json_float(item.score),
                    "threshold": item.threshold,
                    "drifted": item.drifted,
                    "noise_floor": item.noise_floor,
                }
                for item in self.columns
            ],
            "drifted_columns": self.drifted_columns(),
            "drifted_share": self.drifted_share,
            "dataset_drift": self.dataset_drift,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "sampled_rows": self.sampled_rows,
            "sketched": self.sketched,
        }


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def column_method(column: str, kind: str, drift: DriftSpec) -> str:
    """The Evidently method the spec asks for on `column`: its override, else the kind's method."""
    return drift.column_methods.get(column) or (drift.num_method if kind == "num" else drift.cat_method)


def _check_inputs(reference: pd.DataFrame, current: pd.DataFrame, kinds: dict[str, str]) -> None:
    if not kinds:
        raise ValueError("kinds is empty: name at least one column to check for drift")
    if bad := {column: kind for column, kind in kinds.items() if kind not in _KINDS}:
        raise ValueError(f"column kinds must be 'num' or 'cat', got {bad}")
    for side, frame in (("reference", reference), ("current", current)):
        if missing := [column for column in kinds if column not in frame.columns]:
            raise ValueError(f"the {side} data has no column(s) {missing}")
        if frame.empty:
            raise ValueError(f"the {side} data has no rows")


def _check_methods(kinds: dict[str, str], drift: DriftSpec) -> None:
    """Refuse a method that Evidently cannot apply to a column's kind (e.g. Wasserstein on text)."""
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    column_types = {"num": ColumnType.Numerical, "cat": ColumnType.Categorical}
    for column, kind in kinds.items():
        method = column_method(column, kind, drift)
        try:
            get_registered_stattest(method, column_types[kind])
        except Exception as exc:  # Evidently raises its own StatTest*Error types
            noun = "numeric" if kind == "num" else "categorical"
            raise ValueError(
                f"drift method {method!r} cannot be used on the {noun} column {column!r}"
            ) from exc


def _numeric_values(series: pd.Series, side: str) -> np.ndarray:
    """float64 values with NaN for every null (nullable Int64, pd.NA, None) and for ±inf.

    A clean float64 column is returned without a copy (1M rows are 8 MB): callers never modify it.
    """
    if series.dtype == np.float64:
        values = series.to_numpy()
    else:
        try:
            values = pd.to_numeric(series, errors="raise").to_numpy(dtype="float64", na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"numeric column {series.name!r} in the {side} data holds non-numbers: {exc}"
            ) from exc
    infinite = np.isinf(values)
    return np.where(infinite, np.nan, values) if infinite.any() else values


def _categorical_values(series: pd.Series) -> np.ndarray:
    """Text values as Python str and every null (None, NaN, pd.NA) as None, in an object array."""
    values = series.astype(object)
    nulls = values.isna().to_numpy()
    out = values.astype(str).to_numpy(dtype=object)
    out[nulls] = None
    return out


def _category_counts(series: pd.Series) -> dict[str | None, int]:
    """Rows per value as text, with the nulls (None, NaN, pd.NA) counted under None."""
    counts: dict[str | None, int] = {}
    for label, count in series.value_counts(dropna=False, sort=False).items():
        key = None if pd.isna(label) else str(label)
        counts[key] = counts.get(key, 0) + int(count)
    return counts


def _numeric_sketch(values: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` values whose distribution is the quantile function of `values` at (i + 0.5) / k.

    k is the non-null share of `size` (nulls stay nulls, in proportion); the chosen values are order
    statistics of the data, so discrete columns keep exactly their values.
    """
    finite = values[~np.isnan(values)]
    kept = round(size * len(finite) / len(values))
    if len(finite) and not kept:
        kept = 1
    finite.sort()
    positions = ((np.arange(kept) + 0.5) * (len(finite) / max(kept, 1))).astype(np.int64)
    out = np.full(size, np.nan)
    out[:kept] = finite[positions]
    return rng.permutation(out)


def _categorical_sketch(counts: dict[str | None, int], size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` values, each value (and None) repeated by its share of `counts`, by largest remainders."""
    labels = np.empty(len(counts), dtype=object)
    labels[:] = list(counts)
    quotas = np.array(list(counts.values()), dtype="float64") * size / sum(counts.values())
    repeats = np.floor(quotas).astype(np.int64)
    left = size - int(repeats.sum())
    repeats[np.argsort(repeats - quotas, kind="stable")[:left]] += 1
    return rng.permutation(np.repeat(labels, repeats))


def _compared_frame(
    frame: pd.DataFrame, kinds: dict[str, str], size: int, side: str, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The checked columns in clean dtypes (a quantile sketch of `size` rows when the frame is
    larger) and each column's number of non-null values in the whole frame."""
    sketch = len(frame) > size
    columns: dict[str, Any] = {}
    present: dict[str, int] = {}
    for column, kind in kinds.items():
        if kind == "num":
            values = _numeric_values(frame[column], side)
            present[column] = int(np.count_nonzero(~np.isnan(values)))
            if present[column]:
                columns[column] = _numeric_sketch(values, size, rng) if sketch else values
        elif sketch:
            counts = _category_counts(frame[column])
            present[column] = sum(count for label, count in counts.items() if label is not None)
            if present[column]:
                columns[column] = _categorical_sketch(counts, size, rng)
        else:
            text = _categorical_values(frame[column])
            present[column] = int(np.count_nonzero(~pd.isna(text)))
            columns[column] = text
        if not present[column]:
            raise ValueError(f"column {column!r} has no non-null values in the {side} data")
    return pd.DataFrame(columns), present


_BRIDGES = 20_000  # enough draws for the tail quantile a small alpha / columns asks for


@functools.lru_cache(maxsize=1)
def _abs_bridges(grid: int) -> np.ndarray:
    """|B(u)| of `_BRIDGES` Brownian bridges at u = 1/grid ... (grid-1)/grid (fixed seed: reproducible).

    Made 1,000 bridges at a time and kept as float32: 10 MB, with no large float64 temporaries.
    """
    rng = np.random.default_rng(20260101)
    u = np.arange(1, grid) / grid
    out = np.empty((_BRIDGES, grid - 1), dtype=np.float32)
    for start in range(0, _BRIDGES, 1_000):
        walks = np.cumsum(rng.normal(0.0, grid**-0.5, (1_000, grid)), axis=1)
        out[start : start + 1_000] = np.abs(walks[:, :-1] - u * walks[:, -1:])
    return out


def _wasserstein_floor(reference: np.ndarray, n_ref: int, n_cur: int, alpha: float) -> float:
    """The normed Wasserstein score that identical distributions exceed with probability `alpha`.

    Under identical distributions sqrt(n m / (n + m)) * W1 tends to L = integral of |B(F(x))| dx,
    B a Brownian bridge and F the common distribution (here: the reference's). L is simulated on a
    grid of 128 quantiles of F (20,000 bridges, fixed seed) and its (1 - alpha) quantile scaled back.
    """
    finite = np.sort(reference[~np.isnan(reference)])
    norm = max(float(np.std(finite)), 0.001)  # as Evidently norms it
    grid = 128
    quantiles = finite[((np.arange(grid) + 0.5) * (len(finite) / grid)).astype(np.int64)]
    gaps = np.diff(quantiles)  # dF^-1 between consecutive quantiles, at u = 1/grid ... (grid-1)/grid
    if not gaps.any():
        return 0.0
    limit = float(np.quantile(_abs_bridges(grid) @ gaps.astype(np.float32), 1.0 - alpha))
    return limit / norm * math.sqrt(1 / n_ref + 1 / n_cur)


def _jensenshannon_floor(categories: int, n_ref: int, n_cur: int, alpha: float) -> float:
    """The Jensen-Shannon distance that identical distributions exceed with probability `alpha`.

    For close distributions JS divergence ~ chi2 (homogeneity, categories - 1 dof) * (1/n + 1/m) / 8.
    """
    from scipy.stats import chi2

    if categories < 2:
        return 0.0
    return math.sqrt(float(chi2.ppf(1.0 - alpha, categories - 1)) * (1 / n_ref + 1 / n_cur) / 8)


def noise_floors(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    present: tuple[dict[str, int], dict[str, int]],
    kinds: dict[str, str],
    drift: DriftSpec,
) -> dict[str, float]:
    """Per column, the score that identical data reach with probability `drift.false_alarm_rate` /
    columns.

    So one check of identical data alarms with probability at most `drift.false_alarm_rate`
    (Bonferroni).
    Only for the normed Wasserstein and categorical Jensen-Shannon methods; 0 for the others. It
    shrinks as 1/sqrt(rows): a few thousand rows a side bring it under the usual 0.1 threshold.
    """
    alpha = drift.false_alarm_rate / len(kinds)
    floors = {}
    for column, kind in kinds.items():
        method = column_method(column, kind, drift)
        n_ref, n_cur = present[0][column], present[1][column]
        if kind == "num" and method == "wasserstein":
            floors[column] = _wasserstein_floor(reference[column].to_numpy(), n_ref, n_cur, alpha)
        elif kind == "cat" and method == "jensenshannon":
            labels = set(reference[column].dropna()) | set(current[column].dropna())
            floors[column] = _jensenshannon_floor(len(labels), n_ref, n_cur, alpha)
        else:
            floors[column] = 0.0
    return floors


def _status(value: Any) -> str:
    return str(getattr(value, "value", value))


def _read_snapshot(
    snapshot: Any,
    kinds: dict[str, str],
    drift: DriftSpec,
    thresholds: dict[str, float],
    floors: dict[str, float],
) -> tuple[tuple[ColumnDrift, ...], int, bool]:
    """Per-column results (score from each ValueDrift metric, verdict from its test), the drifted
    count and the dataset verdict of DriftedColumnsCount, joined by metric id."""
    result = snapshot.dict()
    status = {test["metric_config"]["metric_id"]: _status(test["status"]) for test in result["tests"]}
    by_column: dict[str, ColumnDrift] = {}
    drifted_count: int | None = None
    dataset_drift: bool | None = None
    for metric in result["metrics"]:
        config = metric["config"]
        kind_of_metric = config["type"].rsplit(":", 1)[-1]
        verdict = status.get(metric["id"])
        if verdict not in ("SUCCESS", "FAIL"):
            raise RuntimeError(f"Evidently test of {metric['metric_name']} ended with status {verdict}")
        if kind_of_metric == "DriftedColumnsCount":
            drifted_count = round(metric["value"]["count"])
            dataset_drift = verdict == "FAIL"
        elif kind_of_metric == "ValueDrift":
            column = config["column"]
            method, threshold = config.get("method"), config.get("threshold")
            wanted = (column_method(column, kinds[column], drift), thresholds[column])
            if (method, threshold) != wanted:
                raise RuntimeError(
                    f"Evidently checked {column!r} with method {method!r} and threshold {threshold!r}, "
                    f"not the {wanted[0]!r} and {wanted[1]!r} asked for"
                )
            by_column[column] = ColumnDrift(
                column=column,
                kind=kinds[column],
                method=method,
                score=float(metric["value"]),
                threshold=float(threshold),
                drifted=verdict == "FAIL",
                noise_floor=floors[column],
            )
    if set(by_column) != set(kinds) or drifted_count is None or dataset_drift is None:
        raise RuntimeError(f"Evidently's report lacks results for {sorted(set(kinds) - set(by_column))}")
    columns = tuple(by_column[column] for column in kinds)
    if drifted_count != sum(item.drifted for item in columns):
        raise RuntimeError(
            f"Evidently counts {drifted_count} drifted columns but its per-column tests fail "
            f"{sum(item.drifted for item in columns)}"
        )
    return columns, drifted_count, dataset_drift


def _telemetry_off() -> None:
    # Evidently's telemetry is only sent by its UI, but keep it off for any code path that might.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("EVIDENTLY_DISABLE_TELEMETRY", "1")


def check_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    kinds: dict[str, str],
    drift: DriftSpec,
    *,
    seed: int = 0,
) -> DriftReport:
    """Compare `current` with `reference` column by column with Evidently's DataDriftPreset.

    `kinds` maps each column to check to "num" or "cat" (other columns of the frames are ignored).
    Methods come from `drift` (per-column overrides first). A column's threshold is its
    `drift.column_thresholds` entry exactly as written, else `drift.threshold` raised to the
    column's noise floor at these sample sizes (:func:`noise_floors`, at `drift.false_alarm_rate`),
    so that the defaults do not alarm on identical data however few rows there are. A column
    drifted when its score reaches its threshold, and the window drifted when the share of drifted
    columns reaches `drift.drift_share`. Sides larger than `drift.sample_rows` are compared as
    quantile sketches (see the module docstring); `seed` only orders the sketch rows. Raises
    ValueError for unusable input (missing column, unknown kind, a method that does not fit the
    kind, a column with no values).
    """
    _check_inputs(reference, current, kinds)
    _telemetry_off()
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    _check_methods(kinds, drift)
    size = drift.sample_rows
    rng = np.random.default_rng(seed)
    sampled_rows = min(size, max(len(reference), len(current)))
    reference_frame, reference_present = _compared_frame(reference, kinds, size, "reference", rng)
    current_frame, current_present = _compared_frame(current, kinds, size, "current", rng)
    floors = noise_floors(
        reference_frame,
        current_frame,
        (reference_present, current_present),
        kinds,
        drift,
    )
    thresholds = {
        column: drift.column_thresholds.get(column, max(drift.threshold, floors[column])) for column in kinds
    }

    columns = list(kinds)
    definition = DataDefinition(
        numerical_columns=[column for column in columns if kinds[column] == "num"],
        categorical_columns=[column for column in columns if kinds[column] == "cat"],
    )
    preset = DataDriftPreset(
        columns=columns,
        drift_share=drift.drift_share,
        num_method=drift.num_method,
        cat_method=drift.cat_method,
        per_column_method={c: m for c, m in drift.column_methods.items() if c in kinds} or None,
        threshold=drift.threshold,
        per_column_threshold=thresholds,
    )
    metadata = {
        "reference_rows": str(len(reference)),
        "current_rows": str(len(current)),
        "sampled_rows": str(sampled_rows),
        "comparison": "quantile sketch" if len(reference) > size or len(current) > size else "full data",
        "noise_floors": {column: f"{floor:.4f}" for column, floor in floors.items()},
    }
    # Evidently copies each frame into its Dataset: ours are dropped at once (memory at 1M rows).
    reference_data = Dataset.from_pandas(reference_frame, data_definition=definition)
    current_data = Dataset.from_pandas(current_frame, data_definition=definition)
    del reference_frame, current_frame
    snapshot = Report([preset], metadata=metadata, include_tests=True).run(
        current_data=current_data, reference_data=reference_data, name="data drift"
    )
    checked, drifted_count, dataset_drift = _read_snapshot(snapshot, kinds, drift, thresholds, floors)
    return DriftReport(
        columns=checked,
        drifted_share=drifted_count / len(checked),
        dataset_drift=dataset_drift,
        reference_rows=len(reference),
        current_rows=len(current),
        sampled_rows=sampled_rows,
        snapshot=snapshot,
    )


def save_report(report: DriftReport, html_path: Path, json_path: Path) -> None:
    """Write Evidently's HTML report and its JSON (metrics and tests) for `report`."""
    for path in (html_path, json_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Snapshot.save_html/save_json silently write nothing unless given a str.
    report.snapshot.save_html(str(html_path))
    report.snapshot.save_json(str(json_path))


def add_to_workspace(workspace: str | Path, project: str, reports: dict[str, DriftReport]) -> list[str]:
    """Add each report's Evidently snapshot, under its name, to `project` of the local Evidently
    workspace at `workspace` (created when missing); return the snapshot ids.

    The project is found by name, so every window of a model lands in one project and Evidently's
    UI (`evidently ui --workspace <folder>`) lists them over time. Telemetry is off (the UI is the
    only part of Evidently that sends any).
    """
    _telemetry_off()
    from evidently.ui.workspace import Workspace

    Path(workspace).mkdir(parents=True, exist_ok=True)
    space = Workspace.create(str(workspace))
    found = space.search_project(project)
    target = (
        found[0] if found else space.create_project(project, description="drift checks, one run per window")
    )
    return [str(space.add_run(target.id, report.snapshot, name=name).id) for name, report in reports.items()]
