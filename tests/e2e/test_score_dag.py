"""End to end: the real `churn__score` DAG with `dag.test()`, on the file store and on an S3 API
server (moto over HTTP), against a real MLflow server.

A champion is trained first (the real `churn__train` DAG); then each test scores one day of the
example data's scoring inputs (four Parquet files a day, so `score` is mapped four times).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dag_runs import run_dag
from mlflow import MlflowClient

from mlops_pipeline import steps
from mlops_pipeline.devtools.example_data import scoring_keys, write_example_data
from mlops_pipeline.layout import PREDICTIONS, SHADOW
from mlops_pipeline.predictions import read_manifest, read_partition
from mlops_pipeline.settings import get_settings
from mlops_pipeline.spec import load_spec
from mlops_pipeline.steps import score as score_steps
from mlops_pipeline.steps import train as train_steps
from mlops_pipeline.store import LocalStore, ObjectStore, S3Store

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
ROWS_PER_DAY = 800
FILES_PER_DAY = 4


@pytest.fixture(scope="module", params=["file", "s3"])
def store(request, tmp_path_factory, mlflow_server, airflow_db, monkeypatch_module) -> Iterator[ObjectStore]:
    """The example data in a file store or in a bucket of the S3 server, and the tasks' settings."""
    if request.param == "file":
        store: ObjectStore = LocalStore(tmp_path_factory.mktemp("score-store"))
    else:
        # The tasks get the S3 endpoint and credentials from an Airflow connection only: with no
        # AWS_* variables around, boto3 could not sign a request without it.
        endpoint = request.getfixturevalue("moto_endpoint")
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "MLOPS_S3_ENDPOINT_URL"):
            monkeypatch_module.delenv(name, raising=False)
        connection = {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
        monkeypatch_module.setenv("AIRFLOW_CONN_MLOPS_S3", json.dumps(connection))
        monkeypatch_module.setenv("MLOPS_AWS_CONN_ID", "mlops_s3")
        credentials = {
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "region_name": "us-east-1",
        }
        store = S3Store(
            "mlops-unit", f"e2e-{uuid.uuid4().hex[:8]}", {"endpoint_url": endpoint, **credentials}
        )
    write_example_data(store, start=datetime(2026, 2, 9).date(), end=datetime(2026, 3, 12).date())
    monkeypatch_module.setenv("MLOPS_STORE_URI", store.root_uri)
    monkeypatch_module.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch_module.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    get_settings.cache_clear()
    yield store
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def client(mlflow_server) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)


@pytest.fixture(scope="module")
def champion(store, client) -> str:
    """Train through the real DAG; the champion (this run's model, or a better one already there)."""
    run = run_dag("churn__train", {"as_of": "2026-02-28", "window_days": 14})
    assert run.tasks["train"] == "success", run.tasks
    return client.get_model_version_by_alias("churn", "champion").version


def test_scoring_publishes_every_row_with_the_champion(store, champion, client) -> None:
    run = run_dag("churn__score", {"ds": "2026-03-01"})
    assert run.state == "success", run.tasks
    assert run.instances["score"] == FILES_PER_DAY

    table = read_partition(store, "churn", "2026-03-01")
    assert table is not None and table.num_rows == ROWS_PER_DAY
    assert table.column_names == [
        "id", "prediction", "proba_0", "proba_1", "model_name", "model_version", "run_id", "logical_ts",
    ]  # fmt: skip
    frame = table.to_pandas()
    assert set(frame["model_version"].astype(str)) == {champion}
    assert set(frame["run_id"].astype(str)) == {run.run_id}
    assert frame["id"].is_unique and frame["id"].str.startswith("c20260301").all()
    assert ((frame["proba_0"] + frame["proba_1"] - 1).abs() < 1e-9).all()

    manifest = read_manifest(store, PREDICTIONS, "churn", "2026-03-01")
    assert manifest["model_version"] == champion and manifest["input_rows"] == ROWS_PER_DAY
    assert len(manifest["files"]) == FILES_PER_DAY and manifest["quarantined_rows"] == 0
    assert sorted(f["input_key"] for f in manifest["files"]) == scoring_keys(datetime(2026, 3, 1).date())

    logged = client.search_runs(
        [client.get_experiment_by_name("churn-scoring").experiment_id],
        filter_string=f"tags.`airflow.dag_run_id` = '{run.run_id}'",
    )
    assert len(logged) == 1
    metrics = logged[0].data.metrics
    assert metrics["rows_in"] == ROWS_PER_DAY and metrics["rows_quarantined"] == 0
    assert metrics["rows_per_s"] > 0 and 0 <= metrics["missing_rate.total_charges"] < 0.2


