"""compose_stack / docker_engine / envfile.with_settings: the compose test's pure parts (the run itself is
tests/deploy/test_compose_up.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_pipeline.devtools.compose_stack import (
    ContainerState,
    locked_version,
    recipe_digest,
    stand_in_images,
)
from mlops_pipeline.devtools.docker_engine import EngineLeftovers, default_cache_dir
from mlops_pipeline.devtools.envfile import with_settings

REPO = Path(__file__).resolve().parents[3]


def test_with_settings_replaces_values_in_place_and_appends_new_ones() -> None:
    text = "# ports\nAIRFLOW_PORT=8080\nMLFLOW_PORT=5000\n# AIRFLOW_PORT=1 in a comment stays\n"
    out = with_settings(text, {"AIRFLOW_PORT": "18080", "COMPOSE_PROJECT_NAME": "t1"})
    assert out == (
        "# ports\nAIRFLOW_PORT=18080\nMLFLOW_PORT=5000\n# AIRFLOW_PORT=1 in a comment stays\nCOMPOSE_PROJECT_NAME=t1\n"
    )
    assert with_settings("A=1", {"B": "2"}) == "A=1\nB=2\n"


@pytest.mark.parametrize(
    ("service", "status", "health", "exit_code", "ready", "failed"),
    [
        ("airflow-init", "exited", "", 0, True, False),
        ("airflow-init", "exited", "", 1, False, True),
        ("airflow-init", "running", "", 0, False, False),
        ("postgres", "running", "healthy", 0, True, False),
        ("postgres", "running", "starting", 0, False, False),
        ("postgres", "running", "unhealthy", 0, False, True),
        ("airflow-worker", "exited", "unhealthy", 137, False, True),
        ("airflow-worker", "restarting", "starting", 1, False, False),
    ],
)
def test_a_container_is_ready_when_a_one_shot_exited_0_or_a_service_is_healthy(
    service: str, status: str, health: str, exit_code: int, ready: bool, failed: bool
) -> None:
    state = ContainerState(
        name=f"p-{service}-1", service=service, status=status, health=health, exit_code=exit_code
    )
    assert (state.ready, state.failed) == (ready, failed)


def test_a_recipe_digest_changes_with_any_file_build_arg_or_base_image(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    first = recipe_digest(tmp_path, {"V": "1"}, "sha256:a")
    assert recipe_digest(tmp_path, {"V": "1"}, "sha256:a") == first
    assert recipe_digest(tmp_path, {"V": "2"}, "sha256:a") != first
    assert recipe_digest(tmp_path, {"V": "1"}, "sha256:b") != first
    (tmp_path / "entrypoint.sh").write_text("#!/bin/sh\n")
    assert recipe_digest(tmp_path, {"V": "1"}, "sha256:a") != first


def test_stand_ins_are_built_with_the_locked_versions() -> None:
    images = {image.folder: image for image in stand_in_images(REPO)}
    assert set(images) == {p.name for p in (REPO / "deploy/test/images").iterdir() if p.is_dir()}
    airflow = locked_version(REPO, "apache-airflow")
    assert images["airflow-base"].tag == f"local/airflow-base:{airflow}"
    assert images["airflow-base"].build_args["AIRFLOW_VERSION"] == airflow
    assert images["s3"].build_args["MOTO_VERSION"] == locked_version(REPO, "moto")
    for image in images.values():
        dockerfile = (REPO / "deploy/test/images" / image.folder / "Dockerfile").read_text()
        for arg in image.build_args:
            assert f"ARG {arg}" in dockerfile, (image.folder, arg)


def test_the_build_cache_folder_is_outside_the_clone_and_configurable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLOPS_COMPOSE_CACHE", raising=False)
    assert default_cache_dir() == Path.home() / ".cache/mlops-pipeline/compose-test"
    monkeypatch.setenv("MLOPS_COMPOSE_CACHE", "/srv/cache")
    assert default_cache_dir() == Path("/srv/cache")


def test_leftovers_are_empty_only_without_containers_volumes_and_networks() -> None:
    assert EngineLeftovers((), (), ()).empty
    assert not EngineLeftovers(("c",), (), ()).empty
    assert not EngineLeftovers((), ("v",), ()).empty
    assert not EngineLeftovers((), (), ("n",)).empty
