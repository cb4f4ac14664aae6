"""Training: one sklearn Pipeline (preprocessing + estimator), fitted deterministically.

What is trained is exactly what is served: imputation, scaling and encoding live inside the
pipeline, so scoring needs nothing but the pipeline and the raw feature columns.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops_pipeline.spec import ModelSpec

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

# Estimators that need scaled numbers (the linear ones).
_LINEAR_PACKAGES = ("sklearn.linear_model.", "sklearn.svm.")


def holdout_mask(ids: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """True for rows in the holdout, decided by a hash of (seed, id).

    A row's side never depends on which window it arrived in, so the champion was never
    trained on the rows that a later candidate is compared on (no leakage in the gate).
    """
    # The bucket of a row is the big-endian integer of blake2b-64("<seed>:<id as text>"); it must
    # never change (it decides which rows every past champion was compared on). One bytes object
    # of all digests read as big-endian uint64 in one go: the same numbers as int.from_bytes per
    # id, at ~30% less of this loop's time (1M ids: 0.53 s instead of 0.77 s).
    prefix = f"{seed}:"
    blake2b = hashlib.blake2b
    digests = b"".join(
        [blake2b((prefix + value).encode(), digest_size=8).digest() for value in ids.astype(str).to_numpy()]
    )
    buckets = np.frombuffer(digests, dtype=">u8").astype(np.uint64)
    return (buckets / np.float64(2**64)) < fraction


# Feature types the model gets as float64 (`features_frame`); every other type (category) as str.
NUMERIC_FEATURE_TYPES = ("number", "integer", "boolean")


def features_frame(frame: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """The feature columns in spec order, typed for the pipeline (numbers float, categories str)."""
    columns: dict[str, Any] = {}
    for name, feature in spec.features.items():
        values = frame[name]
        if feature.type in NUMERIC_FEATURE_TYPES:
            # ±inf is no value a model can use: missing, like unparseable text (validation flags both).
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", copy=True)
            numbers[np.isinf(numbers)] = np.nan  # in place: one copy of the column, not three
            columns[name] = pd.Series(numbers, index=frame.index)
            if feature.type == "boolean":
                # Raw text as validation accepts it ("true"/"False"), not only 0/1.
                words = values.astype(str).str.strip().str.lower().map({"true": 1.0, "false": 0.0})
                columns[name] = columns[name].fillna(words)
        elif isinstance(values.dtype, pd.CategoricalDtype):
            columns[name] = _categories_as_text(values)
        else:
            # str, so that a category sent as a number (1) matches the spec's allowed value ("1").
            columns[name] = values.astype(str).where(values.notna(), np.nan).astype(object)
    # copy=False: the new columns as they are, not copied again into one block per dtype.
    return pd.DataFrame(columns, index=frame.index, copy=False)


def _categories_as_text(values: pd.Series) -> pd.Series:
    """A Categorical's values as `features_frame` types any category column (str objects, NaN where
    missing), converting each distinct value once instead of every row (5M rows: 0.05 s, not 0.7 s)."""
    text = np.array([*(str(category) for category in values.cat.categories), np.nan], dtype=object)
    return pd.Series(text[values.cat.codes.to_numpy()], index=values.index)  # code -1 (missing) → NaN


def target_series(frame: pd.DataFrame, spec: ModelSpec) -> pd.Series:
    """The target: labels as they came, of the spec's label type (classification), or floats (regression)."""
    from mlops_pipeline.targets import typed_target

    return typed_target(frame[spec.target], spec)


def build_pipeline(spec: ModelSpec) -> Pipeline:
    """The one Pipeline that is trained and served: the spec's feature code (`pipeline:`) or the
    preprocessing for its feature types, followed by the spec's estimator."""
    if spec.pipeline is not None:
        from mlops_pipeline.feature_code import build_from_factory

        return build_from_factory(spec, make_estimator)
    return default_pipeline(spec)


