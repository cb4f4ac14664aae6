"""The Airflow plugin's report pages, in Airflow's real API server app (in process): login first,
400 for ids Airflow could not have created, 404 bodies without server paths, no schema or docs.

The pages' happy path against a real training run is in tests/e2e/test_train_lifecycle.py; the
same refusals through the API server as a process are in tests/system/test_rest_api.py.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from mlops_pipeline import layout
from mlops_pipeline.settings import get_settings
from mlops_pipeline.store import LocalStore

REPO = Path(__file__).resolve().parents[2]
RUN_ID = "manual__2026-03-01T00:00:00+00:00"
PAGES = ("data-docs", "gate-report", "mlflow-run")
MALFORMED_RUN_IDS = {
    "..": "%2E%2E",
    "dots": "a..b",
    "long": "r" * 5000,
    "just over the limit": "r" * 251,
    "space": "a%20b",
    "quote": "a%22b",
    "non-ascii": "caf%C3%A9",
}


def load_plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mlops_plugin_under_test", REPO / "plugins/mlops_plugin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_malformed_id_follows_what_airflow_allows() -> None:
    plugin = load_plugin()
    run_patterns = [plugin.DEFAULT_RUN_ID_PATTERN]
    for good in (RUN_ID, "scheduled__2026-03-01T00:00:00+00:00", "my-run_1.2~x", "r" * 250):
        assert plugin.malformed_id("run id", good, run_patterns) is None, good
    for bad, reason in (
        ("", "1 to 250"),
        ("r" * 251, "1 to 250"),
        ("..", "'..'"),
        ("a/b", "letters, digits"),
        ("a b", "letters, digits"),
        ("abc\n", "letters, digits"),  # re.match with `$` would let a trailing newline through
        ("café", "letters, digits"),
    ):
        assert reason in (plugin.malformed_id("run id", bad, run_patterns) or ""), bad
    assert plugin.malformed_id("run id", "a..b", run_patterns, allow_double_dot=True) is None
    assert plugin.malformed_id("DAG id", "churn__train", [plugin.DAG_ID_PATTERN]) is None
    assert plugin.malformed_id("DAG id", "churn:train", [plugin.DAG_ID_PATTERN]) is not None


@pytest.fixture(scope="module")
def store(tmp_path_factory, monkeypatch_module) -> Iterator[LocalStore]:
    """The store the plugin reads, holding one run's gate report."""
    store = LocalStore(tmp_path_factory.mktemp("plugin-store"))
    store.write_bytes(layout.gate_report_key("churn", RUN_ID), b"<html>gate report: PASSED</html>")
    monkeypatch_module.setenv("MLOPS_STORE_URI", store.root_uri)
    monkeypatch_module.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # never contacted
    get_settings.cache_clear()
    yield store
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def api(tmp_path_factory, monkeypatch_module, store):
    """Airflow's API server app with the project's plugin and one admin user; no token by default."""
    from airflow.utils.db import resetdb
    from fastapi.testclient import TestClient

    resetdb()  # the DAG permission check looks up the DAG's team
    passwords = tmp_path_factory.mktemp("auth") / "passwords.json"
    passwords.write_text(json.dumps({"admin": "s3cret-for-tests"}))
    monkeypatch_module.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    monkeypatch_module.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    from airflow.api_fastapi.app import create_app

    client = TestClient(create_app(), follow_redirects=False)
    token = client.post("/auth/token", json={"username": "admin", "password": "s3cret-for-tests"})
    assert token.status_code == 201, token.text
    return client, {"Authorization": f"Bearer {token.json()['access_token']}"}


def test_an_existing_report_is_served_to_a_logged_in_user(api) -> None:
    client, auth = api
    response = client.get(f"/mlops/runs/churn__train/{RUN_ID}/gate-report", headers=auth)
    assert response.status_code == 200 and "PASSED" in response.text


def test_nothing_is_served_without_a_login(api) -> None:
    client, _ = api
    for page in PAGES:
        for run_id in (RUN_ID, "%2E%2E", "r" * 5000):  # the login comes before the id check
            assert client.get(f"/mlops/runs/churn__train/{run_id}/{page}").status_code == 401
            bad_token = {"Authorization": "Bearer not-a-jwt"}
            assert (
                client.get(f"/mlops/runs/churn__train/{run_id}/{page}", headers=bad_token).status_code == 403
            )


def test_no_schema_or_docs_are_served_with_or_without_a_login(api) -> None:
    client, auth = api
    for path in ("/mlops/openapi.json", "/mlops/docs", "/mlops/redoc", "/mlops/docs/oauth2-redirect"):
        for headers in ({}, auth):
            response = client.get(path, headers=headers)
            assert response.status_code == 404, path
            assert "openapi" not in response.text.lower() and "swagger" not in response.text.lower()


@pytest.mark.parametrize("run_id", MALFORMED_RUN_IDS.values(), ids=MALFORMED_RUN_IDS.keys())
@pytest.mark.parametrize("page", PAGES)
def test_malformed_run_ids_are_a_400(api, page, run_id) -> None:
    client, auth = api
    response = client.get(f"/mlops/runs/churn__train/{run_id}/{page}", headers=auth)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("malformed id: a run id")


def test_an_id_that_does_not_even_route_is_a_bare_404(api) -> None:
    client, auth = api
    # Starlette's path segments stop at a newline: no page matches, nothing is said about the id.
    response = client.get("/mlops/runs/churn__train/a%0A/gate-report", headers=auth)
    assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})


@pytest.mark.parametrize("dag_id", ["churn%3Atrain", "d" * 300, "%2E%2E"])
def test_malformed_dag_ids_are_a_400(api, dag_id) -> None:
    client, auth = api
    response = client.get(f"/mlops/runs/{dag_id}/{RUN_ID}/gate-report", headers=auth)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("malformed id: a DAG id")


def test_404_bodies_name_no_server_path_or_uri(api, store) -> None:
    client, auth = api
    for path in (
        "/mlops/runs/churn__train/manual__no-such-run/gate-report",
        "/mlops/runs/churn__train/manual__no-such-run/data-docs",
        "/mlops/runs/churn__train/manual__no-such-run/mlflow-run",
        f"/mlops/runs/churn__rollback/{RUN_ID}/gate-report",
    ):
        response = client.get(path, headers=auth)
        assert response.status_code == 404, path
        body = response.text
        assert str(store.root) not in body and "file:" not in body and "s3:" not in body, body
        assert "/tmp" not in body and str(REPO) not in body, body
    missing = client.get("/mlops/runs/churn__train/manual__no-such-run/gate-report", headers=auth)
    assert (
        missing.json()["detail"]
        == "run manual__no-such-run has no gate report (the task may not have run yet)"
    )
