"""Rollout: a candidate that passed its gates earns the champion's place in a shadow period.

With the spec's `rollout.shadow_days` > 0 and a champion to compare with, `promote` does not
move `champion`: it records that the candidate (alias `challenger`) entered its shadow period
(:func:`start_shadow`). Every scoring run then scores the day with the challenger too
(`predictions_shadow/`), and after publishing, `conclude_shadow` gathers the evidence of every
shadow day (:func:`shadow_evidence`: agreement with the champion, live metrics of each version
on the late labels) and :func:`decide_shadow` (pure) says wait, promote or refuse, every reason
with its numbers. The outcome is recorded once (create-only), so a retry concludes nothing
twice; a refused candidate loses its `challenger` alias, so scoring stops shadowing it. A newer
candidate registered meanwhile takes the alias and starts its own period: the older one is
simply no longer the challenger (superseded), never blocking training.

After a promotion, the monitor watches the new champion (:func:`decide_rollback`, pure): when
its live primary metric on the window's late labels falls more than `rollout.rollback.max_live_drop`
below that of the champion it replaced, on the same window, with enough labels on both sides, it
triggers `<model>__rollback` once (:func:`record_rollback`), with the evidence as the reason. The
rolled-back version is never made champion again (`registry.ROLLED_BACK_AT`).

Records live beside the promotion history: `registry/<model>/rollouts/v<version>/`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mlops_pipeline import layout
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.store import ObjectExistsError, ObjectStore


@dataclass(frozen=True)
class ShadowStarted:
    """A candidate entered its shadow period."""

    model: str
    version: str
    champion_version: str  # the champion it entered against
    shadow_days: int
    dag_run_id: str
    at: str


@dataclass(frozen=True)
class ShadowEvidence:
    """What the shadow days showed: agreement with the champion and live metrics per version."""

    days: list[str]  # scoring days the challenger was scored in shadow beside this champion
    rows: int  # rows scored by both
    label_agreement: float | None  # classification: share of rows both label alike
    live: dict[str, dict[str, float]] = field(default_factory=dict)  # version -> metrics (+ labelled_rows)


@dataclass(frozen=True)
class ShadowDecision:
    """Whether the shadow period promotes, refuses or keeps waiting, and why."""

    action: Literal["wait", "promote", "refuse"]
    reasons: list[str]


@dataclass(frozen=True)
class ShadowOutcome:
    """How a shadow period ended: the decision, its evidence, and the run that concluded it."""

    started: ShadowStarted
    champion_version: str
    decision: ShadowDecision
    evidence: ShadowEvidence
    dag_run_id: str
    at: str

    def to_json(self) -> bytes:
        """Stable JSON bytes."""
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()


def start_shadow(store: ObjectStore, started: ShadowStarted) -> ShadowStarted:
    """Record that a candidate entered its shadow period; once (a retry finds the first record)."""
    key = layout.rollout_started_key(started.model, started.version)
    try:
        store.create_only(key, json.dumps(asdict(started), indent=2, sort_keys=True).encode())
    except ObjectExistsError:
        return ShadowStarted(**json.loads(store.read_bytes(key)))
    return started


def shadow_started(store: ObjectStore, model: str, version: str) -> ShadowStarted | None:
    """The start record of `version`'s shadow period, if it ever entered one."""
    try:
        return ShadowStarted(**json.loads(store.read_bytes(layout.rollout_started_key(model, version))))
    except FileNotFoundError:
        return None


def shadow_outcome(store: ObjectStore, model: str, version: str) -> ShadowOutcome | None:
    """How `version`'s shadow period ended, if it has."""
    try:
        body = json.loads(store.read_bytes(layout.rollout_outcome_key(model, version)))
    except FileNotFoundError:
        return None
    return ShadowOutcome(
        started=ShadowStarted(**body["started"]),
        champion_version=body["champion_version"],
        decision=ShadowDecision(**body["decision"]),
        evidence=ShadowEvidence(**body["evidence"]),
        dag_run_id=body["dag_run_id"],
        at=body["at"],
    )


def in_shadow(store: ObjectStore, model: str, version: str) -> bool:
    """Whether `version` is in an open shadow period (started, not concluded)."""
    return shadow_started(store, model, version) is not None and shadow_outcome(store, model, version) is None