def default_pipeline(spec: ModelSpec) -> Pipeline:
    """Preprocessing for the spec's feature types followed by the spec's estimator."""
    # Imported here, not with the module: validation and scoring use this module's typing
    # helpers, and importing scikit-learn costs ~2 s in every task process that does not fit.
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [name for name, f in spec.features.items() if f.type in NUMERIC_FEATURE_TYPES]
    categorical = [name for name, f in spec.features.items() if f.type == "category"]
    numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if spec.estimator.import_path(spec.family).startswith(_LINEAR_PACKAGES):
        numeric_steps.append(("scale", StandardScaler()))
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        transformers.append(("numeric", Pipeline(numeric_steps), numeric))
    if categorical:
        categories = [list(spec.features[name].allowed or []) for name in categorical]
        # Dense output: HistGradientBoosting rejects sparse input. Known categories come from
        # the spec, so the encoding does not depend on which values one window happened to hold.
        encoder = OneHotEncoder(categories=categories, handle_unknown="ignore", sparse_output=False)
        transformers.append(
            (
                "categorical",
                Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("encode", encoder)]),
                categorical,
            )
        )
    preprocess = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    return Pipeline([("preprocess", preprocess), ("model", make_estimator(spec))])


def estimator_class(spec: ModelSpec) -> type:
    """Import the spec's estimator class and check it can do the spec's task (ValueError naming why).

    Checked here, at the start of training, not when the spec is parsed: importing scikit-learn
    or LightGBM while the scheduler parses DAG files costs seconds per parse.
    """
    import importlib

    from sklearn.base import is_classifier, is_regressor

    path = spec.estimator.import_path(spec.family)
    module_name, _, class_name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"estimator {path!r} of {spec.name} cannot be imported: {exc}") from exc
    try:
        instance = found()
    except TypeError as exc:
        raise ValueError(
            f"estimator {path!r} of {spec.name} cannot be built without arguments: {exc}"
        ) from exc
    if spec.is_classification and not is_classifier(instance):
        raise ValueError(f"estimator {path!r} is not a classifier, but {spec.name} is a {spec.task} model")
    if not spec.is_classification and not is_regressor(instance):
        raise ValueError(f"estimator {path!r} is not a regressor, but {spec.name} is a regression model")
    if spec.is_classification and not hasattr(instance, "predict_proba"):
        raise ValueError(
            f"estimator {path!r} has no predict_proba: scoring writes class probabilities and the gates"
            " read them; choose a probabilistic classifier"
        )
    return found


def make_estimator(spec: ModelSpec) -> Any:
    """The spec's estimator with its hyperparameters and the split seed as random_state."""
    found = estimator_class(spec)
    params = dict(spec.estimator.params)
    if "random_state" in found().get_params():
        params.setdefault("random_state", spec.split.seed)
    if spec.estimator.package == "lightgbm":
        params.setdefault("verbose", -1)  # LightGBM prints a line per warning otherwise, into task logs
    if spec.training.class_weight is not None:
        if "class_weight" not in found().get_params():
            raise ValueError(
                f"training.class_weight of {spec.name}: {spec.estimator.label} takes no class_weight;"
                " use training.sample_weight_column instead"
            )
        params.setdefault("class_weight", spec.training.class_weight)
    try:
        return found(**params)
    except TypeError as exc:
        raise ValueError(f"estimator.params of {spec.name}: {exc}") from exc


@dataclass(frozen=True, eq=False)
class SplitFrames:
    """The training rows and the holdout rows of a clean dataset.

    Each side is selected (a copy of its rows) when first asked for, and then kept: the evaluate
    step needs only the holdout, training only the train rows and the holdout's size.
    """

    frame: pd.DataFrame
    holdout_mask: np.ndarray

    @cached_property
    def train(self) -> pd.DataFrame:
        """The rows outside the holdout."""
        return self.frame[~self.holdout_mask]

    @cached_property
    def holdout(self) -> pd.DataFrame:
        """The rows of the holdout."""
        return self.frame[self.holdout_mask]

    @property
    def holdout_rows(self) -> int:
        """How many rows the holdout has (without selecting them)."""
        return int(np.count_nonzero(self.holdout_mask))

    @property
    def train_rows(self) -> int:
        """How many rows the train set has (without selecting them)."""
        return len(self.holdout_mask) - self.holdout_rows


