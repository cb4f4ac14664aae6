"""Validation: the suite run on a batch, each rule's policy, the quarantine and what is published
(the suite's rules themselves: test_suite.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from mlops_pipeline import layout
from mlops_pipeline.spec import ModelSpec, load_spec
from mlops_pipeline.store import LocalStore
from mlops_pipeline.suite import build_rules
from mlops_pipeline.validation import REASONS_COLUMN, publish_validation, validate_frame

REPO = Path(__file__).resolve().parents[2]
ROWS = 200


@pytest.fixture(scope="module")
def churn_spec() -> ModelSpec:
    return load_spec(REPO / "include/models/churn.yaml")


def spec_with(spec: ModelSpec, **validation) -> ModelSpec:
    """The spec with some validation settings replaced (specs are frozen)."""
    return spec.model_copy(update={"validation": spec.validation.model_copy(update=validation)})


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as ingest reads it: every column text, empty cells null."""
    data = frame.to_csv(index=False).encode()
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""])


def good_batch(rows: int = ROWS) -> pd.DataFrame:
    plans, regions, payments = (
        ["basic", "standard", "premium"],
        ["north", "south", "east", "west"],
        ["card", "paypal"],
    )
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i:05d}" for i in range(rows)],
            "tenure_months": [i % 100 for i in range(rows)],
            "monthly_charges": [20.0 + (i % 150) for i in range(rows)],
            "total_charges": [None if i % 10 == 0 else 100.0 + i for i in range(rows)],
            "support_calls": [i % 7 for i in range(rows)],
            "data_usage_gb": [1.5 * (i % 40) for i in range(rows)],
            "avg_session_minutes": [10.0 + i % 50 for i in range(rows)],
            "days_since_last_login": [i % 30 for i in range(rows)],
            "num_devices": [1 + i % 4 for i in range(rows)],
            "late_payments": [i % 3 for i in range(rows)],
            "satisfaction_score": [None if i % 13 == 0 else (i % 10) + 0.5 for i in range(rows)],
            "age": [18 + i % 60 for i in range(rows)],
            "plan": [plans[i % 3] for i in range(rows)],
            "region": [regions[i % 4] for i in range(rows)],
            "payment_method": [payments[i % 2] for i in range(rows)],
            "churned": [i % 2 for i in range(rows)],
        }
    )
    return as_text(frame)


@pytest.fixture
def spec(churn_spec: ModelSpec) -> ModelSpec:
    """The churn spec sized for small test batches."""
    return spec_with(churn_spec, min_rows=50, max_quarantine_share=0.05)


def test_a_clean_batch_passes_with_typed_clean_rows(spec: ModelSpec) -> None:
    outcome = validate_frame(good_batch(), spec)
    assert outcome.passed, outcome.failure_reason
    assert outcome.quarantined_count == 0
    assert len(outcome.clean) == ROWS
    assert outcome.clean["monthly_charges"].dtype == "float64"
    assert outcome.clean["churned"].dtype == "int64"
    assert outcome.clean["total_charges"].isna().sum() == ROWS // 10
    assert "<html" in outcome.data_docs_html.lower()
    assert outcome.gx_result["success"] is True


def test_every_offending_row_is_quarantined_with_the_rules_it_broke(spec: ModelSpec) -> None:
    batch = good_batch()
    batch.loc[3, "monthly_charges"] = "9999"
    batch.loc[5, "plan"] = "gold"
    batch.loc[7, "data_usage_gb"] = "n/a"
    batch.loc[9, "tenure_months"] = None
    batch.loc[9, "region"] = "North "
    outcome = validate_frame(batch, spec)

    assert outcome.passed, outcome.failure_reason  # 4 of 200 rows = 2% < 5%
    reasons = dict(zip(outcome.quarantined["customer_id"], outcome.quarantined[REASONS_COLUMN], strict=True))
    assert reasons == {
        "c00003": "range:monthly_charges",
        "c00005": "allowed:plan",
        "c00007": "type:data_usage_gb",  # text that is not a number is a type error, not also a null
        "c00009": "not_null:tenure_months;allowed:region",
    }
    assert (
        outcome.quarantined.loc[outcome.quarantined["customer_id"] == "c00007", "data_usage_gb"].item()
        == "n/a"
    )
    assert len(outcome.clean) == ROWS - 4
    assert not set(reasons) & set(outcome.clean["customer_id"])


def test_an_overflowing_or_non_ascii_number_is_quarantined_not_read_as_missing(spec: ModelSpec) -> None:
    # "1e400" and a thousand nines look like numbers (the `type:` regex passes them) but overflow a
    # 64-bit float: read as ±inf, refused by `range:` where both bounds are set, by `finite:` where not.
    half_bounded = spec.model_copy(
        update={
            "features": {
                **spec.features,
                "total_charges": spec.features["total_charges"].model_copy(update={"max": None}),
            }
        }
    )
    assert "finite:total_charges" in {rule.name for rule in build_rules(half_bounded, set(spec.columns))}
    assert "finite:monthly_charges" not in {rule.name for rule in build_rules(spec, set(spec.columns))}
    batch = good_batch()
    batch.loc[3, "monthly_charges"] = "9" * 1000
    batch.loc[5, "total_charges"] = "1e400"  # nullable: a missing value would have passed
    batch.loc[7, "total_charges"] = "-1e400"
    batch.loc[9, "support_calls"] = "\u0661\u0662"  # Arabic-Indic 12: pandas reads no number in it
    outcome = validate_frame(batch, half_bounded)
    reasons = dict(zip(outcome.quarantined["customer_id"], outcome.quarantined[REASONS_COLUMN], strict=True))
    assert reasons == {
        "c00003": "range:monthly_charges",
        "c00005": "finite:total_charges",
        "c00007": "finite:total_charges;range:total_charges",  # below min 0 as well
        "c00009": "type:support_calls",
    }
    assert len(outcome.clean) == ROWS - 4


