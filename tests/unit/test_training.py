"""Training: the hashed holdout split, feature typing, the pipeline and deterministic fits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from threadpoolctl import threadpool_limits

from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.training import (
    build_pipeline,
    features_frame,
    holdout_mask,
    make_estimator,
    split_frame,
    target_series,
    train_model,
)

COLOURS = ["red", "blue", "green"]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny fits: OpenMP threads only spin-wait on a busy machine (a 50 ms fit becomes 2 s)."""
    with threadpool_limits(limits=1):
        yield


def make_spec(
    kind: str = "logistic_regression",
    task: str = "classification",
    params: dict[str, Any] | None = None,
    features: dict[str, Any] | None = None,
    seed: int = 42,
) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": "demo",
            "task": task,
            "source": {"uri": "landing/demo/ds={ds}/*.csv"},
            "id_column": "id",
            "target": "label",
            "features": features
            or {
                "x": {"type": "number", "nullable": True},
                "n": {"type": "integer"},
                "colour": {"type": "category", "allowed": COLOURS, "nullable": True},
                "flag": {"type": "boolean"},
            },
            "estimator": {"kind": kind, "params": params or {}},
            "split": {"holdout_fraction": 0.25, "seed": seed},
            "gates": {"primary_metric": "roc_auc" if task == "classification" else "rmse"},
        }
    )


