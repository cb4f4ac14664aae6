"""The lifecycle steps outside Airflow: the happy path on the real diabetes data, and each step's refusals.

MLflow is real (a SQLite tracking store and local artifacts in a temp dir), the store is a file store.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from mlops_pipeline import candidates, layout, registry, steps
from mlops_pipeline.devtools.example_data import DIABETES_DS, write_example_data
from mlops_pipeline.ingest import SnapshotManifest
from mlops_pipeline.settings import get_settings
from mlops_pipeline.spec import ModelSpec, load_spec
from mlops_pipeline.steps import rollback as rollback_steps
from mlops_pipeline.steps import train as train_steps
from mlops_pipeline.store import LocalStore

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow
RUN = steps.RunInfo(
    dag_id="diabetes__train", dag_run_id="manual__1", actor="tester", event_time="2026-01-02T00:00:00"
)


@pytest.fixture(scope="module")
def diabetes() -> ModelSpec:
    return load_spec(REPO / "include/models/diabetes.yaml")


@pytest.fixture(scope="module")
def churn() -> ModelSpec:
    return load_spec(REPO / "include/models/churn.yaml")


@pytest.fixture(scope="module")
def store(tmp_path_factory, monkeypatch_module) -> Iterator[LocalStore]:
    import mlflow

    root = tmp_path_factory.mktemp("steps")
    store = LocalStore(root / "store")
    write_example_data(store, start=datetime.date(2026, 3, 9), end=datetime.date(2026, 3, 11))
    monkeypatch_module.chdir(root)
    monkeypatch_module.setenv("MLOPS_STORE_URI", store.root_uri)
    monkeypatch_module.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    monkeypatch_module.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    get_settings.cache_clear()
    registry.connect(f"sqlite:///{root}/mlflow.db")
    mlflow.create_experiment("diabetes", artifact_location=(root / "artifacts").as_uri())
    yield store
    get_settings.cache_clear()
    mlflow.set_tracking_uri(None)


def test_the_steps_chain_from_ingest_to_promotion(diabetes: ModelSpec, store: LocalStore) -> None:
    manifest = train_steps.ingest(diabetes, store, DIABETES_DS, None)
    validated = train_steps.validate(diabetes, store, manifest, RUN)
    assert validated["passed"] and validated["clean_rows"] == 442
    candidate = train_steps.train(diabetes, store, manifest, validated, RUN)
    evaluation = train_steps.evaluate(diabetes, store, validated, candidate, RUN)
    assert evaluation["passed"] and evaluation["champion_version"] is None
    assert (
        json.loads(store.read_bytes(layout.gate_report_key("diabetes", "manual__1", "json")))["passed"]
        is True
    )
    registered = train_steps.register(diabetes, manifest, candidate, evaluation, RUN)
    promoted = train_steps.promote(diabetes, store, registered, RUN)
    assert promoted["champion_version"] == registered["version"]
    assert promoted["actor"] == "tester" and promoted["at"] == RUN.event_time

    # A second identical candidate is compared with the champion on the same holdout and passes.
    second = train_steps.evaluate(
        diabetes, store, validated, train_steps.train(diabetes, store, manifest, validated, RUN), RUN
    )
    assert second["champion_version"] == registered["version"]


def test_train_logs_the_snapshot_as_dataset_and_its_metrics_sample(
    diabetes: ModelSpec, store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run names the snapshot (sha256 digest, URI, clean columns) and says how many training
    rows its train_* metrics come from; read back from MLflow."""
    import functools

    from mlops_pipeline import evaluation

    run = steps.RunInfo("diabetes__train", "metrics_sample", "t", "t")
    manifest = train_steps.ingest(diabetes, store, DIABETES_DS, None)
    validated = train_steps.validate(diabetes, store, manifest, run)
    train = pd.read_parquet(store.root / validated["train_key"])
    holdout = pd.read_parquet(store.root / validated["holdout_key"])
    clean = pd.concat([train, holdout])
    client = registry.configured_client()

    # 442 rows: under the sample size, every training row counts.
    logged = client.get_run(train_steps.train(diabetes, store, manifest, validated, run)["run_id"])
    assert logged.data.params["train_metrics_rows"] == logged.data.params["train_rows"] == str(len(train))
    pipeline = registry.load_verified(logged.data.tags["model_uri"], logged.data.tags["artifact_sha256"])
    full = evaluation.model_metrics(pipeline, train, diabetes)
    metrics = logged.data.metrics
    assert {k.removeprefix("train_"): v for k, v in metrics.items() if k.startswith("train_")} == (
        pytest.approx(full, abs=1e-9)
    )
    dataset = logged.inputs.dataset_inputs[0].dataset
    assert dataset.digest == manifest["sha256"][: candidates.DATASET_DIGEST_CHARS]
    assert json.loads(dataset.source)["uri"] == manifest["data_uri"]
    assert [c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]] == list(clean.columns)
    assert json.loads(dataset.profile)["num_rows"] == len(clean)

    # A sample smaller than the training rows: the metrics are those of exactly that sample.
    monkeypatch.setattr(evaluation, "metrics_sample", functools.partial(evaluation.metrics_sample, rows=100))
    sampled = client.get_run(train_steps.train(diabetes, store, manifest, validated, run)["run_id"])
    assert sampled.data.params["train_metrics_rows"] == "100"
    expected = evaluation.model_metrics(
        pipeline, evaluation.metrics_sample(train, diabetes.split.seed), diabetes
    )
    assert sampled.data.metrics["train_rmse"] == pytest.approx(expected["rmse"], abs=1e-9)
    assert sampled.data.metrics["train_rmse"] != pytest.approx(full["rmse"], abs=1e-9)


