"""What `mlops spec infer` reads off a sample table: each column's kind and range, the target's
labels and task, and the id (see :mod:`mlops_pipeline.devtools.spec_infer` for the rules)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from mlops_pipeline.spec import (
    CLASSIFICATION_TASKS,
    ROW_ID,
    Label,
    ModelSpec,
    TaskKind,
)

# A text column with more distinct values than this is free text, not a category.
MAX_CATEGORY_VALUES = 50

# An integer target with at most this many distinct values is a set of class labels.
MAX_INTEGER_CLASSES = 20

# Share of the observed span added below the minimum and above the maximum.
RANGE_MARGIN = 0.10

# The text validation's `type:` rules accept (mlops_pipeline.suite): an integer column's values
# may carry a ".0" ("3.0"), a number's an exponent; surrounding spaces are allowed.
_INTEGER_TEXT = re.compile(r"^\s*[-+]?\d+(?:\.0*)?\s*$")

_NUMBER_TEXT = re.compile(r"^\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*$")

# The true/false words validation accepts for a boolean feature, exactly as written (0/1 is an integer).
_BOOLEAN_WORDS = {"true", "false", "True", "False", "TRUE", "FALSE"}

ColumnKind = Literal["empty", "boolean", "integer", "number", "text"]

SampleFormat = Literal["csv", "parquet"]

# validation.min_rows: this share of the sample's rows (a batch much smaller than the sample is suspect).
MIN_ROWS_FRACTION = 0.25
BASELINE_FOLDS = 3
# Floor = baseline - this (classification metrics), or this share of the baseline (r2).
FLOOR_MARGIN = 0.05


class SpecInferenceError(ValueError):
    """The sample cannot give a spec as asked; the message says what to pass or to fix."""


@dataclass(frozen=True)
class ColumnProfile:
    """What one column of the sample holds, seen as the pipeline reads it."""

    name: str
    kind: ColumnKind
    rows: int
    missing: int
    distinct: int
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class InferredFeature:
    """A feature of the spec: its `features.<name>` fields and a note on what the sample showed."""

    name: str
    fields: dict[str, Any]
    note: str


@dataclass(frozen=True)
class SkippedColumn:
    """A column of the sample that is not a feature, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class InferredTarget:
    """The target column, the task it makes and, for classification, its labels."""

    column: str
    task: TaskKind
    classes: list[Label] | None
    positive: Label | None
    note: str
    positive_note: str = ""
    unlabelled_rows: int = 0


@dataclass(frozen=True)
class Baseline:
    """The cross-validated primary metric of the spec's pipeline on the sample, and the floor set below it.

    `spread` is the metric's standard deviation on a holdout of `holdout_rows` (the holdout a
    training run on the sample would have), estimated from the folds (:func:`holdout_spread`).
    """

    metric: str
    mean: float
    folds: tuple[float, ...]
    rows: int
    chance: float
    floor: float
    rule: str
    holdout_rows: int = 0
    spread: float = 0.0

    @property
    def beats_chance(self) -> bool:
        """Whether the floor is below the baseline (false: the features did not beat chance)."""
        return self.floor < self.mean


@dataclass(frozen=True)
class IdChoice:
    """The id column the spec names, or None (each row's id is then a hash of its features), and why."""

    column: str | None
    rejected: tuple[str, ...] = ()

    @property
    def derived(self) -> bool:
        """Whether the table has no id column of its own (the spec leaves `id_column` out)."""
        return self.column is None


# --------------------------------------------------------------------------------------------- names


def safe_name(text: str) -> str:
    """`text` as a spec name: lowercase, [a-z0-9_], a letter first, at most 63 characters."""
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    if not name:
        return "model"
    if not name[0].isalpha():
        name = f"model_{name}"
    return name[:63].rstrip("_")


