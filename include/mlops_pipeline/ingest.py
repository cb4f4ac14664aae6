"""Ingest: read the source batches of a data window and freeze them as an immutable snapshot.

The snapshot is the window's rows as they arrived (every value kept as text, so validation sees
exactly what the source sent), written as one Parquet file of string columns whose content hash
*is* the dataset's identity downstream: MLflow lineage, model version tags, promotion history.
Snapshots are content-addressed (`raw/<model>/ds=<as_of>/<sha>/`), so a rerun over unchanged data
reuses the existing snapshot and a changed source makes a new one beside it: nothing is ever
overwritten.

**The content hash** (:func:`content_sha256`) is defined on the values, not on the Parquet bytes,
so it does not depend on the Parquet writer's version, compression or row groups: the sha256 of

1. the bytes ``mlops-snapshot-v1\n``;
2. for each column, in order: the length of its name's UTF-8 bytes (int64, little-endian), the name,
   the number of rows (int64), each value's UTF-8 length (int64, little-endian; -1 for a missing
   value), then every present value's UTF-8 bytes, concatenated.

Reading a window streams it: each source file is parsed on its own (CSV by Arrow's reader, all
columns as text; Parquet through pandas' text form of its values) and spilled to a local Arrow
file, so memory holds one source file and the snapshot is assembled from the spilled parts.
Snapshots written before the Parquet form (`snapshot.csv`, hashed over its bytes) are still read.

**Defective files.** A file that cannot be parsed at all (empty, truncated, compressed, HTML, random
bytes, a header that is not UTF-8 or shares no column with the spec) raises
:class:`UnreadableSourceError` naming the file, its day and the reason; the step refuses the run
(no retry) and :func:`record_unreadable` keeps a create-only record under `quarantine/`. A CSV whose
header is good but some lines are not UTF-8 text (or hold NUL bytes) is read without those lines,
and each comes back as one row at the end of its file's rows: the fields of the line decoded with
U+FFFD for the bad bytes (when it splits into the header's fields; else all missing), and the
column :data:`~mlops_pipeline.rules.DECODE_ERROR_COLUMN` naming the file, the line number and the
bad byte. Validation's ``encoding`` rule then treats those rows under the default policy (usually
quarantine), so one bad line in a thousand no longer refuses a whole batch. Every value stays valid
UTF-8, so the content hash is defined as before, and deterministic; files without a bad line read
exactly as before (no extra column, same hash). One limit: a bad line inside a quoted value that
spans lines cuts that record; what is left of it is then refused or quarantined by the other rules.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from mlops_pipeline import layout
from mlops_pipeline.rules import DECODE_ERROR_COLUMN, with_row_ids
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.store import ObjectExistsError, ObjectStore, glob_keys

log = logging.getLogger(__name__)

CONTENT_HASH_VERSION = b"mlops-snapshot-v1\n"
# Rows per Parquet row group of a snapshot: later tasks read it a group (and a column) at a time.
SNAPSHOT_ROW_GROUP_ROWS = 262_144
_UTF8_BOM = b"\xef\xbb\xbf"
NUL = b"\x00"


class NoSourceDataError(RuntimeError):
    """The data window has no source files at all."""


# The rule an unreadable file breaks, as named in refusals and records.
READABLE_RULE = "readable"


class SourceParseError(ValueError):
    """The bytes of one file cannot be parsed as the format says; the message says why (no file name:
    the caller adds it)."""


class UnreadableSourceError(ValueError):
    """One source file of a day cannot be read; names the file, the day and the reason."""

    def __init__(self, kind: str, source: str, day: str, reason: str, sha256: str, size: int) -> None:
        self.kind = kind
        self.source = source
        self.day = day
        self.reason = reason
        self.sha256 = sha256
        self.size = size
        super().__init__(
            f"{kind} file {source} of {day} cannot be read (rule {READABLE_RULE}): {reason} "
            f"({self.size} bytes, sha256 {self.sha256[:16]}…)"
        )

    @classmethod
    def of_bytes(cls, kind: str, source: str, day: str, reason: str, data: bytes) -> UnreadableSourceError:
        """The error for a file whose bytes are in memory."""
        return cls(kind, source, day, reason, hashlib.sha256(data).hexdigest(), len(data))


def record_unreadable(store: ObjectStore, model: str, error: UnreadableSourceError) -> str:
    """Record an unreadable file under `quarantine/` (create-only, keyed by its bytes' sha256); its URI.

    The file itself stays where it landed: the record names it, its size and hash, and why it was
    refused. The same bytes refused again keep the first record (it says the same).
    """
    key = layout.unreadable_record_key(model, error.kind, error.day, error.sha256)
    body = {
        "model": model,
        "kind": error.kind,
        "day": error.day,
        "file": error.source,
        "bytes": error.size,
        "sha256": error.sha256,
        "rule": READABLE_RULE,
        "reason": error.reason,
        "what_to_do": "replace or remove the file at its source, then rerun the day",
    }
    with contextlib.suppress(ObjectExistsError):
        store.create_only(key, json.dumps(body, indent=2, sort_keys=True).encode())
    return store.uri(key)


@dataclass(frozen=True)
class BadLine:
    """One physical line of a text file that is not UTF-8 text (or holds a NUL byte)."""

    number: int  # 1-based, the header is line 1
    detail: str  # what is wrong: the first bad byte and its position
    text: str  # the line decoded with U+FFFD for bad bytes, without its line break


def bad_line(number: int, raw: bytes) -> BadLine | None:
    """The line as a :class:`BadLine` when it is not clean UTF-8 text, else None."""
    body = raw.rstrip(b"\r\n")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        detail = f"byte 0x{body[exc.start]:02x} at position {exc.start + 1} is not UTF-8 text"
    else:
        if b"\x00" not in body:
            return None
        detail = f"NUL byte at position {body.index(NUL) + 1}"
    return BadLine(number, detail, body.decode("utf-8", "replace").replace("\x00", "\ufffd"))


def _is_clean_text(data: bytes) -> bool:
    """Whether the whole file is UTF-8 text without NUL bytes (the fast path: one C-speed pass)."""
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _sniff(data: bytes) -> str:
    """A hint for an operator about what a file that is not CSV text seems to be."""
    head = data[:512].lstrip()
    if data[:2] == b"\x1f\x8b":
        return "; it is gzip-compressed (sources are read uncompressed)"
    if data[:4] == b"PAR1":
        return "; it is a Parquet file, but the source format is csv"
    if data[:4] == b"PK\x03\x04":
        return "; it is a zip archive (an Excel workbook?), not CSV"
    if head[:1] == b"<":
        return "; it looks like an HTML or XML page (an error page saved as data?)"
    return ""


def split_bad_lines(data: bytes) -> tuple[bytes, list[BadLine]]:
    """The file without its undecodable lines, and those lines; refuses a file whose header is bad.

    Raises SourceParseError when the first line (the header) is not UTF-8 text: nothing of such a
    file can be trusted to be CSV.
    """
    if _is_clean_text(data):
        return data, []
    kept: list[bytes] = []
    bad: list[BadLine] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = bad_line(number, raw)
        if line is None:
            kept.append(raw)
        elif number == 1:
            raise SourceParseError(f"its header line is not CSV text ({line.detail}){_sniff(data)}")
        else:
            bad.append(line)
    return b"\n".join(kept), bad


@dataclass(frozen=True)
class SnapshotManifest:
    """What a snapshot holds; stored as `manifest.json` beside the data."""

    model: str
    as_of: str
    window_start: str
    window_days: int
    rows: int
    columns: list[str]
    sha256: str
    data_uri: str
    source_files: list[str]
    missing_days: list[str]

    def to_json(self) -> bytes:
        """Stable JSON bytes."""
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SnapshotManifest:
        """Parse a stored manifest."""
        return cls(**json.loads(data))


def window_dates(as_of: date, window_days: int) -> list[date]:
    """The `window_days` days ending with `as_of`, oldest first."""
    if window_days < 1:
        raise ValueError(f"window_days must be >= 1, got {window_days}")
    return [as_of - timedelta(days=offset) for offset in range(window_days - 1, -1, -1)]


def split_source_uri(uri: str, default_store: ObjectStore) -> tuple[ObjectStore, str]:
    """A store and key pattern for a source URI: relative to the default store, or absolute."""
    parsed = urlparse(uri)
    if not parsed.scheme:
        return default_store, uri.lstrip("/")
    # The store root is everything before the first templated or wildcard path segment.
    cut = min(index for index in (uri.find(ch) for ch in "{*?[") if index >= 0)  # "{ds}" is always there
    root, _, _ = uri[:cut].rpartition("/")
    pattern = uri[len(root) :].lstrip("/")
    return default_store.open_uri(root), pattern


def read_source_file(data: bytes, fmt: str, spec: ModelSpec, source: str = "") -> pa.Table:
    """One source file's rows with every value as text (string columns; only empty cells missing),
    with the derived row id first when the spec has no id column.

    Raises SourceParseError when the file cannot be parsed, or when it shares no column with the
    spec (another table, an error page): see the module docstring. `source` names the file in the
    rows of undecodable lines.
    """
    table = read_text_table(data, fmt, source)
    if not set(table.column_names) & set(spec.columns):
        hint = ""
        if len(table.column_names) == 1 and (
            sep := next((c for c in ";\t|" if c in table.column_names[0]), None)
        ):
            hint = f"; it seems to be separated by {sep!r}, and sources must be comma-separated"
        shown = ", ".join(repr(name) for name in table.column_names[:5]) or "no columns"
        raise SourceParseError(
            f"none of the columns of model {spec.name} is in it (it has {shown}){hint or _sniff(data)}"
        )
    if spec.derived_row_id and spec.id_column not in table.column_names:
        if missing := [name for name in spec.features if name not in table.column_names]:
            raise SourceParseError(
                f"it lacks feature column(s) {missing}, from which the row id of {spec.name} is computed"
            )
        frame = with_row_ids(table.to_pandas(), spec)
        table = _text_table(frame)
    return table


def read_text_table(data: bytes, fmt: str, source: str = "") -> pa.Table:
    """A CSV or Parquet file's rows as string columns, as every reader of source files sees them.

    CSV: see `_read_csv_text` (undecodable lines become rows naming `source` and the line).
    Parquet: pandas' text form of the typed values. Raises SourceParseError when it cannot be parsed.
    """
    if fmt == "csv":
        return _read_csv_text(data, source)
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        empty = " (the file is empty)" if not data else ""
        raise SourceParseError(f"not a readable Parquet file{empty}: {exc}") from exc
    # pandas' text form of typed values (1.0 -> "1.0", True -> "True"), as every source reads.
    return _text_table(frame.astype("string").astype(object))


def _text_table(frame: pd.DataFrame) -> pa.Table:
    schema = pa.schema([(str(name), pa.string()) for name in frame.columns])
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


def _read_csv_text(data: bytes, source: str = "") -> pa.Table:
    """CSV as text (see `_parse_csv_text`), with undecodable lines as rows that say so.

    Raises SourceParseError for a file that cannot be parsed.
    """
    body = data.removeprefix(_UTF8_BOM)
    if not body.strip():
        raise SourceParseError("the file is empty" if not body else "the file holds only blank lines")
    body, bad = split_bad_lines(body)
    try:
        table = _parse_csv_text(body)
    except (pa.ArrowException, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SourceParseError(f"not readable as CSV: {exc}{_sniff(data)}") from exc
    if not bad:
        return table
    return _with_bad_lines(table, bad, source)


def _with_bad_lines(table: pa.Table, bad: list[BadLine], source: str) -> pa.Table:
    """`table` with one row per undecodable line appended and the decode-error column beside."""
    names = table.column_names
    rows: dict[str, list[str | None]] = {name: [] for name in names}
    for line in bad:
        fields = next(csv.reader([line.text]), [])
        usable = len(fields) == len(names)
        for position, name in enumerate(names):
            value = fields[position] if usable else None
            rows[name].append(value if value else None)
    place = f"{source} " if source else ""
    errors = [None] * table.num_rows + [
        f"{place}line {line.number}: {line.detail}: {line.text[:200]}" for line in bad
    ]
    extra = pa.table({name: pa.array(values, pa.string()) for name, values in rows.items()})
    combined = pa.concat_tables([table, extra.select(names)]) if names else table
    return combined.append_column(DECODE_ERROR_COLUMN, pa.array(errors, pa.string()))


def _parse_csv_text(body: bytes) -> pa.Table:
    """CSV as text: Arrow's multi-threaded reader, with pandas' reader where Arrow's would differ.

    Both give the same table (a test holds them equal): every column text, empty cells missing,
    blank lines skipped, a UTF-8 byte order mark dropped. pandas handles what Arrow refuses or
    reads differently: duplicate header names (pandas renames them), rows with too few or too
    many fields.
    """
    header = next(
        csv.reader(io.StringIO(body[: body.find(b"\n") + 1 or len(body)].decode("utf-8", "replace"))), []
    )
    if header and len(set(header)) == len(header) and all(header):
        try:
            return pa_csv.read_csv(
                io.BytesIO(body),
                parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                convert_options=pa_csv.ConvertOptions(
                    column_types={name: pa.string() for name in header},
                    strings_can_be_null=True,
                    null_values=[""],
                    quoted_strings_can_be_null=True,
                ),
            )
        except pa.ArrowInvalid:
            pass
    frame = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False, na_values=[""])
    return _text_table(frame)


@dataclass(frozen=True)
class WindowParts:
    """A window's source files, each parsed and spilled to a local Arrow file."""

    parts: list[Path]
    columns: list[str]  # every file's columns, in order of first appearance
    rows: int
    files: list[str]
    missing_days: list[str]


def stage_window(spec: ModelSpec, store: ObjectStore, days: list[date], folder: Path) -> WindowParts:
    """Parse every source file of `days` into `folder`, one at a time (memory holds one file).

    Raises NoSourceDataError when no day has a file, UnreadableSourceError at the first file that
    cannot be parsed (naming it and its day).
    """
    source_store, pattern = split_source_uri(spec.source.uri, store)
    parts: list[Path] = []
    columns: dict[str, None] = {}
    files: list[str] = []
    missing: list[str] = []
    rows = 0
    started = time.perf_counter()
    for day in days:
        keys = glob_keys(source_store, pattern.format(ds=day.isoformat()))
        if not keys:
            missing.append(day.isoformat())
        for key in keys:
            files.append(source_store.uri(key))
            data = source_store.read_bytes(key)
            try:
                # The key, not the URI, in rows of undecodable lines: the hash must not depend on the store's root.
                table = read_source_file(data, spec.source.format, spec, key)
            except SourceParseError as exc:
                raise UnreadableSourceError.of_bytes(
                    "source", source_store.uri(key), day.isoformat(), str(exc), data
                ) from exc
            del data
            part = folder / f"part-{len(parts):05d}.arrow"
            with pa.OSFile(str(part), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            parts.append(part)
            columns.update(dict.fromkeys(table.column_names))
            rows += table.num_rows
            elapsed = time.perf_counter() - started
            log.info(
                "read %s: %d rows (%d rows so far, %.0f rows/s)",
                source_store.uri(key),
                table.num_rows,
                rows,
                rows / elapsed if elapsed else 0.0,
            )
    if not parts:
        raise NoSourceDataError(
            f"no source files for {spec.name} between {days[0]} and {days[-1]} "
            f"(pattern {spec.source.uri!r} under {source_store.root_uri})"
        )
    return WindowParts(parts, list(columns), rows, files, missing)


def _read_part(path: Path, columns: list[str]) -> pa.Table:
    """A spilled part in the window's column order; columns it lacks are missing values."""
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    for name in columns:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, pa.string()))
    return table.select(columns)


