"""Airflow plugin: from a task instance of `<model>__train` to its Data Docs, gate report and MLflow run.

* Three extra links (buttons on the task instance's Details tab): "Data Docs" on `validate`,
  "Gate report" on `evaluate`, "MLflow run" on `train`/`evaluate`/`register`/`promote`.
* A small FastAPI app under `/mlops` that serves those reports from the object store (file:// or
  s3://, which a browser cannot open from an http page) and redirects to the MLflow UI. It sits
  behind Airflow's own authentication and DAG permissions (the UI's session cookie or a bearer
  token), because plugin apps are not protected by default.

Reports are found by the run id alone (see `mlops_pipeline.layout`), so the links also work for
the runs that matter most: a refused batch or a failed gate, whose tasks returned nothing.
"""

from __future__ import annotations

import json
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
    from airflow.sdk.types import TaskInstanceKey

app = FastAPI(title="MLOps pipeline reports", docs_url=None, redoc_url=None)
URL_PREFIX = "/mlops"


def _model_of(dag_id: str) -> str:
    model, _, kind = dag_id.rpartition("__")
    if not model or kind != "train":
        raise HTTPException(404, f"{dag_id} is not a training DAG of this project")
    return model


def _read_report(key: str) -> bytes:
    from mlops_pipeline.airflow_glue import task_store

    store = task_store()
    if not store.exists(key):
        raise HTTPException(404, f"{store.uri(key)} does not exist (the task may not have run yet)")
    return store.read_bytes(key)


@app.get(
    "/runs/{dag_id}/{run_id}/data-docs",
    dependencies=[Depends(requires_access_dag("GET"))],
    summary="The Great Expectations Data Docs page of a training run's validation",
)
def data_docs(dag_id: str, run_id: str) -> Response:
    """Serve the run's GX Data Docs page from the object store."""
    return Response(_read_report(layout.data_docs_key(_model_of(dag_id), run_id)), media_type="text/html")


@app.get(
    "/runs/{dag_id}/{run_id}/gate-report",
    dependencies=[Depends(requires_access_dag("GET"))],
    summary="The gate report of a training run",
)
def gate_report(dag_id: str, run_id: str) -> Response:
    """Serve the run's gate report (HTML) from the object store."""
    return Response(_read_report(layout.gate_report_key(_model_of(dag_id), run_id)), media_type="text/html")


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
