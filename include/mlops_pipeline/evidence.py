"""A run's evidence is its own: written under its run's prefixes, never over another run's.

Evidence is what a run leaves for people and for lineage: validation results and Data Docs,
quarantined rows and their reasons, gate and drift reports. MLflow tags and the promotion history
point at it, so replacing it would rewrite the record of a promotion. Two guarantees:

1. **A collision-free place per run**: the prefixes carry `layout.run_segment(run_id)`, a readable
   form of the run id plus a hash of the exact id, so run ids that read alike (`:` vs `_`) never
   share a folder.
2. **First writer owns it**: before writing under a prefix, a step claims it with a create-only
   owner record (`layout.evidence_owner_key`) naming the DAG, the run id and when the run was
   created. A writer with another identity — a run id reused on a new Airflow database, or a
   forged collision — is refused and the files stay as they were. A retry of the same run's task
   (same identity) may replace the files its earlier attempt left half-written.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from mlops_pipeline import layout
from mlops_pipeline.store import ObjectExistsError, ObjectStore


class EvidenceOwnedError(ValueError):
    """The evidence prefix belongs to another run: nothing was written."""


@dataclass(frozen=True)
class EvidenceOwner:
    """Who writes a run's evidence: the DAG, the exact run id and when the run was created."""

    dag_id: str
    run_id: str
    run_after: str

    def to_json(self) -> bytes:
        """The owner record as stored."""
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()


def claim(store: ObjectStore, prefix: str, owner: EvidenceOwner) -> None:
    """Claim `prefix` for `owner` (create-only), or confirm that `owner` holds it already.

    Raises EvidenceOwnedError naming both runs when another run holds the prefix.
    """
    key = layout.evidence_owner_key(prefix)
    try:
        store.create_only(key, owner.to_json())
        return
    except ObjectExistsError:
        pass
    try:
        holder = EvidenceOwner(**json.loads(store.read_bytes(key)))
    except (ValueError, TypeError) as exc:  # unreadable record: nobody can prove it is theirs
        raise EvidenceOwnedError(f"{store.uri(prefix)} has an unreadable owner record; refusing") from exc
    if holder != owner:
        raise EvidenceOwnedError(
            f"{store.uri(prefix)} holds the evidence of run {holder.run_id!r} of {holder.dag_id}"
            f" (created {holder.run_after}); run {owner.run_id!r} of {owner.dag_id}"
            f" (created {owner.run_after}) may not write there. Evidence is never overwritten:"
            " trigger the run under a new run id"
        )
