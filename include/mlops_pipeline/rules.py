"""The row rules of a model's input schema, shared by scoring and monitoring: type, range, allowed
values and nulls per feature, each with its policy (`quarantine`, `warn`, `fail`).

Two ways to check a batch, which give the same masks in the same order (a test holds them equal):
:func:`check_rows` on a pandas frame of any input (CSV text, booleans, numbers sent as text), and
:func:`check_arrow` on a Parquet batch whose columns have plain types (see :func:`arrow_path_applies`),
which also keeps the typed values so scoring can featurise without converting again. Both go
through :func:`number_rules` for numbers, so the rules cannot drift apart.

Two rules are about the rows' source rather than their values, and both are named like
validation's: ``encoding`` (a CSV line that was not UTF-8 text, or held a NUL byte: ingest and
scoring keep it as a row whose :data:`DECODE_ERROR_COLUMN` says which line and why) and
``unique:<id>`` (every row of an id that occurs more than once in a scoring input, as training's
``unique:<id>`` rule takes every row of a duplicated id).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlops_pipeline.spec import FeatureSpec, ModelSpec, Policy

# A column that ingest and scoring add to a CSV's rows only when some line could not be decoded:
# null on good rows, "<file> line <n>: <what was wrong>: <the line>" on the others.
DECODE_ERROR_COLUMN = "_decode_error"
# The rule of those rows (policy: `validation.default_policy`), in training and in scoring.
ENCODING_RULE = "encoding"


@dataclass(frozen=True)
class RowCheck:
    """Which rows of a batch broke which rules, split by the rules' policies."""

    quarantine: np.ndarray  # bool per row
    reasons: dict[int, list[str]]  # row position -> quarantine rules it broke
    quarantined_by_rule: dict[str, int]
    warned_by_rule: dict[str, int]
    failed_by_rule: dict[str, int]


def required_columns(spec: ModelSpec) -> list[str]:
    """The columns an input file must have: the id (unless it is derived) and every feature."""
    return [*([] if spec.derived_row_id else [spec.id_column]), *spec.features]


def row_ids(frame: pd.DataFrame, spec: ModelSpec) -> pd.Series:
    """The id of each row of a table without an id column: a hash of its feature values as text.

    pandas' own vectorised row hash (deterministic for the same values and key) on the values as
    read, so the same row gets the same id in every window, and a duplicated row a duplicated id
    (which the `unique:` rule then reports). 16 hex digits.
    """
    text = frame[list(spec.features)].astype(object).where(frame[list(spec.features)].notna(), "")
    hashed = pd.util.hash_pandas_object(text.astype(str), index=False)
    return pd.Series([f"{value:016x}" for value in hashed.to_numpy()], index=frame.index, dtype=object)