def write_snapshot_file(window: WindowParts, path: Path) -> None:
    """Assemble the spilled parts into one Parquet file (string columns, one part in memory)."""
    schema = pa.schema([(name, pa.string()) for name in window.columns])
    with pq.ParquetWriter(str(path), schema) as writer:
        for part in window.parts:
            writer.write_table(_read_part(part, window.columns), row_group_size=SNAPSHOT_ROW_GROUP_ROWS)


def _value_bytes(chunk: pa.Array) -> memoryview:
    """The UTF-8 bytes of a string array's present values, concatenated (no copy)."""
    present = chunk.drop_null() if chunk.null_count else chunk
    if len(present) == 0:
        return memoryview(b"")
    offset_type = np.int64 if pa.types.is_large_string(present.type) else np.int32
    _, offsets_buffer, data_buffer = present.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[
        present.offset : present.offset + len(present) + 1
    ]
    return memoryview(data_buffer)[int(offsets[0]) : int(offsets[-1])]


def _column_digest(digest: Any, name: str, column: pa.ChunkedArray) -> None:
    encoded = name.encode()
    digest.update(np.int64(len(encoded)).astype("<i8").tobytes() + encoded)
    digest.update(np.int64(len(column)).astype("<i8").tobytes())
    for chunk in column.chunks:
        lengths = pc.fill_null(pc.binary_length(chunk).cast(pa.int64()), -1)
        digest.update(lengths.to_numpy(zero_copy_only=False).astype("<i8").tobytes())
    for chunk in column.chunks:
        digest.update(_value_bytes(chunk))


