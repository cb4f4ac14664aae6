"""The `<model>__monitor` task body and the window it checks, outside Airflow, on the churn spec.

A champion is trained on the example data's stable February (through the `steps.train` functions,
once for the module) and some days are scored and published through the `steps.score` functions:
three stable days of March, the minor-defect day (rows quarantined) and three days of the drift
episode that starts on 2026-04-01. MLflow is real (SQLite in a temp dir), the store a file store.
"""

from __future__ import annotations

import datetime
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow.parquet as pq
import pytest

from mlops_pipeline import layout, monitoring, registry, steps
from mlops_pipeline.devtools.example_data import DRIFT_START
from mlops_pipeline.layout import PREDICTIONS
from mlops_pipeline.predictions import read_manifest, read_partition
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.steps import monitor as monitor_steps
from mlops_pipeline.steps import score as score_steps
from mlops_pipeline.steps.results import WindowChecked
from mlops_pipeline.store import LocalStore

from .champions import train_quick_champion

REPO = Path(__file__).resolve().parents[3]
ROWS_PER_DAY = 800
MINOR_DEFECT_DAY = datetime.date(2026, 2, 14)  # 8 of 800 rows quarantined by scoring
STABLE_DAYS = [datetime.date(2026, 3, d) for d in (1, 2, 3)]
DRIFT_DAYS = [DRIFT_START + datetime.timedelta(days=d) for d in range(3)]
# The columns the example data's drift episode moves (as tests/e2e/test_monitor_dag.py names them).
DRIFTING = {"monthly_charges", "region", "plan"}


@pytest.fixture(scope="module")
def store(example_store) -> LocalStore:
    """The example data of the champion's window, the monitored days and the drift episode, with MLflow."""
    return example_store(
        "monitor-steps",
        (datetime.date(2026, 2, 22), STABLE_DAYS[-1]),
        (MINOR_DEFECT_DAY, MINOR_DEFECT_DAY),
        (DRIFT_DAYS[0], DRIFT_DAYS[-1]),
    )


@pytest.fixture(scope="module")
def scored(churn: ModelSpec, store: LocalStore) -> dict[str, dict[str, Any]]:
    """A promoted champion and the published predictions of the monitored days; `publish` per day."""
    train_quick_champion(churn, store)
    return {day.isoformat(): _score_day(churn, store, day) for day in [MINOR_DEFECT_DAY, *STABLE_DAYS]}


@pytest.fixture(scope="module")
def drift_scored(churn: ModelSpec, store: LocalStore, scored) -> dict[str, dict[str, Any]]:
    """The days of the drift episode, scored by the same champion; `publish` per day."""
    return {day.isoformat(): _score_day(churn, store, day) for day in DRIFT_DAYS}


def _score_day(spec: ModelSpec, store: LocalStore, day: datetime.date) -> dict[str, Any]:
    info = steps.RunInfo("churn__score", f"setup__{day}", "tester", f"{day}T00:00:00+00:00")
    plan = score_steps.plan(spec, store, day, None, False, info)
    results = [score_steps.score(spec, store, plan, item, info) for item in score_steps.inputs(plan)]
    return dict(score_steps.publish(spec, store, plan, results, info))


def _run(name: str) -> steps.RunInfo:
    return steps.RunInfo("churn__monitor", f"manual__{name}", "tester", "2026-04-10T00:00:00+00:00")


@pytest.fixture(scope="module")
def stable(churn: ModelSpec, store: LocalStore, scored) -> dict[str, Any]:
    """One recorded check of the three stable days of March."""
    return dict(monitor_steps.check(churn, store, STABLE_DAYS[-1], 3, False, _run("stable")))


def test_check_returns_the_window_checked_payload(stable: dict[str, Any]) -> None:
    """check returns exactly the keys of steps.results.WindowChecked, and JSON-serialisable values."""
    assert set(stable) == set(WindowChecked.__annotations__)
    assert json.loads(json.dumps(stable)) == stable
    assert (stable["start"], stable["end"]) == ("2026-03-01", "2026-03-03")
    assert stable["run_id"] == "manual__stable" and stable["dry_run"] is False


def test_a_stable_window_does_not_drift(stable: dict[str, Any]) -> None:
    """The stable days of March compared with the February training data show no data drift and no alarm."""
    assert stable["days_used"] == [d.isoformat() for d in STABLE_DAYS] and stable["days_missing"] == []
    assert stable["data_drift"] is False and stable["drifted_columns"] == []
    assert stable["alarming"] is False and stable["trigger"] is False
    assert stable["decision"]["retrain"] is False
    assert all(score < 0.1 for score in stable["drift_scores"].values()), stable["drift_scores"]
    assert len(stable["drift_scores"]) == 14


