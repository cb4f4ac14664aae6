"""Evaluation: holdout metrics, slices, latency, and the pure promotion gate with its HTML report."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from mlops_pipeline.evaluation import (
    GateReport,
    SliceMetrics,
    compute_metrics,
    evaluate_gates,
    latency_p95_ms_per_1k,
    metrics_sample,
    model_metrics,
    predict_frame,
    render_html,
    slice_metrics,
)
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.training import features_frame, split_frame, target_series, train_model

COLOURS = ["red", "blue", "green"]


def classifier_spec(**gates: Any) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": "demo",
            "task": "classification",
            "source": {"uri": "landing/demo/ds={ds}/*.csv"},
            "id_column": "id",
            "target": "label",
            "features": {
                "x": {"type": "number"},
                "colour": {"type": "category", "allowed": COLOURS},
            },
            "estimator": {"kind": "logistic_regression"},
            "gates": {
                "primary_metric": "roc_auc",
                "floors": {"roc_auc": 0.7, "accuracy": 0.6},
                "max_regression": 0.01,
                "slices": [{"column": "colour", "floors": {"roc_auc": 0.6}, "min_rows": 30}],
                "max_latency_ms_per_1k": 250,
                "max_model_size_mb": 20,
                **gates,
            },
        }
    )


def regressor_spec(**gates: Any) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": "reg",
            "task": "regression",
            "source": {"uri": "landing/reg/ds={ds}/*.csv"},
            "id_column": "id",
            "target": "label",
            "features": {"x": {"type": "number"}, "group": {"type": "category", "allowed": ["a", "b"]}},
            "estimator": {"kind": "ridge"},
            "gates": {
                "primary_metric": "rmse",
                "floors": {"r2": 0.3, "rmse": 60.0},
                "max_regression": 1.0,
                **gates,
            },
        }
    )


GOOD = {"roc_auc": 0.82, "accuracy": 0.75, "f1": 0.7}


def gate(spec: ModelSpec, candidate_metrics: dict[str, float], **kwargs: Any) -> GateReport:
    arguments: dict[str, Any] = {
        "champion_metrics": None,
        # A healthy slice of every gated column, unless a test says otherwise.
        "slices": [
            SliceMetrics(s.column, "all", 1000, {m: 0.99 for m in s.floors}) for s in spec.gates.slices
        ],
        "latency_ms_per_1k": 10.0,
        "model_size_mb": 1.0,
    }
    arguments.update(kwargs)
    return evaluate_gates(spec, candidate_metrics, **arguments)


def check(report: GateReport, name: str) -> Any:
    matches = [c for c in report.checks if c.name == name]
    assert len(matches) == 1, [c.name for c in report.checks]
    return matches[0]


# --- metrics -------------------------------------------------------------------------------------


def test_regression_metrics_have_known_values() -> None:
    metrics = compute_metrics(
        "regression", np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 6.0]), None
    )
    assert metrics == pytest.approx({"rmse": 1.0, "mae": 0.5, "r2": 0.2, "mape": 0.125})


def test_mape_is_left_out_when_a_true_value_is_zero() -> None:
    metrics = compute_metrics("regression", np.array([0.0, 2.0]), np.array([1.0, 2.0]), None)
    assert set(metrics) == {"rmse", "mae", "r2"}


def test_classification_metrics_with_probabilities_have_known_values() -> None:
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 1, 1, 1])
    proba = np.array([0.1, 0.6, 0.7, 0.9])
    metrics = compute_metrics("classification", y_true, y_pred, proba)
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == pytest.approx(1.0)
    assert metrics["f1"] == pytest.approx(0.8)
    assert metrics["roc_auc"] == pytest.approx(1.0)
    expected_log_loss = -np.mean(np.log([0.9, 0.4, 0.7, 0.9]))
    assert metrics["log_loss"] == pytest.approx(expected_log_loss)


def test_probability_metrics_need_probabilities_and_both_classes() -> None:
    y = np.array([0, 1, 1])
    assert set(compute_metrics("classification", y, y, None)) == {"accuracy", "f1", "precision", "recall"}
    one_class = compute_metrics("classification", np.array([1, 1]), np.array([1, 0]), np.array([0.9, 0.2]))
    assert "roc_auc" not in one_class and "log_loss" not in one_class
    assert one_class["accuracy"] == 0.5


def test_no_positive_prediction_gives_zero_precision_not_an_error() -> None:
    metrics = compute_metrics("classification", np.array([0, 1]), np.array([0, 0]), None)
    assert metrics["precision"] == 0.0 and metrics["f1"] == 0.0


def test_certain_wrong_probabilities_give_a_finite_log_loss() -> None:
    metrics = compute_metrics("classification", np.array([0, 1]), np.array([1, 0]), np.array([1.0, 0.0]))
    assert math.isfinite(metrics["log_loss"])
    assert metrics["roc_auc"] == 0.0


@pytest.fixture(scope="module")
def fitted() -> Iterator[tuple[ModelSpec, Any, pd.DataFrame]]:
    """A small fitted classifier and its holdout, computed with one thread (the machine may be busy)."""
    spec = classifier_spec()
    rng = np.random.default_rng(0)
    rows = 800
    x = rng.normal(size=rows)
    colour = rng.choice(COLOURS, size=rows, p=[0.45, 0.45, 0.10])
    label = (rng.random(rows) < 1 / (1 + np.exp(-(2 * x + (colour == "red"))))).astype(int)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(rows)], "x": x, "colour": colour, "label": label})
    with threadpool_limits(limits=1):
        pipeline = train_model(frame, spec).pipeline
        yield spec, pipeline, split_frame(frame, spec).holdout


def test_predictions_preprocess_once_and_equal_the_pipelines_own(
    fitted: tuple[ModelSpec, Any, pd.DataFrame],
) -> None:
    """predict_frame transforms the holdout once for predict and predict_proba: exactly the
    values `Pipeline.predict` and `Pipeline.predict_proba` give."""
    spec, pipeline, holdout = fitted
    predictions = predict_frame(pipeline, holdout, spec)
    features = features_frame(holdout, spec)
    np.testing.assert_array_equal(predictions.y_pred, pipeline.predict(features))
    assert predictions.proba is not None
    np.testing.assert_array_equal(predictions.proba, pipeline.predict_proba(features))


@pytest.mark.parametrize("kind", ["logistic_regression", "hist_gradient_boosting", "random_forest"])
@pytest.mark.parametrize("labels", [2, 4])
def test_labels_from_the_probabilities_are_the_models_own_predictions(kind: str, labels: int) -> None:
    """For the spec's classifiers the labels come from predict_proba's output (no second pass
    over the rows): exactly what the pipeline's own `predict` gives, binary and multiclass."""
    task = "classification" if labels == 2 else "multiclass"
    spec = classifier_spec().model_copy(
        update={
            "task": task,
            "estimator": classifier_spec().estimator.model_copy(update={"kind": kind}),
        }
    )
    rng = np.random.default_rng(1)
    rows = 3_000
    x = rng.normal(size=rows)
    colour = rng.choice(COLOURS, size=rows)
    label = np.clip(np.round(x + rng.normal(scale=0.7, size=rows) + 1), 0, labels - 1).astype(int)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(rows)], "x": x, "colour": colour, "label": label})
    with threadpool_limits(limits=1):
        pipeline = train_model(frame, spec).pipeline
        predictions = predict_frame(pipeline, frame, spec)
        np.testing.assert_array_equal(predictions.y_pred, pipeline.predict(features_frame(frame, spec)))
    assert len(set(predictions.y_pred)) == labels


