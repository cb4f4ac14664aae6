"""A small typed client for Airflow 3's REST API (`/api/v2`), over httpx.

Only what the project drives from outside Airflow: a JWT from `POST /auth/token`, health, DAGs
(get, pause), DAG runs (trigger, get, count, wait), task instances, XCom values, task logs and
import errors. Responses become small frozen dataclasses; error statuses become
:class:`AirflowApiError` carrying the HTTP status and Airflow's own message (e.g. "Invalid input
for param window_days: …"). No Airflow import: this runs in the CLI and in tests, outside Airflow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

# States after which nothing more happens to a run (Airflow's DagRunState).
FINISHED_RUN_STATES = frozenset({"success", "failed"})
FAILED_TASK_STATES = frozenset({"failed", "upstream_failed"})


class AirflowApiError(RuntimeError):
    """Airflow answered with an error status; `detail` is its message (FastAPI's `detail`)."""

    def __init__(self, method: str, url: str, status_code: int, detail: str) -> None:
        super().__init__(f"{method} {url} -> HTTP {status_code}: {detail}")
        self.method = method
        self.url = url
        self.status_code = status_code
        self.detail = detail


class AirflowNotFoundError(AirflowApiError):
    """HTTP 404: the DAG, run, task instance or XCom does not exist (yet)."""


class DagImportFailedError(RuntimeError):
    """A DAG file failed to import while waiting for a DAG to be parsed (the stack traces)."""


class DagRunTimeoutError(TimeoutError):
    """A DAG run did not finish in time; `last` is the last state seen."""

    def __init__(self, message: str, last: DagRun) -> None:
        super().__init__(message)
        self.last = last


@dataclass(frozen=True)
class Dag:
    """The parts of a DAG the CLI and tests use."""

    dag_id: str
    is_paused: bool
    fileloc: str | None


@dataclass(frozen=True)
class DagRun:
    """One DAG run."""

    dag_id: str
    run_id: str
    state: str
    conf: Mapping[str, Any] | None
    start_date: str | None
    end_date: str | None

    @property
    def finished(self) -> bool:
        """Whether the run reached a final state."""
        return self.state in FINISHED_RUN_STATES


@dataclass(frozen=True)
class TaskInstance:
    """One task instance of a run (map_index -1 unless mapped)."""

    task_id: str
    map_index: int
    state: str | None
    try_number: int
    hostname: str | None = None  # where it ran: the Celery worker's host name

    @property
    def label(self) -> str:
        """`task` or `task[3]` for a mapped instance."""
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"


@dataclass(frozen=True)
class DagImportError:
    """A DAG file that failed to parse."""

    filename: str
    stack_trace: str


def error_detail(response: httpx.Response) -> str:
    """Airflow's error message: FastAPI's `detail` (a string, or a list of validation errors)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:1000] or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                location = ".".join(str(part) for part in item.get("loc", []))
                parts.append(f"{location}: {item['msg']}" if location else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return json.dumps(detail)


def _dag_run(body: Mapping[str, Any]) -> DagRun:
    return DagRun(
        dag_id=body["dag_id"],
        run_id=body["dag_run_id"],
        state=body["state"],
        conf=body.get("conf"),
        start_date=body.get("start_date"),
        end_date=body.get("end_date"),
    )


def _dag(body: Mapping[str, Any]) -> Dag:
    return Dag(dag_id=body["dag_id"], is_paused=bool(body.get("is_paused")), fileloc=body.get("fileloc"))


def _q(value: str) -> str:
    """Quote one path segment (run ids contain ':' and '+')."""
    return quote(value, safe="")


class AirflowClient:
    """Calls to one Airflow API server. Use as a context manager, or call `close()`.

    `transport` lets tests substitute an `httpx.MockTransport`.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )
        if token:
            self._http.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; raise :class:`AirflowApiError` (404: :class:`AirflowNotFoundError`) on an error status."""
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            error = AirflowNotFoundError if response.status_code == 404 else AirflowApiError
            raise error(method, f"{self.base_url}{path}", response.status_code, error_detail(response))
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def login(self, username: str, password: str) -> str:
        """Get a JWT from `POST /auth/token`, use it for every later call, and return it.

        Wrong credentials: :class:`AirflowApiError` with status 401.
        """
        body = self._json("POST", "/auth/token", json={"username": username, "password": password})
        token = str(body["access_token"])
        self._http.headers["Authorization"] = f"Bearer {token}"
        return token

    def health(self) -> dict[str, str | None]:
        """Each component's status ('healthy', 'unhealthy' or None) from `/api/v2/monitor/health` (no token needed)."""
        body = self._json("GET", "/api/v2/monitor/health")
        return {name: value.get("status") for name, value in body.items() if isinstance(value, dict)}

    def get_dag(self, dag_id: str) -> Dag:
        """One DAG; :class:`AirflowNotFoundError` until the dag-processor has parsed it."""
        return _dag(self._json("GET", f"/api/v2/dags/{_q(dag_id)}"))

    def set_paused(self, dag_id: str, paused: bool) -> Dag:
        """Pause or unpause a DAG."""
        return _dag(self._json("PATCH", f"/api/v2/dags/{_q(dag_id)}", json={"is_paused": paused}))

    def trigger_dag_run(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> DagRun:
        """Create a manual run now. Airflow validates `conf` against the DAG's params: HTTP 400 naming the param.

        `logical_date` is sent as null: Airflow 3 answers 422 to a body without it.
        """
        body = {"logical_date": None, "conf": dict(conf or {})}
        return _dag_run(self._json("POST", f"/api/v2/dags/{_q(dag_id)}/dagRuns", json=body))

    def get_dag_run(self, dag_id: str, run_id: str) -> DagRun:
        """One run."""
        return _dag_run(self._json("GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}"))

    def list_dag_runs(self, dag_id: str, *, limit: int = 100) -> list[DagRun]:
        """The DAG's runs, newest first."""
        body = self._json(
            "GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns", params={"limit": limit, "order_by": "-run_after"}
        )
        return [_dag_run(item) for item in body["dag_runs"]]

    def count_dag_runs(self, dag_id: str) -> int:
        """How many runs the DAG has."""
        body = self._json("GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns", params={"limit": 1})
        return int(body["total_entries"])

    def list_task_instances(self, dag_id: str, run_id: str) -> list[TaskInstance]:
        """The run's task instances (every map index)."""
        body = self._json(
            "GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances", params={"limit": 1000}
        )
        return [
            TaskInstance(
                task_id=item["task_id"],
                map_index=int(item.get("map_index", -1)),
                state=item.get("state"),
                try_number=int(item.get("try_number") or 0),
                hostname=item.get("hostname") or None,
            )
            for item in body["task_instances"]
        ]

    def get_xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", *, map_index: int = -1
    ) -> Any:
        """An XCom value; :class:`AirflowNotFoundError` if the task pushed nothing under `key`.

        The endpoint returns the value as stored: a dict pushed by a task may come back as JSON text,
        which is decoded here.
        """
        body = self._json(
            "GET",
            f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/xcomEntries/{_q(key)}",
            params={"map_index": map_index},
        )
        value = body.get("value")
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def get_task_log(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        try_number: int,
        *,
        map_index: int = -1,
        levels: Collection[str] | None = None,
    ) -> str:
        """The text of one try's log (see :func:`render_log_content`; `levels` filters by level)."""
        body = self._json(
            "GET",
            f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/logs/{try_number}",
            params={"map_index": map_index, "full_content": "true"},
        )
        return render_log_content(body.get("content"), levels)

    def list_import_errors(self) -> list[DagImportError]:
        """DAG files that failed to parse."""
        body = self._json("GET", "/api/v2/importErrors", params={"limit": 100})
        return [
            DagImportError(filename=item.get("filename", "?"), stack_trace=item.get("stack_trace", ""))
            for item in body.get("import_errors", [])
        ]

    def wait_for_parsed(self, dag_id: str, *, timeout: float, interval: float = 2.0) -> Dag:
        """Poll until the dag-processor has parsed `dag_id`; the DAG.

        Raises :class:`DagImportFailedError` at once when any DAG file fails to import (with each
        file's stack trace), TimeoutError after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.get_dag(dag_id)
            except AirflowNotFoundError:
                errors = self.list_import_errors()
                if errors:
                    raise DagImportFailedError(
                        "\n".join(f"{e.filename}: {e.stack_trace}" for e in errors)
                    ) from None
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{dag_id} not parsed after {timeout} s") from None
                time.sleep(interval)

    def wait_for_dag_run(
        self,
        dag_id: str,
        run_id: str,
        *,
        timeout: float = 600.0,
        interval: float = 2.0,
        on_task_change: Callable[[TaskInstance], None] | None = None,
    ) -> DagRun:
        """Poll the run until it finishes; call `on_task_change` once per task state change.

        Raises :class:`DagRunTimeoutError` (holding the last run seen) after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        seen: dict[tuple[str, int], str | None] = {}
        while True:
            run = self.get_dag_run(dag_id, run_id)
            if on_task_change is not None:
                for ti in self.list_task_instances(dag_id, run_id):
                    key = (ti.task_id, ti.map_index)
                    if key not in seen or seen[key] != ti.state:
                        seen[key] = ti.state
                        on_task_change(ti)
            if run.finished:
                return run
            if time.monotonic() >= deadline:
                raise DagRunTimeoutError(
                    f"run {run_id} of {dag_id} still {run.state} after {timeout:.0f} s", last=run
                )
            time.sleep(interval)


