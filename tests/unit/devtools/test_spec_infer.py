"""Unit tests of `mlops spec infer` (mlops_pipeline.devtools.spec_infer and its CLI subcommand), on real
tables: the churn example data, scikit-learn's diabetes data and a synthetic three-class table."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_pipeline.devtools import cli, spec_infer, spec_profile
from mlops_pipeline.devtools.example_data import CHURN_FEATURES, churn_batch
from mlops_pipeline.devtools.spec_infer import InferredSpec
from mlops_pipeline.devtools.spec_profile import SpecInferenceError
from mlops_pipeline.spec import ROW_ID, ModelSpec, load_spec

CHURN_DAYS = [datetime.date(2026, 1, day) for day in (5, 6, 7)]


def read_as_pipeline(path: Path) -> pd.DataFrame:
    """A CSV read as the pipeline reads its sources: text, only an empty field missing."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def write_churn_csv(path: Path) -> Path:
    """Three days of churn example data, 300 rows a day, as one CSV."""
    pd.concat([churn_batch(day, rows=300) for day in CHURN_DAYS]).to_csv(path, index=False)
    return path


def three_class_table(rows: int = 300) -> pd.DataFrame:
    """A table whose text label (yes / no / maybe) follows x1 and color, with missing values and free text."""
    rng = np.random.default_rng(7)
    x1 = rng.normal(size=rows)
    color = rng.choice(["red", "green", "blue"], size=rows)
    score = x1 + np.where(color == "red", 0.8, 0.0) + rng.normal(scale=0.3, size=rows)
    label = np.where(score > 0.5, "yes", np.where(score < -0.5, "no", "maybe"))
    frame = pd.DataFrame(
        {
            "row_id": [f"r{i:04d}" for i in range(rows)],
            "x1": x1.round(3),
            "count": rng.integers(0, 10, size=rows),
            "color": color.astype(object),
            "flag": rng.choice(["true", "false"], size=rows),
            "notes": [f"free text number {i}" for i in range(rows)],
            "label": label,
        }
    )
    frame.loc[rng.choice(rows, size=15, replace=False), "x1"] = np.nan
    frame.loc[rng.choice(rows, size=10, replace=False), "color"] = np.nan
    return frame


def baseline_in_comment(text: str) -> tuple[str, float]:
    """The metric and value of the `# Baseline: <metric> <value>` comment."""
    match = re.search(r"^# Baseline: (\w+) (-?[0-9.]+)", text, flags=re.MULTILINE)
    assert match, text
    return match.group(1), float(match.group(2))


@pytest.fixture(scope="module")
def churn_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The churn sample as a CSV file."""
    return write_churn_csv(tmp_path_factory.mktemp("churn") / "churn_sample.csv")


@pytest.fixture(scope="module")
def churn(churn_csv: Path) -> InferredSpec:
    """The spec inferred from the churn sample (one baseline fit for the module)."""
    return spec_infer.infer_spec(
        read_as_pipeline(churn_csv), "churned", name="churn", sample_label=str(churn_csv)
    )


@pytest.fixture(scope="module")
def three_class(tmp_path_factory: pytest.TempPathFactory) -> InferredSpec:
    """The spec inferred from the synthetic three-class table, written to CSV and read back as text."""
    path = tmp_path_factory.mktemp("three_class") / "three_class.csv"
    three_class_table().to_csv(path, index=False)
    return spec_infer.infer_spec(read_as_pipeline(path), "label", name="three_class")


def test_churn_spec_is_valid_with_the_churn_types(churn: InferredSpec) -> None:
    """The churn sample gives a valid binary spec with churn.yaml's feature types and 0/1 classes."""
    assert ModelSpec.model_validate(churn.data) == churn.spec
    spec = churn.spec
    assert (spec.task, spec.id_column, spec.target) == ("binary", "customer_id", "churned")
    assert spec.target_classes == [0, 1]
    assert spec.gates.primary_metric == "roc_auc"
    features = spec.features
    assert list(features) == list(CHURN_FEATURES)
    assert features["plan"].type == "category"
    assert set(features["plan"].allowed or []) == {"basic", "standard", "premium"}
    assert set(features["payment_method"].allowed or []) == {"card", "bank_transfer", "paypal", "invoice"}
    assert features["tenure_months"].type == "integer"
    assert features["monthly_charges"].type == "number"
    assert features["total_charges"].nullable and features["satisfaction_score"].nullable
    assert not features["tenure_months"].nullable


def test_binary_positive_is_the_minority_class(churn: InferredSpec, churn_csv: Path) -> None:
    """target.positive of a binary spec is the class with fewer rows in the sample."""
    counts = read_as_pipeline(churn_csv)["churned"].astype(int).value_counts()
    assert churn.spec.positive_class == int(counts.idxmin())
    assert "positive: " in churn.yaml_text and "minority class" in churn.yaml_text


