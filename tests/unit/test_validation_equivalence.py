"""The faster validation (Arrow text, parsed columns, one GX batch per column, the vectorised regex)
against the one it replaced (`reference_validation`): same rows quarantined with the same rule
names, same rule outcomes and counts, same clean rows, same GX results and Data Docs content, on
the example data's defective days and on a batch with every kind of broken value.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops_pipeline import checked_columns
from mlops_pipeline.devtools import example_data
from mlops_pipeline.spec import ModelSpec, load_spec
from mlops_pipeline.validation import REASONS_COLUMN, ValidationOutcome, validate_frame

from . import reference_validation

REPO = Path(__file__).resolve().parents[2]


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame as a snapshot reads back (`ingest.text_frame`): every value text, missing ones NaN."""
    text = frame.astype(object).where(frame.notna(), None).map(lambda v: None if v is None else str(v))
    return text.where(text.notna(), np.nan)


def _without_type_and_times(gx_result: dict[str, Any]) -> dict[str, Any]:
    """A GX result without what legitimately differs: our regex expectation's type name, the run's
    meta, the batch each result names (one per column now) and the per-result ids."""
    results = []
    for item in gx_result["results"]:
        config = dict(item["expectation_config"])
        config["type"] = config["type"].removesuffix("_vectorised")
        config["kwargs"] = {key: value for key, value in config["kwargs"].items() if key != "batch_id"}
        config.pop("id", None)
        results.append({**item, "expectation_config": config})
    return {"results": results, "statistics": gx_result["statistics"], "success": gx_result["success"]}


_TIMES = re.compile(r"\d{8}T\d{6}\.\d+Z|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[.\d]*(?:\+00:00|Z)?")
_IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# GX's batch fingerprint (an md5 of the batch's in-memory form): the reference's page shows it in
# the batch markers' table, the new validation leaves it out (`validation._without_batch_fingerprints`).
_FINGERPRINT_ROW = re.compile(r"<tr>(?:(?!</tr>).)*pandas_data_fingerprint(?:(?!</tr>).)*</tr>", re.DOTALL)


def _docs_content(html: str) -> str:
    """A Data Docs page without run times, ids and the batch fingerprint's row."""
    return _FINGERPRINT_ROW.sub("", _IDS.sub("<id>", _TIMES.sub("<time>", html)))


def _missing_as_none(value: Any) -> Any:
    """Missing values written one way: the old validation listed a missing value as `nan` or
    `None` depending on the column's form, the new one always as `None` (and GX's results hold
    NaN or None likewise)."""
    if isinstance(value, dict):
        return {key: _missing_as_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_missing_as_none(item) for item in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, str):
        return re.sub(r"(e\.g\. |, )nan\b", r"\1None", value)
    return value


def assert_same_outcome(new: ValidationOutcome, old: Any) -> None:
    """Every observable part of two outcomes is equal (numbers of the clean rows to 1e-12)."""
    assert new.summary() == _missing_as_none(old.summary())
    assert new.failure_reasons == _missing_as_none(old.failure_reasons)
    assert new.warnings == _missing_as_none(old.warnings)
    pd.testing.assert_frame_equal(
        new.quarantined.reset_index(drop=True), old.quarantined.reset_index(drop=True), check_dtype=False
    )
    assert new.quarantined[REASONS_COLUMN].tolist() == old.quarantined[REASONS_COLUMN].tolist()
    pd.testing.assert_frame_equal(new.clean, old.clean, check_exact=False, rtol=1e-12, atol=0)
    assert _missing_as_none(_without_type_and_times(new.gx_result)) == _missing_as_none(
        _without_type_and_times(old.gx_result)
    )
    assert _docs_content(new.data_docs_html) == _docs_content(old.data_docs_html)


@pytest.fixture(scope="module")
def churn() -> ModelSpec:
    return load_spec(REPO / "include/models/churn.yaml")


@pytest.mark.parametrize("day", [example_data.DEFECTIVE_DAY, example_data.MINOR_DEFECT_DAY])
def test_the_example_defective_days_give_the_same_outcome(churn: ModelSpec, day: Any) -> None:
    batch = as_text(example_data.churn_batch(day, rows=2_000))
    new = validate_frame(batch, churn)
    old = reference_validation.validate_frame(batch, churn)
    assert old.quarantined_count > 0
    assert_same_outcome(new, old)