def test_validate_stores_the_split_of_the_clean_rows_once(churn: ModelSpec, store: LocalStore) -> None:
    """The two sides validate stores are exactly `split_frame` of its clean rows, in their order;
    what it says of missing values holds for all clean rows; train and evaluate read these files."""
    from mlops_pipeline.candidates import CleanColumns
    from mlops_pipeline.ingest import read_snapshot_table
    from mlops_pipeline.training import split_frame
    from mlops_pipeline.validation import validate_frame

    manifest = train_steps.ingest(churn, store, datetime.date(2026, 3, 9), 1)
    run = steps.RunInfo("churn__train", "split_once", "t", "t")
    validated = train_steps.validate(churn, store, manifest, run)
    clean = validate_frame(read_snapshot_table(store, SnapshotManifest(**manifest)), churn).clean
    split = split_frame(clean, churn)
    train = pd.read_parquet(store.root / validated["train_key"])
    holdout = pd.read_parquet(store.root / validated["holdout_key"])
    pd.testing.assert_frame_equal(train, split.train.reset_index(drop=True))
    pd.testing.assert_frame_equal(holdout, split.holdout.reset_index(drop=True))
    assert (validated["train_rows"], validated["holdout_rows"]) == (len(train), len(holdout))
    assert validated["clean_rows"] == len(clean) == len(train) + len(holdout)
    assert set(validated["columns_with_missing"]) == CleanColumns.of_frame(clean).columns_with_missing


def _files(store: LocalStore, *prefixes: str) -> dict[str, bytes]:
    return {key: store.read_bytes(key) for prefix in prefixes for key in store.list(prefix)}


