"""Every environment variable the package reads, in one place, read lazily and never at import time.

Small classes, because their readers differ in what they may require and how often they read:

* :class:`Settings`: what a task needs (store, MLflow); the two required variables fail loudly by
  name. Read once per process (:func:`get_settings`).
* :class:`ParseSettings`: what parsing the DAG files needs (where the specs are). Nothing is
  required, so a scheduler without the tasks' settings still parses.
* :class:`AlertSettings` and :class:`MetricsSettings`: where alerts and metrics go; read when one is
  sent, and never required (unset: logged, or not pushed).
* :class:`S3Settings`: endpoint and region for S3 clients opened without an Airflow connection
  (the `mlops example-data` command, benchmarks, the native stack).
* :class:`DemoSettings`: what a person sets for `mlops demo` / `mlops stack`, from the environment
  and the project's `.env` file.

Fault injection (:func:`fault_point`, and the pauses of `faults.pause_point`) is read on every
call: tests switch it on and off within one process. Every variable is documented in
`.env.example` except those two test-only ones.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

FAULT_POINT_VAR = "MLOPS_FAULT_POINT"
FAULT_PAUSE_VAR = "MLOPS_FAULT_PAUSE"
WORKER_NAME_VAR = "MLOPS_WORKER_NAME"


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


class ParseSettings(BaseSettings):
    """What parsing the DAG files reads: nothing in it is required."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore", env_ignore_empty=True)

    models_dir: Path | None = Field(
        default=None, description="Folder of the model specs; unset: include/models of the checkout."
    )


class AlertSettings(BaseSettings):
    """Where alerts go and where people look; read when an alert is sent or a link is served."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore", env_ignore_empty=True)

    alert_http_conn_id: str | None = Field(
        default=None, description="Airflow HTTP connection of the alert webhook; unset: no webhook."
    )
    alert_http_endpoint: str = Field(
        default="", description="Path on that connection's host alerts are POSTed to."
    )
    alert_smtp_conn_id: str | None = Field(
        default=None, description="Airflow SMTP connection alerts are emailed through; unset: no email."
    )
    alert_email_to: str = Field(default="", description="Who the alert emails go to (comma-separated).")
    alert_email_from: str = Field(default="mlops-pipeline@localhost", description="The alert emails' sender.")
    alert_webhook_url: str | None = Field(
        default=None, description="No longer read: alerts go through connections (MLOPS_ALERT_HTTP_CONN_ID)."
    )

    def email_recipients(self) -> list[str]:
        """MLOPS_ALERT_EMAIL_TO as a list."""
        return [part.strip() for part in self.alert_email_to.split(",") if part.strip()]

    mlflow_ui_url: str | None = Field(
        default=None, description="The MLflow UI people open; unset: MLFLOW_TRACKING_URI when it is http(s)."
    )
    mlflow_tracking_uri: str | None = Field(default=None, validation_alias="MLFLOW_TRACKING_URI")

    def mlflow_ui(self) -> str | None:
        """The MLflow UI's address, or None when neither setting is an http(s) URL."""
        url = self.mlflow_ui_url or self.mlflow_tracking_uri or ""
        return url.rstrip("/") if url.startswith(("http://", "https://")) else None


class MetricsSettings(BaseSettings):
    """Where runs push their figures for Prometheus (see :mod:`mlops_pipeline.telemetry`); read at each push."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore", env_ignore_empty=True)

    pushgateway_url: str | None = Field(
        default=None,
        description="Prometheus Pushgateway, e.g. http://127.0.0.1:9091; unset: nothing is pushed.",
    )
    pushgateway_timeout: float = Field(
        default=5.0, gt=0, le=120, description="Seconds a push waits before it gives up (the run goes on)."
    )


class S3Settings(BaseSettings):
    """Endpoint and region of S3 clients opened from the environment (no Airflow connection)."""

    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True)

    endpoint_url: str | None = Field(default=None, validation_alias="MLOPS_S3_ENDPOINT_URL")
    region: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_DEFAULT_REGION", "AWS_REGION")
    )
    # botocore waits 60 s to connect and 60 s for each read, per attempt, and cannot be told
    # otherwise through the environment (AWS_MAX_ATTEMPTS and AWS_RETRY_MODE it does read).
    timeout: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        validation_alias="MLOPS_S3_TIMEOUT",
        description="Seconds an S3 request waits to connect, and for each read, before it fails (and is retried).",
    )


class FaultSettings(BaseSettings):
    """Fault injection for the reliability tests (never set in production)."""

    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True)

    fault_point: str | None = Field(default=None, validation_alias=FAULT_POINT_VAR)
    fault_pause: str | None = Field(default=None, validation_alias=FAULT_PAUSE_VAR)


def fault_point_requested() -> str | None:
    """The fault point the environment asks for now (read on every call)."""
    return FaultSettings().fault_point


def fault_pause_requested() -> str | None:
    """The pause point the environment asks for now (read on every call; see `faults.pause_point`)."""
    return FaultSettings().fault_pause


class WorkerSettings(BaseSettings):
    """The Celery worker's name in the native stack (see `devtools.native_stack.worker_hostname`)."""

    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True)

    worker_name: str | None = Field(default=None, validation_alias=WORKER_NAME_VAR)


class DemoSettings(BaseSettings):
    """What a person sets for `mlops demo` and `mlops stack`: the environment first, then `.env`.

    Empty values count as unset (`.env.example` lists every name with an empty value).
    """

    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True, env_file_encoding="utf-8")

    airflow_port: int = Field(default=8080, ge=1, le=65535, validation_alias="AIRFLOW_PORT")
    mlflow_port: int = Field(default=5000, ge=1, le=65535, validation_alias="MLFLOW_PORT")
    airflow_admin_password: str | None = Field(default=None, validation_alias="AIRFLOW_ADMIN_PASSWORD")
    airflow_viewer_password: str | None = Field(default=None, validation_alias="AIRFLOW_VIEWER_PASSWORD")
    # Passed through to the tasks when set.
    mlops_code_version: str | None = Field(default=None, validation_alias="MLOPS_CODE_VERSION")
    mlops_models_dir: str | None = Field(default=None, validation_alias="MLOPS_MODELS_DIR")