def test_a_row_near_a_tie_gets_the_models_own_label() -> None:
    """Where the two probabilities all but tie, the model's `predict` decides (a binary logistic
    regression's label is the sign of its decision function, not the larger rounded probability)."""
    from sklearn.linear_model import LogisticRegression

    from mlops_pipeline.evaluation import _predicted_labels

    x = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    model = LogisticRegression().fit(x, [0, 0, 1, 1])
    rounded_to_a_tie = np.array([[0.5, 0.5], [0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])
    labels = _predicted_labels(model, np.array([[3.0], [-3.0], [3.0], [-3.0]]), rounded_to_a_tie)
    assert labels.tolist() == [1, 0, 1, 0]  # ties: the model's answer; clear rows: the larger probability


def test_model_metrics_score_the_pipeline_on_the_frame(fitted: tuple[ModelSpec, Any, pd.DataFrame]) -> None:
    spec, pipeline, holdout = fitted
    metrics = model_metrics(pipeline, holdout, spec)
    features = features_frame(holdout, spec)
    expected = compute_metrics(
        "classification",
        target_series(holdout, spec).to_numpy(),
        pipeline.predict(features),
        pipeline.predict_proba(features)[:, 1],
    )
    assert metrics == expected
    assert metrics["roc_auc"] > 0.75


def test_slice_metrics_cover_each_value_of_the_slice_column(
    fitted: tuple[ModelSpec, Any, pd.DataFrame],
) -> None:
    spec, pipeline, holdout = fitted
    slices = slice_metrics(pipeline, holdout, spec)
    assert [(s.column, s.value) for s in slices] == [
        ("colour", "blue"),
        ("colour", "green"),
        ("colour", "red"),
    ]
    assert sum(s.rows for s in slices) == len(holdout)
    red = holdout[holdout["colour"] == "red"]
    assert slices[2].rows == len(red)
    assert slices[2].metrics == model_metrics(pipeline, red, spec)


def _slice_metrics_predicting_each_slice(
    pipeline: Any, frame: pd.DataFrame, spec: ModelSpec
) -> list[SliceMetrics]:
    """Slice metrics as first written: every slice's rows predicted again on their own."""
    return [
        SliceMetrics(s.column, str(value), len(part), model_metrics(pipeline, part, spec))
        for s in spec.gates.slices
        for value, part in frame.groupby(frame[s.column].astype(str), sort=True)
    ]


def _assert_same_slices(ours: list[SliceMetrics], reference: list[SliceMetrics]) -> None:
    assert [(s.column, s.value, s.rows) for s in ours] == [(s.column, s.value, s.rows) for s in reference]
    for mine, theirs in zip(ours, reference, strict=True):
        assert mine.metrics.keys() == theirs.metrics.keys()
        assert mine.metrics == pytest.approx(theirs.metrics, abs=1e-9, rel=0)


@pytest.mark.parametrize(
    ("kind", "params"),
    [("logistic_regression", {}), ("hist_gradient_boosting", {"max_iter": 30}), ("ridge", {})],
)
def test_slices_and_holdout_from_one_prediction_equal_predicting_each_slice(
    kind: str, params: dict[str, Any]
) -> None:
    """Predicting the holdout once gives the metrics that predicting the holdout and then every
    slice again gave (to 1e-9), on a shuffled frame whose index repeats."""
    regression = kind == "ridge"
    slices = [{"column": "colour", "floors": {"r2" if regression else "roc_auc": 0.1}, "min_rows": 10}]
    data = (regressor_spec() if regression else classifier_spec()).model_dump()
    data["features"] = {"x": {"type": "number"}, "colour": {"type": "category", "allowed": COLOURS}}
    data["gates"]["slices"] = slices
    data["estimator"] = {"kind": kind, "params": params}
    spec = ModelSpec.model_validate(data)
    rng = np.random.default_rng(5)
    rows = 2_000
    x = rng.normal(size=rows)
    colour = rng.choice([*COLOURS, None], size=rows, p=[0.4, 0.4, 0.15, 0.05])
    signal = 2 * x + (colour == "red")
    label = (
        signal * 30 + rng.normal(size=rows) if regression else (rng.random(rows) < 1 / (1 + np.exp(-signal)))
    )
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(rows)], "x": x, "colour": colour, "label": label})
    frame["label"] = frame["label"].astype(float if regression else int)
    with threadpool_limits(limits=1):
        pipeline = train_model(frame, spec).pipeline
        holdout = split_frame(frame, spec).holdout.sample(frac=1.0, random_state=1)
        holdout.index = np.arange(len(holdout)) % 7  # not unique: slices must go by position
        predictions = predict_frame(pipeline, holdout, spec)
        assert predictions.metrics() == model_metrics(pipeline, holdout, spec)
        reference = _slice_metrics_predicting_each_slice(pipeline, holdout, spec)
        _assert_same_slices(slice_metrics(pipeline, holdout, spec, predictions), reference)
        _assert_same_slices(slice_metrics(pipeline, holdout, spec), reference)
    assert {s.value for s in reference} == {*COLOURS, "None"}


