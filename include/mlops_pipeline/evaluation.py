"""Evaluation: metrics on the holdout and the promotion gate.

`evaluate_gates` is pure: it takes numbers and the spec's gates and returns a `GateReport`,
the single reason a candidate is or is not promoted. Measuring (metrics, slices, latency, size)
is done by the small functions above it.
"""

from __future__ import annotations

import html
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from mlops_pipeline.fairness import FairnessReport
from mlops_pipeline.spec import GateSpec, ModelSpec
from mlops_pipeline.training import features_frame, target_series

CheckKind = Literal["floor", "regression", "slice", "latency", "size", "fairness"]


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """rmse, mae, r2; and mape where no true value is zero (it divides by them)."""
    from sklearn import metrics as m

    y_true = np.asarray(y_true, dtype="float64")
    result = {
        "rmse": float(math.sqrt(m.mean_squared_error(y_true, y_pred))),
        "mae": float(m.mean_absolute_error(y_true, y_pred)),
        "r2": float(m.r2_score(y_true, y_pred)),
    }
    if len(y_true) and not np.any(y_true == 0):
        result["mape"] = float(m.mean_absolute_percentage_error(y_true, y_pred))
    return result


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray | None,
    classes: list[Any],
    positive: Any | None = None,
) -> dict[str, float]:
    """The metrics of a classifier whose `classes` (in the order of `proba`'s columns) the labels are.

    Two classes: accuracy, F1, precision, recall (and ROC AUC, log loss) of the `positive` class
    (default: the last, 1 of 0/1). More:
    accuracy, balanced accuracy, macro and weighted F1, one-vs-rest ROC AUC and log loss.
    Probability metrics only when probabilities are given and the true labels hold two or more
    classes (ROC AUC is undefined otherwise).
    """
    from sklearn import metrics as m

    result = {"accuracy": float(m.accuracy_score(y_true, y_pred))}
    present = len(pd.unique(np.asarray(y_true, dtype=object)))
    if len(classes) <= 2:
        positive = classes[-1] if positive is None else positive
        result |= {
            "f1": float(m.f1_score(y_true, y_pred, pos_label=positive, zero_division=0)),
            "precision": float(m.precision_score(y_true, y_pred, pos_label=positive, zero_division=0)),
            "recall": float(m.recall_score(y_true, y_pred, pos_label=positive, zero_division=0)),
        }
        if proba is not None and present == 2:
            column = proba[:, classes.index(positive)] if proba.ndim == 2 else proba
            is_positive = np.asarray(y_true == positive, dtype=int)
            result["roc_auc"] = float(m.roc_auc_score(is_positive, column))
            result["log_loss"] = float(
                m.log_loss(is_positive, np.clip(column, 1e-15, 1 - 1e-15), labels=[0, 1])
            )
        return result
    result |= {
        "balanced_accuracy": float(m.balanced_accuracy_score(y_true, y_pred)),
        "f1_macro": float(m.f1_score(y_true, y_pred, average="macro", labels=classes, zero_division=0)),
        "f1_weighted": float(m.f1_score(y_true, y_pred, average="weighted", labels=classes, zero_division=0)),
    }
    if proba is not None and present >= 2:
        clipped = np.clip(proba, 1e-15, 1.0)
        clipped = clipped / clipped.sum(axis=1, keepdims=True)
        result["log_loss"] = float(m.log_loss(y_true, clipped, labels=classes))
        if present == len(classes):
            result["roc_auc_ovr"] = float(
                m.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=classes)
            )
    return result


def compute_metrics(
    task: str,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray | None,
    classes: list[Any] | None = None,
    positive: Any | None = None,
) -> dict[str, float]:
    """The standard metrics of `task`; probability metrics only when probabilities are given.

    `proba`: one column per class in the order of `classes` (a 1-d array is the positive class's
    probability of a binary model); `classes` default to the sorted labels of `y_true`.
    """
    if task == "regression":
        return regression_metrics(y_true, y_pred)
    if classes is None:
        classes = sorted(pd.unique(np.asarray(y_true, dtype=object)).tolist())
        if len(classes) < 2:
            classes = [0, 1] if proba is not None and proba.ndim == 1 else classes * 2
    return classification_metrics(y_true, y_pred, proba, list(classes), positive)


