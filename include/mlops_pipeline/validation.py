"""Data validation with Great Expectations: the spec's suite run on a batch, a policy per rule.

The suite (`suite.build_rules`) names every rule and gives it a policy, applied here to a rule
that did not hold:

* ``fail`` — the batch is refused;
* ``warn`` — recorded in the outcome and the report, the rows are kept;
* ``quarantine`` — the offending rows (every one of them: GX runs with ``COMPLETE`` results, not a
  sample) are moved out of the batch, with the names of the rules each row broke. The batch is
  refused when the quarantined share exceeds ``validation.max_quarantine_share``.

:func:`validate_frame` is the pure part (frame in, :class:`ValidationOutcome` out);
:func:`publish_validation` writes the GX result JSON, a summary, GX's Data Docs page and the
quarantine to the store.
"""

from __future__ import annotations

import functools
import gc
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mlops_pipeline import layout
from mlops_pipeline.checked_columns import (
    TEXT_SUFFIX,
    CheckedColumns,
    checked_columns,
    text_column,
    text_table,
)
from mlops_pipeline.spec import ModelSpec, Policy
from mlops_pipeline.store import ObjectStore
from mlops_pipeline.suite import Rule, build_rules
from mlops_pipeline.targets import typed_target
from mlops_pipeline.training import features_frame

log = logging.getLogger(__name__)

REASONS_COLUMN = "_reasons"
# Columns per GX batch (see `run_suite`).
COLUMNS_PER_BATCH = 3


@dataclass(frozen=True)
class RuleResult:
    """What one rule found."""

    name: str
    policy: Policy
    success: bool
    unexpected_count: int
    detail: str = ""

    @property
    def violated(self) -> bool:
        """The rule did not hold."""
        return not self.success


@dataclass
class ValidationOutcome:
    """The verdict on one batch, the rows that may be used, and the rows that may not."""

    model: str
    rules: list[RuleResult]
    row_count: int
    quarantined: pd.DataFrame
    clean: pd.DataFrame
    failure_reasons: list[str]
    warnings: list[str]
    gx_result: dict[str, Any]
    data_docs_html: str
    max_quarantine_share: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when the batch may be used."""
        return not self.failure_reasons

    @property
    def failure_reason(self) -> str:
        """All reasons the batch was refused, in one line."""
        return "; ".join(self.failure_reasons)

    @property
    def quarantined_count(self) -> int:
        """Rows moved out of the batch."""
        return len(self.quarantined)

    @property
    def quarantine_share(self) -> float:
        """Share of the batch's rows that were quarantined."""
        return self.quarantined_count / self.row_count if self.row_count else 0.0

    def summary(self) -> dict[str, Any]:
        """A small JSON-serialisable summary for reports, XCom and tests."""
        return {
            "model": self.model,
            "passed": self.passed,
            "failure_reasons": self.failure_reasons,
            "warnings": self.warnings,
            "rows": self.row_count,
            "clean_rows": len(self.clean),
            "quarantined_rows": self.quarantined_count,
            "quarantine_share": round(self.quarantine_share, 6),
            "max_quarantine_share": self.max_quarantine_share,
            "rules": [
                {
                    "name": rule.name,
                    "policy": rule.policy,
                    "success": rule.success,
                    "unexpected_count": rule.unexpected_count,
                    "detail": rule.detail,
                }
                for rule in self.rules
            ],
        }


@dataclass(frozen=True)
class ValidationArtifacts:
    """Where one validation's outputs were written."""

    result_uri: str
    summary_uri: str
    data_docs_uri: str
    quarantine_uri: str | None
    quarantined_count: int


