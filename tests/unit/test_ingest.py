"""Ingest: a data window frozen as an immutable, content-addressed snapshot with a manifest."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_pipeline.ingest import (
    NoSourceDataError,
    SnapshotIntegrityError,
    SnapshotManifest,
    UnreadableSourceError,
    file_content_sha256,
    ingest_window,
    read_snapshot,
    read_snapshot_key,
    read_source_file,
    record_unreadable,
    stage_window,
    table_content_sha256,
    text_frame,
    window_dates,
    write_snapshot_file,
)
from mlops_pipeline.layout import snapshot_manifest_key, snapshot_prefix
from mlops_pipeline.rules import DECODE_ERROR_COLUMN
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


def read_window(
    spec: ModelSpec, store: ObjectStore, days: list[date], tmp: Path
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The window as ingest stages and assembles it, read back as a text frame."""
    window = stage_window(spec, store, days, tmp)
    write_snapshot_file(window, tmp / "snapshot.parquet")
    return text_frame(pq.read_table(tmp / "snapshot.parquet")), window.files, window.missing_days


def test_read_window_reads_every_file_as_text_and_reports_missing_days(
    spec: ModelSpec, landed: ObjectStore, tmp_path: Path
) -> None:
    frame, files, missing = read_window(spec, landed, window_dates(AS_OF, 3), tmp_path)
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


def test_read_window_ignores_files_outside_the_pattern(
    spec: ModelSpec, store: ObjectStore, tmp_path: Path
) -> None:
    land(store, "2026-03-05", "c1,1,red,0\n")
    land(store, "2026-03-05", "zz,9,red,1\n", "notes.txt")
    store.write_bytes("landing/demo/ds=2026-03-05/rejected/old.csv", (HEADER + "old,1,red,1\n").encode())
    store.write_bytes("landing/demo/ds=2026-03-06/batch.csv", (HEADER + "future,1,red,1\n").encode())
    frame, files, _ = read_window(spec, store, [AS_OF], tmp_path)
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
    assert landed.list("raw") == [f"{prefix}/manifest.json", f"{prefix}/snapshot.parquet"]

    table = pq.read_table(io.BytesIO(landed.read_bytes(f"{prefix}/snapshot.parquet")))
    assert table.schema == pa.schema([(name, pa.string()) for name in ["id", "x", "colour", "label"]])
    assert table_content_sha256(table) == manifest.sha256

    assert manifest.model == "demo"
    assert (manifest.as_of, manifest.window_start, manifest.window_days) == ("2026-03-05", "2026-03-03", 3)
    assert manifest.rows == 5
    assert manifest.columns == ["id", "x", "colour", "label"]
    assert manifest.data_uri == landed.uri(f"{prefix}/snapshot.parquet")
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
    snapshot = landed.read_bytes(f"{snapshot_prefix('demo', AS_OF, first.sha256)}/snapshot.parquet")
    second = ingest_window(spec, landed, AS_OF, 3)
    assert second == first
    assert landed.list() == keys
    assert landed.read_bytes(f"{snapshot_prefix('demo', AS_OF, first.sha256)}/snapshot.parquet") == snapshot


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


def test_an_interrupted_ingest_is_completed_by_the_rerun(
    spec: ModelSpec, landed: ObjectStore, tmp_path: Path
) -> None:
    manifest = ingest_window(spec, landed, AS_OF, 3)
    snapshot = landed.read_bytes(manifest_data_key(manifest))
    landed.delete_prefix("raw")
    # The snapshot was written but the process died before the manifest.
    landed.write_bytes(manifest_data_key(manifest), snapshot)
    assert ingest_window(spec, landed, AS_OF, 3) == manifest
    assert landed.exists(snapshot_manifest_key("demo", AS_OF, manifest.sha256))
    assert landed.read_bytes(manifest_data_key(manifest)) == snapshot


