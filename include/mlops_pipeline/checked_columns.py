"""The forms of a batch's columns that the validation suite checks, built once from Arrow text.

A snapshot's columns arrive as text (ingest keeps every value as the source sent it). GX checks
each column in the form it checks fastest and a rule needs: text dictionary-encoded as a pandas
Categorical (nulls, uniqueness, allowed values: hashed once per distinct value; the id column, all
distinct, as Arrow-backed strings), numbers parsed
once (ranges, `finite:`), and beside each typed column its raw text (`<name>__as_text`, for the
`type:` regexes), so an unparseable value is a type violation rather than a silent null.
:func:`checked_columns` builds them all (:class:`CheckedColumns`); `validation.py` runs the suite
on them and builds the clean rows from the parsed values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.targets import canonical_label_text

# Text forms accepted for each numeric type (surrounding spaces are tolerated by pandas' parser).
# ASCII digits only ([0-9], not \d): Python's \d also matches digits of other scripts ("١٢"),
# which pandas and scikit-learn do not read as numbers; those are `type:` violations.
NUMBER_PATTERN = r"^\s*[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\s*$"
INTEGER_PATTERN = r"^\s*[-+]?[0-9]+(?:\.0*)?\s*$"

# Text companions of typed columns in the frame GX sees; never part of the clean output.
TEXT_SUFFIX = "__as_text"


def text_column(column: str) -> str:
    """The name of the text companion GX sees beside the typed column `column`."""
    return f"{column}{TEXT_SUFFIX}"


def text_table(frame: pd.DataFrame | pa.Table) -> pa.Table:
    """A batch as string columns: a snapshot's table as it is, a frame's values as `str()` gives them."""
    if isinstance(frame, pa.Table):
        return frame
    columns = {
        str(name): pa.array(
            [None if pd.isna(value) else str(value) for value in frame[name].astype(object)],
            type=pa.string(),
        )
        for name in frame.columns
    }
    return pa.table(columns) if columns else pa.table({})


def _categorical(column: pa.ChunkedArray) -> pd.Series:
    """Text as a pandas Categorical, dictionary-encoded by Arrow (GX hashes and filters it fast)."""
    encoded = (
        column.combine_chunks().dictionary_encode()
        if len(column)
        else pa.array([], pa.string()).dictionary_encode()
    )
    categories = encoded.dictionary.to_numpy(zero_copy_only=False)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype("int32")
    return pd.Series(pd.Categorical.from_codes(codes, categories=pd.Index(categories, dtype=object)))


def _distinct_text(column: pa.ChunkedArray) -> pd.Series:
    """Text meant to be all distinct (the id column) as pandas' Arrow-backed strings, as it is.

    Dictionary-encoding a column of distinct values saves nothing and costs two passes that hash
    every value (Arrow's encoding, then pandas checking that the categories are unique): 5.6 s for
    5M ids, against 0.1 s for this; GX's `unique:` and `not_null:` checks take about as long on
    either form.
    """
    text = column if column.type in (pa.string(), pa.large_string()) else column.cast(pa.string())
    return pd.Series(pd.arrays.ArrowStringArray(text))


def parse_numbers(column: pa.ChunkedArray) -> np.ndarray:
    """The text's numbers as pandas' `to_numeric(errors="coerce")` reads them (NaN where it cannot).

    Arrow parses every value that looks like a decimal number (in C++, correctly rounded); pandas
    parses the rest (the few that do not: "n/a", "inf", "nan", digits of other scripts), so odd
    values read exactly as before. A value that looks like a number but overflows a float ("1e400")
    is ±inf, as Python's `float()` reads it (pandas would make it a missing value, which no rule
    sees): the `finite:` and `range:` rules refuse it.
    """
    text = column.combine_chunks() if len(column) else pa.array([], pa.string())
    looks_numeric = pc.fill_null(pc.match_substring_regex(text, NUMBER_PATTERN), False)
    candidates = pc.utf8_trim_whitespace(pc.if_else(looks_numeric, text, pa.scalar(None, pa.string())))
    try:
        parsed = pc.cast(candidates, pa.float64()).to_numpy(zero_copy_only=False).astype("float64")
    except pa.ArrowInvalid:  # a form Arrow does not read: pandas for the whole column
        parsed = np.full(len(text), np.nan)
        looks_numeric = pa.array(np.zeros(len(text), dtype=bool))
    undecided = np.flatnonzero(
        (~np.asarray(looks_numeric.to_numpy(zero_copy_only=False), dtype=bool) | ~np.isfinite(parsed))
        & ~np.asarray(text.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    )
    if len(undecided):
        values = pd.Series(text.take(pa.array(undecided)).to_pylist(), dtype=object)
        parsed[undecided] = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
        # A number too large for a float: ±inf as Python's `float()` reads it (pandas makes it a
        # missing value, which no rule would see).
        overflowed = np.asarray(looks_numeric.to_numpy(zero_copy_only=False), dtype=bool)[undecided]
        for position, value in zip(undecided[overflowed], values[overflowed], strict=True):
            parsed[position] = float(value)
    return parsed


def _object_text(column: pd.Series) -> pd.Series:
    """A Categorical text column as str objects (shared, one per category) with None where missing."""
    return column.astype(object).where(column.notna(), None)


@dataclass
class CheckedColumns:
    """Every form of the batch's columns that the suite and the clean output use, built once.

    `checked` holds what GX sees under each column's name (numbers parsed, text dictionary-encoded)
    and, beside typed columns, their raw text (`<name>__as_text`); `numbers` the parsed values.
    """

    checked: dict[str, pd.Series]
    numbers: dict[str, np.ndarray]
    rows: int
    raw: dict[str, pd.Series]  # each of the batch's own columns as text, in order (dictionary-encoded)


def checked_columns(table: pa.Table, spec: ModelSpec) -> CheckedColumns:
    """The forms GX checks: parsed numbers under the names, text beside typed columns."""
    checked = {
        name: (_distinct_text if name == spec.id_column else _categorical)(table.column(name))
        for name in table.column_names
    }
    raw = dict(checked)
    numbers: dict[str, np.ndarray] = {}
    parsed_columns = [
        name
        for name in spec.features
        if name in checked and spec.features[name].type in ("number", "integer")
    ]
    weights = spec.training.sample_weight_column
    if weights is not None and weights in checked:
        parsed_columns.append(weights)
    for name in parsed_columns:
        checked[text_column(name)] = checked[name]
        numbers[name] = parse_numbers(table.column(name))
        checked[name] = pd.Series(numbers[name])
    for name in spec.features:
        if name in checked and spec.features[name].type == "boolean":
            text = _object_text(checked[name])
            checked[text_column(name)] = text
            lowered = text.astype(str).str.strip().str.lower()
            checked[name] = lowered.map({"true": 1.0, "1": 1.0, "false": 0.0, "0": 0.0})
    if spec.target in checked:
        text = checked[spec.target]
        if spec.target_classes:
            checked[text_column(spec.target)] = canonical_label_text(_object_text(text), spec)
        else:
            checked[text_column(spec.target)] = text
    return CheckedColumns(checked, numbers, table.num_rows, raw)
