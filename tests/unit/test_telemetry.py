"""The metrics each run pushes: names and labels by Prometheus' conventions (checked by `promtool`),
histograms an operator can take percentiles of, pushes to a real Pushgateway that replace a model's
previous figures (and keep the last success when a gate refused), a push that fails without failing
the run, and the shipped dashboard and alerting rules, which may name only metrics that are pushed.

Prometheus, its Pushgateway and promtool are the machine's own (Debian's packages, installed when
missing), started on free ports for this module.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops_pipeline import telemetry
from mlops_pipeline.devtools.docker_engine import ensure_debian_packages
from mlops_pipeline.devtools.processes import find_free_port
from mlops_pipeline.devtools.prometheus_servers import (
    ALERT_RULES,
    PROMETHEUS_PACKAGES,
    PrometheusServers,
    start_prometheus_servers,
    stop_prometheus_servers,
)
from mlops_pipeline.scoring import LATENCY_BUCKETS_SECONDS, PROBABILITY_BUCKETS, ScoreStats, bucket_counts
from mlops_pipeline.steps.results import Evaluation, Published, WindowChecked

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy/grafana/dashboards/mlops-pipeline.json"
DATASOURCE = REPO / "deploy/grafana/provisioning/datasources/prometheus.yml"
# Every label value comes from a bounded set: versions, the spec's features, classes and metrics.
BOUNDED_LABELS = {"model", "ds", "end", "version", "feature", "label", "metric", "kind", "action", "le"}


def score_stats() -> ScoreStats:
    stats = ScoreStats(
        rows_in=100,
        rows_scored=95,
        rows_quarantined=5,
        nulls_by_feature={"tenure": 3, "plan": 0},
        predicted_labels={"no": 60, "yes": 35},
        prediction_sum=30.0,
        prediction_sq_sum=12.0,
    )
    for seconds in (0.003, 0.02, 0.02, 7.0, 20.0):
        stats.observe_batch(seconds)
    stats.probability_counts = bucket_counts(np.linspace(0.0, 1.0, 95), PROBABILITY_BUCKETS)
    return stats


def published(ds: str = "2026-03-01", shadow: bool = True) -> Published:
    return cast(
        Published,
        {
            "ds": ds,
            "rows": 95,
            "quarantined_rows": 5,
            "model_version": "2",
            "manifest_uri": "s3://mlops/store/predictions/churn/ds=2026-03-01/_manifest.json",
            "generation": 1,
            "shadow_version": "3" if shadow else None,
            "shadow_manifest_generation": 1 if shadow else None,
            "shadow_agreement": {"label_agreement": 0.9, "mean_abs_diff": 0.05} if shadow else None,
            "rows_by_version": {"2": 70, "3": 25} if shadow else {"2": 95},
            "metrics": {"seconds": 2.0, "rows_per_s": 50.0},
        },
    )


def window_checked() -> WindowChecked:
    return cast(
        WindowChecked,
        {
            "end": "2026-04-04",
            "data_drift": True,
            "prediction_drift": False,
            "performance_drop": False,
            "drifted_columns": ["tenure"],
            "drift_scores": {"tenure": 0.31, "plan": 0.02},
            "days_missing": [],
            "performance": {"2": {"roc_auc": 0.81, "f1": float("nan")}, "3": {"roc_auc": 0.78}},
            "trigger": True,
            "rollback": {"trigger": False},
        },
    )


def evaluation(passed: bool) -> Evaluation:
    return cast(
        Evaluation,
        {
            "passed": passed,
            "failures": [] if passed else ["roc_auc 0.60 < floor 0.70"],
            "candidate_metrics": {"roc_auc": 0.83 if passed else 0.60, "log_loss": 0.41},
        },
    )


def every_kind_of_run() -> list[telemetry.RunMetrics]:
    """One of each run's metrics: classification with a shadow, regression without, a window, both gates."""
    return [
        telemetry.score_run_metrics("churn", published(), score_stats(), classification=True, at=1.0),
        telemetry.score_run_metrics(
            "demand", published(shadow=False), score_stats(), classification=False, at=1.0
        ),
        telemetry.monitor_window_metrics("churn", window_checked(), at=1.0),
        telemetry.gate_metrics("churn", evaluation(True), at=1.0),
        telemetry.gate_metrics("churn", evaluation(False), at=1.0),
    ]


def pushed_names() -> set[str]:
    return set().union(*(run.names() for run in every_kind_of_run()))