def manifest_data_key(manifest: SnapshotManifest) -> str:
    return f"{snapshot_prefix(manifest.model, date.fromisoformat(manifest.as_of), manifest.sha256)}/snapshot.parquet"


def test_read_snapshot_returns_the_rows_as_text(spec: ModelSpec, landed: ObjectStore, tmp_path: Path) -> None:
    manifest = ingest_window(spec, landed, AS_OF, 3)
    frame = read_snapshot(landed, manifest)
    expected, _, _ = read_window(spec, landed, window_dates(AS_OF, 3), tmp_path)
    pd.testing.assert_frame_equal(frame, expected)
    assert frame["x"].tolist()[3] == "007"
    assert frame["x"].isna().tolist() == [False, True, False, False, False]


def test_read_snapshot_detects_a_tampered_snapshot(spec: ModelSpec, landed: ObjectStore) -> None:
    manifest = ingest_window(spec, landed, AS_OF, 3)
    key = manifest_data_key(manifest)
    table = pq.read_table(io.BytesIO(landed.read_bytes(key)))
    changed = table.set_column(1, "x", pa.array(["9.5", None, "n/a", "007", "2e3"]))
    buffer = io.BytesIO()
    pq.write_table(changed, buffer)
    landed.write_bytes(key, buffer.getvalue())
    with pytest.raises(SnapshotIntegrityError, match="does not match its sha256"):
        read_snapshot(landed, manifest)


def test_read_snapshot_of_a_manifest_with_a_wrong_sha_is_refused(
    spec: ModelSpec, landed: ObjectStore
) -> None:
    manifest = ingest_window(spec, landed, AS_OF, 3)
    forged = SnapshotManifest(**{**json.loads(manifest.to_json()), "sha256": "0" * 64})
    with pytest.raises(SnapshotIntegrityError, match="does not match its sha256 0000"):
        read_snapshot(landed, forged)


# --- the content hash ----------------------------------------------------------------------------


def reference_content_sha256(columns: dict[str, list[str | None]]) -> str:
    """The content hash as the README defines it, written out value by value."""
    digest = hashlib.sha256(b"mlops-snapshot-v1\n")
    for name, values in columns.items():
        encoded = name.encode()
        digest.update(len(encoded).to_bytes(8, "little", signed=True) + encoded)
        digest.update(len(values).to_bytes(8, "little", signed=True))
        for value in values:
            length = -1 if value is None else len(value.encode())
            digest.update(length.to_bytes(8, "little", signed=True))
        for value in values:
            digest.update(b"" if value is None else value.encode())
    return digest.hexdigest()


COLUMNS = {"a": ["1", None, "", "ü,x"], "b": ["x", "y", None, "zz"]}


def test_the_content_hash_is_the_documented_one() -> None:
    table = pa.table({name: pa.array(values, pa.string()) for name, values in COLUMNS.items()})
    assert table_content_sha256(table) == reference_content_sha256(COLUMNS)


def test_the_content_hash_does_not_depend_on_chunks_or_how_parquet_was_written(tmp_path: Path) -> None:
    table = pa.table({name: pa.array(values, pa.string()) for name, values in COLUMNS.items()})
    chunked = pa.concat_tables([table.slice(0, 1), table.slice(1, 2), table.slice(3)])
    assert table_content_sha256(chunked) == table_content_sha256(table)
    for number, options in enumerate(
        [{"compression": "snappy"}, {"compression": "zstd", "row_group_size": 1}, {"use_dictionary": False}]
    ):
        path = tmp_path / f"{number}.parquet"
        pq.write_table(table, path, **options)
        assert file_content_sha256(path) == reference_content_sha256(COLUMNS)


