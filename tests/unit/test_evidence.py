"""Evidence is a run's own: collision-free folders, claimed by the first writer, never overwritten."""

from __future__ import annotations

import json

import pytest

from mlops_pipeline import layout
from mlops_pipeline.evidence import EvidenceOwnedError, EvidenceOwner, claim
from mlops_pipeline.store import LocalStore

OWNER = EvidenceOwner("churn__train", "manual__2026-03-10T00:00:00+00:00", "2026-03-10T08:00:00+00:00")


def test_run_ids_that_read_alike_get_distinct_segments() -> None:
    original = "manual__2026-03-10T00:00:00+00:00"
    lookalike = "manual__2026-03-10T00_00_00_00_00"  # what the old sanitisation made of `original`
    assert layout.run_segment(original) != layout.run_segment(lookalike)
    assert layout.run_segment(original).startswith(lookalike + "-")  # still readable
    assert layout.run_segment(original) == layout.run_segment(original)  # the plugin finds it again


def test_a_long_run_id_gets_a_bounded_segment() -> None:
    segment = layout.run_segment("x" * 5000)
    assert len(segment) == 100 + 1 + layout.RUN_SEGMENT_HASH_CHARS
    assert segment != layout.run_segment("x" * 4999)


def test_the_first_writer_owns_the_prefix_and_its_retries_may_write(tmp_path) -> None:
    store = LocalStore(tmp_path)
    claim(store, "reports/churn/a", OWNER)
    claim(store, "reports/churn/a", OWNER)  # a retry of the same run
    record = json.loads(store.read_bytes(layout.evidence_owner_key("reports/churn/a")))
    assert record == {"dag_id": OWNER.dag_id, "run_id": OWNER.run_id, "run_after": OWNER.run_after}


@pytest.mark.parametrize(
    "other",
    [
        EvidenceOwner(OWNER.dag_id, OWNER.run_id, "2026-04-01T00:00:00+00:00"),  # reused id, new database
        EvidenceOwner("churn__monitor", OWNER.run_id, OWNER.run_after),
        EvidenceOwner(OWNER.dag_id, "manual__2026-03-10T00_00_00_00_00", OWNER.run_after),
    ],
)
def test_another_run_is_refused_and_the_record_is_unchanged(tmp_path, other: EvidenceOwner) -> None:
    store = LocalStore(tmp_path)
    claim(store, "reports/churn/a", OWNER)
    before = store.read_bytes(layout.evidence_owner_key("reports/churn/a"))
    with pytest.raises(EvidenceOwnedError, match="never overwritten") as refused:
        claim(store, "reports/churn/a", other)
    assert OWNER.run_id in str(refused.value) and other.run_id in str(refused.value)
    assert store.read_bytes(layout.evidence_owner_key("reports/churn/a")) == before


def test_an_unreadable_owner_record_is_a_refusal(tmp_path) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes(layout.evidence_owner_key("reports/churn/a"), b"<html>")
    with pytest.raises(EvidenceOwnedError, match="unreadable owner record"):
        claim(store, "reports/churn/a", OWNER)