@dataclass(frozen=True, eq=False)
class Predictions:
    """A fitted pipeline's predictions on a frame, beside the true values: the metrics of the frame
    or of any subset of its rows, without predicting again.

    scikit-learn predicts each row on its own, so the predictions of a subset are those rows of the
    frame's predictions, and so are its metrics.
    """

    y_true: np.ndarray
    y_pred: np.ndarray
    proba: np.ndarray | None  # classification: a column per class, in the order of `classes`
    classes: list[Any] | None  # None: regression
    positive: Any | None = None

    def metrics(self, rows: np.ndarray | None = None) -> dict[str, float]:
        """The metrics of every row, or of the rows at the positions `rows`."""
        y_true, y_pred, proba = self.y_true, self.y_pred, self.proba
        if rows is not None:
            y_true, y_pred = y_true[rows], y_pred[rows]
            proba = None if proba is None else proba[rows]
        if self.classes is None:
            return regression_metrics(y_true, y_pred)
        return classification_metrics(y_true, y_pred, proba, self.classes, self.positive)


def predict_frame(pipeline: Any, frame: pd.DataFrame, spec: ModelSpec) -> Predictions:
    """A fitted pipeline's predictions (and class probabilities) on `frame` (features + target)."""
    features = features_frame(frame, spec)
    y_true = target_series(frame, spec).to_numpy()
    model, features = _preprocessed(pipeline, features)
    if not spec.is_classification:
        return Predictions(y_true, model.predict(features), None, None)
    from mlops_pipeline.targets import positive_label

    classes = list(pipeline.classes_)
    positive = positive_label(spec, classes) if len(classes) == 2 else None
    proba = model.predict_proba(features)
    return Predictions(y_true, _predicted_labels(model, features, proba), proba, classes, positive)


# Where the two largest probabilities of a row are closer than this, its label is the model's own
# `predict`: a binary model's label is the sign of its decision function, which can differ from the
# larger probability only where the two probabilities round to a tie.
LABEL_TIE_MARGIN = 1e-6