@pytest.fixture(scope="module")
def promtool() -> str:
    ensure_debian_packages(PROMETHEUS_PACKAGES)
    return "promtool"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServers]:
    root = tmp_path_factory.mktemp("prometheus")
    try:
        yield start_prometheus_servers(root, root / "run", {}, scrape_interval="1s")
    finally:
        stop_prometheus_servers(root / "run")


def gateway_samples(servers: PrometheusServers) -> list[Any]:
    text = httpx.get(f"{servers.pushgateway_url}/metrics", timeout=10).text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


# --- the figures and their names -----------------------------------------------------------------


def test_buckets_hold_values_up_to_and_including_their_bound() -> None:
    assert bucket_counts(np.asarray([0.1, 0.1000001, 0.0, 1.0, 1.5]), (0.1, 1.0)) == [2, 2, 1]


def test_histograms_sum_over_files_and_read_stats_from_before_them() -> None:
    first, second = ScoreStats(), ScoreStats()
    first.observe_batch(0.02)
    second.observe_batch(3.0)
    second.add(first)
    assert sum(second.batch_latency_counts) == 2 and second.batch_latency_sum == pytest.approx(3.02)
    assert len(second.batch_latency_counts) == len(LATENCY_BUCKETS_SECONDS) + 1
    # An XCom written before the histograms existed has none of their keys.
    older = {k: v for k, v in ScoreStats().to_dict().items() if "counts" not in k and "latency" not in k}
    merged = ScoreStats.from_dict(older)
    merged.add(second)
    assert merged.batch_latency_counts == second.batch_latency_counts


def test_the_latency_histogram_gives_the_operator_percentiles() -> None:
    run = telemetry.score_run_metrics("churn", published(), score_stats(), classification=True, at=1.0)
    (family,) = [
        f
        for f in text_string_to_metric_families(run.exposition())
        if f.name == "mlops_score_batch_latency_seconds"
    ]
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    # 0.003 | 0.02, 0.02 | 7.0 | 20.0: cumulative, with +Inf equal to the count.
    assert (buckets["0.005"], buckets["0.025"], buckets["5.0"], buckets["10.0"], buckets["+Inf"]) == (
        1,
        3,
        3,
        4,
        5,
    )
    count = [s.value for s in family.samples if s.name.endswith("_count")]
    assert count == [5]
    assert {s.labels["version"] for s in family.samples} == {"2"}


def test_every_pushed_name_and_label_follows_prometheus_conventions(promtool: str) -> None:
    for run in every_kind_of_run():
        text = run.exposition()
        lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), (
            run.job,
            lint.stdout,
            lint.stderr,
        )
        for family in text_string_to_metric_families(text):
            assert family.name.startswith((f"{run.job}_", telemetry.LAST_SUCCESS)), family.name
            assert family.type in {"gauge", "histogram"}, family.name  # a run's figures, not counters
            for sample in family.samples:
                assert set(sample.labels) <= BOUNDED_LABELS, (family.name, sample.labels)


def test_what_each_run_reports() -> None:
    score, regression, monitor, passed, refused = every_kind_of_run()
    assert {"mlops_score_prediction_probability", "mlops_score_shadow_label_agreement_ratio"} <= score.names()
    assert "mlops_score_prediction_stddev" in regression.names()
    assert not regression.names() & {
        "mlops_score_prediction_probability",
        "mlops_score_shadow_label_agreement_ratio",
    }
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(monitor.exposition())
        for s in f.samples
    }
    live = {k: v for k, v in samples.items() if k[0] == "mlops_monitor_live_metric"}
    # NaN (a metric that could not be computed) is left out, not pushed as a number.
    assert sorted((dict(k[1])["version"], dict(k[1])["metric"]) for k in live) == [
        ("2", "roc_auc"),
        ("3", "roc_auc"),
    ]
    assert (
        samples[("mlops_monitor_drifted_features_ratio", (("end", "2026-04-04"), ("model", "churn")))] == 0.5
    )
    assert telemetry.LAST_SUCCESS in passed.names() and passed.replace_group
    assert telemetry.LAST_SUCCESS not in refused.names() and not refused.replace_group


# --- pushing -----------------------------------------------------------------------------------


def test_a_push_replaces_the_models_previous_figures(servers: PrometheusServers) -> None:
    for ds in ("2026-03-01", "2026-03-02"):
        run = telemetry.score_run_metrics("churn", published(ds), score_stats(), classification=True)
        assert telemetry.push(run, servers.pushgateway_url)
    rows = [s for s in gateway_samples(servers) if s.name == "mlops_score_input_rows"]
    assert [(s.labels["job"], s.labels["model"], s.labels["ds"], s.value) for s in rows] == [
        ("mlops_score", "churn", "2026-03-02", 100.0)
    ]


