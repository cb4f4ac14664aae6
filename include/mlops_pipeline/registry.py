"""The MLflow model registry: register logged candidates, load versions verified, move `champion`.

A candidate comes from `candidates.log_candidate`, which records its artifact's sha256: a version
is loaded only once its artifact matches it, and scored only once its input signature also fits
the spec (`verify_artifact`).

Aliases, not stages (stages are deprecated in MLflow 3): `challenger` marks the newest version
that passed its gates, `champion` the one being served. Every move of `champion` is appended to a
promotion history in the object store (one create-only object per event, so the history is
append-only even on S3) and mirrored as tags on the model version. A promotion is claimed per DAG
run before the alias moves, so a retried promote task (its worker died) moves and records it once.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mlops_pipeline import layout
from mlops_pipeline.faults import pause_point
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.store import ObjectExistsError, ObjectStore
from mlops_pipeline.training import NUMERIC_FEATURE_TYPES

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
CHALLENGER = "challenger"
# Set on a version when a rollback moves `champion` away from it: it is never made champion again
# (no ping-pong); a new training run gives a new version.
ROLLED_BACK_AT = "rolled_back_at"


class ArtifactIntegrityError(RuntimeError):
    """A model artifact's sha256 differs from the one recorded at registration."""


class RegistryError(RuntimeError):
    """A registry operation that cannot be done as asked (e.g. rollback with no target)."""


def import_model_format() -> None:
    """Import skops.io, the models' format, before MLflow, in a process that saves or loads a model.

    skops.io's import looks every scipy ufunc up in every module loaded so far (`whichmodule` over
    `sys.modules`, in `skops.io._trusted_types`), so each of MLflow's ~2,000 modules loaded first
    makes it slower: importing skops.io then MLflow took 2.9-3.8 s, the other order 4.2-4.3 s
    (fresh processes, this machine).
    """
    import skops.io  # noqa: F401


def connect(tracking_uri: str) -> MlflowClient:
    """Point MLflow at the tracking/registry server and return a client for it."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def configured_client() -> MlflowClient:
    """A client of the configured tracking/registry server (MLFLOW_TRACKING_URI): how every task gets one."""
    from mlops_pipeline.settings import get_settings

    return connect(get_settings().mlflow_tracking_uri)


# Here, not with `candidates.log_candidate` that makes one: `register_candidate` takes it, and
# candidates.py imports this module (never the other way round).
@dataclass(frozen=True)
class LoggedCandidate:
    """A trained pipeline logged to MLflow (not yet registered)."""

    run_id: str
    model_id: str  # MLflow 3 logged-model id; the registry needs it to create a version from it
    model_uri: str
    artifact_sha256: str
    model_size_mb: float
    experiment_id: str


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in blocks: a model artifact's, recorded when it is logged and
    checked before it is loaded."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_file(local_model_dir: Path) -> Path:
    """The serialized model file named by the MLmodel's sklearn flavor: the artifact whose sha256
    is recorded."""
    mlmodel = yaml.safe_load((local_model_dir / "MLmodel").read_text())
    return local_model_dir / mlmodel["flavors"]["sklearn"]["pickled_model"]


def _download_verified(model_uri: str, expected_sha256: str, destination: str) -> Path:
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=destination))
    actual = file_sha256(artifact_file(local))
    if actual != expected_sha256:
        raise ArtifactIntegrityError(
            f"refusing to load {model_uri}: artifact sha256 {actual} != recorded {expected_sha256}"
        )
    return local


class SignatureMismatch(RegistryError):
    """The model's input signature does not fit the features the spec describes."""


def check_signature(signature: Any, spec: ModelSpec, model_uri: str) -> None:
    """Refuse a model whose logged input signature differs from the spec's features (names, order
    or types): a spec edited since the model was trained would feed it the wrong columns."""
    if signature is None or signature.inputs is None:
        raise SignatureMismatch(
            f"{model_uri} has no input signature: it cannot be checked against {spec.name}"
        )
    model = [(col.name, col.type.name) for col in signature.inputs.inputs]
    # What `features_frame` hands the model, as MLflow names it: float64 is "double", str "string".
    wanted = [
        (name, "double" if feature.type in NUMERIC_FEATURE_TYPES else "string")
        for name, feature in spec.features.items()
    ]
    if model == wanted:
        return
    model_names, wanted_names = [n for n, _ in model], [n for n, _ in wanted]
    problems = []
    if missing := [n for n in model_names if n not in wanted_names]:
        problems.append(f"the model needs {missing}, which the spec lacks")
    if extra := [n for n in wanted_names if n not in model_names]:
        problems.append(f"the spec adds {extra}, unknown to the model")
    types = dict(model)
    if changed := [f"{n}: {types[n]} -> {t}" for n, t in wanted if n in types and types[n] != t]:
        problems.append(f"types changed ({', '.join(changed)})")
    if not problems:
        problems.append(f"the order differs (model {model_names}, spec {wanted_names})")
    raise SignatureMismatch(
        f"{model_uri} does not fit the spec of {spec.name}: {'; '.join(problems)}. "
        "Retrain it with this spec, or pin a version trained with it."
    )