def _snake_to_class(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _gx_context() -> Any:
    # GX logs hundreds of INFO lines (docs decorators, expectation registry) when imported after Airflow.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def _expectation(rule: Rule) -> Any:
    import great_expectations.expectations as gxe

    from mlops_pipeline import gx_expectations

    own = {gx_expectations.VECTORISED_REGEX: gx_expectations.ExpectColumnValuesToMatchRegexVectorised}
    cls = own.get(rule.expectation_type) or getattr(gxe, _snake_to_class(rule.expectation_type), None)
    if cls is None:
        raise ValueError(
            f"unknown Great Expectations expectation {rule.expectation_type!r} (rule {rule.name})"
        )
    return cls(**rule.kwargs, meta={"rule": rule.name, "policy": rule.policy})


def _rule_column(rule: Rule) -> str | None:
    """The column a rule checks (its GX batch), or None for table-level and multi-column rules."""
    column = rule.kwargs.get("column")
    if rule.name.startswith("schema:") or not isinstance(column, str):
        return None
    return column.removesuffix(TEXT_SUFFIX)


def _checked_frame(columns: CheckedColumns, names: list[str]) -> pd.DataFrame:
    """The checked forms `names` as one frame: a GX batch."""
    return pd.DataFrame({name: columns.checked[name] for name in names})


def _is_structural(rule: Rule) -> bool:
    """A rule on the batch's shape (its columns' names, its row count), not on any values."""
    return rule.name.startswith("schema:") or rule.name == "row_count"


@contextmanager
def _without_batch_fingerprints() -> Iterator[None]:
    """GX's runs without its batch fingerprint (`pandas_data_fingerprint` in the batch markers: an
    md5 over pandas' hash of every value of the in-memory batch, a form of our own making, while
    the snapshot's own sha256 names the data). GX itself leaves it out for a batch over
    `HASH_THRESHOLD` bytes; hashing 5M distinct ids that are not a Categorical takes ~6 s (pandas
    factorizes them first), and dictionary-encoding them to make it cheap takes as long."""
    from great_expectations.execution_engine import pandas_execution_engine as engine

    threshold = engine.HASH_THRESHOLD  # an AttributeError if a GX release drops it (a test holds it)
    engine.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        engine.HASH_THRESHOLD = threshold


def _gx_order(rules: list[Rule]) -> list[Rule]:
    """The rules in the order one GX run reports them: grouped by their `column` kwarg (in order of
    first appearance, rules without one as a group of their own), suite order within a group."""
    groups: dict[str | None, list[Rule]] = {}
    for rule in rules:
        column = rule.kwargs.get("column")
        groups.setdefault(column if isinstance(column, str) else None, []).append(rule)
    return [rule for group in groups.values() for rule in group]


def run_suite(columns: CheckedColumns, rules: list[Rule], suite_name: str, run_name: str) -> Any:
    """Run `rules` with complete results; one GX validation result, the rules in their order.

    GX filters and copies its whole batch for every metric it computes, so a batch of all columns
    costs (columns x metrics) copies, and each batch costs a fixed setup. Column rules therefore
    run on batches of a few columns (`COLUMNS_PER_BATCH`, with their text forms; measured at 1M
    rows: 2.1 s for batches of 3 columns, 3.4 s for 1, 3.6 s for 20); the schema and row-count
    rules on the batch's own columns as text (`CheckedColumns.raw`: they need only the names and
    the rows), other table-level rules on every checked form; the results are then put
    together in the order one run would give them (a test holds them equal). The first batch's
    meta (GX's batch markers) is the result's.
    """
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.validator.validation_statistics import calc_validation_statistics

    context = _gx_context()
    source = context.data_sources.add_pandas("batch_source")
    by_column: dict[str | None, list[Rule]] = {None: []}
    for rule in rules:
        by_column.setdefault(_rule_column(rule), []).append(rule)
    table_rules = by_column.pop(None)
    structural = [rule for rule in table_rules if _is_structural(rule)]
    across = [rule for rule in table_rules if not _is_structural(rule)]
    batches: list[tuple[str, Callable[[], pd.DataFrame], list[Rule]]] = [
        (suite_name, lambda: pd.DataFrame(columns.raw), structural)
    ]
    if across:
        batches.append((f"{suite_name}.across", lambda: pd.DataFrame(columns.checked), across))
    checked_names = [column for column in by_column if column is not None]
    for start in range(0, len(checked_names), COLUMNS_PER_BATCH):
        chunk = checked_names[start : start + COLUMNS_PER_BATCH]
        names = [
            name for column in chunk for name in (column, text_column(column)) if name in columns.checked
        ]
        batches.append(
            (
                f"{suite_name}.{len(batches)}",
                functools.partial(_checked_frame, columns, names),
                [rule for column in chunk for rule in by_column[column]],
            )
        )
    by_rule: dict[str, Any] = {}
    whole_meta: dict[str, Any] = {}
    batch_id = None
    for position, (name, build_frame, group) in enumerate(batches):
        frame = build_frame()
        if frame.shape[1] == 0:
            frame = pd.DataFrame(index=pd.RangeIndex(columns.rows))
        # All expectations at once: adding them one by one re-serialises the suite each time (quadratic).
        suite = context.suites.add(
            gx.ExpectationSuite(name=name, expectations=[_expectation(rule) for rule in group])
        )
        batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("whole_batch")
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{name}_validation", data=batch, suite=suite)
        )
        with _without_batch_fingerprints():
            result = definition.run(
                batch_parameters={"dataframe": frame},
                result_format={"result_format": "COMPLETE"},
                run_id=RunIdentifier(run_name=run_name),
            )
        if position == 0:
            whole_meta, batch_id = dict(result.meta), result.batch_id
        for item in result.results:
            by_rule[item.expectation_config.meta["rule"]] = item
    # The context holds every batch and its computed metrics in reference cycles: free them now,
    # before the clean rows are built (hundreds of MB at a million rows).
    del context, source, frame, result
    gc.collect()
    ordered = [by_rule[rule.name] for rule in _gx_order(rules)]
    # GX's own statistics of a results list, as one run computes them.
    statistics = calc_validation_statistics(ordered)
    return ExpectationSuiteValidationResult(
        success=statistics.success,
        results=ordered,
        suite_name=suite_name,
        statistics={
            "evaluated_expectations": statistics.evaluated_expectations,
            "successful_expectations": statistics.successful_expectations,
            "unsuccessful_expectations": statistics.unsuccessful_expectations,
            "success_percent": statistics.success_percent,
        },
        meta=whole_meta,
        batch_id=batch_id,
    )


