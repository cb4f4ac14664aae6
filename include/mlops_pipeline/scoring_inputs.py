"""Reading one scoring input file, tolerantly: its columns, its batches, its repeated ids, its bad lines.

What :mod:`.scoring` needs to know of an input file before and while it scores it, and what makes
the file refused outright:

- a file that cannot be read (empty, truncated, not the format the spec says, a CSV header that is
  not text) raises :class:`UnreadableInput` naming the file's defect (rule ``readable``), before
  any output is kept: :data:`READ_ERRORS` are what reading a malformed file raises in Arrow and
  pandas, and :func:`guard_reads` turns them into it on the way;
- a file that lacks columns the model needs is refused (:func:`check_columns`, :class:`ScoringRejected`);
- the rows are read `batch_rows` at a time, memory bounded by the batch: as pandas frames
  (:func:`iter_batches`; CSV values stay text, only an empty field is null) or as Arrow record
  batches of a Parquet file (:func:`parquet_batches`);
- a CSV whose lines are mostly good has its undecodable lines (not UTF-8, NUL bytes) found and
  taken out of a readable copy before it is read (:func:`scan_csv_lines`): they break the
  ``encoding`` rule (default policy) and :mod:`.scoring` quarantines them with their line number;
- every row of an id that occurs more than once in the file breaks ``unique:<id>`` (policy
  ``scoring.duplicate_ids``): :func:`file_ids` finds those ids by reading the id column once
  before the batches (one column of the file in memory, 8 bytes of hash a row), and keeps the
  file's distinct ids, which the day's publish compares across its files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_pipeline.ingest import BadLine, bad_line
from mlops_pipeline.rules import RepeatedIds, id_hashes, required_columns, with_row_ids
from mlops_pipeline.spec import ModelSpec

_T = TypeVar("_T")


class ScoringRejected(ValueError):
    """Input that cannot be scored as the spec says (missing columns, a `fail` rule broken)."""


class UnreadableInput(ScoringRejected):
    """An input file that cannot be parsed at all (rule `readable`); `reason` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"cannot be read (rule readable): {reason}")


# What reading a malformed file raises in Arrow and pandas (a truncated Parquet footer, a CSV row
# of the wrong width, a block that is not UTF-8...): turned into UnreadableInput where files are read.
READ_ERRORS = (
    pa.ArrowException,
    OSError,
    UnicodeDecodeError,
    pd.errors.ParserError,
    pd.errors.EmptyDataError,
)


def guard_reads(items: Iterator[_T]) -> Iterator[_T]:
    """`items`, with a reading error raised as UnreadableInput."""
    try:
        yield from items
    except READ_ERRORS as exc:
        raise UnreadableInput(str(exc)) from exc


def check_columns(columns: list[str], spec: ModelSpec, source: str) -> None:
    """Refuse a file that lacks columns the model needs (policy: `validation.schema_policy`)."""
    if missing := [name for name in required_columns(spec) if name not in columns]:
        raise ScoringRejected(
            f"{source} lacks column(s) {missing} that model {spec.name} needs; it has {sorted(columns)}"
        )


def input_columns(path: Path, fmt: str) -> list[str]:
    """The column names of an input file, read from its footer (Parquet) or header (CSV).

    Raises UnreadableInput when the file has none (empty, not the format).
    """
    try:
        if fmt == "parquet":
            return list(pq.ParquetFile(path).schema_arrow.names)
        from pyarrow import csv

        with csv.open_csv(path) as reader:
            return list(reader.schema.names)
    except READ_ERRORS as exc:
        empty = " (the file is empty)" if path.stat().st_size == 0 else ""
        raise UnreadableInput(f"not a readable {fmt} file{empty}: {exc}") from exc


