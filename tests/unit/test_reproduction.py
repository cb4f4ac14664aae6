"""Reproduction's comparisons (pure): bit-identical predictions, the environment then and now,
and a report that names the first difference with its likely cause."""

from __future__ import annotations

import json

import numpy as np

from mlops_pipeline.evaluation import Predictions
from mlops_pipeline.reproduction import (
    ReproductionCheck,
    ReproductionReport,
    compare_predictions,
    environment_differences,
)


def predictions(proba: list[float]) -> Predictions:
    column = np.asarray(proba)
    both = np.column_stack([1 - column, column])
    return Predictions(np.zeros(len(proba)), (column > 0.5).astype(int), both, [0, 1], 1)


def test_identical_predictions_pass() -> None:
    check = compare_predictions(predictions([0.2, 0.7]), predictions([0.2, 0.7]))
    assert check.passed and check.detail == "2 holdout rows predicted bit-identically"


def test_one_ulp_of_difference_is_a_difference() -> None:
    nudged = np.nextafter(0.7, 1.0)
    check = compare_predictions(predictions([0.2, 0.7]), predictions([0.2, nudged]))
    assert not check.passed
    assert check.detail.startswith("0 of 2 holdout predictions differ; largest probability difference 1.1")


def test_changed_labels_are_counted() -> None:
    check = compare_predictions(predictions([0.2, 0.7, 0.9]), predictions([0.6, 0.7, 0.4]))
    assert not check.passed and check.detail.startswith("2 of 3 holdout predictions differ")


def test_regression_values_are_compared_bit_for_bit() -> None:
    same = Predictions(np.zeros(2), np.array([1.5, 2.5]), None, None)
    other = Predictions(np.zeros(2), np.array([1.5, 2.5000001]), None, None)
    assert compare_predictions(same, same).passed
    assert not compare_predictions(same, other).passed


def test_environment_differences_name_code_lock_and_packages() -> None:
    recorded = {
        "code_version": "abc",
        "lock_sha256": "1" * 64,
        "version.scikit-learn": "1.9.0",
        "version.numpy": "2.3.0",
        "data_uri": "ignored",
    }
    now = {**recorded, "code_version": "def", "version.numpy": "2.4.0", "version.lightgbm": "4.6.0"}
    del now["data_uri"]
    assert environment_differences(recorded, now) == [
        "code_version abc -> def",
        "lightgbm unrecorded -> 4.6.0",
        "numpy 2.3.0 -> 2.4.0",
    ]
    assert environment_differences(recorded, recorded) == []


def test_the_report_names_the_first_difference_and_the_environment_as_its_cause() -> None:
    report = ReproductionReport(
        "churn",
        "3",
        "run",
        [
            ReproductionCheck("spec", True, "ok"),
            ReproductionCheck("data", True, "ok"),
            ReproductionCheck("holdout_predictions", False, "5 of 10 holdout predictions differ"),
            ReproductionCheck("artifact_sha256", False, "sha differs"),
        ],
        ["scikit-learn 1.9.0 -> 1.9.1"],
    )
    assert not report.identical
    assert report.first_difference == (
        "holdout_predictions: 5 of 10 holdout predictions differ. "
        "Differences in the environment since training: scikit-learn 1.9.0 -> 1.9.1"
    )
    assert json.loads(report.to_json())["first_difference"] == report.first_difference


def test_a_data_difference_is_its_own_cause() -> None:
    report = ReproductionReport(
        "churn",
        "3",
        "run",
        [ReproductionCheck("spec", True, "ok"), ReproductionCheck("data", False, "altered")],
    )
    assert report.first_difference == "data: altered"


def test_a_report_with_checks_missing_is_not_identical() -> None:
    report = ReproductionReport("churn", "3", "run", [ReproductionCheck("spec", True, "ok")])
    assert not report.identical and report.first_difference is None