def test_quarantine_over_the_limit_refuses_the_batch_and_still_quarantines_all_rows(spec: ModelSpec) -> None:
    batch = good_batch()
    batch.loc[0:39, "plan"] = "gold"  # 40 rows: 20%, far more than the 200-row sample GX keeps by default
    outcome = validate_frame(batch, spec)
    assert not outcome.passed
    assert "over the limit of 5.0%" in outcome.failure_reason
    assert outcome.quarantined_count == 40


def test_quarantine_is_complete_beyond_gx_partial_lists(churn_spec: ModelSpec) -> None:
    spec = spec_with(churn_spec, min_rows=50, max_quarantine_share=0.5)
    batch = good_batch(1000)
    batch.loc[0:299, "support_calls"] = "-1"
    outcome = validate_frame(batch, spec)
    assert outcome.passed
    assert outcome.quarantined_count == 300


def test_a_missing_column_fails_by_the_schema_policy(spec: ModelSpec) -> None:
    outcome = validate_frame(good_batch().drop(columns=["region"]), spec)
    assert not outcome.passed
    assert "schema:region" in outcome.failure_reason
    assert outcome.clean.empty


def test_warn_policy_records_and_keeps_the_rows(spec: ModelSpec) -> None:
    batch = good_batch()
    batch.loc[2, "age"] = "12"  # age has on_violation: warn
    outcome = validate_frame(batch, spec)
    assert outcome.passed
    assert any(w.startswith("range:age (1 rows") for w in outcome.warnings)
    assert outcome.quarantined_count == 0
    assert len(outcome.clean) == ROWS


def test_fail_policy_stops_the_batch(churn_spec: ModelSpec) -> None:
    spec = spec_with(churn_spec, min_rows=50, default_policy="fail")
    batch = good_batch()
    batch.loc[4, "plan"] = "gold"
    outcome = validate_frame(batch, spec)
    assert not outcome.passed
    assert "allowed:plan (1 rows" in outcome.failure_reason


def test_too_few_rows_fail(churn_spec: ModelSpec) -> None:
    outcome = validate_frame(good_batch(20), spec_with(churn_spec, min_rows=50))
    assert not outcome.passed
    assert "row_count" in outcome.failure_reason


def test_duplicate_ids_are_quarantined(spec: ModelSpec) -> None:
    batch = good_batch()
    batch.loc[1, "customer_id"] = batch.loc[0, "customer_id"]
    outcome = validate_frame(batch, spec)
    assert sorted(outcome.quarantined[REASONS_COLUMN]) == ["unique:customer_id", "unique:customer_id"]


def test_an_unknown_extra_expectation_is_a_clear_error(spec: ModelSpec) -> None:
    extra = spec.validation.extra_expectations[0].model_copy(update={"type": "expect_the_impossible"})
    broken = spec_with(spec, extra_expectations=[extra])
    with pytest.raises(ValueError, match="unknown Great Expectations expectation 'expect_the_impossible'"):
        validate_frame(good_batch(), broken)


def test_publish_writes_result_docs_summary_and_quarantine(spec: ModelSpec, tmp_path: Path) -> None:
    batch = good_batch()
    batch.loc[3, "monthly_charges"] = "9999"
    outcome = validate_frame(batch, spec)
    store = LocalStore(tmp_path)
    artifacts = publish_validation(outcome, store, "churn", "manual__2026-03-01T00:00:00+00:00")

    prefix = layout.validation_prefix("churn", "manual__2026-03-01T00:00:00+00:00")
    assert artifacts.data_docs_uri == store.uri(f"{prefix}/data_docs/index.html")
    assert json.loads(store.read_bytes(f"{prefix}/result.json"))["statistics"]["evaluated_expectations"] > 30
    summary = json.loads(store.read_bytes(f"{prefix}/summary.json"))
    assert summary["quarantined_rows"] == 1 and summary["passed"] is True
    quarantined = pd.read_parquet(
        io.BytesIO(store.read_bytes(layout.quarantine_rows_key("churn", "manual__2026-03-01T00:00:00+00:00")))
    )
    assert quarantined["monthly_charges"].tolist() == ["9999"]
    reason = json.loads(
        store.read_bytes(layout.quarantine_reason_key("churn", "manual__2026-03-01T00:00:00+00:00"))
    )
    assert reason["rules"] == {"range:monthly_charges": 1}


def test_publish_without_bad_rows_writes_no_quarantine(spec: ModelSpec, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    artifacts = publish_validation(validate_frame(good_batch(), spec), store, "churn", "run1")
    assert artifacts.quarantine_uri is None
    assert store.list("quarantine/") == []
