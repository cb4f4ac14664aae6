"""Batch scoring of one input file: stream it in record batches, check each row, predict, write Parquet.

Memory stays bounded by the batch size whatever the file's size: the input is read with
`pyarrow` batch by batch (Parquet row groups or CSV blocks), and the output is appended batch by
batch with a `ParquetWriter`. Rows that cannot be scored as the spec says (wrong type, null,
out of range, unseen category) are never silently scored or dropped: the `quarantine` policy
moves them to a quarantine file with the rules they broke, `fail` stops the file, `warn` scores
them and counts them.

Speed: a Parquet batch whose columns have plain types (numbers for numeric features, text for
categories and the id) is checked and turned into features straight from Arrow, with vectorised
numpy and Arrow compute (text becomes Python strings through a per-batch dictionary of distinct
values, not one conversion per row). Anything else (CSV text, nullable booleans, categoricals,
numbers sent as text, a stored pandas index) goes the general pandas way. Both ways apply the same
rules and give the same output bytes; the Arrow way only exists because the pandas way costs
about as much as the model itself at a million rows.

The output is a pure function of the input, the model and the run's identity (id, logical
timestamp): the same input and model version give byte-identical Parquet.

Defective files are read as :mod:`.scoring_inputs` reads them: a file that cannot be read raises
:class:`~.scoring_inputs.UnreadableInput` before any output is kept; a CSV's undecodable lines
(not UTF-8, NUL bytes) break the ``encoding`` rule (default policy) and are quarantined here with
their line number; every row of an id that occurs more than once in the file, or that
`repeated_elsewhere` names (ids of other input files of the same day), breaks ``unique:<id>``
(policy `scoring.duplicate_ids`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_pipeline.ingest import BadLine
from mlops_pipeline.rules import (
    DECODE_ERROR_COLUMN,
    ENCODING_RULE,
    ArrowBatch,
    RepeatedIds,
    arrow_path_applies,
    check_arrow,
    check_rows,
    with_row_ids,
)
from mlops_pipeline.scoring_inputs import (
    READ_ERRORS,
    LineScan,
    ScoringRejected,
    UnreadableInput,
    check_columns,
    file_ids,
    guard_reads,
    input_columns,
    iter_batches,
    parquet_batches,
    scan_csv_lines,
)
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.targets import proba_columns
from mlops_pipeline.training import features_frame

_T = TypeVar("_T")

REASONS_COLUMN = "_reasons"
PREDICTION = "prediction"
# Upper bounds of the histograms kept while scoring (a last bucket holds what is above them all):
# fixed, so that the files of a run, and the runs of a model, sum bucket by bucket.
LATENCY_BUCKETS_SECONDS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROBABILITY_BUCKETS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def bucket_counts(values: np.ndarray, bounds: tuple[float, ...]) -> list[int]:
    """How many `values` fall in each bucket `(previous bound, bound]`, and above the last bound."""
    index = np.searchsorted(np.asarray(bounds), values, side="left")
    return [int(n) for n in np.bincount(index, minlength=len(bounds) + 1)]


def _add_counts(mine: list[int], theirs: list[int]) -> list[int]:
    # A side without observations has no counts at all (also the stats of runs from before these).
    if not mine or not theirs:
        return list(mine or theirs)
    return [a + b for a, b in zip(mine, theirs, strict=True)]


@dataclass(frozen=True)
class RunStamp:
    """The run's identity, written into every output row (never the wall clock)."""

    model_name: str
    model_version: str
    run_id: str
    logical_ts: datetime