@pytest.mark.parametrize(
    "changed",
    [
        {"a": ["1", "", "", "ü,x"], "b": ["x", "y", None, "zz"]},  # missing is not empty text
        {"a": ["1", None, "", "ü,x"], "b": ["x", "y", "", "zz"]},
        {"a": ["1", None, "", "ü"], "b": [",x", "y", None, "zz"]},  # bytes moved across a boundary
        {"b": ["x", "y", None, "zz"], "a": ["1", None, "", "ü,x"]},  # column order
        {"A": ["1", None, "", "ü,x"], "b": ["x", "y", None, "zz"]},  # a name
    ],
)
def test_any_change_of_a_value_name_or_order_changes_the_content_hash(
    changed: dict[str, list[str | None]],
) -> None:
    original = pa.table({name: pa.array(values, pa.string()) for name, values in COLUMNS.items()})
    table = pa.table({name: pa.array(values, pa.string()) for name, values in changed.items()})
    assert table_content_sha256(table) != table_content_sha256(original)


# --- reading source files: Arrow's CSV reader against pandas' ------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"id,x,colour,label\na1,1.5,red,0\n",
        b"\xef\xbb\xbfid,x,colour,label\na1,1.5,red,0\n",  # a byte order mark
        b'id,x,colour,label\r\na1, 1.5 ,red,0\r\n\r\na2,"","blue",1\r\n',  # CRLF, blank line, quoted empty
        b'id,x,colour,label\na1,"line\nbreak",red,0\na2,n/a,,1\n',  # a newline inside quotes
        b"id,x,colour,label\na1,1.5,red\na2,2,blue,1\n",  # a short row: pandas fills it with missing values
        b"id,x,x,label\na1,1,2,0\n",  # a duplicate header: pandas renames it
        b"id,x,colour,label\n",  # a header and no rows
        "id,x,colour,label\nä1,ß,rød,0\n".encode(),
    ],
)
def test_a_csv_source_reads_exactly_as_pandas_reads_it_as_text(body: bytes) -> None:
    expected = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False, na_values=[""])
    table = read_source_file(body, "csv", make_spec())
    assert table.schema == pa.schema([(str(name), pa.string()) for name in expected.columns])
    pd.testing.assert_frame_equal(
        text_frame(table), expected.astype(object).where(expected.notna(), float("nan"))
    )


def test_a_window_with_files_of_different_columns_is_their_union_in_order_of_appearance(
    spec: ModelSpec, store: ObjectStore, tmp_path: Path
) -> None:
    store.write_bytes("landing/demo/ds=2026-03-05/a.csv", b"id,x,label\na1,1,0\n")
    store.write_bytes("landing/demo/ds=2026-03-05/b.csv", b"id,colour,x,label,extra\nb1,red,2,1,e\n")
    frame, _, _ = read_window(spec, store, [AS_OF], tmp_path)
    assert list(frame.columns) == ["id", "x", "label", "colour", "extra"]
    assert frame["colour"].isna().tolist() == [True, False]
    assert frame["x"].tolist() == ["1", "2"]


def test_staging_spills_one_part_per_source_file(
    spec: ModelSpec, landed: ObjectStore, tmp_path: Path
) -> None:
    window = stage_window(spec, landed, window_dates(AS_OF, 3), tmp_path)
    assert [part.name for part in window.parts] == [
        "part-00000.arrow",
        "part-00001.arrow",
        "part-00002.arrow",
    ]
    assert window.rows == 5


def test_a_snapshot_of_the_earlier_csv_form_is_still_read_and_checked(store: ObjectStore) -> None:
    data = b"id,x\na1,1.5\na2,\n"
    store.write_bytes("raw/demo/ds=2026-03-05/0123/snapshot.csv", data)
    table = read_snapshot_key(
        store, "raw/demo/ds=2026-03-05/0123/snapshot.csv", hashlib.sha256(data).hexdigest()
    )
    assert table.column("x").to_pylist() == ["1.5", None]
    with pytest.raises(SnapshotIntegrityError):
        read_snapshot_key(store, "raw/demo/ds=2026-03-05/0123/snapshot.csv", "0" * 64)


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


