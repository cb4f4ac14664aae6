"""Canary: a stable, hash-chosen share of ids, and the published part merged from two versions'
parts row by row (bounded batches, whatever their row groups)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_pipeline.canary import canary_mask, merge_canary
from mlops_pipeline.scoring import output_schema

IDS = [f"C{i:06d}" for i in range(20_000)]


def test_the_share_holds_and_an_id_keeps_its_version() -> None:
    mask = canary_mask(IDS, 0.25, "churn")
    assert abs(mask.mean() - 0.25) < 0.02
    # The same ids on another day, in another order: the same answer for each id.
    reordered = IDS[::-1]
    assert (canary_mask(reordered, 0.25, "churn") == mask[::-1]).all()
    # Another model draws its own ids; 0 and 1 are none and all.
    assert (canary_mask(IDS, 0.25, "other") != mask).any()
    assert not canary_mask(IDS, 0.0, "churn").any() and canary_mask(IDS, 1.0, "churn").all()


def part(path: Path, ids: list[str], version: str, proba: float, row_group: int) -> None:
    rows = len(ids)
    schema = output_schema(np.asarray([0, 1]))
    table = pa.Table.from_pydict(
        {
            "id": ids,
            "prediction": [int(proba > 0.5)] * rows,
            "proba_0": [1 - proba] * rows,
            "proba_1": [proba] * rows,
            "model_name": ["churn"] * rows,
            "model_version": [version] * rows,
            "run_id": ["run"] * rows,
            "logical_ts": [datetime(2026, 3, 1, tzinfo=UTC)] * rows,
        },
        schema=schema,
    )
    pq.write_table(table, path, row_group_size=row_group)


def test_the_published_part_takes_the_canarys_rows_from_the_challenger(tmp_path: Path) -> None:
    ids = IDS[:5_000]
    part(tmp_path / "champion.parquet", ids, "1", 0.2, row_group=700)
    part(tmp_path / "challenger.parquet", ids, "2", 0.9, row_group=1_300)  # other row groups
    taken = merge_canary(
        tmp_path / "champion.parquet", tmp_path / "challenger.parquet", tmp_path / "out.parquet", 0.3, "churn"
    )
    merged = pq.read_table(tmp_path / "out.parquet")
    assert merged.schema == pq.read_schema(tmp_path / "champion.parquet")
    assert merged.column("id").to_pylist() == ids
    expected = canary_mask(ids, 0.3, "churn")
    versions = np.asarray(merged.column("model_version").to_pylist())
    assert taken == int(expected.sum()) and (versions == np.where(expected, "2", "1")).all()
    assert (np.asarray(merged.column("proba_1").to_pylist()) == np.where(expected, 0.9, 0.2)).all()


def test_parts_of_other_rows_are_refused(tmp_path: Path) -> None:
    part(tmp_path / "a.parquet", IDS[:100], "1", 0.2, row_group=50)
    part(tmp_path / "b.parquet", IDS[1:101], "2", 0.9, row_group=50)
    with pytest.raises(ValueError, match="do not hold the same rows"):
        merge_canary(tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "out.parquet", 0.3, "churn")
    part(tmp_path / "c.parquet", IDS[:101], "2", 0.9, row_group=50)
    with pytest.raises(ValueError, match="more rows"):
        merge_canary(tmp_path / "a.parquet", tmp_path / "c.parquet", tmp_path / "out.parquet", 0.3, "churn")
