"""The store layout: every key the package writes comes from `mlops_pipeline.layout`, and the keys
of different runs, models, days and kinds never collide."""

from __future__ import annotations

import ast
import hashlib
import itertools
import re
from datetime import date
from pathlib import Path

import pytest

from mlops_pipeline import layout

PACKAGE = Path(layout.__file__).resolve().parent
SHA = "ab" * 32


def test_the_layout_documented_at_the_top_is_the_one_the_functions_build() -> None:
    """Every top-level folder the docstring names is one the functions produce, and vice versa."""
    built = {
        layout.snapshot_data_key("m", date(2026, 3, 1), SHA),
        layout.validation_result_key("m", "r"),
        layout.quarantine_rows_key("m", "r"),
        layout.gate_report_key("m", "r"),
        layout.manifest_key(layout.PREDICTIONS, "m", "2026-03-01"),
        layout.manifest_key(layout.SHADOW, "m", "2026-03-01"),
        layout.verdict_key("m", "2026-03-01"),
        layout.promotion_record_key("m", 1),
    }
    documented = set(re.findall(r"^([a-z_]+)/<model>/", layout.__doc__ or "", flags=re.M))
    assert {key.split("/", 1)[0] for key in built} == documented


def test_run_ids_become_one_safe_segment_and_keep_runs_apart() -> None:
    """Airflow run ids (with ':' and '+') become one key segment; two runs never share a folder."""
    scheduled = "scheduled__2026-03-01T00:00:00+00:00"
    manual = "manual__2026-03-01T00:00:00+00:00"
    key = layout.gate_report_key("churn", scheduled, "json")
    digest = hashlib.sha256(scheduled.encode()).hexdigest()[: layout.RUN_SEGMENT_HASH_CHARS]
    assert key == f"reports/churn/scheduled__2026-03-01T00_00_00_00_00-{digest}/gate_report.json"
    assert layout.reports_prefix("churn", scheduled) != layout.reports_prefix("churn", manual)
    with pytest.raises(ValueError, match="key segment"):
        layout.validation_prefix("churn", "::")


def test_every_kind_of_key_of_one_run_is_distinct() -> None:
    """The keys one training, scoring and monitoring run writes are pairwise distinct."""
    keys = [
        layout.validation_result_key("m", "r"),
        layout.validation_summary_key("m", "r"),
        layout.data_docs_key("m", "r"),
        layout.clean_rows_key("m", "r", "train"),
        layout.clean_rows_key("m", "r", "holdout"),
        layout.quarantine_rows_key("m", "r"),
        layout.quarantine_reason_key("m", "r"),
        layout.score_quarantine_part_key(layout.quarantine_prefix("m", "r"), 0),
        layout.score_quarantine_reason_key("m", "r"),
        layout.gate_report_key("m", "r", "json"),
        layout.gate_report_key("m", "r", "html"),
        layout.drift_report_key("m", "r", "data_drift", "html"),
        layout.drift_report_key("m", "r", "prediction_drift", "html"),
        layout.monitoring_summary_key("m", "r"),
    ]
    assert len(set(keys)) == len(keys)


def test_partition_keys_nest_under_their_partition() -> None:
    """Manifest, generations and staged parts of a day all live under that day's partition only."""
    area, model, ds = layout.PREDICTIONS, "churn", "2026-03-01"
    prefix = layout.partition_prefix(area, model, ds)
    for key in (
        layout.manifest_key(area, model, ds),
        layout.generation_key(area, model, ds, 3),
        layout.part_key(area, model, ds, "run:1", 7),
    ):
        assert key.startswith(prefix + "/")
    assert layout.generation_key(area, model, ds, 3).endswith("/_manifests/000003.json")
    assert layout.part_key(area, model, ds, "run:1", 7) == f"{prefix}/_runs/run_1/part-00007.parquet"
    # A retry's part is its own file in the run's folder, beside whatever its killed try left.
    assert layout.part_key(area, model, ds, "run:1", 7, attempt=1) == layout.part_key(
        area, model, ds, "run:1", 7
    )
    assert (
        layout.part_key(area, model, ds, "run:1", 7, attempt=2)
        == f"{prefix}/_runs/run_1/part-00007-try2.parquet"
    )
    # Publish's re-scored part is named after the part it replaces; the id hashes sit beside the parts.
    assert layout.rescored_part_key(layout.part_key(area, model, ds, "run:1", 7, attempt=2)) == (
        f"{prefix}/_runs/run_1/part-00007-try2-unique.parquet"
    )
    assert (
        layout.id_hashes_key(model, ds, "run:1", 7, attempt=2) == f"{prefix}/_runs/run_1/ids-00007-try2.npy"
    )
    assert layout.id_hashes_key(model, ds, "run:1", 7) == f"{prefix}/_runs/run_1/ids-00007.npy"
    assert not layout.partition_prefix(layout.SHADOW, model, ds).startswith(prefix)
    days = [layout.partition_prefix(area, model, f"2026-03-{d:02d}") for d in (1, 10, 11)]
    for first, second in itertools.permutations(days, 2):
        assert not second.startswith(first + "/")


def test_a_promotion_claim_is_per_run_and_version_and_outside_the_history() -> None:
    """The claim of one run's promotion is no history record, and runs that read alike claim apart."""
    key = layout.promotion_claim_key("churn", "manual__2026-03-01T00:00:00+00:00", "3")
    assert not key.startswith(layout.promotion_history_prefix("churn") + "/")
    assert key.endswith("-v3.json")
    assert key != layout.promotion_claim_key("churn", "manual__2026-03-01T00_00_00_00_00", "3")
    assert key != layout.promotion_claim_key("churn", "manual__2026-03-01T00:00:00+00:00", "4")


def test_snapshots_are_content_addressed_per_day() -> None:
    """Two contents of one day, or one content on two days, get different snapshot folders."""
    one = layout.snapshot_prefix("m", date(2026, 3, 1), "a" * 64)
    other = layout.snapshot_prefix("m", date(2026, 3, 1), "b" * 64)
    next_day = layout.snapshot_prefix("m", date(2026, 3, 2), "a" * 64)
    assert len({one, other, next_day}) == 3
    assert layout.snapshot_manifest_key("m", date(2026, 3, 1), "a" * 64) == f"{one}/manifest.json"


def _key_literals(path: Path) -> list[tuple[int, str]]:
    """String literals (and the constant parts of f-strings) that start like a store key of ours."""
    tops = ("raw/", "validation/", "quarantine/", "reports/", "predictions/", "predictions_shadow/")
    tops += ("monitoring/", "registry/")
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(tops):
            found.append((node.lineno, node.value))
    return found


def test_no_module_but_layout_writes_a_key_literal() -> None:
    """Every store key has one home: no other package module spells a key of the layout."""
    offenders = {
        str(path.relative_to(PACKAGE)): literals
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "layout.py" and (literals := _key_literals(path))
    }
    assert offenders == {}
