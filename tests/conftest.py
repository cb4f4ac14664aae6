"""Test-session setup shared by every layer.

Airflow reads its configuration once, at first import, so the throwaway AIRFLOW_HOME and metadata
database are set here, in `pytest_configure`, before any test module can import Airflow. Nothing
here touches the developer's own ~/airflow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config) -> None:  # noqa: ANN001 - pytest hook signature
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
