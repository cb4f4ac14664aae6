"""Logging a candidate against a real MLflow tracking store (SQLite in a temp dir): its run's
lineage, the snapshot as its dataset, the schema from the dtypes, the search's child runs, and the
types skops is told to trust."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_pipeline import candidates, registry
from mlops_pipeline.devtools.example_data import diabetes_frame
from mlops_pipeline.ingest import SnapshotManifest
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.training import train_model

from .mlflow_candidate import candidate_fixture, client_fixture, spec_fixture  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_candidate_run_carries_lineage(client, candidate: registry.LoggedCandidate) -> None:
    run = client.get_run(candidate.run_id)
    assert run.data.tags["data_sha256"] == "ab" * 32
    assert run.data.tags["code_version"] == "test-code"
    assert run.data.tags["artifact_sha256"] == candidate.artifact_sha256
    assert run.data.tags["version.scikit-learn"].startswith("1.")
    assert run.data.params["estimator"] == "ridge"
    assert run.data.params["estimator.alpha"] == "1.0"
    assert run.inputs.dataset_inputs[0].dataset.digest == ("ab" * 32)[:36]
    assert len(candidate.artifact_sha256) == 64 and candidate.model_size_mb > 0
    assert "train_metrics_rows" not in run.data.params  # logged only when the caller says


def test_the_logged_dataset_is_the_snapshot_by_its_sha256_uri_and_clean_columns(
    client, candidate: registry.LoggedCandidate
) -> None:
    """What MLflow holds of the training data: read back from the tracking store, not from our objects."""
    import json

    dataset = client.get_run(candidate.run_id).inputs.dataset_inputs[0].dataset
    assert dataset.digest == ("ab" * 32)[: candidates.DATASET_DIGEST_CHARS]
    assert dataset.name == "diabetes@2026-01-01"
    assert json.loads(dataset.source)["uri"] == "file:///data/snapshot.csv"
    clean = diabetes_frame()
    columns = json.loads(dataset.schema)["mlflow_colspec"]
    assert [c["name"] for c in columns] == list(clean.columns)
    types = {c["name"]: c["type"] for c in columns}
    assert types["patient_id"] == types["sex"] == "string"
    assert types["age"] == "long" and types["bmi"] == types["progression"] == "double"
    assert all(c["required"] for c in columns)  # diabetes has no missing value
    assert json.loads(dataset.profile)["num_rows"] == len(clean)


def test_the_digest_limit_is_mlflows_column_length() -> None:
    """A longer digest than MLflow's `datasets.digest` column holds fails on PostgreSQL."""
    from mlflow.store.tracking.dbmodels.models import SqlDataset

    assert SqlDataset.__table__.c.digest.type.length == candidates.DATASET_DIGEST_CHARS


def test_the_dataset_schema_comes_from_the_dtypes() -> None:
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(
        {
            "id": ["a", "b"],
            "text": pd.Series(["x", None], dtype="string"),
            "n": np.array([1, 2], dtype="int64"),
            "small": np.array([1, 2], dtype="int32"),
            "x": [1.0, np.nan],
            "x32": np.array([1.0, 2.0], dtype="float32"),
            "flag": [True, False],
            "plan": pd.Categorical(["basic", "premium"]),
            "when": pd.to_datetime(["2026-01-01", "2026-01-02"]),
        }
    )
    schema = candidates.frame_schema(frame)
    assert [(c.name, c.type.name, c.required) for c in schema.inputs] == [
        ("id", "string", True),
        ("text", "string", False),
        ("n", "long", True),
        ("small", "integer", True),
        ("x", "double", False),
        ("x32", "float", True),
        ("flag", "boolean", True),
        ("plan", "string", True),
        ("when", "datetime", True),
    ]


def test_trusted_types_refuse_foreign_classes() -> None:
    class Foreign:
        pass

    from sklearn.pipeline import Pipeline

    with pytest.raises(registry.RegistryError, match="should not trust"):
        candidates.trusted_types(Pipeline([("odd", Foreign())]))


def test_every_search_candidate_is_a_child_run_and_the_best_one_is_logged(client, spec: ModelSpec) -> None:
    """A hyperparameter search logs each candidate as a child run; the parent holds the best params."""
    searched = ModelSpec.model_validate(
        {
            **spec.model_dump(),
            "training": {"search": {"method": "grid", "space": {"alpha": [0.01, 100.0]}, "cv": 2}},
        }
    )
    clean = diabetes_frame()
    result = train_model(clean, searched)
    assert result.search is not None and len(result.search) == 2
    snapshot = SnapshotManifest(
        "diabetes",
        "2026-01-01",
        "2026-01-01",
        1,
        len(clean),
        list(clean.columns),
        "cd" * 32,
        "file:///data/snapshot.csv",
        [],
        [],
    )
    logged = candidates.log_candidate(
        result, searched, snapshot, clean, {}, run_tags={"airflow.dag_id": "diabetes__train"}, code="c"
    )
    parent = client.get_run(logged.run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{logged.run_id}'"
    )
    assert sorted(run.data.params["alpha"] for run in children) == ["0.01", "100.0"]
    best = next(c for c in result.search if c.rank == 1)
    assert parent.data.params["estimator.alpha"] == str(best.params["alpha"])
    assert {run.data.metrics["rank"] for run in children} == {1.0, 2.0}
    assert all(f"cv_{searched.gates.primary_metric}" in run.data.metrics for run in children)