# Context Airflow adds to every structured log line; left out of the rendered text.
_LOG_CONTEXT_KEYS = frozenset(
    {"timestamp", "level", "event", "sources", "logger", "filename", "lineno", "error_detail"}
    | {"dag_id", "run_id", "task_id", "map_index", "try_number", "ti_id"}
)


def render_log_content(content: Any, levels: Collection[str] | None = None) -> str:
    """Turn the log endpoint's `content` (a string, or structured messages) into plain text lines.

    A structured message becomes 'timestamp level event key=value…'; an exception attached to it
    adds one line per exception in its chain ('Type: message (file:line in function)').
    `levels` keeps only messages of those levels (e.g. {"error", "critical"}).
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    lines = []
    for item in content:
        if not isinstance(item, dict):
            if levels is None:
                lines.append(str(item))
            continue
        if levels is not None and item.get("level") not in levels:
            continue
        head = [str(item[key]) for key in ("timestamp", "level", "event") if item.get(key) is not None]
        extras = [f"{k}={v}" for k, v in item.items() if k not in _LOG_CONTEXT_KEYS]
        lines.append(" ".join(head + extras))
        previous = None
        for exc in item.get("error_detail") or []:
            if exc.get("exc_value") == previous:
                continue  # a wrapper that re-raised its cause with the same message
            previous = exc.get("exc_value")
            frames = exc.get("frames") or []
            where = ""
            if frames:
                where = f" ({frames[-1]['filename']}:{frames[-1]['lineno']} in {frames[-1]['name']})"
            lines.append(f"    {exc.get('exc_type')}: {exc.get('exc_value')}{where}")
    return "\n".join(lines)
