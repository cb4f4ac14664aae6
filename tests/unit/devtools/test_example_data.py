"""Example data: deterministic churn batches with their planned events, and the diabetes data offline."""

from __future__ import annotations

import datetime
import io
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_pipeline.devtools import example_data as ex
from mlops_pipeline.spec import ModelSpec, load_spec
from mlops_pipeline.store import LocalStore

REPO = Path(__file__).resolve().parents[3]
CLEAN_DAY = datetime.date(2026, 2, 2)
DRIFT_DAYS = [ex.DRIFT_START + datetime.timedelta(days=offset) for offset in range(0, 28, 4)]
BEFORE_DAYS = [
    day
    for day in (ex.DRIFT_START - datetime.timedelta(days=offset) for offset in range(2, 30, 4))
    if day not in (ex.DEFECTIVE_DAY, ex.MINOR_DEFECT_DAY)  # their sentinels would move the mean
]


@pytest.fixture(scope="module")
def churn_spec() -> ModelSpec:
    return load_spec(REPO / "include/models/churn.yaml")


@pytest.fixture(scope="module")
def diabetes_spec() -> ModelSpec:
    return load_spec(REPO / "include/models/diabetes.yaml")


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as ingest reads it from the CSV: text, empty cells null."""
    return pd.read_csv(io.BytesIO(ex._csv_bytes(frame)), dtype=str, keep_default_na=False, na_values=[""])


def rule_violations(frame: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """One boolean column per feature: the row breaks that feature's rules in the spec (plain pandas)."""
    text = as_text(frame)
    broken = {}
    for name, feature in spec.features.items():
        values = text[name]
        bad = values.isna() & (not feature.nullable)
        if feature.type == "category":
            bad |= values.notna() & ~values.isin(feature.allowed or [])
        else:
            numbers = pd.to_numeric(values, errors="coerce")
            bad |= values.notna() & numbers.isna()
            if feature.type == "integer":
                bad |= numbers.notna() & (numbers != np.floor(numbers))
            if feature.min is not None:
                bad |= numbers < feature.min
            if feature.max is not None:
                bad |= numbers > feature.max
        broken[name] = bad
    return pd.DataFrame(broken)


# --- churn batches -------------------------------------------------------------------------------


def test_churn_batches_are_deterministic_down_to_the_bytes() -> None:
    for day in (CLEAN_DAY, ex.DEFECTIVE_DAY, ex.DRIFT_START):
        first, second = ex.churn_batch(day), ex.churn_batch(day)
        pd.testing.assert_frame_equal(first, second)
        assert ex._csv_bytes(first) == ex._csv_bytes(second)


def test_days_and_seeds_give_different_batches() -> None:
    base = ex.churn_batch(CLEAN_DAY)
    assert not base["monthly_charges"].equals(
        ex.churn_batch(CLEAN_DAY + datetime.timedelta(days=1))["monthly_charges"]
    )
    assert not base["monthly_charges"].equals(ex.churn_batch(CLEAN_DAY, seed=1)["monthly_charges"])


def test_a_batch_has_the_spec_columns_and_unique_ids_per_day(churn_spec: ModelSpec) -> None:
    batch = ex.churn_batch(CLEAN_DAY, rows=250)
    assert list(batch.columns) == list(ex.CHURN_COLUMNS) == churn_spec.columns
    assert len(batch) == 250
    assert batch["customer_id"].is_unique
    assert batch["customer_id"].str.startswith("c20260202-").all()
    other_day = ex.churn_batch(CLEAN_DAY + datetime.timedelta(days=1), rows=250)
    assert set(batch["customer_id"]).isdisjoint(other_day["customer_id"])
    assert set(batch["churned"].unique()) == {0, 1}


@pytest.mark.parametrize("rows", [0, -5])
def test_a_batch_needs_at_least_one_row(rows: int) -> None:
    with pytest.raises(ValueError, match="rows must be positive"):
        ex.churn_batch(CLEAN_DAY, rows=rows)


@pytest.mark.parametrize(
    "day",
    [
        datetime.date(2026, 1, 1),
        CLEAN_DAY,
        datetime.date(2026, 3, 9),
        datetime.date(2026, 3, 11),
        ex.DRIFT_START,
        datetime.date(2026, 4, 30),
    ],
)
def test_ordinary_days_pass_every_rule_of_the_churn_spec(churn_spec: ModelSpec, day: datetime.date) -> None:
    batch = ex.churn_batch(day)
    assert not rule_violations(batch, churn_spec).any().any()
    # Nulls only where the spec allows them, and they do occur there.
    assert batch["total_charges"].isna().any()
    assert batch["satisfaction_score"].isna().any()


