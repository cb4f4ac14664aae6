"""End to end: the real `churn__monitor` DAG with `dag.test()` against a real MLflow server.

A champion is trained on February (the real train DAG); the days the monitor looks at are scored
with the same functions the score DAG's tasks call. The example data drifts from 2026-04-01.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date

import pytest
from dag_runs import REPO, run_dag
from mlflow import MlflowClient

from mlops_pipeline import layout, monitoring, steps
from mlops_pipeline.devtools.example_data import write_example_data
from mlops_pipeline.settings import get_settings
from mlops_pipeline.spec import load_spec
from mlops_pipeline.steps import score as score_steps
from mlops_pipeline.store import LocalStore

pytestmark = pytest.mark.slow
SCORED_DAYS = [date(2026, 3, d) for d in (5, 6, 7)] + [date(2026, 4, d) for d in range(1, 6)]
# The columns the example data's drift episode moves (see mlops_pipeline.devtools.example_data).
DRIFTING = {"monthly_charges", "region", "plan"}


@pytest.fixture(scope="module")
def store(tmp_path_factory, mlflow_server, airflow_db, monkeypatch_module) -> Iterator[LocalStore]:
    store = LocalStore(tmp_path_factory.mktemp("monitor-store"))
    write_example_data(store, start=date(2026, 2, 1), end=date(2026, 4, 6))
    monkeypatch_module.setenv("MLOPS_STORE_URI", store.root_uri)
    monkeypatch_module.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch_module.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch_module.setenv("MLOPS_EVIDENTLY_WORKSPACE", str(store.root.parent / "evidently"))
    get_settings.cache_clear()
    yield store
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def client(mlflow_server) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)


@pytest.fixture(scope="module")
def scored(store, client) -> str:
    """A champion trained on February in this store, and the monitored days scored by it."""
    models = REPO / "include/models"
    spec = load_spec(models / "churn.yaml")
    run = run_dag("churn__train", {"as_of": "2026-02-28", "window_days": 21})
    assert run.state == "success", run.tasks
    champion = client.get_model_version_by_alias("churn", "champion").version
    for day in SCORED_DAYS:
        info = steps.RunInfo("churn__score", f"setup__{day}", "test", f"{day}T00:00:00+00:00")
        plan = score_steps.plan(spec, store, day, None, False, info)
        results = [score_steps.score(spec, store, plan, item, info) for item in plan["inputs"]]
        score_steps.publish(spec, store, plan, results, info)
    return champion


def monitor(end: str, **conf) -> tuple:
    run = run_dag("churn__monitor", {"end": end, "window_days": 3, **conf})
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=run.run_id, dag_ids="churn__monitor", task_ids="check", key="return_value"
            )
        ).first()
        result = XComModel.deserialize_value(row) if row is not None else None
    return run, result


def queued_retrains() -> list[dict]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = DagRun.find(dag_id="churn__train", session=session)
        return [dict(r.conf or {}) for r in runs if (r.conf or {}).get("reason")]


def test_a_window_without_drift_does_not_alarm(store, scored) -> None:
    run, result = monitor("2026-03-07")
    assert run.state == "success", run.tasks
    assert run.tasks["retrain"] == "skipped"
    assert result["data_drift"] is False and result["drifted_columns"] == []
    assert result["trigger"] is False
    assert result["days_used"] == ["2026-03-05", "2026-03-06", "2026-03-07"]
    assert all(score < 0.1 for score in result["drift_scores"].values()), result["drift_scores"]


def test_the_drift_episode_is_found_reported_and_triggers_retraining_once(store, scored, client) -> None:
    first, result = monitor("2026-04-03")
    assert first.state == "success"
    assert result["data_drift"] is True
    assert set(result["drifted_columns"]) >= DRIFTING, result["drift_scores"]
    assert result["trigger"] is False, "one alarming window of the last three is not enough (N=2)"
    prefix = f"reports/churn/{layout.run_segment(first.run_id)}"
    assert "monthly_charges" in store.read_bytes(f"{prefix}/data_drift.html").decode()
    assert json.loads(store.read_bytes(f"{prefix}/data_drift.json"))
    logged = client.search_runs(
        [client.get_experiment_by_name("churn-monitoring").experiment_id],
        filter_string=f"tags.`airflow.dag_run_id` = '{first.run_id}'",
    )
    assert logged[0].data.metrics["drift_score.monthly_charges"] > 0.1
    assert logged[0].data.metrics["drifted_share"] >= 0.2
    # Both reports went to the Evidently workspace too, in the model's project.
    from evidently.ui.workspace import Workspace

    space = Workspace.create(str(store.root.parent / "evidently"))
    (project,) = space.search_project("churn monitoring")
    assert len(result["evidently_workspace_runs"]) == 2
    assert set(result["evidently_workspace_runs"]) <= set(map(str, space.list_runs(project.id)))

    second, result = monitor("2026-04-04")
    assert second.state == "success", second.tasks
    assert result["trigger"] is True and second.tasks["retrain"] == "success"
    (retrain,) = queued_retrains()
    assert retrain["as_of"] == "2026-04-04" and "data drift in" in retrain["reason"]

    third, result = monitor("2026-04-05")
    assert third.state == "success"
    assert result["trigger"] is False and "cooldown" in result["decision"]["reason"]
    assert third.tasks["retrain"] == "skipped"
    assert len(queued_retrains()) == 1, "the cooldown holds: one retraining, not one per window"
    assert monitoring.trigger_days(store, "churn") == ["2026-04-04"]


def test_missing_current_data_fails_with_a_reason_and_is_not_drift(store, scored) -> None:
    before = [v.end for v in monitoring.verdicts(store, "churn")]
    run, result = monitor("2026-05-20")
    assert run.state == "failed" and run.tasks["check"] == "failed"
    assert result is None
    assert [v.end for v in monitoring.verdicts(store, "churn")] == before, "a failed check records no verdict"


def test_late_labels_give_performance_per_model_version(store, scored) -> None:
    store.delete_prefix("labels/churn/ds=2026-03-07")  # that day's labels have not arrived yet
    run, result = monitor("2026-03-07", dry_run=True)
    assert run.state == "success"
    performance = result["performance"][scored]
    assert performance["labelled_rows"] == 2 * 800
    assert 0.6 < performance["roc_auc"] <= 1.0
    assert result["performance_drops"] == []
