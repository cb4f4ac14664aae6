"""Settings: read from the environment once, lazily; a missing required variable fails by its name."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pydantic
import pytest

from mlops_pipeline.settings import Settings, get_settings

ALL_VARIABLES = (
    "MLOPS_STORE_URI",
    "MLFLOW_TRACKING_URI",
    "MLOPS_S3_ENDPOINT_URL",
    "MLOPS_AWS_CONN_ID",
    "MLOPS_CODE_VERSION",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No pipeline variable set, and no cached settings before or after the test."""
    for name in ALL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.fixture
def required_env(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    clean_env.setenv("MLOPS_STORE_URI", "file:///srv/store")
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    return clean_env


def test_required_variables_are_read_and_optional_ones_default_to_none(required_env: object) -> None:
    settings = get_settings()
    assert settings.store_uri == "file:///srv/store"
    assert settings.mlflow_tracking_uri == "http://127.0.0.1:5000"
    assert settings.s3_endpoint_url is None
    assert settings.aws_conn_id is None
    assert settings.code_version is None


def test_optional_variables_use_the_mlops_prefix(required_env: pytest.MonkeyPatch) -> None:
    required_env.setenv("MLOPS_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    required_env.setenv("MLOPS_AWS_CONN_ID", "aws_store")
    required_env.setenv("MLOPS_CODE_VERSION", "abc123")
    settings = get_settings()
    assert settings.s3_endpoint_url == "http://127.0.0.1:9000"
    assert settings.aws_conn_id == "aws_store"
    assert settings.code_version == "abc123"


def test_unprefixed_or_unrelated_variables_are_ignored(required_env: pytest.MonkeyPatch) -> None:
    required_env.setenv("STORE_URI", "file:///wrong")
    required_env.setenv("S3_ENDPOINT_URL", "http://wrong")
    required_env.setenv("MLOPS_SOMETHING_ELSE", "ignored")
    settings = get_settings()
    assert settings.store_uri == "file:///srv/store"
    assert settings.s3_endpoint_url is None


def test_missing_required_variables_fail_naming_each_variable(clean_env: object) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        get_settings()
    message = str(info.value)
    assert "MLOPS_STORE_URI\n  Field required" in message
    assert "MLFLOW_TRACKING_URI\n  Field required" in message
    assert info.value.error_count() == 2


@pytest.mark.parametrize("present", ["MLOPS_STORE_URI", "MLFLOW_TRACKING_URI"])
def test_one_missing_variable_is_the_only_one_reported(clean_env: pytest.MonkeyPatch, present: str) -> None:
    clean_env.setenv(present, "x://set")
    missing = ({"MLOPS_STORE_URI", "MLFLOW_TRACKING_URI"} - {present}).pop()
    with pytest.raises(pydantic.ValidationError) as info:
        get_settings()
    assert info.value.error_count() == 1
    assert str(info.value).splitlines()[1] == missing


@pytest.mark.parametrize("empty", ["MLOPS_STORE_URI", "MLFLOW_TRACKING_URI"])
def test_an_empty_required_variable_counts_as_missing(required_env: pytest.MonkeyPatch, empty: str) -> None:
    required_env.setenv(empty, "")
    with pytest.raises(pydantic.ValidationError, match=empty):
        get_settings()


def test_a_failed_read_is_not_cached(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(pydantic.ValidationError):
        get_settings()
    clean_env.setenv("MLOPS_STORE_URI", "file:///later")
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://later")
    assert get_settings().store_uri == "file:///later"


def test_settings_are_read_once_per_process_until_the_cache_is_cleared(
    required_env: pytest.MonkeyPatch,
) -> None:
    first = get_settings()
    required_env.setenv("MLOPS_STORE_URI", "file:///changed")
    assert get_settings() is first
    assert get_settings().store_uri == "file:///srv/store"
    get_settings.cache_clear()
    assert get_settings().store_uri == "file:///changed"


def test_settings_can_be_built_directly_from_the_environment(required_env: object) -> None:
    assert isinstance(Settings(), Settings)  # type: ignore[call-arg]


def test_importing_the_module_reads_nothing_from_the_environment() -> None:
    env = {key: value for key, value in os.environ.items() if key not in ALL_VARIABLES}
    completed = subprocess.run(
        [sys.executable, "-c", "import mlops_pipeline.settings"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
