"""The model spec: valid specs load; each kind of mistake is refused with file, field and problem named."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from mlops_pipeline.spec import (
    ModelSpec,
    SpecError,
    default_models_dir,
    load_spec,
    load_specs,
)

REPO = Path(__file__).resolve().parents[2]

MINIMAL: dict[str, Any] = {
    "name": "demo",
    "task": "classification",
    "source": {"uri": "landing/demo/ds={ds}/*.csv"},
    "id_column": "id",
    "target": "label",
    "features": {
        "x": {"type": "number", "min": 0, "max": 10},
        "colour": {"type": "category", "allowed": ["red", "blue"]},
        "flag": {"type": "boolean"},
    },
    "estimator": {"kind": "logistic_regression"},
    "gates": {"primary_metric": "roc_auc", "floors": {"roc_auc": 0.6}},
}


def minimal(**changes: Any) -> dict[str, Any]:
    """A deep copy of the minimal valid spec with top-level keys replaced."""
    data = copy.deepcopy(MINIMAL)
    data.update(changes)
    return data


def write_spec(folder: Path, data: Any, stem: str = "demo") -> Path:
    path = folder / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def spec_error(tmp_path: Path, data: Any, stem: str = "demo") -> str:
    """The message of the SpecError that loading `data` raises; it always names the file."""
    path = write_spec(tmp_path, data, stem)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"invalid model spec {path}")
    return message


# --- valid specs ---------------------------------------------------------------------------------


def test_a_minimal_spec_loads_with_documented_defaults(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, MINIMAL))
    assert spec.name == "demo"
    assert spec.source.format == "csv"
    assert spec.source.window_days == 28
    assert (spec.split.holdout_fraction, spec.split.seed) == (0.2, 42)
    assert spec.validation.default_policy == "quarantine"
    assert spec.validation.schema_policy == "fail"
    assert spec.gates.max_regression == 0.0
    assert spec.drift.windows_needed <= spec.drift.windows_considered
    assert spec.schedules.train is None
    assert spec.approval_required is False
    assert spec.columns == ["id", "x", "colour", "flag", "label"]


def test_the_shipped_specs_load_without_errors() -> None:
    catalog = load_specs(REPO / "include" / "models")
    assert catalog.errors == {}
    assert sorted(catalog.specs) == ["churn", "diabetes", "penguins"]
    penguins = catalog.specs["penguins"]
    assert penguins.task == "multiclass" and penguins.derived_row_id
    assert penguins.target == "species" and penguins.target_classes == ["Adelie", "Chinstrap", "Gentoo"]
    churn, diabetes = catalog.specs["churn"], catalog.specs["diabetes"]
    assert churn.task == "classification"
    assert churn.estimator.kind == "hist_gradient_boosting"
    assert churn.gates.primary_metric == "roc_auc"
    assert churn.features["plan"].allowed == ["basic", "standard", "premium"]
    assert churn.columns[0] == "customer_id" and churn.columns[-1] == "churned"
    assert diabetes.task == "regression"
    assert diabetes.gates.primary_metric == "rmse"
    assert diabetes.features["sex"].allowed == ["1", "2"]


def test_metric_direction_knows_lower_is_better_metrics(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, MINIMAL))
    assert spec.metric_higher_is_better("roc_auc")
    assert spec.metric_higher_is_better("r2")
    for metric in ("rmse", "mae", "log_loss"):
        assert not spec.metric_higher_is_better(metric)


def test_a_loaded_spec_is_frozen(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, MINIMAL))
    with pytest.raises(pydantic.ValidationError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        spec.gates.max_regression = 1.0  # type: ignore[misc]


def test_spec_error_is_a_value_error() -> None:
    assert issubclass(SpecError, ValueError)


# --- file-level problems -------------------------------------------------------------------------


def test_a_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(SpecError, match=f"invalid model spec {path}: cannot read YAML"):
        load_spec(path)


def test_broken_yaml_is_a_spec_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text("name: demo\nfeatures: [unclosed\n")
    with pytest.raises(SpecError, match="cannot read YAML") as info:
        load_spec(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("content", "kind"), [("", "NoneType"), ("- a\n- b\n", "list"), ("42\n", "int")])
def test_a_spec_that_is_not_a_mapping_is_refused(tmp_path: Path, content: str, kind: str) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(content)
    with pytest.raises(SpecError, match=f"expected a mapping, got {kind}"):
        load_spec(path)


def test_name_must_equal_the_file_stem(tmp_path: Path) -> None:
    message = spec_error(tmp_path, MINIMAL, stem="other")
    assert "name: 'demo' must equal the file name 'other'" in message


# --- field problems, each located by its path ----------------------------------------------------


@pytest.mark.parametrize("name", ["Demo", "1demo", "de-mo", "de mo", "", "d" * 64])
def test_an_unsafe_name_is_refused(tmp_path: Path, name: str) -> None:
    message = spec_error(tmp_path, minimal(name=name))
    assert "  - name: " in message
    assert "is not a safe identifier" in message


def test_missing_required_fields_are_each_named(tmp_path: Path) -> None:
    data = minimal()
    del data["target"], data["gates"]
    message = spec_error(tmp_path, data)
    assert "  - target: Field required" in message
    assert "  - gates: Field required" in message


def test_an_unknown_field_is_refused_with_its_path(tmp_path: Path) -> None:
    data = minimal()
    data["features"]["x"]["maximum"] = 5
    data["colour_scheme"] = "dark"
    message = spec_error(tmp_path, data)
    assert "  - features.x.maximum: Extra inputs are not permitted" in message
    assert "  - colour_scheme: Extra inputs are not permitted" in message


def test_an_unknown_feature_type_is_located(tmp_path: Path) -> None:
    data = minimal()
    data["features"]["x"]["type"] = "float"
    message = spec_error(tmp_path, data)
    assert "features.x.type" in message
    assert "'number'" in message and "'category'" in message


def test_a_category_without_allowed_values_is_refused(tmp_path: Path) -> None:
    data = minimal()
    del data["features"]["colour"]["allowed"]
    message = spec_error(tmp_path, data)
    assert "  - features.colour: a category feature needs a non-empty 'allowed' list" in message


def test_a_category_with_an_empty_allowed_list_is_refused(tmp_path: Path) -> None:
    data = minimal()
    data["features"]["colour"]["allowed"] = []
    assert "needs a non-empty 'allowed' list" in spec_error(tmp_path, data)


def test_allowed_values_on_a_numeric_feature_are_refused(tmp_path: Path) -> None:
    data = minimal()
    data["features"]["x"]["allowed"] = ["1"]
    assert "features.x: 'allowed' is only for category features, not number" in spec_error(tmp_path, data)


@pytest.mark.parametrize("feature", ["colour", "flag"])
def test_min_max_on_a_non_numeric_feature_are_refused(tmp_path: Path, feature: str) -> None:
    data = minimal()
    data["features"][feature]["min"] = 0
    message = spec_error(tmp_path, data)
    assert f"features.{feature}: 'min'/'max' are only for numeric features" in message


def test_min_greater_than_max_is_refused(tmp_path: Path) -> None:
    data = minimal()
    data["features"]["x"].update(min=5, max=1)
    assert "features.x: min (5.0) is greater than max (1.0)" in spec_error(tmp_path, data)


def test_a_source_uri_without_ds_is_refused(tmp_path: Path) -> None:
    message = spec_error(tmp_path, minimal(source={"uri": "landing/demo/*.csv"}))
    assert "  - source.uri: the uri must contain '{ds}'" in message


@pytest.mark.parametrize(
    ("source", "location"),
    [
        ({"uri": "a/{ds}.csv", "format": "json"}, "source.format"),
        ({"uri": "a/{ds}.csv", "window_days": 0}, "source.window_days"),
    ],
)
def test_bad_source_settings_are_located(tmp_path: Path, source: dict[str, Any], location: str) -> None:
    assert f"  - {location}: " in spec_error(tmp_path, minimal(source=source))


def test_an_unknown_estimator_is_refused_with_the_choices(tmp_path: Path) -> None:
    message = spec_error(tmp_path, minimal(estimator={"kind": "xgboost"}))
    assert "  - estimator.kind: unknown estimator 'xgboost'" in message
    assert "hist_gradient_boosting" in message and "logistic_regression" in message


@pytest.mark.parametrize(
    ("task", "kind"), [("classification", "ridge"), ("regression", "logistic_regression")]
)
def test_an_estimator_that_cannot_do_the_task_is_refused(tmp_path: Path, task: str, kind: str) -> None:
    gates = {"primary_metric": "roc_auc"} if task == "classification" else {"primary_metric": "rmse"}
    message = spec_error(tmp_path, minimal(task=task, estimator={"kind": kind}, gates=gates))
    assert f"estimator {kind!r} cannot do {task}" in message


def test_a_regression_metric_on_a_classifier_is_refused(tmp_path: Path) -> None:
    message = spec_error(tmp_path, minimal(gates={"primary_metric": "rmse"}))
    assert "gates: metrics ['rmse'] do not apply to classification" in message


def test_a_classification_floor_on_a_regressor_is_refused(tmp_path: Path) -> None:
    data = minimal(
        task="regression",
        estimator={"kind": "ridge"},
        gates={"primary_metric": "rmse", "floors": {"r2": 0.1, "accuracy": 0.5}},
    )
    message = spec_error(tmp_path, data)
    assert "gates: metrics ['accuracy'] do not apply to regression" in message


def test_a_slice_floor_metric_must_fit_the_task(tmp_path: Path) -> None:
    gates = {"primary_metric": "roc_auc", "slices": [{"column": "colour", "floors": {"mae": 1.0}}]}
    assert "metrics ['mae'] do not apply to classification" in spec_error(tmp_path, minimal(gates=gates))


def test_a_slice_on_an_unknown_column_is_refused(tmp_path: Path) -> None:
    gates = {"primary_metric": "roc_auc", "slices": [{"column": "size", "floors": {"roc_auc": 0.5}}]}
    assert "gates.slices: 'size' is not a feature" in spec_error(tmp_path, minimal(gates=gates))


def test_a_slice_on_a_numeric_column_is_refused(tmp_path: Path) -> None:
    gates = {"primary_metric": "roc_auc", "slices": [{"column": "x", "floors": {"roc_auc": 0.5}}]}
    message = spec_error(tmp_path, minimal(gates=gates))
    assert "gates.slices: 'x' must be a category or boolean feature" in message


def test_slices_on_category_and_boolean_features_are_accepted(tmp_path: Path) -> None:
    gates = {
        "primary_metric": "roc_auc",
        "slices": [
            {"column": "colour", "floors": {"roc_auc": 0.5}},
            {"column": "flag", "floors": {"accuracy": 0.5}, "min_rows": 5},
        ],
    }
    spec = load_spec(write_spec(tmp_path, minimal(gates=gates)))
    assert [s.column for s in spec.gates.slices] == ["colour", "flag"]
    assert spec.gates.slices[0].min_rows == 30


def test_id_and_target_must_differ(tmp_path: Path) -> None:
    assert "id_column and target must be different" in spec_error(tmp_path, minimal(target="id"))


def test_features_must_not_include_the_target(tmp_path: Path) -> None:
    data = minimal()
    data["features"]["label"] = {"type": "integer"}
    assert "features must not include the id or target column: ['label']" in spec_error(tmp_path, data)


def test_at_least_one_feature_is_required(tmp_path: Path) -> None:
    assert "at least one feature is required" in spec_error(tmp_path, minimal(features={}))


def test_drift_thresholds_must_name_features(tmp_path: Path) -> None:
    message = spec_error(tmp_path, minimal(drift={"column_thresholds": {"x": 0.2, "ghost": 0.2}}))
    assert "drift.column_thresholds: ['ghost'] are not features" in message


def test_drift_needs_no_more_windows_than_it_considers(tmp_path: Path) -> None:
    message = spec_error(tmp_path, minimal(drift={"windows_needed": 4, "windows_considered": 3}))
    assert "  - drift: windows_needed cannot exceed windows_considered" in message


@pytest.mark.parametrize(
    ("section", "value", "location"),
    [
        ("split", {"holdout_fraction": 0.0}, "split.holdout_fraction"),
        ("split", {"holdout_fraction": 0.95}, "split.holdout_fraction"),
        ("validation", {"min_rows": 0}, "validation.min_rows"),
        ("validation", {"max_quarantine_share": 1.5}, "validation.max_quarantine_share"),
        ("validation", {"default_policy": "ignore"}, "validation.default_policy"),
        ("drift", {"threshold": 0}, "drift.threshold"),
    ],
)
def test_out_of_range_settings_are_located(
    tmp_path: Path, section: str, value: dict[str, Any], location: str
) -> None:
    assert f"  - {location}: " in spec_error(tmp_path, minimal(**{section: value}))


def test_bad_gate_budgets_are_located(tmp_path: Path) -> None:
    gates = {"primary_metric": "roc_auc", "max_regression": -0.1, "max_latency_ms_per_1k": 0}
    message = spec_error(tmp_path, minimal(gates=gates))
    assert "  - gates.max_regression: " in message
    assert "  - gates.max_latency_ms_per_1k: " in message


def test_every_problem_of_a_spec_is_reported_at_once(tmp_path: Path) -> None:
    data = minimal(estimator={"kind": "xgboost"}, source={"uri": "no-placeholder"})
    del data["features"]["colour"]["allowed"]
    message = spec_error(tmp_path, data)
    assert len([line for line in message.splitlines() if line.startswith("  - ")]) == 3


def test_model_validate_without_a_file_raises_pydantic_errors() -> None:
    with pytest.raises(pydantic.ValidationError):
        ModelSpec.model_validate(minimal(task="ranking"))


# --- folders of specs ----------------------------------------------------------------------------


def test_load_specs_keeps_good_specs_and_collects_each_bad_one(tmp_path: Path) -> None:
    good = write_spec(tmp_path, MINIMAL, stem="demo")
    second = write_spec(tmp_path, minimal(name="second"), stem="second")
    misnamed = write_spec(tmp_path, MINIMAL, stem="misnamed")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [")
    (tmp_path / "notes.txt").write_text("not a spec")
    (tmp_path / "other.yml").write_text("ignored: only .yaml files are specs")

    catalog = load_specs(tmp_path)

    assert sorted(catalog.specs) == ["demo", "second"]
    assert catalog.specs["demo"] == load_spec(good)
    assert catalog.specs["second"] == load_spec(second)
    assert set(catalog.errors) == {misnamed, broken}
    assert "must equal the file name 'misnamed'" in catalog.errors[misnamed]
    assert catalog.errors[broken].startswith(f"invalid model spec {broken}: cannot read YAML")


def test_load_specs_of_an_empty_folder_is_empty(tmp_path: Path) -> None:
    catalog = load_specs(tmp_path)
    assert catalog.specs == {} and catalog.errors == {}


def test_default_models_dir_is_the_checkout_folder_unless_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLOPS_MODELS_DIR", raising=False)
    assert default_models_dir() == REPO / "include" / "models"
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(tmp_path))
    assert default_models_dir() == tmp_path


# --- tasks, labels and estimators --------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "metric"),
    [("binary", "f1_macro"), ("multiclass", "roc_auc"), ("multiclass", "f1"), ("regression", "accuracy")],
)
def test_a_metric_that_does_not_fit_the_task_is_refused_naming_it(
    tmp_path: Path, task: str, metric: str
) -> None:
    """The spec validator refuses a gate metric of another task, naming the metric."""
    estimator = {"kind": "ridge"} if task == "regression" else {"kind": "random_forest"}
    message = spec_error(tmp_path, minimal(task=task, estimator=estimator, gates={"primary_metric": metric}))
    assert f"metrics ['{metric}'] do not apply to {task}" in message


def test_target_mapping_lists_text_classes_and_the_positive_one() -> None:
    """`target: {column, classes, positive}` reads as the column plus the labels."""
    spec = ModelSpec.model_validate(
        minimal(task="binary", target={"column": "label", "classes": ["no", "yes"], "positive": "yes"})
    )
    assert (spec.target, spec.target_classes, spec.positive_class) == ("label", ["no", "yes"], "yes")


@pytest.mark.parametrize(
    ("task", "target", "problem"),
    [
        ("binary", {"column": "label", "classes": ["a", "b", "c"]}, "exactly two target.classes"),
        ("multiclass", {"column": "label", "classes": ["a", "b"]}, "three or more target.classes"),
        ("binary", {"column": "label", "classes": ["a", "b"], "positive": "c"}, "not one of target.classes"),
        ("binary", {"column": "label", "classes": ["a", 1]}, "all be of one type"),
        ("binary", {"label": "x"}, "takes `column` (required)"),
    ],
)
def test_labels_that_cannot_work_are_refused(tmp_path: Path, task: str, target: dict, problem: str) -> None:
    """Label lists that contradict the task are refused before any run."""
    assert problem in spec_error(tmp_path, minimal(task=task, target=target))


def test_an_estimator_by_import_path_must_come_from_a_package_skops_loads_safely(tmp_path: Path) -> None:
    """Any sklearn or lightgbm class by import path; another package is refused with the reason."""
    spec = ModelSpec.model_validate(minimal(estimator={"class": "sklearn.ensemble.ExtraTreesClassifier"}))
    assert spec.estimator.import_path("classification") == "sklearn.ensemble.ExtraTreesClassifier"
    message = spec_error(tmp_path, minimal(estimator={"class": "xgboost.XGBClassifier"}))
    assert "xgboost.XGBClassifier" in message and "pickle (unsafe to load)" in message
    both = spec_error(tmp_path, minimal(estimator={"kind": "random_forest", "class": "sklearn.svm.SVC"}))
    assert "exactly one of `kind`" in both


def test_a_feature_factory_whose_module_is_missing_is_a_located_error(tmp_path: Path) -> None:
    """`pipeline:` naming a module that is not on the import path fails at parse, located."""
    message = spec_error(tmp_path, minimal(pipeline="no_such_package.features:build"))
    assert "  - pipeline: " in message and "no_such_package.features" in message
    assert "pipeline: " in spec_error(tmp_path, minimal(pipeline="not a path"))


def test_a_table_without_an_id_column_gets_a_derived_row_id() -> None:
    """Without id_column the rows' id is derived; late labels, which need an id, are refused."""
    data = minimal()
    del data["id_column"]
    spec = ModelSpec.model_validate(data)
    assert spec.derived_row_id and spec.columns == ["x", "colour", "flag", "label"]
    with pytest.raises(pydantic.ValidationError, match="late labels are joined to predictions by id"):
        ModelSpec.model_validate({**data, "labels": {"uri": "labels/demo/ds={ds}/*.csv"}})


