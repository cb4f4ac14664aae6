"""Log a trained candidate to MLflow with its lineage: the run the registry registers it from.

One run per training: the params and metrics (and a child run per candidate of a search), the
snapshot it was trained on as the run's dataset (its sha256 as the digest, the schema from the
clean columns' dtypes), the code and library versions, and the model in skops format trusting
exactly the types its pipeline is made of. The artifact's sha256 is recorded on the run; the
registry (`registry.register_candidate`, `registry.load_verified`) checks every load against it.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlops_pipeline.ingest import SnapshotManifest
from mlops_pipeline.registry import LoggedCandidate, RegistryError, artifact_file, file_sha256
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.training import TrainResult, features_frame

if TYPE_CHECKING:
    from mlflow.data.dataset import Dataset
    from mlflow.types import Schema

# The longest digest MLflow stores for a dataset: its `datasets.digest` column is String(36)
# (mlflow/store/tracking/dbmodels/models.py, MLflow 3); a longer one fails on PostgreSQL.
DATASET_DIGEST_CHARS = 36
# skops refuses to load types it was not told to trust. We trust exactly the types our own
# pipeline is made of, and only if they come from these libraries (checked at log time).
_TRUSTED_TYPE_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")
# The run artifact holding the spec as used (`spec_record`).
SPEC_ARTIFACT = "spec.json"


def code_version(configured: str | None = None) -> str:
    """The code version to record: configured, else the git commit of this checkout, else 'unknown'."""
    if configured:
        return configured
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return completed.stdout.strip() or "unknown"


def package_versions(estimator_package: str = "sklearn") -> dict[str, str]:
    """Versions of the libraries a model depends on at serving time (with its estimator's package)."""
    import mlflow
    import numpy
    import scipy
    import sklearn
    import skops

    import mlops_pipeline

    extra = {}
    if estimator_package not in ("sklearn", "mlops_pipeline"):
        from importlib import metadata

        extra[estimator_package] = metadata.version(estimator_package)
    return {
        **extra,
        "scikit-learn": sklearn.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
        "skops": skops.__version__,
        "mlflow": mlflow.__version__,
        "mlops-pipeline": mlops_pipeline.__version__,
    }


# The lock file of the environment, beside the package's folder (include/), in a checkout and in the
# image (the Dockerfile copies it to /opt/airflow/uv.lock).
LOCK_FILE = Path(__file__).resolve().parents[2] / "uv.lock"


def lock_sha256(lock_file: Path = LOCK_FILE) -> str:
    """The sha256 of the lock file the environment was installed from; 'unknown' without one."""
    return file_sha256(lock_file) if lock_file.is_file() else "unknown"


def spec_record(spec: ModelSpec) -> tuple[dict[str, Any], str]:
    """The spec as used, in JSON form (what `ModelSpec.model_validate` reads back), and its sha256
    over the canonical JSON: logged with every candidate so it can be rebuilt with exactly it."""
    import hashlib

    used = spec.model_dump(mode="json", by_alias=True)
    return used, hashlib.sha256(json.dumps(used, sort_keys=True).encode()).hexdigest()


def declared_packages(spec: ModelSpec) -> tuple[str, ...]:
    """The packages whose types a spec's pipeline may hold beyond ours: estimator and feature code."""
    from mlops_pipeline.feature_code import user_package

    user = user_package(spec)
    return (spec.estimator.package, *([user] if user else []))


def trusted_types(pipeline: Any, packages: tuple[str, ...] = ("sklearn",)) -> list[str]:
    """The skops types of `pipeline`, refusing any type outside the libraries we trust: ours, and
    the packages the spec declares (its estimator's, one of `spec.TRUSTED_ESTIMATOR_PACKAGES`, and
    its own feature code's)."""
    import skops.io

    prefixes = (*_TRUSTED_TYPE_PREFIXES, *(f"{package}." for package in packages))
    types = sorted(skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)))
    if foreign := [name for name in types if not name.startswith(prefixes)]:
        raise RegistryError(f"pipeline holds types skops should not trust: {foreign}")
    return types


