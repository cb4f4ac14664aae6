"""The figures operators graph: each run's results as Prometheus metrics, pushed to a Pushgateway.

A scoring, monitoring or training run ends long before Prometheus would scrape it, so each run
pushes its figures once, when it has succeeded (Prometheus' own advice for batch jobs). The
builders here are pure (a run's typed payload in, a :class:`RunMetrics` out); :func:`push` is the
one place that talks to the network.

Conventions (https://prometheus.io/docs/practices/naming/):

- every name starts with ``mlops_`` and the job (``mlops_score_``, ``mlops_monitor_``,
  ``mlops_train_``), carries its unit (``_seconds``, ``_rows``, ``_ratio``) and is a gauge of the
  run it describes: a push replaces the previous one, so the run's figures are not counters;
- the Pushgateway group is (job, model): each push of a model's job replaces its previous push,
  so the gateway holds one group per model and job whatever the number of days, and Prometheus
  keeps the history. The day a run describes (``ds`` for scoring, ``end`` for monitoring) is a
  label of its figures and also a value (``..._day_timestamp_seconds``) for "which day is this";
- every other label takes values from a bounded set: model versions, the spec's features, the
  model's classes, the spec's metrics;
- ``mlops_last_success_timestamp_seconds`` (job, model): when the job last succeeded, so that
  "no successful scoring within the schedule" is ``time() - mlops_last_success_timestamp_seconds``.

A push that fails is logged and does not fail the run: monitoring being down must not stop
scoring, and the stale ``mlops_last_success_timestamp_seconds`` is what tells the operator.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

if TYPE_CHECKING:
    from mlops_pipeline.scoring import ScoreStats
    from mlops_pipeline.steps.results import Evaluation, Published, WindowChecked

log = logging.getLogger(__name__)

SCORE_JOB, MONITOR_JOB, TRAIN_JOB = "mlops_score", "mlops_monitor", "mlops_train"
LAST_SUCCESS = "mlops_last_success_timestamp_seconds"


@dataclass(frozen=True)
class RunMetrics:
    """One run's metric families, and the Pushgateway group (job, model) they replace."""

    job: str
    model: str
    families: tuple[Metric, ...] = field(default_factory=tuple)
    # False: replace only the families pushed and keep the group's others (see gate_metrics).
    replace_group: bool = True

    def registry(self) -> CollectorRegistry:
        """A registry holding exactly these families (what is pushed)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(self.families))
        return registry

    def exposition(self) -> str:
        """The families in Prometheus' text format, as the Pushgateway receives them."""
        return generate_latest(self.registry()).decode()

    def names(self) -> set[str]:
        """The metric names pushed (a histogram's name without its `_bucket`/`_sum`/`_count`)."""
        return {family.name for family in self.families}


