"""Exact reproduction: rebuild a registered version from its lineage and prove it is the same model.

Every candidate is logged with what rebuilding it needs (`candidates.log_candidate`): the
snapshot it was trained on (`data_uri`, `data_sha256`), the spec as used (the run's `spec.json`,
`spec_sha256`), the seed (in the spec), the code version, the lock file's sha256 and the package
versions. :func:`reproduce_version` reads them back, validates and splits the snapshot as the
train DAG did, fits the pipeline again, and checks, in this order:

1. the recorded spec is there and unchanged (its sha256);
2. the snapshot is there and unchanged (its sha256);
3. the holdout predictions of the rebuilt pipeline are bit-identical to the registered one's;
4. the rebuilt model file's sha256 equals the registered artifact's (the file is deterministic:
   `model_file.py`).

The report names the first check that failed and, when the data and spec held but the model
differs, what differs in the environment between then and now (code version, lock file, package
versions): the likely cause. The comparisons are pure functions; I/O is in `reproduce_version`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.store import ObjectStore

# The tags of a training run that describe its environment, compared with the environment now.
ENVIRONMENT_TAGS = ("code_version", "lock_sha256")
PACKAGE_TAG_PREFIX = "version."


@dataclass(frozen=True)
class ReproductionCheck:
    """One comparison between the registered version and its rebuild."""

    name: str  # one of CHECK_ORDER, or `validation` when the snapshot no longer passes it
    passed: bool
    detail: str


@dataclass(frozen=True)
class ReproductionReport:
    """Whether a version was rebuilt exactly, each check, and what changed in the environment."""

    model: str
    version: str
    training_run_id: str
    checks: list[ReproductionCheck] = field(default_factory=list)
    environment_differences: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """True when every check passed (all four ran)."""
        return len(self.checks) == len(CHECK_ORDER) and all(check.passed for check in self.checks)

    @property
    def first_difference(self) -> str | None:
        """The first failed check, with the environment's differences when they are the likely cause."""
        failed = next((check for check in self.checks if not check.passed), None)
        if failed is None:
            return None
        message = f"{failed.name}: {failed.detail}"
        if failed.name in MODEL_CHECKS:
            causes = "; ".join(self.environment_differences) or "none recorded (same code, lock and packages)"
            message += f". Differences in the environment since training: {causes}"
        return message

    def to_json(self) -> bytes:
        """Stable JSON bytes, with the verdict."""
        body = {**asdict(self), "identical": self.identical, "first_difference": self.first_difference}
        return json.dumps(body, indent=2, sort_keys=True).encode()


CHECK_ORDER = ("spec", "data", "holdout_predictions", "artifact_sha256")
# Checks whose failure, with the spec and data unchanged, the environment explains.
MODEL_CHECKS = ("validation", "holdout_predictions", "artifact_sha256")