def content_sha256(columns: Iterator[tuple[str, pa.ChunkedArray]]) -> str:
    """The snapshot's content hash over (name, string column) pairs, in order (see the module docstring)."""
    digest = hashlib.sha256(CONTENT_HASH_VERSION)
    for name, column in columns:
        _column_digest(digest, name, column)
    return digest.hexdigest()


def file_content_sha256(path: Path) -> str:
    """The content hash of a snapshot Parquet file, read one column at a time (bounded memory)."""
    parquet = pq.ParquetFile(str(path))
    names = parquet.schema_arrow.names
    return content_sha256((name, parquet.read(columns=[name]).column(0)) for name in names)


def table_content_sha256(table: pa.Table) -> str:
    """The content hash of a table of string columns."""
    return content_sha256(zip(table.column_names, table.columns, strict=True))


def ingest_window(spec: ModelSpec, store: ObjectStore, as_of: date, window_days: int) -> SnapshotManifest:
    """Snapshot the window ending `as_of`; reuse the existing snapshot when the content is unchanged."""
    days = window_dates(as_of, window_days)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlops-ingest-") as tmp:
        window = stage_window(spec, store, days, Path(tmp))
        local = Path(tmp) / "snapshot.parquet"
        write_snapshot_file(window, local)
        digest = file_content_sha256(local)
        data_key = layout.snapshot_data_key(spec.name, as_of, digest)
        # Same content hash means the snapshot is already there (a rerun): never rewrite it.
        if not store.exists(data_key):
            store.upload_file(local, data_key)
    log.info(
        "snapshot of %s: %d rows from %d files in %.1f s, sha256 %s",
        spec.name,
        window.rows,
        len(window.files),
        time.perf_counter() - started,
        digest,
    )
    manifest_key = layout.snapshot_manifest_key(spec.name, as_of, digest)
    manifest = SnapshotManifest(
        model=spec.name,
        as_of=as_of.isoformat(),
        window_start=days[0].isoformat(),
        window_days=window_days,
        rows=window.rows,
        columns=window.columns,
        sha256=digest,
        data_uri=store.uri(data_key),
        source_files=window.files,
        missing_days=window.missing_days,
    )
    try:
        # Manifest last: a snapshot folder without a manifest is an interrupted ingest.
        store.create_only(manifest_key, manifest.to_json())
    except ObjectExistsError:
        manifest = SnapshotManifest.from_json(store.read_bytes(manifest_key))
    return manifest


