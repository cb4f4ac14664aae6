"""Fixtures of the devtools unit tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from mlops_pipeline.devtools import embedded_stack, processes
from mlops_pipeline.devtools.airflow_client import AirflowClient


@pytest.fixture
def fake_airflow() -> Callable[[dict[str, object]], AirflowClient]:
    """A factory of Airflow clients whose server answers each path (prefix match, longest first) with the given JSON."""
    return _fake_airflow


def _fake_airflow(routes: dict[str, object]) -> AirflowClient:
    """A client whose server answers each path (prefix match, longest first) with the given JSON."""

    def handler(request: httpx.Request) -> httpx.Response:
        for prefix in sorted(routes, key=len, reverse=True):
            if request.url.path.startswith(prefix):
                body = routes[prefix]
                return body if isinstance(body, httpx.Response) else httpx.Response(200, json=body)
        return httpx.Response(404, json={"detail": "not found"})

    return AirflowClient("http://airflow", "token", transport=httpx.MockTransport(handler))


@pytest.fixture
def layout(tmp_path: Path):
    stack = embedded_stack.StackLayout(tmp_path / "stack")
    yield stack
    processes.stop_all(stack.state_dir, timeout=5)  # never leave a process behind, even on failure