def verify_artifact(model_uri: str, expected_sha256: str, spec: ModelSpec | None = None) -> None:
    """Download a model and check its artifact's sha256 (and, given `spec`, its input signature
    against the spec's features), without deserializing it."""
    with tempfile.TemporaryDirectory() as tmp:
        local = _download_verified(model_uri, expected_sha256, tmp)
        if spec is not None:
            from mlflow.models import Model

            check_signature(Model.load(str(local)).signature, spec, model_uri)


def load_verified(model_uri: str, expected_sha256: str) -> Any:
    """Download a model, check its artifact's sha256, and only then deserialize it."""
    import warnings

    with tempfile.TemporaryDirectory() as tmp:
        local = _download_verified(model_uri, expected_sha256, tmp)
        # skops looks up every scipy ufunc in every loaded module; Airflow's deprecated import
        # paths answer each lookup with a FutureWarning: ~1,000 log lines and tens of seconds a load.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            import mlflow.sklearn

            return mlflow.sklearn.load_model(str(local))


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version an alias points to, or None if the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if "not found" in str(exc).lower() or "RESOURCE_DOES_NOT_EXIST" in str(exc):
            return None
        raise


def expected_sha256(version: ModelVersion) -> str:
    """The artifact sha256 recorded on a registered version."""
    expected = version.tags.get("artifact_sha256")
    if not expected:
        raise ArtifactIntegrityError(f"{version.name} v{version.version} has no artifact_sha256 tag")
    return str(expected)


def scoring_version(client: MlflowClient, model: str, pinned: str | None) -> ModelVersion:
    """The version to score with: `pinned` if given (it must exist), else the `champion`."""
    if pinned is not None:
        return existing_version(client, model, pinned)
    champion = alias_version(client, model, CHAMPION)
    if champion is None:
        raise RegistryError(f"{model} has no champion yet: train and promote a model first, or pin a version")
    return champion


def load_version(client: MlflowClient, version: ModelVersion) -> Any:
    """Load a registered version after checking its artifact against its `artifact_sha256` tag."""
    return load_verified(f"models:/{version.name}/{version.version}", expected_sha256(version))


def register_candidate(
    client: MlflowClient,
    spec: ModelSpec,
    candidate: LoggedCandidate,
    *,
    data_sha256: str,
    gate_report_uri: str,
    extra_tags: dict[str, str],
) -> ModelVersion:
    """Register a candidate that passed its gates and point `challenger` at it; once per training run.

    A retry registers nothing twice: an attempt whose `create_model_version` reached MLflow but
    whose answer was lost (a timeout while the server was stalled, a worker that died) left a
    version for the candidate's run, which the retry finds and reuses. A create that MLflow carries
    out late (it queued the timed-out request and processed it on resuming) can still add a second
    version next to this attempt's; after creating, the run's versions are looked up again and only
    the lowest one is kept, the others deleted. Every attempt keeps the lowest, so however the
    creates interleave they agree on one version, and no other attempt can have promoted a higher
    one (promotion follows a successful register, which returns the lowest).
    """
    import mlflow

    try:
        client.create_registered_model(spec.name, description=spec.description)
    except mlflow.exceptions.MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    tags = {
        "artifact_sha256": candidate.artifact_sha256,
        "data_sha256": data_sha256,
        "gate_report_uri": gate_report_uri,
        "gates_passed": "true",
        "training_run_id": candidate.run_id,
        **extra_tags,
    }
    versions = versions_of_run(client, spec.name, candidate.run_id)
    if not versions:
        client.create_model_version(
            name=spec.name,
            source=candidate.model_uri,
            run_id=candidate.run_id,
            model_id=candidate.model_id,
            tags=tags,
        )
        versions = versions_of_run(client, spec.name, candidate.run_id)
    if not versions:  # the create answered, so the version exists: the search must see it
        raise RegistryError(f"{spec.name}: the version just created for run {candidate.run_id} is not found")
    kept, *extra = versions
    for duplicate in extra:
        client.delete_model_version(spec.name, duplicate.version)
    # A reused version was created by an earlier attempt with the same tags in the same request;
    # set only what differs (nothing, unless the earlier attempt was given other extra tags).
    for key, value in tags.items():
        if kept.tags.get(key) != value:
            client.set_model_version_tag(spec.name, kept.version, key, value)
    client.set_registered_model_alias(spec.name, CHALLENGER, kept.version)
    return client.get_model_version(spec.name, kept.version)


