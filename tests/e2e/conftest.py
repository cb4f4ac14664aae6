"""End-to-end fixtures: a real MLflow tracking server, a file store with the example data, and
Airflow's metadata DB, so `dag.test()` runs the real DAGs task by task in this process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_pipeline.devtools import embedded_stack, processes
from mlops_pipeline.devtools.example_data import write_example_data
from mlops_pipeline.settings import get_settings
from mlops_pipeline.store import LocalStore


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A freshly migrated metadata DB in the session's throwaway AIRFLOW_HOME."""
    from airflow.utils.db import resetdb

    resetdb()


@pytest.fixture(scope="module")
def mlflow_stack_dir(tmp_path_factory) -> Path:
    """Where the test MLflow server keeps its database and artifacts (to look behind its back)."""
    return tmp_path_factory.mktemp("mlflow-stack")


@pytest.fixture(scope="module")
def mlflow_server(mlflow_stack_dir: Path) -> Iterator[str]:
    """A real MLflow tracking server (SQLite backend, proxied local artifacts) on a free port.

    One per module: each scenario starts from an empty registry (version numbers, the champion).
    """
    layout = embedded_stack.StackLayout(mlflow_stack_dir)
    port = processes.find_free_port()
    env = embedded_stack.build_env(store_uri="file:///unused", tracking_uri=f"http://127.0.0.1:{port}")
    record = embedded_stack.start_mlflow(layout, port=port, env=env)
    try:
        embedded_stack.wait_for_mlflow(record)
        yield record.details["url"]
    finally:
        processes.stop_all(layout.state_dir)


@pytest.fixture(scope="module")
def pipeline_env(tmp_path_factory, mlflow_server, airflow_db) -> Iterator[LocalStore]:
    """Settings for the tasks (store + tracking URI) and a store holding the example data."""
    store = LocalStore(tmp_path_factory.mktemp("store"))
    write_example_data(store)
    saved = {key: os.environ.get(key) for key in ("MLOPS_STORE_URI", "MLFLOW_TRACKING_URI")}
    os.environ["MLOPS_STORE_URI"] = store.root_uri
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    get_settings.cache_clear()
    try:
        yield store
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