@dataclass
class ScoreStats:
    """What scoring one file found; summed over files for the run's metrics and manifest."""

    rows_in: int = 0
    rows_scored: int = 0
    rows_quarantined: int = 0
    quarantined_by_rule: dict[str, int] = field(default_factory=dict)
    warned_by_rule: dict[str, int] = field(default_factory=dict)
    nulls_by_feature: dict[str, int] = field(default_factory=dict)
    # Classification: rows per predicted label and the sum of the positive-class probability;
    # regression: the sum and sum of squares of the predictions.
    predicted_labels: dict[str, int] = field(default_factory=dict)
    prediction_sum: float = 0.0
    prediction_sq_sum: float = 0.0
    seconds: float = 0.0
    # Per bucket of LATENCY_BUCKETS_SECONDS: batches by the time the model took to predict them.
    batch_latency_counts: list[int] = field(default_factory=list)
    batch_latency_sum: float = 0.0
    # Classification, per bucket of PROBABILITY_BUCKETS: rows by the positive (last) class's probability.
    probability_counts: list[int] = field(default_factory=list)

    def observe_batch(self, seconds: float) -> None:
        """Count one batch the model predicted in `seconds`."""
        self.batch_latency_counts = _add_counts(
            self.batch_latency_counts, bucket_counts(np.asarray([seconds]), LATENCY_BUCKETS_SECONDS)
        )
        self.batch_latency_sum += seconds

    def add(self, other: ScoreStats) -> None:
        """Accumulate `other` into this one."""
        self.rows_in += other.rows_in
        self.rows_scored += other.rows_scored
        self.rows_quarantined += other.rows_quarantined
        for mine, theirs in (
            (self.quarantined_by_rule, other.quarantined_by_rule),
            (self.warned_by_rule, other.warned_by_rule),
            (self.nulls_by_feature, other.nulls_by_feature),
            (self.predicted_labels, other.predicted_labels),
        ):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value
        self.prediction_sum += other.prediction_sum
        self.prediction_sq_sum += other.prediction_sq_sum
        self.seconds += other.seconds
        self.batch_latency_counts = _add_counts(self.batch_latency_counts, other.batch_latency_counts)
        self.batch_latency_sum += other.batch_latency_sum
        self.probability_counts = _add_counts(self.probability_counts, other.probability_counts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreStats:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


def _arrow_features(
    checked: ArrowBatch, spec: ModelSpec, keep: np.ndarray | None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The kept rows' features (equal to `features_frame` of them read through pandas) and nulls per feature."""
    columns: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in spec.features:
        if name in checked.numbers:
            values = checked.numbers[name]
            if keep is not None:
                values = values[keep]
            nulls[name] = int(np.count_nonzero(np.isnan(values)))
        else:
            text = checked.categories[name]
            codes = text.codes if keep is None else text.codes[keep]
            # Rows share the distinct values' str objects: no per-row conversion of text.
            values = text.values[codes]
            nulls[name] = int(np.count_nonzero(text.missing[codes]))
        columns[name] = values
    return pd.DataFrame(columns), nulls


@dataclass(frozen=True)
class _Scorable:
    """The rows of a batch that are scored: ids to write, features to predict, nulls per feature."""

    ids: pd.Series | pa.Array
    features: pd.DataFrame
    nulls: dict[str, int]


class _Batch:
    """One input batch, checked: Arrow (see `arrow_path_applies`) or a pandas frame (any other input).

    `file_schema` (Arrow batches): the file's own schema; categories are read dictionary-encoded
    and decoded back to it whenever the batch is needed as pandas.
    """

    def __init__(
        self,
        data: pa.RecordBatch | pd.DataFrame,
        spec: ModelSpec,
        file_schema: pa.Schema | None = None,
        duplicate_ids: RepeatedIds | None = None,
    ) -> None:
        self.spec = spec
        self.arrow: pa.RecordBatch | None = None
        self._file_schema = file_schema
        self._frame: pd.DataFrame | None = None
        self._checked: ArrowBatch | None = None
        if isinstance(data, pa.RecordBatch):
            self.arrow = data
            self.rows = data.num_rows
            self._checked = check_arrow(data, spec, duplicate_ids)
            self.check = self._checked.check
        else:
            self._frame = data
            self.rows = len(data)
            self.check = check_rows(data, spec, duplicate_ids)

    def frame(self) -> pd.DataFrame:
        """The whole batch as pandas, exactly as `iter_batches` reads it (converted once, when needed)."""
        if self._frame is None:
            assert self.arrow is not None and self._file_schema is not None
            columns = [
                column.dictionary_decode()
                if pa.types.is_dictionary(column.type) and not pa.types.is_dictionary(field.type)
                else column
                for column, field in zip(self.arrow.columns, self._file_schema, strict=True)
            ]
            self._frame = pa.RecordBatch.from_arrays(columns, schema=self._file_schema).to_pandas()
        return self._frame

    def quarantined(self) -> pd.DataFrame:
        """The rows to quarantine, as they arrived."""
        return self.frame()[self.check.quarantine]

    def scorable(self) -> _Scorable | None:
        """The rows that are not quarantined, ready to predict; None when there are none."""
        spec = self.spec
        keep = ~self.check.quarantine if self.check.quarantine.any() else None
        if self._checked is None:
            frame = self.frame() if keep is None else self.frame()[keep]
            if frame.empty:
                return None
            features = features_frame(frame, spec)
            nulls = {str(name): int(count) for name, count in features.isna().sum().items()}
            return _Scorable(frame[spec.id_column], features, nulls)
        assert self.arrow is not None
        if keep is not None and not keep.any():
            return None
        features, nulls = _arrow_features(self._checked, spec, keep)
        ids: pd.Series | pa.Array = self.arrow.column(spec.id_column)
        if keep is not None:
            ids = ids.filter(pa.array(keep))
        if ids.null_count:
            # Only when a missing id is let through (policy warn): written as the pandas way writes it.
            ids = self.frame()[spec.id_column] if keep is None else self.frame()[spec.id_column][keep]
        elif ids.type != pa.string():
            ids = ids.cast(pa.string())
        return _Scorable(ids, features, nulls)


def _arrow_batches(
    path: Path, schema: pa.Schema, spec: ModelSpec, batch_rows: int, duplicate_ids: RepeatedIds | None
) -> Iterator[_Batch]:
    """The file's rows as checked Arrow batches, categories read dictionary-encoded (no per-row text)."""
    texts = [name for name, f in spec.features.items() if f.type == "category"]
    read_dictionary = [name for name in texts if pa.types.is_string(schema.field(name).type)]
    for batch in guard_reads(parquet_batches(path, batch_rows, read_dictionary)):
        yield _Batch(batch, spec, schema, duplicate_ids)


def _bad_line_rows(bad: list[BadLine], names: list[str], spec: ModelSpec, source: str) -> pa.Table:
    """The quarantine rows of undecodable lines: their fields where the line splits into the
    header's, the rule, and which line it was."""
    import csv

    rows: dict[str, list[str | None]] = {name: [] for name in names}
    for line in bad:
        fields = next(csv.reader([line.text]), [])
        for position, name in enumerate(names):
            value = fields[position] if len(fields) == len(names) else None
            rows[name].append(value or None)
    frame = with_row_ids(pd.DataFrame(rows, dtype=object), spec)
    table = _quarantine_table(frame, [ENCODING_RULE] * len(bad))
    errors = [f"{source} line {line.number}: {line.detail}: {line.text[:200]}" for line in bad]
    return table.append_column(DECODE_ERROR_COLUMN, pa.array(errors, pa.string()))


def _aligned(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with the columns of `schema` in its order (missing ones null), cast to it."""
    columns = [
        table.column(field.name).cast(field.type)
        if field.name in table.column_names
        else pa.nulls(table.num_rows, field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema) if columns else table


def _label_type(classes: np.ndarray) -> pa.DataType:
    """Labels are written as they came: integers, booleans or text."""
    if classes.dtype == bool or all(isinstance(label, bool | np.bool_) for label in classes.tolist()):
        return pa.bool_()
    return pa.int64() if np.issubdtype(classes.dtype, np.integer) else pa.string()


def output_schema(classes: np.ndarray | None) -> pa.Schema:
    """Columns of a predictions file: id, prediction, class probabilities, model and run identity."""
    fields = [pa.field("id", pa.string(), nullable=False)]
    if classes is None:
        fields.append(pa.field(PREDICTION, pa.float64(), nullable=False))
    else:
        fields.append(pa.field(PREDICTION, _label_type(classes), nullable=False))
        # Safe names for any label text (`proba_setosa`, `proba_not_sure`), in the model's class order.
        fields += [pa.field(name, pa.float64(), nullable=False) for name in proba_columns(classes.tolist())]
    fields += [
        pa.field("model_name", pa.dictionary(pa.int32(), pa.string()), nullable=False),
        pa.field("model_version", pa.dictionary(pa.int32(), pa.string()), nullable=False),
        pa.field("run_id", pa.dictionary(pa.int32(), pa.string()), nullable=False),
        pa.field("logical_ts", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
    return pa.schema(fields)


def model_classes(pipeline: Any, spec: ModelSpec) -> np.ndarray | None:
    """The model's class labels (classification), or None (regression)."""
    return np.asarray(pipeline.classes_) if spec.is_classification else None


def _constant(value: str, rows: int) -> pa.DictionaryArray:
    # Dictionary-encoded: one copy of the value instead of one per row (cheap to build and to write).
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), pa.array([value]))


@dataclass(frozen=True)
class Predictions:
    """One batch's predictions, ready to write and to compare."""

    labels: np.ndarray | None  # classification: predicted labels
    values: np.ndarray  # classification: probabilities (rows x classes); regression: predictions


def predict(pipeline: Any, features: pd.DataFrame, classes: np.ndarray | None) -> Predictions:
    """Predict one batch."""
    if classes is None:
        return Predictions(None, np.asarray(pipeline.predict(features), dtype="float64"))
    probabilities = np.asarray(pipeline.predict_proba(features), dtype="float64")
    return Predictions(classes[probabilities.argmax(axis=1)], probabilities)


def prediction_table(
    ids: pd.Series | pa.Array,
    predictions: Predictions,
    classes: np.ndarray | None,
    stamp: RunStamp,
    schema: pa.Schema,
) -> pa.Table:
    """The output rows of one batch; `ids` as read (pandas, written as text) or an Arrow string array."""
    rows = len(ids)
    if not isinstance(ids, pa.Array):
        ids = pa.array(ids.astype(str).to_numpy(), pa.string())
    columns: list[pa.Array] = [ids]
    if classes is None:
        columns.append(pa.array(predictions.values, pa.float64()))
    else:
        columns.append(pa.array(predictions.labels, _label_type(classes)))
        columns += [pa.array(predictions.values[:, k], pa.float64()) for k in range(len(classes))]
    logical_ts = stamp.logical_ts
    if logical_ts.tzinfo is not None:
        # The same instant in UTC: dropping another zone's offset would shift the stamp.
        logical_ts = logical_ts.astimezone(UTC).replace(tzinfo=None)
    timestamp = np.full(rows, np.datetime64(logical_ts, "us"))
    columns += [
        _constant(stamp.model_name, rows),
        _constant(stamp.model_version, rows),
        _constant(stamp.run_id, rows),
        pa.array(timestamp, pa.timestamp("us", tz="UTC")),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _summarise(stats: ScoreStats, predictions: Predictions, classes: np.ndarray | None) -> None:
    if classes is None:
        stats.prediction_sum += float(predictions.values.sum())
        stats.prediction_sq_sum += float(np.square(predictions.values).sum())
        return
    assert predictions.labels is not None
    labels, counts = np.unique(predictions.labels, return_counts=True)
    for label, count in zip(labels, counts, strict=True):
        stats.predicted_labels[str(label)] = stats.predicted_labels.get(str(label), 0) + int(count)
    stats.prediction_sum += float(predictions.values[:, -1].sum())
    stats.probability_counts = _add_counts(
        stats.probability_counts, bucket_counts(predictions.values[:, -1], PROBABILITY_BUCKETS)
    )


@dataclass
class Agreement:
    """How a shadow model's predictions compare with the primary's on the same rows."""

    rows: int = 0
    equal_labels: int = 0
    abs_diff_sum: float = 0.0

    def add(self, primary: Predictions, shadow: Predictions) -> None:
        """Compare one batch."""
        self.rows += len(primary.values)
        if primary.labels is not None and shadow.labels is not None:
            self.equal_labels += int((primary.labels == shadow.labels).sum())
            # Half the L1 distance of the probability vectors: |p - q| of the positive class for
            # two classes, the total variation distance for more.
            self.abs_diff_sum += float(np.abs(primary.values - shadow.values).sum()) / 2
        else:
            self.abs_diff_sum += float(np.abs(primary.values - shadow.values).sum())

    def merge(self, other: Agreement) -> None:
        """Accumulate another file's agreement."""
        self.rows += other.rows
        self.equal_labels += other.equal_labels
        self.abs_diff_sum += other.abs_diff_sum

    def summary(self) -> dict[str, float]:
        """Share of equal labels and mean absolute difference of the probabilities (half their L1 distance)."""
        if not self.rows:
            return {"rows": 0, "label_agreement": float("nan"), "mean_abs_diff": float("nan")}
        return {
            "rows": self.rows,
            "label_agreement": self.equal_labels / self.rows,
            "mean_abs_diff": self.abs_diff_sum / self.rows,
        }


@dataclass
class FileResult:
    """The outcome of scoring one input file into local files."""

    stats: ScoreStats
    output_rows: int
    quarantine_rows: int
    agreement: Agreement | None = None
    # The sorted distinct hashes of the file's ids, compared across the day's files at publish.
    id_hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))


