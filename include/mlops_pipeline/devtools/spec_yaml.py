"""An inferred spec written as commented YAML, in the style of include/models/churn.yaml: every
inferred line says what it was inferred from, so the user can review it line by line."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import yaml

from mlops_pipeline.devtools.spec_profile import (
    BASELINE_FOLDS,
    FLOOR_MARGIN,
    MAX_CATEGORY_VALUES,
    MIN_ROWS_FRACTION,
    RANGE_MARGIN,
    Baseline,
    IdChoice,
    InferredFeature,
    InferredTarget,
    SkippedColumn,
)
from mlops_pipeline.spec import (
    ROW_ID,
)

# A text scalar YAML reads back as the same text without quotes (no yes/no/null, no flow characters).
_PLAIN_TEXT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]*$")

# --------------------------------------------------------------------------------------------- YAML


def _text_scalar(value: str) -> str:
    """A text value for YAML: plain when YAML reads it back as the same text, else double-quoted."""
    if _PLAIN_TEXT.match(value) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value, ensure_ascii=False)


def _scalar(value: Any, *, quote_text: bool = False) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # Positional, never `1e-05` (PyYAML reads that as text); a whole float keeps its `.0`.
        return np.format_float_positional(value, trim="0")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if quote_text else _text_scalar(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_text_scalar(str(k))}: {_scalar(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_scalar(v, quote_text=quote_text) for v in value) + "]"
    raise TypeError(f"no YAML form for {value!r}")


def _commented(lines: Sequence[tuple[str, str]], indent: str = "") -> list[str]:
    """`key: value` lines with their comments aligned in one column."""
    width = max(len(line) for line, _ in lines)
    return [
        f"{indent}{line.ljust(width)}   # {comment}" if comment else f"{indent}{line}".rstrip()
        for line, comment in lines
    ]


def _wrap_comment(text: str, indent: str = "", width: int = 100) -> list[str]:
    # An operator stays with its operand: a line starting "# - 0.05" would read as a list item.
    words: list[str] = []
    for word in text.split():
        if words and words[-1] in ("-", "+", "*"):
            words[-1] = f"{words[-1]} {word}"
        else:
            words.append(word)
    lines, line = [], ""
    for word in words:
        if line and len(indent) + 2 + len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return [f"{indent}# {item}" for item in lines]


def _no_id_comment(id_choice: IdChoice, duplicate_rows: int, sample_rows: int) -> list[str]:
    """The comment that stands where `id_column` would: what a table without an id column means."""
    rejected = f" ({'; '.join(id_choice.rejected)})" if id_choice.rejected else ""
    if duplicate_rows:
        share = duplicate_rows / sample_rows
        duplicates = (
            f" In this sample {duplicate_rows} of {sample_rows} rows ({share:.1%}) share their feature values"
            " with another row."
        )
    else:
        duplicates = " No two rows of this sample have the same feature values."
    return _wrap_comment(
        f"No id_column: the table has no id column (no column named `id` or `*_id` with unique values"
        f"{rejected}), so each row's id is `{ROW_ID}`, a hash of its feature values. Duplicate rows get the"
        f" same id, and validation's `unique:{ROW_ID}` rule reports them (policy default_policy below).{duplicates}"
        " Late labels (`labels:`) are joined to predictions by id and cannot be joined without one: pass"
        " --id COLUMN if the table has a unique id under another name."
    )


def render_yaml(
    data: Mapping[str, Any],
    *,
    features: Sequence[InferredFeature],
    skipped: Sequence[SkippedColumn],
    target: InferredTarget,
    baseline: Baseline,
    sample_label: str,
    sample_rows: int,
    sample_columns: int,
    id_choice: IdChoice | None = None,
    duplicate_rows: int = 0,
) -> str:
    """The spec `data` as commented YAML in the style of include/models/churn.yaml."""
    name = data["name"]
    source, validation, gates, drift = data["source"], data["validation"], data["gates"], data["drift"]
    out: list[str] = [
        f"# Inferred by `mlops spec infer` from {sample_label}: {sample_rows} rows, {sample_columns} columns.",
        "# Every line describes that sample only: review every line (types, ranges, allowed values, the",
        "# target's classes, the floors) before the first training run, and write the description.",
        f"name: {_scalar(name)}",
        f"description: {_scalar(data['description'], quote_text=True)}",
        *_commented(
            [
                (f"owner: {_scalar(data['owner'])}", "who answers for this model"),
                (f"task: {data['task']}", f"inferred from the target: {target.note}"),
            ]
        ),
        f"tags: {_scalar(data['tags'])}",
        "",
        "source:",
        *_commented(
            [
                (
                    f"uri: {_scalar(source['uri'], quote_text=True)}",
                    "relative to MLOPS_STORE_URI; {ds} is the day",
                ),
                (f"format: {source['format']}", ""),
                (f"window_days: {source['window_days']}", "days of batches one training run reads"),
            ],
            "  ",
        ),
        "",
    ]
    id_comment = "one unique value per row in the sample"
    id_lines: list[tuple[str, str]] = []
    if "id_column" in data:
        id_lines.append((f"id_column: {_scalar(data['id_column'])}", id_comment))
    else:
        out += _no_id_comment(id_choice or IdChoice(None), duplicate_rows, sample_rows)
    target_field = data["target"]
    if isinstance(target_field, Mapping):
        target_lines = [(f"column: {_scalar(target_field['column'])}", "")]
        target_lines.append(
            (
                f"classes: {_scalar(target_field['classes'], quote_text=True)}",
                "every label the sample holds; validation refuses others",
            )
        )
        if "positive" in target_field:
            target_lines.append(
                (f"positive: {_scalar(target_field['positive'], quote_text=True)}", target.positive_note)
            )
        out += _commented(id_lines) if id_lines else []
        out += ["target:", *_commented(target_lines, "  ")]
    else:
        out += _commented([*id_lines, (f"target: {_scalar(target_field)}", "")])
    if target.unlabelled_rows:
        out += _wrap_comment(
            f"{target.unlabelled_rows} sample rows have no target; validation's not_null rule will set such rows aside."
        )
    out += [
        "",
        *_wrap_comment(
            f"Ranges: the observed range widened by {RANGE_MARGIN:.0%} of its span on each side, and never below 0"
            " when the sample holds no negative value (a count or an amount: a negative one is a defect for"
            " validation to catch). nullable: the sample has missing values. allowed: every value the sample"
            f" holds (text with at most {MAX_CATEGORY_VALUES} distinct values)."
        ),
        "features:",
    ]
    feature_lines = []
    key_width = max(len(_text_scalar(f.name)) + 1 for f in features)
    for feature in features:
        key = f"{_text_scalar(feature.name)}:".ljust(key_width)
        feature_lines.append((f"{key} {_scalar(data['features'][feature.name])}", feature.note))
    out += _commented(feature_lines, "  ")
    for column in skipped:
        out += _wrap_comment(f"left out: {column.name!r}: {column.reason}", "  ")
    out += [
        "",
        "estimator:",
        f"  kind: {data['estimator']['kind']}",
        f"  params: {_scalar(data['estimator']['params'])}",
        "",
        f"split: {_scalar(data['split'])}",
        "",
        "validation:",
        *_commented(
            [
                (f"default_policy: {validation['default_policy']}", "rows that break a rule are set aside"),
                (f"schema_policy: {validation['schema_policy']}", "a missing column refuses the batch"),
                (
                    f"min_rows: {validation['min_rows']}",
                    f"{MIN_ROWS_FRACTION:.0%} of the sample's rows: a much smaller batch is suspect",
                ),
                (f"max_quarantine_share: {_scalar(validation['max_quarantine_share'])}", ""),
            ],
            "  ",
        ),
        "",
    ]
    folds = ", ".join(f"{score:.3f}" for score in baseline.folds)
    out += _wrap_comment(
        f"Baseline: {baseline.metric} {baseline.mean:.3f} (folds {folds}), {BASELINE_FOLDS}-fold cross-validation"
        f" of this spec's pipeline on {baseline.rows} rows of the sample (seed {data['split']['seed']})."
        f" A training run on this sample is gated on a holdout of about {baseline.holdout_rows} rows, where"
        f" {baseline.metric} varies by about ±{baseline.spread:.3f} (from the folds' spread)."
        f" Floor: {baseline.rule}, so that a model like the baseline passes; raise it once you know what"
        " the model must reach."
    )
    if not baseline.beats_chance:
        out += _wrap_comment(
            f"WARNING: the baseline is no better than {baseline.chance:.3g} ({baseline.metric} by chance): the"
            " features do not predict the target in this sample, and a model that does not beat chance"
            " will not pass this floor."
        )
    elif baseline.mean - baseline.chance < FLOOR_MARGIN:
        out += _wrap_comment(
            f"NOTE: the baseline is within {FLOOR_MARGIN:g} of chance ({baseline.chance:.3g}): the features"
            " barely predict the target in this sample."
        )
    out += [
        "gates:",
        f"  primary_metric: {gates['primary_metric']}",
        f"  floors: {_scalar(gates['floors'])}",
        *_commented(
            [
                (f"max_regression: {_scalar(gates['max_regression'])}", "allowed drop against the champion"),
                (f"max_latency_ms_per_1k: {_scalar(gates['max_latency_ms_per_1k'])}", ""),
                (f"max_model_size_mb: {_scalar(gates['max_model_size_mb'])}", ""),
            ],
            "  ",
        ),
        "",
        "drift:",
        *(f"  {key}: {_scalar(value)}" for key, value in drift.items()),
        "",
        "schedules:",
        "  # Nothing runs on a clock until you choose: train when monitoring triggers it or by hand;",
        '  # once batches land daily, score: "@daily" and monitor: "@daily".',
        "  train: null",
        "  score: null",
        "  monitor: null",
        "",
        "# Batch scoring (a `<name>__score` DAG), when there are batches to score:",
        "# scoring:",
        "#   input:",
        f'#     uri: "incoming/{name}/ds={{ds}}/*.parquet"',
        "#     format: parquet",
        "",
        "# A person approves each candidate in Airflow's Required Actions page (<model>__approve):",
        f"approval_required: {_scalar(data['approval_required'])}",
        "# approval_timeout: P3D   # no answer by then refuses the candidate (needs approval_required)",
        "# approvers: [alice]      # Airflow users who may answer; empty: anyone who may edit the DAG",
    ]
    return "\n".join(out) + "\n"
