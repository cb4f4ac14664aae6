"""Ingest: read the source batches of a data window and freeze them as an immutable snapshot.

The snapshot is the window's rows as they arrived (all values kept as text, so validation sees
exactly what the source sent), written as one canonical CSV whose sha256 *is* the dataset's
identity downstream: MLflow lineage, model version tags, promotion history. Snapshots are
content-addressed (`raw/<model>/ds=<as_of>/<sha>/`), so a rerun over unchanged data reuses the
existing snapshot and a changed source makes a new one beside it: nothing is ever overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from urllib.parse import urlparse

import pandas as pd

from mlops_pipeline import layout
from mlops_pipeline.rules import with_row_ids
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.store import ObjectExistsError, ObjectStore, glob_keys


class NoSourceDataError(RuntimeError):
    """The data window has no source files at all."""


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


def read_window(
    spec: ModelSpec, store: ObjectStore, days: list[date]
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Read every source file of `days`: (rows as text, file URIs read, days with no file)."""
    source_store, pattern = split_source_uri(spec.source.uri, store)
    frames: list[pd.DataFrame] = []
    files: list[str] = []
    missing: list[str] = []
    for day in days:
        keys = glob_keys(source_store, pattern.format(ds=day.isoformat()))
        if not keys:
            missing.append(day.isoformat())
        for key in keys:
            files.append(source_store.uri(key))
            frames.append(
                with_row_ids(_read_source_file(source_store.read_bytes(key), spec.source.format), spec)
            )
    if not frames:
        raise NoSourceDataError(
            f"no source files for {spec.name} between {days[0]} and {days[-1]} "
            f"(pattern {spec.source.uri!r} under {source_store.root_uri})"
        )
    return pd.concat(frames, ignore_index=True), files, missing


def _read_source_file(data: bytes, fmt: str) -> pd.DataFrame:
    if fmt == "csv":
        # Text in, text kept: types are validation's job, and "n/a" must reach it unchanged.
        return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""])
    return pd.read_parquet(io.BytesIO(data)).astype("string").astype(object)


def canonical_bytes(frame: pd.DataFrame) -> bytes:
    """The snapshot's canonical serialisation (CSV, UTF-8, no index): its sha256 is the data's identity."""
    return frame.to_csv(index=False, lineterminator="\n").encode()


def ingest_window(spec: ModelSpec, store: ObjectStore, as_of: date, window_days: int) -> SnapshotManifest:
    """Snapshot the window ending `as_of`; reuse the existing snapshot when the content is unchanged."""
    days = window_dates(as_of, window_days)
    frame, files, missing = read_window(spec, store, days)
    data = canonical_bytes(frame)
    digest = hashlib.sha256(data).hexdigest()
    data_key = layout.snapshot_data_key(spec.name, as_of, digest)
    manifest_key = layout.snapshot_manifest_key(spec.name, as_of, digest)
    manifest = SnapshotManifest(
        model=spec.name,
        as_of=as_of.isoformat(),
        window_start=days[0].isoformat(),
        window_days=window_days,
        rows=len(frame),
        columns=list(frame.columns),
        sha256=digest,
        data_uri=store.uri(data_key),
        source_files=files,
        missing_days=missing,
    )
    # Same content hash means the snapshot is already there (a rerun): never rewrite it.
    with contextlib.suppress(ObjectExistsError):
        store.create_only(data_key, data)
    try:
        # Manifest last: a snapshot folder without a manifest is an interrupted ingest.
        store.create_only(manifest_key, manifest.to_json())
    except ObjectExistsError:
        manifest = SnapshotManifest.from_json(store.read_bytes(manifest_key))
    return manifest


def read_snapshot(store: ObjectStore, manifest: SnapshotManifest) -> pd.DataFrame:
    """Load a snapshot's rows (as text) and check them against the manifest's hash."""
    data = store.read_bytes(
        layout.snapshot_data_key(manifest.model, date.fromisoformat(manifest.as_of), manifest.sha256)
    )
    if hashlib.sha256(data).hexdigest() != manifest.sha256:
        raise ValueError(f"snapshot {manifest.data_uri} does not match its manifest's sha256")
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""])
