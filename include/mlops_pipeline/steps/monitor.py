"""The task body of `<model>__monitor`: `check` one window, record its verdict, decide on retraining.

What the window holds is gathered by :func:`mlops_pipeline.monitoring.check_window`; the verdict
rule is :func:`mlops_pipeline.monitoring.decide`. This step runs the drift checks, writes the
reports, records and logs, so `retrain_needed` and `retrain` only read its result.
"""

from __future__ import annotations

import json
from datetime import date
from typing import cast

from mlops_pipeline import layout
from mlops_pipeline.settings import get_settings
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.steps import RunInfo, StepRejected, claim_evidence
from mlops_pipeline.steps.results import RollbackCheck, WindowChecked
from mlops_pipeline.store import ObjectStore


def _feature_kinds(spec: ModelSpec) -> dict[str, str]:
    return {name: ("cat" if f.type == "category" else "num") for name, f in spec.features.items()}


def check(
    spec: ModelSpec, store: ObjectStore, end: date, window: int | None, dry_run: bool, run: RunInfo
) -> WindowChecked:
    """Check one window for data drift, prediction drift and performance; record it and decide on retraining."""
    import tempfile
    from pathlib import Path

    import mlflow

    from mlops_pipeline import drift, monitoring, registry
    from mlops_pipeline.ingest import UnreadableSourceError, record_unreadable

    if spec.scoring is None:
        raise StepRejected(f"{spec.name} has no scoring section: there are no predictions to monitor")
    client = registry.configured_client()
    try:
        window_check = monitoring.check_window(spec, store, client, end, window or spec.drift.window_days)
    except monitoring.MonitoringUnavailable as exc:
        raise StepRejected(str(exc)) from exc
    days, used, missing = window_check.days, window_check.days_used, window_check.days_missing
    scored, reference, current = window_check.scored, window_check.reference, window_check.current
    champion, pipeline = window_check.champion, window_check.pipeline
    kinds = _feature_kinds(spec)
    data_report = drift.check_drift(reference, current, kinds, spec.drift)

    # Prediction drift: the champion on its own training data versus what was published.
    output_drift = spec.drift.model_copy(update={"column_thresholds": {}, "column_methods": {}})
    reference_out, current_out, out_kinds = monitoring.prediction_frames(spec, pipeline, reference, scored)
    prediction_report = drift.check_drift(reference_out, current_out, out_kinds, output_drift)

    try:
        labels = monitoring.read_labels(store, spec, [date.fromisoformat(d) for d in used])
    except UnreadableSourceError as exc:
        record = record_unreadable(store, spec.name, exc)
        raise StepRejected(
            f"{exc}. The window was not checked or recorded; replace or remove the file and rerun. Record: {record}"
        ) from exc
    performance = monitoring.performance_by_version(scored, labels, spec) if len(labels) else {}
    drops = monitoring.below_floors(performance, spec)

    claim_evidence(store, run, layout.reports_prefix(spec.name, run.dag_run_id))
    with tempfile.TemporaryDirectory() as tmp:
        for name, report in (("data_drift", data_report), ("prediction_drift", prediction_report)):
            html, js = Path(tmp) / f"{name}.html", Path(tmp) / f"{name}.json"
            drift.save_report(report, html, js)
            store.upload_file(html, layout.drift_report_key(spec.name, run.dag_run_id, name, "html"))
            store.upload_file(js, layout.drift_report_key(spec.name, run.dag_run_id, name, "json"))
    workspace_runs: list[str] = []
    if workspace := get_settings().evidently_workspace:
        workspace_runs = drift.add_to_workspace(
            workspace,
            f"{spec.name} monitoring",
            {
                f"data drift {days[0]}..{end}": data_report,
                f"prediction drift {days[0]}..{end}": prediction_report,
            },
        )
    window_summary = {
        "days_used": used,
        "days_missing": missing,
        "reference": {"version": str(champion.version), "data_uri": champion.tags.get("data_uri")},
        "data_drift": data_report.to_dict(),
        "prediction_drift": prediction_report.to_dict(),
        "performance": performance,
        "performance_drops": drops,
    }
    store.write_bytes(
        layout.monitoring_summary_key(spec.name, run.dag_run_id),
        json.dumps(window_summary, indent=2, default=str).encode(),
    )

    verdict = monitoring.WindowVerdict(
        end=end.isoformat(),
        start=days[0].isoformat(),
        data_drift=data_report.dataset_drift,
        prediction_drift=bool(prediction_report.drifted_columns()),
        performance_drop=bool(drops),
        drifted_columns=data_report.drifted_columns(),
        run_id=run.dag_run_id,
    )
    if not dry_run:
        monitoring.record_verdict(store, spec.name, verdict)
    history = monitoring.verdicts(store, spec.name)
    if dry_run:
        history = [v for v in history if v.end != verdict.end] + [verdict]
        history.sort(key=lambda v: v.end)
    decision = monitoring.decide(history, monitoring.trigger_days(store, spec.name), spec.drift, verdict.end)
    trigger = decision.retrain and not dry_run
    if trigger and not monitoring.record_trigger(store, spec.name, verdict.end, decision, run.dag_run_id):
        trigger = False

    rollback = _rollback_check(spec, store, performance, str(champion.version), dry_run, run)

    metrics = {f"drift_score.{c.column}": c.score for c in data_report.columns}
    metrics |= {f"prediction_drift_score.{c.column}": c.score for c in prediction_report.columns}
    metrics |= {"drifted_share": data_report.drifted_share, "rows_current": float(len(current))}
    for version, values in performance.items():
        metrics |= {f"live_{metric}.v{version}": value for metric, value in values.items()}
    experiment = mlflow.set_experiment(f"{spec.name}-monitoring")
    with mlflow.start_run(
        experiment_id=experiment.experiment_id,
        run_name=f"window {days[0]}..{end}",
        tags={**run.tags(), "window_start": days[0].isoformat(), "window_end": end.isoformat()},
    ):
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})
        mlflow.log_params(
            {"window_days": len(days), "reference_version": str(champion.version), "dry_run": dry_run}
        )
        mlflow.set_tags(
            {
                "retrain_triggered": str(trigger).lower(),
                "decision": decision.reason[:5000],
                "rollback_triggered": str(rollback["trigger"]).lower(),
            }
        )
    checked = cast(
        WindowChecked,
        monitoring.summary(
            verdict,
            decision,
            {
                "trigger": trigger,
                "dry_run": dry_run,
                "days_used": used,
                "days_missing": missing,
                "performance": performance,
                "performance_drops": drops,
                "data_drift_report": store.uri(
                    layout.drift_report_key(spec.name, run.dag_run_id, "data_drift", "html")
                ),
                "prediction_drift_report": store.uri(
                    layout.drift_report_key(spec.name, run.dag_run_id, "prediction_drift", "html")
                ),
                "drift_scores": {c.column: c.score for c in data_report.columns},
                "evidently_workspace_runs": workspace_runs,
                "rollback": rollback,
            },
        ),
    )
    from mlops_pipeline import telemetry

    telemetry.push(telemetry.monitor_window_metrics(spec.name, checked))
    return checked


def _rollback_check(
    spec: ModelSpec,
    store: ObjectStore,
    performance: dict[str, dict[str, float]],
    champion: str,
    dry_run: bool,
    run: RunInfo,
) -> RollbackCheck:
    """The window's rollback decision for the champion; recorded (once per champion) unless a dry run."""
    from mlops_pipeline import registry, rollout

    # The history is read only where a rollback can be decided: every other model's window skips it.
    previous = (
        rollout.previous_champion(registry.promotion_history(store, spec.name), champion)
        if spec.rollout.rollback is not None
        else None
    )
    decision = rollout.decide_rollback(spec, performance, champion, previous)
    trigger = (
        decision.action == "rollback"
        and not dry_run
        and rollout.record_rollback(store, spec.name, decision, run.dag_run_id)
    )
    return {
        "action": decision.action,
        "trigger": trigger,
        "champion_version": champion,
        "to_version": decision.to_version,
        "reason": "; ".join(decision.reasons),
    }