def environment_differences(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    """What differs between a training run's environment tags and the environment now (pure).

    Both are tag dictionaries: `code_version`, `lock_sha256`, and `version.<package>`.
    """
    differences = []
    names = [*ENVIRONMENT_TAGS, *sorted({*recorded, *current} - set(ENVIRONMENT_TAGS))]
    for name in names:
        if name not in ENVIRONMENT_TAGS and not name.startswith(PACKAGE_TAG_PREFIX):
            continue
        then, now = recorded.get(name), current.get(name)
        if then != now:
            label = name.removeprefix(PACKAGE_TAG_PREFIX)
            differences.append(f"{label} {then or 'unrecorded'} -> {now or 'absent'}")
    return differences


def compare_predictions(registered: Any, rebuilt: Any) -> ReproductionCheck:
    """Whether two `evaluation.Predictions` of the same rows are bit-identical (labels or values,
    and every class probability); else how many rows differ and by how much (pure)."""
    same_labels = np.array_equal(np.asarray(registered.y_pred), np.asarray(rebuilt.y_pred))
    values = [(registered.y_pred, rebuilt.y_pred)]
    if registered.proba is not None or rebuilt.proba is not None:
        values.append((registered.proba, rebuilt.proba))
    identical = same_labels and all(
        a is not None
        and b is not None
        and np.shape(a) == np.shape(b)
        and np.asarray(a).tobytes() == np.asarray(b).tobytes()
        for a, b in values
    )
    rows = len(registered.y_pred)
    if identical:
        return ReproductionCheck(
            "holdout_predictions", True, f"{rows} holdout rows predicted bit-identically"
        )
    differing = int(np.count_nonzero(np.asarray(registered.y_pred) != np.asarray(rebuilt.y_pred)))
    detail = f"{differing} of {rows} holdout predictions differ"
    if (
        registered.proba is not None
        and rebuilt.proba is not None
        and np.shape(registered.proba) == np.shape(rebuilt.proba)
    ):
        gap = float(np.max(np.abs(np.asarray(registered.proba) - np.asarray(rebuilt.proba)), initial=0.0))
        detail += f"; largest probability difference {gap:.3g}"
    return ReproductionCheck("holdout_predictions", False, detail)


def reproduce_version(client: Any, store: ObjectStore, model: str, version: str) -> ReproductionReport:
    """Rebuild `model` v`version` from its lineage and compare (see the module docstring).

    Raises registry.RegistryError when the version does not exist.
    """
    from mlops_pipeline import candidates, registry
    from mlops_pipeline.ingest import SnapshotIntegrityError, read_snapshot_key, snapshot_key_of_uri
    from mlops_pipeline.settings import get_settings

    registered = registry.existing_version(client, model, version)
    run = client.get_run(registered.run_id)
    tags: dict[str, str] = dict(run.data.tags)
    report = ReproductionReport(model, str(version), str(registered.run_id))
    checks = report.checks

    spec, problem = _recorded_spec(run, tags)
    if spec is None:
        checks.append(ReproductionCheck("spec", False, problem))
        return report
    checks.append(ReproductionCheck("spec", True, f"the spec as used (sha256 {tags['spec_sha256'][:12]}…)"))
    current = {
        "code_version": candidates.code_version(get_settings().code_version),
        "lock_sha256": candidates.lock_sha256(),
        **{
            f"{PACKAGE_TAG_PREFIX}{name}": value
            for name, value in candidates.package_versions(spec.estimator.package).items()
        },
    }
    report.environment_differences.extend(environment_differences(tags, current))

    data_uri, data_sha256 = tags.get("data_uri", ""), tags.get("data_sha256", "")
    key = snapshot_key_of_uri(store, data_uri) if data_uri else None
    try:
        if key is None:
            raise FileNotFoundError(data_uri or "(no data_uri tag)")
        table = read_snapshot_key(store, key, data_sha256)
    except FileNotFoundError:
        checks.append(
            ReproductionCheck(
                "data", False, f"the snapshot {data_uri or '(none recorded)'} is not in {store.root_uri}"
            )
        )
        return report
    except SnapshotIntegrityError as exc:
        checks.append(ReproductionCheck("data", False, f"the snapshot was altered since training: {exc}"))
        return report
    checks.append(
        ReproductionCheck("data", True, f"snapshot {data_uri} matches its sha256 {data_sha256[:12]}…")
    )

    pipeline, holdout = _rebuild(spec, table)
    if pipeline is None:
        checks.append(ReproductionCheck("validation", False, holdout))
        return report
    from mlops_pipeline.evaluation import predict_frame

    recorded_pipeline = registry.load_version(client, registered)
    checks.append(
        compare_predictions(
            predict_frame(recorded_pipeline, holdout, spec), predict_frame(pipeline, holdout, spec)
        )
    )
    checks.append(_compare_artifact(pipeline, spec, registry.expected_sha256(registered)))
    return report


def _recorded_spec(run: Any, tags: dict[str, str]) -> tuple[ModelSpec | None, str]:
    """The spec the run recorded, if it is there and unchanged; else why not."""
    import mlflow
    from pydantic import ValidationError

    from mlops_pipeline.candidates import SPEC_ARTIFACT, spec_record

    if "spec_sha256" not in tags:
        return None, (
            f"training run {run.info.run_id} recorded no spec (trained before specs were recorded): "
            "it cannot be rebuilt exactly"
        )
    try:
        used = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{SPEC_ARTIFACT}")
        spec = ModelSpec.model_validate(used)
    except (OSError, ValueError, ValidationError, mlflow.exceptions.MlflowException) as exc:
        return None, f"the recorded spec {SPEC_ARTIFACT} of run {run.info.run_id} cannot be read: {exc}"
    if (found := spec_record(spec)[1]) != tags["spec_sha256"]:
        return None, f"the recorded spec was changed: sha256 {found} != recorded {tags['spec_sha256']}"
    return spec, ""


def _rebuild(spec: ModelSpec, table: Any) -> tuple[Any, Any]:
    """Validate, split and fit as the train DAG did: (pipeline, holdout rows), or (None, why)."""
    from mlops_pipeline.training import (
        SIDES,
        clean_sides_parquet,
        fit_train_rows,
        model_columns,
        read_clean_side,
    )
    from mlops_pipeline.validation import validate_frame

    outcome = validate_frame(table, spec, run_name="reproduction")
    if not outcome.passed:
        return None, f"the snapshot no longer passes validation: {outcome.failure_reason}"
    sides = clean_sides_parquet(outcome.clean, spec)
    assert tuple(sides) == SIDES
    train_rows, _ = read_clean_side(sides["train"][0], model_columns(spec, evaluation=False))
    holdout, _ = read_clean_side(sides["holdout"][0], model_columns(spec, evaluation=True))
    return fit_train_rows(train_rows, spec, sides["holdout"][1]).pipeline, holdout


def _compare_artifact(pipeline: Any, spec: ModelSpec, expected: str) -> ReproductionCheck:
    from mlops_pipeline.candidates import declared_packages, trusted_types
    from mlops_pipeline.model_file import save_pipeline
    from mlops_pipeline.registry import file_sha256

    with tempfile.TemporaryDirectory() as tmp:
        model_file = save_pipeline(
            pipeline, Path(tmp) / "model", trusted_types(pipeline, declared_packages(spec))
        )
        rebuilt = file_sha256(model_file)
    if rebuilt == expected:
        return ReproductionCheck(
            "artifact_sha256", True, f"the rebuilt model file has the recorded sha256 {expected}"
        )
    return ReproductionCheck(
        "artifact_sha256", False, f"the rebuilt model file's sha256 {rebuilt} != the registered {expected}"
    )