def test_a_refused_gate_is_pushed_and_the_last_success_is_kept(servers: PrometheusServers) -> None:
    assert telemetry.push(
        telemetry.gate_metrics("churn", evaluation(True), at=1000.0), servers.pushgateway_url
    )
    assert telemetry.push(telemetry.gate_metrics("churn", evaluation(False)), servers.pushgateway_url)
    train = {s.name: s.value for s in gateway_samples(servers) if s.labels.get("job") == "mlops_train"}
    assert train["mlops_train_gate_passed"] == 0.0 and train["mlops_train_gate_failures"] == 1.0
    assert train[telemetry.LAST_SUCCESS] == 1000.0


def test_a_failed_push_is_logged_and_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    closed = f"http://127.0.0.1:{find_free_port()}"
    run = telemetry.gate_metrics("churn", evaluation(True))
    with caplog.at_level(logging.WARNING, logger="mlops_pipeline.telemetry"):
        assert telemetry.push(run, closed, timeout=2) is False
    assert f"were not pushed to {closed}" in caplog.text


def test_nothing_is_pushed_without_a_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOPS_PUSHGATEWAY_URL", raising=False)
    assert telemetry.push(telemetry.gate_metrics("churn", evaluation(True))) is False


def test_prometheus_scrapes_the_pushed_figures_and_computes_percentiles(servers: PrometheusServers) -> None:
    run = telemetry.score_run_metrics("churn", published("2026-03-03"), score_stats(), classification=True)
    assert telemetry.push(run, servers.pushgateway_url)
    p95 = 'histogram_quantile(0.95, sum by (le) (mlops_score_batch_latency_seconds_bucket{model="churn"}))'
    deadline, result = time.monotonic() + 30, []
    while time.monotonic() < deadline:
        result = servers.query(p95)
        if result and servers.query('mlops_score_input_rows{ds="2026-03-03"}'):
            break
        time.sleep(0.5)
    # 5 batches: the 95th percentile lies in the +Inf bucket, reported as the highest finite bound.
    assert result and float(result[0]["value"][1]) == LATENCY_BUCKETS_SECONDS[-1], result
    rules = httpx.get(f"{servers.prometheus_url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert {rule["name"] for group in rules for rule in group["rules"]} >= {
        "MlopsDataDrift",
        "MlopsNoSuccessfulScoring",
        "MlopsScoringLatencyP95Up",
        "MlopsFeatureMissingRateJump",
    }


# --- what is shipped for people to look at --------------------------------------------------------

_METRIC = re.compile(r"\bmlops_[a-z0-9_]+")


def _named_metrics(expression: str) -> set[str]:
    names = set(_METRIC.findall(re.sub(r'"[^"]*"', '""', expression)))  # not the label values
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}


def test_the_alerting_rules_load_and_name_only_pushed_metrics(promtool: str) -> None:
    import yaml

    check = subprocess.run([promtool, "check", "rules", str(ALERT_RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    rules = [rule for group in yaml.safe_load(ALERT_RULES.read_text())["groups"] for rule in group["rules"]]
    known = pushed_names()
    for rule in rules:
        named = _named_metrics(rule["expr"])
        assert named and named <= known, (rule["alert"], named - known)


def test_the_dashboard_names_only_pushed_metrics_through_the_provisioned_data_source() -> None:
    import yaml

    dashboard = json.loads(DASHBOARD.read_text())
    (source,) = yaml.safe_load(DATASOURCE.read_text())["datasources"]
    known = pushed_names()
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(expressions) >= 12
    for expression in expressions:
        named = _named_metrics(expression)
        assert named and named <= known, (expression, named - known)
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} == {source["uid"]}
    # What the issue asks to see per model: volume, latency percentiles, prediction distribution,
    # missing rate, drift, version share and run health.
    shown = set().union(*map(_named_metrics, expressions))
    assert {
        "mlops_score_input_rows",
        "mlops_score_batch_latency_seconds",
        "mlops_score_prediction_probability",
        "mlops_score_feature_missing_ratio",
        "mlops_monitor_feature_drift_score",
        "mlops_score_version_rows_ratio",
        telemetry.LAST_SUCCESS,
    } <= shown
