"""What a run's conf may hold: the params its DAG declares, and nothing else.

Airflow 3.3 validates each *declared* param of a triggered run against its JSON schema (the REST
API answers 400), but it merges conf keys it does not know into the run's params as schema-less
values and accepts them (`SerializedParamsDict.deep_merge` in
`airflow/serialization/definitions/param.py`): a typo such as `to_verison` would silently fall
back to the default. So the first task of every DAG checks the conf with :func:`refuse_unknown_conf`
before it does anything, and the run fails, not retried, naming the keys it refused.

Also the bounds the param schemas share (`dags/model_dags.py`), kept here so the tests and the
DAG factory use one definition. Pure and light: no Airflow, no pandas.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mlops_pipeline.steps import StepRejected

__all__ = [
    "DATE_PATTERN",
    "MAX_MODEL_VERSION",
    "MAX_REASON_LENGTH",
    "MAX_ROLLBACK_REASON",
    "ConfCheck",
    "inspect_conf",
    "refuse_unknown_conf",
]

# MLflow stores a model version in an SQL `Integer` column (int4 on PostgreSQL, the compose
# stack's backend): a larger number can name no version, and a 20-digit one, accepted while the
# schema had no maximum, killed the task before it could log a word. The API now refuses it.
MAX_MODEL_VERSION = 2_147_483_647
# ISO dates only (`format: date` alone also lets Python 3.11's fromisoformat read "20260301").
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# A reason is a sentence for the promotion history or the run's conf, not a document.
MAX_REASON_LENGTH = 2000
# A rollback's reason (recorded in the promotion history and on the version).
MAX_ROLLBACK_REASON = 500
# How much of a refused key the failure message quotes: a key can be as long as the request.
_SHOWN_KEY_CHARS = 60
_SHOWN_KEYS = 10


@dataclass(frozen=True)
class ConfCheck:
    """The outcome of checking a run's conf against the DAG's declared params."""

    unknown: tuple[str, ...]  # sorted
    allowed: tuple[str, ...]  # sorted

    @property
    def ok(self) -> bool:
        """True when every key of the conf is a declared param."""
        return not self.unknown

    def message(self, dag_id: str) -> str:
        """An operator's explanation of the refusal, with the keys that are allowed."""
        shown = [_shorten(key) for key in self.unknown[:_SHOWN_KEYS]]
        more = len(self.unknown) - len(shown)
        listed = ", ".join(shown) + (f" and {more} more" if more > 0 else "")
        allowed = ", ".join(self.allowed) or "none"
        return (
            f"{dag_id} does not know the conf key{'s' if len(self.unknown) > 1 else ''} {listed}; "
            f"its params are: {allowed}. Nothing was done: trigger it again without "
            f"{'them' if len(self.unknown) > 1 else 'it'} (check the spelling)."
        )


def _shorten(key: str) -> str:
    text = repr(key)
    return text if len(text) <= _SHOWN_KEY_CHARS else f"{text[: _SHOWN_KEY_CHARS - 5]}…' ({len(key)} chars)"


def inspect_conf(conf: Mapping[str, object] | None, allowed: Iterable[str]) -> ConfCheck:
    """Compare a run's conf with the DAG's declared params (pure; an empty conf is always fine)."""
    declared = set(allowed)
    unknown = sorted(str(key) for key in (conf or {}) if key not in declared)
    return ConfCheck(unknown=tuple(unknown), allowed=tuple(sorted(declared)))


def refuse_unknown_conf(conf: Mapping[str, object] | None, allowed: Iterable[str], dag_id: str) -> None:
    """Raise :class:`StepRejected` naming every conf key that is not one of `allowed`."""
    result = inspect_conf(conf, allowed)
    if not result.ok:
        raise StepRejected(result.message(dag_id))
