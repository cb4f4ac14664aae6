"""Monitoring: what a window holds, how late labels join predictions, and when to retrain.

The retraining decision is a pure function of the recorded window verdicts and triggers
(:func:`decide`): retrain when drift or a performance drop was seen in `windows_needed` of the
last `windows_considered` windows, and not again within `cooldown_days` of the last trigger. A
window whose check could not run is never recorded, so it can neither count as drift nor hide it.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mlops_pipeline.evaluation import classification_metrics, compute_metrics
from mlops_pipeline.layout import trigger_key, triggers_prefix, verdict_key, verdicts_prefix
from mlops_pipeline.rules import DECODE_ERROR_COLUMN, with_row_ids
from mlops_pipeline.spec import DriftSpec, ModelSpec
from mlops_pipeline.store import ObjectExistsError, ObjectStore, glob_keys
from mlops_pipeline.targets import positive_label, proba_columns, typed_target


class MonitoringUnavailable(RuntimeError):
    """The check could not run (no current data, no reference): a failure, never a drift verdict."""


@dataclass(frozen=True)
class WindowVerdict:
    """What one monitoring window found; stored once per window end."""

    end: str
    start: str
    data_drift: bool
    prediction_drift: bool
    performance_drop: bool
    drifted_columns: list[str]
    run_id: str

    @property
    def alarming(self) -> bool:
        """Whether this window counts towards retraining."""
        return self.data_drift or self.prediction_drift or self.performance_drop


@dataclass(frozen=True)
class Decision:
    """Whether to trigger retraining now, and why (or why not)."""

    retrain: bool
    reason: str
    alarming_windows: list[str]


def window_days(end: date, days: int) -> list[date]:
    """The `days` days ending with `end`, oldest first."""
    return [end - timedelta(days=offset) for offset in range(days - 1, -1, -1)]


def record_verdict(store: ObjectStore, model: str, verdict: WindowVerdict) -> None:
    """Store the verdict of one window."""
    store.write_bytes(verdict_key(model, verdict.end), json.dumps(asdict(verdict), indent=2).encode())


def verdicts(store: ObjectStore, model: str) -> list[WindowVerdict]:
    """Every recorded window verdict, oldest window first."""
    return [
        WindowVerdict(**json.loads(store.read_bytes(key)))
        for key in store.list(verdicts_prefix(model))
        if key.endswith(".json")
    ]


def trigger_days(store: ObjectStore, model: str) -> list[str]:
    """Window ends at which retraining was triggered, oldest first."""
    return [key.rsplit("/", 1)[1].removesuffix(".json") for key in store.list(triggers_prefix(model))]


def decide(history: list[WindowVerdict], triggers: list[str], drift: DriftSpec, end: str) -> Decision:
    """Apply the N-of-M rule and the cooldown to the windows up to `end` (pure)."""
    considered = [v for v in history if v.end <= end][-drift.windows_considered :]
    alarming = [v.end for v in considered if v.alarming]
    if len(alarming) < drift.windows_needed:
        return Decision(
            False,
            f"{len(alarming)} of the last {len(considered)} windows alarming; {drift.windows_needed} needed",
            alarming,
        )
    earlier = [t for t in triggers if t <= end]
    if earlier:
        last = date.fromisoformat(earlier[-1])
        if date.fromisoformat(end) - last < timedelta(days=drift.cooldown_days) or earlier[-1] == end:
            return Decision(
                False,
                f"retraining already triggered on {last}; cooldown of {drift.cooldown_days} days",
                alarming,
            )
    latest = next(v for v in reversed(considered) if v.alarming)
    causes = [
        name
        for name, flag in (
            (f"data drift in {', '.join(latest.drifted_columns)}", latest.data_drift),
            ("prediction drift", latest.prediction_drift),
            ("performance below the floor", latest.performance_drop),
        )
        if flag
    ]
    reason = f"{len(alarming)} of the last {len(considered)} windows alarming (latest: {'; '.join(causes)})"
    return Decision(True, reason, alarming)


def record_trigger(store: ObjectStore, model: str, end: str, decision: Decision, run_id: str) -> bool:
    """Record a trigger for window `end`; False if one was already recorded (the trigger fires once)."""
    body = {"end": end, "reason": decision.reason, "windows": decision.alarming_windows, "run_id": run_id}
    try:
        store.create_only(trigger_key(model, end), json.dumps(body, indent=2).encode())
    except ObjectExistsError:
        return False
    return True


def _read_labels_file(data: bytes, spec: ModelSpec, source: str, day: date) -> pd.DataFrame:
    """One labels file (id and target columns); UnreadableSourceError when it cannot be parsed or
    lacks them. A labels file is used whole or not at all: a label is too small to half-trust."""
    from mlops_pipeline.ingest import UnreadableSourceError

    assert spec.labels is not None
    try:
        buffer = io.BytesIO(data)
        if spec.labels.format == "csv":
            frame = pd.read_csv(buffer, dtype={spec.id_column: str}, encoding="utf-8")
        else:
            frame = pd.read_parquet(buffer)
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        # pandas' EmptyDataError and ParserError are ValueErrors; a truncated Parquet file an ArrowInvalid.
        reason = f"not a readable {spec.labels.format} file: {exc}"
        raise UnreadableSourceError.of_bytes("labels", source, day.isoformat(), reason, data) from exc
    if missing := [name for name in (spec.id_column, spec.target) if name not in frame.columns]:
        reason = f"it lacks column(s) {missing}; it has {[str(c) for c in frame.columns][:10]}"
        raise UnreadableSourceError.of_bytes("labels", source, day.isoformat(), reason, data)
    return frame


def read_labels(store: ObjectStore, spec: ModelSpec, days: list[date]) -> pd.DataFrame:
    """The labels that have arrived for rows scored on `days`: id, target, ds (empty when none).

    Raises UnreadableSourceError (from ingest) for a labels file that cannot be read.
    """
    from mlops_pipeline.ingest import split_source_uri

    if spec.labels is None:
        return pd.DataFrame(columns=["id", spec.target, "ds"])
    labels_store, pattern = split_source_uri(spec.labels.uri, store)
    frames = []
    for day in days:
        for key in glob_keys(labels_store, pattern.format(ds=day.isoformat())):
            frame = _read_labels_file(labels_store.read_bytes(key), spec, labels_store.uri(key), day)
            frames.append(
                frame[[spec.id_column, spec.target]]
                .rename(columns={spec.id_column: "id"})
                .assign(ds=day.isoformat())
            )
    if not frames:
        return pd.DataFrame(columns=["id", spec.target, "ds"])
    return pd.concat(frames, ignore_index=True)


def performance_by_version(
    predictions: pd.DataFrame, labels: pd.DataFrame, spec: ModelSpec
) -> dict[str, dict[str, float]]:
    """The spec's metrics per model version, on the predictions whose labels have arrived."""
    joined = predictions.merge(labels[["id", spec.target]], on="id", how="inner")
    result: dict[str, dict[str, float]] = {}
    for version, rows in joined.groupby(joined["model_version"].astype(str)):
        if spec.is_classification:
            # One probability column per class, in the model's class order (the output schema's).
            columns = [c for c in rows.columns if c.startswith("proba_")]
            classes = _classes_of(rows, columns, spec)
            positive = positive_label(spec, classes) if len(classes) == 2 else None
            y_true = typed_target(rows[spec.target], spec).to_numpy()
            metrics = classification_metrics(
                y_true, rows["prediction"].to_numpy(), rows[columns].to_numpy(), classes, positive
            )
        else:
            y_true = rows[spec.target].astype(float).to_numpy()
            metrics = compute_metrics(spec.task, y_true, rows["prediction"].to_numpy(), None)
        result[str(version)] = {**metrics, "labelled_rows": float(len(rows))}
    return result