def with_row_ids(frame: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """`frame` with the derived id column first when the spec has no id column; else `frame`."""
    if not spec.derived_row_id or spec.id_column in frame.columns:
        return frame
    return frame.assign(**{spec.id_column: row_ids(frame, spec)})[[spec.id_column, *frame.columns]]


def numeric_values(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Parsed numbers (NaN where missing or not a finite number) and a mask of values that are
    present but not finite numbers (text, ±inf: no model can score an infinity)."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        parsed = values.astype("float64")
        unparseable = np.zeros(len(values), dtype=bool)
    else:
        parsed = pd.to_numeric(values, errors="coerce").astype("float64")
        unparseable = (values.notna() & parsed.isna()).to_numpy()
    infinite = np.isinf(parsed.to_numpy())
    if infinite.any():
        parsed = parsed.mask(infinite)
        unparseable |= infinite
    return parsed, unparseable


def number_rules(
    broken: list[tuple[str, Policy, np.ndarray]],
    name: str,
    feature: FeatureSpec,
    policy: Policy,
    parsed: np.ndarray,
    unparseable: np.ndarray,
) -> np.ndarray:
    """Append the type and range rules of one numeric feature to `broken`; return its nulls.

    `parsed`: float64, NaN where missing or not a finite number; `unparseable`: present values that
    are not finite numbers. Both ways of checking (pandas, Arrow) go through here.
    """
    missing = np.isnan(parsed)
    broken.append((f"type:{name}", policy, unparseable))
    if feature.type == "integer":
        with np.errstate(invalid="ignore"):
            broken.append((f"type:{name}", policy, ~missing & (np.mod(parsed, 1.0) != 0)))
    out_of_range = np.zeros(len(parsed), dtype=bool)
    if feature.min is not None:
        out_of_range |= parsed < feature.min
    if feature.max is not None:
        out_of_range |= parsed > feature.max
    broken.append((f"range:{name}", policy, out_of_range))
    return missing & ~unparseable


def duplicate_id_policy(spec: ModelSpec) -> Policy:
    """The policy of the `unique:<id>` rule in scoring: `scoring.duplicate_ids`, else the default
    policy (training's `unique:<id>` rule has the default policy too)."""
    chosen = spec.scoring.duplicate_ids if spec.scoring is not None else None
    return chosen or spec.validation.default_policy


def id_hashes(ids: pd.Series) -> np.ndarray:
    """64-bit hashes of the present ids as text (pandas' vectorised hash, the same in every batch)."""
    present = ids[ids.notna()].astype(str).to_numpy(dtype=object)
    return pd.util.hash_array(present, categorize=False)


@dataclass(frozen=True)
class RepeatedIds:
    """The ids that occur more than once in an input file, as hashes of their text.

    Counted from 8 bytes per row instead of the ids themselves, so finding them costs a small
    fraction of the batches' memory; two different ids share a 64-bit hash with a chance of about
    rows² / 3.7e19 (1e-7 at 5M rows), which would quarantine both as repeated.
    """

    hashes: np.ndarray  # sorted distinct uint64 hashes of the repeated ids

    @classmethod
    def of(cls, chunks: list[np.ndarray]) -> RepeatedIds:
        """The repeated ids among all the hashes of one file (`id_hashes` of each batch)."""
        every = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint64)
        distinct, counts = np.unique(every, return_counts=True)
        return cls(distinct[counts > 1])

    @classmethod
    def across(cls, files: list[np.ndarray]) -> RepeatedIds:
        """The ids found in more than one of `files`, each the sorted distinct hashes of one file."""
        every = np.concatenate(files) if files else np.zeros(0, dtype=np.uint64)
        distinct, counts = np.unique(every, return_counts=True)
        return cls(distinct[counts > 1])

    def union(self, other: RepeatedIds) -> RepeatedIds:
        """The ids repeated in either."""
        return RepeatedIds(np.union1d(self.hashes, other.hashes))

    def __len__(self) -> int:
        return len(self.hashes)

    def mask(self, ids: pd.Series) -> np.ndarray:
        """Per row: whether its id is one of the repeated ones (False for a missing id)."""
        present = ids.notna().to_numpy()
        hits = np.zeros(len(ids), dtype=bool)
        if len(self.hashes) and present.any():
            hits[present] = np.isin(id_hashes(ids), self.hashes)
        return hits


def check_rows(frame: pd.DataFrame, spec: ModelSpec, duplicate_ids: RepeatedIds | None = None) -> RowCheck:
    """Check every row of a batch against the spec's feature schema, vectorised per column.

    `duplicate_ids`: the ids that occur more than once in the whole input file (scoring), whose
    rows break `unique:<id>`; None to skip the rule. Rows read from an undecodable line (a
    :data:`DECODE_ERROR_COLUMN` value) break `encoding`.
    """
    default = spec.validation.default_policy
    broken: list[tuple[str, Policy, np.ndarray]] = []
    if DECODE_ERROR_COLUMN in frame.columns:
        broken.append((ENCODING_RULE, default, frame[DECODE_ERROR_COLUMN].notna().to_numpy()))
    ids = frame[spec.id_column]
    broken.append((f"not_null:{spec.id_column}", default, ids.isna().to_numpy()))
    if duplicate_ids is not None and len(duplicate_ids):
        broken.append((f"unique:{spec.id_column}", duplicate_id_policy(spec), duplicate_ids.mask(ids)))
    for name, feature in spec.features.items():
        policy: Policy = feature.on_violation or default
        values = frame[name]
        if feature.type in ("number", "integer"):
            parsed, unparseable = numeric_values(values)
            nulls = number_rules(broken, name, feature, policy, parsed.to_numpy(), unparseable)
        elif feature.type == "boolean":
            text = values.astype("string").str.strip().str.lower()
            nulls = values.isna().to_numpy()
            broken.append(
                (
                    f"type:{name}",
                    policy,
                    (~nulls) & ~text.isin(["true", "false", "1", "0", "1.0", "0.0"]).to_numpy(),
                )
            )
        else:
            nulls = values.isna().to_numpy()
            # As text, like `features_frame` and ingest: a category sent as a number (1) is "1".
            allowed = values.astype(str).isin(list(feature.allowed or [])).to_numpy()
            broken.append((f"allowed:{name}", policy, ~nulls & ~allowed))
        if not feature.nullable:
            broken.append((f"not_null:{name}", policy, nulls))
    return row_check(broken, len(frame))


def row_check(broken: list[tuple[str, Policy, np.ndarray]], rows: int) -> RowCheck:
    """Rows that broke rules, from each rule's mask (in rule order: a row's reasons keep that order)."""
    quarantine = np.zeros(rows, dtype=bool)
    reasons: dict[int, list[str]] = {}
    counts: dict[Policy, dict[str, int]] = {"quarantine": {}, "warn": {}, "fail": {}}
    for rule, policy, mask in broken:
        hits = int(np.count_nonzero(mask))
        if not hits:
            continue
        counts[policy][rule] = counts[policy].get(rule, 0) + hits
        if policy == "quarantine":
            quarantine |= mask
            for position in np.flatnonzero(mask).tolist():
                reasons.setdefault(position, []).append(rule)
    return RowCheck(quarantine, reasons, counts["quarantine"], counts["warn"], counts["fail"])


def is_text(kind: pa.DataType) -> bool:
    """Whether an Arrow type is text."""
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def arrow_path_applies(schema: pa.Schema, spec: ModelSpec) -> bool:
    """Whether batches of `schema` can be checked and featurised straight from Arrow.

    Only where the pandas way's result is certain from the Arrow type alone: the id and the
    categories as text, numeric features as integers or floats, and no pandas index stored in a
    column (pandas would move that column out of the frame). Booleans, categoricals, numbers sent as
    text and every other type take the pandas way.
    """
    if spec.derived_row_id:
        return False  # the id is hashed from the row's values, which the pandas way does
    index_columns = (schema.pandas_metadata or {}).get("index_columns", [])
    if any(isinstance(column, str) for column in index_columns):
        return False
    for name in required_columns(spec):
        if len(schema.get_all_field_indices(name)) != 1:
            return False
    if not is_text(schema.field(spec.id_column).type):
        return False
    for name, feature in spec.features.items():
        kind = schema.field(name).type
        if feature.type in ("number", "integer"):
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
                return False
        elif feature.type != "category" or not is_text(kind):
            return False
    return True


@dataclass(frozen=True)
class Categories:
    """A text column as codes into its distinct values (read dictionary-encoded from Parquet)."""

    codes: np.ndarray  # per row: position in `values`; nulls point at the last position
    values: np.ndarray  # the distinct values as Python str objects, then NaN (what `features_frame` gives)
    missing: np.ndarray  # per distinct value (and the null position): whether it is null

    @classmethod
    def of(cls, column: pa.Array) -> Categories:
        """The codes and distinct values of a text column (dictionary-encoded or not)."""
        encoded = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)
        distinct = encoded.dictionary.to_pylist()
        codes = pc.fill_null(encoded.indices.cast(pa.int64()), len(distinct)).to_numpy()
        missing = np.array([value is None for value in distinct] + [True])
        values = np.array([*distinct, np.nan], dtype=object)
        values[missing] = np.nan
        return cls(codes, values, missing)

    def nulls(self) -> np.ndarray:
        """Per row: whether the value is null."""
        return self.missing[self.codes]

    def allowed(self, allowed: list[str]) -> np.ndarray:
        """Per row: whether the value is one of `allowed` (False for nulls)."""
        accepted = set(allowed)
        return np.array([value in accepted for value in self.values[:-1].tolist()] + [False])[self.codes]