class _Families:
    """A collector of fixed families: a run's figures are computed once, not on scrape."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


def _day_seconds(day: str) -> float:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC).timestamp()


def _gauge(name: str, doc: str, labels: Mapping[str, str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _gauges(
    name: str, doc: str, labels: Mapping[str, str], key: str, values: Mapping[str, float]
) -> GaugeMetricFamily:
    """One gauge per entry of `values`, its key under the label `key` (NaN entries are left out)."""
    family = GaugeMetricFamily(name, doc, labels=[*labels, key])
    for item, value in sorted(values.items()):
        if not math.isnan(value):
            family.add_metric([*labels.values(), item], value)
    return family


def _histogram(
    name: str,
    doc: str,
    labels: Mapping[str, str],
    bounds: Sequence[float],
    counts: Sequence[int],
    total: float,
) -> HistogramMetricFamily | None:
    """A histogram from per-bucket counts (the last one above every bound); None without observations."""
    if not counts or sum(counts) == 0:
        return None
    cumulative, buckets = 0, []
    for bound, count in zip([*map(str, bounds), "+Inf"], counts, strict=True):
        cumulative += count
        buckets.append((bound, cumulative))
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), buckets, total)
    return family


def _last_success(model: str, at: float) -> GaugeMetricFamily:
    return _gauge(
        LAST_SUCCESS, "When the job last succeeded for the model (Unix time).", {"model": model}, at
    )


def score_run_metrics(
    model: str, published: Published, stats: ScoreStats, classification: bool, at: float | None = None
) -> RunMetrics:
    """A published scoring run's figures: volume, speed, latency, predictions, missing values, versions."""
    from mlops_pipeline.scoring import LATENCY_BUCKETS_SECONDS, PROBABILITY_BUCKETS

    ds, version = published["ds"], published["model_version"]
    day = {"model": model, "ds": ds}
    served = {**day, "version": version}
    seconds = published["metrics"].get("seconds", math.nan)
    families: list[Metric | None] = [
        _gauge(
            "mlops_score_day_timestamp_seconds",
            "The day this scoring run published (Unix time, 00:00 UTC).",
            {"model": model},
            _day_seconds(ds),
        ),
        _gauge("mlops_score_input_rows", "Input rows read by the run.", day, stats.rows_in),
        _gauge(
            "mlops_score_published_rows", "Rows published in the day's partition.", day, published["rows"]
        ),
        _gauge(
            "mlops_score_quarantined_rows",
            "Input rows quarantined (not scorable).",
            day,
            stats.rows_quarantined,
        ),
        _gauge(
            "mlops_score_quarantined_ratio",
            "Share of input rows quarantined.",
            day,
            stats.rows_quarantined / stats.rows_in if stats.rows_in else 0.0,
        ),
        _gauge("mlops_score_duration_seconds", "Wall time of the run, plan to publish.", day, seconds),
        _gauge(
            "mlops_score_rows_per_second",
            "Input rows per second of wall time.",
            day,
            published["metrics"].get("rows_per_s", math.nan),
        ),
        _histogram(
            "mlops_score_batch_latency_seconds",
            "Time the model took to predict one batch.",
            served,
            LATENCY_BUCKETS_SECONDS,
            stats.batch_latency_counts,
            stats.batch_latency_sum,
        ),
        _gauges(
            "mlops_score_feature_missing_ratio",
            "Share of scored rows where the feature is missing.",
            day,
            "feature",
            {f: n / max(stats.rows_scored, 1) for f, n in stats.nulls_by_feature.items()},
        ),
        _gauges(
            "mlops_score_version_rows_ratio",
            "Share of the published rows each model version served (a canary serves some).",
            day,
            "version",
            {v: rows / max(published["rows"], 1) for v, rows in published["rows_by_version"].items()},
        ),
    ]
    scored = max(stats.rows_scored, 1)
    if classification:
        families += [
            _histogram(
                "mlops_score_prediction_probability",
                "Predicted probability of the positive class (the last of the model's classes).",
                served,
                PROBABILITY_BUCKETS,
                stats.probability_counts,
                stats.prediction_sum,
            ),
            _gauges(
                "mlops_score_predicted_label_ratio",
                "Share of scored rows predicted as each label.",
                served,
                "label",
                {label: n / scored for label, n in stats.predicted_labels.items()},
            ),
        ]
    else:
        mean = stats.prediction_sum / scored
        families += [
            _gauge("mlops_score_prediction_mean", "Mean prediction.", served, mean),
            _gauge(
                "mlops_score_prediction_stddev",
                "Standard deviation of the predictions.",
                served,
                max(stats.prediction_sq_sum / scored - mean * mean, 0.0) ** 0.5,
            ),
        ]
    if agreement := published["shadow_agreement"]:
        challenger = {**day, "version": published["shadow_version"] or ""}
        families += [
            _gauge(
                "mlops_score_shadow_label_agreement_ratio",
                "Share of rows where the challenger in shadow predicts the champion's label.",
                challenger,
                agreement.get("label_agreement", math.nan),
            ),
            _gauge(
                "mlops_score_shadow_mean_abs_difference",
                "Mean absolute difference of the challenger's predictions from the champion's.",
                challenger,
                agreement.get("mean_abs_diff", math.nan),
            ),
        ]
    families.append(_last_success(model, time.time() if at is None else at))
    return RunMetrics(SCORE_JOB, model, tuple(f for f in families if f is not None))