def _classes_of(rows: pd.DataFrame, columns: list[str], spec: ModelSpec) -> list[Any]:
    """The class labels of the probability columns: the spec's classes whose column names these
    are, else the labels the column names spell (`proba_0`, `proba_1`)."""
    if spec.target_classes:
        ordered = sorted(spec.target_classes, key=lambda label: (str(type(label)), label))
        by_name = dict(zip(proba_columns(ordered), ordered, strict=True))
        if all(column in by_name for column in columns):
            return [by_name[column] for column in columns]
    labels = [column.removeprefix("proba_") for column in columns]
    return [int(label) for label in labels] if all(label.isdigit() for label in labels) else labels


def below_floors(performance: dict[str, dict[str, float]], spec: ModelSpec) -> list[str]:
    """Metric floors of the spec's gates that a version's live performance fell below."""
    drops = []
    for version, metrics in performance.items():
        for metric, floor in spec.gates.floors.items():
            value = metrics.get(metric)
            if value is None:
                continue
            worse = value < floor if spec.metric_higher_is_better(metric) else value > floor
            if worse:
                drops.append(f"v{version} {metric}={value:.3f} (floor {floor})")
    return drops


@dataclass(frozen=True)
class WindowCheck:
    """What one monitoring window compares: the published predictions and the inputs they were
    scored from, against the champion's training snapshot (rows scoring would have quarantined left out)."""

    days: list[date]
    days_used: list[str]
    days_missing: list[str]
    scored: pd.DataFrame  # the published predictions of the used days (with `ds`)
    current: pd.DataFrame  # their input rows as model features
    reference: pd.DataFrame  # the champion's training rows as model features
    champion: Any  # the champion's ModelVersion
    pipeline: Any  # the champion's fitted pipeline