def test_no_gated_slice_means_no_prediction() -> None:
    class Unfitted:
        def predict(self, features: pd.DataFrame) -> None:
            raise AssertionError("predicted without a slice to measure")

    spec = classifier_spec(slices=[])
    assert slice_metrics(Unfitted(), pd.DataFrame({"x": [1.0], "colour": ["red"], "label": [1]}), spec) == []


# --- the training metrics' sample ----------------------------------------------------------------


def test_the_metrics_sample_is_the_same_rows_every_time_and_all_rows_of_a_small_set() -> None:
    frame = pd.DataFrame(
        {"id": [f"r{i}" for i in range(5_000)], "v": np.arange(5_000)}, index=np.arange(5_000) * 3
    )
    first = metrics_sample(frame, seed=42, rows=1_000)
    assert len(first) == 1_000 and first["id"].is_unique
    pd.testing.assert_frame_equal(first, metrics_sample(frame.copy(), seed=42, rows=1_000))
    assert first.index.is_monotonic_increasing  # in the frame's order
    assert not first.index.equals(metrics_sample(frame, seed=7, rows=1_000).index)
    assert metrics_sample(frame, seed=42, rows=5_000) is frame
    assert metrics_sample(frame, seed=42) is frame  # 5,000 rows: under the default sample