def test_ranges_and_allowed_values_hold_every_observed_value(churn: InferredSpec, churn_csv: Path) -> None:
    """Every numeric value lies inside its feature's range (not below 0 when none is negative); every text value is allowed."""
    frame = read_as_pipeline(churn_csv)
    for name, feature in churn.spec.features.items():
        values = frame[name].dropna()
        if feature.type in ("integer", "number"):
            numbers = pd.to_numeric(values)
            assert feature.min is not None and feature.max is not None
            assert feature.min <= numbers.min() and numbers.max() <= feature.max, name
            assert feature.min < numbers.min() or numbers.min() == 0, name  # widened
            if numbers.min() >= 0:
                assert feature.min >= 0, name
        elif feature.type == "category":
            assert set(values) <= set(feature.allowed or []), name


def test_churn_floor_is_below_the_baseline_in_the_comment(churn: InferredSpec) -> None:
    """The roc_auc floor is below the baseline written above gates, and not below chance (0.5)."""
    metric, baseline = baseline_in_comment(churn.yaml_text)
    assert metric == "roc_auc"
    assert baseline == pytest.approx(churn.baseline.mean, abs=5e-4)
    floor = churn.spec.gates.floors["roc_auc"]
    assert 0.5 <= floor < baseline
    assert churn.baseline.beats_chance


def test_inferred_spec_trains_and_passes_its_floor(churn: InferredSpec, churn_csv: Path) -> None:
    """The pipeline's own training on the sample reaches the inferred floor on its holdout, without edits."""
    from threadpoolctl import threadpool_limits

    from mlops_pipeline.evaluation import model_metrics
    from mlops_pipeline.training import split_frame, train_model

    frame = read_as_pipeline(churn_csv)
    # One OpenMP thread: on a busy machine competing threads spin-wait (a 0.3 s fit takes 5 s).
    with threadpool_limits(limits=1):
        result = train_model(frame, churn.spec)
    metrics = model_metrics(result.pipeline, split_frame(frame, churn.spec).holdout, churn.spec)
    assert metrics["roc_auc"] >= churn.spec.gates.floors["roc_auc"]


@pytest.mark.slow
def test_sample_passes_the_validation_of_its_inferred_spec(churn: InferredSpec, churn_csv: Path) -> None:
    """Validation (Great Expectations) of the sample against its inferred spec quarantines nothing."""
    from mlops_pipeline.validation import validate_frame

    outcome = validate_frame(read_as_pipeline(churn_csv), churn.spec)
    assert outcome.passed, outcome.failure_reasons
    assert outcome.quarantined_count == 0


