"""Fairness on the holdout: how differently a candidate treats the groups of each sensitive column.

Measured with Fairlearn (`MetricFrame` for the per-group table, its disparity functions for the
gated numbers) on the candidate's holdout predictions (`evaluation.Predictions`), so the fairness
gates see the same predictions as every other gate. Only groups with at least
`gates.fairness.min_group_rows` holdout rows are compared: a gap between a group of five rows and
the rest is noise, so smaller groups are reported, not gated. `evaluation.evaluate_gates` turns
the result into gate checks.

Classification measures follow Fairlearn's binary definitions on "predicted/labelled positive":
the positive class of a binary model, and for a multiclass model each class against the rest in
turn, reporting the worst class (Fairlearn's measures are defined for binary outcomes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops_pipeline.spec import FairnessSpec, ModelSpec

# The group of rows whose sensitive value is missing: compared like any other group.
MISSING_GROUP = "<missing>"
ERROR_GAP = "error_gap"


@dataclass(frozen=True)
class GroupMetrics:
    """One group of a sensitive column on the holdout: its size and what the model did with it."""

    column: str
    group: str
    rows: int
    gated: bool  # whether it had `min_group_rows` rows, so the disparities compare it
    metrics: dict[str, float]


@dataclass(frozen=True)
class Disparity:
    """One gated measure of one sensitive column over its gated groups."""

    column: str
    measure: str  # demographic_parity_difference, equalized_odds_difference or error_gap
    # None: fewer than two groups large enough to compare (reported, not gated); NaN: it could not
    # be computed (the column is missing, or every rate is undefined), which fails the gate.
    value: float | None
    limit: float
    groups: list[str]  # the gated groups compared
    worst_class: str | None = None  # multiclass: the class (one against the rest) of the value

    @property
    def measured(self) -> bool:
        """Whether two or more groups were large enough to compare."""
        return self.value is not None


@dataclass(frozen=True)
class FairnessReport:
    """Every group of every sensitive column, and the gated disparities."""

    min_group_rows: int
    groups: list[GroupMetrics]
    disparities: list[Disparity]


def group_labels(values: pd.Series) -> np.ndarray:
    """A sensitive column's values as group names (text; missing values one group of their own)."""
    text = values.astype(object).where(values.notna(), MISSING_GROUP)
    return text.astype(str).to_numpy()


def fairness_report(predictions: Any, frame: pd.DataFrame, spec: ModelSpec) -> FairnessReport | None:
    """The fairness of `predictions` (`evaluation.Predictions` of `frame`'s rows, in order) per
    sensitive column of the spec; None when the spec has no fairness gates."""
    fairness = spec.gates.fairness
    if fairness is None:
        return None
    groups: list[GroupMetrics] = []
    disparities: list[Disparity] = []
    for column in fairness.columns:
        if column not in frame.columns:
            # The schema policy let the column be absent: a gate that cannot be computed fails (NaN).
            disparities.extend(
                Disparity(column, measure, float("nan"), limit, [])
                for measure, limit in _limits(spec, fairness).items()
            )
            continue
        labels = group_labels(frame[column])
        names, counts = np.unique(labels, return_counts=True)
        large = {
            str(name) for name, count in zip(names, counts, strict=True) if count >= fairness.min_group_rows
        }
        by_group = _group_table(predictions, labels, spec)
        for name, count in zip(names, counts, strict=True):
            groups.append(
                GroupMetrics(column, str(name), int(count), str(name) in large, by_group.get(str(name), {}))
            )
        rows = np.isin(labels, sorted(large))
        for measure, limit in _limits(spec, fairness).items():
            value, worst = (None, None) if len(large) < 2 else _disparity(measure, predictions, labels, rows)
            disparities.append(Disparity(column, measure, value, limit, sorted(large), worst))
    return FairnessReport(fairness.min_group_rows, groups, disparities)


def _limits(spec: ModelSpec, fairness: FairnessSpec) -> dict[str, float]:
    if spec.is_classification:
        return fairness.classification_limits
    assert fairness.max_error_gap is not None  # the spec requires it for a regression
    return {ERROR_GAP: fairness.max_error_gap}


