"""The compose stack of docker-compose.yaml, brought up for real by the compose test.

Two bases (``make compose-test BASE=...``):

- ``local`` (the default, what ``make test`` runs): images that stand in for the official ones,
  which cannot be pulled where the test runs, built in a private Docker Engine
  (:mod:`.docker_engine`) and used through the override file ``deploy/test/docker-compose.local.yaml``:
  a Debian 12 image made by `debootstrap` (:func:`ensure_debian_image`), and on it the stand-ins of
  ``deploy/test/images/`` (:func:`ensure_stand_in_images`), each rebuilt only when its recipe
  changes. Compose is Debian's `docker-compose` 1.29.
- ``official``: the user's own Docker engine and Compose v2 (``docker compose``), the official
  images, and docker-compose.yaml alone.

:class:`ComposeProject` runs compose for one project (its own name, .env with free ports and
fresh secrets), waits for every health check and one-shot service, and takes it down.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlops_pipeline.devtools.docker_engine import DockerEngine
from mlops_pipeline.devtools.envfile import render_env, with_settings
from mlops_pipeline.devtools.processes import StackError, write_private

DEBIAN_IMAGE = "local/debian:bookworm"
DEBIAN_SUITE = "bookworm"
RECIPE_LABEL = "org.mlops-pipeline.recipe"
OVERRIDE_FILE = Path("deploy/test/docker-compose.local.yaml")
STAND_INS_DIR = Path("deploy/test/images")
# The machine's CA bundle, copied into the stand-ins that download packages (see their Dockerfiles).
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# One-shot services: healthy means exited with 0.
ONE_SHOT_SERVICES = frozenset({"airflow-init", "minio-init", "mlflow-init"})


def locked_version(repo: Path, package: str) -> str:
    """The version of `package` that uv.lock pins; `StackError` unless it pins exactly one."""
    lock = tomllib.loads((repo / "uv.lock").read_text(encoding="utf-8"))
    versions = [str(entry["version"]) for entry in lock["package"] if entry["name"] == package]
    if len(versions) != 1:
        raise StackError(f"uv.lock pins {package} {len(versions)} times, not once")
    return versions[0]


def _makefile_uv_version(repo: Path) -> str:
    match = re.search(r"(?m)^UV_VERSION := (\S+)", (repo / "Makefile").read_text(encoding="utf-8"))
    if match is None:
        raise StackError("the Makefile sets no UV_VERSION")
    return match.group(1)


@dataclass(frozen=True)
class StandInImage:
    """An image built from ``deploy/test/images/<folder>`` in place of one that cannot be pulled."""

    folder: str
    tag: str
    build_args: Mapping[str, str] = field(default_factory=dict)


def stand_in_images(repo: Path) -> tuple[StandInImage, ...]:
    """The stand-ins the override file names, with the versions uv.lock and the Makefile pin."""
    airflow = locked_version(repo, "apache-airflow")
    return (
        StandInImage(
            "airflow-base",
            f"local/airflow-base:{airflow}",
            {"AIRFLOW_VERSION": airflow, "UV_VERSION": _makefile_uv_version(repo)},
        ),
        StandInImage("postgres", "local/postgres:15"),
        StandInImage("redis", "local/redis:7"),
        StandInImage("s3", "local/s3:moto", {"MOTO_VERSION": locked_version(repo, "moto")}),
    )


def recipe_digest(folder: Path, build_args: Mapping[str, str], base_image_id: str) -> str:
    """sha256 of what an image is built from: its folder's files, build args, base image and CA bundle."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(json.dumps(dict(build_args), sort_keys=True).encode())
    digest.update(base_image_id.encode())
    if CA_BUNDLE.is_file():
        digest.update(CA_BUNDLE.read_bytes())
    return digest.hexdigest()


def image_id(engine: DockerEngine, image: str) -> str | None:
    """The id of `image` in the engine, None if it has none."""
    result = engine.docker("image", "inspect", "--format", "{{.Id}}", image, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def ensure_debian_image(engine: DockerEngine, work_dir: Path) -> str:
    """The id of the Debian 12 base image, made by `debootstrap --variant=minbase` when the engine lacks it."""
    if (existing := image_id(engine, DEBIAN_IMAGE)) is not None:
        return existing
    rootfs = work_dir / "debian-rootfs"
    try:
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(rootfs)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"debootstrap failed ({result.returncode}):\n{result.stdout[-3000:]}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["docker", "import", "-", DEBIAN_IMAGE],
            stdin=tar.stdout,
            env=engine.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        tar.wait(timeout=60)
        if imported.returncode != 0 or tar.returncode != 0:
            raise StackError(f"docker import of the Debian rootfs failed:\n{imported.stderr[-3000:]}")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    built = image_id(engine, DEBIAN_IMAGE)
    assert built is not None
    return built


def _build_stand_in(
    engine: DockerEngine, repo: Path, image: StandInImage, base_id: str, work_dir: Path
) -> bool:
    folder = repo / STAND_INS_DIR / image.folder
    digest = recipe_digest(folder, image.build_args, base_id)
    labels = engine.docker(
        "image", "inspect", "--format", "{{json .Config.Labels}}", image.tag, check=False
    ).stdout.strip()
    if labels and labels != "null" and json.loads(labels).get(RECIPE_LABEL) == digest:
        return False
    context = Path(tempfile.mkdtemp(prefix=f"context-{image.folder}-", dir=work_dir))
    try:
        shutil.copytree(folder, context, dirs_exist_ok=True)
        shutil.copyfile(CA_BUNDLE, context / "ca-certificates.crt")
        args = [f"--build-arg=DEBIAN_IMAGE={DEBIAN_IMAGE}"]
        args += [f"--build-arg={key}={value}" for key, value in image.build_args.items()]
        engine.docker(
            "build", "--network=host", "--quiet", f"--label={RECIPE_LABEL}={digest}", *args,
            "--tag", image.tag, str(context), timeout=1200,
        )  # fmt: skip
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return True


def ensure_stand_in_images(engine: DockerEngine, repo: Path, work_dir: Path) -> list[str]:
    """Build every stand-in whose recipe changed (or that is missing), in parallel; the tags built."""
    base_id = ensure_debian_image(engine, work_dir)
    images = stand_in_images(repo)
    # Their builds wait on downloads (apt, pip) far more than on the CPU.
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(images)) as pool:
        built = list(pool.map(lambda image: _build_stand_in(engine, repo, image, base_id, work_dir), images))
    return [image.tag for image, was_built in zip(images, built, strict=True) if was_built]