@pytest.fixture(scope="module")
def alert_channels(monkeypatch_module, alert_sink, smtp_sink, webhook_env) -> tuple[list, list]:
    """Alerts of this module's runs to a local webhook and a local SMTP server: what each received."""
    url, posted = alert_sink
    env, mailed = smtp_sink
    for name, value in {
        **webhook_env(url),
        **env,
        "AIRFLOW__API__BASE_URL": "http://airflow.test:8080",
    }.items():
        monkeypatch_module.setenv(name, value)
    return posted, mailed


def test_unscorable_rows_are_quarantined_and_too_many_fail_the_run(store, champion, alert_channels) -> None:
    minor = run_dag("churn__score", {"ds": "2026-02-14"})  # 1% defective rows
    assert minor.state == "success", minor.tasks
    manifest = read_manifest(store, PREDICTIONS, "churn", "2026-02-14")
    assert manifest["quarantined_rows"] == 8
    assert manifest["rows"] == ROWS_PER_DAY - 8
    reason = json.loads(store.read_bytes(manifest["quarantine_reason"].split(store.root_uri + "/")[1]))
    assert {"type:data_usage_gb", "allowed:plan", "range:monthly_charges"} <= set(reason["rules"])

    defective = run_dag("churn__score", {"ds": "2026-03-10"})  # 40% defective: over the 5% limit
    assert defective.state == "failed"
    assert defective.tasks["publish"] == "failed" and defective.tasks["score"] == "success"
    assert read_partition(store, "churn", "2026-03-10") is None
    # The failure reached the webhook and the mailbox once, with the reason and a working link.
    posted, mailed = alert_channels
    (alert,) = [a for a in posted if a["run_id"] == defective.run_id]
    assert alert["kind"] == "task_failed" and alert["model"] == "churn" and alert["task_id"] == "publish"
    assert "could not be scored" in alert["reason"] and "over the limit" in alert["reason"]
    quoted = defective.run_id.replace(":", "%3A").replace("+", "%2B")
    assert alert["link"].startswith(f"http://airflow.test:8080/dags/churn__score/runs/{quoted}/tasks/publish")
    (subject,) = [m["Subject"] for m in mailed if defective.run_id in m.get_body().get_content()]
    assert subject.startswith("churn score: task publish failed: 320 of 800 input rows")


def test_a_missing_column_fails_the_file_with_its_name(store, champion, capfd) -> None:
    import pandas as pd

    key = "incoming/churn/ds=2026-03-06/part-001.parquet"
    frame = pd.read_parquet(store.uri(key) if isinstance(store, LocalStore) else _local(store, key))
    store.write_bytes(key, frame.drop(columns=["region"]).to_parquet(index=False))
    run = run_dag("churn__score", {"ds": "2026-03-06"})
    assert run.state == "failed" and run.tasks["score"] == "failed"
    assert "lacks column(s) ['region']" in capfd.readouterr().out
    assert read_partition(store, "churn", "2026-03-06") is None


def test_a_champion_that_does_not_fit_an_edited_spec_is_refused(store, champion) -> None:
    from datetime import date

    from mlops_pipeline.spec import ModelSpec

    data = load_spec(REPO / "include/models/churn.yaml").model_dump()
    data["features"].pop("age")  # the spec was edited after the champion was trained
    info = steps.RunInfo("churn__score", "manual__edited_spec", "test", "2026-03-07T00:00:00+00:00")
    with pytest.raises(steps.StepRejected, match=r"the model needs \['age'\], which the spec lacks"):
        score_steps.plan(ModelSpec.model_validate(data), store, date(2026, 3, 7), None, False, info)
    assert store.list("predictions/churn/ds=2026-03-07") == []


def _local(store: ObjectStore, key: str) -> str:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "file.parquet"
    store.download_file(key, path)
    return str(path)


def test_a_rerun_of_the_same_interval_replaces_the_partition_with_identical_bytes(store, champion) -> None:
    logical = datetime(2026, 3, 2, tzinfo=UTC)
    first = run_dag("churn__score", {"ds": "2026-03-02"}, logical_date=logical)
    assert first.state == "success", first.tasks
    before = read_manifest(store, PREDICTIONS, "churn", "2026-03-02")

    again = run_dag("churn__score", {"ds": "2026-03-02"}, logical_date=logical)
    assert again.state == "success" and again.run_id == first.run_id
    after = read_manifest(store, PREDICTIONS, "churn", "2026-03-02")

    assert after["generation"] == before["generation"] + 1
    assert [f["sha256"] for f in after["files"]] == [f["sha256"] for f in before["files"]]
    assert {f["key"] for f in after["files"]}.isdisjoint(f["key"] for f in before["files"])
    table = read_partition(store, "churn", "2026-03-02")
    assert table.num_rows == ROWS_PER_DAY  # the new file set only, never old + new