def test_train_metrics_on_the_sample_are_close_to_those_of_every_training_row() -> None:
    """A 4,000-row sample of ~9,700 training rows: accuracy and ROC AUC within 0.02 of the full set's
    (their standard error is ~0.005 here; ~0.002 at the production sample of 100,000 rows)."""
    spec = classifier_spec()
    rng = np.random.default_rng(11)
    rows = 12_000
    x = rng.normal(size=rows)
    colour = rng.choice(COLOURS, size=rows)
    label = (rng.random(rows) < 1 / (1 + np.exp(-(2 * x + (colour == "red"))))).astype(int)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(rows)], "x": x, "colour": colour, "label": label})
    with threadpool_limits(limits=1):
        pipeline = train_model(frame, spec).pipeline
        train = split_frame(frame, spec).train
        full = model_metrics(pipeline, train, spec)
        sample = metrics_sample(train, spec.split.seed, rows=4_000)
        sampled = model_metrics(pipeline, sample, spec)
    assert len(train) > 2 * len(sample)
    for metric in ("accuracy", "roc_auc"):
        assert sampled[metric] == pytest.approx(full[metric], abs=0.02), metric


def test_latency_is_a_positive_p95_in_milliseconds(fitted: tuple[ModelSpec, Any, pd.DataFrame]) -> None:
    spec, pipeline, holdout = fitted
    assert len(holdout) < 1000  # resampled up to 1000 rows
    latency = latency_p95_ms_per_1k(pipeline, holdout, spec, repeats=3)
    assert isinstance(latency, float)
    assert 0 < latency < 5_000


