"""Your own feature code (`pipeline: module:function`): imported only when the model is built,
wrapped into the one logged Pipeline, and refused with the reason when it cannot be used."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mlops_pipeline import candidates, registry
from mlops_pipeline.feature_code import FeatureCodeError, build_from_factory, user_package
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.training import make_estimator


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user package `team_code` with a module of factories, importable for this test only."""
    package = tmp_path / "team_code"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "features.py").write_text(
        "from sklearn.preprocessing import StandardScaler\n"
        "from sklearn.pipeline import Pipeline\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "def preprocessing(spec):\n    return StandardScaler()\n"
        "def whole(spec):\n    return Pipeline([('scale', StandardScaler()), ('model', LogisticRegression())])\n"
        "def nonsense(spec):\n    return 42\n"
        "raise_on = None\n"
    )
    (package / "broken.py").write_text("import no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "team_code"
    for name in [m for m in sys.modules if m.startswith("team_code")]:
        del sys.modules[name]


def spec_with(pipeline: str, **extra: Any) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": "demo",
            "task": "classification",
            "source": {"uri": "landing/demo/ds={ds}/*.csv"},
            "id_column": "id",
            "target": "label",
            "features": {"x": {"type": "number"}},
            "estimator": {"kind": "logistic_regression"},
            "gates": {"primary_metric": "roc_auc"},
            "pipeline": pipeline,
            **extra,
        }
    )


def test_a_preprocessing_factory_is_followed_by_the_specs_estimator(user_module: str) -> None:
    """A transformer from the factory becomes `preprocess`, the spec's estimator `model`."""
    pipeline = build_from_factory(spec_with(f"{user_module}.features:preprocessing"), make_estimator)
    assert isinstance(pipeline.named_steps["preprocess"], StandardScaler)
    assert isinstance(pipeline.named_steps["model"], LogisticRegression)


def test_a_whole_pipeline_from_the_factory_is_used_as_it_is(user_module: str) -> None:
    """A factory that returns a whole pipeline (it can predict) is the model."""
    pipeline = build_from_factory(spec_with(f"{user_module}.features:whole"), make_estimator)
    assert isinstance(pipeline, Pipeline) and [n for n, _ in pipeline.steps] == ["scale", "model"]


@pytest.mark.parametrize(
    ("factory", "problem"),
    [
        ("features:nonsense", "neither a transformer"),
        ("features:missing", "has no function 'missing'"),
        ("features:raise_on", "has no function 'raise_on'"),
        ("broken:build", "importing team_code.broken failed: ModuleNotFoundError"),
    ],
)
def test_a_factory_that_cannot_be_used_is_refused_naming_why(
    user_module: str, factory: str, problem: str
) -> None:
    """Every way a factory can fail is one error that names the factory and the cause."""
    with pytest.raises(FeatureCodeError, match=problem):
        build_from_factory(spec_with(f"{user_module}.{factory}"), make_estimator)


def test_skops_trusts_the_feature_codes_package_and_no_other(user_module: str) -> None:
    """The trusted types are ours plus the packages the spec declares, never everything."""
    spec = spec_with(f"{user_module}.features:preprocessing")
    assert user_package(spec) == "team_code"
    assert candidates.declared_packages(spec) == ("sklearn", "team_code")
    foreign = type("Foreign", (), {"__module__": "elsewhere.mod"})
    with pytest.raises(registry.RegistryError, match=r"should not trust: \['elsewhere\.mod\.Foreign'\]"):
        candidates.trusted_types(Pipeline([("odd", foreign())]), candidates.declared_packages(spec))