def render_data_docs(gx_result: Any) -> str:
    """GX's own Data Docs page for one validation result (the page its site builder would write)."""
    # GX exports these without `__all__`, and its render() is untyped: public API all the same.
    from great_expectations.render.renderer import ValidationResultsPageRenderer  # type: ignore[attr-defined]
    from great_expectations.render.view import DefaultJinjaPageView  # type: ignore[attr-defined]

    # GX's renderer refuses numpy scalars as observed values (num_to_str): hand it Python numbers.
    for item in gx_result.results:
        observed = (item.result or {}).get("observed_value")
        if isinstance(observed, np.generic):
            item.result["observed_value"] = observed.item()

    page = ValidationResultsPageRenderer().render(gx_result)
    return str(DefaultJinjaPageView().render(page))  # type: ignore[no-untyped-call]


def _example(value: Any) -> str:
    """An unexpected value for a report: missing values as None, whatever form the column held."""
    missing = value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))
    return "None" if missing else repr(value)


def _rule_results(rules: list[Rule], gx_result: Any) -> Iterator[tuple[Rule, RuleResult, list[int]]]:
    by_name = {rule.name: rule for rule in rules}
    for item in gx_result.results:
        rule = by_name[item.expectation_config.meta["rule"]]
        result = item.result or {}
        indices = [int(i) for i in result.get("unexpected_index_list") or []]
        detail = ""
        if item.exception_info and item.exception_info.get("raised_exception"):
            detail = f"could not run: {item.exception_info.get('exception_message')}"
        elif "observed_value" in result and not item.success:
            detail = f"observed {result['observed_value']}"
        elif not item.success and result.get("partial_unexpected_list"):
            examples = ", ".join(_example(v) for v in result["partial_unexpected_list"][:5])
            detail = f"e.g. {examples}"
        count = int(result.get("unexpected_count") or len(indices))
        yield rule, RuleResult(rule.name, rule.policy, bool(item.success), count, detail), indices


