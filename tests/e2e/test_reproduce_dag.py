"""End to end: `churn__reproduce` (`dag.test()`, real MLflow) rebuilds a fresh version exactly,
and names the cause when what it was built from changed.

The first rebuild must give bit-identical holdout predictions and the same model file sha256
while the environment differs only in the recorded code version (set apart on purpose: it is
reported, and it changes nothing). Then one value of the stored snapshot is changed: the rebuild
is refused with `data` as the first difference, and the version is tagged `different`.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dag_runs import run_dag
from mlflow import MlflowClient

from mlops_pipeline import layout
from mlops_pipeline.ingest import snapshot_key_of_uri
from mlops_pipeline.settings import get_settings
from mlops_pipeline.store import LocalStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(mlflow_server) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)


@pytest.fixture(scope="module")
def champion(pipeline_env, client, monkeypatch_module) -> str:
    monkeypatch_module.setenv("MLOPS_CODE_VERSION", "trained-at-this-commit")
    get_settings.cache_clear()
    run = run_dag("churn__train", {"as_of": "2026-02-28", "window_days": 7})
    monkeypatch_module.delenv("MLOPS_CODE_VERSION")
    get_settings.cache_clear()
    assert run.state == "success", run.tasks
    return client.get_model_version_by_alias("churn", "champion").version


def _report(store: LocalStore, run_id: str) -> dict:
    return json.loads(store.read_bytes(layout.reproduction_report_key("churn", run_id)))


def test_a_fresh_version_is_rebuilt_bit_identically(champion, client, pipeline_env: LocalStore) -> None:
    version = client.get_model_version("churn", champion)
    tags = client.get_run(version.run_id).data.tags
    assert len(tags["spec_sha256"]) == 64 and len(tags["lock_sha256"]) == 64
    assert tags["code_version"] == "trained-at-this-commit"

    run = run_dag("churn__reproduce", {"version": int(champion)})
    assert run.state == "success", run.tasks
    report = _report(pipeline_env, run.run_id)
    assert report["identical"] is True and report["first_difference"] is None
    assert [check["name"] for check in report["checks"]] == [
        "spec",
        "data",
        "holdout_predictions",
        "artifact_sha256",
    ]
    assert version.tags["artifact_sha256"] in report["checks"][3]["detail"]
    assert report["environment_differences"] == [f"code_version trained-at-this-commit -> {_code_now()}"]
    assert client.get_model_version("churn", champion).tags["reproduction"] == "identical"


def _code_now() -> str:
    from mlops_pipeline.candidates import code_version

    return code_version(None)


def test_mlops_reproduce_rebuilds_it_too(champion, capsys) -> None:
    from mlops_pipeline.devtools.cli import main

    assert main(["reproduce", "churn", champion]) == 0
    out = capsys.readouterr().out
    assert "ok   holdout_predictions: " in out and "bit-identically" in out
    assert f"churn v{champion} was rebuilt exactly from its lineage" in out
    assert main(["reproduce", "churn", "99"]) == 2
    assert "churn v99 does not exist" in capsys.readouterr().err


def test_an_altered_snapshot_is_named_as_the_cause(champion, client, pipeline_env: LocalStore) -> None:
    data_uri = client.get_model_version("churn", champion).tags["data_uri"]
    key = snapshot_key_of_uri(pipeline_env, data_uri)
    assert key is not None
    table = pq.read_table(io.BytesIO(pipeline_env.read_bytes(key)))
    column = table.column_names.index("monthly_charges")
    values = table.column(column).to_pylist()
    values[0] = "1" + str(values[0])  # one cell, still a valid number
    altered = table.set_column(column, "monthly_charges", pa.array(values, pa.string()))
    buffer = io.BytesIO()
    pq.write_table(altered, buffer)
    pipeline_env.write_bytes(key, buffer.getvalue())

    run = run_dag("churn__reproduce", {"version": int(champion)})
    assert run.state == "failed" and run.tasks["reproduce"] == "failed"
    report = _report(pipeline_env, run.run_id)
    assert report["identical"] is False
    assert report["first_difference"].startswith("data: the snapshot was altered since training")
    assert [check["name"] for check in report["checks"]] == ["spec", "data"]
    assert client.get_model_version("churn", champion).tags["reproduction"] == "different"

    from mlops_pipeline.devtools.cli import main

    assert main(["reproduce", "churn", champion]) == 1