def test_check_writes_its_reports_to_the_store(churn: ModelSpec, store: LocalStore, stable) -> None:
    """The data and prediction drift reports (HTML + JSON) and the window summary are in the store."""
    run_id = stable["run_id"]
    for name in ("data_drift", "prediction_drift"):
        assert json.loads(store.read_bytes(layout.drift_report_key("churn", run_id, name, "json")))
        assert store.exists(layout.drift_report_key("churn", run_id, name, "html"))
    assert stable["data_drift_report"] == store.uri(
        layout.drift_report_key("churn", run_id, "data_drift", "html")
    )
    assert (
        "monthly_charges"
        in store.read_bytes(stable["data_drift_report"].removeprefix(store.root_uri + "/")).decode()
    )
    summary = json.loads(store.read_bytes(layout.monitoring_summary_key("churn", run_id)))
    assert summary["days_used"] == stable["days_used"]
    assert summary["reference"]["version"] == "1"
    assert summary["performance"] == stable["performance"] and "1" in summary["performance"]
    assert stable["evidently_workspace_runs"] == []


def test_check_records_the_windows_verdict(store: LocalStore, stable: dict[str, Any]) -> None:
    """A check that is not a dry run records its verdict at layout.verdict_key(model, end)."""
    recorded = json.loads(store.read_bytes(layout.verdict_key("churn", stable["end"])))
    assert recorded == {
        key: stable[key]
        for key in (
            "end",
            "start",
            "data_drift",
            "prediction_drift",
            "performance_drop",
            "drifted_columns",
            "run_id",
        )
    }


def test_a_dry_run_records_no_verdict_and_no_trigger(churn: ModelSpec, store: LocalStore, scored) -> None:
    """A dry run returns its verdict and decision but records no verdict and no trigger."""
    before = store.list(layout.verdicts_prefix("churn")), store.list(layout.triggers_prefix("churn"))
    result = monitor_steps.check(churn, store, STABLE_DAYS[1], 2, True, _run("dry"))
    assert result["dry_run"] is True and result["trigger"] is False
    assert result["days_used"] == ["2026-03-01", "2026-03-02"]
    assert not store.exists(layout.verdict_key("churn", "2026-03-02"))
    assert (
        store.list(layout.verdicts_prefix("churn")),
        store.list(layout.triggers_prefix("churn")),
    ) == before


def test_a_window_without_predictions_is_refused_and_is_not_drift(
    churn: ModelSpec, store: LocalStore, scored
) -> None:
    """A window with no published predictions is refused as 'not drift', and nothing is recorded."""
    before = store.list(layout.verdicts_prefix("churn"))
    run = _run("empty")
    with pytest.raises(
        steps.StepRejected, match=r"2026-05-18\.\.2026-05-20: no published predictions.*this is not drift"
    ):
        monitor_steps.check(churn, store, datetime.date(2026, 5, 20), 3, False, run)
    assert store.list(layout.verdicts_prefix("churn")) == before
    assert not store.exists(layout.verdict_key("churn", "2026-05-20"))
    assert store.list(layout.reports_prefix("churn", run.dag_run_id)) == []


def test_check_window_compares_the_published_rows_with_their_scored_inputs(
    churn: ModelSpec, store: LocalStore, scored
) -> None:
    """check_window's scored rows are the published ones, and its current features leave out the quarantined rows."""
    ds = MINOR_DEFECT_DAY.isoformat()
    window = monitoring.check_window(churn, store, registry.configured_client(), MINOR_DEFECT_DAY, 1)
    published = read_partition(store, "churn", ds).to_pandas()
    assert window.days_used == [ds] and window.days_missing == []
    assert len(window.scored) == len(published) == scored[ds]["rows"] == ROWS_PER_DAY - 8
    assert list(window.scored["id"]) == list(published["id"]) and set(window.scored["ds"]) == {ds}
    assert len(window.current) == ROWS_PER_DAY - 8
    assert list(window.current.columns) == list(churn.features)
    # The quarantined rows broke these rules; none of them is among the compared rows.
    assert set(window.current["plan"]) <= {"basic", "standard", "premium"}
    assert set(window.current["region"]) <= {"north", "south", "east", "west"}
    assert window.current["monthly_charges"].max() <= 500
    assert window.current["tenure_months"].notna().all()
    assert str(window.champion.version) == "1"
    snapshot_key = unquote(window.champion.tags["data_uri"].removeprefix(store.root_uri + "/"))
    snapshot_rows = pq.read_metadata(io.BytesIO(store.read_bytes(snapshot_key))).num_rows
    assert len(window.reference) == snapshot_rows == 7 * ROWS_PER_DAY