# --- the gate: floors ----------------------------------------------------------------------------


def test_a_candidate_above_every_floor_without_champion_passes() -> None:
    report = gate(classifier_spec(), GOOD)
    assert report.passed
    assert report.failures == []
    assert [c.name for c in report.checks] == [
        "floor:accuracy",
        "floor:roc_auc",
        "slice:colour=all:roc_auc",
        "latency_p95_ms_per_1k",
        "model_size_mb",
    ]
    assert report.model == "demo"
    assert report.champion is None and report.champion_metrics is None


def test_each_floor_passes_or_fails_on_its_own() -> None:
    report = gate(classifier_spec(), {**GOOD, "roc_auc": 0.65})
    assert not report.passed
    assert check(report, "floor:accuracy").passed
    failed = check(report, "floor:roc_auc")
    assert (failed.passed, failed.value, failed.threshold) == (False, 0.65, 0.7)
    assert report.failures == ["roc_auc 0.6500 must be >= 0.7"]


def test_a_metric_exactly_on_its_floor_passes() -> None:
    assert gate(classifier_spec(), {"roc_auc": 0.7, "accuracy": 0.6}).passed


def test_a_missing_floor_metric_fails() -> None:
    report = gate(classifier_spec(), {"accuracy": 0.9})
    assert report.failures == ["roc_auc missing must be >= 0.7"]
    assert check(report, "floor:roc_auc").value is None


def test_a_lower_is_better_floor_is_a_ceiling() -> None:
    spec = regressor_spec()
    assert gate(spec, {"rmse": 59.0, "r2": 0.5}).passed
    report = gate(spec, {"rmse": 61.0, "r2": 0.5})
    assert report.failures == ["rmse 61.0000 must be <= 60.0"]
    assert gate(spec, {"rmse": 50.0, "r2": 0.2}).failures == ["r2 0.2000 must be >= 0.3"]


def test_a_nan_metric_fails_its_floor() -> None:
    assert not check(gate(classifier_spec(), {**GOOD, "roc_auc": float("nan")}), "floor:roc_auc").passed


# --- the gate: no regression against the champion ------------------------------------------------


@pytest.mark.parametrize(("candidate", "passed"), [(0.85, True), (0.795, True), (0.785, False)])
def test_no_regression_higher_is_better_allows_the_tolerance(candidate: float, passed: bool) -> None:
    report = gate(classifier_spec(), {**GOOD, "roc_auc": candidate}, champion_metrics={"roc_auc": 0.80})
    regression = check(report, "no_regression:roc_auc")
    assert regression.kind == "regression"
    assert regression.threshold == pytest.approx(0.79)
    assert regression.passed is passed
    assert report.passed is passed
    assert "vs champion 0.8000 (tolerance 0.01) must be >= 0.7900" in regression.message


@pytest.mark.parametrize(("candidate", "passed"), [(45.0, True), (50.9, True), (51.1, False)])
def test_no_regression_lower_is_better_rmse_may_not_rise_beyond_the_tolerance(
    candidate: float, passed: bool
) -> None:
    report = gate(
        regressor_spec(), {"rmse": candidate, "r2": 0.5}, champion_metrics={"rmse": 50.0, "r2": 0.6}
    )
    regression = check(report, "no_regression:rmse")
    assert regression.threshold == 51.0
    assert regression.passed is passed
    assert "must be <= 51.0000" in regression.message


def test_a_better_rmse_passes_even_with_zero_tolerance() -> None:
    spec = regressor_spec(max_regression=0.0)
    assert check(
        gate(spec, {"rmse": 49.0, "r2": 0.5}, champion_metrics={"rmse": 50.0}), "no_regression:rmse"
    ).passed
    assert not check(
        gate(spec, {"rmse": 50.01, "r2": 0.5}, champion_metrics={"rmse": 50.0}), "no_regression:rmse"
    ).passed


