"""The registry against a real MLflow tracking store and registry (SQLite in a temp dir): register,
verified loading, signature checks, promotion and rollback, of a candidate logged as training does."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mlops_pipeline import registry
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.store import LocalStore

from .mlflow_candidate import candidate_fixture, client_fixture, spec_fixture  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def register(client, spec: ModelSpec, candidate: registry.LoggedCandidate):
    """Register `candidate` as the product of a training run of its own (a new MLflow run each
    call), so that each call adds a version: one training run registers one version only."""
    return register_run(client, spec, a_training_run(client, candidate))


def a_training_run(client, candidate: registry.LoggedCandidate) -> registry.LoggedCandidate:
    """`candidate`'s model as logged by another training run (a new, empty MLflow run)."""
    return dataclasses.replace(candidate, run_id=client.create_run(candidate.experiment_id).info.run_id)


def register_run(client, spec: ModelSpec, candidate: registry.LoggedCandidate):
    """Register exactly `candidate` (its own run id), as the `register` task and its retries do."""
    return registry.register_candidate(
        client, spec, candidate, data_sha256="ab" * 32, gate_report_uri="file:///gate.json", extra_tags={}
    )


def test_load_verified_refuses_a_tampered_artifact(candidate: registry.LoggedCandidate) -> None:
    pipeline = registry.load_verified(candidate.model_uri, candidate.artifact_sha256)
    assert hasattr(pipeline, "predict")
    with pytest.raises(registry.ArtifactIntegrityError, match="refusing to load"):
        registry.load_verified(candidate.model_uri, "0" * 64)