def check_window(spec: ModelSpec, store: ObjectStore, client: Any, end: date, window: int) -> WindowCheck:
    """Gather the `window` days ending `end`; MonitoringUnavailable when there is nothing to compare."""
    from mlops_pipeline.rules import check_rows
    from mlops_pipeline.training import features_frame

    days = window_days(end, window)
    scored, current_raw, used, missing = _current_window(spec, store, days)
    champion, reference_raw, pipeline = _reference(spec, store, client)
    # Compare like with like: rows that scoring would have quarantined are not in the current data.
    reference_raw = reference_raw[~check_rows(reference_raw, spec).quarantine]
    return WindowCheck(
        days=days,
        days_used=used,
        days_missing=missing,
        scored=scored,
        current=features_frame(current_raw, spec),
        reference=features_frame(reference_raw, spec),
        champion=champion,
        pipeline=pipeline,
    )


def prediction_frames(
    spec: ModelSpec, pipeline: Any, reference: pd.DataFrame, scored: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """What prediction drift compares: the champion's outputs on its own training rows, and the
    published outputs (reference, current, and each column's kind for the drift check).

    Classification: the predicted label (categorical), and the positive class's probability
    (binary) or every class's probability (multiclass), matched by the model's class order, never
    by sorting column names. Regression: the predicted value.
    """
    if not spec.is_classification:
        return (
            pd.DataFrame({"prediction": np.asarray(pipeline.predict(reference), dtype="float64")}),
            pd.DataFrame({"prediction": scored["prediction"].astype("float64").to_numpy()}),
            {"prediction": "num"},
        )
    classes = list(pipeline.classes_)
    probabilities = np.asarray(pipeline.predict_proba(reference), dtype="float64")
    names = proba_columns(classes)
    if len(classes) == 2:
        position = classes.index(positive_label(spec, classes))
        picked = {"proba_positive": (position, names[position])}
    else:
        picked = {name: (position, name) for position, name in enumerate(names)}
    reference_out = pd.DataFrame(
        {
            "prediction": pd.Series(np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)]).astype(
                str
            ),
            **{out: probabilities[:, position] for out, (position, _) in picked.items()},
        }
    )
    current_out = pd.DataFrame(
        {
            "prediction": scored["prediction"].astype(str).to_numpy(),
            **{out: scored[column].astype("float64").to_numpy() for out, (_, column) in picked.items()},
        }
    )
    return reference_out, current_out, {"prediction": "cat", **{out: "num" for out in picked}}


def _read_frame(store: ObjectStore, key: str, fmt: str) -> Any:
    """A published day's input file as scoring read it (CSV as text, its undecodable lines marked)."""
    from mlops_pipeline.ingest import SourceParseError, read_text_table, text_frame

    try:
        data = store.read_bytes(key)
    except FileNotFoundError as exc:
        raise MonitoringUnavailable(
            f"the input {store.uri(key)} that a published partition was scored from is gone; this is not drift"
        ) from exc
    if fmt == "parquet":
        return pd.read_parquet(io.BytesIO(data))
    try:
        frame = text_frame(read_text_table(data, fmt, store.uri(key)))
    except SourceParseError as exc:  # it was scored, so it was readable then: it changed since
        raise MonitoringUnavailable(
            f"the input {store.uri(key)} that a published partition was scored from cannot be read now ({exc})"
        ) from exc
    if DECODE_ERROR_COLUMN in frame.columns:  # never scored as they are: left out, like quarantined rows
        frame = frame[frame[DECODE_ERROR_COLUMN].isna()].drop(columns=DECODE_ERROR_COLUMN)
    return frame


