"""End to end: the penguins example (three species as text labels, missing values, no id column)
through the real DAGs with `dag.test()`: train → champion → score → monitor, predictions in the
original labels with one probability column per class."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
import pytest
from dag_runs import run_dag
from mlflow import MlflowClient

from mlops_pipeline import layout
from mlops_pipeline.devtools.example_data import PENGUINS_DS, PENGUINS_SCORING_DS, penguins_frame
from mlops_pipeline.layout import PREDICTIONS
from mlops_pipeline.predictions import read_manifest, read_partition
from mlops_pipeline.store import LocalStore

pytestmark = pytest.mark.slow
SPECIES = ["Adelie", "Chinstrap", "Gentoo"]


@pytest.fixture(scope="module")
def client(mlflow_server) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)


@pytest.fixture(scope="module")
def champion(pipeline_env: LocalStore, client: MlflowClient) -> Iterator[str]:
    """The penguins model trained and promoted by the real train DAG."""
    run = run_dag("penguins__train", {"as_of": PENGUINS_DS.isoformat()})
    assert run.state == "success", run.tasks
    yield client.get_model_version_by_alias("penguins", "champion").version


def test_a_multiclass_model_with_text_labels_and_no_id_is_trained_gated_and_promoted(
    champion: str, client: MlflowClient
) -> None:
    version = client.get_model_version("penguins", champion)
    run = client.get_run(version.run_id)
    metrics = run.data.metrics
    for name in ("holdout_accuracy", "holdout_balanced_accuracy", "holdout_f1_macro", "holdout_roc_auc_ovr"):
        assert name in metrics, sorted(metrics)
    assert metrics["holdout_f1_macro"] >= 0.9
    assert "holdout_f1" not in metrics  # a binary metric has no meaning for three classes
    assert run.data.tags["gate_passed"] == "true"


def test_scoring_writes_the_species_as_they_came_with_one_probability_per_class(
    champion: str, pipeline_env: LocalStore
) -> None:
    run = run_dag("penguins__score", {"ds": PENGUINS_SCORING_DS.isoformat()})
    assert run.state == "success", run.tasks
    day = PENGUINS_SCORING_DS.isoformat()
    manifest = read_manifest(pipeline_env, PREDICTIONS, "penguins", day)
    assert manifest is not None and manifest["model_version"] == champion
    table = read_partition(pipeline_env, "penguins", day)
    assert table is not None
    assert table.schema.field("prediction").type == pa.string()
    assert [f"proba_{label}" for label in SPECIES] == [
        n for n in table.column_names if n.startswith("proba_")
    ]
    frame = table.to_pandas()
    truth = penguins_frame()["species"]
    assert len(frame) == len(truth) == manifest["rows"]
    assert set(frame["prediction"]) <= set(SPECIES)
    assert frame[[f"proba_{s}" for s in SPECIES]].sum(axis=1).round(6).eq(1.0).all()
    # No id column in the table: each row's id is a hash of its features, unique per penguin.
    assert frame["id"].is_unique and frame["id"].str.fullmatch(r"[0-9a-f]{16}").all()
    # The same penguins the model was trained on: nearly all told apart.
    assert (
        frame["prediction"].value_counts().reindex(SPECIES) - truth.value_counts().reindex(SPECIES)
    ).abs().max() <= 5


def test_monitoring_checks_the_predictions_per_class(champion: str, pipeline_env: LocalStore) -> None:
    run = run_dag("penguins__score", {"ds": PENGUINS_SCORING_DS.isoformat()})
    assert run.state == "success", run.tasks
    monitored = run_dag("penguins__monitor", {"end": PENGUINS_SCORING_DS.isoformat(), "dry_run": True})
    assert monitored.state == "success", monitored.tasks
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=monitored.run_id, dag_ids="penguins__monitor", task_ids="check", key="return_value"
            )
        ).first()
        result = XComModel.deserialize_value(row)
    # The scored penguins are the training penguins: nothing drifted, inputs or outputs.
    assert result["data_drift"] is False and result["prediction_drift"] is False
    summary = json.loads(pipeline_env.read_bytes(layout.monitoring_summary_key("penguins", monitored.run_id)))
    checked = {column["column"] for column in summary["prediction_drift"]["columns"]}
    assert checked == {"prediction", *(f"proba_{s}" for s in SPECIES)}


def test_a_binary_model_with_yes_no_labels_predicts_them_with_the_named_positive_class(
    pipeline_env: LocalStore, client: MlflowClient, tmp_path, monkeypatch
) -> None:
    """A churn table whose target says "yes"/"no": trained, gated on the "yes" class, scored in words."""
    import shutil

    import yaml
    from dag_runs import REPO

    from mlops_pipeline.devtools.example_data import CHURN_TARGET, churn_batch, churn_scoring_batch

    models = tmp_path / "models"
    shutil.copytree(REPO / "include" / "models", models)
    spec = yaml.safe_load((REPO / "include" / "models" / "churn.yaml").read_text())
    spec |= {
        "name": "churn_words",
        "task": "binary",
        "target": {"column": CHURN_TARGET, "classes": ["no", "yes"], "positive": "yes"},
        "source": {"uri": "landing/churn_words/ds={ds}/*.csv", "format": "csv", "window_days": 7},
        "scoring": {"input": {"uri": "incoming/churn_words/ds={ds}/*.parquet", "format": "parquet"}},
        "labels": None,
    }
    (models / "churn_words.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))
    from datetime import date, timedelta

    for offset in range(7):
        day = date(2026, 2, 22) + timedelta(days=offset)
        frame = churn_batch(day)
        frame[CHURN_TARGET] = frame[CHURN_TARGET].map({0: "no", 1: "yes"})
        pipeline_env.write_bytes(
            f"landing/churn_words/ds={day}/batch.csv", frame.to_csv(index=False).encode()
        )
    import io

    buffer = io.BytesIO()
    churn_scoring_batch(date(2026, 3, 1)).to_parquet(buffer, index=False)
    pipeline_env.write_bytes("incoming/churn_words/ds=2026-03-01/part-0.parquet", buffer.getvalue())

    run = run_dag("churn_words__train", {"as_of": "2026-02-28"})
    assert run.state == "success", run.tasks
    version = client.get_model_version_by_alias("churn_words", "champion")
    metrics = client.get_run(version.run_id).data.metrics
    assert metrics["holdout_roc_auc"] > 0.75 and "holdout_recall" in metrics

    scored = run_dag("churn_words__score", {"ds": "2026-03-01"})
    assert scored.state == "success", scored.tasks
    table = read_partition(pipeline_env, "churn_words", "2026-03-01")
    assert table is not None and set(table.column("prediction").to_pylist()) <= {"no", "yes"}
    assert [n for n in table.column_names if n.startswith("proba_")] == ["proba_no", "proba_yes"]
