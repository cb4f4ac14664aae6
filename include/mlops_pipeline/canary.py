"""Canary: a stable share of ids served by the challenger in the published predictions.

During a shadow period with `rollout.canary_share`, each input file is scored by both versions
(the challenger's rows go to `predictions_shadow/` as in any shadow run), and the published part
takes the challenger's row for every id the canary holds. Which ids: those whose hash of
`<model>:<id>` falls below the share (:func:`canary_mask`), so an id is served by the same version
every day of the period, a customer never flips between models, and the share holds to the
sampling error. Every row carries its `model_version`; the manifest counts rows per version.

The two part files of one input hold the same rows in the same order (the same scorable rows,
written batch by batch), so the merge streams them side by side in bounded memory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Rows per batch when merging two part files (bounds memory, like scoring's batches).
MERGE_BATCH_ROWS = 50_000


def canary_mask(ids: pd.Series | np.ndarray, share: float, model: str) -> np.ndarray:
    """True for the ids the canary serves: blake2b-64 of `<model>:<id>` below `share` of the range.

    A pure function of the id and the model's name: the same id gets the same answer every day.
    """
    if share <= 0:
        return np.zeros(len(ids), dtype=bool)
    limit = int(share * 2**64)
    prefix = f"{model}:".encode()
    buckets = np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(prefix + str(value).encode(), digest_size=8).digest(), "big")
            for value in ids
        ),
        dtype=np.uint64,
        count=len(ids),
    )
    return buckets < np.uint64(min(limit, 2**64 - 1))


def merge_canary(primary: Path, challenger: Path, output: Path, share: float, model: str) -> int:
    """Write to `output` the rows of `primary` with the canary's ids taken from `challenger`
    (same rows, same order); the number of rows taken from the challenger.

    Raises ValueError when the two files do not hold the same ids in the same order or have
    different schemas (a challenger that predicts other classes): nothing is merged then.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    first, second = pq.ParquetFile(primary), pq.ParquetFile(challenger)
    if first.schema_arrow != second.schema_arrow:
        raise ValueError(
            "the challenger's output columns differ from the champion's "
            f"({second.schema_arrow.names} vs {first.schema_arrow.names}): no canary in one partition"
        )
    taken = 0
    theirs_rows = _Rows(second)
    with pq.ParquetWriter(output, first.schema_arrow, compression="snappy") as writer:
        for batch in first.iter_batches(batch_size=MERGE_BATCH_ROWS):
            ours = pa.Table.from_batches([batch])
            theirs = theirs_rows.take(ours.num_rows)
            if theirs is None or not ours.column("id").combine_chunks().equals(
                theirs.column("id").combine_chunks()
            ):
                raise ValueError("the champion's and the challenger's parts do not hold the same rows")
            mask = pa.array(canary_mask(ours.column("id").to_numpy(), share, model))
            taken += int(np.count_nonzero(mask.to_numpy(zero_copy_only=False)))
            columns = [
                _choice(mask, theirs.column(index), ours.column(index), field.type)
                for index, field in enumerate(first.schema_arrow)
            ]
            writer.write_table(pa.Table.from_arrays(columns, schema=first.schema_arrow))
    if not theirs_rows.exhausted():
        raise ValueError("the challenger's part holds more rows than the champion's")
    return taken


class _Rows:
    """A Parquet file's rows handed out in the lengths asked for (the champion's batch lengths)."""

    def __init__(self, parquet: Any) -> None:
        self._schema = parquet.schema_arrow
        self._batches = parquet.iter_batches(batch_size=MERGE_BATCH_ROWS)
        self._held: list[Any] = []
        self._count = 0

    def take(self, rows: int) -> Any:
        """The next `rows` rows as a table, or None when fewer are left."""
        import pyarrow as pa

        while self._count < rows:
            batch = next(self._batches, None)
            if batch is None:
                return None
            self._held.append(batch)
            self._count += batch.num_rows
        table = pa.Table.from_batches(self._held, schema=self._schema)
        rest = table.slice(rows)
        self._held, self._count = rest.to_batches(), rest.num_rows
        return table.slice(0, rows)

    def exhausted(self) -> bool:
        """Whether every row was handed out."""
        return self._count == 0 and next(self._batches, None) is None


def _choice(mask: Any, theirs: Any, ours: Any, kind: Any) -> Any:
    """The challenger's value where the mask is set, else the champion's (dictionary columns,
    such as the model version, decoded, chosen and encoded again)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_dictionary(kind):
        return pc.if_else(mask, theirs, ours)
    chosen = pc.if_else(mask, theirs.cast(kind.value_type), ours.cast(kind.value_type))
    return chosen.combine_chunks().dictionary_encode().cast(kind)
