"""Running the real DAGs with `dag.test()` and summarising the result (shared by the e2e modules)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Run:
    """A finished DAG run: its id, state, the state of each task, and how many instances each task had."""

    run_id: str
    state: str
    tasks: dict[str, str]
    instances: Counter = field(default_factory=Counter)


def load_dag(dag_id: str):
    """Parse the real dags/ folder (as the DAG processor does) and return one DAG."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def run_dag(dag_id: str, conf: dict, logical_date: datetime | None = None) -> Run:
    """Run one DAG to its end in this process; the same `logical_date` again reruns the same run."""
    # Same logical date and run_after: the same run id, so a second call is a rerun of that run.
    kwargs = {"logical_date": logical_date, "run_after": logical_date} if logical_date is not None else {}
    dag_run = load_dag(dag_id).test(run_conf=conf, **kwargs)
    instances = dag_run.get_task_instances()
    tasks: dict[str, str] = {}
    for ti in instances:
        # A mapped task is failed if any instance failed.
        state = str(ti.state)
        if tasks.get(ti.task_id) not in (None, "success") and state == "success":
            continue
        tasks[ti.task_id] = state
    return Run(
        run_id=dag_run.run_id,
        state=str(dag_run.state),
        tasks=tasks,
        instances=Counter(ti.task_id for ti in instances),
    )