def test_check_window_names_the_days_without_predictions(churn: ModelSpec, store: LocalStore, scored) -> None:
    """Days of the window that have no published partition are listed as missing, the others used."""
    window = monitoring.check_window(churn, store, registry.configured_client(), STABLE_DAYS[0], 3)
    assert window.days == [datetime.date(2026, 2, 27), datetime.date(2026, 2, 28), STABLE_DAYS[0]]
    assert window.days_used == ["2026-03-01"] and window.days_missing == ["2026-02-27", "2026-02-28"]
    assert len(window.scored) == len(window.current) == ROWS_PER_DAY
    assert read_manifest(store, PREDICTIONS, "churn", "2026-02-28") is None


@pytest.mark.slow  # three full checks (Evidently twice each): about 15 s
def test_the_drift_episode_alarms_and_two_alarming_windows_trigger_retraining_once(
    churn: ModelSpec, store: LocalStore, drift_scored
) -> None:
    """Windows in the drift episode alarm with the drifted columns; the second alarming one triggers, once."""
    first = monitor_steps.check(churn, store, DRIFT_DAYS[1], 2, False, _run("drift1"))
    assert first["data_drift"] is True and first["alarming"] is True
    assert set(first["drifted_columns"]) >= DRIFTING, first["drift_scores"]
    assert first["trigger"] is False and first["decision"]["retrain"] is False
    assert json.loads(store.read_bytes(layout.verdict_key("churn", "2026-04-02")))["data_drift"] is True

    second = monitor_steps.check(churn, store, DRIFT_DAYS[2], 2, False, _run("drift2"))
    assert set(second["drifted_columns"]) >= DRIFTING, second["drift_scores"]
    assert second["trigger"] is True and second["decision"]["alarming_windows"] == [
        "2026-04-02",
        "2026-04-03",
    ]
    assert "data drift in" in second["decision"]["reason"]
    assert monitoring.trigger_days(store, "churn") == ["2026-04-03"]
    trigger = json.loads(store.read_bytes(layout.trigger_key("churn", "2026-04-03")))
    assert trigger["run_id"] == "manual__drift2"

    again = monitor_steps.check(churn, store, DRIFT_DAYS[2], 2, False, _run("drift3"))
    assert again["trigger"] is False and "cooldown" in again["decision"]["reason"]
    assert monitoring.trigger_days(store, "churn") == ["2026-04-03"]


def _reference_path() -> Path:
    client = registry.configured_client()
    champion = registry.alias_version(client, "churn", registry.CHAMPION)
    assert champion is not None
    return Path(unquote(champion.tags["data_uri"].removeprefix("file://")))


@pytest.mark.parametrize("damage", ["missing", "changed"])
def test_a_missing_or_changed_reference_snapshot_is_refused_once_with_the_reason(
    churn: ModelSpec, store: LocalStore, scored, damage: str
) -> None:
    """Refused (StepRejected: not retried) with what happened and what to do, never a raw `No such file`."""
    path = _reference_path()
    kept = path.read_bytes()
    try:
        if damage == "missing":
            path.unlink()
        else:
            table = pq.read_table(path)
            pq.write_table(table.slice(1), path)  # one row fewer: another content hash
        expected = "is missing from the store" if damage == "missing" else "was changed: it does not match"
        with pytest.raises(steps.StepRejected, match=rf"reference snapshot .* {expected}.*This is not drift"):
            monitor_steps.check(churn, store, STABLE_DAYS[-1], 3, True, _run(f"reference_{damage}"))
    finally:
        path.write_bytes(kept)


def test_an_unreadable_labels_file_is_refused_naming_it_and_recorded(
    churn: ModelSpec, store: LocalStore, scored
) -> None:
    assert churn.labels is not None
    broken = churn.model_copy(
        update={"labels": churn.labels.model_copy(update={"uri": "labels_broken/churn/ds={ds}/*.csv"})}
    )
    day = STABLE_DAYS[0].isoformat()
    store.write_bytes(
        f"labels_broken/churn/ds={day}/late.csv", "customer_id,churned\nc1,0\n".encode("utf-16")
    )
    with pytest.raises(
        steps.StepRejected, match=rf"labels file .*late\.csv of {day} cannot be read \(rule readable\)"
    ):
        monitor_steps.check(broken, store, STABLE_DAYS[-1], 3, True, _run("labels_broken"))
    (record,) = store.list(layout.unreadable_prefix("churn", "labels", day))
    assert json.loads(store.read_bytes(record))["file"].endswith("late.csv")