def test_the_defective_day_has_about_40_percent_defective_rows(churn_spec: ModelSpec) -> None:
    batch = ex.churn_batch(ex.DEFECTIVE_DAY)
    violations = rule_violations(batch, churn_spec)
    defective = violations.any(axis=1)
    assert defective.mean() == pytest.approx(ex.DEFECTIVE_SHARE, abs=0.005)
    assert defective.mean() > churn_spec.validation.max_quarantine_share
    # One defect per damaged row, spread over the columns of a broken export.
    assert (violations.sum(axis=1) <= 1).all()
    counts = violations.sum()
    damaged = {"tenure_months", "support_calls", "monthly_charges", "plan", "region", "data_usage_gb"}
    assert set(counts[counts > 0].index) == damaged
    assert counts[list(damaged)].min() >= 50
    text = as_text(batch)
    assert (text["data_usage_gb"] == "n/a").any()
    assert (text["plan"] == "gold").any()
    assert batch["tenure_months"].isna().any()


def test_the_minor_defect_day_has_about_1_percent_defective_rows(churn_spec: ModelSpec) -> None:
    defective = rule_violations(ex.churn_batch(ex.MINOR_DEFECT_DAY), churn_spec).any(axis=1)
    assert defective.sum() == round(ex.MINOR_DEFECT_SHARE * 800)
    assert 0 < defective.mean() < churn_spec.validation.max_quarantine_share


def test_defects_are_only_on_the_two_planned_days(churn_spec: ModelSpec) -> None:
    for day in (
        ex.DEFECTIVE_DAY - datetime.timedelta(days=1),
        ex.MINOR_DEFECT_DAY + datetime.timedelta(days=1),
    ):
        assert not rule_violations(ex.churn_batch(day), churn_spec).any().any()


def test_drift_after_drift_start_shows_in_the_monthly_charges_mean() -> None:
    before = pd.concat([ex.churn_batch(day) for day in BEFORE_DAYS])
    after = pd.concat([ex.churn_batch(day) for day in DRIFT_DAYS])
    shift = after["monthly_charges"].mean() - before["monthly_charges"].mean()
    assert 15 < shift < 45
    # Day-to-day noise before the drift is far smaller than the shift.
    daily = [ex.churn_batch(day)["monthly_charges"].mean() for day in BEFORE_DAYS]
    assert max(daily) - min(daily) < 5
    assert ex.churn_batch(ex.DRIFT_START)["monthly_charges"].mean() > max(daily) + 10


def test_the_drift_episode_raises_churn_and_shifts_the_region_mix() -> None:
    before = pd.concat([ex.churn_batch(day) for day in BEFORE_DAYS])
    after = pd.concat([ex.churn_batch(day) for day in DRIFT_DAYS])
    assert 0.2 < before["churned"].mean() < 0.36
    assert after["churned"].mean() > before["churned"].mean() + 0.08
    assert (after["region"] == "south").mean() > (before["region"] == "south").mean() + 0.1


def test_scoring_batches_lack_the_label_which_arrives_later() -> None:
    scoring = ex.churn_scoring_batch(CLEAN_DAY, rows=100)
    labels = ex.churn_labels(CLEAN_DAY, rows=100)
    batch = ex.churn_batch(CLEAN_DAY, rows=100)
    assert "churned" not in scoring.columns
    pd.testing.assert_frame_equal(scoring, batch.drop(columns=["churned"]))
    assert list(labels.columns) == ["customer_id", "churned"]
    pd.testing.assert_frame_equal(labels, batch[["customer_id", "churned"]])


# --- diabetes ------------------------------------------------------------------------------------


