"""Unit-test fixtures: a store fixture that runs a test on both backends (file, and S3 through the
moto server of tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_pipeline.store import LocalStore, ObjectStore


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    """A LocalStore in a fresh temporary folder."""
    return LocalStore(tmp_path / "store")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each backend in turn, so the same assertions run on both."""
    return request.getfixturevalue(f"{request.param}_store")
