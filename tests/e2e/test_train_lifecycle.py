"""End to end: the real `churn__train` and `churn__rollback` DAGs run with `dag.test()` against a
real MLflow server and a file store holding the example data.

The scenario builds on itself like a model's life does (first champion, a refused worse
candidate, a defective batch, a second champion, a rollback), so the module-scoped fixtures run
each DAG once and the tests check what each run left behind.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from dag_runs import Run, run_dag
from mlflow import MlflowClient

from mlops_pipeline import layout
from mlops_pipeline.registry import promotion_history
from mlops_pipeline.store import LocalStore

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def versions(client: MlflowClient, name: str = "churn") -> list[str]:
    return sorted((v.version for v in client.search_model_versions(f"name='{name}'")), key=int)


@pytest.fixture(scope="module")
def client(mlflow_server) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)


@pytest.fixture(scope="module")
def first_run(pipeline_env) -> Run:
    return run_dag("churn__train", {"as_of": "2026-02-28"})


def test_first_run_promotes_a_champion_with_lineage(first_run, client, pipeline_env: LocalStore) -> None:
    assert first_run.state == "success", first_run.tasks
    assert set(first_run.tasks.values()) == {"success"}

    champion = client.get_model_version_by_alias("churn", "champion")
    assert champion.version == "1"
    assert client.get_model_version_by_alias("churn", "challenger").version == "1"
    tags = champion.tags
    assert re.fullmatch(r"[0-9a-f]{64}", tags["artifact_sha256"])
    assert tags["gates_passed"] == "true"
    assert tags["airflow.dag_run_id"] == first_run.run_id

    # The data sha256 is the snapshot's: recompute it from the stored bytes.
    manifests = [k for k in pipeline_env.list("raw/churn/ds=2026-02-28") if k.endswith("manifest.json")]
    assert len(manifests) == 1
    manifest = json.loads(pipeline_env.read_bytes(manifests[0]))
    assert tags["data_sha256"] == manifest["sha256"]
    snapshot_key = manifests[0].replace("manifest.json", "snapshot.parquet")
    import pyarrow.parquet as pq

    from mlops_pipeline.ingest import table_content_sha256

    stored = pq.read_table(io.BytesIO(pipeline_env.read_bytes(snapshot_key)))
    assert table_content_sha256(stored) == manifest["sha256"]
    assert manifest["rows"] == 28 * 800

    run = client.get_run(champion.run_id)
    assert run.data.tags["data_sha256"] == manifest["sha256"]
    assert run.data.tags["code_version"]
    assert run.data.tags["version.scikit-learn"]
    assert run.data.params["estimator"] == "hist_gradient_boosting"
    assert run.data.metrics["holdout_roc_auc"] > 0.75
    assert run.data.metrics["gate_passed"] == 1.0
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == manifest["sha256"][:36]
    assert dataset_input.dataset.source and manifest["sha256"][:16] in dataset_input.dataset.source

    prefix = f"reports/churn/{layout.run_segment(first_run.run_id)}"
    report = json.loads(pipeline_env.read_bytes(f"{prefix}/gate_report.json"))
    assert report["passed"] is True and report["champion"] is None
    assert "PASSED" in pipeline_env.read_bytes(f"{prefix}/gate_report.html").decode()
    validation = pipeline_env.list(f"validation/churn/{layout.run_segment(first_run.run_id)}")
    assert any(key.endswith("index.html") for key in validation), "Data Docs were not published"

    (record,) = promotion_history(pipeline_env, "churn")
    assert (record.action, record.from_version, record.to_version) == ("promote", None, "1")
    assert record.data_sha256 == manifest["sha256"]
    assert record.gate_report_uri and record.gate_report_uri.endswith("gate_report.json")


@pytest.fixture(scope="module")
def worse_run(first_run, pipeline_env, tmp_path_factory, monkeypatch_module, client) -> tuple[Run, list[str]]:
    """The same model with a crippled estimator: its candidate must lose against the champion."""
    models = tmp_path_factory.mktemp("worse-models")
    spec = (REPO / "include/models/churn.yaml").read_text()
    crippled = "params: {max_iter: 2, learning_rate: 0.05, max_depth: 1}"
    spec = re.sub(r"params: \{max_iter: 200[^}]*\}", crippled, spec)
    assert crippled in spec
    (models / "churn.yaml").write_text(spec)
    monkeypatch_module.setenv("MLOPS_MODELS_DIR", str(models))
    before = versions(client)
    run = run_dag("churn__train", {"as_of": "2026-02-28"})
    monkeypatch_module.delenv("MLOPS_MODELS_DIR")
    return run, before


def test_a_worse_candidate_is_refused_and_the_champion_stays(worse_run, client, pipeline_env) -> None:
    run, before = worse_run
    assert run.state == "failed"
    assert run.tasks["evaluate"] == "failed"
    assert run.tasks["register"] == "upstream_failed" and run.tasks["promote"] == "upstream_failed"
    assert versions(client) == before, "a refused candidate must not become a model version"
    assert client.get_model_version_by_alias("churn", "champion").version == "1"

    report = json.loads(
        pipeline_env.read_bytes(f"reports/churn/{layout.run_segment(run.run_id)}/gate_report.json")
    )
    assert report["passed"] is False
    failed = {check["name"] for check in report["checks"] if not check["passed"]}
    assert "no_regression:roc_auc" in failed
    assert report["champion"]["version"] == "1"
    assert len(promotion_history(pipeline_env, "churn")) == 1


@pytest.fixture(scope="module")
def defective_run(first_run, client) -> tuple[Run, list[str]]:
    before = versions(client)
    return run_dag("churn__train", {"as_of": "2026-03-10", "window_days": 1}), before


def test_a_defective_batch_fails_validation_and_is_quarantined(defective_run, client, pipeline_env) -> None:
    import io

    import pandas as pd

    run, before = defective_run
    assert run.state == "failed"
    assert run.tasks["ingest"] == "success"
    assert run.tasks["validate"] == "failed"
    assert run.tasks["train"] == "upstream_failed"
    assert versions(client) == before

    prefix = f"quarantine/churn/{layout.run_segment(run.run_id)}"
    rows = pd.read_parquet(io.BytesIO(pipeline_env.read_bytes(f"{prefix}/rows.parquet")))
    reason = json.loads(pipeline_env.read_bytes(f"{prefix}/reason.json"))
    # The example data's defective export breaks about 40% of its 800 rows: all are quarantined.
    assert 250 <= len(rows) <= 400
    assert rows["_reasons"].str.len().gt(0).all()
    assert json.dumps(reason).count("range:monthly_charges") >= 1
    assert client.get_model_version_by_alias("churn", "champion").version == "1"


def test_dry_run_registers_nothing(first_run, client, pipeline_env) -> None:
    before = versions(client)
    run = run_dag("churn__train", {"as_of": "2026-02-28", "dry_run": True})
    assert run.state == "success"
    assert run.tasks["evaluate"] == "success"
    assert run.tasks["register"] == "skipped" and run.tasks["promote"] == "skipped"
    assert versions(client) == before


@pytest.fixture(scope="module")
def second_champion(first_run, defective_run, worse_run, client) -> Run:
    """A later window (with the minor-defect day quarantined) gives champion v2."""
    return run_dag("churn__train", {"as_of": "2026-03-08"})


def test_second_run_is_compared_with_the_champion_and_promoted(second_champion, client, pipeline_env) -> None:
    assert second_champion.state == "success", second_champion.tasks
    champion = client.get_model_version_by_alias("churn", "champion")
    report = json.loads(
        pipeline_env.read_bytes(
            f"reports/churn/{layout.run_segment(second_champion.run_id)}/gate_report.json"
        )
    )
    assert report["champion"]["version"] == "1"
    assert any(check["name"] == "no_regression:roc_auc" and check["passed"] for check in report["checks"])
    history = promotion_history(pipeline_env, "churn")
    assert (history[-1].from_version, history[-1].to_version) == ("1", champion.version)
    # 2026-02-14 is in this window and carries ~1% defective rows: quarantined, run continues.
    assert client.get_run(champion.run_id).data.tags["mlops.quarantined_rows"] not in ("", "0")


def test_rollback_restores_the_previous_champion(second_champion, client, pipeline_env) -> None:
    current = client.get_model_version_by_alias("churn", "champion").version
    assert current != "1"

    run = run_dag("churn__rollback", {"reason": "e2e: new champion misbehaves"})

    assert run.state == "success"
    assert client.get_model_version_by_alias("churn", "champion").version == "1"
    record = promotion_history(pipeline_env, "churn")[-1]
    assert (record.action, record.from_version, record.to_version) == ("rollback", current, "1")
    assert record.reason == "e2e: new champion misbehaves"


def test_rollback_refuses_a_version_that_never_passed_its_gates(second_champion, client) -> None:
    from mlflow.entities.model_registry import ModelVersion  # noqa: F401 - documents the type in use

    version = versions(client)[-1]
    client.set_model_version_tag("churn", version, "gates_passed", "false")
    try:
        run = run_dag("churn__rollback", {"to_version": int(version), "reason": "try a bad one"})
    finally:
        client.set_model_version_tag("churn", version, "gates_passed", "true")
    assert run.state == "failed"
    assert client.get_model_version_by_alias("churn", "champion").version == "1"


@pytest.fixture(scope="module")
def api(tmp_path_factory, monkeypatch_module, pipeline_env):
    """Airflow's real API server app, in process, with the project's plugin and one admin user."""
    from fastapi.testclient import TestClient

    passwords = tmp_path_factory.mktemp("auth") / "passwords.json"
    passwords.write_text(json.dumps({"admin": "s3cret-for-tests"}))
    monkeypatch_module.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    monkeypatch_module.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    monkeypatch_module.setenv("AIRFLOW__API__BASE_URL", "http://testserver")
    from airflow.api_fastapi.app import create_app

    client = TestClient(create_app(), follow_redirects=False)
    token = client.post("/auth/token", json={"username": "admin", "password": "s3cret-for-tests"})
    assert token.status_code == 201, token.text
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client


def test_task_links_lead_to_the_runs_reports(api, first_run, worse_run, mlflow_server, client) -> None:
    def links(run_id: str, task_id: str) -> dict:
        response = api.get(f"/api/v2/dags/churn__train/dagRuns/{run_id}/taskInstances/{task_id}/links")
        assert response.status_code == 200, response.text
        return {name: url for name, url in response.json()["extra_links"].items() if url}

    base = f"http://testserver/mlops/runs/churn__train/{first_run.run_id}"
    assert links(first_run.run_id, "validate") == {"Data Docs": f"{base}/data-docs"}
    assert links(first_run.run_id, "evaluate") == {
        "Gate report": f"{base}/gate-report",
        "MLflow run": f"{base}/mlflow-run",
    }

    docs = api.get(f"/mlops/runs/churn__train/{first_run.run_id}/data-docs")
    assert docs.status_code == 200 and "compiled by Great Expectations" in docs.text
    assert "monthly_charges" in docs.text
    # The refused candidate's report is reachable too, although its evaluate task returned nothing.
    refused, _ = worse_run
    report = api.get(f"/mlops/runs/churn__train/{refused.run_id}/gate-report")
    assert report.status_code == 200 and "FAILED" in report.text

    champion = client.get_model_version_by_alias("churn", "champion")
    redirect = api.get(f"/mlops/runs/churn__train/{first_run.run_id}/mlflow-run")
    assert redirect.status_code == 307
    assert redirect.headers["location"].startswith(mlflow_server)
    assert redirect.headers["location"].endswith(f"/runs/{champion.run_id}")

    assert api.get("/mlops/runs/churn__train/no-such-run/gate-report").status_code == 404
    anonymous = api.get(
        f"/mlops/runs/churn__train/{first_run.run_id}/data-docs", headers={"Authorization": ""}
    )
    assert anonymous.status_code in (401, 403)
