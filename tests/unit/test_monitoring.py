"""Monitoring logic: the N-of-M rule with cooldown, verdict and trigger records, labels and live metrics."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from mlops_pipeline import monitoring
from mlops_pipeline.monitoring import Decision, WindowVerdict, decide
from mlops_pipeline.spec import DriftSpec, load_spec
from mlops_pipeline.store import LocalStore

REPO = Path(__file__).resolve().parents[2]
RULE = DriftSpec(windows_needed=2, windows_considered=3, cooldown_days=7)


def verdict(end: str, alarming: bool = False, **flags) -> WindowVerdict:
    return WindowVerdict(
        end=end,
        start=end,
        data_drift=alarming,
        prediction_drift=flags.get("prediction_drift", False),
        performance_drop=flags.get("performance_drop", False),
        drifted_columns=["monthly_charges"] if alarming else [],
        run_id=f"run-{end}",
    )


def test_one_alarming_window_is_not_enough() -> None:
    history = [verdict("2026-04-01"), verdict("2026-04-02"), verdict("2026-04-03", True)]
    decision = decide(history, [], RULE, "2026-04-03")
    assert not decision.retrain and "1 of the last 3" in decision.reason


def test_n_of_the_last_m_windows_trigger_with_the_cause() -> None:
    history = [verdict("2026-04-01", True), verdict("2026-04-02"), verdict("2026-04-03", True)]
    decision = decide(history, [], RULE, "2026-04-03")
    assert decision.retrain
    assert decision.alarming_windows == ["2026-04-01", "2026-04-03"]
    assert "data drift in monthly_charges" in decision.reason


def test_only_the_last_m_windows_count() -> None:
    history = [
        verdict("2026-03-30", True),
        verdict("2026-03-31"),
        verdict("2026-04-01"),
        verdict("2026-04-02", True),
    ]
    assert not decide(history, [], RULE, "2026-04-02").retrain


def test_a_performance_drop_counts_like_drift() -> None:
    history = [verdict("2026-04-01", performance_drop=True), verdict("2026-04-02", performance_drop=True)]
    decision = decide(history, [], RULE, "2026-04-02")
    assert decision.retrain and "performance below the floor" in decision.reason


def test_the_cooldown_blocks_a_second_trigger_and_then_expires() -> None:
    history = [verdict(f"2026-04-{d:02d}", True) for d in range(1, 12)]
    blocked = decide(history, ["2026-04-03"], RULE, "2026-04-09")
    assert not blocked.retrain and "cooldown of 7 days" in blocked.reason
    assert decide(history, ["2026-04-03"], RULE, "2026-04-10").retrain


def test_decisions_ignore_windows_after_the_end() -> None:
    history = [verdict("2026-04-01"), verdict("2026-04-02", True), verdict("2026-04-03", True)]
    assert not decide(history, [], RULE, "2026-04-02").retrain


def test_verdicts_and_triggers_are_recorded_once_per_window(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    monitoring.record_verdict(store, "churn", verdict("2026-04-02", True))
    monitoring.record_verdict(store, "churn", verdict("2026-04-01"))
    monitoring.record_verdict(store, "churn", verdict("2026-04-02", False))  # a rerun replaces its window
    assert [(v.end, v.alarming) for v in monitoring.verdicts(store, "churn")] == [
        ("2026-04-01", False),
        ("2026-04-02", False),
    ]
    decision = Decision(True, "drift", ["2026-04-02"])
    assert monitoring.record_trigger(store, "churn", "2026-04-02", decision, "r1")
    assert not monitoring.record_trigger(store, "churn", "2026-04-02", decision, "r2")
    assert monitoring.trigger_days(store, "churn") == ["2026-04-02"]


def test_window_days_end_on_the_last_day() -> None:
    assert monitoring.window_days(date(2026, 4, 3), 3) == [
        date(2026, 4, 1),
        date(2026, 4, 2),
        date(2026, 4, 3),
    ]


@pytest.fixture(scope="module")
def churn():
    return load_spec(REPO / "include/models/churn.yaml")


def test_late_labels_join_predictions_per_version(churn, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes("labels/churn/ds=2026-04-01/labels.csv", b"customer_id,churned\na,1\nb,0\nc,1\nd,0\n")
    labels = monitoring.read_labels(store, churn, [date(2026, 4, 1), date(2026, 4, 2)])
    assert list(labels["id"]) == ["a", "b", "c", "d"] and set(labels["ds"]) == {"2026-04-01"}
    predictions = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e"],
            "prediction": [1, 0, 0, 0, 1],
            "proba_0": [0.1, 0.8, 0.6, 0.9, 0.2],
            "proba_1": [0.9, 0.2, 0.4, 0.1, 0.8],
            "model_version": ["1", "1", "2", "2", "2"],
        }
    )
    performance = monitoring.performance_by_version(predictions, labels, churn)
    assert performance["1"]["labelled_rows"] == 2 and performance["1"]["accuracy"] == 1.0
    assert performance["2"]["labelled_rows"] == 2 and performance["2"]["accuracy"] == 0.5
    assert monitoring.below_floors(performance, churn) == ["v2 accuracy=0.500 (floor 0.7)"]


def test_no_labels_yet_is_an_empty_frame(churn, tmp_path: Path) -> None:
    assert monitoring.read_labels(LocalStore(tmp_path), churn, [date(2026, 4, 1)]).empty


def test_live_performance_of_text_labels_is_computed_per_class_and_version() -> None:
    """Late text labels join the published rows; multiclass metrics read each class's column."""
    from sklearn import metrics as m

    from mlops_pipeline.spec import ModelSpec

    spec = ModelSpec.model_validate(
        {
            "name": "birds",
            "task": "multiclass",
            "source": {"uri": "landing/birds/ds={ds}/*.csv"},
            "id_column": "bird",
            "target": {"column": "species", "classes": ["Gentoo", "Adelie", "Chinstrap"]},
            "features": {"x": {"type": "number"}},
            "estimator": {"kind": "random_forest"},
            "gates": {"primary_metric": "f1_macro", "floors": {"f1_macro": 0.9}},
        }
    )
    proba = [
        [0.7, 0.2, 0.1],
        [0.1, 0.8, 0.1],
        [0.2, 0.2, 0.6],
        [0.5, 0.4, 0.1],
        [0.1, 0.3, 0.6],
        [0.3, 0.3, 0.4],
    ]
    published = pd.DataFrame(
        {
            "id": [f"b{i}" for i in range(6)],
            "prediction": ["Adelie", "Chinstrap", "Gentoo", "Adelie", "Gentoo", "Gentoo"],
            "proba_Adelie": [p[0] for p in proba],
            "proba_Chinstrap": [p[1] for p in proba],
            "proba_Gentoo": [p[2] for p in proba],
            "model_version": ["1", "1", "1", "2", "2", "2"],
        }
    )
    labels = pd.DataFrame(
        {
            "id": [f"b{i}" for i in range(6)],
            "species": ["Adelie", "Chinstrap", "Gentoo", "Chinstrap", "Gentoo", "Adelie"],
        }
    )
    performance = monitoring.performance_by_version(published, labels, spec)
    assert performance["1"]["f1_macro"] == 1.0 and performance["1"]["labelled_rows"] == 3.0
    truth = labels["species"][3:].to_numpy()
    assert performance["2"]["accuracy"] == pytest.approx(m.accuracy_score(truth, published["prediction"][3:]))
    assert performance["2"]["log_loss"] == pytest.approx(
        m.log_loss(truth, proba[3:], labels=["Adelie", "Chinstrap", "Gentoo"])
    )
    assert monitoring.below_floors(performance, spec) == [
        f"v2 f1_macro={performance['2']['f1_macro']:.3f} (floor 0.9)"
    ]
