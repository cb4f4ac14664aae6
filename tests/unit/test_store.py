"""The object store: the same contract on the local filesystem and on S3 (moto's server over HTTP)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mlops_pipeline.store import (
    LocalStore,
    ObjectExistsError,
    ObjectStore,
    S3Store,
    glob_keys,
    open_store,
    s3_client_kwargs_from_env,
    safe_segment,
)

BAD_KEYS = ["", "/", "a/../b", "../outside", "a//b", "./a", "a/./b", ".."]


# --- the shared contract, on both backends -------------------------------------------------------


def test_written_bytes_read_back_and_exist(store: ObjectStore) -> None:
    assert not store.exists("a/b.txt")
    store.write_bytes("a/b.txt", b"hello")
    assert store.exists("a/b.txt")
    assert store.read_bytes("a/b.txt") == b"hello"


def test_write_bytes_replaces_an_existing_object(store: ObjectStore) -> None:
    store.write_bytes("k.bin", b"old")
    store.write_bytes("k.bin", b"new content")
    assert store.read_bytes("k.bin") == b"new content"
    assert store.list() == ["k.bin"]


def test_empty_object_round_trips(store: ObjectStore) -> None:
    store.write_bytes("empty", b"")
    assert store.exists("empty")
    assert store.read_bytes("empty") == b""


def test_reading_a_missing_key_raises_file_not_found(store: ObjectStore) -> None:
    with pytest.raises(FileNotFoundError):
        store.read_bytes("missing/key.csv")


def test_a_folder_like_prefix_is_not_an_object(store: ObjectStore) -> None:
    store.write_bytes("dir/file", b"x")
    assert not store.exists("dir")


def test_leading_and_trailing_slashes_are_ignored_in_keys(store: ObjectStore) -> None:
    store.write_bytes("/x/y.txt/", b"1")
    assert store.read_bytes("x/y.txt") == b"1"
    assert store.list() == ["x/y.txt"]


def test_create_only_creates_a_new_object(store: ObjectStore) -> None:
    store.create_only("once/obj", b"first")
    assert store.read_bytes("once/obj") == b"first"


def test_create_only_refuses_an_existing_key_and_keeps_its_content(store: ObjectStore) -> None:
    store.create_only("once/obj", b"first")
    with pytest.raises(ObjectExistsError, match="already exists") as info:
        store.create_only("once/obj", b"second")
    assert store.uri("once/obj") in str(info.value)
    assert isinstance(info.value, FileExistsError)
    assert store.read_bytes("once/obj") == b"first"


def test_create_only_refuses_a_key_written_by_write_bytes(store: ObjectStore) -> None:
    store.write_bytes("k", b"plain")
    with pytest.raises(ObjectExistsError):
        store.create_only("k", b"other")
    assert store.read_bytes("k") == b"plain"


def test_concurrent_create_only_from_8_threads_has_exactly_one_winner(store: ObjectStore) -> None:
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    winners: list[int] = []
    losers: list[int] = []
    unexpected: list[BaseException] = []

    def attempt(index: int) -> None:
        barrier.wait()
        try:
            store.create_only("race/winner", f"thread-{index}".encode())
        except ObjectExistsError:
            losers.append(index)
        except BaseException as exc:
            unexpected.append(exc)
        else:
            winners.append(index)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert unexpected == []
    assert len(winners) == 1
    assert len(losers) == threads_count - 1
    assert store.read_bytes("race/winner") == f"thread-{winners[0]}".encode()
    assert store.list("race") == ["race/winner"]


def test_list_returns_sorted_keys_under_a_folder_like_prefix(store: ObjectStore) -> None:
    for key in ["b/2", "a/x/1", "a/0", "ab/3", "top"]:
        store.write_bytes(key, b"")
    assert store.list() == ["a/0", "a/x/1", "ab/3", "b/2", "top"]
    # "a" is a folder: "ab/3" is not under it.
    assert store.list("a") == ["a/0", "a/x/1"]
    assert store.list("/a/") == ["a/0", "a/x/1"]
    assert store.list("a/x") == ["a/x/1"]


def test_list_of_an_absent_prefix_is_empty(store: ObjectStore) -> None:
    store.write_bytes("a/1", b"")
    assert store.list("nothing/here") == []
    # A key is not a folder.
    assert store.list("a/1") == []


def test_delete_prefix_removes_only_that_prefix_and_counts(store: ObjectStore) -> None:
    for key in ["run/1/a", "run/1/b/c", "run/2/a", "run/10/a"]:
        store.write_bytes(key, b"x")
    assert store.delete_prefix("run/1") == 2
    assert store.list() == ["run/10/a", "run/2/a"]
    assert store.delete_prefix("run/1") == 0
    assert store.delete_prefix("never/written") == 0


def test_delete_removes_exactly_that_key_and_accepts_an_absent_one(store: ObjectStore) -> None:
    for key in ["run/part-1.parquet", "run/part-1-unique.parquet", "run/part-10.parquet"]:
        store.write_bytes(key, b"x")
    store.delete("run/part-1.parquet")
    assert store.list() == ["run/part-1-unique.parquet", "run/part-10.parquet"]
    store.delete("run/part-1.parquet")
    store.delete("never/written")
    assert store.list() == ["run/part-1-unique.parquet", "run/part-10.parquet"]


def test_delete_prefix_of_the_root_empties_the_store_which_stays_usable(store: ObjectStore) -> None:
    store.write_bytes("a/1", b"x")
    store.write_bytes("b", b"y")
    assert store.delete_prefix("") == 2
    assert store.list() == []
    store.write_bytes("c", b"z")
    assert store.list() == ["c"]


def test_upload_and_download_file_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    payload = os.urandom(256 * 1024)
    source.write_bytes(payload)
    store.upload_file(source, "models/m/model.bin")
    assert store.read_bytes("models/m/model.bin") == payload
    target = tmp_path / "downloaded.bin"
    store.download_file("models/m/model.bin", target)
    assert target.read_bytes() == payload


def test_upload_file_replaces_an_existing_object(store: ObjectStore, tmp_path: Path) -> None:
    store.write_bytes("f", b"old")
    source = tmp_path / "new"
    source.write_bytes(b"new")
    store.upload_file(source, "f")
    assert store.read_bytes("f") == b"new"


def test_download_of_a_missing_key_raises_file_not_found(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        store.download_file("missing.bin", tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


def test_uri_is_the_root_uri_joined_with_the_key(store: ObjectStore) -> None:
    assert store.uri("a/b.csv") == f"{store.root_uri}/a/b.csv"


@pytest.mark.parametrize("key", BAD_KEYS)
def test_empty_dot_and_dotdot_keys_are_refused_everywhere(store: ObjectStore, key: str) -> None:
    for operation in (
        lambda: store.write_bytes(key, b"x"),
        lambda: store.create_only(key, b"x"),
        lambda: store.read_bytes(key),
        lambda: store.exists(key),
        lambda: store.uri(key),
    ):
        with pytest.raises(ValueError, match="invalid object key"):
            operation()


@pytest.mark.parametrize("prefix", ["../x", "a/../../b", "a//b"])
def test_traversing_prefixes_are_refused_by_list_and_delete(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        store.list(prefix)
    with pytest.raises(ValueError, match="invalid object key"):
        store.delete_prefix(prefix)


def test_glob_keys_matches_shell_patterns(store: ObjectStore) -> None:
    for key in [
        "landing/churn/ds=2026-01-01/batch.csv",
        "landing/churn/ds=2026-01-01/extra.csv",
        "landing/churn/ds=2026-01-01/notes.txt",
        "landing/churn/ds=2026-01-02/batch.csv",
        "landing/diabetes/ds=2026-01-01/data.csv",
    ]:
        store.write_bytes(key, b"")
    assert glob_keys(store, "landing/churn/ds=2026-01-01/*.csv") == [
        "landing/churn/ds=2026-01-01/batch.csv",
        "landing/churn/ds=2026-01-01/extra.csv",
    ]
    assert glob_keys(store, "landing/*/ds=2026-01-01/*.csv") == [
        "landing/churn/ds=2026-01-01/batch.csv",
        "landing/churn/ds=2026-01-01/extra.csv",
        "landing/diabetes/ds=2026-01-01/data.csv",
    ]
    assert glob_keys(store, "landing/churn/ds=2026-01-0?/batch.csv") == [
        "landing/churn/ds=2026-01-01/batch.csv",
        "landing/churn/ds=2026-01-02/batch.csv",
    ]
    assert glob_keys(store, "landing/churn/ds=2026-01-0[2-9]/*") == ["landing/churn/ds=2026-01-02/batch.csv"]
    assert glob_keys(store, "/landing/churn/ds=2026-01-02/batch.csv") == [
        "landing/churn/ds=2026-01-02/batch.csv"
    ]
    assert glob_keys(store, "landing/churn/ds=2026-01-03/*.csv") == []


def test_glob_wildcards_do_not_cross_folder_boundaries(store: ObjectStore) -> None:
    store.write_bytes("landing/ds=1/batch.csv", b"")
    store.write_bytes("landing/ds=1/rejected/old.csv", b"")
    assert glob_keys(store, "landing/ds=1/*.csv") == ["landing/ds=1/batch.csv"]
    assert glob_keys(store, "landing/*") == []
    assert glob_keys(store, "landing/*/*/*.csv") == ["landing/ds=1/rejected/old.csv"]


def test_glob_is_case_sensitive(store: ObjectStore) -> None:
    store.write_bytes("d/A.CSV", b"")
    assert glob_keys(store, "d/*.csv") == []
    assert glob_keys(store, "d/*.CSV") == ["d/A.CSV"]


# --- the local backend ---------------------------------------------------------------------------


def test_local_store_keeps_objects_as_files_under_its_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "new" / "root")
    assert (tmp_path / "new" / "root").is_dir()
    store.write_bytes("a/b.txt", b"data")
    assert (tmp_path / "new/root/a/b.txt").read_bytes() == b"data"
    assert store.root_uri == (tmp_path / "new/root").resolve().as_uri()
    assert store.uri("a/b.txt") == (tmp_path / "new/root/a/b.txt").resolve().as_uri()


def test_local_write_leaves_no_temp_files(local_store: LocalStore) -> None:
    local_store.write_bytes("a/b", b"1")
    local_store.create_only("a/c", b"2")
    with pytest.raises(ObjectExistsError):
        local_store.create_only("a/c", b"3")
    assert sorted(p.name for p in (local_store.root / "a").iterdir()) == ["b", "c"]


def test_local_write_that_fails_midway_keeps_the_old_object(
    local_store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_store.write_bytes("k", b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        local_store.write_bytes("k", b"new")
    with pytest.raises(OSError, match="disk full"):
        local_store.create_only("other", b"new")
    monkeypatch.undo()
    assert local_store.read_bytes("k") == b"old"
    assert not local_store.exists("other")
    assert [p.name for p in local_store.root.iterdir()] == ["k"]


def test_local_list_skips_in_flight_temp_files(local_store: LocalStore) -> None:
    local_store.write_bytes("a/b.csv", b"1")
    (local_store.root / "a" / ".b.csv.abc123.tmp").write_bytes(b"partial")
    assert local_store.list() == ["a/b.csv"]
    assert local_store.list("a") == ["a/b.csv"]


def test_local_read_of_a_folder_is_an_error(local_store: LocalStore) -> None:
    local_store.write_bytes("dir/file", b"x")
    with pytest.raises(IsADirectoryError):
        local_store.read_bytes("dir")


# --- the S3 backend ------------------------------------------------------------------------------


def test_s3_server_answers_an_existing_key_with_412_which_the_store_maps(
    s3_store: S3Store, s3_client: Any
) -> None:
    s3_client.put_object(Bucket=s3_store.bucket, Key=f"{s3_store.prefix}k", Body=b"x")
    with pytest.raises(ClientError) as info:
        s3_client.put_object(Bucket=s3_store.bucket, Key=f"{s3_store.prefix}k", Body=b"y", IfNoneMatch="*")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(ObjectExistsError):
        s3_store.create_only("k", b"z")


def test_s3_store_keeps_objects_under_its_prefix(s3_store: S3Store, s3_client: Any) -> None:
    s3_store.write_bytes("a/b.csv", b"1")
    raw = s3_client.list_objects_v2(Bucket=s3_store.bucket, Prefix=s3_store.prefix)
    assert [item["Key"] for item in raw["Contents"]] == [f"{s3_store.prefix}a/b.csv"]
    assert s3_store.prefix.endswith("/")
    assert s3_store.root_uri == f"s3://{s3_store.bucket}/{s3_store.prefix.rstrip('/')}"
    assert s3_store.uri("a/b.csv") == f"s3://{s3_store.bucket}/{s3_store.prefix}a/b.csv"


def test_s3_store_at_a_bucket_root(moto_endpoint: str, s3_client: Any, aws_env: dict[str, str]) -> None:
    client = s3_client
    client.create_bucket(Bucket="bucket-root-test")
    store = open_store("s3://bucket-root-test", {"endpoint_url": moto_endpoint})
    assert isinstance(store, S3Store)
    assert store.root_uri == "s3://bucket-root-test"
    store.write_bytes("a/b", b"1")
    assert store.uri("a/b") == "s3://bucket-root-test/a/b"
    assert store.list() == ["a/b"]
    assert store.delete_prefix("") == 1
    assert client.list_objects_v2(Bucket="bucket-root-test").get("KeyCount") == 0


def test_s3_errors_other_than_a_conflict_are_not_hidden(moto_endpoint: str, aws_env: dict[str, str]) -> None:
    store = S3Store(bucket="no-such-bucket", client_kwargs={"endpoint_url": moto_endpoint})
    with pytest.raises(ClientError, match="NoSuchBucket"):
        store.create_only("k", b"x")


def test_s3_delete_prefix_deletes_in_batches_of_at_most_1000(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index in range(3):
        s3_store.write_bytes(f"many/{index:04d}", b"")
    # 1003 keys listed (3 real ones) without 1003 PUTs; deleting absent keys is a no-op in S3.
    listed = [f"many/{index:04d}" for index in range(1003)]
    monkeypatch.setattr(s3_store, "list", lambda prefix="": listed)
    batches: list[list[str]] = []
    real_delete = s3_store._client.delete_objects

    def recording_delete(**kwargs: Any) -> Any:
        batches.append([item["Key"] for item in kwargs["Delete"]["Objects"]])
        return real_delete(**kwargs)

    monkeypatch.setattr(s3_store._client, "delete_objects", recording_delete)
    assert s3_store.delete_prefix("many") == 1003
    assert [len(batch) for batch in batches] == [1000, 3]
    assert batches[0][0] == f"{s3_store.prefix}many/0000"
    monkeypatch.undo()
    assert s3_store.list() == []


def test_s3_delete_prefix_reports_keys_the_server_failed_to_delete(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_store.write_bytes("a/1", b"")
    real_delete = s3_store._client.delete_objects

    def partly_failing_delete(**kwargs: Any) -> Any:
        response = real_delete(**kwargs)
        key = kwargs["Delete"]["Objects"][0]["Key"]
        return {**response, "Errors": [{"Key": key, "Code": "AccessDenied", "Message": "Access Denied"}]}

    monkeypatch.setattr(s3_store._client, "delete_objects", partly_failing_delete)
    with pytest.raises(OSError, match=r"could not delete 1 objects.*AccessDenied"):
        s3_store.delete_prefix("a")


def test_open_store_of_an_s3_uri_reads_endpoint_and_region_from_env(
    moto_endpoint: str, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_S3_ENDPOINT_URL", moto_endpoint)
    store = open_store("s3://mlops-unit/env/prefix/")
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix) == ("mlops-unit", "env/prefix/")
    assert store.client_kwargs == {
        "endpoint_url": moto_endpoint,
        "region_name": aws_env["AWS_DEFAULT_REGION"],
    }
    store.write_bytes("x", b"through the env")
    assert store.read_bytes("x") == b"through the env"
    store.delete_prefix("")


# --- opening stores, client settings, key segments ----------------------------------------------


def test_open_store_accepts_file_uris_and_absolute_paths(tmp_path: Path) -> None:
    for uri in (tmp_path.as_uri(), f"file://localhost{tmp_path}", str(tmp_path)):
        store = open_store(uri)
        assert isinstance(store, LocalStore)
        assert store.root == tmp_path.resolve()


def test_open_store_round_trips_the_root_uri_of_a_path_needing_escapes(tmp_path: Path) -> None:
    root = tmp_path / "with space%and#hash"
    store = LocalStore(root)
    store.write_bytes("k", b"1")
    assert "%20" in store.root_uri
    reopened = open_store(store.root_uri)
    assert isinstance(reopened, LocalStore)
    assert reopened.root == store.root
    assert reopened.read_bytes("k") == b"1"


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("file://otherhost/data", "file:///absolute/path"),
        ("relative/path", "unsupported store URI"),
        ("gs://bucket/prefix", "unsupported store URI"),
        ("s3:///prefix-without-bucket", "needs a bucket"),
        ("s3://bucket/a/../b", "invalid object key"),
    ],
)
def test_open_store_refuses_unusable_uris(uri: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        open_store(uri, s3_client_kwargs={})


def test_s3_client_kwargs_prefer_the_given_endpoint_then_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLOPS_S3_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION", "MLOPS_S3_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    assert s3_client_kwargs_from_env() == {}
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert s3_client_kwargs_from_env() == {"region_name": "eu-west-1"}
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    monkeypatch.setenv("MLOPS_S3_ENDPOINT_URL", "http://env:9000")
    assert s3_client_kwargs_from_env() == {"endpoint_url": "http://env:9000", "region_name": "us-east-2"}
    assert s3_client_kwargs_from_env("http://given:1")["endpoint_url"] == "http://given:1"


def test_a_stalled_s3_server_fails_a_call_within_the_configured_timeout(
    monkeypatch: pytest.MonkeyPatch, aws_env: dict[str, str]
) -> None:
    """A server that takes the connection and never answers (as a SIGSTOPped one does: the kernel
    still accepts) costs `MLOPS_S3_TIMEOUT` per attempt, not botocore's 60 s."""
    import socket
    import time

    from botocore.exceptions import ReadTimeoutError

    monkeypatch.setenv("MLOPS_S3_TIMEOUT", "1.5")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # never accepted: connections wait in the backlog, requests unanswered
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        kwargs = s3_client_kwargs_from_env(endpoint)
        assert kwargs["config"].read_timeout == kwargs["config"].connect_timeout == 1.5
        store = S3Store(bucket="stalled", client_kwargs=kwargs)
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            store.read_bytes("any/key")
        assert time.monotonic() - started < 2 * 1.5 + 5  # two attempts and botocore's short backoff


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("manual__2026-01-01T00:00:00+00:00", "manual__2026-01-01T00_00_00_00_00"),
        ("scheduled__2026-03-10", "scheduled__2026-03-10"),
        ("a/b\\c d", "a_b_c_d"),
        ("..hidden.", "hidden"),
        ("k=v.1", "k=v.1"),
    ],
)
def test_safe_segment_replaces_unsafe_characters(value: str, expected: str) -> None:
    assert safe_segment(value) == expected


@pytest.mark.parametrize("value", ["", "..", "._.", "/"])
def test_safe_segment_refuses_values_with_nothing_left(value: str) -> None:
    with pytest.raises(ValueError, match="cannot make a key segment"):
        safe_segment(value)


def test_a_safe_segment_is_always_a_valid_single_key_part(store: ObjectStore) -> None:
    segment = safe_segment("../../etc/passwd")
    assert "/" not in segment
    store.write_bytes(f"runs/{segment}/x", b"1")
    assert store.list("runs") == [f"runs/{segment}/x"]