def test_diabetes_is_regression(tmp_path: Path) -> None:
    """scikit-learn's diabetes data (float target, 214 values) gives a valid regression spec with an r2 floor below its baseline."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    frame.insert(0, "patient_id", [f"p{i}" for i in range(len(frame))])
    path = tmp_path / "diabetes.csv"
    frame.to_csv(path, index=False)
    inferred = spec_infer.infer_spec(read_as_pipeline(path), "target", name="diabetes")
    spec = inferred.spec
    assert (spec.task, spec.id_column, spec.target) == ("regression", "patient_id", "target")
    assert spec.target_classes is None and spec.positive_class is None
    assert re.search(r"^target: target$", inferred.yaml_text, flags=re.MULTILINE)
    assert set(spec.features) == {"age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"}
    assert {f.type for f in spec.features.values()} == {"number"}
    metric, baseline = baseline_in_comment(inferred.yaml_text)
    assert metric == spec.gates.primary_metric == "r2"
    assert 0 <= spec.gates.floors["r2"] < baseline


def test_three_text_classes_with_missing_values_are_multiclass(three_class: InferredSpec) -> None:
    """Text labels yes/no/maybe give task multiclass, f1_macro, and classes quoted so YAML keeps them text."""
    spec = three_class.spec
    assert spec.task == "multiclass"
    assert spec.target_classes == ["maybe", "no", "yes"]
    assert spec.positive_class is None
    assert 'classes: ["maybe", "no", "yes"]' in three_class.yaml_text
    assert yaml.safe_load(three_class.yaml_text)["target"]["classes"] == ["maybe", "no", "yes"]
    assert spec.gates.primary_metric == "f1_macro"
    metric, baseline = baseline_in_comment(three_class.yaml_text)
    assert metric == "f1_macro" and spec.gates.floors["f1_macro"] < baseline
    features = spec.features
    assert features["x1"].type == "number" and features["x1"].nullable
    assert features["color"].type == "category" and features["color"].nullable
    assert set(features["color"].allowed or []) == {"red", "green", "blue"}
    assert features["count"].type == "integer" and not features["count"].nullable
    assert features["flag"].type == "boolean"


def test_free_text_column_is_left_out_with_a_comment(three_class: InferredSpec) -> None:
    """A text column with more than 50 distinct values is no feature, and a YAML comment says why."""
    assert "notes" not in three_class.spec.features
    assert [column.name for column in three_class.skipped] == ["notes"]
    comment = next(line for line in three_class.yaml_text.splitlines() if "'notes'" in line)
    assert comment.lstrip().startswith("# left out: 'notes': text with 300 distinct values")


def test_no_id_column_gives_a_spec_whose_row_id_is_derived(tmp_path: Path) -> None:
    """With no unique `id`/`*_id` column and no --id, the spec has no id_column (derived_row_id) and a comment says what that means."""
    frame = three_class_table().drop(columns=["row_id"])
    frame["dup_id"] = "same"  # id-like but not unique: named in the comment, kept as a candidate feature
    frame = pd.concat([frame, frame.iloc[:3]], ignore_index=True)  # three repeated rows
    inferred = spec_infer.infer_spec(frame, "label", name="noid")
    assert inferred.spec.derived_row_id and inferred.spec.id_column == ROW_ID
    assert "id_column" not in inferred.data
    assert not re.search(r"^id_column:", inferred.yaml_text, flags=re.MULTILINE)
    assert inferred.id_choice.derived and inferred.id_choice.rejected == (
        "'dup_id' has 302 duplicate values",
    )
    assert "dup_id" in inferred.spec.features
    # Each repeated row and its original share one id (and so do rows equal but for the left-out text).
    repeated = frame[list(inferred.spec.features)].fillna("").astype(str).duplicated(keep=False)
    assert inferred.duplicate_rows == int(repeated.sum()) and repeated.iloc[[0, 1, 2, 300, 301, 302]].all()
    comment = " ".join(line.lstrip("# ") for line in inferred.yaml_text.splitlines() if line.startswith("# "))
    assert "No id_column: the table has no id column" in comment
    assert (
        f"a hash of its feature values. Duplicate rows get the same id, and validation's `unique:{ROW_ID}`"
        in comment
    )
    assert f"{inferred.duplicate_rows} of 303 rows" in comment and "share their feature values" in comment
    assert "Late labels (`labels:`) are joined to predictions by id and cannot be joined" in comment
    (tmp_path / "noid.yaml").write_text(inferred.yaml_text)
    assert load_spec(tmp_path / "noid.yaml") == inferred.spec


def test_given_id_that_is_not_unique_is_a_clear_error() -> None:
    """An --id column with duplicate or missing values fails naming the problem and the way out."""
    frame = three_class_table()
    frame["dup_id"] = "same"
    with pytest.raises(
        SpecInferenceError, match=r"'dup_id' has 299 duplicate values.*another --id, or leave --id out"
    ):
        spec_infer.infer_spec(frame, "label", name="x", id_column="dup_id")
    frame.loc[0, "row_id"] = np.nan
    with pytest.raises(SpecInferenceError, match=r"'row_id' has 1 missing values"):
        spec_infer.infer_spec(frame, "label", name="x", id_column="row_id")


def test_task_override_is_checked_against_the_target() -> None:
    """--task binary on a three-class target, or regression on text labels, is refused with the fix."""
    frame = three_class_table()
    with pytest.raises(SpecInferenceError, match=r"3 classes.*--task multiclass"):
        spec_infer.infer_spec(frame, "label", name="x", task="binary")
    with pytest.raises(SpecInferenceError, match="regression target must be numeric"):
        spec_infer.infer_spec(frame, "label", name="x", task="regression")


def test_words_yaml_would_misread_are_quoted(tmp_path: Path) -> None:
    """Names and values YAML reads as booleans or null (yes, on, null) are quoted; true/false labels stay booleans."""
    rng = np.random.default_rng(3)
    signal = rng.normal(size=200)
    frame = pd.DataFrame(
        {
            "id": [str(i) for i in range(200)],
            "yes": signal.round(3).astype(str),
            "null": rng.choice(["yes", "no"], size=200),
            ROW_ID: [f"h{i}" for i in range(200)],
            "churned": np.where(signal + rng.normal(scale=0.5, size=200) > 0, "True", "False"),
        }
    )
    inferred = spec_infer.infer_spec(frame, "churned", name="null")
    assert re.search(r'^name: "null"$', inferred.yaml_text, flags=re.MULTILINE)
    assert (
        '  "yes":' in inferred.yaml_text
        and '"null": {type: category, allowed: ["no", "yes"]}' in inferred.yaml_text
    )
    assert "classes: [false, true]" in inferred.yaml_text
    (tmp_path / "null.yaml").write_text(inferred.yaml_text)
    spec = load_spec(tmp_path / "null.yaml")
    assert spec.id_column == "id" and spec.target_classes == [False, True]
    assert set(spec.features) == {"yes", "null"}
    assert [c.name for c in inferred.skipped] == [ROW_ID]


def test_cli_prints_yaml_that_load_spec_accepts(
    churn_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mlops spec infer DATA --target COL` prints YAML that load_spec accepts as <name>.yaml."""
    assert cli.main(["spec", "infer", str(churn_csv), "--target", "churned"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# Inferred by `mlops spec infer` from {churn_csv}: 900 rows, 16 columns.")
    (tmp_path / "churn_sample.yaml").write_text(out)
    spec = load_spec(tmp_path / "churn_sample.yaml")
    assert spec.name == "churn_sample"
    assert spec.source.uri == "landing/churn_sample/ds={ds}/*.csv" and spec.source.format == "csv"
    assert spec.task == "binary"


def test_cli_reads_parquet_with_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A typed Parquet sample with --name, --id and --source-uri gives a parquet source of that uri."""
    path = tmp_path / "Three Classes.parquet"
    three_class_table().rename(columns={"row_id": "key"}).to_parquet(path)
    argv = ["spec", "infer", str(path), "--target", "label", "--id", "key", "--name", "tri"]
    assert cli.main([*argv, "--source-uri", "s3://bucket/tri/ds={ds}/*.parquet"]) == 0
    (tmp_path / "tri.yaml").write_text(capsys.readouterr().out)
    spec = load_spec(tmp_path / "tri.yaml")
    assert (spec.id_column, spec.task) == ("key", "multiclass")
    assert spec.source.uri == "s3://bucket/tri/ds={ds}/*.parquet" and spec.source.format == "parquet"
    assert spec.features["flag"].type == "boolean" and spec.features["count"].type == "integer"


def test_cli_error_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An --id that is not unique makes the CLI exit 2 with the message on stderr, nothing on stdout."""
    path = tmp_path / "dup.csv"
    three_class_table().assign(dup_id="same").to_csv(path, index=False)
    assert cli.main(["spec", "infer", str(path), "--target", "label", "--id", "dup_id"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("mlops spec infer: id column 'dup_id' has 299 duplicate values")


def test_names_are_safe_identifiers() -> None:
    """File names become safe spec names: lowercase, [a-z0-9_], a letter first."""
    assert spec_profile.default_name("data/Churn-2026.csv.gz") == "churn_2026"
    assert spec_profile.default_name("2024 sales.parquet") == "model_2024_sales"
    assert spec_profile.safe_name("---") == "model"
    assert spec_profile.sample_format("x.PARQUET") == "parquet"
    with pytest.raises(SpecInferenceError, match=r"\.csv or \.parquet"):
        spec_profile.sample_format("x.json")


def test_widened_range_rules() -> None:
    """Ranges widen by 10% of the span each side, stop at 0 for non-negative data, and round outwards."""
    assert spec_profile.widened_range(0, 100, integer=True) == (0, 110)
    assert spec_profile.widened_range(-50, 50, integer=True) == (-60, 60)
    assert spec_profile.widened_range(5, 5, integer=True) == (4, 6)
    low, high = spec_profile.widened_range(0.123, 0.456, integer=False)
    assert low <= 0.123 - 0.0333 and high >= 0.456 + 0.0333 and low >= 0


def test_floor_rule_stays_above_chance() -> None:
    """Floors are baseline - 0.05 (0.9 * baseline for r2), never below chance; at chance the floor is not below the baseline."""
    assert spec_infer.floor_below("roc_auc", 0.80, 0.5)[0] == 0.75
    assert spec_infer.floor_below("roc_auc", 0.52, 0.5)[0] == 0.5
    assert spec_infer.floor_below("r2", 0.5, 0.0)[0] == 0.45
    assert spec_infer.floor_below("r2", -0.2, 0.0)[0] == 0.0


def test_floor_drops_with_the_metric_noise_on_a_small_holdout() -> None:
    """Where 2 standard deviations of the metric on the holdout exceed the margin, the floor is baseline - 2 sd, still not below chance."""
    assert spec_infer.floor_below("roc_auc", 0.80, 0.5, spread=0.01)[0] == 0.75
    floor, rule = spec_infer.floor_below("r2", 0.37, 0.0, spread=0.15)
    assert floor == 0.07 and rule.startswith("baseline - 2 * 0.150")
    assert spec_infer.floor_below("roc_auc", 0.60, 0.5, spread=0.1)[0] == 0.5
    # Folds of 100 rows, a holdout of 25: the deviation doubles.
    assert spec_infer.holdout_spread([0.1, 0.3], 100, 25) == pytest.approx(2 * np.std([0.1, 0.3], ddof=1))
    assert spec_infer.holdout_spread([0.5], 100, 25) == 0.0