def test_a_positive_label_of_another_type_is_refused() -> None:
    """`positive: true` is not the label 1 (True == 1 in Python, not in the data)."""
    with pytest.raises(pydantic.ValidationError, match=r"is not one of target\.classes"):
        ModelSpec.model_validate(
            minimal(task="binary", target={"column": "label", "classes": [0, 1], "positive": True})
        )


def test_labels_given_twice_are_refused() -> None:
    """The labels have one spelling: the target mapping (not also the flat field)."""
    with pytest.raises(pydantic.ValidationError, match="in the target mapping only"):
        ModelSpec.model_validate(
            minimal(target={"column": "label", "classes": ["a", "b"]}, target_classes=["c", "d"])
        )


# --- scoring input rules -------------------------------------------------------------------------

SCORING = {"input": {"uri": "incoming/demo/ds={ds}/*.parquet"}}


def test_scoring_defaults_refuse_an_empty_day_and_take_duplicates_under_the_default_policy(
    tmp_path: Path,
) -> None:
    scoring = load_spec(write_spec(tmp_path, minimal(scoring=SCORING))).scoring
    assert scoring is not None
    assert (scoring.min_rows, scoring.allow_empty, scoring.duplicate_ids) == (1, False, None)


def test_allow_empty_needs_min_rows_zero(tmp_path: Path) -> None:
    message = spec_error(tmp_path, minimal(scoring={**SCORING, "allow_empty": True}))
    assert "scoring: " in message and "set min_rows: 0 with it" in message
    spec = load_spec(write_spec(tmp_path, minimal(scoring={**SCORING, "allow_empty": True, "min_rows": 0})))
    assert spec.scoring is not None and spec.scoring.allow_empty


def test_a_duplicate_ids_policy_must_be_a_policy(tmp_path: Path) -> None:
    assert "scoring.duplicate_ids" in spec_error(
        tmp_path, minimal(scoring={**SCORING, "duplicate_ids": "drop"})
    )
