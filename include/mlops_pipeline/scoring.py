"""Batch scoring of one input file: stream it in record batches, check each row, predict, write Parquet.

Memory stays bounded by the batch size whatever the file's size: the input is read with
`pyarrow` batch by batch (Parquet row groups or CSV blocks), and the output is appended batch by
batch with a `ParquetWriter`. Rows that cannot be scored as the spec says (wrong type, null,
out of range, unseen category) are never silently scored or dropped: the `quarantine` policy
moves them to a quarantine file with the rules they broke, `fail` stops the file, `warn` scores
them and counts them.

The output is a pure function of the input, the model and the run's identity (id, logical
timestamp): the same input and model version give byte-identical Parquet.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_pipeline.spec import ModelSpec, Policy
from mlops_pipeline.training import features_frame

REASONS_COLUMN = "_reasons"
PREDICTION = "prediction"


class ScoringRejected(ValueError):
    """Input that cannot be scored as the spec says (missing columns, a `fail` rule broken)."""


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreStats:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


@dataclass(frozen=True)
class RowCheck:
    """Which rows of a batch broke which rules, split by the rules' policies."""

    quarantine: np.ndarray  # bool per row
    reasons: dict[int, list[str]]  # row position -> quarantine rules it broke
    quarantined_by_rule: dict[str, int]
    warned_by_rule: dict[str, int]
    failed_by_rule: dict[str, int]


def required_columns(spec: ModelSpec) -> list[str]:
    """The columns an input file must have: the id and every feature."""
    return [spec.id_column, *spec.features]


def check_columns(columns: list[str], spec: ModelSpec, source: str) -> None:
    """Refuse a file that lacks columns the model needs (policy: `validation.schema_policy`)."""
    if missing := [name for name in required_columns(spec) if name not in columns]:
        raise ScoringRejected(
            f"{source} lacks column(s) {missing} that model {spec.name} needs; it has {sorted(columns)}"
        )


