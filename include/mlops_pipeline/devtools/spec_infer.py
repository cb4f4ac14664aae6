"""A first model spec inferred from a sample table (`mlops spec infer DATA --target COL`).

Everything here is pure: a frame in, an :class:`InferredSpec` out (the spec as a dict and as a
validated :class:`~mlops_pipeline.spec.ModelSpec`, the cross-validated baseline of its own pipeline
and the commented YAML text). Reading the file and printing are the CLI's.

What is inferred, and why:

* feature types from the values as the pipeline reads them (text): true/false words are
  ``boolean``, integers ``integer``, other numbers ``number``, text with at most
  :data:`MAX_CATEGORY_VALUES` distinct values ``category`` (its values become ``allowed``). Text with
  more distinct values is left out with a comment: the spec has only typed features. The type tests
  are the ones validation's `type:` rules apply, so the sample passes its own spec;
* ranges: the observed range widened by :data:`RANGE_MARGIN` of its span on each side, and never
  below 0 when the sample holds no negative value;
* the id: ``--id``, else a unique column named ``id`` or ``*_id``, else none: the spec then leaves
  ``id_column`` out and each row's id is a hash of its feature values (a comment says what that means);
* the task from the target: text, booleans or at most :data:`MAX_INTEGER_CLASSES` distinct integers
  are classification (``binary`` for two classes, ``multiclass`` for more), anything else regression;
* the gate's floor from a 3-fold cross-validated baseline of the spec's own pipeline, set below it
  by a margin that grows with the metric's noise on a holdout of the spec's size
  (:func:`floor_below`), so that a spec inferred from a table trains and passes its gates as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from mlops_pipeline.devtools.spec_profile import (
    BASELINE_FOLDS,
    FLOOR_MARGIN,
    MIN_ROWS_FRACTION,
    Baseline,
    IdChoice,
    InferredFeature,
    InferredTarget,
    SampleFormat,
    SkippedColumn,
    SpecInferenceError,
    count_duplicate_ids,
    find_id_column,
    infer_feature,
    infer_target,
)
from mlops_pipeline.devtools.spec_yaml import render_yaml
from mlops_pipeline.spec import (
    ROW_ID,
    DriftSpec,
    GateSpec,
    Label,
    ModelSpec,
    SplitSpec,
    ValidationSpec,
)

WINDOW_DAYS = 28

# The baseline fits on at most this many rows (a random sample with the spec's split seed).
BASELINE_MAX_ROWS = 20_000

# Fewer labelled rows than this give a baseline too noisy to set a floor from.
MIN_BASELINE_ROWS = 30

R2_FLOOR_SHARE = 0.9

# ... or lower: this many standard deviations of the metric on the training run's holdout (estimated
# from the folds), so that on a small table a model as good as the baseline still passes (one run
# in ~40 fails by chance alone). A 76-row holdout of the diabetes data moves r2 by about ±0.15.
FLOOR_SPREADS = 2.0

# Modest: fits a few thousand rows in under a second, and regularised enough for a small table.
ESTIMATOR_PARAMS: dict[str, Any] = {
    "max_iter": 100,
    "learning_rate": 0.1,
    "max_leaf_nodes": 31,
    "l2_regularization": 1.0,
}

PRIMARY_METRIC: dict[str, str] = {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "r2"}


@dataclass(frozen=True)
class InferredSpec:
    """The result of :func:`infer_spec`: the spec (dict and model), its baseline and its YAML text.

    Without an id column (:attr:`IdChoice.derived`), `duplicate_rows` counts the sample rows whose
    derived id another row shares (the `unique:` rule sets each of them aside).
    """

    data: dict[str, Any]
    spec: ModelSpec
    baseline: Baseline
    features: tuple[InferredFeature, ...]
    skipped: tuple[SkippedColumn, ...]
    target: InferredTarget
    yaml_text: str
    id_choice: IdChoice = field(default_factory=lambda: IdChoice(None))
    duplicate_rows: int = 0


# ---------------------------------------------------------------------------------------- baseline


def chance_level(metric: str, labels: pd.Series | None = None) -> tuple[float, str]:
    """The value of `metric` a model reaches without learning anything, and how it is reached."""
    if metric in ("roc_auc", "roc_auc_ovr"):
        return 0.5, "chance"
    if metric == "f1_macro" and labels is not None:
        # Always predicting the majority class: F1 2p/(1+p) on that class, 0 on every other.
        shares = labels.value_counts(normalize=True)
        top = float(shares.iloc[0])
        return 2 * top / (1 + top) / len(shares), "always predicting the majority class"
    return 0.0, "predicting the mean"


def holdout_spread(folds: Sequence[float], fold_rows: float, holdout_rows: float) -> float:
    """The metric's standard deviation on a holdout of `holdout_rows`, from the spread of the fold
    scores (each on `fold_rows` rows): a metric's deviation shrinks as one over the root of the rows."""
    if len(folds) < 2 or holdout_rows <= 0:
        return 0.0
    return float(np.std(folds, ddof=1)) * math.sqrt(fold_rows / holdout_rows)


