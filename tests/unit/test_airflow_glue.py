"""The Airflow glue: run identity, the data window a run reads, and how rejections fail a task."""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException

from mlops_pipeline.airflow_glue import champion_asset, rejections_fail_the_task, resolve_as_of, run_info
from mlops_pipeline.steps import StepRejected


def dag_run(**overrides):
    fields = {
        "dag_id": "churn__train",
        "run_id": "manual__2026-03-01",
        "logical_date": None,
        "run_after": datetime(2026, 3, 1, 12, 30, tzinfo=UTC),
        "triggering_user_name": "alice",
        "run_type": "manual",
    }
    return SimpleNamespace(**{**fields, **overrides})


def test_run_info_names_the_user_and_uses_the_runs_own_time() -> None:
    info = run_info({"dag_run": dag_run()})
    assert info.actor == "alice"
    assert info.event_time == "2026-03-01T12:30:00+00:00"
    assert info.tags() == {
        "airflow.dag_id": "churn__train",
        "airflow.dag_run_id": "manual__2026-03-01",
        "airflow.actor": "alice",
    }


def test_scheduled_runs_are_attributed_to_their_run_type_and_logical_date() -> None:
    logical = datetime(2026, 3, 2, tzinfo=UTC)
    info = run_info(
        {"dag_run": dag_run(triggering_user_name=None, run_type="scheduled", logical_date=logical)}
    )
    assert info.actor == "scheduled"
    assert info.event_time == logical.isoformat()


def test_as_of_param_wins_over_the_data_interval() -> None:
    context = {"data_interval_end": datetime(2026, 3, 2, tzinfo=UTC), "dag_run": dag_run()}
    assert resolve_as_of(context, "2026-02-28") == date(2026, 2, 28)


def test_as_of_defaults_to_the_last_day_of_the_exclusive_interval() -> None:
    context = {"data_interval_end": datetime(2026, 3, 2, tzinfo=UTC), "dag_run": dag_run()}
    assert resolve_as_of(context, None) == date(2026, 3, 1)


def test_manual_runs_without_interval_use_run_after() -> None:
    assert resolve_as_of({"data_interval_end": None, "dag_run": dag_run()}, None) == date(2026, 3, 1)


def test_a_rejection_fails_the_task_without_retries() -> None:
    with pytest.raises(AirflowFailException, match="gate failed"), rejections_fail_the_task():
        raise StepRejected("gate failed: roc_auc")


def test_other_errors_stay_retryable() -> None:
    with pytest.raises(ConnectionError), rejections_fail_the_task():
        raise ConnectionError("MLflow unreachable")


def test_champion_asset_is_stable_per_model() -> None:
    asset = champion_asset("churn")
    assert asset.name == "churn__champion"
    assert asset.uri == "x-mlops://models/churn/champion"