# Every kind of value a text source may send for a number: valid forms, broken ones, and the odd.
NUMBER_TEXTS = [
    "12",
    " 12 ",
    "\t7\n",
    "+3",
    "-0",
    "1.",
    ".5",
    "+.5e-3",
    "1e5",
    "1E+05",
    "007",
    "2.50",
    "n/a",
    "",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "Infinity",
    "1e400",
    "-1e400",
    "1,5",
    "0x1A",
    "12abc",
    "١٢",
    "\uff11\uff12",  # fullwidth digits
    "1_000",
    "- 1",
    "1e",
    "e5",
    ".",
    "+",
    "--1",
    "1.2.3",
    "9999",
    "-1",
    "3.5",
    "3.0",
    "1e-400",
    "x" * 200,
]


def broken_batch(rows: int = 600) -> pd.DataFrame:
    """A churn batch (as text) with every broken value of NUMBER_TEXTS in every numeric column,
    unknown and dirty categories, missing and duplicated ids, and odd labels."""
    frame = as_text(example_data.churn_batch(example_data.DEFAULT_START, rows=rows))
    rng = np.random.default_rng(7)
    numeric = [
        name for name in example_data.CHURN_FEATURES if name not in ("plan", "region", "payment_method")
    ]
    for offset, name in enumerate(numeric):
        positions = rng.choice(rows, size=len(NUMBER_TEXTS), replace=False)
        for position, text in zip(positions, NUMBER_TEXTS, strict=True):
            frame.loc[position, name] = np.nan if text == "" else text
        frame.loc[(offset * 7) % rows, name] = np.nan
    for name, odd in (("plan", ["gold", "Basic", " basic", "", "1"]), ("region", ["North ", "SOUTH", None])):
        positions = rng.choice(rows, size=len(odd), replace=False)
        for position, text in zip(positions, odd, strict=True):
            frame.loc[position, name] = text or np.nan
    frame.loc[3, "customer_id"] = np.nan
    frame.loc[5, "customer_id"] = frame.loc[6, "customer_id"]
    for position, label in zip([10, 11, 12, 13, 14], ["2", "yes", np.nan, "1.0", " 0"], strict=True):
        frame.loc[position, "churned"] = label
    return frame


@pytest.mark.parametrize("max_share", [0.05, 1.0])
def test_a_batch_with_every_kind_of_broken_value_gives_the_same_outcome(
    churn: ModelSpec, max_share: float
) -> None:
    spec = churn.model_copy(
        update={"validation": churn.validation.model_copy(update={"max_quarantine_share": max_share})}
    )
    batch = broken_batch()
    new = validate_frame(batch, spec)
    old = reference_validation.validate_frame(batch, spec)
    assert old.quarantined_count > 100
    assert {"type:monthly_charges", "range:support_calls", "allowed:plan", "unique:customer_id"} <= {
        rule.name for rule in old.rules if rule.violated
    }
    assert_same_outcome(new, old)


def test_warn_policies_keep_the_same_rows_and_the_same_warnings(churn: ModelSpec) -> None:
    spec = churn.model_copy(
        update={"validation": churn.validation.model_copy(update={"default_policy": "warn"})}
    )
    batch = broken_batch().dropna(subset=["churned"])
    batch = batch[~batch["churned"].isin(["2", "yes"])].reset_index(drop=True)
    new = validate_frame(batch, spec)
    old = reference_validation.validate_frame(batch, spec)
    assert old.warnings
    assert_same_outcome(new, old)


@pytest.fixture(scope="module")
def text_labels_spec() -> ModelSpec:
    """A multiclass spec with text labels, a boolean feature and sample weights: the other forms."""
    return ModelSpec.model_validate(
        {
            "name": "forms",
            "task": "multiclass",
            "source": {"uri": "landing/forms/ds={ds}/*.csv", "format": "csv"},
            "id_column": "id",
            "target": {"column": "species", "classes": ["Adelie", "Gentoo", "1"]},
            "features": {
                "mass": {"type": "number", "min": 0},
                "count": {"type": "integer", "nullable": True},
                "tagged": {"type": "boolean"},
                "island": {"type": "category", "allowed": ["Biscoe", "Dream"]},
            },
            "training": {"sample_weight_column": "weight"},
            "estimator": {"kind": "logistic_regression"},
            "gates": {"primary_metric": "accuracy"},
            "validation": {"min_rows": 1, "max_quarantine_share": 1.0},
        }
    )