def _predicted_labels(model: Any, features: Any, proba: np.ndarray) -> np.ndarray:
    """`model.predict(features)`, from the probabilities already computed where that is the same.

    The classifiers of the spec's `kind`s (scikit-learn's histogram gradient boosting, random
    forest and logistic regression; the classes themselves, not subclasses) predict the class of
    the largest probability (their source: argmax of `predict_proba`, or the sign of the decision
    function it is a monotone function of), so predicting again would redo the model's whole work
    (1M rows of gradient boosting: 4.4 s); rows near a tie are predicted by the model. Any other
    estimator predicts every row itself: its `predict` may use a threshold of its own.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    if type(model) not in (HistGradientBoostingClassifier, RandomForestClassifier, LogisticRegression):
        return np.asarray(model.predict(features))
    labels = np.asarray(model.classes_)[np.argmax(proba, axis=1)]
    if len(labels) == 0 or proba.shape[1] < 2:
        return labels
    ordered = np.sort(proba, axis=1)
    near_tie = np.flatnonzero(ordered[:, -1] - ordered[:, -2] < LABEL_TIE_MARGIN)
    if len(near_tie):
        rows = features.iloc[near_tie] if isinstance(features, pd.DataFrame) else features[near_tie]
        labels[near_tie] = model.predict(rows)
    return labels


def _preprocessed(pipeline: Any, features: pd.DataFrame) -> tuple[Any, Any]:
    """The final estimator and the features through every step before it, for a Pipeline; the
    pipeline and the features as they are otherwise.

    What `Pipeline.predict` and `Pipeline.predict_proba` each do first, done once for both: the
    same values (a test holds them equal), without preprocessing the holdout twice.
    """
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) < 2:
        return pipeline, features
    return pipeline.steps[-1][1], pipeline[:-1].transform(features)


def model_metrics(pipeline: Any, frame: pd.DataFrame, spec: ModelSpec) -> dict[str, float]:
    """Metrics of a fitted pipeline on `frame` (features + target)."""
    return predict_frame(pipeline, frame, spec).metrics()


# Training rows the train_* metrics are computed on (see `metrics_sample`).
TRAIN_METRICS_SAMPLE_ROWS = 100_000


def metrics_sample(frame: pd.DataFrame, seed: int, rows: int = TRAIN_METRICS_SAMPLE_ROWS) -> pd.DataFrame:
    """`rows` rows of `frame` drawn without replacement by a generator seeded with `seed`, in the
    frame's order; all of `frame` when it has no more rows than that. Same frame, same seed: same rows.

    For the training metrics, which describe the fit, not the model's quality (the gates judge
    the holdout): predicting millions of training rows again costs seconds, while at 100,000 rows
    the standard error of accuracy or ROC AUC is about 0.002.
    """
    if len(frame) <= rows:
        return frame
    positions = np.random.default_rng(seed).choice(len(frame), size=rows, replace=False)
    positions.sort()
    return frame.iloc[positions]


@dataclass(frozen=True)
class SliceMetrics:
    """Metrics within one value of a slice column."""

    column: str
    value: str
    rows: int
    metrics: dict[str, float]


def slice_metrics(
    pipeline: Any, frame: pd.DataFrame, spec: ModelSpec, predictions: Predictions | None = None
) -> list[SliceMetrics]:
    """Metrics per value of every slice column named in the spec's gates.

    `predictions`: the pipeline's on `frame` (:func:`predict_frame`) if the caller has them; the
    frame is predicted once either way, and each slice's metrics come from its rows' predictions.
    """
    if not spec.gates.slices:
        return []
    if predictions is None:
        predictions = predict_frame(pipeline, frame, spec)
    results = []
    for slice_spec in spec.gates.slices:
        # Grouped on a fresh 0..n-1 index, so that each group's index is its rows' positions.
        values = pd.Series(frame[slice_spec.column].astype(str).to_numpy())
        for value, part in values.groupby(values, sort=True):
            results.append(
                SliceMetrics(
                    column=slice_spec.column,
                    value=str(value),
                    rows=len(part),
                    metrics=predictions.metrics(part.index.to_numpy()),
                )
            )
    return results


def latency_p95_ms_per_1k(pipeline: Any, frame: pd.DataFrame, spec: ModelSpec, repeats: int = 20) -> float:
    """95th percentile of the time to score 1,000 rows (resampled from `frame`), in milliseconds."""
    # The rows drawn first, then typed: the same batch as typing the whole frame and drawing from it.
    batch = features_frame(
        frame.sample(n=1000, replace=len(frame) < 1000, random_state=spec.split.seed), spec
    )
    score = pipeline.predict_proba if spec.is_classification else pipeline.predict
    timings = []
    # One thread: the budget is per core, and OpenMP threads competing with other processes on a
    # busy machine (2 cores here) turn a 10 ms call into a 1 s spin-wait, making the gate flaky.
    with threadpool_limits(limits=1):
        score(batch)  # warm-up: first call pays one-off allocation costs
        for _ in range(repeats):
            started = time.perf_counter()
            score(batch)
            timings.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(timings, 95))


@dataclass(frozen=True)
class GateCheck:
    """One check of the gate."""

    name: str
    kind: CheckKind
    value: float | None
    threshold: float
    passed: bool
    message: str


@dataclass(frozen=True)
class GateReport:
    """Every check a candidate went through, and the verdict."""

    model: str
    candidate: dict[str, Any]
    champion: dict[str, Any] | None
    candidate_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    checks: list[GateCheck] = field(default_factory=list)
    fairness: FairnessReport | None = None  # every group of every sensitive column

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[str]:
        """Messages of the failed checks."""
        return [check.message for check in self.checks if not check.passed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the verdict."""
        return {**asdict(self), "passed": self.passed, "failures": self.failures}

    def to_json(self) -> bytes:
        """Stable, strict JSON bytes (NaN, which JSON lacks, becomes null)."""
        return json.dumps(_finite(self.to_dict()), indent=2, sort_keys=True, allow_nan=False).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _at_least(value: float, floor: float, higher_is_better: bool) -> bool:
    return value >= floor if higher_is_better else value <= floor


def no_worse_than(
    value: float | None, reference: float, tolerance: float, higher_is_better: bool
) -> tuple[bool, float]:
    """Whether `value` is no worse than `reference` by more than `tolerance` (a missing value is
    worse), and the bound it was held to: the gates' no-regression check, and the shadow period's
    on live metrics."""
    allowed = reference - tolerance if higher_is_better else reference + tolerance
    return value is not None and _at_least(value, allowed, higher_is_better), allowed