def _mlflow_type(dtype: Any) -> str:
    """The MLflow column type of a pandas dtype (MLflow's own names: double, long, string, ...)."""
    from pandas.api import types

    if isinstance(dtype, pd.CategoricalDtype):
        return "string"  # categories are labels; the snapshot holds them as text
    if types.is_bool_dtype(dtype):
        return "boolean"
    if types.is_integer_dtype(dtype):
        return "integer" if types.is_signed_integer_dtype(dtype) and dtype.itemsize <= 4 else "long"
    if types.is_float_dtype(dtype):
        return "double" if dtype.itemsize >= 8 else "float"
    if types.is_datetime64_any_dtype(dtype):
        return "datetime"
    # object and string columns (ids, text, categories); anything else is recorded as the text the
    # snapshot (CSV) holds it as.
    return "string"


@dataclass(frozen=True)
class CleanColumns:
    """What the logged dataset says of the clean rows: their columns' dtypes, how many rows, and
    which columns miss a value somewhere. Known without the rows at hand: the train step holds
    only the training side and the columns the model reads."""

    dtypes: dict[str, Any]  # column name -> pandas dtype, in the data's order
    rows: int
    columns_with_missing: frozenset[str]

    @classmethod
    def of_frame(cls, frame: pd.DataFrame) -> CleanColumns:
        """The description of `frame` itself (one vectorised pass for the missing values)."""
        return cls(
            dtypes={str(name): dtype for name, dtype in frame.dtypes.items()},
            rows=len(frame),
            columns_with_missing=frozenset(columns_with_missing(frame)),
        )


def columns_with_missing(frame: pd.DataFrame) -> list[str]:
    """The columns of `frame` with a missing value, in order (one vectorised pass)."""
    return [str(name) for name in frame.columns[frame.isna().any().to_numpy()]]


def frame_schema(frame: pd.DataFrame | CleanColumns) -> Schema:
    """The MLflow schema of `frame` from its dtypes: one column spec per column, in order.

    No value is inspected in Python (MLflow's own inference walks every value of an object column:
    ~40 s at 1M rows); `required` is whether the column has no missing value.
    """
    from mlflow.types import ColSpec, DataType, Schema

    columns = CleanColumns.of_frame(frame) if isinstance(frame, pd.DataFrame) else frame
    return Schema(
        [
            ColSpec(
                type=DataType[_mlflow_type(dtype)],
                name=name,
                required=name not in columns.columns_with_missing,
            )
            for name, dtype in columns.dtypes.items()
        ]
    )


def snapshot_dataset(
    clean: pd.DataFrame | CleanColumns, spec: ModelSpec, snapshot: SnapshotManifest
) -> Dataset:
    """The training dataset as logged to MLflow: source the snapshot's URI, digest its sha256 (cut
    to MLflow's limit), the schema of the clean columns, and the clean row count as its profile.

    Built from the manifest and the dtypes, with no Python-level pass over the values.
    """
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    described = CleanColumns.of_frame(clean) if isinstance(clean, pd.DataFrame) else clean
    rows, columns = described.rows, len(described.dtypes)

    class SnapshotDataset(MetaDataset):
        """A MetaDataset with a profile (MetaDataset logs none): the row and cell counts, as
        MLflow's pandas dataset records them, so the MLflow UI shows the size of the data."""

        @property
        def profile(self) -> dict[str, int]:
            return {"num_rows": rows, "num_elements": rows * columns}

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    return SnapshotDataset(
        source=resolve_dataset_source(snapshot.data_uri),
        name=f"{spec.name}@{snapshot.as_of}",
        digest=snapshot.sha256[:DATASET_DIGEST_CHARS],
        schema=frame_schema(described),
    )