def _numeric(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Parsed numbers and a mask of values that are present but not numbers."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("float64"), np.zeros(len(values), dtype=bool)
    parsed = pd.to_numeric(values, errors="coerce")
    return parsed.astype("float64"), (values.notna() & parsed.isna()).to_numpy()


def check_rows(frame: pd.DataFrame, spec: ModelSpec) -> RowCheck:
    """Check every row of a batch against the spec's feature schema, vectorised per column."""
    default = spec.validation.default_policy
    broken: list[tuple[str, Policy, np.ndarray]] = []
    ids = frame[spec.id_column]
    broken.append((f"not_null:{spec.id_column}", default, ids.isna().to_numpy()))
    for name, feature in spec.features.items():
        policy: Policy = feature.on_violation or default
        values = frame[name]
        if feature.type in ("number", "integer"):
            parsed, unparseable = _numeric(values)
            nulls = parsed.isna().to_numpy() & ~unparseable
            broken.append((f"type:{name}", policy, unparseable))
            if feature.type == "integer":
                fractional = ~np.isnan(parsed.to_numpy()) & (np.mod(parsed.to_numpy(), 1.0) != 0)
                broken.append((f"type:{name}", policy, fractional))
            out_of_range = np.zeros(len(frame), dtype=bool)
            if feature.min is not None:
                out_of_range |= (parsed < feature.min).to_numpy()
            if feature.max is not None:
                out_of_range |= (parsed > feature.max).to_numpy()
            broken.append((f"range:{name}", policy, out_of_range))
        elif feature.type == "boolean":
            text = values.astype("string").str.strip().str.lower()
            nulls = values.isna().to_numpy()
            broken.append(
                (
                    f"type:{name}",
                    policy,
                    (~nulls) & ~text.isin(["true", "false", "1", "0", "1.0", "0.0"]).to_numpy(),
                )
            )
        else:
            nulls = values.isna().to_numpy()
            # As text, like `features_frame` and ingest: a category sent as a number (1) is "1".
            allowed = values.astype(str).isin(list(feature.allowed or [])).to_numpy()
            broken.append((f"allowed:{name}", policy, ~nulls & ~allowed))
        if not feature.nullable:
            broken.append((f"not_null:{name}", policy, nulls))

    quarantine = np.zeros(len(frame), dtype=bool)
    reasons: dict[int, list[str]] = {}
    counts: dict[Policy, dict[str, int]] = {"quarantine": {}, "warn": {}, "fail": {}}
    for rule, policy, mask in broken:
        hits = int(mask.sum())
        if not hits:
            continue
        counts[policy][rule] = counts[policy].get(rule, 0) + hits
        if policy == "quarantine":
            quarantine |= mask
            for position in np.flatnonzero(mask):
                reasons.setdefault(int(position), []).append(rule)
    return RowCheck(quarantine, reasons, counts["quarantine"], counts["warn"], counts["fail"])


def input_columns(path: Path, fmt: str) -> list[str]:
    """The column names of an input file, read from its footer (Parquet) or header (CSV)."""
    if fmt == "parquet":
        return list(pq.ParquetFile(path).schema_arrow.names)
    from pyarrow import csv

    with csv.open_csv(path) as reader:
        return list(reader.schema.names)


def iter_batches(path: Path, fmt: str, batch_rows: int) -> Iterator[pd.DataFrame]:
    """The file's rows, `batch_rows` at a time, as pandas frames (CSV values stay text)."""
    if fmt == "parquet":
        # pre_buffer=False: with pre-buffering, Arrow keeps the raw bytes of every row group read
        # so far, so memory grew with the file (about its compressed size) instead of the batch.
        parquet = pq.ParquetFile(path, pre_buffer=False)
        for batch in parquet.iter_batches(batch_size=batch_rows):
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
    for batch in reader:
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


def _label_type(classes: np.ndarray) -> pa.DataType:
    return pa.int64() if np.issubdtype(classes.dtype, np.integer) else pa.string()


def output_schema(classes: np.ndarray | None) -> pa.Schema:
    """Columns of a predictions file: id, prediction, class probabilities, model and run identity."""
    fields = [pa.field("id", pa.string(), nullable=False)]
    if classes is None:
        fields.append(pa.field(PREDICTION, pa.float64(), nullable=False))
    else:
        fields.append(pa.field(PREDICTION, _label_type(classes), nullable=False))
        fields += [pa.field(f"proba_{label}", pa.float64(), nullable=False) for label in classes]
    fields += [
        pa.field("model_name", pa.dictionary(pa.int32(), pa.string()), nullable=False),
        pa.field("model_version", pa.dictionary(pa.int32(), pa.string()), nullable=False),
        pa.field("run_id", pa.dictionary(pa.int32(), pa.string()), nullable=False),
        pa.field("logical_ts", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
    return pa.schema(fields)


def model_classes(pipeline: Any, spec: ModelSpec) -> np.ndarray | None:
    """The model's class labels (classification), or None (regression)."""
    return np.asarray(pipeline.classes_) if spec.task == "classification" else None


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
    ids: pd.Series, predictions: Predictions, classes: np.ndarray | None, stamp: RunStamp, schema: pa.Schema
) -> pa.Table:
    """The output rows of one batch."""
    rows = len(ids)
    columns: list[pa.Array] = [pa.array(ids.astype(str).to_numpy(), pa.string())]
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
    labels, counts = np.unique(predictions.labels, return_counts=True)
    for label, count in zip(labels, counts, strict=True):
        stats.predicted_labels[str(label)] = stats.predicted_labels.get(str(label), 0) + int(count)
    stats.prediction_sum += float(predictions.values[:, -1].sum())


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
            self.abs_diff_sum += float(np.abs(primary.values[:, -1] - shadow.values[:, -1]).sum())
        else:
            self.abs_diff_sum += float(np.abs(primary.values - shadow.values).sum())

    def merge(self, other: Agreement) -> None:
        """Accumulate another file's agreement."""
        self.rows += other.rows
        self.equal_labels += other.equal_labels
        self.abs_diff_sum += other.abs_diff_sum

    def summary(self) -> dict[str, float]:
        """Share of equal labels and mean absolute difference (of the positive-class probability)."""
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


def _quarantine_table(frame: pd.DataFrame, reasons: list[str]) -> pa.Table:
    # Text, so a defect (a word in a number column) survives exactly as it arrived.
    text = frame.astype(object).where(frame.notna(), None).astype("string")
    text[REASONS_COLUMN] = reasons
    return pa.Table.from_pandas(text, preserve_index=False)


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
) -> FileResult:
    """Score one file batch by batch into `output_path` (and `quarantine_path` for unscorable rows).

    `shadow`, when given, is (pipeline, stamp, output path) of a second model that scores the same
    scorable rows; its agreement with the primary model is measured on the way.
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
    try:
        # From the file's schema, not its first batch: an empty file lacking columns is refused too.
        check_columns(input_columns(input_path, fmt), spec, str(input_path.name))
        for batch in iter_batches(input_path, fmt, batch_rows):
            stats.rows_in += len(batch)
            check = check_rows(batch, spec)
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
                bad = batch[check.quarantine]
                table = _quarantine_table(
                    bad, [";".join(check.reasons[int(i)]) for i in np.flatnonzero(check.quarantine)]
                )
                if quarantine_writer is None:
                    quarantine_writer = pq.ParquetWriter(quarantine_path, table.schema, compression="snappy")
                quarantine_writer.write_table(table.cast(quarantine_writer.schema))
                stats.rows_quarantined += len(bad)
                batch = batch[~check.quarantine]
            if batch.empty:
                continue
            features = features_frame(batch, spec)
            for name, nulls in features.isna().sum().items():
                stats.nulls_by_feature[str(name)] = stats.nulls_by_feature.get(str(name), 0) + int(nulls)
            predictions = predict(pipeline, features, classes)
            writer.write_table(prediction_table(batch[spec.id_column], predictions, classes, stamp, schema))
            stats.rows_scored += len(batch)
            _summarise(stats, predictions, classes)
            if shadow and shadow_writer is not None and agreement is not None and shadow_schema is not None:
                shadow_predictions = predict(shadow[0], features, shadow_classes)
                shadow_writer.write_table(
                    prediction_table(
                        batch[spec.id_column], shadow_predictions, shadow_classes, shadow[1], shadow_schema
                    )
                )
                agreement.add(predictions, shadow_predictions)
    finally:
        writer.close()
        if shadow_writer is not None:
            shadow_writer.close()
        if quarantine_writer is not None:
            quarantine_writer.close()
    stats.seconds = time.perf_counter() - started
    return FileResult(stats, stats.rows_scored, stats.rows_quarantined, agreement)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a local file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