def test_a_run_id_that_reads_like_another_never_touches_its_evidence(
    churn: ModelSpec, store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collision of issue 13: a run triggered with the earlier run's sanitised id writes to its
    own folders; a forced collision of folders is refused; the first run's files stay byte-identical."""
    manifest = train_steps.ingest(churn, store, datetime.date(2026, 3, 9), 1)
    first = steps.RunInfo("churn__train", "manual__2026-03-09T00:00:00+00:00", "t", "t", "2026-03-09T08:00")
    train_steps.validate(churn, store, manifest, first)
    prefixes = (
        layout.validation_prefix(churn.name, first.dag_run_id),
        layout.quarantine_prefix(churn.name, first.dag_run_id),
    )
    original = _files(store, *prefixes)
    assert layout.evidence_owner_key(prefixes[0]) in original

    lookalike = steps.RunInfo(
        "churn__train", "manual__2026-03-09T00_00_00_00_00", "t", "t", "2026-03-09T09:00"
    )
    train_steps.validate(churn, store, manifest, lookalike)
    assert _files(store, *prefixes) == original

    # Were the folders to collide (a reused run id on a new Airflow database, a forged id): refused.
    first_segment = layout.run_segment(first.dag_run_id)
    monkeypatch.setattr(layout, "run_segment", lambda run_id: first_segment)
    with pytest.raises(steps.StepRejected, match="never overwritten"):
        train_steps.validate(churn, store, manifest, lookalike)
    monkeypatch.undo()
    assert _files(store, *prefixes) == original

    # A retry of the first run itself may write its own folder again.
    train_steps.validate(churn, store, manifest, first)


def test_ingest_refuses_a_window_without_data(diabetes: ModelSpec, store: LocalStore) -> None:
    with pytest.raises(steps.StepRejected, match="no"):
        train_steps.ingest(diabetes, store, datetime.date(2020, 1, 1), 3)


def test_validate_refuses_the_defective_batch_after_publishing_its_quarantine(
    churn: ModelSpec, store: LocalStore
) -> None:
    manifest = train_steps.ingest(churn, store, datetime.date(2026, 3, 10), 1)
    run = steps.RunInfo("churn__train", "manual__defect", "tester", "2026-03-10T00:00:00")
    with pytest.raises(steps.StepRejected, match=r"over the limit of 5\.0%.*quarantined rows: file://"):
        train_steps.validate(churn, store, manifest, run)
    rows = pd.read_parquet(store.root / layout.quarantine_rows_key("churn", "manual__defect"))
    assert len(rows) == 320
    assert store.exists(layout.data_docs_key("churn", "manual__defect"))
    assert not store.exists(layout.clean_rows_key("churn", "manual__defect", "train"))
    assert not store.exists(layout.clean_rows_key("churn", "manual__defect", "holdout"))


def test_train_refuses_a_single_class(churn: ModelSpec, store: LocalStore) -> None:
    manifest = train_steps.ingest(churn, store, datetime.date(2026, 3, 9), 1)
    validated = train_steps.validate(
        churn, store, manifest, steps.RunInfo("churn__train", "single", "t", "t")
    )
    train = pd.read_parquet(store.root / validated["train_key"])
    train["churned"] = 0
    train.to_parquet(store.root / validated["train_key"], index=False)
    with pytest.raises(steps.StepRejected, match="single class"):
        train_steps.train(churn, store, manifest, validated, RUN)


def test_evaluate_refuses_a_candidate_below_the_floors(diabetes: ModelSpec, store: LocalStore) -> None:
    strict = diabetes.model_copy(update={"gates": diabetes.gates.model_copy(update={"floors": {"r2": 0.99}})})
    manifest = train_steps.ingest(strict, store, DIABETES_DS, None)
    run = steps.RunInfo("diabetes__train", "strict", "t", "t")
    validated = train_steps.validate(strict, store, manifest, run)
    candidate = train_steps.train(strict, store, manifest, validated, run)
    with pytest.raises(steps.StepRejected, match=r"gate failed for diabetes: .*r2"):
        train_steps.evaluate(strict, store, validated, candidate, run)
    assert (
        json.loads(store.read_bytes(layout.gate_report_key("diabetes", "strict", "json")))["passed"] is False
    )


def test_rollback_without_history_is_refused(churn: ModelSpec, store: LocalStore) -> None:
    with pytest.raises(steps.StepRejected, match="no champion"):
        rollback_steps.rollback(churn, store, None, "because", RUN)
