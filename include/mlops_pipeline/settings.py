"""Infrastructure settings, read from the environment once per process and never at import time."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the pipeline keeps things. Every field is documented in `.env.example`."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore")

    # Aliases so that a missing variable is reported by its environment name; min_length: an empty
    # value is as missing as an absent one (an empty tracking URI would silently mean ./mlruns).
    store_uri: str = Field(
        validation_alias="MLOPS_STORE_URI",
        min_length=1,
        description="Root of the object store: file:///abs/path (embedded) or s3://bucket/prefix (production).",
    )
    mlflow_tracking_uri: str = Field(
        validation_alias="MLFLOW_TRACKING_URI",
        min_length=1,
        description="MLflow tracking and registry server, e.g. http://127.0.0.1:5000.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint for s3:// stores (MinIO, moto); unset for AWS."
    )
    aws_conn_id: str | None = Field(
        default=None,
        description="Airflow connection id holding S3 credentials and endpoint_url; overrides the AWS_* env.",
    )
    evidently_workspace: str | None = Field(
        default=None,
        description=(
            "Local folder of an Evidently workspace; when set, every monitoring window's reports"
            " are added to it (see them with `evidently ui --workspace <folder>`)."
        ),
    )
    code_version: str | None = Field(
        default=None,
        description="Code version recorded with every model (git sha); detected from git if unset.",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process's settings; a missing required variable raises, naming it."""
    return Settings()  # type: ignore[call-arg]  # values come from the environment