def versions_of_run(client: MlflowClient, model: str, run_id: str) -> list[ModelVersion]:
    """The versions of `model` registered from training run `run_id`, lowest version first.

    (Neither needs quoting in the filter: model names are lowercase identifiers (the spec checks
    them) and MLflow run ids are hex.)
    """
    found = client.search_model_versions(f"name = '{model}' AND run_id = '{run_id}'")
    return sorted(found, key=lambda version: int(version.version))


@dataclass(frozen=True)
class PromotionRecord:
    """One decision on the `champion` alias: a move (promote, rollback), or a promotion refused
    by a person or their silence (reject: the alias stayed, `to_version` is the refused candidate)."""

    action: str  # "promote", "rollback" or "reject"
    model: str
    from_version: str | None
    to_version: str
    actor: str
    dag_run_id: str
    at: str
    reason: str
    gate_report_uri: str | None
    data_sha256: str | None

    def to_json(self) -> bytes:
        """Stable JSON bytes."""
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()


def promotion_history(store: ObjectStore, model: str) -> list[PromotionRecord]:
    """Every recorded move of `champion`, oldest first."""
    return [
        PromotionRecord(**json.loads(store.read_bytes(key)))
        for key in store.list(layout.promotion_history_prefix(model))
        if key.endswith(".json")
    ]


def _append_history(store: ObjectStore, record: PromotionRecord) -> str:
    """Append with a create-only write: two writers cannot both take the same sequence number."""
    for _ in range(10):
        sequence = len(promotion_history(store, record.model)) + 1
        key = layout.promotion_record_key(record.model, sequence)
        try:
            store.create_only(key, record.to_json())
        except ObjectExistsError:
            continue
        return store.uri(key)
    raise RegistryError(f"could not append to the promotion history of {record.model}: too much contention")


def _move_champion(
    client: MlflowClient, store: ObjectStore, record: PromotionRecord, *, already_there: bool = False
) -> PromotionRecord:
    """Point `champion` at the record's version (unless `already_there`), tag it, append the record."""
    if not already_there:
        client.set_registered_model_alias(record.model, CHAMPION, record.to_version)
    # The process-death test kills a promotion here: the alias moved, no record yet.
    pause_point(f"{record.action}_alias_moved")
    client.set_model_version_tag(record.model, record.to_version, f"{record.action}d_at", record.at)
    client.set_model_version_tag(record.model, record.to_version, f"{record.action}d_by", record.actor)
    _append_history(store, record)
    return record


def promote(
    client: MlflowClient,
    store: ObjectStore,
    version: ModelVersion,
    *,
    actor: str,
    dag_run_id: str,
    at: str,
    reason: str = "passed its gates",
) -> PromotionRecord:
    """Point `champion` at `version` and record who, when and why; once per DAG run.

    Idempotent per (`dag_run_id`, version), so that a retry of a promote task whose worker died
    mid-way neither moves the alias twice nor writes a second history record. Before the alias
    moves, the promotion is claimed with a create-only record (`layout.promotion_claim_key`)
    holding the champion it replaces; a retry finds the claim and carries on from it:

    - history record already written: nothing is done, the recorded promotion is returned;
    - alias moved but no record yet: the alias is left alone (it points at `version`) and the
      record is written with the champion of *before* the move (from the claim, not the alias);
    - nothing moved yet: the promotion is done as the first attempt would have done it.
    """
    if version.tags.get("gates_passed") != "true":
        raise RegistryError(f"{version.name} v{version.version} did not pass its gates; refusing to promote")
    current = alias_version(client, version.name, CHAMPION)
    record = PromotionRecord(
        action="promote",
        model=version.name,
        from_version=str(current.version) if current else None,
        to_version=str(version.version),
        actor=actor,
        dag_run_id=dag_run_id,
        at=at,
        reason=reason,
        gate_report_uri=version.tags.get("gate_report_uri"),
        data_sha256=version.tags.get("data_sha256"),
    )
    claim_key = layout.promotion_claim_key(record.model, dag_run_id, record.to_version)
    try:
        store.create_only(claim_key, record.to_json())
    except ObjectExistsError:
        # A retry: the first attempt's view of the move is the one to record.
        # The history holds exactly the claimed record once the first attempt got that far.
        record = PromotionRecord(**json.loads(store.read_bytes(claim_key)))
        if record in promotion_history(store, record.model):
            return record
    _refuse_rolled_back(version)
    already_there = current is not None and str(current.version) == record.to_version
    return _move_champion(client, store, record, already_there=already_there)