def test_register_promote_and_rollback(client, spec: ModelSpec, candidate, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    first = register(client, spec, candidate)
    assert registry.alias_version(client, spec.name, registry.CHALLENGER).version == first.version
    assert first.tags["artifact_sha256"] == candidate.artifact_sha256
    assert registry.alias_version(client, spec.name, registry.CHAMPION) is None

    record = registry.promote(
        client, store, first, actor="alice", dag_run_id="r1", at="2026-03-01T00:00:00+00:00"
    )
    assert (record.from_version, record.to_version) == (None, str(first.version))
    second = register(client, spec, candidate)
    registry.promote(client, store, second, actor="bob", dag_run_id="r2", at="2026-03-02T00:00:00+00:00")
    assert registry.alias_version(client, spec.name, registry.CHAMPION).version == second.version

    back = registry.rollback(
        client,
        store,
        spec.name,
        to_version=None,
        actor="carol",
        dag_run_id="r3",
        at="2026-03-03",
        reason="bad",
    )
    assert back.to_version == str(first.version)
    assert registry.alias_version(client, spec.name, registry.CHAMPION).version == first.version
    history = registry.promotion_history(store, spec.name)
    assert [(h.action, h.actor, h.to_version) for h in history] == [
        ("promote", "alice", str(first.version)),
        ("promote", "bob", str(second.version)),
        ("rollback", "carol", str(first.version)),
    ]
    with pytest.raises(registry.RegistryError, match="already the champion"):
        registry.rollback(
            client,
            store,
            spec.name,
            to_version=first.version,
            actor="x",
            dag_run_id="r4",
            at="t",
            reason="again",
        )
    with pytest.raises(registry.RegistryError, match="does not exist"):
        registry.rollback(
            client, store, spec.name, to_version="999", actor="x", dag_run_id="r5", at="t", reason="typo"
        )


def test_a_version_that_failed_its_gates_is_never_promoted(
    client, spec: ModelSpec, candidate, tmp_path
) -> None:
    version = register(client, spec, candidate)
    client.set_model_version_tag(spec.name, version.version, "gates_passed", "false")
    version = client.get_model_version(spec.name, version.version)
    with pytest.raises(registry.RegistryError, match="did not pass its gates"):
        registry.promote(client, LocalStore(tmp_path), version, actor="a", dag_run_id="r", at="t")


class WorkerDied(BaseException):
    """Stands for a SIGKILL of the worker: nothing after the point it is raised at runs."""


def count_alias_moves(client, monkeypatch) -> list[tuple[str, str, str]]:
    """Record every `set_registered_model_alias` call the client makes from now on."""
    calls: list[tuple[str, str, str]] = []
    real = client.set_registered_model_alias

    def spy(name: str, alias: str, version: str) -> None:
        calls.append((name, alias, str(version)))
        real(name, alias, version)

    monkeypatch.setattr(client, "set_registered_model_alias", spy)
    return calls


def test_a_retry_after_the_alias_moved_writes_the_one_record_and_moves_nothing(
    client, spec: ModelSpec, candidate, tmp_path: Path, monkeypatch
) -> None:
    store = LocalStore(tmp_path)
    before = registry.alias_version(client, spec.name, registry.CHAMPION)
    version = register(client, spec, candidate)
    real_append = registry._append_history

    def die(store_: object, record: registry.PromotionRecord) -> str:
        raise WorkerDied("killed between the alias move and the history record")

    monkeypatch.setattr(registry, "_append_history", die)
    with pytest.raises(WorkerDied):
        registry.promote(
            client, store, version, actor="a", dag_run_id="run-1", at="2026-03-01T00:00:00+00:00"
        )
    assert registry.alias_version(client, spec.name, registry.CHAMPION).version == version.version
    assert registry.promotion_history(store, spec.name) == []

    monkeypatch.setattr(registry, "_append_history", real_append)
    moves = count_alias_moves(client, monkeypatch)
    record = registry.promote(
        client, store, version, actor="a", dag_run_id="run-1", at="2026-03-01T00:00:00+00:00"
    )
    # The record names the champion of before the first attempt's move, not the alias as it is now.
    assert (record.from_version, record.to_version) == (
        str(before.version) if before else None,
        str(version.version),
    )
    assert registry.promotion_history(store, spec.name) == [record]
    assert moves == []  # the alias already pointed at the version: not moved a second time
    assert client.get_model_version(spec.name, version.version).tags["promoted_by"] == "a"


def test_a_retry_after_the_record_was_written_returns_it_and_changes_nothing(
    client, spec: ModelSpec, candidate, tmp_path: Path, monkeypatch
) -> None:
    store = LocalStore(tmp_path)
    previous = register(client, spec, candidate)
    registry.promote(client, store, previous, actor="a", dag_run_id="run-0", at="2026-03-01")
    version = register(client, spec, candidate)
    first = registry.promote(client, store, version, actor="b", dag_run_id="run-1", at="2026-03-02")
    # The champion moves on (a rollback) before a late retry of run-1's promote comes.
    registry.rollback(
        client, store, spec.name, to_version=None, actor="c", dag_run_id="rb-1", at="2026-03-03", reason="bad"
    )
    moves = count_alias_moves(client, monkeypatch)
    again = registry.promote(client, store, version, actor="b", dag_run_id="run-1", at="2026-03-02")
    assert again == first
    assert moves == []
    assert registry.alias_version(client, spec.name, registry.CHAMPION).version == previous.version
    history = registry.promotion_history(store, spec.name)
    assert [(r.action, r.dag_run_id) for r in history] == [
        ("promote", "run-0"),
        ("promote", "run-1"),
        ("rollback", "rb-1"),
    ]


def test_another_run_promoting_the_same_version_is_its_own_promotion(
    client, spec: ModelSpec, candidate, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path)
    version = register(client, spec, candidate)
    registry.promote(client, store, version, actor="a", dag_run_id="run-1", at="2026-03-01")
    registry.promote(client, store, version, actor="a", dag_run_id="run-2", at="2026-03-02")
    assert [r.dag_run_id for r in registry.promotion_history(store, spec.name)] == ["run-1", "run-2"]


def test_history_appends_are_create_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    record = registry.PromotionRecord("promote", "m", None, "1", "a", "r", "t", "why", None, None)
    keys = {registry._append_history(store, record) for _ in range(3)}
    assert len(keys) == 3
    assert [r.to_version for r in registry.promotion_history(store, "m")] == ["1", "1", "1"]


def spec_without(spec: ModelSpec, feature: str, **changes: dict) -> ModelSpec:
    data = spec.model_dump()
    data["features"].pop(feature)
    for name, values in changes.items():
        data["features"][name] = {**data["features"][name], **values}
    return ModelSpec.model_validate(data)


def test_the_logged_signature_is_checked_against_the_spec(
    spec: ModelSpec, candidate: registry.LoggedCandidate
) -> None:
    registry.verify_artifact(candidate.model_uri, candidate.artifact_sha256, spec)

    with pytest.raises(registry.SignatureMismatch, match=r"the model needs \['bmi'\], which the spec lacks"):
        registry.verify_artifact(candidate.model_uri, candidate.artifact_sha256, spec_without(spec, "bmi"))
    retyped = spec_without(spec, "bmi", sex={"type": "integer", "allowed": None})
    with pytest.raises(registry.SignatureMismatch, match=r"types changed \(sex: string -> double\)"):
        registry.verify_artifact(candidate.model_uri, candidate.artifact_sha256, retyped)


def test_a_reordered_spec_or_a_missing_signature_is_refused(
    spec: ModelSpec, candidate: registry.LoggedCandidate
) -> None:
    from mlflow.models import get_model_info

    signature = get_model_info(candidate.model_uri).signature
    data = spec.model_dump()
    data["features"] = dict(reversed(list(data["features"].items())))
    with pytest.raises(registry.SignatureMismatch, match="the order differs"):
        registry.check_signature(signature, ModelSpec.model_validate(data), candidate.model_uri)
    with pytest.raises(registry.SignatureMismatch, match="has no input signature"):
        registry.check_signature(None, spec, candidate.model_uri)


# --- register: one version per training run, however often it is retried ----------------------


class ClientThrough:
    """A real MLflow client with one call replaced (the rest passes through)."""

    def __init__(self, inner, **replaced) -> None:
        self._inner = inner
        self._replaced = replaced

    def __getattr__(self, name: str):
        return self._replaced.get(name) or getattr(self._inner, name)


def test_a_second_register_of_one_training_run_reuses_its_version(client, spec: ModelSpec, candidate) -> None:
    run = a_training_run(client, candidate)
    first = register_run(client, spec, run)
    again = register_run(client, spec, run)
    assert again.version == first.version
    assert [v.version for v in registry.versions_of_run(client, spec.name, run.run_id)] == [first.version]
    assert registry.alias_version(client, spec.name, registry.CHALLENGER).version == first.version


def test_a_retry_after_a_lost_create_answer_finds_the_version_and_creates_none(
    client, spec: ModelSpec, candidate
) -> None:
    """The first attempt's create reached MLflow but its answer was lost (a timeout): the version
    exists, `challenger` was never moved. The retry takes that version and moves `challenger`."""
    challenger_before = register(client, spec, candidate)  # an earlier training run's
    run = a_training_run(client, candidate)

    def create_then_lose_the_answer(**request):
        client.create_model_version(**request)
        raise TimeoutError("read timed out")

    with pytest.raises(TimeoutError):
        register_run(ClientThrough(client, create_model_version=create_then_lose_the_answer), spec, run)
    (left,) = registry.versions_of_run(client, spec.name, run.run_id)
    assert registry.alias_version(client, spec.name, registry.CHALLENGER).version == challenger_before.version

    retry = register_run(client, spec, run)
    assert retry.version == left.version
    assert [v.version for v in registry.versions_of_run(client, spec.name, run.run_id)] == [left.version]
    assert registry.alias_version(client, spec.name, registry.CHALLENGER).version == retry.version
    assert retry.tags["training_run_id"] == run.run_id and retry.tags["gates_passed"] == "true"


@pytest.mark.parametrize("late", ["before", "after"])
def test_a_late_create_of_an_earlier_attempt_leaves_exactly_one_version(
    client, spec: ModelSpec, candidate, late: str
) -> None:
    """MLflow carries out the earlier attempt's timed-out create (it queued the request while it was
    stalled) just `before` or just `after` the retry's own create, which had found no version: two
    versions of one run exist for a moment. The lowest is kept, the other deleted."""
    run = a_training_run(client, candidate)
    created: list[str] = []

    def create_racing_the_late_one(**request):
        if late == "before":
            created.append(client.create_model_version(**request).version)
        version = client.create_model_version(**request)
        created.append(version.version)
        if late == "after":
            created.append(client.create_model_version(**request).version)
        return version

    kept = register_run(ClientThrough(client, create_model_version=create_racing_the_late_one), spec, run)
    assert len(created) == 2 and kept.version == min(created, key=int)
    assert [v.version for v in registry.versions_of_run(client, spec.name, run.run_id)] == [kept.version]
    assert registry.alias_version(client, spec.name, registry.CHALLENGER).version == kept.version
    # A further retry agrees on the same version.
    assert register_run(client, spec, run).version == kept.version


def test_the_versions_of_another_training_run_are_never_reused(client, spec: ModelSpec, candidate) -> None:
    one, other = a_training_run(client, candidate), a_training_run(client, candidate)
    assert register_run(client, spec, one).version != register_run(client, spec, other).version


def test_a_rolled_back_version_is_never_made_champion_again(
    client, spec: ModelSpec, candidate, tmp_path
) -> None:
    store = LocalStore(tmp_path)
    # The registry is the module's: start from no champion, so this history is the whole story.
    if registry.alias_version(client, spec.name, registry.CHAMPION) is not None:
        client.delete_registered_model_alias(spec.name, registry.CHAMPION)
    first = register(client, spec, candidate)
    registry.promote(client, store, first, actor="a", dag_run_id="p1", at="2026-03-01")
    second = register(client, spec, candidate)
    registry.promote(client, store, second, actor="a", dag_run_id="p2", at="2026-03-02")
    registry.rollback(
        client,
        store,
        spec.name,
        to_version=None,
        actor="m",
        dag_run_id="rb",
        at="2026-03-03",
        reason="worse live",
    )
    demoted = client.get_model_version(spec.name, second.version)
    assert (
        demoted.tags[registry.ROLLED_BACK_AT] == "2026-03-03"
        and demoted.tags["rolled_back_reason"] == "worse live"
    )

    with pytest.raises(registry.RegistryError, match="was rolled back at 2026-03-03 \\(worse live\\)"):
        registry.promote(client, store, demoted, actor="a", dag_run_id="p3", at="2026-03-04")
    with pytest.raises(registry.RegistryError, match="not made champion again"):
        registry.rollback(
            client,
            store,
            spec.name,
            to_version=second.version,
            actor="m",
            dag_run_id="rb2",
            at="t",
            reason="back",
        )
    # Rolling back the restored champion does not pick the rolled-back one either: no ping-pong.
    with pytest.raises(
        registry.RegistryError, match=f"that was not rolled back \\(v{second.version} were\\)"
    ):
        registry.rollback(
            client, store, spec.name, to_version=None, actor="m", dag_run_id="rb3", at="t", reason="x"
        )
    assert registry.alias_version(client, spec.name, registry.CHAMPION).version == first.version