def default_name(path: str | PurePath) -> str:
    """The spec name of a sample file: its name without suffixes (`Churn-2026.csv.gz` → `churn_2026`)."""
    return safe_name(PurePath(path).name.split(".")[0])


def sample_format(path: str | PurePath) -> SampleFormat:
    """`parquet` for a .parquet/.pq file, `csv` for .csv (compressed too); anything else is an error."""
    name = PurePath(path).name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if re.search(r"\.csv(\.(gz|bz2|zip|xz|zst))?$", name):
        return "csv"
    raise SpecInferenceError(f"{path}: cannot tell the format; expected a .csv or .parquet file")


# ------------------------------------------------------------------------------------------ columns


def _text(values: pd.Series) -> pd.Series:
    """The present values as the pipeline's snapshots hold them: text (a Parquet sample is typed)."""
    present = values.dropna()
    return present if present.map(type).eq(str).all() else present.astype(str)


def profile_column(values: pd.Series, name: str | None = None) -> ColumnProfile:
    """The kind of one column (empty, boolean, integer, number, text), its missing values and range."""
    label = str(values.name if name is None else name)
    rows, missing = len(values), int(values.isna().sum())
    present = values.dropna()
    if present.empty:
        return ColumnProfile(label, "empty", rows, missing, 0)
    if pd.api.types.is_bool_dtype(present):
        return ColumnProfile(label, "boolean", rows, missing, int(present.nunique()))
    if pd.api.types.is_numeric_dtype(present):
        numbers = present.astype("float64")
        integral = bool((numbers[np.isfinite(numbers)] % 1 == 0).all())
    else:
        text = _text(present)
        if text.isin(_BOOLEAN_WORDS).all():
            return ColumnProfile(label, "boolean", rows, missing, int(text.str.lower().nunique()))
        if not text.str.match(_NUMBER_TEXT).all():
            return ColumnProfile(label, "text", rows, missing, int(text.nunique()))
        numbers = pd.to_numeric(text).astype("float64")
        integral = bool(text.str.match(_INTEGER_TEXT).all())
    # An infinity (typed Parquet only: the text patterns refuse "inf") is no value a model can use;
    # the pipeline reads it as missing, so it counts as missing and stays out of the range.
    finite = numbers[np.isfinite(numbers)]
    missing += len(numbers) - len(finite)
    if finite.empty:
        return ColumnProfile(label, "empty", rows, missing, 0)
    return ColumnProfile(
        label,
        "integer" if integral else "number",
        rows,
        missing,
        int(finite.nunique()),
        float(finite.min()),
        float(finite.max()),
    )


def widened_range(minimum: float, maximum: float, *, integer: bool) -> tuple[float, float]:
    """The observed range widened by :data:`RANGE_MARGIN` of its span on each side, rounded outwards.

    A constant column is widened by 10% of its value (at least 1). The low end is never below 0 when
    the observed minimum is not negative: such a column is usually a count or an amount, and a
    negative value in it is a defect validation should catch, not a value to allow.
    """
    span = maximum - minimum
    pad = RANGE_MARGIN * span if span > 0 else max(abs(maximum) * RANGE_MARGIN, 1.0)
    low, high = minimum - pad, maximum + pad
    if minimum >= 0:
        low = max(low, 0.0)
    if integer:
        return float(math.floor(low)), float(math.ceil(high))
    # Round to the pad's order of magnitude: readable bounds that still hold every observed value.
    step = 10.0 ** math.floor(math.log10(pad))
    decimals = max(0, -math.floor(math.log10(step)))
    return round(math.floor(low / step) * step, decimals), round(math.ceil(high / step) * step, decimals)


def _whole(value: float) -> float | int:
    return int(value) if value.is_integer() else value


def _compact(value: float) -> str:
    return f"{value:.6g}"