def test_no_regression_check_without_a_champion_value_for_the_primary_metric() -> None:
    report = gate(classifier_spec(), GOOD, champion_metrics={"accuracy": 0.99})
    assert not any(c.kind == "regression" for c in report.checks)
    assert report.passed


def test_a_candidate_without_the_primary_metric_fails_against_a_champion() -> None:
    spec = classifier_spec(floors={})
    report = gate(spec, {"accuracy": 0.9}, champion_metrics={"roc_auc": 0.8})
    assert report.failures == ["roc_auc missing vs champion 0.8000 (tolerance 0.01) must be >= 0.7900"]


# --- the gate: slices, latency, size -------------------------------------------------------------


def slice_result(value: str, rows: int, roc_auc: float | None, column: str = "colour") -> SliceMetrics:
    return SliceMetrics(column, value, rows, {} if roc_auc is None else {"roc_auc": roc_auc})


def test_slice_floors_gate_slices_with_enough_rows() -> None:
    slices = [slice_result("blue", 100, 0.7), slice_result("red", 100, 0.55)]
    report = gate(classifier_spec(), GOOD, slices=slices)
    assert check(report, "slice:colour=blue:roc_auc").passed
    red = check(report, "slice:colour=red:roc_auc")
    assert (red.kind, red.passed, red.value, red.threshold) == ("slice", False, 0.55, 0.6)
    assert report.failures == ["slice:colour=red:roc_auc 0.5500 must be >= 0.6"]


def test_a_slice_below_min_rows_is_reported_but_not_gated() -> None:
    report = gate(
        classifier_spec(), GOOD, slices=[slice_result("green", 29, 0.1), slice_result("red", 30, 0.1)]
    )
    small = check(report, "slice:colour=green:roc_auc")
    assert small.passed
    assert small.value == 0.1
    assert "29 rows, below min_rows 30: reported, not gated" in small.message
    assert not check(report, "slice:colour=red:roc_auc").passed


def test_a_slice_without_the_metric_fails() -> None:
    report = gate(classifier_spec(), GOOD, slices=[slice_result("red", 100, None)])
    assert report.failures == ["slice:colour=red:roc_auc missing must be >= 0.6"]


def test_slices_of_columns_the_gate_does_not_name_are_ignored() -> None:
    report = gate(
        classifier_spec(),
        GOOD,
        slices=[slice_result("x", 500, 0.1, column="region"), slice_result("blue", 100, 0.9)],
    )
    assert report.passed
    assert [c.name for c in report.checks if c.kind == "slice"] == ["slice:colour=blue:roc_auc"]


def test_lower_is_better_slice_floors_are_ceilings() -> None:
    spec = regressor_spec(slices=[{"column": "group", "floors": {"mae": 5.0}, "min_rows": 1}])
    slices = [SliceMetrics("group", "a", 10, {"mae": 4.0}), SliceMetrics("group", "b", 10, {"mae": 6.0})]
    report = gate(spec, {"rmse": 10.0, "r2": 0.9}, slices=slices)
    assert check(report, "slice:group=a:mae").passed
    assert report.failures == ["slice:group=b:mae 6.0000 must be <= 5.0"]


@pytest.mark.parametrize(("latency", "passed"), [(249.9, True), (250.0, True), (250.1, False)])
def test_latency_budget(latency: float, passed: bool) -> None:
    report = gate(classifier_spec(), GOOD, latency_ms_per_1k=latency)
    result = check(report, "latency_p95_ms_per_1k")
    assert (result.kind, result.threshold, result.passed) == ("latency", 250.0, passed)
    assert report.passed is passed
    if not passed:
        assert report.failures == ["p95 latency 250.1 ms per 1k rows must be <= 250.0"]