def log_candidate(
    result: TrainResult,
    spec: ModelSpec,
    snapshot: SnapshotManifest,
    clean: pd.DataFrame,
    training_metrics: dict[str, float],
    *,
    run_tags: dict[str, str],
    code: str,
    training_metrics_rows: int | None = None,
    clean_columns: CleanColumns | None = None,
) -> LoggedCandidate:
    """Log params, metrics, the dataset (with its sha256 as digest), versions and the model to a new run.

    `clean`: the clean rows, or the training rows (at least the columns the model reads) with
    `clean_columns` describing all the clean rows.

    `training_metrics_rows`: how many training rows `training_metrics` were computed on (logged as
    the param `train_metrics_rows`, when they are a sample).
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.models import Model, infer_signature

    from mlops_pipeline.model_file import DETERMINISTIC_SKLEARN

    experiment = mlflow.set_experiment(spec.name)
    features = features_frame(clean.head(200), spec)
    versions = package_versions(spec.estimator.package)
    with mlflow.start_run(experiment_id=experiment.experiment_id, tags=run_tags) as run:
        mlflow.log_params(result.params)
        mlflow.log_params({"train_rows": result.train_rows, "holdout_rows": result.holdout_rows})
        if training_metrics_rows is not None:
            mlflow.log_param("train_metrics_rows", training_metrics_rows)
        mlflow.log_metrics({**training_metrics, "fit_seconds": result.fit_seconds})
        mlflow.log_input(snapshot_dataset(clean_columns or clean, spec, snapshot), context="training")
        for candidate in result.search or []:
            # Every candidate of the search, as a child run: its parameters and cross-validated score.
            with mlflow.start_run(
                experiment_id=experiment.experiment_id,
                run_name=f"search candidate {candidate.rank}",
                nested=True,
                tags={**run_tags, "mlops.search_rank": str(candidate.rank)},
            ):
                mlflow.log_params(candidate.params)
                mlflow.log_metrics(
                    {
                        f"cv_{spec.gates.primary_metric}": candidate.mean_score
                        * (1 if spec.metric_higher_is_better(spec.gates.primary_metric) else -1),
                        "cv_std": candidate.std_score,
                        "rank": float(candidate.rank),
                    }
                )
        used_spec, spec_sha256 = spec_record(spec)
        mlflow.log_dict(used_spec, SPEC_ARTIFACT)
        mlflow.set_tags(
            {
                "code_version": code,
                "spec_sha256": spec_sha256,
                "lock_sha256": lock_sha256(),
                "data_sha256": snapshot.sha256,
                "data_uri": snapshot.data_uri,
                "data_as_of": snapshot.as_of,
                **{f"version.{name}": version for name, version in versions.items()},
            }
        )
        output = result.pipeline.predict_proba(features) if spec.is_classification else None
        signature = infer_signature(
            features, output if output is not None else result.pipeline.predict(features)
        )
        # MLflow's sklearn flavor, the skops file made canonical (model_file.py): the same pipeline
        # always gives the same bytes, so a rebuilt model's sha256 can equal the logged one.
        info = Model.log(
            artifact_path=None,  # MLflow 3: the logged model's `name` instead
            name="model",
            flavor=DETERMINISTIC_SKLEARN,
            flavor_name="mlflow.sklearn",
            sk_model=result.pipeline,
            serialization_format="skops",
            skops_trusted_types=trusted_types(result.pipeline, declared_packages(spec)),
            signature=signature,
            input_example=features.head(5),
            # Explicit requirements: inference costs seconds per call and may guess wrong.
            pip_requirements=[
                f"{name}=={version}" for name, version in versions.items() if name != "mlops-pipeline"
            ],
            pyfunc_predict_fn="predict_proba" if spec.is_classification else "predict",
        )
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=tmp))
            model_file = artifact_file(local)
            sha = file_sha256(model_file)
            size_mb = model_file.stat().st_size / 1e6
        mlflow.set_tags({"artifact_sha256": sha, "model_uri": info.model_uri})
        mlflow.log_metric("model_size_mb", size_mb)
    return LoggedCandidate(
        run_id=run.info.run_id,
        model_id=info.model_id,
        model_uri=info.model_uri,
        artifact_sha256=sha,
        model_size_mb=size_mb,
        experiment_id=experiment.experiment_id,
    )