@dataclass(frozen=True)
class ArrowBatch:
    """One batch checked on the Arrow path: its row check and the typed feature values of all rows."""

    check: RowCheck
    numbers: dict[str, np.ndarray]  # numeric feature -> float64, NaN for nulls
    categories: dict[str, Categories]


def check_arrow(
    batch: pa.RecordBatch, spec: ModelSpec, duplicate_ids: RepeatedIds | None = None
) -> ArrowBatch:
    """`check_rows` for a batch that `arrow_path_applies` to: the same rules, masks and order.

    Numbers: the pandas way's parsed value is the column as float64, and only ±inf is not a
    finite number. Categories: null is an Arrow null, and a present
    value is allowed when it is one of the spec's strings (checked once per distinct value).
    """
    default = spec.validation.default_policy
    broken: list[tuple[str, Policy, np.ndarray]] = []
    ids = batch.column(spec.id_column)
    broken.append((f"not_null:{spec.id_column}", default, null_mask(ids)))
    if duplicate_ids is not None and len(duplicate_ids):
        # Only in a file with repeated ids: the ids become Python text for hashing here.
        duplicated = duplicate_ids.mask(pd.Series(ids.to_numpy(zero_copy_only=False), dtype=object))
        broken.append((f"unique:{spec.id_column}", duplicate_id_policy(spec), duplicated))
    numbers: dict[str, np.ndarray] = {}
    categories: dict[str, Categories] = {}
    for name, feature in spec.features.items():
        policy: Policy = feature.on_violation or default
        column = batch.column(name)
        if feature.type in ("number", "integer"):
            parsed = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
            infinite = np.isinf(parsed)
            if infinite.any():  # not a finite number, as the pandas way says
                parsed = np.where(infinite, np.nan, parsed)
            nulls = number_rules(broken, name, feature, policy, parsed, infinite)
            numbers[name] = parsed
        else:
            text = categories[name] = Categories.of(column)
            nulls = text.nulls()
            broken.append((f"allowed:{name}", policy, ~nulls & ~text.allowed(list(feature.allowed or []))))
        if not feature.nullable:
            broken.append((f"not_null:{name}", policy, nulls))
    return ArrowBatch(row_check(broken, batch.num_rows), numbers, categories)


def null_mask(column: pa.Array) -> np.ndarray:
    """Per row: whether the value is null (no allocation of a mask beyond the result)."""
    if not column.null_count:
        return np.zeros(len(column), dtype=bool)
    return column.is_null().to_numpy(zero_copy_only=False)
