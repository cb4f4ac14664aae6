"""A private Docker Engine for the compose test: installed if missing, started, checked and stopped.

The machines that run the test have no Docker engine running and none may be assumed: the test
installs Debian's `docker.io`, `docker-compose` and `debootstrap` when their commands are missing
(:func:`ensure_debian_packages`), then starts a `dockerd` of its own (:func:`private_docker_engine`)
that touches nothing of the machine's:

- its own socket, exec root and PID record in the run's temporary folder, stopped by PID at the
  end, also when the test fails (:mod:`.processes` stops its process group and every descendant);
- no default bridge, no iptables rules, no IP forwarding switched on (``--bridge=none
  --iptables=false --ip-forward=false``): the compose project's own network is the only one it
  creates and `docker-compose down` removes it; builds run on the host's network (they need the
  package registries), ports are published on 127.0.0.1 by docker's userland proxy;
- its data root, which holds only images between runs (the build cache), in the cache folder
  (:func:`default_cache_dir`), taken under a lock: one engine per data root at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from mlops_pipeline.devtools.processes import StackError, start_service, stop_service, tail

# Command -> the Debian package that provides it.
ENGINE_PACKAGES: Mapping[str, str] = {
    "dockerd": "docker.io",
    "docker-compose": "docker-compose",
    "debootstrap": "debootstrap",
}
DEFAULT_NETWORKS = frozenset({"bridge", "host", "none"})


def default_cache_dir() -> Path:
    """The compose test's build cache: ``$MLOPS_COMPOSE_CACHE`` or ``~/.cache/mlops-pipeline/compose-test``."""
    configured = os.environ.get("MLOPS_COMPOSE_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache/mlops-pipeline/compose-test"


def ensure_debian_packages(packages: Mapping[str, str] = ENGINE_PACKAGES) -> list[str]:
    """Install (apt-get) the package of every command in `packages` that is not on PATH; the packages installed.

    Needs root and Debian's package registry; raises `StackError` naming the packages otherwise.
    """
    missing = sorted({package for command, package in packages.items() if shutil.which(command) is None})
    if not missing:
        return []
    if os.geteuid() != 0:
        raise StackError(f"missing {', '.join(missing)}: install them (apt-get install {' '.join(missing)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
        if result.returncode != 0:
            raise StackError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return missing


@dataclass(frozen=True)
class DockerEngine:
    """A running Docker Engine: where its API listens, and how to run the `docker` CLI against it."""

    host: str  # e.g. unix:///tmp/.../docker.sock
    data_root: Path | None  # None: an engine we did not start (the user's own)

    @property
    def env(self) -> dict[str, str]:
        """The process environment for docker and docker-compose commands against this engine."""
        return {**os.environ, "DOCKER_HOST": self.host}

    def docker(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `docker <args>` against this engine; raises `StackError` with its output when it fails."""
        result = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise StackError(
                f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
            )
        return result

    def lines(self, *args: str) -> list[str]:
        """The non-empty output lines of `docker <args>`."""
        return [line for line in self.docker(*args).stdout.splitlines() if line.strip()]


@dataclass(frozen=True)
class EngineLeftovers:
    """What a run left in the engine: containers, volumes and networks that are not the defaults."""

    containers: tuple[str, ...]
    volumes: tuple[str, ...]
    networks: tuple[str, ...]

    @property
    def empty(self) -> bool:
        """Whether nothing is left."""
        return not (self.containers or self.volumes or self.networks)


def engine_leftovers(engine: DockerEngine) -> EngineLeftovers:
    """Every container (running or not), volume and non-default network the engine holds."""
    return EngineLeftovers(
        containers=tuple(engine.lines("ps", "--all", "--format", "{{.Names}}")),
        volumes=tuple(engine.lines("volume", "ls", "--quiet")),
        networks=tuple(
            name
            for name in engine.lines("network", "ls", "--format", "{{.Name}}")
            if name not in DEFAULT_NETWORKS
        ),
    )


def _mounts_under(*roots: Path) -> list[str]:
    """Mount points below any of `roots` (overlay layers, shm, netns a crashed engine left)."""
    prefixes = tuple(f"{root.resolve()}/" for root in roots)
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        points = [line.split()[1] for line in mounts]
    return sorted((p for p in points if p.startswith(prefixes)), key=len, reverse=True)


def processes_using(*roots: Path) -> list[psutil.Process]:
    """Processes whose command line names one of `roots` (dockerd, containerd, shims)."""
    needles = [str(root.resolve()) for root in roots]
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info.get("cmdline") or [])
        if any(needle in cmdline for needle in needles):
            found.append(process)
    return found


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StackError(
                f"another compose test holds {lock_file}: its Docker engine uses the same data root"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def private_docker_engine(run_dir: Path, data_root: Path, *, timeout: float = 90) -> Iterator[DockerEngine]:
    """A `dockerd` of our own, its socket and state in `run_dir`, its images in `data_root`; stopped on exit.

    On exit (also after an error) the engine is stopped by its PID record, and it is checked that
    no process of it is left and nothing stays mounted below `run_dir` or `data_root`
    (`StackError` otherwise, after unmounting what it can).
    """
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise StackError("dockerd is not installed (ensure_debian_packages installs docker.io)")
    run_dir.mkdir(parents=True, exist_ok=True)
    data_root.mkdir(parents=True, exist_ok=True)
    socket = run_dir / "docker.sock"
    state_dir, log_file = run_dir / "state", run_dir / "dockerd.log"
    argv = [
        dockerd,
        "--host",
        f"unix://{socket}",
        "--data-root",
        str(data_root),
        "--exec-root",
        str(run_dir / "exec"),
        "--pidfile",
        str(run_dir / "dockerd.pid"),
        "--bridge=none",
        "--iptables=false",
        "--ip-forward=false",
        "--log-level=warn",
    ]
    engine = DockerEngine(host=f"unix://{socket}", data_root=data_root)
    with _exclusive(data_root.parent / f"{data_root.name}.lock"):
        record = start_service("dockerd", argv, env=dict(os.environ), state_dir=state_dir, log_file=log_file)
        try:
            deadline = time.monotonic() + timeout
            while engine.docker("version", check=False, timeout=10).returncode != 0:
                if not psutil.pid_exists(record.pid) or time.monotonic() > deadline:
                    raise StackError(
                        f"dockerd did not start; last lines of {log_file}:\n{tail(log_file, 25)}"
                    )
                time.sleep(0.5)
            yield engine
        finally:
            stop_service(state_dir, "dockerd", timeout=60)
            # dockerd binds its own network namespace under the exec root and leaves it mounted.
            for point in _mounts_under(run_dir / "exec" / "netns"):
                subprocess.run(["umount", point], capture_output=True, check=False)
            _check_stopped(run_dir, data_root)


def _check_stopped(run_dir: Path, data_root: Path) -> None:
    left = processes_using(run_dir, data_root)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    mounts = _mounts_under(run_dir, data_root)
    for point in mounts:
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    if left or mounts:
        raise StackError(
            f"the Docker engine left {len(left)} process(es) and {len(mounts)} mount(s) behind "
            f"(now killed and unmounted): {[p.pid for p in left]} {mounts[:5]}"
        )