def _quarantine_table(frame: pd.DataFrame, reasons: list[str]) -> pa.Table:
    # Text, so a defect (a word in a number column) survives exactly as it arrived.
    text = frame.astype(object).where(frame.notna(), None).astype("string")
    text[REASONS_COLUMN] = reasons
    return pa.Table.from_pandas(text, preserve_index=False)


_END = object()


def _read_ahead(items: Iterator[_T]) -> Generator[_T, None, None]:
    """`items`, the next one produced on a background thread while the caller works on the current.

    Reading and decoding Parquet and Arrow compute release the GIL, so the next batch is read
    and checked on the other core while the model predicts this one. One batch ahead at most.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-read") as pool:
        upcoming = pool.submit(next, items, _END)
        while (item := upcoming.result()) is not _END:
            upcoming = pool.submit(next, items, _END)
            yield cast(_T, item)


class _Writes:
    """Parquet writes on one background thread, in submission order, one batch in flight.

    Encoding and compressing a batch's output release the GIL, so they overlap the next batch's
    checks and prediction; waiting for the previous batch's writes first bounds the memory.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-write")
        self._pending: list[Future[None]] = []

    def submit(self, writes: list[tuple[pq.ParquetWriter, pa.Table]]) -> None:
        """Queue one batch's tables, after the previous batch's writes have finished."""
        self.wait()
        self._pending = [self._pool.submit(writer.write_table, table) for writer, table in writes]

    def wait(self) -> None:
        """Wait for the queued writes; re-raise a write's error."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        """Wait for the queued writes and stop the thread (always, even when a write failed)."""
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


def score_file(
    input_path: Path,
    fmt: str,
    spec: ModelSpec,
    pipeline: Any,
    stamp: RunStamp,
    output_path: Path,
    quarantine_path: Path,
    *,
    batch_rows: int,
    shadow: tuple[Any, RunStamp, Path] | None = None,
    source_name: str | None = None,
    repeated_elsewhere: RepeatedIds | None = None,
) -> FileResult:
    """Score one file batch by batch into `output_path` (and `quarantine_path` for unscorable rows).

    `shadow`, when given, is (pipeline, stamp, output path) of a second model that scores the same
    scorable rows; its agreement with the primary model is measured on the way. `source_name`
    names the file in quarantined rows of undecodable lines (default: the local file's name).
    `repeated_elsewhere`: ids that other input files of the same day hold too; their rows break
    ``unique:<id>`` here as the file's own repeated ids do.
    """
    started = time.perf_counter()
    classes = model_classes(pipeline, spec)
    schema = output_schema(classes)
    stats = ScoreStats()
    agreement = Agreement() if shadow else None
    writer = pq.ParquetWriter(output_path, schema, compression="snappy")
    shadow_writer = None
    shadow_schema = None
    shadow_classes = None
    if shadow:
        shadow_classes = model_classes(shadow[0], spec)
        shadow_schema = output_schema(shadow_classes)
        shadow_writer = pq.ParquetWriter(shadow[2], shadow_schema, compression="snappy")
    quarantine_writer: pq.ParquetWriter | None = None
    writes = _Writes()
    batches: Generator[_Batch, None, None] | None = None
    try:
        encoding_policy = spec.validation.default_policy
        if fmt == "csv":
            scan = scan_csv_lines(
                input_path, output_path.with_name("readable.csv"), keep_bad=encoding_policy == "warn"
            )
            if scan.bad_lines and encoding_policy == "fail":
                first = scan.bad_lines[0]
                raise ScoringRejected(
                    f"{input_path.name}: {len(scan.bad_lines)} line(s) are not UTF-8 text (rule {ENCODING_RULE},"
                    f" policy fail), first line {first.number}: {first.detail}"
                )
            readable = scan.readable_copy or input_path
        else:
            scan, readable = LineScan([], None), input_path
        # From the file's schema, not its first batch: an empty file lacking columns is refused too.
        try:
            input_schema = pq.read_schema(readable) if fmt == "parquet" else None
        except READ_ERRORS as exc:
            empty = " (the file is empty)" if readable.stat().st_size == 0 else ""
            raise UnreadableInput(f"not a readable parquet file{empty}: {exc}") from exc
        names = input_schema.names if input_schema is not None else input_columns(readable, fmt)
        check_columns(list(names), spec, str(input_path.name))
        try:
            ids = file_ids(readable, fmt, spec, batch_rows)
        except READ_ERRORS as exc:
            raise UnreadableInput(str(exc)) from exc
        duplicates = ids.repeated if repeated_elsewhere is None else ids.repeated.union(repeated_elsewhere)
        if scan.bad_lines and encoding_policy == "warn":
            # Kept in the readable copy (decoded with U+FFFD): scored and counted as its batches are read.
            stats.warned_by_rule[ENCODING_RULE] = len(scan.bad_lines)
        elif scan.bad_lines:
            bad_rows = _bad_line_rows(scan.bad_lines, list(names), spec, source_name or input_path.name)
            quarantine_writer = pq.ParquetWriter(quarantine_path, bad_rows.schema, compression="snappy")
            quarantine_writer.write_table(bad_rows)
            stats.rows_in += len(scan.bad_lines)
            stats.rows_quarantined += len(scan.bad_lines)
            stats.quarantined_by_rule[ENCODING_RULE] = len(scan.bad_lines)
        if input_schema is not None and arrow_path_applies(input_schema, spec):
            batches = _read_ahead(_arrow_batches(readable, input_schema, spec, batch_rows, duplicates))
        else:
            batches = (
                _Batch(with_row_ids(frame, spec), spec, duplicate_ids=duplicates)
                for frame in iter_batches(readable, fmt, batch_rows)
            )
        for batch in batches:
            stats.rows_in += batch.rows
            check = batch.check
            if check.failed_by_rule:
                broken = ", ".join(
                    f"{rule} ({count} rows)" for rule, count in sorted(check.failed_by_rule.items())
                )
                raise ScoringRejected(f"{input_path.name}: rows break rules whose policy is fail: {broken}")
            for source, target in (
                (check.quarantined_by_rule, stats.quarantined_by_rule),
                (check.warned_by_rule, stats.warned_by_rule),
            ):
                for rule, count in source.items():
                    target[rule] = target.get(rule, 0) + count
            if check.quarantine.any():
                bad = batch.quarantined()
                table = _quarantine_table(
                    bad, [";".join(check.reasons[int(i)]) for i in np.flatnonzero(check.quarantine)]
                )
                if quarantine_writer is None:
                    quarantine_writer = pq.ParquetWriter(quarantine_path, table.schema, compression="snappy")
                quarantine_writer.write_table(_aligned(table, quarantine_writer.schema))
                stats.rows_quarantined += len(bad)
            scorable = batch.scorable()
            if scorable is None:
                continue
            features = scorable.features
            for name, nulls in scorable.nulls.items():
                stats.nulls_by_feature[name] = stats.nulls_by_feature.get(name, 0) + nulls
            predicting = time.perf_counter()
            predictions = predict(pipeline, features, classes)
            stats.observe_batch(time.perf_counter() - predicting)
            outputs = [(writer, prediction_table(scorable.ids, predictions, classes, stamp, schema))]
            stats.rows_scored += len(features)
            _summarise(stats, predictions, classes)
            if shadow and shadow_writer is not None and agreement is not None and shadow_schema is not None:
                shadow_predictions = predict(shadow[0], features, shadow_classes)
                outputs.append(
                    (
                        shadow_writer,
                        prediction_table(
                            scorable.ids, shadow_predictions, shadow_classes, shadow[1], shadow_schema
                        ),
                    )
                )
                agreement.add(predictions, shadow_predictions)
            writes.submit(outputs)
    finally:
        # Stop the reader now (not when an exception's traceback lets go of it), then the writes.
        if batches is not None:
            batches.close()
        try:
            writes.close()
        finally:
            writer.close()
            if shadow_writer is not None:
                shadow_writer.close()
            if quarantine_writer is not None:
                quarantine_writer.close()
    stats.seconds = time.perf_counter() - started
    return FileResult(stats, stats.rows_scored, stats.rows_quarantined, agreement, ids.distinct)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a local file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