def test_the_diabetes_frame_is_sklearns_data_loaded_without_network(
    monkeypatch: pytest.MonkeyPatch, diabetes_spec: ModelSpec
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("diabetes_frame tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    frame = ex.diabetes_frame()
    from sklearn.datasets import load_diabetes

    raw = load_diabetes(scaled=False, as_frame=True).frame
    assert len(frame) == 442
    assert list(frame.columns) == diabetes_spec.columns
    assert frame["patient_id"].is_unique and frame["patient_id"].iloc[0] == "p0001"
    np.testing.assert_array_equal(frame["bmi"].to_numpy(), raw["bmi"].to_numpy())
    np.testing.assert_array_equal(frame["progression"].to_numpy(), raw["target"].to_numpy())
    np.testing.assert_array_equal(frame["age"].to_numpy(), raw["age"].to_numpy())
    assert frame["age"].dtype == np.int64
    assert set(frame["sex"]) == {"1", "2"}


def test_the_diabetes_frame_passes_every_rule_of_its_spec(diabetes_spec: ModelSpec) -> None:
    assert not rule_violations(ex.diabetes_frame(), diabetes_spec).any().any()


# --- writing into a store ------------------------------------------------------------------------


def test_write_example_data_writes_each_day_and_the_diabetes_and_penguins_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    start = datetime.date(2026, 3, 9)
    summary = ex.write_example_data(store, start=start, end=datetime.date(2026, 3, 11), rows_per_day=50)
    assert summary.dates == (start, datetime.date(2026, 3, 10), datetime.date(2026, 3, 11))
    scoring_inputs = [
        f"incoming/churn/ds=2026-03-{day}/part-{i:03d}.parquet" for day in (9, 10, 11) for i in range(4)
    ]
    assert store.list() == [
        *[key.replace("ds=2026-03-9/", "ds=2026-03-09/") for key in scoring_inputs],
        "incoming/penguins/ds=2026-01-02/penguins.parquet",
        "labels/churn/ds=2026-03-09/labels.csv",
        "labels/churn/ds=2026-03-10/labels.csv",
        "labels/churn/ds=2026-03-11/labels.csv",
        "landing/churn/ds=2026-03-09/batch.csv",
        "landing/churn/ds=2026-03-10/batch.csv",
        "landing/churn/ds=2026-03-11/batch.csv",
        "landing/diabetes/ds=2026-01-01/data.csv",
        "landing/penguins/ds=2026-01-01/penguins.csv",
    ]
    assert summary.penguins_rows == 344
    # The customers to score on a day are that day's batch without its label, over four files.
    parts = [pd.read_parquet(io.BytesIO(store.read_bytes(key))) for key in scoring_inputs[4:8]]
    scoring = pd.concat(parts, ignore_index=True)
    assert list(scoring["customer_id"]) == list(
        ex.churn_batch(datetime.date(2026, 3, 10), rows=50)["customer_id"]
    )
    assert "churned" not in scoring.columns
    assert (scoring["data_usage_gb"] == "n/a").any()  # text defects survive as text in Parquet too
    assert (summary.churn_rows, summary.diabetes_rows, summary.total_rows) == (150, 442, 150 + 442 + 344)
    assert summary.churn_uri == store.uri("landing/churn")
    assert summary.diabetes_uri == store.uri("landing/diabetes")
    written = store.read_bytes("landing/churn/ds=2026-03-10/batch.csv")
    expected = ex.churn_batch(datetime.date(2026, 3, 10), rows=50).to_csv(index=False, lineterminator="\n")
    assert written == expected.encode()
    assert b"n/a" in written  # the defective day's text defects reach the file as sent


def test_rewriting_example_data_gives_byte_identical_files(tmp_path: Path) -> None:
    one, two = LocalStore(tmp_path / "one"), LocalStore(tmp_path / "two")
    window = {"start": datetime.date(2026, 2, 13), "end": datetime.date(2026, 2, 14), "rows_per_day": 40}
    ex.write_example_data(one, **window)
    ex.write_example_data(two, **window)
    first = {key: one.read_bytes(key) for key in one.list()}
    assert first == {key: two.read_bytes(key) for key in two.list()}
    ex.write_example_data(one, **window)
    assert first == {key: one.read_bytes(key) for key in one.list()}


def test_write_example_data_refuses_an_end_before_the_start(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(ValueError, match=r"end \(2026-01-01\) is before start \(2026-01-02\)"):
        ex.write_example_data(store, start=datetime.date(2026, 1, 2), end=datetime.date(2026, 1, 1))
    assert store.list() == []


def test_the_penguins_are_the_packages_real_table_without_an_id() -> None:
    """The multiclass example is palmerpenguins' own table: 344 rows, text species, missing values."""
    frame = ex.penguins_frame()
    assert len(frame) == 344 and "id" not in frame.columns
    assert sorted(frame["species"].unique()) == ["Adelie", "Chinstrap", "Gentoo"]
    assert frame["sex"].isna().sum() == 11 and frame["bill_length_mm"].isna().sum() == 2