def test_text_labels_booleans_and_weights_give_the_same_outcome(text_labels_spec: ModelSpec) -> None:
    rows = 120
    rng = np.random.default_rng(3)
    booleans = ["true", "False", "1", "0", "TRUE", " true", "yes", "", "1.0", "t"]
    labels = ["Adelie", "Gentoo", "1", "1.0", " Adelie", "adelie", "", "Chinstrap"]
    weights = ["1", "0.5", "-1", "n/a", "", "2e0", "inf"]

    def odd_every(step: int, valid: str, odd: list[str]) -> list[str]:
        """`valid` in most rows; every `step`-th row one of `odd`, in turn."""
        return [odd[(i // step) % len(odd)] if i % step == 0 else valid for i in range(rows)]

    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(rows)],
            "mass": odd_every(5, "3.5", NUMBER_TEXTS),
            "count": odd_every(7, "2", NUMBER_TEXTS[::-1]),
            "tagged": odd_every(3, "true", booleans),
            "island": rng.choice(["Biscoe", "Dream", "Dream", "Biscoe", "Torgersen", ""], size=rows),
            "species": odd_every(4, "Gentoo", labels),
            "weight": odd_every(6, "1", weights),
        }
    ).replace("", np.nan)
    new = validate_frame(frame, text_labels_spec)
    old = reference_validation.validate_frame(frame, text_labels_spec)
    assert old.quarantined_count > 50 and len(old.clean) > 5
    assert_same_outcome(new, old)


def test_a_missing_column_gives_the_same_refusal(churn: ModelSpec) -> None:
    batch = as_text(example_data.churn_batch(example_data.DEFAULT_START, rows=300)).drop(columns=["region"])
    assert_same_outcome(validate_frame(batch, churn), reference_validation.validate_frame(batch, churn))


def test_the_vectorised_regex_is_pythons_on_every_value() -> None:
    from mlops_pipeline.gx_expectations import regex_matches

    values = pd.Series([*NUMBER_TEXTS, "١٢٣", " \xa012", "12\u2003", "12\n"], dtype=object)
    for pattern in (checked_columns.NUMBER_PATTERN, checked_columns.INTEGER_PATTERN):
        expected = [re.search(pattern, value) is not None for value in values]
        assert regex_matches(values, pattern).tolist() == expected
        assert regex_matches(values.astype("category"), pattern).tolist() == expected


def test_table_level_extras_give_the_same_outcome(churn: ModelSpec) -> None:
    """Extras with no `column` run on a batch of their own: one on two columns' parsed values (the
    pair comparison), one on the batch's shape (the column set), beside the schema rules."""
    extras = [
        {
            "type": "expect_column_pair_values_a_to_be_greater_than_b",
            "kwargs": {"column_A": "total_charges", "column_B": "monthly_charges", "or_equal": True},
            "policy": "quarantine",
        },
        {
            "type": "expect_table_columns_to_match_set",
            "kwargs": {"column_set": list(churn.columns), "exact_match": True},
            "policy": "warn",
        },
    ]
    spec = churn.model_copy(
        update={
            "validation": churn.validation.model_validate(
                {**churn.validation.model_dump(), "extra_expectations": extras, "max_quarantine_share": 1.0}
            )
        }
    )
    batch = as_text(example_data.churn_batch(example_data.DEFECTIVE_DAY, rows=1_000))
    batch.loc[::50, "total_charges"] = "0.5"  # below the month's charge: the pair rule's rows
    new = validate_frame(batch, spec)
    old = reference_validation.validate_frame(batch, spec)
    pair = next(rule for rule in old.rules if rule.name.startswith("extra:0:"))
    assert pair.unexpected_count >= 20
    assert_same_outcome(new, old)


def test_gxs_batch_fingerprint_is_left_out_and_its_setting_restored(churn: ModelSpec) -> None:
    from great_expectations.execution_engine import pandas_execution_engine

    threshold = pandas_execution_engine.HASH_THRESHOLD
    batch = as_text(example_data.churn_batch(example_data.DEFAULT_START, rows=300))
    outcome = validate_frame(batch, churn)
    markers = outcome.gx_result["meta"]["batch_markers"]
    assert "ge_load_time" in markers and "pandas_data_fingerprint" not in markers
    assert "pandas_data_fingerprint" not in outcome.data_docs_html
    assert threshold == pandas_execution_engine.HASH_THRESHOLD, "GX's own setting is put back"
    old = reference_validation.validate_frame(batch, churn)
    assert "pandas_data_fingerprint" in old.data_docs_html, "the reference shows it: the test strips it"
