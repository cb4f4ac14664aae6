"""The one Great Expectations expectation of our own: GX's regex check, vectorised.

GX's `expect_column_values_to_match_regex` runs Python's `re.search` on every value of the
column, after `astype(str)` (~0.7 s per million values, a third of the validate step at 1M rows:
the `type:` rules of numeric columns are regexes over their text). This is the same expectation
(same kwargs, same renderers, so the same Data Docs) on a metric that gives the same answer much
faster: Arrow's RE2 engine matches every value in C++ first, and Python's `re.search` decides the
values RE2 did not match. For the patterns the suite uses (anchors, character classes, `\\d`,
`\\s`; no `\\b`, no lookaround), an RE2 match is always a Python match (RE2's `\\d`/`\\s` are the
ASCII subsets of Python's), so the result is exactly Python's; only the (few) values that do not
look like numbers pay Python's price. On a dictionary-encoded (Categorical) column, the check runs
once per distinct value.

Imported only when a suite runs: it imports GX, which is heavy.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# GX's documented way to add a metric; these modules export without `__all__`.
from great_expectations.execution_engine import PandasExecutionEngine  # type: ignore[attr-defined]
from great_expectations.expectations.core.expect_column_values_to_match_regex import (
    ExpectColumnValuesToMatchRegex,
)
from great_expectations.expectations.metrics.map_metric_provider import (  # type: ignore[attr-defined]
    ColumnMapMetricProvider,
    column_condition_partial,
)

VECTORISED_REGEX = "expect_column_values_to_match_regex_vectorised"


def regex_matches(values: pd.Series, regex: str) -> np.ndarray:
    """Per value: does Python's `re.search(regex, str(value))` find a match (see the module docstring)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        per_category = regex_matches(pd.Series(values.cat.categories, dtype=object), regex)
        codes = values.cat.codes.to_numpy()
        return np.where(codes >= 0, per_category[codes], False)
    text = values.astype(str).to_numpy(dtype=object)
    try:
        found = pc.match_substring_regex(pa.array(text, type=pa.string()), regex)
        matched = np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)
    except pa.ArrowInvalid:  # a pattern RE2 cannot compile: Python's engine for every value
        matched = np.zeros(len(text), dtype=bool)
    undecided = np.flatnonzero(~matched)
    if len(undecided):
        pattern = re.compile(regex)
        matched[undecided] = [pattern.search(value) is not None for value in text[undecided]]
    return matched


class ColumnValuesMatchRegexVectorised(ColumnMapMetricProvider):
    """The map metric behind :class:`ExpectColumnValuesToMatchRegexVectorised`."""

    condition_metric_name = "column_values.match_regex_vectorised"
    condition_value_keys = ("regex",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, regex: str, **kwargs: Any) -> pd.Series:
        return pd.Series(regex_matches(column, regex), index=column.index)


class ExpectColumnValuesToMatchRegexVectorised(ExpectColumnValuesToMatchRegex):
    """GX's `expect_column_values_to_match_regex` (same kwargs and renderers), vectorised."""

    map_metric = "column_values.match_regex_vectorised"