def floor_below(metric: str, baseline: float, chance: float, spread: float = 0.0) -> tuple[float, str]:
    """A floor under `baseline`: baseline - 0.05 (0.9 * baseline for r2), or baseline - 2 * `spread`
    (the metric's standard deviation on the holdout) when that is lower, rounded down to two
    decimals, never below the chance level rounded up. Also the rule, in words, for the YAML comment.

    The floor is below the baseline unless the baseline itself is at chance (see :attr:`Baseline.beats_chance`).
    """
    if metric == "r2":
        raw, rule = R2_FLOOR_SHARE * baseline, f"{R2_FLOOR_SHARE:g} * baseline"
    else:
        raw, rule = baseline - FLOOR_MARGIN, f"baseline - {FLOOR_MARGIN:g}"
    if baseline - FLOOR_SPREADS * spread < raw:
        raw = baseline - FLOOR_SPREADS * spread
        rule = (
            f"baseline - {FLOOR_SPREADS:g} * {spread:.3f} (the metric's standard deviation on the holdout;"
            f" lower than {rule})"
        )
    floor = max(math.floor(raw * 100) / 100, math.ceil(chance * 100) / 100)
    return round(floor, 2), rule


def compute_baseline(frame: pd.DataFrame, spec: ModelSpec) -> Baseline:
    """The primary metric of `build_pipeline(spec)` under 3-fold cross-validation on the sample.

    Rows without a target are dropped; at most :data:`BASELINE_MAX_ROWS` rows are used (a random
    sample with the split seed). Classification labels are encoded with LabelEncoder here only, so
    that sklearn's scorers (roc_auc, f1_macro) see 0..k-1.
    """
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
    from sklearn.preprocessing import LabelEncoder
    from threadpoolctl import threadpool_limits

    from mlops_pipeline.training import build_pipeline, features_frame, target_series

    metric = spec.gates.primary_metric
    seed = spec.split.seed
    rows = frame[frame[spec.target].notna()]
    if len(rows) > BASELINE_MAX_ROWS:
        rows = rows.sample(n=BASELINE_MAX_ROWS, random_state=seed)
    if len(rows) < MIN_BASELINE_ROWS:
        raise SpecInferenceError(
            f"only {len(rows)} rows with a target; a baseline needs at least {MIN_BASELINE_ROWS}"
        )
    features = features_frame(rows, spec)
    target = target_series(rows, spec)
    labels: pd.Series | None = None
    if spec.is_classification:
        labels = target
        smallest = target.value_counts()
        if int(smallest.min()) < BASELINE_FOLDS:
            raise SpecInferenceError(
                f"class {smallest.idxmin()!r} of {spec.target!r} has {int(smallest.min())} rows in the sample;"
                f" a {BASELINE_FOLDS}-fold baseline needs at least {BASELINE_FOLDS} of each class"
            )
        y = LabelEncoder().fit_transform(target.to_numpy())
        cv: Any = StratifiedKFold(n_splits=BASELINE_FOLDS, shuffle=True, random_state=seed)
    else:
        y = target.to_numpy()
        cv = KFold(n_splits=BASELINE_FOLDS, shuffle=True, random_state=seed)
    # One thread: OpenMP threads competing with other processes on a busy machine spin-wait, turning
    # a one-second fit into a minute (as in evaluation.latency_p95_ms_per_1k).
    with threadpool_limits(limits=1):
        scores = cross_val_score(
            build_pipeline(spec), features, y, cv=cv, scoring=metric, error_score="raise"
        )
    mean = float(np.mean(scores))
    chance, how = chance_level(metric, labels)
    # The holdout a training run on the whole sample would score on (every labelled row, not the
    # subsample), against the test folds the scores above were measured on.
    holdout_rows = round(int(frame[spec.target].notna().sum()) * spec.split.holdout_fraction)
    spread = holdout_spread(scores, len(rows) / BASELINE_FOLDS, holdout_rows)
    floor, rule = floor_below(metric, mean, chance, spread)
    return Baseline(
        metric=metric,
        mean=mean,
        folds=tuple(float(s) for s in scores),
        rows=len(rows),
        chance=chance,
        floor=floor,
        rule=f"{rule}, rounded down to 2 decimals, never below {math.ceil(chance * 100) / 100:g} ({how})",
        holdout_rows=holdout_rows,
        spread=spread,
    )


# --------------------------------------------------------------------------------------------- spec


def primary_metric(task: str, classes: Sequence[Label] | None) -> str:
    """roc_auc for two classes, f1_macro for more, r2 for regression."""
    if task == "regression":
        return PRIMARY_METRIC["regression"]
    if task == "classification":
        return PRIMARY_METRIC["binary" if classes is not None and len(classes) == 2 else "multiclass"]
    return PRIMARY_METRIC[task]