def record_refusal(
    client: MlflowClient,
    store: ObjectStore,
    version: ModelVersion,
    *,
    actor: str,
    dag_run_id: str,
    at: str,
    reason: str,
) -> PromotionRecord:
    """Write a refused promotion of `version` to the promotion history (once per version) and take
    `challenger` from it when it still holds the alias: the champion does not move."""
    model, number = version.name, str(version.version)
    for recorded in promotion_history(store, model):
        if recorded.action == "reject" and recorded.to_version == number:
            return recorded  # a retry
    current = alias_version(client, model, CHAMPION)
    record = PromotionRecord(
        action="reject",
        model=model,
        from_version=str(current.version) if current else None,
        to_version=number,
        actor=actor,
        dag_run_id=dag_run_id,
        at=at,
        reason=reason,
        gate_report_uri=version.tags.get("gate_report_uri"),
        data_sha256=version.tags.get("data_sha256"),
    )
    _append_history(store, record)
    challenger = alias_version(client, model, CHALLENGER)
    if challenger is not None and str(challenger.version) == number:
        client.delete_registered_model_alias(model, CHALLENGER)
    return record


def _refuse_rolled_back(version: ModelVersion) -> None:
    """A version a rollback moved `champion` away from is not made champion again."""
    if at := version.tags.get(ROLLED_BACK_AT):
        reason = version.tags.get("rolled_back_reason", "")
        raise RegistryError(
            f"{version.name} v{version.version} was rolled back at {at} ({reason}); it is not made champion "
            "again: train a new version"
        )


def existing_version(client: MlflowClient, model: str, version: str) -> ModelVersion:
    """`model` v`version` from the registry; RegistryError naming it when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(model, version)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
            raise RegistryError(f"{model} v{version} does not exist in the registry") from exc
        raise


def rollback(
    client: MlflowClient,
    store: ObjectStore,
    model: str,
    *,
    to_version: str | None,
    actor: str,
    dag_run_id: str,
    at: str,
    reason: str,
) -> PromotionRecord:
    """Move `champion` back to `to_version`, or to the champion before the current one."""
    current = alias_version(client, model, CHAMPION)
    if current is None:
        raise RegistryError(f"{model} has no champion to roll back")
    if to_version is None:
        previous = [
            r.from_version for r in promotion_history(store, model) if r.to_version == str(current.version)
        ]
        candidates = [v for v in previous if v and v != str(current.version)]
        # The champion before the current one, unless a rollback already moved away from it.
        usable = [v for v in candidates if not existing_version(client, model, v).tags.get(ROLLED_BACK_AT)]
        if not usable:
            raise RegistryError(
                f"{model} v{current.version} has no previous champion in the promotion history"
                + (
                    f" that was not rolled back ({', '.join(f'v{v}' for v in candidates)} were)"
                    if candidates
                    else ""
                )
            )
        to_version = usable[-1]
    target = existing_version(client, model, str(to_version))
    _refuse_rolled_back(target)
    if target.tags.get("gates_passed") != "true":
        raise RegistryError(f"{model} v{to_version} never passed its gates; refusing to make it champion")
    if str(to_version) == str(current.version):
        raise RegistryError(f"{model} v{to_version} is already the champion")
    record = PromotionRecord(
        action="rollback",
        model=model,
        from_version=str(current.version),
        to_version=str(to_version),
        actor=actor,
        dag_run_id=dag_run_id,
        at=at,
        reason=reason,
        gate_report_uri=target.tags.get("gate_report_uri"),
        data_sha256=target.tags.get("data_sha256"),
    )
    moved = _move_champion(client, store, record)
    client.set_model_version_tag(model, record.from_version, ROLLED_BACK_AT, at)
    client.set_model_version_tag(model, record.from_version, "rolled_back_reason", reason[:500])
    return moved