def record_outcome(store: ObjectStore, outcome: ShadowOutcome) -> ShadowOutcome:
    """Record how the period ended, once: a retry gets the first record back."""
    key = layout.rollout_outcome_key(outcome.started.model, outcome.started.version)
    try:
        store.create_only(key, outcome.to_json())
    except ObjectExistsError:
        existing = shadow_outcome(store, outcome.started.model, outcome.started.version)
        assert existing is not None
        return existing
    return outcome


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def decide_shadow(
    spec: ModelSpec, evidence: ShadowEvidence, challenger: str, champion: str
) -> ShadowDecision:
    """Wait, promote or refuse `challenger` against `champion` on the shadow evidence (pure).

    Waits until `rollout.shadow_days` days are scored and both versions have `rollout.min_labels`
    labelled rows (two labels never decide); then refuses when the live primary metric is worse
    than the champion's by more than `rollout.max_live_regression`, or the labels agree less than
    `rollout.min_agreement`; promotes otherwise. Every reason carries its numbers.
    """
    policy = spec.rollout
    if len(evidence.days) < policy.shadow_days:
        return ShadowDecision(
            "wait",
            [f"{len(evidence.days)} of {policy.shadow_days} shadow days scored ({', '.join(evidence.days)})"],
        )
    metric = spec.gates.primary_metric
    labelled = {
        version: int(evidence.live.get(version, {}).get("labelled_rows", 0))
        for version in (challenger, champion)
    }
    if short := [f"v{version} has {rows}" for version, rows in labelled.items() if rows < policy.min_labels]:
        return ShadowDecision(
            "wait",
            [f"late labels: {', '.join(short)} labelled rows of the {policy.min_labels} needed to compare"],
        )
    challenger_value = evidence.live[challenger].get(metric)
    champion_value = evidence.live[champion].get(metric)
    reasons: list[str] = []
    refused = False
    if challenger_value is None or champion_value is None:
        refused = True
        reasons.append(
            f"live {metric} could not be computed (v{challenger} {_fmt(challenger_value)}, v{champion} {_fmt(champion_value)})"
        )
    else:
        from mlops_pipeline.evaluation import no_worse_than

        ok, _ = no_worse_than(
            challenger_value,
            champion_value,
            policy.max_live_regression,
            spec.metric_higher_is_better(metric),
        )
        refused |= not ok
        reasons.append(
            f"live {metric} v{challenger} {challenger_value:.4f} vs champion v{champion} {champion_value:.4f} "
            f"on {labelled[challenger]} and {labelled[champion]} labelled rows (tolerance {policy.max_live_regression}): "
            + ("no worse" if ok else "worse")
        )
    if policy.min_agreement is not None:
        agreement = evidence.label_agreement
        ok = agreement is not None and agreement >= policy.min_agreement
        refused |= not ok
        reasons.append(
            f"labels agree with the champion's on {_fmt(agreement)} of {evidence.rows} rows "
            f"(at least {policy.min_agreement} needed)"
        )
    reasons.append(f"{len(evidence.days)} shadow days: {', '.join(evidence.days)}")
    return ShadowDecision("refuse" if refused else "promote", reasons)


def shadow_evidence(store: ObjectStore, spec: ModelSpec, challenger: str, champion: str) -> ShadowEvidence:
    """The shadow days of `challenger` beside `champion` (from the published manifests), their
    agreement, and each version's live metrics on the labels that have arrived for them."""
    from datetime import date

    import pandas as pd

    from mlops_pipeline.layout import PREDICTIONS, SHADOW
    from mlops_pipeline.monitoring import performance_by_version, read_labels
    from mlops_pipeline.predictions import published_days, read_manifest, read_partition

    days: list[str] = []
    rows, agreeing = 0, 0.0
    frames = []
    for ds in published_days(store, SHADOW, spec.name):
        shadow = read_manifest(store, SHADOW, spec.name, ds)
        primary = read_manifest(store, PREDICTIONS, spec.name, ds)
        if not shadow or not primary:
            continue
        if str(shadow.get("model_version")) != challenger or str(shadow.get("champion_version")) != champion:
            continue
        if str(primary.get("model_version")) != champion:
            continue  # the day was published again by another version since
        days.append(ds)
        summary = shadow.get("shadow_agreement") or {}
        day_rows = int(summary.get("rows") or 0)
        rows += day_rows
        if summary.get("label_agreement") is not None and day_rows:
            agreeing += float(summary["label_agreement"]) * day_rows
        for area, version in ((PREDICTIONS, champion), (SHADOW, challenger)):
            table = read_partition(store, spec.name, ds, area)
            if table is not None:
                frame = table.to_pandas()
                frame["model_version"] = frame["model_version"].astype(str)
                # The champion's own rows only: a canary's published rows are the challenger's,
                # which its shadow partition holds already (every row).
                frames.append(frame[frame["model_version"] == version])
    live: dict[str, dict[str, float]] = {}
    if frames and spec.labels is not None:
        labels = read_labels(store, spec, [date.fromisoformat(ds) for ds in days])
        if len(labels):
            live = performance_by_version(pd.concat(frames, ignore_index=True), labels, spec)
    agreement = agreeing / rows if rows and spec.is_classification else None
    return ShadowEvidence(days=days, rows=rows, label_agreement=agreement, live=live)


