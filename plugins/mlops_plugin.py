"""Airflow plugin: from a task instance of `<model>__train` to its Data Docs, gate report and MLflow run.

* Three extra links (buttons on the task instance's Details tab): "Data Docs" on `validate`,
  "Gate report" on `evaluate`, "MLflow run" on `train`/`evaluate`/`register`/`promote`.
* A small FastAPI app under `/mlops` that serves those reports from the object store (file:// or
  s3://, which a browser cannot open from an http page) and redirects to the MLflow UI. It sits
  behind Airflow's own authentication and DAG permissions (the UI's session cookie or a bearer
  token), because plugin apps are not protected by default.

Reports are found by the run id alone (see `mlops_pipeline.layout`), so the links also work for
the runs that matter most: a refused batch or a failed gate, whose tasks returned nothing.

What it answers to anything else: 401/403 without a valid login (checked first, for every page;
the app serves no OpenAPI schema or docs page, which would be outside that check), 400 for a DAG
or run id Airflow itself could not have created (see :func:`malformed_id`), and 404 with a plain
sentence, never a server path or store URI, for a report that does not exist.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, cast

from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperator, BaseOperatorLink
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import RedirectResponse, Response

from mlops_pipeline import layout
from mlops_pipeline.steps.results import Candidate

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from airflow.sdk.types import TaskInstanceKey

# No schema or docs: FastAPI would serve them outside the pages' auth dependencies.
app = FastAPI(title="MLOps pipeline reports", openapi_url=None, docs_url=None, redoc_url=None)
URL_PREFIX = "/mlops"

# What Airflow accepts: DAG ids are `[\w.-]+` (airflow.sdk.definitions._internal.node.KEY_REGEX);
# run ids are generated from letters, digits and `_ . : + -`, and chosen ones must match
# `[scheduler] allowed_run_id_pattern` (default below); neither holds ".." unless
# `[core] allow_double_dot_in_ids`, and both fit the metadata DB's 250-character ID column.
ID_MAX_LENGTH = 250
DAG_ID_PATTERN = r"[\w.-]+"
DEFAULT_RUN_ID_PATTERN = r"^[A-Za-z0-9_.~:+-]+$"


def malformed_id(
    kind: str, value: str, patterns: Sequence[str], allow_double_dot: bool = False
) -> str | None:
    """Why `value` cannot be a `kind` ("DAG id", "run id") of Airflow's, or None when it can (pure).

    `value` must match one of `patterns` as a whole (a trailing newline does not pass, unlike
    `re.match` with `$`).
    """
    if not value or len(value) > ID_MAX_LENGTH:
        return f"a {kind} has 1 to {ID_MAX_LENGTH} characters (this one has {len(value)})"
    if ".." in value and not allow_double_dot:
        return f"a {kind} never contains '..'"
    if not any(re.fullmatch(pattern, value, re.ASCII) for pattern in patterns):
        return f"a {kind} is made of letters, digits and _ . ~ : + - only"
    return None


def _checked(dag_id: str, run_id: str) -> None:
    """Refuse (400) ids that Airflow cannot have created, before they reach the store or the DB."""
    double_dot = conf.getboolean("core", "allow_double_dot_in_ids", fallback=False)
    configured = conf.get("scheduler", "allowed_run_id_pattern", fallback="").strip()
    run_id_patterns = [DEFAULT_RUN_ID_PATTERN, *([configured] if configured else [])]
    problem = malformed_id("DAG id", dag_id, [DAG_ID_PATTERN], double_dot) or malformed_id(
        "run id", run_id, run_id_patterns, double_dot
    )
    if problem:
        raise HTTPException(400, f"malformed id: {problem}")


def _model_of(dag_id: str) -> str:
    model, _, kind = dag_id.rpartition("__")
    if not model or kind != "train":
        raise HTTPException(404, f"{dag_id} is not a training DAG of this project")
    return model


def _report_key(dag_id: str, run_id: str, key_of: Callable[[str, str], str]) -> str:
    _checked(dag_id, run_id)
    model = _model_of(dag_id)
    try:
        return key_of(model, run_id)
    except ValueError as exc:  # the layout refuses ids it cannot turn into a key
        raise HTTPException(400, "malformed id: the run id cannot name a report") from exc


def _read_report(key: str, what: str, run_id: str) -> bytes:
    from mlops_pipeline.airflow_glue import task_store

    store = task_store()
    if not store.exists(key):
        # Where it was looked for stays on the server: the store's URI is no business of the reader.
        raise HTTPException(404, f"run {run_id} has no {what} (the task may not have run yet)")
    return store.read_bytes(key)


@app.get(
    "/runs/{dag_id}/{run_id}/data-docs",
    dependencies=[Depends(requires_access_dag("GET"))],
    summary="The Great Expectations Data Docs page of a training run's validation",
)
def data_docs(dag_id: str, run_id: str) -> Response:
    """Serve the run's GX Data Docs page from the object store."""
    key = _report_key(dag_id, run_id, layout.data_docs_key)
    return Response(_read_report(key, "Data Docs", run_id), media_type="text/html")