def _clean_columns(columns: CheckedColumns, kept_rows: np.ndarray, spec: ModelSpec) -> pd.DataFrame:
    """Id, typed features and typed target of the rows that passed, typed as `features_frame` does
    (and the sample weights and evaluation-only columns beside them)."""
    inputs: dict[str, Any] = {}
    for name, feature in spec.features.items():
        if name in columns.numbers:
            inputs[name] = columns.numbers[name][kept_rows]  # parsed once, in `checked_columns`
        elif feature.type == "category":
            # Dictionary-encoded: `features_frame` converts each category once, not every row.
            inputs[name] = columns.checked[name].iloc[kept_rows].reset_index(drop=True)
        else:
            text = columns.checked[text_column(name) if feature.type == "boolean" else name]
            inputs[name] = _nan_text(text.iloc[kept_rows])
    # Copies of whole columns are most of this function's cost (5M rows: ~0.1 s each): the inputs
    # frame holds the arrays as they are, and the other columns are added beside the features.
    typed = features_frame(pd.DataFrame(inputs, copy=False), spec)
    # Ids as str objects, a missing one as "nan" (the word `astype(str)` gives it).
    ids = columns.checked[spec.id_column].iloc[kept_rows].to_numpy(dtype=object, na_value="nan")
    typed.insert(0, spec.id_column, ids)
    typed[spec.target] = _typed_labels(columns.checked[spec.target].iloc[kept_rows], spec)
    if (weights := spec.training.sample_weight_column) is not None:
        typed[weights] = columns.numbers[weights][kept_rows]
    for name in spec.evaluation_columns:  # as text, for the fairness gates' groups
        if name in columns.checked:  # absent only where the schema policy let it be
            typed[name] = _nan_text(columns.checked[name].iloc[kept_rows])
    return typed


def _typed_labels(text: pd.Series, spec: ModelSpec) -> np.ndarray:
    """`typed_target` of dictionary-encoded text, computed once per distinct label (same values)."""
    if not isinstance(text.dtype, pd.CategoricalDtype) or text.isna().any():
        return typed_target(pd.Series(_nan_text(text)), spec).to_numpy()
    used = text.cat.remove_unused_categories()
    labels = typed_target(pd.Series(used.cat.categories, dtype=object), spec).to_numpy()
    return labels[used.cat.codes.to_numpy()]


def _nan_text(text: pd.Series) -> np.ndarray:
    """Categorical text as str objects with NaN where missing: the form of a frame read from CSV."""
    return text.astype(object).where(text.notna(), np.nan).to_numpy()