def infer_feature(values: pd.Series, name: str | None = None) -> InferredFeature | SkippedColumn:
    """The spec entry of one feature column, or the reason it is left out."""
    profile = profile_column(values, name)
    missing = f", {profile.missing} of {profile.rows} missing" if profile.missing else ""
    fields: dict[str, Any] = {}
    if profile.kind == "empty":
        return SkippedColumn(profile.name, "no value in the sample, so no type to infer")
    if profile.kind == "text" and profile.distinct > MAX_CATEGORY_VALUES:
        return SkippedColumn(
            profile.name,
            f"text with {profile.distinct} distinct values (more than {MAX_CATEGORY_VALUES}); the spec has"
            " only typed features (number, integer, category, boolean), so free text cannot be one",
        )
    if profile.kind == "text":
        # Exactly as written (no stripping): the `allowed:` rule compares the raw text.
        allowed = sorted(set(_text(values)))
        fields = {"type": "category", "allowed": allowed}
        note = f"{profile.distinct} values{missing}"
    elif profile.kind == "boolean":
        fields = {"type": "boolean"}
        note = f"true/false words{missing}"
    else:
        assert profile.minimum is not None and profile.maximum is not None
        low, high = widened_range(profile.minimum, profile.maximum, integer=profile.kind == "integer")
        # Whole bounds written as integers (`min: 0`, not `min: 0.0`), as the shipped specs do.
        fields = {"type": profile.kind, "min": _whole(low), "max": _whole(high)}
        note = f"seen {_compact(profile.minimum)}..{_compact(profile.maximum)}{missing}"
    if profile.missing:
        fields["nullable"] = True
    return InferredFeature(profile.name, fields, note)


# ------------------------------------------------------------------------------------------- target


def _labels(values: pd.Series, kind: ColumnKind) -> pd.Series:
    """Each present value as the label the pipeline makes of it (mlops_pipeline.targets)."""
    present = values.dropna()
    if kind == "boolean":
        if pd.api.types.is_bool_dtype(present):
            return present.astype(bool).astype(object)
        return _text(present).str.strip().str.lower().eq("true").astype(object)
    if kind == "integer":
        return pd.to_numeric(_text(present)).astype("int64").map(int).astype(object)
    return _text(present).str.strip().astype(object)


def infer_target(values: pd.Series, task: str | None = None, name: str | None = None) -> InferredTarget:
    """The task the target makes (`task` if given, checked against the values) and its labels.

    Text, booleans or at most :data:`MAX_INTEGER_CLASSES` distinct integers are classification:
    ``binary`` for two classes, ``multiclass`` for more; anything else is regression. The positive
    class of a binary target is the minority class (ties: the larger label, the spec's default).
    """
    profile = profile_column(values, name)
    column = profile.name
    unlabelled = profile.missing
    if profile.kind == "empty":
        raise SpecInferenceError(f"target {column!r} has no value in the sample")
    if task is not None and task not in (*CLASSIFICATION_TASKS, "regression"):
        raise SpecInferenceError(
            f"unknown task {task!r}; choose binary, multiclass, classification or regression"
        )
    labelled = profile.kind in ("boolean", "text") or (
        profile.kind == "integer" and profile.distinct <= MAX_INTEGER_CLASSES
    )
    kinds = {"boolean": "true/false", "text": "text", "integer": "integer", "number": "numeric"}
    if task == "regression" or (task is None and not labelled):
        if profile.kind not in ("integer", "number"):
            raise SpecInferenceError(
                f"target {column!r} holds {kinds[profile.kind]} values; a regression target must be numeric"
            )
        why = "given by --task" if task else f"{profile.distinct} distinct {kinds[profile.kind]} values"
        return InferredTarget(column, "regression", None, None, why, unlabelled_rows=unlabelled)
    if profile.kind == "number":
        raise SpecInferenceError(
            f"target {column!r} holds numbers that are not integers; a classification target needs labels"
            " (text, integers or true/false)"
        )
    labels = _labels(values, profile.kind)
    counts = labels.value_counts()
    classes = cast("list[Label]", sorted(counts.index.tolist()))
    if len(classes) < 2:
        raise SpecInferenceError(f"target {column!r} holds a single value ({classes[0]!r}); nothing to learn")
    found: TaskKind = "binary" if len(classes) == 2 else "multiclass"
    if task in ("binary", "multiclass") and task != found:
        raise SpecInferenceError(
            f"--task {task}, but target {column!r} holds {len(classes)} classes in the sample"
            f" ({classes[:10]}); use --task {found} or classification"
        )
    chosen = cast("TaskKind", task or found)
    why = (
        "given by --task"
        if task
        else f"{len(classes)} {kinds[profile.kind]} labels"
        + (
            f" (at most {MAX_INTEGER_CLASSES} distinct integers are classes)"
            if profile.kind == "integer"
            else ""
        )
    )
    positive: Label | None = None
    positive_note = ""
    if len(classes) == 2:
        # Fewest rows first; on a tie the larger label, as the pipeline picks when none is given.
        positive = min(reversed(classes), key=lambda label: int(counts[label]))
        positive_note = (
            f"a tie ({int(counts[positive])} rows each): the larger label, the pipeline's default"
            if counts.nunique() == 1
            else f"the minority class ({int(counts[positive])} of {int(counts.sum())} labelled rows)"
        ) + "; the binary metrics read its probability"
    return InferredTarget(column, chosen, classes, positive, why, positive_note, unlabelled)