# --- defective files: refusals and undecodable lines ---------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "the file is empty"),
        (b"\n\n", "only blank lines"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\x8b\x00", "gzip-compressed"),
        (b"<html><body>502 Bad Gateway</body></html>\n", "HTML"),
        ("id,x,colour,label\n".encode("utf-16"), "header line is not CSV text"),
        (b"id;x;colour;label\na1;1;red;0\n", "separated by ';'"),
        (b'id,x,colour,label\na1,"1,red,0\n', "not readable as CSV"),  # a quote never closed
    ],
)
def test_an_unreadable_source_file_is_refused_naming_the_file_the_day_and_why(
    spec: ModelSpec, store: ObjectStore, tmp_path: Path, body: bytes, reason: str
) -> None:
    store.write_bytes("landing/demo/ds=2026-03-05/broken.csv", body)
    with pytest.raises(UnreadableSourceError) as caught:
        stage_window(spec, store, [AS_OF], tmp_path)
    message = str(caught.value)
    assert "broken.csv" in message and "2026-03-05" in message and "rule readable" in message
    assert reason in message


def test_an_unreadable_file_is_recorded_once_under_quarantine(spec: ModelSpec, store: ObjectStore) -> None:
    """The record is create-only and keyed by the bytes: refusing the same file again keeps it."""
    error = UnreadableSourceError.of_bytes("source", "landing/x.csv", "2026-03-05", "the file is empty", b"")
    first = record_unreadable(store, "demo", error)
    assert record_unreadable(store, "demo", error) == first
    (key,) = store.list("quarantine/demo")
    assert key.startswith("quarantine/demo/_unreadable/source/ds=2026-03-05/")
    assert json.loads(store.read_bytes(key))["reason"] == "the file is empty"


def test_an_undecodable_line_becomes_a_row_that_says_which_line_and_why() -> None:
    good = HEADER + "".join(f"a{i},{i},red,0\n" for i in range(1, 6))
    lines = good.encode().split(b"\n")
    lines[3] = "a3,3,rød,0".encode("latin-1")  # line 4 of the file
    lines[5] = b"a5,5,bl\x00ue,1"
    table = read_source_file(b"\n".join(lines), "csv", make_spec(), "landing/demo/batch.csv")
    frame = text_frame(table)
    assert frame["id"].tolist() == ["a1", "a2", "a4", "a3", "a5"]  # bad lines after the good ones
    errors = frame[DECODE_ERROR_COLUMN].tolist()
    assert frame[DECODE_ERROR_COLUMN].isna().tolist() == [True, True, True, False, False]
    assert errors[3].startswith("landing/demo/batch.csv line 4: byte 0xf8 at position 7 is not UTF-8")
    assert errors[4].startswith("landing/demo/batch.csv line 6: NUL byte at position 8")
    assert frame["colour"].tolist()[3:] == ["r\ufffdd", "bl\ufffdue"]
    # Valid text everywhere: the content hash is defined, and the same for the same bytes.
    again = read_source_file(b"\n".join(lines), "csv", make_spec(), "landing/demo/batch.csv")
    assert table_content_sha256(table) == table_content_sha256(again)


def test_a_clean_file_has_no_decode_error_column() -> None:
    table = read_source_file((HEADER + "a1,1,red,0\n").encode(), "csv", make_spec())
    assert DECODE_ERROR_COLUMN not in table.column_names


def test_a_truncated_parquet_source_is_refused(store: ObjectStore, tmp_path: Path) -> None:
    spec = make_spec(uri="landing/demo/ds={ds}/*.parquet", fmt="parquet")
    buffer = io.BytesIO()
    pd.DataFrame({"id": ["p1"], "x": [1.5], "colour": ["red"], "label": [0]}).to_parquet(buffer)
    store.write_bytes("landing/demo/ds=2026-03-05/batch.parquet", buffer.getvalue()[:-30])
    with pytest.raises(UnreadableSourceError, match=r"batch\.parquet of 2026-03-05 .*not a readable Parquet"):
        stage_window(spec, store, [AS_OF], tmp_path)