def validate_frame(
    frame: pd.DataFrame | pa.Table, spec: ModelSpec, run_name: str = "validation"
) -> ValidationOutcome:
    """Validate one batch (text: a snapshot's table, or a frame) against the spec's generated suite
    and apply each rule's policy."""
    started = time.perf_counter()
    table = text_table(frame)
    rules = build_rules(spec, set(table.column_names))
    log.info("validating %d rows of %s against %d rules", table.num_rows, spec.name, len(rules))
    columns = checked_columns(table, spec)
    del table, frame  # everything from here on reads the checked columns
    log.info("parsed the typed columns in %.1f s", time.perf_counter() - started)
    gx_result = run_suite(columns, rules, suite_name=spec.name, run_name=run_name)
    log.info("Great Expectations ran the suite: %.1f s so far", time.perf_counter() - started)

    results: list[RuleResult] = []
    failures: list[str] = []
    warnings: list[str] = []
    reasons: dict[int, list[str]] = {}
    for rule, outcome, indices in _rule_results(rules, gx_result):
        results.append(outcome)
        if outcome.success:
            continue
        described = (
            f"{rule.name} ({outcome.unexpected_count} rows{', ' + outcome.detail if outcome.detail else ''})"
        )
        if outcome.unexpected_count == 0 and outcome.detail:
            described = f"{rule.name} ({outcome.detail})"
        if rule.policy == "fail":
            failures.append(described)
        elif rule.policy == "warn":
            warnings.append(described)
        elif indices:
            for index in indices:
                reasons.setdefault(index, []).append(rule.name)
        else:
            # A table-level rule (or one that could not run) has no rows to move: it cannot be quarantined.
            failures.append(f"{described}: table-level rule with policy quarantine")

    quarantined_index = sorted(reasons)
    quarantined = pd.DataFrame(
        {name: _nan_text(text.iloc[quarantined_index]) for name, text in columns.raw.items()}
    )
    order = {rule.name: position for position, rule in enumerate(rules)}
    quarantined[REASONS_COLUMN] = [
        ";".join(sorted(reasons[i], key=order.__getitem__)) for i in quarantined_index
    ]
    kept = np.ones(columns.rows, dtype=bool)
    kept[quarantined_index] = False

    rows = columns.rows
    share = len(quarantined_index) / rows if rows else 0.0
    if share > spec.validation.max_quarantine_share:
        broken = sorted(
            (r for r in results if r.violated and r.policy == "quarantine"), key=lambda r: -r.unexpected_count
        )
        named = "; ".join(
            f"{r.name}: {r.unexpected_count} rows" + (f" ({r.detail})" if r.detail else "")
            for r in broken[:3]
        )
        hint = ""
        if spec.is_classification and any(r.name == f"type:{spec.target}" for r in broken):
            hint = (
                f". The labels of {spec.target} are not integers: list them in target.classes "
                "(text, integers or booleans) to use them as they are"
            )
        failures.append(
            f"{len(quarantined_index)} of {rows} rows ({share:.1%}) broke quarantine rules, "
            f"over the limit of {spec.validation.max_quarantine_share:.1%}"
            + (f" (most: {named})" if named else "")
            + hint
        )
    clean = pd.DataFrame()
    if not any(r.name.startswith("schema:") and r.violated for r in results):
        clean = _clean_columns(columns, np.flatnonzero(kept), spec)
        if not failures and len(clean) < spec.validation.min_rows:
            failures.append(
                f"only {len(clean)} clean rows left, fewer than min_rows {spec.validation.min_rows}"
            )
    data_docs = render_data_docs(gx_result)
    log.info(
        "validated %d rows in %.1f s: %d quarantined, %d clean, %s",
        rows,
        time.perf_counter() - started,
        len(quarantined_index),
        len(clean),
        "passed" if not failures else "refused",
    )
    return ValidationOutcome(
        model=spec.name,
        rules=results,
        row_count=rows,
        quarantined=quarantined.reset_index(drop=True),
        clean=clean,
        failure_reasons=failures,
        warnings=warnings,
        gx_result=gx_result.to_json_dict(),
        data_docs_html=data_docs,
        max_quarantine_share=spec.validation.max_quarantine_share,
    )


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    # Quarantined rows keep their original text so nothing about the defect is lost.
    frame.astype(object).where(frame.notna(), None).astype("string").to_parquet(buffer, index=False)
    return buffer.getvalue()


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True, default=_json_default).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def publish_validation(
    outcome: ValidationOutcome, store: ObjectStore, model: str, run_id: str
) -> ValidationArtifacts:
    """Write the GX result, the summary, the Data Docs page and (if any) the quarantined rows."""
    summary = outcome.summary()
    quarantine_uri = None
    if outcome.quarantined_count:
        store.write_bytes(layout.quarantine_rows_key(model, run_id), _parquet_bytes(outcome.quarantined))
        reason = {
            "model": model,
            "run_id": run_id,
            "rows": outcome.quarantined_count,
            "share": round(outcome.quarantine_share, 6),
            "batch_passed": outcome.passed,
            "rules": {
                r.name: r.unexpected_count for r in outcome.rules if r.violated and r.policy == "quarantine"
            },
            "validation_result": store.uri(layout.validation_result_key(model, run_id)),
            "explanation": f"each row's `{REASONS_COLUMN}` column names the rules it broke",
        }
        store.write_bytes(layout.quarantine_reason_key(model, run_id), _json_bytes(reason))
        quarantine_uri = store.uri(layout.quarantine_rows_key(model, run_id))
        summary["quarantine_uri"] = quarantine_uri
    store.write_bytes(layout.validation_result_key(model, run_id), _json_bytes(outcome.gx_result))
    store.write_bytes(layout.data_docs_key(model, run_id), outcome.data_docs_html.encode())
    store.write_bytes(layout.validation_summary_key(model, run_id), _json_bytes(summary))
    return ValidationArtifacts(
        result_uri=store.uri(layout.validation_result_key(model, run_id)),
        summary_uri=store.uri(layout.validation_summary_key(model, run_id)),
        data_docs_uri=store.uri(layout.data_docs_key(model, run_id)),
        quarantine_uri=quarantine_uri,
        quarantined_count=outcome.quarantined_count,
    )


def rule_names(outcome: ValidationOutcome) -> list[str]:
    """Names of the rules that did not hold."""
    return [r.name for r in outcome.rules if r.violated]