# ---------------------------------------------------------------------------------------------- id


def _unique_problem(values: pd.Series) -> str | None:
    missing = int(values.isna().sum())
    if missing:
        return f"{missing} missing values"
    duplicates = int(values.astype(str).duplicated().sum())
    return f"{duplicates} duplicate values" if duplicates else None


def find_id_column(frame: pd.DataFrame, target: str, id_column: str | None = None) -> IdChoice:
    """`id_column` (checked: a column other than the target, unique, never missing, else an error),
    else the first column named `id` or `*_id` whose values are unique, else none: the spec then has
    no `id_column` and each row's id is a hash of its feature values (`rules.row_ids`).

    Id-like columns that are not unique are kept in :attr:`IdChoice.rejected` with the reason, for
    the YAML comment; they stay candidate features.
    """
    if id_column is not None:
        if id_column not in frame.columns:
            raise SpecInferenceError(
                f"--id {id_column!r} is not a column of the sample: {list(frame.columns)}"
            )
        if id_column == target:
            raise SpecInferenceError("the id column and the target must be different columns")
        if id_column == ROW_ID:
            raise SpecInferenceError(
                f"--id {ROW_ID!r} is the pipeline's own row id (a hash of the features); leave --id out for it"
            )
        if problem := _unique_problem(frame[id_column]):
            raise SpecInferenceError(
                f"id column {id_column!r} has {problem} in the sample; the pipeline needs one unique id"
                " per row: pass another --id, or leave --id out to use a hash of each row's feature values"
            )
        return IdChoice(id_column)
    # Not ROW_ID: a column the pipeline adds itself (a sample taken from a snapshot may hold it).
    candidates = [
        c
        for c in frame.columns
        if c not in (target, ROW_ID) and (str(c).lower() == "id" or str(c).lower().endswith("_id"))
    ]
    rejected: list[str] = []
    for candidate in candidates:
        problem = _unique_problem(frame[candidate])
        if problem is None:
            return IdChoice(candidate, tuple(rejected))
        rejected.append(f"{candidate!r} has {problem}")
    return IdChoice(None, tuple(rejected))


def count_duplicate_ids(frame: pd.DataFrame, spec: ModelSpec) -> int:
    """Rows of `frame` whose derived id (`rules.row_ids`: a hash of the feature values) another row
    shares: every one of them breaks the `unique:` rule, the first occurrence too."""
    from mlops_pipeline.rules import row_ids

    return int(row_ids(frame, spec).duplicated(keep=False).sum())