@dataclass(frozen=True)
class ContainerState:
    """One container of the project, as `docker inspect` reports it."""

    name: str
    service: str
    status: str  # created, running, exited, ...
    health: str  # healthy, unhealthy, starting, or "" without a health check
    exit_code: int

    @property
    def ready(self) -> bool:
        """A one-shot service exited with 0; any other runs and passes its health check."""
        if self.service in ONE_SHOT_SERVICES:
            return self.status == "exited" and self.exit_code == 0
        return self.status == "running" and self.health in ("healthy", "")

    @property
    def failed(self) -> bool:
        """It will not become ready on its own: a one-shot that failed, or a service that died or is unhealthy."""
        if self.service in ONE_SHOT_SERVICES:
            return self.status == "exited" and self.exit_code != 0
        return self.status in ("exited", "dead") or self.health == "unhealthy"


_INSPECT_FORMAT = (
    '{"name": {{json .Name}}, "service": {{json (index .Config.Labels "com.docker.compose.service")}}, '
    '"status": {{json .State.Status}}, "health": {{if .State.Health}}{{json .State.Health.Status}}'
    '{{else}}""{{end}}, "exit_code": {{.State.ExitCode}}}'
)


@dataclass
class ComposeProject:
    """One compose project: its compose command (files, .env, name) and the engine it runs on."""

    engine: DockerEngine
    command: tuple[str, ...]  # e.g. ("docker-compose",) or ("docker", "compose")
    repo: Path
    files: tuple[Path, ...]
    env_file: Path
    name: str

    def argv(self, *args: str) -> list[str]:
        """The full compose command line for `args`."""
        files = [arg for path in self.files for arg in ("-f", str(path))]
        return [*self.command, *files, "--env-file", str(self.env_file), "-p", self.name, *args]

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run compose with `args` in the repository; raises `StackError` with its output when it fails."""
        result = subprocess.run(
            self.argv(*args),
            cwd=self.repo,
            env={**self.engine.env, "COMPOSE_PROJECT_NAME": self.name},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise StackError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def containers(self) -> list[ContainerState]:
        """Every container of the project, one-shot ones included."""
        ids = self.engine.lines(
            "ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={self.name}"
        )
        if not ids:
            return []
        states = []
        for line in self.engine.lines("inspect", "--format", _INSPECT_FORMAT, *ids):
            fields = json.loads(line)
            states.append(ContainerState(**{**fields, "name": fields["name"].lstrip("/")}))
        return states

    def wait_ready(self, services: Sequence[str], *, timeout: float) -> list[ContainerState]:
        """Wait until every container is ready and each of `services` has one; fail fast on a failed one."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.containers()
            failed = [state for state in states if state.failed]
            if failed:
                raise StackError(
                    "not ready: "
                    + "; ".join(f"{s.name} {s.status} {s.health} exit {s.exit_code}" for s in failed)
                    + "\n"
                    + self.logs(*{s.service for s in failed})
                )
            present = {state.service for state in states}
            if set(services) <= present and all(state.ready for state in states):
                return states
            if time.monotonic() > deadline:
                waiting = [f"{s.name} {s.status} {s.health}" for s in states if not s.ready]
                raise StackError(
                    f"not ready after {timeout:.0f} s: {waiting}, missing {sorted(set(services) - present)}"
                )
            time.sleep(3)

    def logs(self, *services: str, lines: int = 60) -> str:
        """The last `lines` log lines of each of `services`."""
        return self.run("logs", "--no-color", f"--tail={lines}", *services, check=False).stdout

    def down(self) -> None:
        """Stop and remove the project's containers, network and volumes."""
        self.run("down", "--volumes", "--remove-orphans", "--timeout", "30", timeout=300)


def write_compose_env(repo: Path, output: Path, settings: Mapping[str, str]) -> Path:
    """A .env for the stack from .env.example: fresh secrets (as `make env`) and `settings` on top (mode 600)."""
    text = render_env((repo / ".env.example").read_text(encoding="utf-8"))
    return write_private(output, with_settings(text, settings))