def split_frame(frame: pd.DataFrame, spec: ModelSpec) -> SplitFrames:
    """Deterministic train/holdout split by hashed id (see :func:`holdout_mask`)."""
    mask = holdout_mask(frame[spec.id_column], spec.split.holdout_fraction, spec.split.seed)
    return SplitFrames(frame=frame, holdout_mask=mask)


@dataclass(frozen=True)
class SearchCandidate:
    """One candidate of a hyperparameter search: its parameters and cross-validated score."""

    params: dict[str, Any]
    mean_score: float
    std_score: float
    rank: int


@dataclass(frozen=True)
class TrainResult:
    """A fitted pipeline and what it was fitted on."""

    pipeline: Pipeline
    train_rows: int
    holdout_rows: int
    fit_seconds: float
    params: dict[str, Any]
    search: list[SearchCandidate] | None = None


def _primary_scorer(spec: ModelSpec) -> Any:
    """The gates' primary metric as a scikit-learn scorer (greater is better), computed by our own
    metric functions so that the search ranks candidates as the gates will judge them."""
    from mlops_pipeline.evaluation import classification_metrics, regression_metrics
    from mlops_pipeline.targets import positive_label

    metric = spec.gates.primary_metric
    sign = 1.0 if spec.metric_higher_is_better(metric) else -1.0

    def score(estimator: Any, features: pd.DataFrame, y_true: pd.Series) -> float:
        y_pred = estimator.predict(features)
        if not spec.is_classification:
            values = regression_metrics(np.asarray(y_true), y_pred)
        else:
            classes = list(estimator.classes_)
            positive = positive_label(spec, classes) if len(classes) == 2 else None
            values = classification_metrics(
                np.asarray(y_true), y_pred, estimator.predict_proba(features), classes, positive
            )
        return sign * values.get(metric, float("nan"))

    return score


def _fit_kwargs(spec: ModelSpec, train: pd.DataFrame) -> dict[str, Any]:
    weights = spec.training.sample_weight_column
    return {} if weights is None else {"model__sample_weight": train[weights].to_numpy(dtype="float64")}


def _search(
    spec: ModelSpec, pipeline: Pipeline, features: pd.DataFrame, y: pd.Series, fit_kwargs: dict[str, Any]
) -> tuple[Pipeline, list[SearchCandidate]]:
    """scikit-learn's own search over the spec's space; the best candidate refitted on all training rows."""
    from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

    search_spec = spec.training.search
    assert search_spec is not None
    space = {f"model__{name}": values for name, values in search_spec.space.items()}
    common: dict[str, Any] = {
        "scoring": _primary_scorer(spec),
        "cv": search_spec.cv,
        "refit": True,
        "n_jobs": 1,
        "error_score": "raise",
    }
    if search_spec.method == "grid":
        searcher: Any = GridSearchCV(pipeline, space, **common)
    else:
        searcher = RandomizedSearchCV(
            pipeline, space, n_iter=search_spec.n_iter, random_state=spec.split.seed, **common
        )
    try:
        searcher.fit(features, y, **fit_kwargs)
    except ValueError as exc:
        raise ValueError(f"training.search of {spec.name}: {exc}") from exc
    results = searcher.cv_results_
    candidates = [
        SearchCandidate(
            params={name.removeprefix("model__"): value for name, value in params.items()},
            mean_score=float(results["mean_test_score"][index]),
            std_score=float(results["std_test_score"][index]),
            rank=int(results["rank_test_score"][index]),
        )
        for index, params in enumerate(results["params"])
    ]
    return searcher.best_estimator_, candidates


def train_model(clean: pd.DataFrame, spec: ModelSpec, split: SplitFrames | None = None) -> TrainResult:
    """Fit the spec's pipeline on the non-holdout rows of `clean`.

    `split`: the split of `clean` if the caller has it already (see :func:`split_frame`), so that
    the rows are hashed and selected once.
    """
    split = split_frame(clean, spec) if split is None else split
    return fit_train_rows(split.train, spec, split.holdout_rows)