def parquet_batches(
    path: Path, batch_rows: int, read_dictionary: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """A Parquet file's rows, `batch_rows` at a time, as Arrow record batches (`read_dictionary`:
    columns read dictionary-encoded); reading errors are raised as they come (see `guard_reads`)."""
    # pre_buffer=False: with pre-buffering, Arrow keeps the raw bytes of every row group read
    # so far, so memory grew with the file (about its compressed size) instead of the batch.
    parquet = pq.ParquetFile(path, pre_buffer=False, read_dictionary=read_dictionary)
    # One thread: decoding one batch's columns in Arrow's pool costs more CPU than it saves time
    # (and the Arrow path reads on a thread of its own, beside the model's prediction).
    yield from parquet.iter_batches(batch_size=batch_rows, use_threads=False)


def iter_batches(path: Path, fmt: str, batch_rows: int) -> Iterator[pd.DataFrame]:
    """The file's rows, `batch_rows` at a time, as pandas frames (CSV values stay text).

    Raises UnreadableInput when the file turns out to be malformed on the way.
    """
    if fmt == "parquet":
        for batch in guard_reads(parquet_batches(path, batch_rows)):
            yield batch.to_pandas()
        return
    from pyarrow import csv

    # Text columns, and only an empty field is null (as ingest reads CSV): "n/a", "NA" or "null"
    # are reported as type errors, not read as missing values and scored.
    names = input_columns(path, fmt)
    reader = csv.open_csv(
        path,
        read_options=csv.ReadOptions(block_size=1 << 22),
        convert_options=csv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True, null_values=[""]
        ),
    )
    pending: list[pd.DataFrame] = []
    pending_rows = 0
    for batch in guard_reads(reader):
        pending.append(batch.to_pandas())
        pending_rows += batch.num_rows
        if pending_rows >= batch_rows:
            frame = pd.concat(pending, ignore_index=True)
            # A 4 MiB block can hold many batches: yield them all, keep only the remainder.
            start = 0
            while len(frame) - start >= batch_rows:
                yield frame.iloc[start : start + batch_rows].reset_index(drop=True)
                start += batch_rows
            rest = frame.iloc[start:].reset_index(drop=True)
            pending, pending_rows = ([rest], len(rest)) if len(rest) else ([], 0)
    if pending_rows:
        yield pd.concat(pending, ignore_index=True)


@dataclass(frozen=True)
class FileIds:
    """The ids of one input file, as 64-bit hashes of their text (:func:`.rules.id_hashes`)."""

    distinct: np.ndarray  # sorted distinct hashes: what publish compares across the day's files
    repeated: RepeatedIds  # the ids that occur more than once in this file


def file_ids(path: Path, fmt: str, spec: ModelSpec, batch_rows: int) -> FileIds:
    """The file's ids and the ones it repeats, read as the batches read them.

    Streams the id column alone (a derived id needs the features: those are read batch by batch),
    keeping 8 bytes of hash per row.
    """
    chunks: list[np.ndarray] = []
    if spec.derived_row_id or fmt != "parquet":
        for frame in iter_batches(path, fmt, batch_rows):
            chunks.append(id_hashes(with_row_ids(frame, spec)[spec.id_column]))
    else:
        parquet = pq.ParquetFile(path, pre_buffer=False)
        for batch in guard_reads(
            parquet.iter_batches(batch_size=batch_rows, columns=[spec.id_column], use_threads=False)
        ):
            chunks.append(id_hashes(batch.column(0).to_pandas()))
    every = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint64)
    distinct, counts = np.unique(every, return_counts=True)
    return FileIds(distinct, RepeatedIds(distinct[counts > 1]))


@dataclass(frozen=True)
class LineScan:
    """A CSV input's undecodable lines, and the copy of it that is read instead (None: read the file)."""

    bad_lines: list[BadLine]
    readable_copy: Path | None


def _is_clean_text_file(path: Path) -> bool:
    """Whether the file is UTF-8 text without NUL bytes, checked in 1 MiB blocks (bounded memory)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            if b"\x00" in block:
                return False
            try:
                decoder.decode(block)
            except UnicodeDecodeError:
                return False
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def scan_csv_lines(path: Path, copy: Path, keep_bad: bool) -> LineScan:
    """Find the lines of a CSV input that are not UTF-8 text (or hold NUL bytes), streaming.

    When there are any, `copy` is written: the file without them (or, with `keep_bad`, with each
    decoded with U+FFFD for its bad bytes, so that a `warn` policy scores it). A bad header line
    makes the file unreadable.
    """
    if _is_clean_text_file(path):
        return LineScan([], None)
    bad: list[BadLine] = []
    with path.open("rb") as source, copy.open("wb") as sink:
        for number, raw in enumerate(source, start=1):
            line = bad_line(number, raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw)
            if line is None:
                sink.write(raw)
                continue
            if number == 1:
                raise UnreadableInput(f"its header line is not CSV text ({line.detail})")
            bad.append(line)
            if keep_bad:
                sink.write(line.text.encode() + raw[len(raw.rstrip(b"\r\n")) :])
    return LineScan(bad, copy)