def _current_window(
    spec: ModelSpec, store: ObjectStore, days: list[date]
) -> tuple[Any, Any, list[str], list[str]]:
    """Published predictions of the window and the inputs they were scored from (manifests only)."""
    from mlops_pipeline.ingest import split_source_uri
    from mlops_pipeline.layout import PREDICTIONS
    from mlops_pipeline.predictions import read_manifest, read_partition

    assert spec.scoring is not None
    input_store, _ = split_source_uri(spec.scoring.input.uri, store)
    predictions, inputs, used, missing = [], [], [], []
    for day in days:
        ds = day.isoformat()
        manifest = read_manifest(store, PREDICTIONS, spec.name, ds)
        table = read_partition(store, spec.name, ds) if manifest else None
        if manifest is None or table is None:
            missing.append(ds)
            continue
        predictions.append(table.to_pandas().assign(ds=ds))
        for entry in manifest["files"]:
            inputs.append(_read_frame(input_store, entry["input_key"], spec.scoring.input.format))
        used.append(ds)
    if not used:
        raise MonitoringUnavailable(
            f"cannot check {spec.name} for {days[0]}..{days[-1]}: no published predictions in the window "
            "(score those days first); this is not drift"
        )
    scored = pd.concat(predictions, ignore_index=True)
    features = pd.concat(inputs, ignore_index=True)
    # Quarantined rows were never scored: compare exactly the rows that were.
    features = with_row_ids(features, spec)
    features = features[features[spec.id_column].astype(str).isin(set(scored["id"]))]
    return scored, features, used, missing


def _reference(spec: ModelSpec, store: ObjectStore, client: Any) -> tuple[Any, Any, Any]:
    """The champion's version, its training snapshot (found through its lineage tags), and its pipeline."""
    from mlops_pipeline import registry
    from mlops_pipeline.ingest import (
        SnapshotIntegrityError,
        read_snapshot_key,
        snapshot_key_of_uri,
        text_frame,
    )

    champion = registry.alias_version(client, spec.name, registry.CHAMPION)
    if champion is None:
        raise MonitoringUnavailable(
            f"cannot check {spec.name}: it has no champion, so there is no reference; this is not drift"
        )
    data_uri, data_sha256 = champion.tags.get("data_uri"), champion.tags.get("data_sha256")
    prefix = store.root_uri.rstrip("/") + "/"
    if not data_uri or not data_sha256 or not data_uri.startswith(prefix):
        raise MonitoringUnavailable(
            f"cannot check {spec.name}: champion v{champion.version} has no training snapshot in {store.root_uri} "
            f"(tags data_uri={data_uri!r}, data_sha256={data_sha256!r}); this is not drift"
        )
    key = snapshot_key_of_uri(store, data_uri)
    assert key is not None  # checked above: the URI lies inside the store
    try:
        reference = text_frame(read_snapshot_key(store, key, data_sha256))
    except FileNotFoundError as exc:
        raise MonitoringUnavailable(
            f"cannot check {spec.name}: the reference snapshot {data_uri} of champion v{champion.version} is "
            "missing from the store (deleted or moved?); restore it from a backup or train and promote a new "
            "champion. This is not drift"
        ) from exc
    except SnapshotIntegrityError as exc:
        raise MonitoringUnavailable(
            f"cannot check {spec.name}: the reference snapshot {data_uri} of champion v{champion.version} was "
            f"changed: it does not match its sha256 {data_sha256} ({exc}); restore the original or train and "
            "promote a new champion. This is not drift"
        ) from exc
    return champion, reference, registry.load_version(client, champion)


def summary(verdict: WindowVerdict, decision: Decision, extra: dict[str, Any]) -> dict[str, Any]:
    """The monitoring task's JSON result."""
    return {**asdict(verdict), "alarming": verdict.alarming, "decision": asdict(decision), **extra}