def fit_train_rows(train: pd.DataFrame, spec: ModelSpec, holdout_rows: int) -> TrainResult:
    """Fit the spec's pipeline on `train`, the training side of a split whose holdout has
    `holdout_rows` rows (ValueError when either side is empty)."""
    if len(train) == 0 or holdout_rows == 0:
        raise ValueError(
            f"{spec.name}: {len(train) + holdout_rows} clean rows give an empty train or holdout set;"
            " need more data"
        )
    y_train = target_series(train, spec)
    if spec.is_classification:
        from mlops_pipeline.targets import classification_task

        # TargetError is a ValueError: the step refuses the run once, naming the cause.
        classification_task(spec, sorted(pd.unique(y_train).tolist()))
    pipeline = build_pipeline(spec)
    features = features_frame(train, spec)
    fit_kwargs = _fit_kwargs(spec, train)
    candidates = None
    log.info(
        "fitting %s on %d rows x %d features%s (holdout: %d rows)",
        spec.estimator.label,
        len(features),
        features.shape[1],
        " with a hyperparameter search" if spec.training.search is not None else "",
        holdout_rows,
    )
    started = time.perf_counter()
    if spec.training.search is not None:
        pipeline, candidates = _search(spec, pipeline, features, y_train, fit_kwargs)
    else:
        pipeline.fit(features, y_train, **fit_kwargs)
    fit_seconds = time.perf_counter() - started
    log.info(
        "fitted in %.1f s (%.0f rows/s)", fit_seconds, len(features) / fit_seconds if fit_seconds else 0.0
    )
    chosen = dict(spec.estimator.params)
    if candidates:
        chosen |= next(c.params for c in candidates if c.rank == 1)
    params = {
        "estimator": spec.estimator.label,
        **{f"estimator.{key}": value for key, value in chosen.items()},
        "split.holdout_fraction": spec.split.holdout_fraction,
        "split.seed": spec.split.seed,
        **({"training.class_weight": str(spec.training.class_weight)} if spec.training.class_weight else {}),
        **(
            {"training.sample_weight_column": spec.training.sample_weight_column}
            if spec.training.sample_weight_column
            else {}
        ),
    }
    return TrainResult(
        pipeline=pipeline,
        train_rows=len(train),
        holdout_rows=holdout_rows,
        fit_seconds=fit_seconds,
        params=params,
        search=candidates,
    )


# The two sides of the clean rows, as the validate step stores them and train/evaluate read them.
SIDES = ("train", "holdout")


def clean_sides_parquet(clean: pd.DataFrame, spec: ModelSpec) -> dict[str, tuple[bytes, int]]:
    """The clean rows split once by hashed id (:func:`holdout_mask`), each side as Parquet bytes
    with its row count: what `validate` stores and `mlops reproduce` rebuilds byte for byte."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    mask = holdout_mask(clean[spec.id_column], spec.split.holdout_fraction, spec.split.seed)
    table = pa.Table.from_pandas(clean, preserve_index=False)
    sides = {}
    for side, rows in zip(SIDES, (~mask, mask), strict=True):
        buffer = io.BytesIO()
        pq.write_table(table.filter(pa.array(rows)), buffer)
        sides[side] = (buffer.getvalue(), int(np.count_nonzero(rows)))
    return sides


def model_columns(spec: ModelSpec, *, evaluation: bool) -> list[str]:
    """The clean columns the train step reads (the features, the target, the sample weights) and,
    with `evaluation`, the evaluate step too (the gates' slice and sensitive columns)."""
    wanted = [*spec.features, spec.target]
    if spec.training.sample_weight_column is not None:
        wanted.append(spec.training.sample_weight_column)
    if evaluation:
        wanted.extend(slice_spec.column for slice_spec in spec.gates.slices)
        if spec.gates.fairness is not None:
            wanted.extend(spec.gates.fairness.columns)
    return list(dict.fromkeys(wanted))


def read_clean_side(data: bytes, columns: list[str]) -> tuple[pd.DataFrame, Any]:
    """One side of the clean rows (Parquet bytes), only `columns` of it (those present), as pandas
    wrote them; and the file's schema (every clean column)."""
    import io

    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(io.BytesIO(data))
    present = [name for name in columns if name in parquet.schema_arrow.names]
    return parquet.read(columns=present).to_pandas(), parquet.schema_arrow