class SnapshotIntegrityError(ValueError):
    """A snapshot's content does not match the sha256 its manifest (or a model's lineage) records."""


def read_snapshot_key(store: ObjectStore, key: str, sha256: str) -> pa.Table:
    """A stored snapshot's rows as string columns, after checking them against `sha256`.

    Parquet snapshots are checked by their content hash; snapshots of the earlier CSV form by the
    sha256 of their bytes, as they were recorded.
    """
    with tempfile.TemporaryDirectory(prefix="mlops-snapshot-") as tmp:
        local = Path(tmp) / "snapshot"
        store.download_file(key, local)
        if key.endswith(".csv"):
            data = local.read_bytes()
            actual = hashlib.sha256(data).hexdigest()
            table = _read_csv_text(data) if actual == sha256 else None
        else:
            # Read once and hashed in memory: the rows are held for the caller either way.
            table = pq.read_table(str(local))
            actual = table_content_sha256(table)
            table = table if actual == sha256 else None
    if table is None:
        raise SnapshotIntegrityError(
            f"snapshot {store.uri(key)} does not match its sha256 {sha256} (found {actual})"
        )
    return table


def snapshot_key_of_uri(store: ObjectStore, data_uri: str) -> str | None:
    """The key of a snapshot URI inside `store`, or None when it lies elsewhere."""
    prefix = store.root_uri.rstrip("/") + "/"
    return unquote(data_uri[len(prefix) :]) if data_uri.startswith(prefix) else None


def read_snapshot_table(store: ObjectStore, manifest: SnapshotManifest) -> pa.Table:
    """Load a snapshot's rows (string columns) and check them against the manifest's hash."""
    key = snapshot_key_of_uri(store, manifest.data_uri) or layout.snapshot_data_key(
        manifest.model, date.fromisoformat(manifest.as_of), manifest.sha256
    )
    return read_snapshot_key(store, key, manifest.sha256)


def read_snapshot(store: ObjectStore, manifest: SnapshotManifest) -> pd.DataFrame:
    """Load a snapshot's rows as a text frame (object columns, missing values as NaN), checked."""
    return text_frame(read_snapshot_table(store, manifest))


def text_frame(table: pa.Table) -> pd.DataFrame:
    """A table of string columns as pandas text: str objects, missing values as NaN (as read_csv gives)."""
    frame = table.to_pandas()
    return frame.astype(object).where(frame.notna(), np.nan)