@pytest.mark.parametrize(("size", "passed"), [(19.99, True), (20.0, True), (20.5, False)])
def test_model_size_budget(size: float, passed: bool) -> None:
    report = gate(classifier_spec(), GOOD, model_size_mb=size)
    result = check(report, "model_size_mb")
    assert (result.kind, result.threshold, result.passed) == ("size", 20.0, passed)
    if not passed:
        assert report.failures == ["model size 20.50 MB must be <= 20.0"]


def test_every_failure_is_listed() -> None:
    report = gate(
        classifier_spec(),
        {"roc_auc": 0.5, "accuracy": 0.5},
        champion_metrics={"roc_auc": 0.9},
        slices=[slice_result("red", 100, 0.5)],
        latency_ms_per_1k=999.0,
        model_size_mb=99.0,
    )
    assert not report.passed
    assert len(report.failures) == 6
    assert {c.kind for c in report.checks if not c.passed} == {
        "floor",
        "regression",
        "slice",
        "latency",
        "size",
    }


def test_the_gate_is_pure_and_its_json_is_stable() -> None:
    arguments: dict[str, Any] = {
        "champion_metrics": {"roc_auc": 0.8},
        "slices": [slice_result("red", 100, 0.7)],
        "candidate": {"run_id": "abc", "holdout_rows": 160},
        "champion": {"version": "3"},
    }
    first = gate(classifier_spec(), GOOD, **arguments)
    assert first == gate(classifier_spec(), dict(GOOD), **arguments)
    data = json.loads(first.to_json())
    assert data["passed"] is True and data["failures"] == []
    assert data["candidate"] == {"run_id": "abc", "holdout_rows": 160}
    assert data["champion"] == {"version": "3"}
    assert data["candidate_metrics"] == GOOD
    assert [c["name"] for c in data["checks"]] == [c.name for c in first.checks]
    assert first.to_json() == json.dumps(data, indent=2, sort_keys=True).encode()


# --- the HTML report -----------------------------------------------------------------------------


def test_render_html_shows_the_verdict_checks_and_metrics() -> None:
    passed = gate(classifier_spec(), GOOD, champion_metrics={"roc_auc": 0.8}, champion={"version": "3"})
    page = render_html(passed)
    assert page.startswith("<!doctype html>")
    assert "<span>PASSED</span>" in page
    assert "<title>Gate report: demo</title>" in page
    assert "<td>floor:roc_auc</td>" in page
    assert "<tr><td>roc_auc</td><td>0.8200</td><td>0.8000</td></tr>" in page
    assert "<tr><td>f1</td><td>0.7000</td><td>missing</td></tr>" in page
    assert "&quot;version&quot;: &quot;3&quot;" in page

    failed = render_html(gate(classifier_spec(), {**GOOD, "roc_auc": 0.1}))
    assert "<span>FAILED</span>" in failed
    assert "<tr class='bad'>" in failed
    assert "none (first model)" in failed
    assert "<tr><td>roc_auc</td><td>0.1000</td><td>—</td></tr>" in failed


def test_render_html_escapes_everything_it_did_not_write() -> None:
    evil = "<script>alert('x')</script>"
    report = gate(
        classifier_spec(),
        {**GOOD, evil: 1.0},
        champion_metrics={"roc_auc": 0.8},
        slices=[slice_result(evil, 100, 0.1)],
        candidate={"run_id": evil},
        champion={"note": evil},
    )
    page = render_html(report)
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    # Rules with comparisons are text, not markup.
    assert "must be &gt;= 0.7" in page
    assert "alert(&#x27;x&#x27;)" in page


def test_a_gated_slice_without_holdout_rows_fails_the_gate() -> None:
    from pathlib import Path

    from mlops_pipeline.evaluation import evaluate_gates
    from mlops_pipeline.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "include/models/churn.yaml")
    report = evaluate_gates(
        spec, {"roc_auc": 0.9, "accuracy": 0.9}, None, [], 1.0, 1.0, candidate={}, champion=None
    )
    failed = [c.name for c in report.checks if not c.passed]
    assert failed == ["slice:plan"] and not report.passed