def clean_frame(rows: int = 400, seed: int = 0, start: int = 0) -> pd.DataFrame:
    """Rows as validation publishes them: numbers float, categories text, booleans 0/1, int labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    n = rng.integers(0, 10, size=rows)
    colour = rng.choice(COLOURS, size=rows)
    flag = rng.integers(0, 2, size=rows)
    logit = 2.5 * x + 1.5 * (colour == "red") - 1.0 * flag + 0.1 * (n - 5)
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame(
        {
            "id": [f"r{i:06d}" for i in range(start, start + rows)],
            "x": x,
            "n": n.astype(float),
            "colour": colour.astype(object),
            "flag": flag.astype(float),
            "label": label,
        }
    )


# --- the holdout split ---------------------------------------------------------------------------


def test_holdout_mask_is_deterministic_and_near_the_fraction() -> None:
    ids = pd.Series([f"id-{i}" for i in range(20_000)])
    first = holdout_mask(ids, 0.2, seed=42)
    assert first.dtype == bool
    assert np.array_equal(first, holdout_mask(ids.copy(), 0.2, seed=42))
    assert abs(first.mean() - 0.2) < 0.01


def test_a_rows_side_depends_only_on_its_id_and_the_seed() -> None:
    ids = pd.Series([f"id-{i}" for i in range(2_000)])
    alone = holdout_mask(ids, 0.3, seed=7)
    # More rows arrive, in another order, with another index: existing ids keep their side.
    grown = pd.concat([pd.Series([f"new-{i}" for i in range(3_000)]), ids[::-1]], ignore_index=True)
    grown.index = grown.index + 1_000
    grown_mask = pd.Series(holdout_mask(grown, 0.3, seed=7), index=grown.to_numpy())
    assert np.array_equal(grown_mask.loc[ids.to_numpy()].to_numpy(), alone)


def test_a_larger_fraction_only_adds_rows_to_the_holdout() -> None:
    ids = pd.Series(range(5_000))
    small, large = holdout_mask(ids, 0.1, 1), holdout_mask(ids, 0.3, 1)
    assert not (small & ~large).any()
    assert large.sum() > small.sum()


def test_another_seed_gives_another_split() -> None:
    ids = pd.Series([f"id-{i}" for i in range(1_000)])
    assert not np.array_equal(holdout_mask(ids, 0.2, 1), holdout_mask(ids, 0.2, 2))


def test_numeric_and_text_ids_with_the_same_text_land_on_the_same_side() -> None:
    assert np.array_equal(
        holdout_mask(pd.Series([1, 22, 333]), 0.5, 3), holdout_mask(pd.Series(["1", "22", "333"]), 0.5, 3)
    )


def _reference_holdout_mask(ids: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """The holdout rule as first written, one int.from_bytes per id: the split may never change."""
    import hashlib

    salted = (str(seed) + ":" + ids.astype(str)).to_numpy()
    buckets = np.fromiter(
        (int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big") for value in salted),
        dtype=np.uint64,
        count=len(salted),
    )
    return (buckets / np.float64(2**64)) < fraction


@pytest.mark.parametrize(
    "ids",
    [
        pd.Series([f"c20260214-{i:05d}" for i in range(20_000)]),
        pd.Series(range(-500, 5_000)),
        pd.Series([1.5, 2.0, np.nan, 1e20]),
        pd.Series(["ünïcødé", "日本", "", " x ", "a:b"], index=[9, 9, 3, 1, 0]),
        pd.Series([], dtype=object),
    ],
    ids=["text", "integers", "floats", "unicode-duplicate-index", "empty"],
)
def test_holdout_mask_keeps_every_rows_side_bit_for_bit(ids: pd.Series) -> None:
    for fraction, seed in [(0.2, 42), (0.5, 0), (0.013, 12345)]:
        assert np.array_equal(holdout_mask(ids, fraction, seed), _reference_holdout_mask(ids, fraction, seed))


def test_train_model_given_the_split_fits_the_same_model() -> None:
    spec = make_spec("hist_gradient_boosting", params={"max_iter": 20})
    frame = clean_frame(600)
    split = split_frame(frame, spec)
    assert (split.train_rows, split.holdout_rows) == (len(split.train), len(split.holdout))
    given, own = train_model(frame, spec, split), train_model(frame, spec)
    assert (given.train_rows, given.holdout_rows) == (own.train_rows, own.holdout_rows)
    features = features_frame(split.holdout, spec)
    np.testing.assert_array_equal(
        given.pipeline.predict_proba(features), own.pipeline.predict_proba(features)
    )


def test_split_frame_partitions_the_rows_by_id() -> None:
    spec = make_spec()
    frame = clean_frame(1_000)
    split = split_frame(frame, spec)
    assert len(split.train) + len(split.holdout) == len(frame)
    assert set(split.train["id"]).isdisjoint(split.holdout["id"])
    assert 0.2 < len(split.holdout) / len(frame) < 0.3
    grown = split_frame(pd.concat([clean_frame(500, seed=1, start=5_000), frame]), spec)
    assert set(split.holdout["id"]) <= set(grown.holdout["id"])
    assert set(split.train["id"]) <= set(grown.train["id"])


# --- typing features and targets ----------------------------------------------------------------


def test_features_frame_types_raw_text_columns_in_spec_order() -> None:
    spec = make_spec()
    raw = pd.DataFrame(
        {
            "label": ["1", "0", "1", "0"],
            "flag": ["true", "0", "False", None],
            "colour": ["red", None, "purple", "blue"],
            "n": ["3", "4", None, "x"],
            "x": ["1.5", "-2e1", "n/a", None],
            "id": ["a", "b", "c", "d"],
        }
    )
    features = features_frame(raw, spec)
    assert list(features.columns) == ["x", "n", "colour", "flag"]
    assert features["x"].dtype == "float64"
    assert features["x"].tolist()[:2] == [1.5, -20.0]
    assert features["x"].isna().tolist() == [False, False, True, True]
    assert features["n"].isna().tolist() == [False, False, True, True]
    assert features["flag"].tolist()[:3] == [1.0, 0.0, 0.0]
    assert np.isnan(features["flag"].iloc[3])
    assert features["colour"].dtype == object
    assert features["colour"].tolist()[::2] == ["red", "purple"]
    assert features["colour"].isna().tolist() == [False, True, False, False]


def test_features_frame_accepts_already_typed_columns() -> None:
    spec = make_spec()
    frame = clean_frame(5)
    frame["flag"] = [True, False, True, False, True]
    features = features_frame(frame, spec)
    assert features["flag"].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert features["x"].tolist() == frame["x"].tolist()
    assert features.index.equals(frame.index)


def test_categories_sent_as_numbers_match_their_text_in_the_spec() -> None:
    spec = make_spec(features={"sex": {"type": "category", "allowed": ["1", "2"]}})
    features = features_frame(pd.DataFrame({"sex": [1, 2, None]}, dtype=object), spec)
    assert features["sex"].tolist()[:2] == ["1", "2"]
    assert pd.isna(features["sex"].iloc[2])


def test_a_dictionary_encoded_category_column_is_typed_as_its_values_are() -> None:
    spec = make_spec(features={"sex": {"type": "category", "allowed": ["1", "2", "x"]}})
    values = [1, "x", None, 2, "x", np.nan, 1.5]
    as_objects = features_frame(pd.DataFrame({"sex": values}, dtype=object, index=range(3, 10)), spec)
    encoded = pd.DataFrame({"sex": pd.Series(values, dtype=object, index=range(3, 10)).astype("category")})
    pd.testing.assert_frame_equal(features_frame(encoded, spec), as_objects)


def test_infinite_numbers_become_missing_and_the_input_is_left_as_it_was() -> None:
    spec = make_spec()
    frame = clean_frame(4)
    frame["x"] = [np.inf, -np.inf, 1.0, np.nan]
    before = frame.copy()
    features = features_frame(frame, spec)
    assert features["x"].isna().tolist() == [True, True, False, True]
    pd.testing.assert_frame_equal(frame, before)


def test_target_series_is_int_for_classification_and_float_for_regression() -> None:
    frame = pd.DataFrame({"label": ["1", "0", "1.0"]})
    labels = target_series(frame, make_spec())
    assert labels.dtype == "int64" and labels.tolist() == [1, 0, 1]
    values = target_series(pd.DataFrame({"label": ["1.5", "2"]}), make_spec("ridge", "regression"))
    assert values.dtype == "float64" and values.tolist() == [1.5, 2.0]


def test_a_non_numeric_target_is_an_error() -> None:
    with pytest.raises(ValueError):
        target_series(pd.DataFrame({"label": ["yes", "no"]}), make_spec())


# --- the pipeline and its estimator -------------------------------------------------------------


def test_linear_models_get_scaling_and_tree_models_do_not() -> None:
    for kind, scaled in [("logistic_regression", True), ("hist_gradient_boosting", False)]:
        preprocess: ColumnTransformer = build_pipeline(make_spec(kind)).named_steps["preprocess"]
        numeric = dict((name, step) for name, step, _ in preprocess.transformers)["numeric"]
        assert ("scale" in numeric.named_steps) is scaled


def test_the_encoder_knows_the_spec_categories_and_ignores_unknown_ones() -> None:
    preprocess = build_pipeline(make_spec()).named_steps["preprocess"]
    transformers = {name: (step, columns) for name, step, columns in preprocess.transformers}
    assert transformers["numeric"][1] == ["x", "n", "flag"]
    step, columns = transformers["categorical"]
    assert columns == ["colour"]
    encoder = step.named_steps["encode"]
    assert encoder.categories == [COLOURS]
    assert encoder.handle_unknown == "ignore"
    assert encoder.sparse_output is False


def test_a_spec_with_only_numeric_or_only_categorical_features_builds_one_branch() -> None:
    numeric_only = build_pipeline(make_spec(features={"x": {"type": "number"}}))
    assert [name for name, _, _ in numeric_only.named_steps["preprocess"].transformers] == ["numeric"]
    category_only = build_pipeline(make_spec(features={"c": {"type": "category", "allowed": ["a"]}}))
    assert [name for name, _, _ in category_only.named_steps["preprocess"].transformers] == ["categorical"]


@pytest.mark.parametrize(
    ("kind", "task", "cls"),
    [
        ("logistic_regression", "classification", LogisticRegression),
        ("hist_gradient_boosting", "classification", HistGradientBoostingClassifier),
        ("random_forest", "classification", RandomForestClassifier),
        ("random_forest", "regression", RandomForestRegressor),
        ("ridge", "regression", Ridge),
    ],
)
def test_make_estimator_builds_the_spec_class_seeded_by_the_split_seed(
    kind: str, task: str, cls: type
) -> None:
    estimator = make_estimator(make_spec(kind, task, seed=123))
    assert type(estimator) is cls
    assert estimator.get_params()["random_state"] == 123


def test_estimator_params_are_passed_and_an_explicit_random_state_wins() -> None:
    estimator = make_estimator(make_spec("random_forest", params={"n_estimators": 7, "random_state": 5}))
    assert estimator.get_params()["n_estimators"] == 7
    assert estimator.get_params()["random_state"] == 5


def test_an_unknown_estimator_param_names_the_model() -> None:
    with pytest.raises(ValueError, match=r"estimator\.params of demo: .*n_trees"):
        make_estimator(make_spec("random_forest", params={"n_trees": 7}))


# --- fitting -------------------------------------------------------------------------------------


def test_train_model_fits_on_the_train_rows_and_learns_the_signal() -> None:
    spec = make_spec()
    frame = clean_frame(800)
    result = train_model(frame, spec)
    split = split_frame(frame, spec)
    assert (result.train_rows, result.holdout_rows) == (len(split.train), len(split.holdout))
    assert result.fit_seconds >= 0
    assert result.params == {
        "estimator": "logistic_regression",
        "split.holdout_fraction": 0.25,
        "split.seed": 42,
    }
    accuracy = (result.pipeline.predict(features_frame(split.holdout, spec)) == split.holdout["label"]).mean()
    assert accuracy > 0.75


def test_train_model_records_the_estimator_params() -> None:
    spec = make_spec("random_forest", params={"n_estimators": 5, "max_depth": 3})
    result = train_model(clean_frame(300), spec)
    assert result.params["estimator.n_estimators"] == 5
    assert result.params["estimator.max_depth"] == 3
    assert result.pipeline.named_steps["model"].n_estimators == 5


def test_nulls_are_imputed_with_the_training_median_and_most_frequent_category() -> None:
    spec = make_spec()
    frame = clean_frame(600)
    frame.loc[::7, "x"] = np.nan
    frame.loc[::5, "colour"] = None
    result = train_model(frame, spec)
    train = split_frame(frame, spec).train
    row = features_frame(train.iloc[[0]], spec)
    with_nulls = row.assign(x=np.nan, colour=np.nan)
    imputed = row.assign(x=train["x"].median(), colour=train["colour"].mode().iloc[0])
    proba = result.pipeline.predict_proba(with_nulls)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba, result.pipeline.predict_proba(imputed))


def test_an_unseen_category_is_scored_as_no_known_category() -> None:
    spec = make_spec("hist_gradient_boosting", params={"max_iter": 20})
    result = train_model(clean_frame(600), spec)
    rows = features_frame(clean_frame(3, seed=9), spec).assign(colour="purple")
    proba = result.pipeline.predict_proba(rows)
    assert proba.shape == (3, 2)
    assert np.isfinite(proba).all()
    encoded = result.pipeline.named_steps["preprocess"].transform(rows)
    colour_columns = [
        i for i, name in enumerate(result.pipeline[:-1].get_feature_names_out()) if "colour" in name
    ]
    assert len(colour_columns) == 3
    assert (encoded[:, colour_columns] == 0).all()


@pytest.mark.parametrize(
    ("kind", "params"),
    [("random_forest", {"n_estimators": 10}), ("hist_gradient_boosting", {"max_iter": 20})],
)
def test_the_same_seed_gives_identical_predictions(kind: str, params: dict[str, Any]) -> None:
    spec = make_spec(kind, params=params)
    frame = clean_frame(600)
    probe = features_frame(clean_frame(50, seed=3), spec)
    first = train_model(frame, spec).pipeline.predict_proba(probe)
    second = train_model(frame.sample(frac=1.0, random_state=0).sort_index(), spec).pipeline.predict_proba(
        probe
    )
    assert np.array_equal(first, second)


def test_a_random_forest_with_another_seed_predicts_differently() -> None:
    frame = clean_frame(600)
    probe = features_frame(clean_frame(50, seed=3), make_spec())
    one = train_model(frame, make_spec("random_forest", params={"n_estimators": 10}, seed=1))
    two = train_model(frame, make_spec("random_forest", params={"n_estimators": 10}, seed=2))
    assert not np.array_equal(one.pipeline.predict_proba(probe), two.pipeline.predict_proba(probe))


def test_a_regression_pipeline_fits_and_predicts_floats() -> None:
    spec = make_spec("ridge", "regression")
    frame = clean_frame(400)
    frame["label"] = 3.0 * frame["x"] + frame["n"] + np.random.default_rng(1).normal(0, 0.1, len(frame))
    result = train_model(frame, spec)
    holdout = split_frame(frame, spec).holdout
    predicted = result.pipeline.predict(features_frame(holdout, spec))
    assert predicted.dtype == np.float64
    assert np.abs(predicted - holdout["label"].to_numpy()).mean() < 0.5


def test_too_few_rows_for_a_holdout_is_an_error() -> None:
    frame = clean_frame(400)
    one_train_row = frame[~holdout_mask(frame["id"], 0.25, 42)].iloc[:1]
    with pytest.raises(ValueError, match="demo: 1 clean rows give an empty train or holdout set"):
        train_model(one_train_row, make_spec())


def test_a_single_class_cannot_be_fitted() -> None:
    frame = clean_frame(200).assign(label=1)
    with pytest.raises(ValueError, match=r"demo: training data has a single class \(1\)"):
        train_model(frame, make_spec())


# --- any scikit-learn-compatible estimator, and your own feature code -----------------------------


def class_spec(path: str, task: str = "classification", **extra: Any) -> ModelSpec:
    data = make_spec().model_dump(by_alias=True)
    data["estimator"] = {"class": path, "params": {}}
    data["task"] = task
    if task == "regression":
        data["gates"] = {"primary_metric": "rmse"}
    return ModelSpec.model_validate({**data, **extra})


def test_an_estimator_by_import_path_is_built_with_its_params_and_seed() -> None:
    """`estimator.class` imports that class, passes its params, seeds it with the split seed."""
    from sklearn.ensemble import ExtraTreesClassifier

    spec = class_spec("sklearn.ensemble.ExtraTreesClassifier")
    estimator = build_pipeline(spec).named_steps["model"]
    assert isinstance(estimator, ExtraTreesClassifier) and estimator.random_state == 42


def test_lightgbm_is_a_tested_option_that_fits_and_predicts_text_labels() -> None:
    """LightGBM fits through the same pipeline and predicts the labels it was given."""
    from lightgbm import LGBMClassifier

    spec = class_spec("lightgbm.LGBMClassifier", target={"column": "label", "classes": ["no", "yes"]})
    frame = clean_frame()
    frame["label"] = np.where(frame["label"].astype(int) == 1, "yes", "no")
    pipeline = train_model(frame, spec).pipeline
    assert isinstance(pipeline.named_steps["model"], LGBMClassifier)
    assert list(pipeline.classes_) == ["no", "yes"]
    assert set(pipeline.predict(features_frame(frame, spec))) <= {"no", "yes"}


@pytest.mark.parametrize(
    ("path", "task", "problem"),
    [
        ("sklearn.ensemble.RandomForestRegressor", "classification", "is not a classifier"),
        ("sklearn.ensemble.RandomForestClassifier", "regression", "is not a regressor"),
        ("sklearn.svm.SVC", "classification", "has no predict_proba"),
        ("sklearn.ensemble.NoSuchForest", "classification", "cannot be imported"),
    ],
)
def test_an_estimator_that_cannot_do_the_task_is_refused_before_fitting(
    path: str, task: str, problem: str
) -> None:
    """A class that cannot serve the task is refused at the start of training, naming why."""
    with pytest.raises(ValueError, match=problem):
        build_pipeline(class_spec(path, task))


def test_your_own_feature_code_becomes_the_pipelines_preprocessing() -> None:
    """`pipeline: module:function` builds the preprocessing; the spec's estimator follows it."""
    from pathlib import Path

    import palmerpenguins

    from mlops_pipeline.spec import load_spec
    from mlops_pipeline.training import features_frame as typed

    spec = load_spec(Path(__file__).resolve().parents[2] / "include/models/penguins.yaml")
    pipeline = build_pipeline(spec)
    assert [name for name, _ in pipeline.steps] == ["preprocess", "model"]
    assert type(pipeline.named_steps["preprocess"]).__module__.startswith("sklearn.compose")
    frame = palmerpenguins.load_penguins()
    pipeline.fit(typed(frame, spec), frame["species"])
    assert pipeline.score(typed(frame, spec), frame["species"]) > 0.95


