"""Test-session setup shared by every layer.

Airflow reads its configuration once, at first import, so the throwaway AIRFLOW_HOME and metadata
database are set here, in `pytest_configure`, before any test module can import Airflow. Nothing
here touches the developer's own ~/airflow.
"""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_pipeline.store import S3Store

REPO = Path(__file__).resolve().parents[1]
S3_BUCKET = "mlops-unit"
S3_REGION = "us-east-1"
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": S3_REGION,
}


def pytest_configure(config) -> None:
    """Point Airflow at a throwaway home and metadata DB, and keep libraries quiet and offline."""
    home = Path(tempfile.mkdtemp(prefix="mlops-test-airflow-"))
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "GX_ANALYTICS_ENABLED": "false",
            "MLFLOW_ENABLE_TELEMETRY": "false",
            "DO_NOT_TRACK": "1",
        }
    )
    os.environ.pop("MLOPS_MODELS_DIR", None)


@pytest.fixture(scope="module")
def monkeypatch_module():
    """A monkeypatch that lasts for one test module (for module-scoped fixtures)."""
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def alert_sink() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP server that keeps every JSON body POSTed to it: (its base URL, the bodies).
    Any path answers 204 except `/gone`, which answers 410 (a webhook that stopped existing)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict[str, Any]] = []

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/gone":
                self.send_response(410)
            else:
                received.append(body)
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The endpoint URL of a moto S3 server running for the whole session, with an empty bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=S3_REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket=S3_BUCKET)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_client(moto_endpoint: str) -> Any:
    """A plain boto3 client of the moto server, to look behind the store's back."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name=S3_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Dummy AWS credentials for one test; no profile or session token from the host."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "MLOPS_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    return DUMMY_AWS_ENV


@pytest.fixture
def s3_store(moto_endpoint: str, aws_env: dict[str, str]) -> S3Store:
    """An S3Store on the moto server under a prefix of its own."""
    return S3Store(
        bucket=S3_BUCKET,
        prefix=f"t-{uuid.uuid4().hex[:12]}",
        client_kwargs={"endpoint_url": moto_endpoint, "region_name": S3_REGION},
    )


ALERT_WEBHOOK_CONN_ID = "mlops_alerts_webhook"
ALERT_SMTP_CONN_ID = "mlops_alerts_smtp"


def alert_webhook_env(base_url: str, endpoint: str = "/alerts") -> dict[str, str]:
    """The settings that send alerts to the webhook at `base_url` + `endpoint`: an Airflow HTTP
    connection (from the environment, as Airflow reads `AIRFLOW_CONN_*`) and the pipeline's names for it."""
    import json

    return {
        f"AIRFLOW_CONN_{ALERT_WEBHOOK_CONN_ID.upper()}": json.dumps({"conn_type": "http", "host": base_url}),
        "MLOPS_ALERT_HTTP_CONN_ID": ALERT_WEBHOOK_CONN_ID,
        "MLOPS_ALERT_HTTP_ENDPOINT": endpoint,
    }


@pytest.fixture(scope="session")
def webhook_env() -> Any:
    """:func:`alert_webhook_env`, for test modules (which cannot import this conftest by name)."""
    return alert_webhook_env


@pytest.fixture(scope="module")
def smtp_sink() -> Iterator[tuple[dict[str, str], list[Any]]]:
    """A real SMTP server on a local port (aiosmtpd) that keeps every message it is sent:
    (the settings that email alerts to it through an Airflow SMTP connection, the messages)."""
    import json
    from email import message_from_bytes, policy

    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Keep:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(message_from_bytes(envelope.content, policy=policy.default))
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    connection = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "mlops-pipeline@localhost"},
    }
    env = {
        f"AIRFLOW_CONN_{ALERT_SMTP_CONN_ID.upper()}": json.dumps(connection),
        "MLOPS_ALERT_SMTP_CONN_ID": ALERT_SMTP_CONN_ID,
        "MLOPS_ALERT_EMAIL_TO": "oncall@example.com, ml-team@example.com",
    }
    try:
        yield env, received
    finally:
        controller.stop()