def test_the_report_is_strict_json_even_with_nan_metrics() -> None:
    import json
    from pathlib import Path

    from mlops_pipeline.evaluation import evaluate_gates
    from mlops_pipeline.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "include/models/churn.yaml")
    report = evaluate_gates(
        spec, {"roc_auc": float("nan"), "accuracy": 0.9}, None, [], 1.0, 1.0, candidate={}, champion=None
    )
    parsed = json.loads(
        report.to_json(), parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}")
    )
    assert parsed["passed"] is False


# --- metrics per task against scikit-learn's own ---------------------------------------------------


def test_multiclass_metrics_equal_sklearns_own() -> None:
    """Every multiclass metric is scikit-learn's, computed on the labels as they came."""
    from sklearn import metrics as m

    rng = np.random.default_rng(3)
    classes = ["Adelie", "Chinstrap", "Gentoo"]
    y_true = rng.choice(classes, size=300)
    proba = rng.dirichlet([1, 1, 1], size=300)
    proba[np.arange(300), [classes.index(c) for c in y_true]] += 0.5
    proba /= proba.sum(axis=1, keepdims=True)
    y_pred = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    metrics = compute_metrics("multiclass", y_true, y_pred, proba, classes)
    assert metrics == pytest.approx(
        {
            "accuracy": m.accuracy_score(y_true, y_pred),
            "balanced_accuracy": m.balanced_accuracy_score(y_true, y_pred),
            "f1_macro": m.f1_score(y_true, y_pred, average="macro"),
            "f1_weighted": m.f1_score(y_true, y_pred, average="weighted"),
            "roc_auc_ovr": m.roc_auc_score(y_true, proba, multi_class="ovr", labels=classes),
            "log_loss": m.log_loss(y_true, proba, labels=classes),
        },
        abs=1e-12,
    )


def test_binary_metrics_of_text_labels_use_the_named_positive_class() -> None:
    """With text labels, binary metrics are those of the positive class, as scikit-learn computes them."""
    from sklearn import metrics as m

    y_true = np.array(["yes", "no", "yes", "no", "yes"], dtype=object)
    y_pred = np.array(["yes", "yes", "no", "no", "yes"], dtype=object)
    proba = np.array([[0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.9, 0.1], [0.1, 0.9]])  # columns: no, yes
    metrics = compute_metrics("binary", y_true, y_pred, proba, ["no", "yes"], positive="yes")
    is_yes = (y_true == "yes").astype(int)
    assert metrics == pytest.approx(
        {
            "accuracy": m.accuracy_score(y_true, y_pred),
            "f1": m.f1_score(y_true, y_pred, pos_label="yes"),
            "precision": m.precision_score(y_true, y_pred, pos_label="yes"),
            "recall": m.recall_score(y_true, y_pred, pos_label="yes"),
            "roc_auc": m.roc_auc_score(is_yes, proba[:, 1]),
            "log_loss": m.log_loss(is_yes, proba[:, 1]),
        }
    )
    flipped = compute_metrics("binary", y_true, y_pred, proba, ["no", "yes"], positive="no")
    assert flipped["recall"] == pytest.approx(m.recall_score(y_true, y_pred, pos_label="no"))


def test_multiclass_roc_auc_is_left_out_when_a_class_is_absent() -> None:
    """One-vs-rest ROC AUC needs every class among the true labels; the rest are still computed."""
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])
    metrics = compute_metrics(
        "multiclass", np.array(["a", "b"]), np.array(["a", "b"]), proba, ["a", "b", "c"]
    )
    assert "roc_auc_ovr" not in metrics and metrics["accuracy"] == 1.0 and "log_loss" in metrics