def outcome_of(
    started: ShadowStarted,
    champion: str,
    decision: ShadowDecision,
    evidence: ShadowEvidence,
    run: Any,
) -> ShadowOutcome:
    """The record of a concluded period (`run`: the concluding run's RunInfo)."""
    return ShadowOutcome(started, champion, decision, evidence, run.dag_run_id, run.event_time)


@dataclass(frozen=True)
class RollbackDecision:
    """Whether the monitor rolls the champion back to the one it replaced, and why."""

    action: Literal["none", "wait", "rollback"]
    champion_version: str
    to_version: str | None
    reasons: list[str]


def previous_champion(history: list[Any], champion: str) -> str | None:
    """The champion that `champion`'s latest promotion replaced (`registry.PromotionRecord`s, oldest first)."""
    for record in reversed(history):
        if record.to_version == champion:
            return record.from_version if record.action == "promote" else None
    return None


def decide_rollback(
    spec: ModelSpec, performance: dict[str, dict[str, float]], champion: str, previous: str | None
) -> RollbackDecision:
    """Roll `champion` back to `previous` when its live primary metric in the window is worse than
    `previous`'s by more than `rollout.rollback.max_live_drop` (pure; each side needs
    `rollout.rollback.min_labels` labelled rows, so two labels never decide)."""
    policy = spec.rollout.rollback
    if policy is None or previous is None:
        why = "no automatic rollback in the spec" if policy is None else f"v{champion} replaced no champion"
        return RollbackDecision("none", champion, None, [why])
    metric = spec.gates.primary_metric
    labelled = {v: int(performance.get(v, {}).get("labelled_rows", 0)) for v in (champion, previous)}
    if short := [f"v{v} has {n}" for v, n in labelled.items() if n < policy.min_labels]:
        return RollbackDecision(
            "wait",
            champion,
            None,
            [
                f"late labels in the window: {', '.join(short)} labelled rows of the {policy.min_labels} needed"
            ],
        )
    now, before = performance[champion].get(metric), performance[previous].get(metric)
    if now is None or before is None:
        return RollbackDecision(
            "wait", champion, None, [f"live {metric} could not be computed for both versions"]
        )
    drop = before - now if spec.metric_higher_is_better(metric) else now - before
    evidence = (
        f"live {metric} of champion v{champion} {now:.4f} vs v{previous} {before:.4f} before it, on "
        f"{labelled[champion]} and {labelled[previous]} labelled rows: a drop of {drop:.4f}"
    )
    if drop > policy.max_live_drop:
        return RollbackDecision(
            "rollback", champion, previous, [f"{evidence}, over the limit of {policy.max_live_drop}"]
        )
    return RollbackDecision(
        "none", champion, None, [f"{evidence}, within the limit of {policy.max_live_drop}"]
    )


def record_rollback(store: ObjectStore, model: str, decision: RollbackDecision, run_id: str) -> bool:
    """Record the automatic rollback of the decision's champion; False if one was already recorded
    (a version is rolled back automatically once)."""
    body = {**asdict(decision), "run_id": run_id}
    try:
        store.create_only(
            layout.rollout_rollback_key(model, decision.champion_version),
            json.dumps(body, indent=2, sort_keys=True).encode(),
        )
    except ObjectExistsError:
        return False
    return True