def _outcome_classes(predictions: Any) -> list[Any]:
    """The classes whose "positive" the measures look at: a binary model's positive class, or
    every class of a multiclass model (each against the rest)."""
    classes = list(predictions.classes)
    if len(classes) <= 2:
        return [classes[-1] if predictions.positive is None else predictions.positive]
    return classes


def _disparity(
    measure: str, predictions: Any, labels: np.ndarray, rows: np.ndarray
) -> tuple[float, str | None]:
    """The measure over the rows of the gated groups (and, multiclass, the worst class)."""
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equalized_odds_difference,
    )
    from sklearn.metrics import mean_absolute_error

    sensitive = labels[rows]
    if predictions.classes is None:
        frame = MetricFrame(
            metrics=mean_absolute_error,
            y_true=np.asarray(predictions.y_true, dtype="float64")[rows],
            y_pred=np.asarray(predictions.y_pred, dtype="float64")[rows],
            sensitive_features=sensitive,
        )
        return float(frame.difference(method="between_groups")), None
    function = {
        "demographic_parity_difference": demographic_parity_difference,
        "equalized_odds_difference": equalized_odds_difference,
    }[measure]
    classes = _outcome_classes(predictions)
    measured: list[tuple[float, Any]] = []
    for label in classes:
        y_true = (np.asarray(predictions.y_true, dtype=object)[rows] == label).astype(int)
        y_pred = (np.asarray(predictions.y_pred, dtype=object)[rows] == label).astype(int)
        value = float(function(y_true, y_pred, sensitive_features=sensitive))
        # NaN where a rate is undefined (a group without positives has no true-positive rate):
        # the other classes still decide; if none can, the gate fails as unmeasurable.
        if np.isfinite(value):
            measured.append((value, label))
    if not measured:
        return float("nan"), None
    value, label = max(measured, key=lambda item: item[0])
    return value, (str(label) if len(classes) > 1 else None)


def _group_table(predictions: Any, labels: np.ndarray, spec: ModelSpec) -> dict[str, dict[str, float]]:
    """Fairlearn's per-group metrics: accuracy, selection rate and true/false positive rates of the
    positive class (binary), the share predicted per class (multiclass), or the mean absolute error
    and mean prediction (regression)."""
    from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score, mean_absolute_error

    if predictions.classes is None:
        y_true = np.asarray(predictions.y_true, dtype="float64")
        y_pred = np.asarray(predictions.y_pred, dtype="float64")
        metrics: dict[str, Any] = {
            "mae": mean_absolute_error,
            "mean_prediction": lambda _, pred: float(np.mean(pred)),
        }
    else:
        y_true = np.asarray(predictions.y_true, dtype=object)
        y_pred = np.asarray(predictions.y_pred, dtype=object)
        metrics = {"accuracy": accuracy_score}
        classes = _outcome_classes(predictions)
        if len(classes) == 1:
            positive = classes[0]
            metrics |= {
                "selection_rate": lambda t, p: selection_rate(t == positive, p == positive),
                "true_positive_rate": lambda t, p: _rate(
                    true_positive_rate, t == positive, p == positive, of_positives=True
                ),
                "false_positive_rate": lambda t, p: _rate(
                    false_positive_rate, t == positive, p == positive, of_positives=False
                ),
            }
        else:
            for label in classes:
                metrics[f"predicted_share.{label}"] = lambda _, p, label=label: float(np.mean(p == label))
    table = MetricFrame(metrics=metrics, y_true=y_true, y_pred=y_pred, sensitive_features=labels).by_group
    return {
        str(group): {name: float(value) for name, value in row.items()} for group, row in table.iterrows()
    }


def _rate(function: Any, y_true: np.ndarray, y_pred: np.ndarray, *, of_positives: bool) -> float:
    """A true (`of_positives`) or false positive rate, NaN where the group has none of the rows it
    divides by (Fairlearn answers 0 with a warning there, which would read as a measured rate)."""
    import warnings

    denominator = y_true.sum() if of_positives else (~y_true).sum()
    if denominator == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(function(y_true.astype(int), y_pred.astype(int)))
