"""Unit tests of our REST client's request building, parsing and error mapping.

The server side is an `httpx.MockTransport` answering with bodies shaped like Airflow 3.3's; this
proves what *our* code does with them. That Airflow really answers so is proven by
tests/system/test_rest_api.py against a real API server.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from mlops_pipeline.devtools.airflow_client import (
    AirflowApiError,
    AirflowClient,
    AirflowNotFoundError,
    DagImportFailedError,
    DagRunTimeoutError,
    error_detail,
    render_log_content,
)

BASE = "http://127.0.0.1:8080"
RUN_ID = "manual__2026-03-01T10:00:00.123456+00:00"


def run_body(state: str = "queued", run_id: str = RUN_ID) -> dict:
    return {
        "dag_id": "churn__train",
        "dag_run_id": run_id,
        "state": state,
        "run_type": "manual",
        "conf": {"as_of": "2026-02-28"},
        "logical_date": None,
        "start_date": "2026-03-01T10:00:01Z",
        "end_date": None,
    }


def make_client(
    handler: Callable[[httpx.Request], httpx.Response], token: str | None = "tok"
) -> AirflowClient:
    return AirflowClient(BASE, token, transport=httpx.MockTransport(handler))


def test_login_posts_credentials_and_uses_the_token_afterwards() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/auth/token":
            assert json.loads(request.content) == {"username": "admin", "password": "pw"}
            return httpx.Response(201, json={"access_token": "jwt-123"})
        return httpx.Response(200, json={"dag_id": "d", "is_paused": False, "fileloc": "/dags/x.py"})

    with make_client(handler, token=None) as client:
        assert client.login("admin", "pw") == "jwt-123"
        client.get_dag("d")
    assert "authorization" not in seen[0].headers
    assert seen[1].headers["authorization"] == "Bearer jwt-123"


def test_wrong_password_is_a_401_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": "Invalid credentials"})

    with make_client(handler, token=None) as client, pytest.raises(AirflowApiError) as excinfo:
        client.login("admin", "wrong")
    assert excinfo.value.status_code == 401
    assert excinfo.value.detail == "Invalid credentials"
    assert not isinstance(excinfo.value, AirflowNotFoundError)


def test_trigger_sends_null_logical_date_and_the_conf() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert request.url.path == "/api/v2/dags/churn__train/dagRuns"
        assert json.loads(request.content) == {"logical_date": None, "conf": {"as_of": "2026-02-28"}}
        return httpx.Response(200, json=run_body())

    with make_client(handler) as client:
        run = client.trigger_dag_run("churn__train", {"as_of": "2026-02-28"})
    assert (run.run_id, run.state, run.finished) == (RUN_ID, "queued", False)
    assert run.conf == {"as_of": "2026-02-28"}


def test_param_validation_error_keeps_airflow_s_message() -> None:
    message = "Invalid input for param window_days: -3 is less than the minimum of 1"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"detail": message})

    with make_client(handler) as client, pytest.raises(AirflowApiError) as excinfo:
        client.trigger_dag_run("churn__train", {"window_days": -3})
    assert excinfo.value.status_code == 400
    assert excinfo.value.detail == message
    assert "HTTP 400" in str(excinfo.value) and "window_days" in str(excinfo.value)


def test_not_found_has_its_own_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "The Dag with ID: `nope` was not found"})

    with make_client(handler) as client, pytest.raises(AirflowNotFoundError, match="nope"):
        client.get_dag("nope")


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            httpx.Response(
                422, json={"detail": [{"loc": ["body", "logical_date"], "msg": "Field required"}]}
            ),
            "body.logical_date: Field required",
        ),
        (httpx.Response(500, text="Internal Server Error"), "Internal Server Error"),
        (httpx.Response(502, text=""), "Bad Gateway"),
        (httpx.Response(409, json={"detail": {"reason": "conflict"}}), '{"reason": "conflict"}'),
    ],
)
def test_error_detail_shapes(response: httpx.Response, expected: str) -> None:
    assert error_detail(response) == expected


def test_run_ids_are_quoted_in_paths() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(200, json=run_body("running"))

    with make_client(handler) as client:
        client.get_dag_run("churn__train", RUN_ID)
    assert paths == ["/api/v2/dags/churn__train/dagRuns/manual__2026-03-01T10%3A00%3A00.123456%2B00%3A00"]


def test_set_paused_patches_the_dag() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "PATCH"
        assert json.loads(request.content) == {"is_paused": False}
        return httpx.Response(200, json={"dag_id": "d", "is_paused": False, "fileloc": None})

    with make_client(handler) as client:
        assert client.set_paused("d", False).is_paused is False


def test_health_and_run_count() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/monitor/health"):
            return httpx.Response(
                200,
                json={
                    "metadatabase": {"status": "healthy"},
                    "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": "…"},
                    "triggerer": {"status": None},
                },
            )
        assert request.url.params["limit"] == "1"
        return httpx.Response(200, json={"dag_runs": [run_body()], "total_entries": 7})

    with make_client(handler) as client:
        assert client.health() == {"metadatabase": "healthy", "scheduler": "healthy", "triggerer": None}
        assert client.count_dag_runs("churn__train") == 7


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (
            '{"report_html_uri": "file:///r.html", "passed": true}',
            {"report_html_uri": "file:///r.html", "passed": True},
        ),
        ({"data_docs_uri": "file:///d/index.html"}, {"data_docs_uri": "file:///d/index.html"}),
        ("not json", "not json"),
        (3, 3),
    ],
)
def test_xcom_values_are_decoded(stored, expected) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/taskInstances/evaluate/xcomEntries/return_value")
        assert request.url.params["map_index"] == "-1"
        return httpx.Response(200, json={"key": "return_value", "value": stored})

    with make_client(handler) as client:
        assert client.get_xcom("churn__train", RUN_ID, "evaluate") == expected


def test_task_instances_and_log() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/taskInstances"):
            return httpx.Response(
                200,
                json={
                    "task_instances": [
                        {
                            "task_id": "ingest",
                            "map_index": -1,
                            "state": "success",
                            "try_number": 1,
                            "hostname": "",
                        },
                        {
                            "task_id": "score",
                            "map_index": 3,
                            "state": "failed",
                            "try_number": 2,
                            "hostname": "w2",
                        },
                        {"task_id": "promote", "map_index": -1, "state": None, "try_number": 0},
                    ],
                    "total_entries": 3,
                },
            )
        assert request.url.path.endswith("/taskInstances/score/logs/2")
        assert request.url.params["map_index"] == "3"
        return httpx.Response(
            200, json={"content": [{"timestamp": "2026-03-01T10:00:02Z", "level": "error", "event": "boom"}]}
        )

    with make_client(handler) as client:
        tis = client.list_task_instances("d", RUN_ID)
        assert [(ti.label, ti.state, ti.try_number, ti.hostname) for ti in tis] == [
            ("ingest", "success", 1, None),
            ("score[3]", "failed", 2, "w2"),
            ("promote", None, 0, None),
        ]
        assert client.get_task_log("d", RUN_ID, "score", 2, map_index=3) == "2026-03-01T10:00:02Z error boom"


def test_render_log_content() -> None:
    assert render_log_content(None) == ""
    assert render_log_content("plain text") == "plain text"
    content = [
        {"event": "::group::Log message source details", "sources": ["/x.log"]},
        {"timestamp": "t1", "level": "info", "event": "Task started", "logger": "task", "rows": 800},
        "a bare line",
    ]
    assert render_log_content(content).splitlines() == [
        "::group::Log message source details",
        "t1 info Task started rows=800",
        "a bare line",
    ]


def test_import_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "import_errors": [
                    {"import_error_id": 1, "filename": "/dags/x.py", "stack_trace": "SyntaxError"}
                ],
                "total_entries": 1,
            },
        )

    with make_client(handler) as client:
        [error] = client.list_import_errors()
    assert (error.filename, error.stack_trace) == ("/dags/x.py", "SyntaxError")


def test_wait_for_dag_run_reports_each_task_change_once() -> None:
    states = iter(["queued", "running", "running", "success"])
    task_states = iter([None, "running", "running", "success"])
    current: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/taskInstances"):
            current["ti"] = next(task_states)
            return httpx.Response(
                200,
                json={
                    "task_instances": [
                        {"task_id": "t", "map_index": -1, "state": current["ti"], "try_number": 1}
                    ]
                },
            )
        return httpx.Response(200, json=run_body(next(states)))

    changes: list[str | None] = []
    with make_client(handler) as client:
        run = client.wait_for_dag_run(
            "churn__train", RUN_ID, interval=0, on_task_change=lambda ti: changes.append(ti.state)
        )
    assert run.state == "success" and run.finished
    assert changes == [None, "running", "success"]


def test_wait_for_dag_run_times_out_with_the_last_state() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=run_body("running"))

    with make_client(handler) as client, pytest.raises(DagRunTimeoutError, match="still running") as excinfo:
        client.wait_for_dag_run("churn__train", RUN_ID, timeout=0.2, interval=0.05)
    assert excinfo.value.last.state == "running"


def test_render_log_content_shows_the_exception_chain_once_and_filters_levels() -> None:
    frames = [{"filename": "/p/glue.py", "lineno": 52, "name": "fail"}]
    content = [
        {"timestamp": "t0", "level": "info", "event": "starting", "dag_id": "d", "ti_id": "x"},
        {
            "timestamp": "t1",
            "level": "error",
            "event": "Task failed with exception",
            "logger": "task",
            "error_detail": [
                {"exc_type": "AirflowFailException", "exc_value": "40% bad rows", "frames": frames},
                {"exc_type": "StepRejected", "exc_value": "40% bad rows", "frames": frames},
            ],
        },
    ]
    assert render_log_content(content, levels={"error"}).splitlines() == [
        "t1 error Task failed with exception",
        "    AirflowFailException: 40% bad rows (/p/glue.py:52 in fail)",
    ]
    assert render_log_content(content).splitlines()[0] == "t0 info starting"


def test_wait_for_parsed_polls_until_the_dag_exists() -> None:
    answers = iter([404, 404, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/importErrors"):
            return httpx.Response(200, json={"import_errors": [], "total_entries": 0})
        status = next(answers)
        if status == 404:
            return httpx.Response(404, json={"detail": "not found"})
        return httpx.Response(200, json={"dag_id": "d", "is_paused": True, "fileloc": "/dags/x.py"})

    with make_client(handler) as client:
        assert client.wait_for_parsed("d", timeout=5, interval=0).dag_id == "d"


def test_wait_for_parsed_fails_at_once_on_an_import_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/importErrors"):
            errors = [{"import_error_id": 1, "filename": "/dags/x.py", "stack_trace": "SyntaxError: bad"}]
            return httpx.Response(200, json={"import_errors": errors, "total_entries": 1})
        return httpx.Response(404, json={"detail": "not found"})

    with (
        make_client(handler) as client,
        pytest.raises(DagImportFailedError, match=r"/dags/x\.py: SyntaxError"),
    ):
        client.wait_for_parsed("d", timeout=60, interval=0)


def test_wait_for_parsed_times_out() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/importErrors"):
            return httpx.Response(200, json={"import_errors": [], "total_entries": 0})
        return httpx.Response(404, json={"detail": "not found"})

    with make_client(handler) as client, pytest.raises(TimeoutError, match="d not parsed after 0"):
        client.wait_for_parsed("d", timeout=0, interval=0)