def test_class_weight_is_passed_to_the_estimator_and_refused_where_it_does_not_apply() -> None:
    """`training.class_weight` reaches estimators that take it; others are refused naming the way out."""
    data = make_spec("random_forest").model_dump(by_alias=True)
    weighted = ModelSpec.model_validate({**data, "training": {"class_weight": "balanced"}})
    assert build_pipeline(weighted).named_steps["model"].class_weight == "balanced"
    boosted = ModelSpec.model_validate(
        {
            **make_spec("hist_gradient_boosting").model_dump(by_alias=True),
            "training": {"class_weight": "balanced"},
        }
    )
    assert build_pipeline(boosted).named_steps["model"].class_weight == "balanced"
    data["estimator"] = {"class": "sklearn.neighbors.KNeighborsClassifier", "params": {}}
    with pytest.raises(ValueError, match=r"takes no class_weight; use training\.sample_weight_column"):
        build_pipeline(ModelSpec.model_validate({**data, "training": {"class_weight": "balanced"}}))


def test_sample_weights_from_a_column_change_the_fit() -> None:
    """`training.sample_weight_column` weights the fit: weighting one class up moves the predictions."""
    data = make_spec("logistic_regression").model_dump(by_alias=True)
    spec = ModelSpec.model_validate({**data, "training": {"sample_weight_column": "w"}})
    frame = clean_frame(rows=600)
    frame["w"] = 1.0
    plain = train_model(frame, spec).pipeline
    frame["w"] = np.where(frame["label"].astype(int) == 1, 20.0, 1.0)
    weighted = train_model(frame, spec).pipeline
    features = features_frame(frame, spec)
    assert weighted.predict(features).mean() > plain.predict(features).mean()
    assert spec.columns[-1] == "w"


def test_a_search_ranks_candidates_by_the_gates_primary_metric() -> None:
    """The search's scorer is the primary metric as the gates compute it; the best is refitted."""
    data = make_spec("random_forest").model_dump(by_alias=True)
    spec = ModelSpec.model_validate(
        {
            **data,
            "training": {
                "search": {
                    "method": "random",
                    "space": {"max_depth": [1, 2, 6], "n_estimators": [5, 20]},
                    "cv": 3,
                    "n_iter": 4,
                }
            },
        }
    )
    result = train_model(clean_frame(rows=500), spec)
    assert result.search is not None and len(result.search) == 4
    best = min(result.search, key=lambda c: c.rank)
    assert best.mean_score == max(c.mean_score for c in result.search)
    assert result.pipeline.named_steps["model"].max_depth == best.params["max_depth"]
    assert result.params["estimator.max_depth"] == best.params["max_depth"]