def test_a_pinned_version_is_honoured(store, champion) -> None:
    run = run_dag("churn__score", {"ds": "2026-03-07", "model_version": 1})
    assert run.state == "success", run.tasks
    frame = read_partition(store, "churn", "2026-03-07").to_pandas()
    assert set(frame["model_version"].astype(str)) == {"1"}


def test_shadow_scoring_writes_the_challengers_predictions_and_agreement(store, champion, client) -> None:
    spec = load_spec(REPO / "include/models/churn.yaml")
    run_info = steps.RunInfo(
        "test", f"challenger-{uuid.uuid4().hex[:6]}", "test", "2026-03-08T00:00:00+00:00"
    )
    manifest = train_steps.ingest(spec, store, datetime(2026, 3, 8).date(), 7)
    validated = train_steps.validate(spec, store, manifest, run_info)
    candidate = train_steps.train(spec, store, manifest, validated, run_info)
    challenger = train_steps.register(
        spec, manifest, candidate, {"report_json_uri": "not evaluated"}, run_info
    )["version"]
    assert challenger != client.get_model_version_by_alias("churn", "champion").version

    run = run_dag("churn__score", {"ds": "2026-03-03", "shadow": True})
    assert run.state == "success", run.tasks
    shadow = read_partition(store, "churn", "2026-03-03", area=SHADOW).to_pandas()
    assert len(shadow) == ROWS_PER_DAY and set(shadow["model_version"].astype(str)) == {challenger}
    agreement = read_manifest(store, PREDICTIONS, "churn", "2026-03-03")["shadow_agreement"]
    assert agreement["rows"] == ROWS_PER_DAY
    assert 0.5 < agreement["label_agreement"] <= 1.0 and 0 <= agreement["mean_abs_diff"] < 0.5
    logged = client.search_runs(
        [client.get_experiment_by_name("churn-scoring").experiment_id],
        filter_string=f"tags.`airflow.dag_run_id` = '{run.run_id}'",
    )
    assert logged[0].data.metrics["shadow_label_agreement"] == pytest.approx(agreement["label_agreement"])


def test_a_crash_before_the_manifest_leaves_nothing_visible_and_the_next_run_publishes(
    store, champion, monkeypatch
) -> None:
    logical = datetime(2026, 3, 4, tzinfo=UTC)
    monkeypatch.setenv(steps.FAULT_POINT_VAR, "before_manifest")
    crashed = run_dag("churn__score", {"ds": "2026-03-04"}, logical_date=logical)
    assert crashed.state == "failed" and crashed.tasks["publish"] == "failed"
    assert read_partition(store, "churn", "2026-03-04") is None
    staged = store.list("predictions/churn/ds=2026-03-04/_runs")
    parts = [key for key in staged if key.rsplit("/", 1)[-1].startswith("part-")]
    id_hashes = [key for key in staged if key.rsplit("/", 1)[-1].startswith("ids-")]
    assert len(parts) == FILES_PER_DAY, "the crashed run's parts stay staged, invisible to readers"
    assert len(id_hashes) == FILES_PER_DAY, "each part has its file's id hashes staged beside it"

    monkeypatch.delenv(steps.FAULT_POINT_VAR)
    rerun = run_dag("churn__score", {"ds": "2026-03-04"}, logical_date=logical)
    assert rerun.state == "success", rerun.tasks
    assert read_partition(store, "churn", "2026-03-04").num_rows == ROWS_PER_DAY
    assert not set(staged) & set(store.list("predictions/churn/ds=2026-03-04/_runs")), "leftovers cleaned"


def test_a_tampered_artifact_is_refused_before_deserialization(
    store, champion, client, mlflow_stack_dir, capfd
) -> None:
    version = client.get_model_version_by_alias("churn", "champion")
    model_id = version.source.removeprefix("models:/")  # MLflow 3: the version's source is its logged model
    (artifact,) = [p for p in mlflow_stack_dir.rglob("model.skops") if model_id in str(p)]
    original = artifact.read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0x01
    artifact.write_bytes(bytes(tampered))
    try:
        run = run_dag("churn__score", {"ds": "2026-03-05"})
    finally:
        artifact.write_bytes(original)
    assert run.state == "failed" and run.tasks["plan"] == "failed"
    assert "refusing to load" in capfd.readouterr().out
    assert store.list("predictions/churn/ds=2026-03-05") == []
