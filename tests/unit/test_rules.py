"""The row rules scoring and monitoring share (`mlops_pipeline.rules`): what each rule says of a
value, and which inputs take the Arrow way. That both ways agree byte for byte is tested on whole
files in test_scoring.py (`test_the_arrow_way_gives_the_bytes_of_the_pandas_way`)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlops_pipeline.devtools import example_data as ex
from mlops_pipeline.rules import (
    DECODE_ERROR_COLUMN,
    RepeatedIds,
    arrow_path_applies,
    check_arrow,
    check_rows,
    id_hashes,
)
from mlops_pipeline.spec import ModelSpec, load_spec

REPO = Path(__file__).resolve().parents[2]
CLEAN_DAY = datetime.date(2026, 3, 2)


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_spec(REPO / "include/models/churn.yaml")


def test_a_category_sent_as_a_number_matches_its_text_in_the_spec() -> None:
    spec = ModelSpec.model_validate(
        {
            "name": "demo",
            "task": "classification",
            "source": {"uri": "landing/demo/ds={ds}/*.csv"},
            "id_column": "id",
            "target": "label",
            "features": {"sex": {"type": "category", "allowed": ["1", "2"]}},
            "estimator": {"kind": "logistic_regression"},
            "gates": {"primary_metric": "roc_auc"},
        }
    )
    check = check_rows(pd.DataFrame({"id": ["a", "b", "c"], "sex": [1, 2, 3]}), spec)
    assert check.quarantine.tolist() == [False, False, True]
    assert check.quarantined_by_rule == {"allowed:sex": 1}


@pytest.mark.parametrize(
    ("change", "applies"),
    [
        (lambda t: t, True),
        (lambda t: t.set_column(1, "tenure_months", t.column(1).cast(pa.string())), False),
        (lambda t: t.set_column(1, "tenure_months", t.column(1).cast(pa.bool_())), False),
        (lambda t: t.set_column(12, "plan", t.column(12).dictionary_encode()), False),
        (lambda t: t.set_column(0, "customer_id", pa.array(range(t.num_rows))), False),
        (lambda t: t.append_column("customer_id", t.column(0)), False),
    ],
)
def test_only_plain_types_take_the_arrow_way(change: Any, applies: bool, spec: ModelSpec) -> None:
    table = pa.Table.from_pandas(ex.churn_scoring_batch(CLEAN_DAY, rows=20), preserve_index=False)
    assert table.column_names[:2] == ["customer_id", "tenure_months"] and table.column_names[12] == "plan"
    assert arrow_path_applies(change(table).schema, spec) is applies
    # A stored pandas index (a named column in the metadata) sends the file the pandas way.
    indexed = pa.Table.from_pandas(ex.churn_scoring_batch(CLEAN_DAY, rows=20).set_index("age"))
    assert not arrow_path_applies(indexed.schema, spec)


def test_every_row_of_a_repeated_id_breaks_unique_the_same_way_in_pandas_and_arrow(spec: ModelSpec) -> None:
    """Both occurrences of a repeated id, none of a unique or missing one; the same on both ways."""
    frame = ex.churn_scoring_batch(CLEAN_DAY, rows=50)
    frame.loc[7, "customer_id"] = frame.loc[3, "customer_id"]
    repeated = RepeatedIds.of([id_hashes(frame["customer_id"])])
    assert len(repeated) == 1
    pandas_check = check_rows(frame, spec, repeated)
    arrow_check = check_arrow(pa.RecordBatch.from_pandas(frame, preserve_index=False), spec, repeated).check
    for check in (pandas_check, arrow_check):
        assert check.quarantined_by_rule == {"unique:customer_id": 2}
        assert sorted(check.reasons) == [3, 7]
    assert "unique:customer_id" not in check_rows(frame, spec).quarantined_by_rule  # only when asked


def test_ids_repeated_across_files_are_those_in_two_or_more_files_and_union_with_a_files_own() -> None:
    """`across` takes each file's distinct hashes: an id once in each of two files is repeated, an id
    twice in one file only (already distinct there) is not; `union` joins both kinds."""
    first = np.unique(id_hashes(pd.Series(["a", "b", "c"])))
    second = np.unique(id_hashes(pd.Series(["c", "d", "d"])))
    third = np.unique(id_hashes(pd.Series(["a", "e", None])))
    across = RepeatedIds.across([first, second, third])
    assert sorted(across.hashes.tolist()) == sorted(id_hashes(pd.Series(["a", "c"])).tolist())
    assert len(RepeatedIds.across([])) == 0 and len(RepeatedIds.across([first])) == 0
    own = RepeatedIds.of([id_hashes(pd.Series(["d", "d", "e"]))])
    both = across.union(own)
    assert both.mask(pd.Series(["a", "b", "c", "d", "e", None])).tolist() == [
        True,
        False,
        True,
        True,
        False,
        False,
    ]


def test_the_duplicate_policy_of_the_spec_applies(spec: ModelSpec) -> None:
    assert spec.scoring is not None
    warn = spec.model_copy(update={"scoring": spec.scoring.model_copy(update={"duplicate_ids": "warn"})})
    frame = ex.churn_scoring_batch(CLEAN_DAY, rows=20)
    frame.loc[1, "customer_id"] = frame.loc[0, "customer_id"]
    check = check_rows(frame, warn, RepeatedIds.of([id_hashes(frame["customer_id"])]))
    assert (check.warned_by_rule, check.quarantined_by_rule) == ({"unique:customer_id": 2}, {})


def test_rows_of_undecodable_lines_break_the_encoding_rule(spec: ModelSpec) -> None:
    frame = ex.churn_scoring_batch(CLEAN_DAY, rows=5).astype(object)
    frame[DECODE_ERROR_COLUMN] = [None, "f.csv line 3: byte 0xe9", None, None, None]
    check = check_rows(frame, spec)
    assert check.quarantined_by_rule == {"encoding": 1} and check.reasons == {1: ["encoding"]}