@app.get(
    "/runs/{dag_id}/{run_id}/gate-report",
    dependencies=[Depends(requires_access_dag("GET"))],
    summary="The gate report of a training run",
)
def gate_report(dag_id: str, run_id: str) -> Response:
    """Serve the run's gate report (HTML) from the object store."""
    key = _report_key(dag_id, run_id, layout.gate_report_key)
    return Response(_read_report(key, "gate report", run_id), media_type="text/html")


def _train_result(dag_id: str, run_id: str) -> Candidate:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=run_id, dag_ids=dag_id, task_ids="train", key="return_value")
        ).first()
        value = XComModel.deserialize_value(row) if row is not None else None
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict) or "run_id" not in value:
        raise HTTPException(404, f"run {run_id} of {dag_id} has not logged a model to MLflow")
    return cast(Candidate, value)


def mlflow_ui_url() -> str:
    """The MLflow UI: MLOPS_MLFLOW_UI_URL, else the tracking URI when it is a server."""
    from mlops_pipeline.settings import AlertSettings

    url = AlertSettings().mlflow_ui()
    if url is None:
        raise HTTPException(404, "no MLflow UI is configured (set MLOPS_MLFLOW_UI_URL)")
    return url


@app.get(
    "/runs/{dag_id}/{run_id}/mlflow-run",
    dependencies=[Depends(requires_access_dag("GET"))],
    summary="Redirect to the MLflow run that a training run logged",
)
def mlflow_run(dag_id: str, run_id: str) -> RedirectResponse:
    """Redirect to the run's candidate in the MLflow UI."""
    _checked(dag_id, run_id)
    _model_of(dag_id)
    result = _train_result(dag_id, run_id)
    return RedirectResponse(
        f"{mlflow_ui_url()}/#/experiments/{result['experiment_id']}/runs/{result['run_id']}", status_code=307
    )


class _RunReportLink(BaseOperatorLink):
    """A link from some tasks of a `<model>__train` run to one of the plugin's pages."""

    name = ""
    page = ""
    task_ids: frozenset[str] = frozenset()

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The page for this task instance, or "" (no button) for tasks it does not apply to."""
        if ti_key.task_id not in self.task_ids or not ti_key.dag_id.endswith("__train"):
            return ""
        base = conf.get("api", "base_url", fallback="").rstrip("/")
        return f"{base}{URL_PREFIX}/runs/{ti_key.dag_id}/{ti_key.run_id}/{self.page}"


class DataDocsLink(_RunReportLink):
    """Great Expectations Data Docs of the run's validation."""

    name = "Data Docs"
    page = "data-docs"
    task_ids = frozenset({"validate"})


class GateReportLink(_RunReportLink):
    """The run's gate report."""

    name = "Gate report"
    page = "gate-report"
    task_ids = frozenset({"evaluate"})


class MLflowRunLink(_RunReportLink):
    """The candidate's MLflow run."""

    name = "MLflow run"
    page = "mlflow-run"
    task_ids = frozenset({"train", "evaluate", "register", "promote"})


class MLOpsPlugin(AirflowPlugin):
    """Registers the report pages and the links to them."""

    name = "mlops"
    # AirflowPlugin declares these as plain (mutable) attributes; a ClassVar would not override them.
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "MLOps pipeline reports"}]  # noqa: RUF012
    global_operator_extra_links = [DataDocsLink(), GateReportLink(), MLflowRunLink()]  # noqa: RUF012