def evaluate_gates(
    spec: ModelSpec,
    candidate_metrics: dict[str, float],
    champion_metrics: dict[str, float] | None,
    slices: list[SliceMetrics],
    latency_ms_per_1k: float,
    model_size_mb: float,
    candidate: dict[str, Any] | None = None,
    champion: dict[str, Any] | None = None,
    fairness: FairnessReport | None = None,
) -> GateReport:
    """Decide whether a candidate may be promoted. Pure: no I/O, no clock.

    Floors are absolute (for lower-is-better metrics such as rmse, the "floor" is a ceiling);
    the regression check compares the primary metric with the champion's on the same holdout;
    each fairness limit is a ceiling on a disparity between the gated groups of a column
    (`fairness.fairness_report`).
    """
    gates: GateSpec = spec.gates
    checks: list[GateCheck] = []
    for metric, floor in sorted(gates.floors.items()):
        higher = spec.metric_higher_is_better(metric)
        value = candidate_metrics.get(metric)
        ok = value is not None and _at_least(value, floor, higher)
        relation = ">=" if higher else "<="
        checks.append(
            GateCheck(
                name=f"floor:{metric}",
                kind="floor",
                value=value,
                threshold=floor,
                passed=ok,
                message=f"{metric} {_fmt(value)} must be {relation} {floor}",
            )
        )
    primary = gates.primary_metric
    if champion_metrics is not None and primary in champion_metrics:
        higher = spec.metric_higher_is_better(primary)
        champion_value = champion_metrics[primary]
        candidate_value = candidate_metrics.get(primary)
        ok, allowed = no_worse_than(candidate_value, champion_value, gates.max_regression, higher)
        checks.append(
            GateCheck(
                name=f"no_regression:{primary}",
                kind="regression",
                value=candidate_value,
                threshold=allowed,
                passed=ok,
                message=(
                    f"{primary} {_fmt(candidate_value)} vs champion {_fmt(champion_value)} "
                    f"(tolerance {gates.max_regression}) must be {'>=' if higher else '<='} {_fmt(allowed)}"
                ),
            )
        )
    for slice_spec in gates.slices:
        if not any(s.column == slice_spec.column for s in slices):
            # A gated slice that cannot be measured is not a pass.
            name = f"slice:{slice_spec.column}"
            checks.append(GateCheck(name, "slice", None, 0.0, False, f"{name}: no holdout rows to check"))
        for result in (s for s in slices if s.column == slice_spec.column):
            for metric, floor in sorted(slice_spec.floors.items()):
                value = result.metrics.get(metric)
                name = f"slice:{result.column}={result.value}:{metric}"
                if result.rows < slice_spec.min_rows:
                    checks.append(
                        GateCheck(
                            name,
                            "slice",
                            value,
                            floor,
                            True,
                            f"{name}: {result.rows} rows, below "
                            f"min_rows {slice_spec.min_rows}: reported, not gated",
                        )
                    )
                    continue
                higher = spec.metric_higher_is_better(metric)
                ok = value is not None and _at_least(value, floor, higher)
                checks.append(
                    GateCheck(
                        name,
                        "slice",
                        value,
                        floor,
                        ok,
                        f"{name} {_fmt(value)} must be {'>=' if higher else '<='} {floor}",
                    )
                )
    checks.append(
        GateCheck(
            name="latency_p95_ms_per_1k",
            kind="latency",
            value=latency_ms_per_1k,
            threshold=gates.max_latency_ms_per_1k,
            passed=latency_ms_per_1k <= gates.max_latency_ms_per_1k,
            message=f"p95 latency {latency_ms_per_1k:.1f} ms per 1k rows must be <= {gates.max_latency_ms_per_1k}",
        )
    )
    checks.append(
        GateCheck(
            name="model_size_mb",
            kind="size",
            value=model_size_mb,
            threshold=gates.max_model_size_mb,
            passed=model_size_mb <= gates.max_model_size_mb,
            message=f"model size {model_size_mb:.2f} MB must be <= {gates.max_model_size_mb}",
        )
    )
    checks.extend(fairness_checks(fairness))
    return GateReport(
        model=spec.name,
        candidate=candidate or {},
        champion=champion,
        candidate_metrics=candidate_metrics,
        champion_metrics=champion_metrics,
        checks=checks,
        fairness=fairness,
    )


