"""Unit tests of `mlops_pipeline.devtools.native_stack` against the machine's own PostgreSQL and Redis
servers: throwaway databases, a claimed Redis database, released resources, worker names."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from mlops_pipeline.devtools import embedded_stack, native_stack


@pytest.fixture
def db_prefix() -> Iterator[str]:
    """A database name prefix of this test's own; whatever it left is dropped afterwards."""
    import uuid

    prefix = f"mlops_unit_{uuid.uuid4().hex[:8]}"
    yield prefix
    for name in native_stack.list_databases(native_stack.DEFAULT_POSTGRES_URI, prefix):
        native_stack.drop_database(native_stack.DEFAULT_POSTGRES_URI, name)


def test_throwaway_databases_are_created_listed_and_dropped_even_while_in_use(db_prefix: str) -> None:
    import psycopg2

    uri = native_stack.DEFAULT_POSTGRES_URI
    native_stack.create_database(uri, f"{db_prefix}_airflow")
    native_stack.create_database(uri, f"{db_prefix}_mlflow")
    assert native_stack.list_databases(uri, db_prefix) == [f"{db_prefix}_airflow", f"{db_prefix}_mlflow"]

    in_use = psycopg2.connect(f"{uri}/{db_prefix}_airflow", connect_timeout=10)
    try:
        native_stack.drop_database(uri, f"{db_prefix}_airflow")  # WITH (FORCE): a client does not block it
    finally:
        in_use.close()
    native_stack.drop_database(uri, f"{db_prefix}_never_created")  # IF EXISTS
    assert native_stack.list_databases(uri, db_prefix) == [f"{db_prefix}_mlflow"]


def test_a_redis_database_is_claimed_empty_kept_apart_and_released_only_by_its_owner() -> None:
    import redis

    uri = native_stack.DEFAULT_REDIS_URI
    first = native_stack.claim_redis_db(uri, "stack-a")
    second = native_stack.claim_redis_db(uri, "stack-b")
    try:
        assert first != second and 0 not in (first, second)
        client = redis.Redis.from_url(f"{uri}/{first}")
        client.set("celery-task", "x")
        assert not native_stack.release_redis_db(uri, first, "stack-b"), "not stack-b's to flush"
        assert client.get("celery-task") == b"x"
        assert native_stack.release_redis_db(uri, first, "stack-a")
        assert client.dbsize() == 0
    finally:
        native_stack.release_redis_db(uri, first, "stack-a")
        native_stack.release_redis_db(uri, second, "stack-b")


def test_native_resources_are_released_once_and_the_record_removed(
    layout: embedded_stack.StackLayout, db_prefix: str
) -> None:
    uri = native_stack.DEFAULT_POSTGRES_URI
    native_stack.create_database(uri, f"{db_prefix}_airflow")
    index = native_stack.claim_redis_db(native_stack.DEFAULT_REDIS_URI, "stack-c")
    resources = native_stack.NativeResources(
        token="stack-c",
        postgres_uri=uri,
        databases=(f"{db_prefix}_airflow",),
        redis_uri=native_stack.DEFAULT_REDIS_URI,
        redis_db=index,
    )
    native_stack._write_resources(layout, resources)
    assert native_stack.read_native_resources(layout) == resources

    released = native_stack.release_native_resources(layout)
    assert released == [f"database {db_prefix}_airflow", f"redis database {index}"]
    assert native_stack.list_databases(uri, db_prefix) == []
    assert native_stack.read_native_resources(layout) is None
    assert native_stack.release_native_resources(layout) == []


def test_worker_hostname_is_the_worker_s_name_else_the_fqdn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native_stack.WORKER_NAME_VAR, "worker2@host")
    assert native_stack.worker_hostname() == "worker2@host"
    monkeypatch.delenv(native_stack.WORKER_NAME_VAR)
    assert native_stack.worker_hostname() == socket.getfqdn()
    assert native_stack.celery_worker_name(3) == f"worker3@{socket.gethostname()}"
