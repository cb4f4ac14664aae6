"""The target as the data gives it: labels as they come (integers, text, booleans), the task they
make, the positive class, and the names of the probability columns.

Snapshots hold text, so a label's type is decided once, here, and never guessed from one window's
data (a stray word in a 0/1 column must be a broken row, not a third class): the type of the spec's
`target.classes` when it lists them (text, integers or booleans; validation's `allowed:<target>`
rule holds the data to that list), else integers (validation's `type:<target>` rule). Scikit-learn's
classifiers keep `classes_` in sorted order and return the labels they were fitted on, so the
model maps labels internally and predicts them as they came.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from mlops_pipeline.spec import Label, ModelSpec

_TRUE = {"true", "1", "1.0"}
_FALSE = {"false", "0", "0.0"}
_SAFE = re.compile(r"[^A-Za-z0-9_]+")


class TargetError(ValueError):
    """The target column cannot be used as the spec says (the message names the column and values)."""


def _as_text(values: pd.Series) -> pd.Series:
    """Each present value as `str(value).strip()`, missing ones None (vectorised: labels are many)."""
    present = values.notna().to_numpy()
    text = np.full(len(values), None, dtype=object)
    text[present] = values[present].astype(str).str.strip().to_numpy(dtype=object)
    return pd.Series(text, index=values.index, dtype=object)


def label_type(spec: ModelSpec) -> type:
    """The Python type of the labels: that of `target.classes`, else int."""
    return type(spec.target_classes[0]) if spec.target_classes else int


def typed_target(values: pd.Series, spec: ModelSpec) -> pd.Series:
    """The target as the model gets it: float64 (regression) or labels of one type (classification).

    Raises TargetError for a value that is not a label of that type (validation quarantines such
    rows first, so a clean snapshot never raises).
    """
    if not spec.is_classification:
        return pd.to_numeric(values, errors="raise").astype("float64")
    kind = label_type(spec)
    if kind is int and values.dtype.kind in "iu":
        # Integer labels already typed (the clean rows' Parquet): the same values the text route
        # below gives, without writing and parsing every row (4M rows: 3.4 s).
        return values.astype("int64")
    text = _as_text(values)
    if kind is str:
        return text.astype(object)
    if kind is bool:
        lowered = text.str.lower()
        mapped = lowered.map(lambda v: True if v in _TRUE else False if v in _FALSE else None)
        if mapped.isna().any():
            bad = sorted(set(text[mapped.isna()].dropna()))[:5]
            raise TargetError(f"{spec.target}: {bad} are not true/false labels")
        return mapped.astype(bool)
    numbers = pd.to_numeric(text, errors="coerce")
    broken = numbers.isna() | (numbers != numbers.round())
    if broken.any():
        bad = sorted(set(text[broken].dropna()))[:5]
        raise TargetError(
            f"{spec.target}: {bad} are not integer labels; list the labels in target.classes to use text"
        )
    return numbers.astype("int64")


def canonical_text(label: Label) -> str:
    """A label written as text the same way whatever its type (True → "true", 1 → "1")."""
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label)


def canonical_label_text(values: pd.Series, spec: ModelSpec) -> pd.Series:
    """Each value as the canonical text of the label it is (" 1.0" → "1", "TRUE" → "true"), else as
    it came; validation checks these against `target.classes` (None stays None)."""
    text = _as_text(values)
    kind = label_type(spec)
    if kind is str:
        return text
    if kind is bool:
        lowered = text.str.lower()
        return text.where(~lowered.isin(_TRUE | _FALSE), lowered.isin(_TRUE).map(canonical_text))
    numbers = pd.to_numeric(text, errors="coerce")
    integral = numbers.notna() & (numbers == numbers.round())
    return text.where(~integral, numbers.where(integral, 0).astype("int64").astype(str))


def classification_task(spec: ModelSpec, classes: list[Any]) -> str:
    """`binary` or `multiclass` for the labels the data holds, checked against the spec's task."""
    if len(classes) < 2:
        raise TargetError(f"{spec.name}: training data has a single class ({classes[0]!r}); cannot fit")
    found = "binary" if len(classes) == 2 else "multiclass"
    if found == "multiclass" and spec.positive_class is not None:
        raise TargetError(
            f"{spec.name}: target.positive is for binary targets, but the training data holds {len(classes)} classes"
        )
    if spec.task in ("binary", "multiclass") and spec.task != found:
        raise TargetError(
            f"{spec.name}: the spec says task {spec.task}, but the training data holds {len(classes)} classes "
            f"{classes[:10]}; set task: {found} (or classification) in the spec"
        )
    return found


def positive_label(spec: ModelSpec, classes: list[Any]) -> Any:
    """The positive class of a binary target: `target.positive`, else the larger label (1 of 0/1)."""
    if spec.positive_class is None:
        return classes[-1]
    wanted = canonical_text(spec.positive_class)
    for label in classes:
        if canonical_text(label) == wanted:
            return label
    raise TargetError(
        f"{spec.name}: target.positive {spec.positive_class!r} is not among the classes {classes}"
    )


def proba_columns(classes: list[Any]) -> list[str]:
    """One safe column name per class: `proba_<label>`, other characters as `_`, duplicates numbered."""
    names: list[str] = []
    for label in classes:
        base = "proba_" + (_SAFE.sub("_", canonical_text(label)).strip("_") or "class")
        name, counter = base, 2
        while name in names:
            name, counter = f"{base}_{counter}", counter + 1
        names.append(name)
    return names