def fairness_checks(fairness: FairnessReport | None) -> list[GateCheck]:
    """One check per disparity: at most its limit; reported, not gated, where fewer than two
    groups were large enough to compare; failed where it could not be computed."""
    if fairness is None:
        return []
    checks = []
    for disparity in fairness.disparities:
        name = f"fairness:{disparity.column}:{disparity.measure}"
        sizes = ", ".join(f"{g.group}={g.rows}" for g in fairness.groups if g.column == disparity.column)
        if disparity.value is None:
            message = (
                f"{name}: fewer than two groups have {fairness.min_group_rows} holdout rows ({sizes}):"
                " reported, not gated"
            )
            checks.append(GateCheck(name, "fairness", None, disparity.limit, True, message))
            continue
        if not math.isfinite(disparity.value):
            message = f"{name} could not be computed (groups: {sizes or 'none: the column is missing'})"
            checks.append(GateCheck(name, "fairness", None, disparity.limit, False, message))
            continue
        of_class = f" (class {disparity.worst_class} against the rest)" if disparity.worst_class else ""
        message = (
            f"{name} {disparity.value:.4f}{of_class} between groups {', '.join(disparity.groups)}"
            f" must be <= {disparity.limit}"
        )
        passed = disparity.value <= disparity.limit
        checks.append(GateCheck(name, "fairness", disparity.value, disparity.limit, passed, message))
    return checks


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4f}"


def render_html(report: GateReport) -> str:
    """A self-contained, readable HTML page of the gate report."""
    verdict = "PASSED" if report.passed else "FAILED"
    colour = "#1a7f37" if report.passed else "#cf222e"
    rows = "\n".join(
        f"<tr class='{'ok' if c.passed else 'bad'}'><td>{'✔' if c.passed else '✘'}</td>"
        f"<td>{html.escape(c.name)}</td><td>{html.escape(c.kind)}</td><td>{_fmt(c.value)}</td>"
        f"<td>{c.threshold:g}</td><td>{html.escape(c.message)}</td></tr>"
        for c in report.checks
    )
    metric_names = sorted(set(report.candidate_metrics) | set(report.champion_metrics or {}))
    metric_rows = "\n".join(
        f"<tr><td>{html.escape(name)}</td><td>{_fmt(report.candidate_metrics.get(name))}</td>"
        f"<td>{_fmt((report.champion_metrics or {}).get(name)) if report.champion_metrics else '—'}</td></tr>"
        for name in metric_names
    )
    champion = (
        html.escape(json.dumps(report.champion, sort_keys=True)) if report.champion else "none (first model)"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Gate report: {html.escape(report.model)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1f2328; }}
h1 span {{ color: {colour}; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
td, th {{ border: 1px solid #d0d7de; padding: .35rem .7rem; text-align: left; }}
tr.bad td {{ background: #ffebe9; }} tr.ok td:first-child {{ color: #1a7f37; }}
code {{ background: #f6f8fa; padding: .1rem .3rem; }}
</style></head><body>
<h1>Gate report for <code>{html.escape(report.model)}</code>: <span>{verdict}</span></h1>
<p>Candidate: <code>{html.escape(json.dumps(report.candidate, sort_keys=True))}</code><br>
Champion: <code>{champion}</code></p>
<h2>Checks</h2>
<table><tr><th></th><th>check</th><th>kind</th><th>value</th><th>threshold</th><th>rule</th></tr>
{rows}
</table>
<h2>Holdout metrics (same rows for both)</h2>
<table><tr><th>metric</th><th>candidate</th><th>champion</th></tr>
{metric_rows}
</table>
{_fairness_html(report.fairness)}
</body></html>
"""


def _fairness_html(fairness: FairnessReport | None) -> str:
    """The per-group table of the fairness gates (empty without them)."""
    if fairness is None:
        return ""
    names = sorted({name for group in fairness.groups for name in group.metrics})
    header = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    rows = "\n".join(
        f"<tr class='{'ok' if g.gated else ''}'><td>{html.escape(g.column)}</td><td>{html.escape(g.group)}</td>"
        f"<td>{g.rows}</td><td>{'yes' if g.gated else 'no (too few rows)'}</td>"
        + "".join(f"<td>{_fmt(g.metrics.get(name))}</td>" for name in names)
        + "</tr>"
        for g in fairness.groups
    )
    return f"""<h2>Fairness: the candidate per group (holdout)</h2>
<p>Groups with fewer than {fairness.min_group_rows} rows are shown, not compared.</p>
<table><tr><th>column</th><th>group</th><th>rows</th><th>compared</th>{header}</tr>
{rows}
</table>"""
