"""The native stack for the length of a `with` block, as the system tests use it.

:func:`running_native_stack` starts docker-compose.yaml's stack as local processes
(`native_stack.start_native_stack`: Airflow with Celery workers, MLflow, moto's S3 server, this
machine's PostgreSQL and Redis), writes the caller's data into its S3 store, signs in and waits
until the named DAGs are parsed, and yields a :class:`RunningStack`. On the way out it stops every
recorded process by PID and drops the stack's databases, also when starting failed, and then
refuses (:class:`LeftBehindError`) if anything of it is still there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlops_pipeline.devtools import embedded_stack, native_stack, processes
from mlops_pipeline.devtools.airflow_client import AirflowClient
from mlops_pipeline.store import ObjectStore, open_store


class LeftBehindError(RuntimeError):
    """Stopping the stack left a recorded process, a resource record or a database behind."""


@dataclass(frozen=True)
class RunningStack:
    """The running native stack, its users' passwords and its object store."""

    native: native_stack.NativeStack
    passwords: dict[str, str]
    store: ObjectStore

    @property
    def state_dir(self) -> Path:
        """Where the stack's processes are recorded (one `<name>.pid` file each)."""
        return self.native.layout.state_dir


@contextmanager
def running_native_stack(
    root: Path,
    *,
    repo: Path,
    dag_ids: Sequence[str],
    write_data: Callable[[ObjectStore], object],
    workers: int = 2,
    concurrency: int = 2,
    timeout: float = 300,
) -> Iterator[RunningStack]:
    """The native stack under `root` with `repo`'s DAGs and plugins, `write_data` run on its store
    and `dag_ids` parsed; stopped afterwards, with nothing left behind (see the module docstring)."""
    layout = embedded_stack.StackLayout(root)
    passwords = {"admin": processes.generate_password(), "viewer": processes.generate_password()}
    resources = None
    try:
        native = native_stack.start_native_stack(
            layout,
            dags_folder=repo / "dags",
            plugins_folder=repo / "plugins",
            passwords=passwords,
            workers=workers,
            concurrency=concurrency,
            cache_dir=repo / ".cache" / "pycache",
            timeout=timeout,
        )
        resources = native_stack.read_native_resources(layout)
        store = open_store(native.store_uri, native.s3_client_kwargs())
        write_data(store)
        with AirflowClient(native.airflow_url) as client:
            client.login("admin", passwords["admin"])
            for dag_id in dag_ids:
                client.wait_for_parsed(dag_id, timeout=180)
        yield RunningStack(native=native, passwords=passwords, store=store)
    finally:
        native_stack.stop_native_stack(layout, timeout=15)
    left = [str(path) for path in layout.state_dir.glob("*.pid")]
    if native_stack.read_native_resources(layout) is not None:
        left.append(f"resource record under {layout.root}")
    if resources is not None:
        databases = set(native_stack.list_databases(resources.postgres_uri, "mlops_"))
        left.extend(f"database {name}" for name in sorted(databases & set(resources.databases)))
    if left:
        raise LeftBehindError("stopping the native stack left behind: " + ", ".join(left))
