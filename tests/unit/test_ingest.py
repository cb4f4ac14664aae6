"""Ingest: a data window frozen as an immutable, content-addressed snapshot with a manifest."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from mlops_pipeline.ingest import (
    NoSourceDataError,
    SnapshotManifest,
    canonical_bytes,
    ingest_window,
    read_snapshot,
    read_window,
    window_dates,
)
from mlops_pipeline.layout import snapshot_manifest_key, snapshot_prefix
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.store import LocalStore, ObjectStore

AS_OF = date(2026, 3, 5)
HEADER = "id,x,colour,label\n"


def make_spec(uri: str = "landing/demo/ds={ds}/*.csv", fmt: str = "csv") -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": "demo",
            "task": "classification",
            "source": {"uri": uri, "format": fmt, "window_days": 3},
            "id_column": "id",
            "target": "label",
            "features": {
                "x": {"type": "number", "nullable": True},
                "colour": {"type": "category", "allowed": ["red", "blue"]},
            },
            "estimator": {"kind": "logistic_regression"},
            "gates": {"primary_metric": "roc_auc"},
        }
    )


@pytest.fixture
def spec() -> ModelSpec:
    return make_spec()


def land(store: ObjectStore, day: str, body: str, name: str = "batch.csv") -> None:
    store.write_bytes(f"landing/demo/ds={day}/{name}", (HEADER + body).encode())


@pytest.fixture
def landed(store: ObjectStore) -> ObjectStore:
    """Three days of the window: two files on the 3rd, none on the 4th, one on the 5th."""
    land(store, "2026-03-03", "a1,1.5,red,0\na2,,blue,1\n", "part-1.csv")
    land(store, "2026-03-03", "a3,n/a,red,1\n", "part-2.csv")
    land(store, "2026-03-05", "c1,007,blue,0\nc2,2e3,,1\n")
    return store


# --- windows -------------------------------------------------------------------------------------


def test_window_dates_end_with_as_of_oldest_first() -> None:
    assert window_dates(AS_OF, 3) == [date(2026, 3, 3), date(2026, 3, 4), date(2026, 3, 5)]
    assert window_dates(AS_OF, 1) == [AS_OF]
    assert window_dates(date(2026, 3, 1), 2) == [date(2026, 2, 28), date(2026, 3, 1)]


@pytest.mark.parametrize("days", [0, -1])
def test_window_dates_refuse_an_empty_window(days: int) -> None:
    with pytest.raises(ValueError, match="window_days must be >= 1"):
        window_dates(AS_OF, days)


def test_read_window_reads_every_file_as_text_and_reports_missing_days(
    spec: ModelSpec, landed: ObjectStore
) -> None:
    frame, files, missing = read_window(spec, landed, window_dates(AS_OF, 3))
    assert list(frame.columns) == ["id", "x", "colour", "label"]
    assert frame["id"].tolist() == ["a1", "a2", "a3", "c1", "c2"]
    # Values stay exactly as sent: no number parsing, "n/a" kept, only empty cells are null.
    assert frame["x"].tolist()[2:] == ["n/a", "007", "2e3"]
    assert frame["x"].isna().tolist() == [False, True, False, False, False]
    assert frame["colour"].isna().tolist() == [False, False, False, False, True]
    assert files == [
        landed.uri("landing/demo/ds=2026-03-03/part-1.csv"),
        landed.uri("landing/demo/ds=2026-03-03/part-2.csv"),
        landed.uri("landing/demo/ds=2026-03-05/batch.csv"),
    ]
    assert missing == ["2026-03-04"]


def test_read_window_ignores_files_outside_the_pattern(spec: ModelSpec, store: ObjectStore) -> None:
    land(store, "2026-03-05", "c1,1,red,0\n")
    land(store, "2026-03-05", "zz,9,red,1\n", "notes.txt")
    store.write_bytes("landing/demo/ds=2026-03-05/rejected/old.csv", (HEADER + "old,1,red,1\n").encode())
    store.write_bytes("landing/demo/ds=2026-03-06/batch.csv", (HEADER + "future,1,red,1\n").encode())
    frame, files, _ = read_window(spec, store, [AS_OF])
    assert frame["id"].tolist() == ["c1"]
    assert len(files) == 1


def test_a_window_without_any_file_raises_no_source_data(spec: ModelSpec, store: ObjectStore) -> None:
    land(store, "2026-02-01", "old,1,red,0\n")  # outside the window
    with pytest.raises(NoSourceDataError, match="no source files for demo between 2026-03-03 and 2026-03-05"):
        ingest_window(spec, store, AS_OF, 3)
    assert store.list("raw") == []


# --- snapshots -----------------------------------------------------------------------------------


def test_ingest_writes_a_content_addressed_snapshot_and_manifest(
    spec: ModelSpec, landed: ObjectStore
) -> None:
    manifest = ingest_window(spec, landed, AS_OF, 3)
    prefix = snapshot_prefix("demo", AS_OF, manifest.sha256)
    assert prefix == f"raw/demo/ds=2026-03-05/{manifest.sha256[:16]}"
    assert landed.list("raw") == [f"{prefix}/manifest.json", f"{prefix}/snapshot.csv"]

    data = landed.read_bytes(f"{prefix}/snapshot.csv")
    assert hashlib.sha256(data).hexdigest() == manifest.sha256
    assert data.startswith(HEADER.encode())
    assert b"\r" not in data

    assert manifest.model == "demo"
    assert (manifest.as_of, manifest.window_start, manifest.window_days) == ("2026-03-05", "2026-03-03", 3)
    assert manifest.rows == 5
    assert manifest.columns == ["id", "x", "colour", "label"]
    assert manifest.data_uri == landed.uri(f"{prefix}/snapshot.csv")
    assert len(manifest.source_files) == 3
    assert manifest.missing_days == ["2026-03-04"]

    stored = json.loads(landed.read_bytes(snapshot_manifest_key("demo", AS_OF, manifest.sha256)))
    assert stored["sha256"] == manifest.sha256
    assert stored["rows"] == 5
    assert SnapshotManifest.from_json(manifest.to_json()) == manifest


def test_a_rerun_over_the_same_data_gives_the_same_sha_and_writes_nothing_new(
    spec: ModelSpec, landed: ObjectStore
) -> None:
    first = ingest_window(spec, landed, AS_OF, 3)
    keys = landed.list()
    snapshot = landed.read_bytes(f"{snapshot_prefix('demo', AS_OF, first.sha256)}/snapshot.csv")
    second = ingest_window(spec, landed, AS_OF, 3)
    assert second == first
    assert landed.list() == keys
    assert landed.read_bytes(f"{snapshot_prefix('demo', AS_OF, first.sha256)}/snapshot.csv") == snapshot


def test_the_same_content_in_another_store_has_the_same_sha(
    spec: ModelSpec, landed: ObjectStore, tmp_path: Path
) -> None:
    other = LocalStore(tmp_path / "other")
    land(other, "2026-03-03", "a1,1.5,red,0\na2,,blue,1\n", "part-1.csv")
    land(other, "2026-03-03", "a3,n/a,red,1\n", "part-2.csv")
    land(other, "2026-03-05", "c1,007,blue,0\nc2,2e3,,1\n")
    assert ingest_window(spec, other, AS_OF, 3).sha256 == ingest_window(spec, landed, AS_OF, 3).sha256


def test_changed_source_data_makes_a_new_snapshot_beside_the_old_one(
    spec: ModelSpec, landed: ObjectStore
) -> None:
    first = ingest_window(spec, landed, AS_OF, 3)
    land(landed, "2026-03-04", "b1,3,red,1\n")  # a late file for the missing day
    second = ingest_window(spec, landed, AS_OF, 3)
    assert second.sha256 != first.sha256
    assert second.rows == 6
    assert second.missing_days == []
    assert read_snapshot(landed, first)["id"].tolist() == ["a1", "a2", "a3", "c1", "c2"]
    assert read_snapshot(landed, second)["id"].tolist() == ["a1", "a2", "a3", "b1", "c1", "c2"]
    assert len(landed.list("raw/demo/ds=2026-03-05")) == 4


def test_an_interrupted_ingest_is_completed_by_the_rerun(spec: ModelSpec, landed: ObjectStore) -> None:
    manifest = ingest_window(spec, landed, AS_OF, 3)
    landed.delete_prefix("raw")
    prefix = snapshot_prefix("demo", AS_OF, manifest.sha256)
    # The snapshot was written but the process died before the manifest.
    frame, _, _ = read_window(spec, landed, window_dates(AS_OF, 3))
    landed.write_bytes(f"{prefix}/snapshot.csv", canonical_bytes(frame))
    assert ingest_window(spec, landed, AS_OF, 3) == manifest
    assert landed.exists(f"{prefix}/manifest.json")


def test_read_snapshot_returns_the_rows_as_text(spec: ModelSpec, landed: ObjectStore) -> None:
    manifest = ingest_window(spec, landed, AS_OF, 3)
    frame = read_snapshot(landed, manifest)
    expected, _, _ = read_window(spec, landed, window_dates(AS_OF, 3))
    pd.testing.assert_frame_equal(frame, expected)
    assert frame["x"].tolist()[3] == "007"


def test_read_snapshot_detects_a_tampered_snapshot(spec: ModelSpec, landed: ObjectStore) -> None:
    manifest = ingest_window(spec, landed, AS_OF, 3)
    key = f"{snapshot_prefix('demo', AS_OF, manifest.sha256)}/snapshot.csv"
    landed.write_bytes(key, landed.read_bytes(key).replace(b"a1,1.5", b"a1,9.5"))
    with pytest.raises(ValueError, match="does not match its manifest's sha256"):
        read_snapshot(landed, manifest)


def test_read_snapshot_of_a_manifest_with_a_wrong_sha_finds_no_data(
    spec: ModelSpec, landed: ObjectStore
) -> None:
    manifest = ingest_window(spec, landed, AS_OF, 3)
    forged = SnapshotManifest(**{**json.loads(manifest.to_json()), "sha256": "0" * 64})
    with pytest.raises(FileNotFoundError):
        read_snapshot(landed, forged)


def test_canonical_bytes_are_plain_csv_without_index() -> None:
    frame = pd.DataFrame({"a": ["1", None], "b": ["x,y", "z"]})
    assert canonical_bytes(frame) == b'a,b\n1,"x,y"\n,z\n'


def test_manifest_json_is_stable(spec: ModelSpec, landed: ObjectStore) -> None:
    manifest = ingest_window(spec, landed, AS_OF, 3)
    text = manifest.to_json().decode()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True)


# --- other source locations and formats ----------------------------------------------------------


def test_an_absolute_file_source_uri_is_read_from_its_own_root(tmp_path: Path) -> None:
    source = LocalStore(tmp_path / "elsewhere")
    source.write_bytes("exports/ds=2026-03-05/day.csv", (HEADER + "e1,1,red,0\n").encode())
    spec = make_spec(uri=f"{source.root_uri}/exports/ds={{ds}}/*.csv")
    target = LocalStore(tmp_path / "store")
    manifest = ingest_window(spec, target, AS_OF, 1)
    assert manifest.source_files == [source.uri("exports/ds=2026-03-05/day.csv")]
    assert manifest.data_uri.startswith(target.root_uri)
    assert read_snapshot(target, manifest)["id"].tolist() == ["e1"]
    assert source.list() == ["exports/ds=2026-03-05/day.csv"]


def test_a_parquet_source_is_snapshotted_as_text(store: ObjectStore) -> None:
    spec = make_spec(uri="landing/demo/ds={ds}/*.parquet", fmt="parquet")
    frame = pd.DataFrame({"id": ["p1", "p2"], "x": [1.5, None], "colour": ["red", None], "label": [0, 1]})
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    store.write_bytes("landing/demo/ds=2026-03-05/batch.parquet", buffer.getvalue())
    manifest = ingest_window(spec, store, AS_OF, 1)
    snapshot = read_snapshot(store, manifest)
    assert snapshot["x"].tolist()[0] == "1.5"
    assert snapshot["label"].tolist() == ["0", "1"]
    assert snapshot["x"].isna().tolist() == [False, True]
    assert snapshot["colour"].isna().tolist() == [False, True]


def test_an_absolute_source_uri_may_have_a_wildcard_before_the_day(tmp_path: Path) -> None:
    source = LocalStore(tmp_path / "elsewhere")
    source.write_bytes("exports/eu/ds=2026-03-05.csv", (HEADER + "eu1,1,red,0\n").encode())
    source.write_bytes("exports/us/ds=2026-03-05.csv", (HEADER + "us1,2,blue,1\n").encode())
    source.write_bytes("exports/us/ds=2026-03-04.csv", (HEADER + "old,2,blue,1\n").encode())
    spec = make_spec(uri=f"{source.root_uri}/exports/*/ds={{ds}}.csv")
    manifest = ingest_window(spec, LocalStore(tmp_path / "store"), AS_OF, 1)
    assert manifest.source_files == [
        source.uri("exports/eu/ds=2026-03-05.csv"),
        source.uri("exports/us/ds=2026-03-05.csv"),
    ]
    assert manifest.rows == 2
