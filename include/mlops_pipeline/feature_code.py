"""Your own feature code: a factory named by the spec (`pipeline: module.path:function`).

The factory gets the spec and returns either the preprocessing (a transformer: it gets the
feature columns as `training.features_frame` types them) or a whole pipeline ending in an
estimator. Either way the result is one scikit-learn `Pipeline`, logged and served as one, so
what is trained is exactly what is served. The module lives under `include/` (importable by every
Airflow component the same way as this package, in the compose image too) and is imported only
when a task builds or loads the model, never while DAG files are parsed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from sklearn.pipeline import Pipeline

from mlops_pipeline.spec import ModelSpec


class FeatureCodeError(ValueError):
    """The spec's factory cannot be used (the message names the factory and why)."""


def load_factory(spec: ModelSpec) -> Callable[[ModelSpec], Any]:
    """Import the spec's factory function."""
    assert spec.pipeline is not None
    module_name, _, function = spec.pipeline.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a user's module may fail in any way while importing
        raise FeatureCodeError(
            f"pipeline {spec.pipeline!r} of {spec.name}: importing {module_name} failed: {exc!r}"
        ) from exc
    factory = getattr(module, function, None)
    if not callable(factory):
        raise FeatureCodeError(
            f"pipeline {spec.pipeline!r} of {spec.name}: {module_name} has no function {function!r}"
        )
    return factory


def build_from_factory(spec: ModelSpec, make_estimator: Callable[[ModelSpec], Any]) -> Pipeline:
    """The spec's pipeline from its factory: the factory's preprocessing + the spec's estimator, or
    the factory's whole pipeline (when what it returns can predict)."""
    built = load_factory(spec)(spec)
    if hasattr(built, "predict"):
        return built if isinstance(built, Pipeline) else Pipeline([("model", built)])
    if not (hasattr(built, "fit") and hasattr(built, "transform")):
        raise FeatureCodeError(
            f"pipeline {spec.pipeline!r} of {spec.name} returned {type(built).__name__}, which is neither a"
            " transformer (fit/transform) nor an estimator (fit/predict)"
        )
    return Pipeline([("preprocess", built), ("model", make_estimator(spec))])


def user_package(spec: ModelSpec) -> str | None:
    """The top-level package of the spec's feature code, whose types skops is told to trust."""
    return None if spec.pipeline is None else spec.pipeline.split(":", 1)[0].split(".", 1)[0]
