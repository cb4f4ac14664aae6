"""Reading a scoring input file (:mod:`mlops_pipeline.scoring_inputs`): batches of `batch_rows`
rows from Parquet and CSV, CSV values kept as text.

How defective inputs (unreadable files, undecodable lines, repeated ids) are refused or
quarantined is tested end to end through the score step, in steps/test_defective_inputs.py.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pandas as pd
import pytest

from mlops_pipeline.devtools import example_data as ex
from mlops_pipeline.scoring_inputs import iter_batches

CLEAN_DAY = datetime.date(2026, 3, 2)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_iter_batches_yields_batch_rows_at_a_time(fmt: str, tmp_path: Path) -> None:
    frame = ex.churn_scoring_batch(CLEAN_DAY, rows=2_500)
    source = tmp_path / f"in.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(source, index=False)
    else:
        frame.to_csv(source, index=False, lineterminator="\n")
    batches = list(iter_batches(source, fmt, 1_000))
    assert [len(batch) for batch in batches] == [1_000, 1_000, 500]
    assert pd.concat(batches)[ex.CHURN_ID_COLUMN].tolist() == frame[ex.CHURN_ID_COLUMN].tolist()
    if fmt == "csv":
        assert all(batch[name].dtype == object for batch in batches for name in batch.columns)
