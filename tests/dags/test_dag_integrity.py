"""DAG integrity: every DAG file parses, cheaply, and every DAG carries what operators rely on.

These tests parse the real `dags/` folder with Airflow's own DagBag, as the DAG processor does.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
HEAVY = ("sklearn", "mlflow", "great_expectations", "evidently")
MODELS = sorted(path.stem for path in (REPO / "include" / "models").glob("*.yaml"))
SCORED = ["churn"]  # the example specs with a scoring section
EXPECTED_DAGS = {f"{m}__{kind}" for m in MODELS for kind in ("train", "rollback")} | {
    f"{m}__{kind}" for m in SCORED for kind in ("score", "monitor")
}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_every_dag_file_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == EXPECTED_DAGS


def test_parsing_imports_no_heavy_library() -> None:
    # A fresh interpreter: this test process may already hold sklearn or mlflow from other tests.
    script = (
        "import json, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS)!r})\n"
        f"print(json.dumps({{'dags': len(bag.dags), 'errors': list(bag.import_errors),"
        f" 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["errors"] == []
    assert result["dags"] == len(EXPECTED_DAGS)
    assert result["heavy"] == [], f"parsing the DAGs imported {result['heavy']}"


def test_every_dag_has_tags_doc_and_owner(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 40, f"{dag_id} has no doc_md"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"


def test_lifecycle_dags_run_one_at_a_time_and_retry_external_calls(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.max_active_runs == 1, dag_id
        for task in dag.tasks:
            if task.task_type != "ApprovalOperator":
                assert task.retries >= 2, f"{dag_id}.{task.task_id} talks to MLflow/the store without retries"


def test_train_dag_shape(dagbag) -> None:
    dag = dagbag.dags["churn__train"]
    order = ["ingest", "validate", "train", "evaluate", "register", "promote"]
    for upstream, downstream in zip(order, order[1:], strict=False):
        assert downstream in dag.task_dict[upstream].downstream_task_ids, f"{upstream} -> {downstream}"
    assert "approve" not in dag.task_dict  # churn.yaml does not ask for approval
    approving = dagbag.dags["diabetes__train"]  # diabetes.yaml does
    assert approving.task_dict["approve"].downstream_task_ids == {"promote"}
    assert "approve" in approving.task_dict["register"].downstream_task_ids
    outlets = [asset.name for asset in dag.task_dict["promote"].outlets]
    assert outlets == ["churn__champion"]


def test_params_have_schemas_that_refuse_bad_input(dagbag) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    params = dagbag.dags["churn__train"].params
    assert set(params.keys()) == {"as_of", "window_days", "dry_run", "reason"}
    params.validate()  # the defaults are valid
    for name, bad in [
        ("window_days", -3),
        ("window_days", "seven"),
        ("dry_run", "yes"),
        ("as_of", "31/02/2026"),
    ]:
        candidate = copy.deepcopy(params)
        with pytest.raises(ParamValidationError, match=name):
            candidate[name] = bad
            candidate.validate()
    rollback = copy.deepcopy(dagbag.dags["churn__rollback"].params)
    with pytest.raises(ParamValidationError, match="to_version"):
        rollback["to_version"] = 0
        rollback.validate()


def test_a_broken_spec_is_one_clear_import_error_and_the_others_still_load(tmp_path, monkeypatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    models = tmp_path / "models"
    shutil.copytree(REPO / "include" / "models", models)
    broken = (REPO / "include" / "models" / "churn.yaml").read_text().replace("name: churn", "name: broken")
    broken = broken.replace("{type: integer, min: 0, max: 50}", "{type: integer, min: 50, max: 0}")
    (models / "broken.yaml").write_text(broken)
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))

    bag = DagBag(dag_folder=str(DAGS))

    assert list(bag.import_errors) == [str(DAGS / "model_spec_errors.py")]
    message = next(iter(bag.import_errors.values()))
    assert "broken.yaml" in message
    assert "features.support_calls" in message
    assert "min (50.0) is greater than max (0.0)" in message
    assert set(bag.dag_ids) == EXPECTED_DAGS


def test_score_and_monitor_params_refuse_bad_input(dagbag) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    for dag_id, name, bad in (
        ("churn__score", "ds", "2026-13-01"),
        ("churn__score", "model_version", 0),
        ("churn__monitor", "window_days", 0),
        ("churn__monitor", "end", "yesterday"),
    ):
        params = copy.deepcopy(dagbag.dags[dag_id].params)
        with pytest.raises(ParamValidationError, match=name):
            params[name] = bad
            params.validate()


def test_monitor_triggers_the_train_dag_only_through_its_decision(dagbag) -> None:
    monitor = dagbag.dags["churn__monitor"]
    retrain = monitor.get_task("retrain")
    assert retrain.trigger_dag_id == "churn__train"
    assert set(retrain.conf) == {"as_of", "reason"}
    assert [t.task_id for t in retrain.upstream_list] == ["retrain_needed"]
