"""Targets as they come: label types from the spec, the task the data holds, the positive class,
safe probability column names, and a model that predicts the labels it was given."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.targets import (
    TargetError,
    canonical_label_text,
    classification_task,
    positive_label,
    proba_columns,
    typed_target,
)


def spec(task: str = "classification", target: Any = "label", **extra: Any) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": "demo",
            "task": task,
            "source": {"uri": "landing/demo/ds={ds}/*.csv"},
            "id_column": "id",
            "target": target,
            "features": {"x": {"type": "number"}},
            "estimator": {"kind": "random_forest" if task != "regression" else "ridge"},
            "gates": {"primary_metric": "accuracy" if task != "regression" else "r2"},
            **extra,
        }
    )


def test_without_classes_labels_are_integers_as_before() -> None:
    """A target without `classes` keeps today's integer labels (text " 1.0" is the label 1)."""
    labels = typed_target(pd.Series(["0", " 1.0", "1"]), spec())
    assert labels.tolist() == [0, 1, 1] and labels.dtype == "int64"
    with pytest.raises(TargetError, match=r"not integer labels; list the labels in target.classes"):
        typed_target(pd.Series(["yes", "no"]), spec())


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8"])
def test_typed_integer_labels_are_the_labels_their_text_gives(dtype: str) -> None:
    values = pd.Series([0, 3, 1, 0, 2], dtype=dtype, index=[5, 6, 7, 8, 9])
    typed = typed_target(values, spec())
    pd.testing.assert_series_equal(typed, typed_target(values.astype(str).astype(object), spec()))
    assert typed.dtype == "int64"


def test_text_labels_come_back_as_text() -> None:
    """With text classes, labels are the text as it came."""
    text = spec(target={"column": "label", "classes": ["no", "yes"], "positive": "yes"})
    assert typed_target(pd.Series(["yes", "no", None]), text).tolist() == ["yes", "no", None]


def test_boolean_labels_read_true_false_words_and_digits() -> None:
    """With boolean classes, true/false words and 1/0 are booleans."""
    flags = spec(target={"column": "label", "classes": [False, True]})
    assert typed_target(pd.Series(["true", "FALSE", "1", "0"]), flags).tolist() == [True, False, True, False]
    assert canonical_label_text(pd.Series(["TRUE", "0", "maybe"]), flags).tolist() == [
        "true",
        "false",
        "maybe",
    ]


def test_canonical_text_of_integer_labels() -> None:
    """Integer labels compare as their canonical text; anything else stays as it came."""
    numbers = spec(target={"column": "label", "classes": [0, 1, 2]})
    assert canonical_label_text(pd.Series(["1.0", " 2", "x", None]), numbers).tolist() == [
        "1",
        "2",
        "x",
        None,
    ]


def test_the_task_the_data_holds_is_checked_against_the_spec() -> None:
    """`classification` takes what the data holds; binary/multiclass must match it."""
    assert classification_task(spec(), ["a", "b"]) == "binary"
    assert classification_task(spec(), ["a", "b", "c"]) == "multiclass"
    with pytest.raises(TargetError, match="task binary, but the training data holds 3 classes"):
        classification_task(spec(task="binary"), ["a", "b", "c"])
    with pytest.raises(TargetError, match="single class"):
        classification_task(spec(), ["a"])


def test_the_positive_class_is_named_or_the_larger_label() -> None:
    """`target.positive` names the positive class; without it, the last (larger) label."""
    assert positive_label(spec(), [0, 1]) == 1
    named = spec(target={"column": "label", "classes": ["churn", "stay"], "positive": "churn"})
    assert positive_label(named, ["churn", "stay"]) == "churn"


def test_probability_columns_are_safe_for_any_label_text() -> None:
    """One safe, distinct column name per class, in the classes' order."""
    assert proba_columns([0, 1]) == ["proba_0", "proba_1"]
    assert proba_columns(["Adélie penguin", "a-b", "a b", "", True]) == [
        "proba_Ad_lie_penguin",
        "proba_a_b",
        "proba_a_b_2",
        "proba_class",
        "proba_true",
    ]


def test_a_fitted_model_returns_the_labels_as_they_came() -> None:
    """The label mapping round trip: text in, the same text out, classes in sorted order."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 1))
    y = np.where(x[:, 0] > 0.5, "Gentoo", np.where(x[:, 0] < -0.5, "Adelie", "Chinstrap")).astype(object)
    model = LogisticRegression().fit(x, y)
    assert list(model.classes_) == ["Adelie", "Chinstrap", "Gentoo"]
    assert set(model.predict(x)) <= {"Adelie", "Chinstrap", "Gentoo"}
    assert (model.predict(x) == y).mean() > 0.9


def test_a_positive_class_with_three_classes_in_the_data_is_refused() -> None:
    """`classification` with target.positive refuses data that turns out multiclass."""
    named = spec(target={"column": "label", "classes": ["a", "b", "c"], "positive": "a"})
    with pytest.raises(TargetError, match=r"target\.positive is for binary targets"):
        classification_task(named, ["a", "b", "c"])
