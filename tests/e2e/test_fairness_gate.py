"""End to end: a fairness gate in the real `<model>__train` DAG (`dag.test()`, real MLflow).

A constructed example: the churn data with a sensitive column of its own, `customer_segment`
("new" below 12 months of tenure, else "established"), kept for evaluation only. Tenure drives
churn, so the model predicts churn far more often for new customers; with a demographic-parity
limit of 0.05 the candidate must be refused, its gate report showing each group, and nothing
registered. The column must never reach the model.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import pytest
from dag_runs import run_dag
from mlflow import MlflowClient
from mlflow.models import get_model_info

from mlops_pipeline import layout
from mlops_pipeline.devtools.example_data import churn_batch
from mlops_pipeline.store import LocalStore

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
AS_OF = datetime.date(2026, 2, 28)
WINDOW_DAYS = 3  # 2,400 rows: both segments keep hundreds of holdout rows
FAIRNESS = """
  fairness:
    columns: [customer_segment]
    max_demographic_parity_difference: 0.05
    min_group_rows: 100
"""


@pytest.fixture(scope="module")
def refused_run(pipeline_env: LocalStore, tmp_path_factory, monkeypatch_module):
    for offset in range(WINDOW_DAYS):
        day = AS_OF - datetime.timedelta(days=offset)
        frame = churn_batch(day)
        tenure = frame["tenure_months"].astype("float64")
        frame["customer_segment"] = ["new" if months < 12 else "established" for months in tenure]
        key = f"landing/churn_fair/ds={day.isoformat()}/batch.csv"
        pipeline_env.write_bytes(key, frame.to_csv(index=False).encode())
    spec = (REPO / "include/models/churn.yaml").read_text()
    spec = spec.replace("name: churn\n", "name: churn_fair\n").replace(
        "landing/churn/", "landing/churn_fair/"
    )
    spec = re.sub(r"\nscoring:.*", "\n", spec, flags=re.S)  # train only
    spec = spec.replace("\ngates:\n", "\ngates:\n" + FAIRNESS.strip("\n") + "\n")
    models = tmp_path_factory.mktemp("fair-models")
    (models / "churn_fair.yaml").write_text(spec)
    monkeypatch_module.setenv("MLOPS_MODELS_DIR", str(models))
    run = run_dag("churn_fair__train", {"as_of": AS_OF.isoformat(), "window_days": WINDOW_DAYS})
    monkeypatch_module.delenv("MLOPS_MODELS_DIR")
    return run


def test_a_candidate_over_the_parity_limit_is_refused_with_each_group_reported(
    refused_run, pipeline_env: LocalStore, mlflow_server: str
) -> None:
    assert refused_run.state == "failed", refused_run.tasks
    assert refused_run.tasks["train"] == "success"
    assert refused_run.tasks["evaluate"] == "failed"
    assert refused_run.tasks["register"] == "upstream_failed"

    prefix = f"reports/churn_fair/{layout.run_segment(refused_run.run_id)}"
    report = json.loads(pipeline_env.read_bytes(f"{prefix}/gate_report.json"))
    assert report["passed"] is False
    (check,) = [c for c in report["checks"] if c["kind"] == "fairness"]
    assert check["name"] == "fairness:customer_segment:demographic_parity_difference"
    assert not check["passed"] and check["value"] > 0.05
    # Everything else passed: the refusal is the fairness gate's alone.
    assert [c["name"] for c in report["checks"] if not c["passed"]] == [check["name"]]
    groups = {g["group"]: g for g in report["fairness"]["groups"]}
    assert set(groups) == {"new", "established"} and all(g["gated"] for g in groups.values())
    rates = {name: g["metrics"]["selection_rate"] for name, g in groups.items()}
    assert rates["new"] - rates["established"] == pytest.approx(check["value"])
    assert (
        "Fairness: the candidate per group" in pipeline_env.read_bytes(f"{prefix}/gate_report.html").decode()
    )

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    assert not client.search_model_versions("name='churn_fair'"), "a refused candidate was registered"
    (candidate_run,) = client.search_runs(
        [client.get_experiment_by_name("churn_fair").experiment_id], "tags.gate_passed = 'false'"
    )
    (logged,) = client.search_logged_models([candidate_run.info.experiment_id])
    inputs = [column.name for column in get_model_info(logged.model_uri).signature.inputs.inputs]
    assert "customer_segment" not in inputs and "tenure_months" in inputs
