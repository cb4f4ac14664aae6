"""Drift check: real Evidently on synthetic and example data; the quantile sketch on its own."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mlops_pipeline.devtools import example_data as ex
from mlops_pipeline.drift import (
    DriftReport,
    _categorical_sketch,
    _category_counts,
    _jensenshannon_floor,
    _numeric_sketch,
    _wasserstein_floor,
    add_to_workspace,
    check_drift,
    save_report,
)
from mlops_pipeline.spec import DriftSpec

KINDS = {"amount": "num", "visits": "num", "score": "num", "plan": "cat", "region": "cat"}
PLANS = np.array(["basic", "standard", "premium"], dtype=object)
REGIONS = np.array(["north", "south", "east", "west"], dtype=object)
CHURN_KINDS = {
    name: "cat" if name in ("plan", "region", "payment_method") else "num" for name in ex.CHURN_FEATURES
}


def frame(
    rows: int,
    seed: int,
    shift_sd: float = 0.0,
    plan_p: tuple[float, ...] = (0.45, 0.35, 0.20),
) -> pd.DataFrame:
    """Independent columns: a skewed amount (shifted by `shift_sd` sd), counts, a score with NaN,
    and two categories with None."""
    rng = np.random.default_rng(seed)
    amount = rng.gamma(4.0, 10.0, rows) + shift_sd * 20.0  # sd of gamma(4, 10) is 20
    score = np.round(rng.normal(6.5, 1.5, rows), 1)
    score[rng.random(rows) < 0.05] = np.nan
    region = REGIONS[rng.choice(4, rows)]
    region[rng.random(rows) < 0.03] = None
    return pd.DataFrame(
        {
            "id": np.arange(rows),
            "amount": amount,
            "visits": rng.poisson(3.0, rows),
            "score": score,
            "plan": PLANS[rng.choice(3, rows, p=plan_p)],
            "region": region,
        }
    )


def churn_window(first: datetime.date, days: int) -> pd.DataFrame:
    batches = [ex.churn_batch(first + datetime.timedelta(days=offset)) for offset in range(days)]
    return pd.concat(batches, ignore_index=True)


def verdicts(report: DriftReport) -> dict[str, bool]:
    return {item.column: item.drifted for item in report.columns}


@pytest.fixture(scope="module")
def shifted_report() -> DriftReport:
    """`amount` shifted by 0.5 sd, 5,000 rows a side."""
    return check_drift(frame(5_000, 1), frame(5_000, 2, shift_sd=0.5), KINDS, DriftSpec())


# --- Evidently on synthetic data -------------------------------------------------------------


def test_identical_distributions_do_not_drift_at_1k() -> None:
    report = check_drift(frame(1_000, 1), frame(1_000, 2), KINDS, DriftSpec())

    assert report.drifted_columns() == []
    assert report.dataset_drift is False
    assert report.drifted_share == 0.0
    assert (report.reference_rows, report.current_rows, report.sampled_rows) == (1_000, 1_000, 1_000)
    assert not report.sketched
    # At 1,000 rows Evidently's defaults would be p-value tests: the methods named in the spec are used.
    assert {item.method for item in report.columns} == {"wasserstein", "jensenshannon"}


@pytest.mark.slow
def test_identical_distributions_do_not_drift_at_50k() -> None:
    report = check_drift(frame(50_000, 1), frame(50_000, 2), KINDS, DriftSpec())

    assert report.drifted_columns() == []
    assert max(item.score for item in report.columns) < 0.05


def test_half_sd_shift_drifts_exactly_that_column(shifted_report: DriftReport) -> None:
    assert shifted_report.drifted_columns() == ["amount"]
    amount = shifted_report.columns[0]
    assert (amount.column, amount.kind, amount.method, amount.threshold) == (
        "amount",
        "num",
        "wasserstein",
        0.1,
    )
    assert amount.score == pytest.approx(0.5, abs=0.05)  # normed Wasserstein of a location shift


def test_verdicts_are_evidentlys_and_agree_with_the_scores(shifted_report: DriftReport) -> None:
    tests = {t["metric_config"]["params"].get("column"): t for t in shifted_report.snapshot.dict()["tests"]}
    for item in shifted_report.columns:
        assert item.drifted == (str(tests[item.column]["status"].value) == "FAIL")
        assert item.drifted == (item.score >= item.threshold)


def test_reweighted_category_drifts() -> None:
    report = check_drift(frame(5_000, 1), frame(5_000, 2, plan_p=(0.20, 0.35, 0.45)), KINDS, DriftSpec())

    assert report.drifted_columns() == ["plan"]
    assert next(c for c in report.columns if c.column == "plan").method == "jensenshannon"


def test_column_thresholds_and_methods_are_honoured() -> None:
    drift = DriftSpec(
        column_thresholds={"amount": 0.9, "visits": 0.0001},
        column_methods={"score": "psi", "region": "hellinger"},
    )
    report = check_drift(frame(5_000, 1), frame(5_000, 2, shift_sd=0.5), KINDS, drift)
    by_column = {item.column: item for item in report.columns}

    assert by_column["amount"].threshold == 0.9 and not by_column["amount"].drifted
    assert by_column["visits"].threshold == 0.0001 and by_column["visits"].drifted
    assert by_column["score"].method == "psi" and by_column["region"].method == "hellinger"
    assert by_column["plan"].method == "jensenshannon" and by_column["amount"].method == "wasserstein"
    assert report.drifted_columns() == ["visits"]


def test_small_identical_windows_do_not_alarm_thanks_to_the_noise_floor() -> None:
    # At 150 rows a side chance alone moves the scores past 0.1: the default threshold is raised.
    report = check_drift(frame(150, 1), frame(150, 2), KINDS, DriftSpec())
    by_column = {item.column: item for item in report.columns}

    assert report.drifted_columns() == []
    assert by_column["amount"].noise_floor > 0.1
    assert by_column["amount"].threshold == by_column["amount"].noise_floor
    assert all(item.threshold == max(0.1, item.noise_floor) for item in report.columns)


def test_the_noise_floor_changes_nothing_at_5k_rows(shifted_report: DriftReport) -> None:
    assert all(0 < item.noise_floor < 0.1 for item in shifted_report.columns)
    assert {item.threshold for item in shifted_report.columns} == {0.1}


def test_wasserstein_floor_is_the_score_quantile_of_identical_samples() -> None:
    # The simulated 95% quantile of the normed Wasserstein score of two samples of one distribution.
    rng = np.random.default_rng(5)
    n_ref, n_cur = 400, 300
    scores = []
    for _ in range(2_000):
        reference, current = rng.gamma(4.0, 10.0, n_ref), rng.gamma(4.0, 10.0, n_cur)
        scores.append(stats.wasserstein_distance(reference, current) / np.std(reference))
    floor = _wasserstein_floor(rng.gamma(4.0, 10.0, 100_000), n_ref, n_cur, alpha=0.05)

    assert floor == pytest.approx(np.quantile(scores, 0.95), rel=0.1)


def test_jensenshannon_floor_is_the_distance_quantile_of_identical_samples() -> None:
    from scipy.spatial import distance

    rng = np.random.default_rng(6)
    p, n_ref, n_cur = np.array([0.4, 0.3, 0.2, 0.1]), 500, 400
    scores = [
        distance.jensenshannon(rng.multinomial(n_ref, p) / n_ref, rng.multinomial(n_cur, p) / n_cur)
        for _ in range(4_000)
    ]

    assert _jensenshannon_floor(4, n_ref, n_cur, alpha=0.05) == pytest.approx(
        np.quantile(scores, 0.95), rel=0.1
    )
    assert _jensenshannon_floor(1, n_ref, n_cur, alpha=0.05) == 0.0


@pytest.mark.parametrize(("drift_share", "expected"), [(0.2, True), (0.21, False)])
def test_dataset_drift_follows_drift_share(drift_share: float, expected: bool) -> None:
    # One drifted column of five is a share of 0.2; the rule is share >= drift_share.
    report = check_drift(
        frame(2_000, 1), frame(2_000, 2, shift_sd=0.5), KINDS, DriftSpec(drift_share=drift_share)
    )

    assert report.drifted_columns() == ["amount"]
    assert report.drifted_share == pytest.approx(0.2)
    assert report.dataset_drift is expected


def test_nullable_dtypes_and_nulls_are_handled() -> None:
    reference, current = frame(2_000, 1), frame(2_000, 2)
    for data in (reference, current):
        data["visits"] = data["visits"].astype("Int64")
        data.loc[data.index % 10 == 0, "visits"] = pd.NA
        data["plan"] = data["plan"].astype("category")
        data.loc[data.index % 7 == 0, "plan"] = np.nan
        data["region"] = data["region"].astype("string")  # None becomes pd.NA
    report = check_drift(reference, current, KINDS, DriftSpec())

    assert report.drifted_columns() == []
    assert all(np.isfinite(item.score) for item in report.columns)


def test_a_column_without_values_is_refused() -> None:
    current = frame(1_000, 2)
    current["score"] = np.nan
    with pytest.raises(ValueError, match="'score' has no non-null values in the current data"):
        check_drift(frame(1_000, 1), current, KINDS, DriftSpec())


@pytest.mark.parametrize(
    ("kinds", "drift", "message"),
    [
        ({**KINDS, "missing": "num"}, DriftSpec(), r"the reference data has no column\(s\) \['missing'\]"),
        ({"amount": "number"}, DriftSpec(), "must be 'num' or 'cat'"),
        ({}, DriftSpec(), "kinds is empty"),
        (
            KINDS,
            DriftSpec(column_methods={"plan": "wasserstein"}),
            "cannot be used on the categorical column 'plan'",
        ),
    ],
)
def test_unusable_input_is_refused(kinds: dict[str, str], drift: DriftSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_drift(frame(100, 1), frame(100, 2), kinds, drift)


def test_non_numbers_in_a_numeric_column_are_refused() -> None:
    current = frame(500, 2).astype({"amount": object})
    current.loc[3, "amount"] = "n/a"
    with pytest.raises(ValueError, match="numeric column 'amount' in the current data holds non-numbers"):
        check_drift(frame(500, 1), current, KINDS, DriftSpec())


def test_to_dict_is_json_without_the_snapshot(shifted_report: DriftReport) -> None:
    data = json.loads(json.dumps(shifted_report.to_dict()))

    assert "snapshot" not in data
    assert data["drifted_columns"] == ["amount"]
    assert data["columns"][0] == {
        "column": "amount",
        "kind": "num",
        "method": "wasserstein",
        "score": shifted_report.columns[0].score,
        "threshold": 0.1,
        "drifted": True,
        "noise_floor": shifted_report.columns[0].noise_floor,
    }
    assert (data["reference_rows"], data["current_rows"], data["sampled_rows"]) == (5_000, 5_000, 5_000)
    assert data["dataset_drift"] is False and data["drifted_share"] == pytest.approx(0.2)


def test_reports_land_in_one_evidently_workspace_project_per_model(
    shifted_report: DriftReport, tmp_path: Path
) -> None:
    from evidently.ui.workspace import Workspace

    first = add_to_workspace(tmp_path / "ws", "churn monitoring", {"data drift w1": shifted_report})
    second = add_to_workspace(tmp_path / "ws", "churn monitoring", {"data drift w2": shifted_report})

    space = Workspace.create(str(tmp_path / "ws"))
    (project,) = space.search_project("churn monitoring")
    assert sorted(map(str, space.list_runs(project.id))) == sorted(first + second)
    stored = space.get_run(project.id, second[0])
    assert stored is not None and stored.name == "data drift w2"


def test_save_report_writes_evidently_html_and_json(shifted_report: DriftReport, tmp_path: Path) -> None:
    html_path, json_path = tmp_path / "out" / "drift.html", tmp_path / "out" / "drift.json"
    save_report(shifted_report, html_path, json_path)

    assert "amount" in html_path.read_text() and "<html" in html_path.read_text().lower()
    saved = json.loads(json_path.read_text())
    drifted = [
        t["metric_config"]["params"]["column"]
        for t in saved["tests"]
        if t["status"] == "FAIL" and "column" in t["metric_config"]["params"]
    ]
    assert drifted == ["amount"]


# --- The example data: the planned drift episode -----------------------------------------------


def test_example_data_two_february_windows_do_not_drift() -> None:
    report = check_drift(
        churn_window(datetime.date(2026, 2, 2), 5),
        churn_window(datetime.date(2026, 2, 16), 5),
        CHURN_KINDS,
        DriftSpec(),
    )

    assert report.drifted_columns() == []
    assert report.dataset_drift is False


def test_example_data_drift_episode_is_detected_in_the_shifted_columns() -> None:
    report = check_drift(
        churn_window(datetime.date(2026, 2, 2), 5),
        churn_window(ex.DRIFT_START + datetime.timedelta(days=1), 5),
        CHURN_KINDS,
        DriftSpec(),
    )
    drifted = set(report.drifted_columns())
    scores = {item.column: item.score for item in report.columns}

    # The generator raises charges, lowers engagement and moves the region and plan mix from April.
    assert {
        "monthly_charges",
        "total_charges",
        "avg_session_minutes",
        "days_since_last_login",
        "region",
    } <= drifted
    # The plan mix moves from 45/35/20 to 33/35/32: a Jensen-Shannon distance of 0.108, near 0.1.
    assert scores["plan"] > 0.09
    # Columns the generator leaves alone stay put.
    assert not drifted & {"age", "tenure_months", "payment_method"}
    assert report.dataset_drift is True


# --- The quantile sketch ----------------------------------------------------------------------


def test_numeric_sketch_keeps_the_distribution_and_the_null_share() -> None:
    rng = np.random.default_rng(0)
    values = rng.lognormal(3.0, 1.0, 200_001)
    values[rng.random(len(values)) < 0.1] = np.nan
    sketch = _numeric_sketch(values, 10_000, np.random.default_rng(1))
    finite, kept = values[~np.isnan(values)], sketch[~np.isnan(sketch)]

    assert len(sketch) == 10_000
    assert np.isnan(sketch).mean() == pytest.approx(np.isnan(values).mean(), abs=1e-4)
    assert np.isin(kept, finite).all()  # order statistics of the data, not interpolated values
    assert stats.wasserstein_distance(finite, kept) / finite.std() < 1e-3
    # Deterministic apart from the row order.
    again = _numeric_sketch(values, 10_000, np.random.default_rng(2))
    assert np.array_equal(np.sort(kept), np.sort(again[~np.isnan(again)]))


def test_categorical_sketch_keeps_shares_to_one_row() -> None:
    values = pd.Series(["a"] * 45_017 + ["b"] * 35_001 + [np.nan, None, pd.NA] + ["c"] * 19_979, dtype=object)
    counts = _category_counts(values.astype("category"))
    sketch = pd.Series(_categorical_sketch(counts, 1_000, np.random.default_rng(0)), dtype=object)

    assert counts == {"a": 45_017, "b": 35_001, "c": 19_979, None: 3}
    assert len(sketch) == 1_000
    shares = sketch.value_counts(dropna=False)
    assert (shares["a"], shares["b"], shares["c"]) == (450, 350, 200)


@pytest.mark.slow
def test_sketched_check_matches_the_full_data_check() -> None:
    reference, current = frame(60_000, 1), frame(60_000, 2, shift_sd=0.15)
    sketched = check_drift(reference, current, KINDS, DriftSpec(sample_rows=6_000), seed=3)
    full = check_drift(reference, current, KINDS, DriftSpec(sample_rows=60_000))

    assert sketched.sketched and not full.sketched
    assert sketched.sampled_rows == 6_000 and sketched.snapshot is not None
    for ours, exact in zip(sketched.columns, full.columns, strict=True):
        assert ours.score == pytest.approx(exact.score, abs=2e-3), ours.column
        assert ours.drifted == exact.drifted, ours.column
