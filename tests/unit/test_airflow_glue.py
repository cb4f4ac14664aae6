"""The Airflow glue: run identity, the data window a run reads, and how rejections fail a task."""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException

from mlops_pipeline.airflow_glue import (
    champion_asset,
    rejections_fail_the_task,
    resolve_as_of,
    run_info,
    strict_params,
)
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


def test_a_promotion_event_gives_the_day_to_rescore() -> None:
    from mlops_pipeline.airflow_glue import promoted_as_of

    events = {
        champion_asset("churn"): [
            SimpleNamespace(extra={"version": "2"}),
            SimpleNamespace(extra={"as_of": "2026-04-04"}),
        ]
    }
    assert promoted_as_of({"triggering_asset_events": events}) == "2026-04-04"
    rollback = {champion_asset("churn"): [SimpleNamespace(extra={"version": "1"})]}
    assert promoted_as_of({"triggering_asset_events": rollback}) is None
    assert promoted_as_of({}) is None


def test_scoring_runs_daily_or_when_the_champion_changes() -> None:
    from pathlib import Path

    from airflow.sdk import AssetOrTimeSchedule

    from mlops_pipeline.airflow_glue import score_schedule
    from mlops_pipeline.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "include/models/churn.yaml")
    daily = spec.model_copy(update={"schedules": spec.schedules.model_copy(update={"score": "@daily"})})
    assert isinstance(score_schedule(daily), AssetOrTimeSchedule)
    manual = spec.model_copy(update={"schedules": spec.schedules.model_copy(update={"score": None})})
    assert score_schedule(manual) == [champion_asset("churn")]


def strict_context(conf: dict) -> dict:
    """A task context as the rollback task sees it: declared params, conf merged into them."""
    from airflow.sdk.definitions.param import ParamsDict

    declared = ParamsDict({"to_version": None, "reason": "manual rollback"})
    return {
        "dag_run": dag_run(dag_id="churn__rollback", conf=conf),
        "dag": SimpleNamespace(params=declared),
        "params": {**declared.dump(), **conf},
    }


def test_strict_params_returns_the_params_of_a_declared_conf() -> None:
    params = strict_params(strict_context({"to_version": 2}))
    assert params == {"to_version": 2, "reason": "manual rollback"}
    assert strict_params(strict_context({})) == {"to_version": None, "reason": "manual rollback"}


def test_strict_params_fails_the_task_without_retries_on_an_unknown_key() -> None:
    with pytest.raises(AirflowFailException, match="does not know the conf key 'junk'"):
        strict_params(strict_context({"to_version": 2, "junk": "x"}))