def _validated(data: Mapping[str, Any]) -> ModelSpec:
    try:
        return ModelSpec.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or '(top level)'}: {item['msg'].removeprefix('Value error, ')}"
            for item in exc.errors()
        )
        raise SpecInferenceError(f"the inferred spec is not valid: {problems}") from exc


def infer_spec(
    frame: pd.DataFrame,
    target: str,
    *,
    name: str,
    id_column: str | None = None,
    task: str | None = None,
    source_uri: str | None = None,
    source_format: SampleFormat = "csv",
    sample_label: str = "a sample",
) -> InferredSpec:
    """Infer a valid spec from a sample `frame` (read as text, or typed from Parquet).

    `task` overrides the inferred task (checked against the target); `source_uri` defaults to
    `landing/<name>/ds={ds}/*.<format>`. The spec is validated, its pipeline cross-validated for the
    baseline, and the YAML text checked to load back into the very same spec.
    Raises :class:`SpecInferenceError` with what to pass or fix.
    """
    frame = frame.rename(columns=str)
    if target not in frame.columns:
        raise SpecInferenceError(f"--target {target!r} is not a column of the sample: {list(frame.columns)}")
    if frame.empty:
        raise SpecInferenceError("the sample has no rows")
    id_choice = find_id_column(frame, target, id_column)
    inferred_target = infer_target(frame[target], task, target)
    features: list[InferredFeature] = []
    skipped: list[SkippedColumn] = []
    for column in frame.columns:
        if column in (id_choice.column, target):
            continue
        if column == ROW_ID:
            skipped.append(SkippedColumn(column, "the pipeline's own row id (a hash of the features)"))
            continue
        result = infer_feature(frame[column], column)
        if isinstance(result, InferredFeature):
            features.append(result)
        else:
            skipped.append(result)
    if not features:
        raise SpecInferenceError(
            "no usable feature: " + "; ".join(f"{s.name}: {s.reason}" for s in skipped)
            if skipped
            else "the sample has no column besides the id and the target"
        )

    target_field: Any = target
    if inferred_target.classes is not None:
        target_field = {"column": target, "classes": list(inferred_target.classes)}
        if inferred_target.positive is not None:
            target_field["positive"] = inferred_target.positive
    metric = primary_metric(inferred_target.task, inferred_target.classes)
    validation = ValidationSpec(min_rows=max(1, int(len(frame) * MIN_ROWS_FRACTION)))
    gates = GateSpec(primary_metric=metric, max_regression=0.01)
    data: dict[str, Any] = {
        "name": name,
        "description": f"Inferred from {PurePath(sample_label).name}: say what the model predicts, for whom.",
        "owner": "mlops",
        "task": inferred_target.task,
        "tags": ["inferred"],
        "source": {
            "uri": source_uri or f"landing/{name}/ds={{ds}}/*.{source_format}",
            "format": source_format,
            "window_days": WINDOW_DAYS,
        },
        # No id column: left out, so the row id is the pipeline's hash of the feature values.
        **({} if id_choice.column is None else {"id_column": id_choice.column}),
        "target": target_field,
        "features": {f.name: f.fields for f in features},
        "estimator": {"kind": "hist_gradient_boosting", "params": dict(ESTIMATOR_PARAMS)},
        "split": SplitSpec().model_dump(),
        "validation": validation.model_dump(exclude={"extra_expectations"}),
        "gates": gates.model_dump(exclude={"floors", "slices"}),
        "drift": DriftSpec().model_dump(
            include={
                "threshold",
                "drift_share",
                "window_days",
                "windows_needed",
                "windows_considered",
                "cooldown_days",
            }
        ),
        "schedules": {"train": None, "score": None, "monitor": None},
        "approval_required": False,
    }
    baseline = compute_baseline(frame, _validated(data))
    data["gates"] = {**data["gates"], "floors": {metric: baseline.floor}}
    spec = _validated(data)
    duplicate_rows = count_duplicate_ids(frame, spec) if spec.derived_row_id else 0
    text = render_yaml(
        data,
        features=features,
        skipped=skipped,
        target=inferred_target,
        baseline=baseline,
        id_choice=id_choice,
        duplicate_rows=duplicate_rows,
        sample_label=sample_label,
        sample_rows=len(frame),
        sample_columns=len(frame.columns),
    )
    if _validated(yaml.safe_load(text)) != spec:
        raise AssertionError("the YAML text does not load back into the inferred spec (a bug of spec_infer)")
    return InferredSpec(
        data,
        spec,
        baseline,
        tuple(features),
        tuple(skipped),
        inferred_target,
        text,
        id_choice,
        duplicate_rows,
    )