def monitor_window_metrics(model: str, checked: WindowChecked, at: float | None = None) -> RunMetrics:
    """A monitoring window's figures: drift per feature, the drifted share, alarms, live metrics per version."""
    end = checked["end"]
    window = {"model": model, "end": end}
    scores = checked["drift_scores"]
    drifted = set(checked["drifted_columns"])
    families: list[Metric] = [
        _gauge(
            "mlops_monitor_day_timestamp_seconds",
            "The last day of the window checked (Unix time, 00:00 UTC).",
            {"model": model},
            _day_seconds(end),
        ),
        _gauges(
            "mlops_monitor_feature_drift_score",
            "Drift score per feature (the test's statistic or p-value).",
            window,
            "feature",
            scores,
        ),
        _gauge(
            "mlops_monitor_drifted_features_ratio",
            "Share of features whose drift test failed.",
            window,
            len(drifted & set(scores)) / len(scores) if scores else 0.0,
        ),
        _gauges(
            "mlops_monitor_alarm",
            "1 when the window shows this kind of problem, else 0.",
            window,
            "kind",
            {
                "data_drift": float(checked["data_drift"]),
                "prediction_drift": float(checked["prediction_drift"]),
                "performance_drop": float(checked["performance_drop"]),
            },
        ),
        _gauges(
            "mlops_monitor_decision",
            "1 when the window triggered this action, else 0.",
            window,
            "action",
            {
                "retrain": float(checked["trigger"]),
                "rollback": float(checked["rollback"]["trigger"]),
            },
        ),
        _gauge(
            "mlops_monitor_missing_partitions",
            "Days of the window without a published partition.",
            window,
            len(checked["days_missing"]),
        ),
    ]
    live = GaugeMetricFamily(
        "mlops_monitor_live_metric",
        "The spec's metrics on late labels, per model version.",
        labels=["model", "end", "version", "metric"],
    )
    for version, values in sorted(checked["performance"].items()):
        for metric, value in sorted(values.items()):
            if not math.isnan(value):
                live.add_metric([model, end, version, metric], value)
    families += [live, _last_success(model, time.time() if at is None else at)]
    return RunMetrics(MONITOR_JOB, model, tuple(families))


def gate_metrics(model: str, evaluation: Evaluation, at: float | None = None) -> RunMetrics:
    """A training run's gate outcome and the candidate's holdout metrics.

    A refused candidate is pushed too (the outcome is what an operator graphs), but without
    `mlops_last_success_timestamp_seconds`, and the group's last success is kept: the run failed.
    """
    run = {"model": model}
    families: list[Metric] = [
        _gauge(
            "mlops_train_gate_passed",
            "1 when the candidate passed every gate, else 0.",
            run,
            float(evaluation["passed"]),
        ),
        _gauge("mlops_train_gate_failures", "Gates the candidate failed.", run, len(evaluation["failures"])),
        _gauges(
            "mlops_train_candidate_metric",
            "The candidate's metrics on the holdout.",
            run,
            "metric",
            evaluation["candidate_metrics"],
        ),
    ]
    if evaluation["passed"]:
        families.append(_last_success(model, time.time() if at is None else at))
    return RunMetrics(TRAIN_JOB, model, tuple(families), replace_group=evaluation["passed"])


def push(metrics: RunMetrics, gateway: str | None = None, timeout: float | None = None) -> bool:
    """Replace the (job, model) group on the Pushgateway with `metrics`; False when off or unreachable.

    `gateway` and `timeout` default to ``MLOPS_PUSHGATEWAY_URL`` and ``MLOPS_PUSHGATEWAY_TIMEOUT``;
    no gateway configured: nothing is pushed. A failure is logged, never raised (see the module).
    """
    from prometheus_client import push_to_gateway, pushadd_to_gateway

    from mlops_pipeline.settings import MetricsSettings

    settings = MetricsSettings()
    gateway = gateway or settings.pushgateway_url
    if not gateway:
        return False
    send = push_to_gateway if metrics.replace_group else pushadd_to_gateway
    try:
        send(
            gateway,
            job=metrics.job,
            registry=metrics.registry(),
            grouping_key={"model": metrics.model},
            timeout=timeout or settings.pushgateway_timeout,
        )
    except OSError as exc:  # URLError, connection refused, timeouts, HTTP errors
        log.warning(
            "metrics of %s for %s were not pushed to %s: %s", metrics.job, metrics.model, gateway, exc
        )
        return False
    log.info(
        "pushed %d metric families of %s for %s to %s",
        len(metrics.families),
        metrics.job,
        metrics.model,
        gateway,
    )
    return True
