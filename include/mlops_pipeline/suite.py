"""The validation suite generated from a spec: one named rule per check, each with its policy.

Every rule of the spec becomes one GX expectation tagged with a rule name (`schema:plan`,
`type:tenure_months`, `not_null:customer_id`, `range:monthly_charges`, `finite:mass`, `allowed:plan`,
`unique:customer_id`, `row_count`, `extra:<n>:<expectation>`) and the policy the spec gives it
(``fail``, ``warn`` or ``quarantine``: what `validation.validate_frame` does with a rule that did
not hold).

Source files are read as text, so a value that cannot be parsed as its column's type is seen as
such (`type:` rules run on the text) rather than silently becoming a null. Range and extra
expectations run on the parsed values.

Only the definition (GX is not imported here): running the suite on a batch is `validation.py`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlops_pipeline.checked_columns import INTEGER_PATTERN, NUMBER_PATTERN, text_column
from mlops_pipeline.rules import DECODE_ERROR_COLUMN, ENCODING_RULE
from mlops_pipeline.spec import ModelSpec, Policy
from mlops_pipeline.targets import canonical_text
from mlops_pipeline.training import NUMERIC_FEATURE_TYPES

# The texts the `type:` rule of a boolean feature accepts (`features_frame` reads each of them).
_BOOLEAN_VALUES = ["true", "false", "True", "False", "TRUE", "FALSE", "0", "1"]
# The largest finite 64-bit float: the bounds of the `finite:` rules.
LARGEST_FLOAT = float(np.finfo(np.float64).max)
# The type rules' regex check: GX's own expectation on a vectorised metric (gx_expectations.py).
TYPE_REGEX_EXPECTATION = "expect_column_values_to_match_regex_vectorised"


@dataclass(frozen=True)
class Rule:
    """One expectation of the generated suite with its name and policy."""

    name: str
    policy: Policy
    expectation_type: str
    kwargs: dict[str, Any]


def build_rules(spec: ModelSpec, present_columns: set[str]) -> list[Rule]:
    """The suite for `spec`: schema, types, nulls, ranges, allowed values, uniqueness, row count, extras.

    Column rules are generated only for columns present in the batch; a missing column is reported
    by its `schema:` rule alone.
    """
    default = spec.validation.default_policy
    rules: list[Rule] = [
        Rule(f"schema:{column}", spec.validation.schema_policy, "expect_column_to_exist", {"column": column})
        for column in spec.columns
    ]
    rules.append(
        Rule(
            "row_count",
            "fail",
            "expect_table_row_count_to_be_between",
            {"min_value": spec.validation.min_rows},
        )
    )
    if spec.id_column in present_columns:
        rules.append(
            Rule(
                f"not_null:{spec.id_column}",
                default,
                "expect_column_values_to_not_be_null",
                {"column": spec.id_column},
            )
        )
        rules.append(
            Rule(
                f"unique:{spec.id_column}",
                default,
                "expect_column_values_to_be_unique",
                {"column": spec.id_column},
            )
        )
    if spec.target in present_columns:
        rules.append(
            Rule(
                f"not_null:{spec.target}",
                default,
                "expect_column_values_to_not_be_null",
                {"column": spec.target},
            )
        )
        if spec.target_classes:
            # Labels as they come (text, integers, booleans), compared as canonical text.
            rules.append(
                Rule(
                    f"allowed:{spec.target}",
                    default,
                    "expect_column_values_to_be_in_set",
                    {
                        "column": text_column(spec.target),
                        "value_set": [canonical_text(label) for label in spec.target_classes],
                    },
                )
            )
        else:
            # Without target.classes a classification target holds integer labels (targets.py).
            target_pattern = INTEGER_PATTERN if spec.is_classification else NUMBER_PATTERN
            rules.append(
                Rule(
                    f"type:{spec.target}",
                    default,
                    TYPE_REGEX_EXPECTATION,
                    {"column": text_column(spec.target), "regex": target_pattern},
                )
            )
    for name, feature in spec.features.items():
        if name not in present_columns:
            continue
        policy = feature.on_violation or default
        typed = feature.type in NUMERIC_FEATURE_TYPES
        if not feature.nullable:
            # On the text, so an unparseable value is a `type:` violation, not also a null.
            column = text_column(name) if typed else name
            rules.append(
                Rule(f"not_null:{name}", policy, "expect_column_values_to_not_be_null", {"column": column})
            )
        if feature.type in ("number", "integer"):
            pattern = INTEGER_PATTERN if feature.type == "integer" else NUMBER_PATTERN
            rules.append(
                Rule(
                    f"type:{name}",
                    policy,
                    TYPE_REGEX_EXPECTATION,
                    {"column": text_column(name), "regex": pattern},
                )
            )
        elif feature.type == "boolean":
            rules.append(
                Rule(
                    f"type:{name}",
                    policy,
                    "expect_column_values_to_be_in_set",
                    {"column": text_column(name), "value_set": _BOOLEAN_VALUES},
                )
            )
        if feature.type in ("number", "integer") and (feature.min is None or feature.max is None):
            rules.append(_finite_rule(name, policy))
        if feature.min is not None or feature.max is not None:
            rules.append(
                Rule(
                    f"range:{name}",
                    policy,
                    "expect_column_values_to_be_between",
                    {"column": name, "min_value": feature.min, "max_value": feature.max},
                )
            )
        if feature.type == "category":
            rules.append(
                Rule(
                    f"allowed:{name}",
                    policy,
                    "expect_column_values_to_be_in_set",
                    {"column": name, "value_set": list(feature.allowed or [])},
                )
            )
    weights = spec.training.sample_weight_column
    if weights is not None and weights in present_columns:
        rules.append(
            Rule(
                f"not_null:{weights}",
                default,
                "expect_column_values_to_not_be_null",
                {"column": text_column(weights)},
            )
        )
        rules.append(
            Rule(
                f"type:{weights}",
                default,
                TYPE_REGEX_EXPECTATION,
                {"column": text_column(weights), "regex": NUMBER_PATTERN},
            )
        )
        rules.append(
            Rule(
                f"range:{weights}",
                default,
                "expect_column_values_to_be_between",
                {"column": weights, "min_value": 0},
            )
        )
        rules.append(_finite_rule(weights, default))
    if DECODE_ERROR_COLUMN in present_columns:
        # Rows ingest read from CSV lines that were not UTF-8 text (ingest.py): the default policy.
        rules.append(
            Rule(ENCODING_RULE, default, "expect_column_values_to_be_null", {"column": DECODE_ERROR_COLUMN})
        )
    for index, extra in enumerate(spec.validation.extra_expectations):
        rules.append(Rule(f"extra:{index}:{extra.type}", extra.policy, extra.type, dict(extra.kwargs)))
    return rules


def _finite_rule(name: str, policy: Policy) -> Rule:
    """`finite:<name>`: the parsed values are finite. A text that looks like a number may be too
    large for a 64-bit float ("1e400", a thousand nines): it parses to ±inf, which the `type:` regex
    cannot see and which a missing range bound lets through (a column with both bounds has its
    `range:` rule for this)."""
    return Rule(
        f"finite:{name}",
        policy,
        "expect_column_values_to_be_between",
        {"column": name, "min_value": -LARGEST_FLOAT, "max_value": LARGEST_FLOAT},
    )
