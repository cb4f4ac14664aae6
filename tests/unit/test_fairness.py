"""Fairness gates: Fairlearn's disparities per sensitive column, gated like the other checks, with
small groups reported and evaluation-only columns kept away from the model."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

from mlops_pipeline.evaluation import Predictions, evaluate_gates, render_html
from mlops_pipeline.fairness import MISSING_GROUP, fairness_report
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.training import features_frame
from mlops_pipeline.validation import validate_frame


def spec_with(fairness: dict[str, Any], task: str = "binary", **extra: Any) -> ModelSpec:
    estimator = "logistic_regression" if task != "regression" else "ridge"
    metric = "roc_auc" if task == "binary" else ("accuracy" if task == "multiclass" else "rmse")
    return ModelSpec.model_validate(
        {
            "name": "fair",
            "task": task,
            "source": {"uri": "landing/fair/ds={ds}/*.csv"},
            "id_column": "id",
            "target": "label",
            "features": {
                "x": {"type": "number"},
                "colour": {"type": "category", "allowed": ["red", "blue"]},
            },
            "estimator": {"kind": estimator},
            "gates": {"primary_metric": metric, "fairness": fairness},
            **extra,
        }
    )


def binary_predictions(y_true: list[int], y_pred: list[int]) -> Predictions:
    proba = np.column_stack([1 - np.asarray(y_pred, float), np.asarray(y_pred, float)])
    return Predictions(np.asarray(y_true), np.asarray(y_pred), proba, [0, 1], 1)


def gate(spec: ModelSpec, predictions: Predictions, frame: pd.DataFrame):
    return evaluate_gates(spec, {}, None, [], 1.0, 1.0, fairness=fairness_report(predictions, frame, spec))


def test_a_model_that_favours_one_group_is_refused_with_the_disparity_named() -> None:
    spec = spec_with({"columns": ["segment"], "max_demographic_parity_difference": 0.1, "min_group_rows": 4})
    # Group a: 4 of 5 predicted positive; group b: 1 of 5. Same true labels in both.
    y_true = [1, 0, 1, 0, 1] * 2
    y_pred = [1, 1, 1, 1, 0, 1, 0, 0, 0, 0]
    frame = pd.DataFrame({"segment": ["a"] * 5 + ["b"] * 5})
    report = gate(spec, binary_predictions(y_true, y_pred), frame)

    assert not report.passed
    (check,) = [c for c in report.checks if c.kind == "fairness"]
    assert check.name == "fairness:segment:demographic_parity_difference"
    assert check.value == pytest.approx(0.6)
    assert check.value == pytest.approx(
        demographic_parity_difference(np.array(y_true), np.array(y_pred), sensitive_features=frame["segment"])
    )
    assert "between groups a, b must be <= 0.1" in check.message
    by_group = {g.group: g.metrics for g in report.fairness.groups}
    assert by_group["a"]["selection_rate"] == pytest.approx(0.8)
    assert by_group["b"]["selection_rate"] == pytest.approx(0.2)


def test_a_model_that_treats_the_groups_alike_passes() -> None:
    spec = spec_with(
        {
            "columns": ["segment"],
            "max_demographic_parity_difference": 0.1,
            "max_equalized_odds_difference": 0.1,
            "min_group_rows": 4,
        }
    )
    y = [1, 0, 1, 0, 1, 0]
    frame = pd.DataFrame({"segment": ["a"] * 6 + ["b"] * 6})
    report = gate(spec, binary_predictions(y * 2, y * 2), frame)
    assert report.passed, report.failures
    assert [c.value for c in report.checks if c.kind == "fairness"] == [0.0, 0.0]


def test_equalized_odds_is_fairlearns_worst_rate_gap() -> None:
    spec = spec_with({"columns": ["segment"], "max_equalized_odds_difference": 0.2, "min_group_rows": 2})
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    frame = pd.DataFrame({"segment": rng.choice(["a", "b", "c"], 200)})
    report = gate(spec, binary_predictions(list(y_true), list(y_pred)), frame)
    (check,) = [c for c in report.checks if c.kind == "fairness"]
    expected = equalized_odds_difference(y_true, y_pred, sensitive_features=frame["segment"])
    assert check.value == pytest.approx(expected)
    assert check.passed == (expected <= 0.2)


def test_groups_below_the_minimum_are_reported_not_compared() -> None:
    spec = spec_with({"columns": ["segment"], "max_demographic_parity_difference": 0.1, "min_group_rows": 5})
    # Group b (2 rows) is wildly different, but too small to compare: a and c decide, and they agree.
    alike = [1, 0, 1, 0, 1, 0]
    y_pred = [*alike, 1, 1, *alike]
    frame = pd.DataFrame({"segment": ["a"] * 6 + ["b"] * 2 + ["c"] * 6})
    report = gate(spec, binary_predictions([0] * 14, y_pred), frame)
    assert report.passed, report.failures
    (disparity,) = report.fairness.disparities
    assert disparity.groups == ["a", "c"] and disparity.value == pytest.approx(0.0)
    assert {g.group: g.gated for g in report.fairness.groups} == {"a": True, "b": False, "c": True}


def test_with_one_group_large_enough_nothing_is_gated_and_the_report_says_why() -> None:
    spec = spec_with({"columns": ["segment"], "max_demographic_parity_difference": 0.1, "min_group_rows": 5})
    frame = pd.DataFrame({"segment": ["a"] * 6 + ["b"] * 2})
    report = gate(spec, binary_predictions([0] * 8, [1] * 6 + [0] * 2), frame)
    (check,) = [c for c in report.checks if c.kind == "fairness"]
    assert check.passed and check.value is None
    assert "fewer than two groups have 5 holdout rows (a=6, b=2): reported, not gated" in check.message


def test_a_sensitive_column_missing_from_the_holdout_fails_the_gate() -> None:
    spec = spec_with({"columns": ["segment"], "max_demographic_parity_difference": 0.1})
    report = gate(spec, binary_predictions([0, 1], [0, 1]), pd.DataFrame({"other": [1, 2]}))
    assert not report.passed
    assert "could not be computed" in report.failures[0]


def test_missing_values_form_a_group_of_their_own() -> None:
    spec = spec_with({"columns": ["segment"], "max_demographic_parity_difference": 1.0, "min_group_rows": 1})
    frame = pd.DataFrame({"segment": ["a", None, "a", np.nan]})
    report = fairness_report(binary_predictions([0, 1, 0, 1], [0, 1, 0, 1]), frame, spec)
    assert {g.group: g.rows for g in report.groups} == {MISSING_GROUP: 2, "a": 2}


def test_multiclass_names_the_worst_class_against_the_rest() -> None:
    spec = spec_with(
        {"columns": ["segment"], "max_demographic_parity_difference": 0.3, "min_group_rows": 3},
        task="multiclass",
        target={"column": "label", "classes": ["x", "y", "z"]},
    )
    # Group a is predicted x/y/z evenly; group b gets z every time: class z differs most.
    y_pred = np.array(["x", "y", "z"] * 2 + ["z"] * 6, dtype=object)
    y_true = np.array(["x", "y", "z"] * 4, dtype=object)
    predictions = Predictions(y_true, y_pred, np.full((12, 3), 1 / 3), ["x", "y", "z"])
    frame = pd.DataFrame({"segment": ["a"] * 6 + ["b"] * 6})
    report = gate(spec, predictions, frame)
    (check,) = [c for c in report.checks if c.kind == "fairness"]
    assert not check.passed
    assert check.value == pytest.approx(1 - 1 / 3)
    assert "(class z against the rest)" in check.message
    shares = {g.group: g.metrics["predicted_share.z"] for g in report.fairness.groups}
    assert shares == pytest.approx({"a": 1 / 3, "b": 1.0})


def test_regression_gates_the_gap_in_mean_absolute_error() -> None:
    spec = spec_with({"columns": ["segment"], "max_error_gap": 1.0, "min_group_rows": 2}, task="regression")
    y_true = np.array([1.0, 2.0, 3.0, 1.0, 2.0, 3.0])
    y_pred = np.array([1.0, 2.0, 3.0, 3.0, 4.0, 5.0])  # group b is off by 2 every time
    frame = pd.DataFrame({"segment": ["a"] * 3 + ["b"] * 3})
    report = gate(spec, Predictions(y_true, y_pred, None, None), frame)
    (check,) = [c for c in report.checks if c.kind == "fairness"]
    assert check.name == "fairness:segment:error_gap" and check.value == pytest.approx(2.0)
    assert not check.passed
    assert {g.group: g.metrics["mae"] for g in report.fairness.groups} == {"a": 0.0, "b": 2.0}


def test_the_gate_report_shows_every_group_in_json_and_html() -> None:
    spec = spec_with({"columns": ["segment"], "max_demographic_parity_difference": 0.1, "min_group_rows": 4})
    frame = pd.DataFrame({"segment": ["a"] * 5 + ["b"] * 5})
    report = gate(spec, binary_predictions([1, 0] * 5, [1] * 5 + [0] * 5), frame)
    loaded = json.loads(report.to_json())
    assert [g["group"] for g in loaded["fairness"]["groups"]] == ["a", "b"]
    assert loaded["fairness"]["groups"][0]["metrics"]["selection_rate"] == 1.0
    page = render_html(report)
    assert "Fairness: the candidate per group" in page and "selection_rate" in page


def test_without_fairness_gates_there_is_no_fairness_section() -> None:
    spec = ModelSpec.model_validate(
        {
            **spec_with({"columns": ["colour"], "max_demographic_parity_difference": 0.1}).model_dump(
                by_alias=True
            )
        }
        | {"gates": {"primary_metric": "roc_auc"}}
    )
    assert fairness_report(binary_predictions([0], [0]), pd.DataFrame(), spec) is None
    assert "Fairness" not in render_html(evaluate_gates(spec, {}, None, [], 1.0, 1.0))


# --- the spec ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fairness", "task", "message"),
    [
        ({"columns": ["x"], "max_demographic_parity_difference": 0.1}, "binary", "is a number feature"),
        ({"columns": ["label"], "max_demographic_parity_difference": 0.1}, "binary", "the id, the target"),
        ({"columns": ["colour"], "max_error_gap": 1.0}, "binary", "max_error_gap is for regression"),
        ({"columns": ["colour"]}, "binary", "give max_demographic_parity_difference"),
        (
            {"columns": ["colour"], "max_equalized_odds_difference": 0.1},
            "regression",
            "are for classification",
        ),
        ({"columns": ["colour"]}, "regression", "give max_error_gap"),
        ({"columns": ["g", "g"], "max_demographic_parity_difference": 0.1}, "binary", "more than once"),
    ],
)
def test_the_spec_refuses_fairness_gates_that_cannot_apply(fairness, task, message) -> None:
    with pytest.raises(ValueError, match=message):
        spec_with(fairness, task=task)


def test_a_sensitive_column_that_is_not_a_feature_is_read_validated_and_never_fed_to_the_model() -> None:
    spec = spec_with({"columns": ["colour", "segment"], "max_demographic_parity_difference": 0.1})
    assert spec.evaluation_columns == ["segment"]
    assert spec.columns == ["id", "x", "colour", "label", "segment"]
    rows = 120
    frame = pd.DataFrame(
        {
            "id": [str(i) for i in range(rows)],
            "x": [str(i / 10) for i in range(rows)],
            "colour": ["red", "blue"] * (rows // 2),
            "label": ["0", "1"] * (rows // 2),
            "segment": ["p", "q", None] * (rows // 3),
        }
    )
    outcome = validate_frame(frame, spec)
    assert outcome.passed
    assert list(outcome.clean["segment"][:3].fillna(MISSING_GROUP)) == ["p", "q", MISSING_GROUP]
    assert "segment" not in features_frame(outcome.clean, spec).columns

    missing = validate_frame(frame.drop(columns="segment"), spec)
    assert not missing.passed and "schema:segment" in missing.failure_reason
