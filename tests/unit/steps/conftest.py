"""Fixtures of the task-body tests: a file store with example data beside a SQLite MLflow store,
the tasks' settings pointing at both."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlops_pipeline import registry, steps
from mlops_pipeline.devtools.example_data import write_example_data
from mlops_pipeline.settings import get_settings
from mlops_pipeline.spec import ModelSpec, load_spec
from mlops_pipeline.store import LocalStore

REPO = Path(__file__).resolve().parents[3]
DayRange = tuple[datetime.date, datetime.date]


@pytest.fixture(scope="module")
def churn() -> ModelSpec:
    return load_spec(REPO / "include/models/churn.yaml")


@pytest.fixture(scope="module")
def example_store(tmp_path_factory, monkeypatch_module) -> Iterator[Callable[..., LocalStore]]:
    """Make the module's store: the example data of the given day ranges, a SQLite MLflow in the same
    temp dir, and the settings (store, tracking URI) the steps read."""
    import mlflow

    def make(name: str, *ranges: DayRange) -> LocalStore:
        root = tmp_path_factory.mktemp(name)
        store = LocalStore(root / "store")
        for start, end in ranges:
            write_example_data(store, start=start, end=end)
        monkeypatch_module.chdir(root)
        monkeypatch_module.setenv("MLOPS_STORE_URI", store.root_uri)
        monkeypatch_module.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        monkeypatch_module.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        monkeypatch_module.delenv(steps.FAULT_POINT_VAR, raising=False)
        monkeypatch_module.delenv("MLOPS_EVIDENTLY_WORKSPACE", raising=False)
        get_settings.cache_clear()
        registry.connect(f"sqlite:///{root}/mlflow.db")
        mlflow.create_experiment("churn", artifact_location=(root / "artifacts").as_uri())
        return store

    yield make
    get_settings.cache_clear()
    mlflow.set_tracking_uri(None)
