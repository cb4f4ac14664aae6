"""The fixtures test_candidates.py and test_registry.py share: the diabetes spec, a real MLflow
tracking store and registry (SQLite in a module's temp dir), and a candidate logged there as
training logs one. Imported into each module (as
`*_fixture`, registered under their short names), so each module gets its own module-scoped copy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_pipeline import candidates, registry
from mlops_pipeline.devtools.example_data import diabetes_frame
from mlops_pipeline.ingest import SnapshotManifest
from mlops_pipeline.spec import ModelSpec, load_spec
from mlops_pipeline.training import train_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", name="spec")
def spec_fixture() -> ModelSpec:
    return load_spec(REPO / "include/models/diabetes.yaml")


@pytest.fixture(scope="module", name="client")
def client_fixture(tmp_path_factory, monkeypatch_module, spec: ModelSpec) -> Iterator:
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    monkeypatch_module.chdir(root)  # anything MLflow writes relative to the cwd stays in the temp dir
    monkeypatch_module.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = registry.connect(f"sqlite:///{root}/mlflow.db")
    mlflow.create_experiment(spec.name, artifact_location=(root / "artifacts").as_uri())
    yield client
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module", name="candidate")
def candidate_fixture(client, spec: ModelSpec) -> registry.LoggedCandidate:
    clean = diabetes_frame()
    snapshot = SnapshotManifest(
        model=spec.name,
        as_of="2026-01-01",
        window_start="2026-01-01",
        window_days=1,
        rows=len(clean),
        columns=list(clean.columns),
        sha256="ab" * 32,
        data_uri="file:///data/snapshot.csv",
        source_files=[],
        missing_days=[],
    )
    return candidates.log_candidate(
        train_model(clean, spec),
        spec,
        snapshot,
        clean,
        {"train_rmse": 50.0},
        run_tags={"airflow.dag_id": "diabetes__train"},
        code="test-code",
    )
