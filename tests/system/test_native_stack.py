"""System test: the production-like stack, run natively, through the whole life of the churn model.

What docker-compose.yaml runs, as local processes (`mlops_pipeline.native_stack.start_native_stack`,
the same stack as `make stack`): Airflow's api-server, scheduler, dag-processor and triggerer with
the CeleryExecutor (broker: Redis; metadata and Celery results: PostgreSQL), two Celery workers,
an MLflow server on PostgreSQL with its artifacts in S3, and moto's S3 server holding the object
store. PostgreSQL and Redis are this machine's servers: the stack uses throwaway databases and a
Redis database index of its own, and the fixture checks that they are gone afterwards.

Everything is driven through the REST API, as any client would: train the first champion, the
score run its promotion triggers, score the first days of the drift episode, two monitoring
windows that trigger retraining, the retrain, and the re-scoring its promotion triggers. Checked
along the way: every run succeeds; the tasks of each scoring run ran on both workers (each task
instance's `hostname` is the Celery worker's name); each scored day is published with a manifest
in the S3 store, scored by the champion of the time; the champion moved exactly once per passing
gate (MLflow's registry against the promotion history in the store).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mlflow import MlflowClient

from mlops_pipeline.devtools.airflow_client import AirflowClient, DagRun
from mlops_pipeline.devtools.example_data import write_example_data
from mlops_pipeline.devtools.running_stack import RunningStack as Stack
from mlops_pipeline.devtools.running_stack import running_native_stack
from mlops_pipeline.predictions import read_manifest
from mlops_pipeline.registry import promotion_history

pytestmark = [pytest.mark.slow, pytest.mark.system, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
MODEL = "churn"
TRAIN, SCORE, MONITOR = f"{MODEL}__train", f"{MODEL}__score", f"{MODEL}__monitor"
FIRST_AS_OF = "2026-02-28"  # before the defective export (2026-03-10) and the drift (2026-04)
DRIFT_DAYS = ("2026-04-01", "2026-04-02", "2026-04-03", "2026-04-04")
FILES_PER_DAY = 4  # example_data.SCORING_FILES_PER_DAY: four mapped `score` tasks per run
ROWS_PER_DAY = 800


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The native stack with two workers and the example data in its S3 store; all of it stopped
    by PID and its databases dropped afterwards (checked), also when starting fails."""
    with running_native_stack(
        tmp_path_factory.mktemp("native-stack"),
        repo=REPO,
        dag_ids=(TRAIN, SCORE, MONITOR),
        write_data=write_example_data,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Iterator[AirflowClient]:
    with AirflowClient(stack.native.airflow_url) as client:
        client.login("admin", stack.passwords["admin"])
        yield client


def assert_succeeded(client: AirflowClient, run: DagRun, allowed: frozenset[str] = frozenset()) -> None:
    """The run succeeded and each task succeeded (or ended in one of the `allowed` states)."""
    states = {ti.label: ti.state for ti in client.list_task_instances(run.dag_id, run.run_id)}
    assert run.state == "success", (run.dag_id, run.run_id, states)
    assert set(states.values()) <= {"success", *allowed}, (run.dag_id, run.run_id, states)


def wait_for_new_run(client: AirflowClient, dag_id: str, known: set[str], timeout: float) -> str:
    """The id of the first run of `dag_id` not in `known`, once the scheduler has created it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = [run.run_id for run in client.list_dag_runs(dag_id) if run.run_id not in known]
        if fresh:
            return fresh[0]
        time.sleep(2)
    raise AssertionError(f"no new run of {dag_id} within {timeout} s")


def check_scoring_run(stack: Stack, client: AirflowClient, run: DagRun, ds: str, version: str) -> None:
    """A scoring run: succeeded, mapped over the day's files, ran on both workers, published `ds`."""
    assert_succeeded(client, run)
    tis = client.list_task_instances(SCORE, run.run_id)
    mapped = [ti for ti in tis if ti.task_id == "score"]
    assert len(mapped) == FILES_PER_DAY, [ti.label for ti in tis]
    hosts = {ti.label: ti.hostname for ti in tis}
    # Each worker takes at most `concurrency` (2) of the four files at once: both must have worked.
    assert set(hosts.values()) == set(stack.native.workers), (run.run_id, hosts)

    published = client.get_xcom(SCORE, run.run_id, "publish")
    manifest = read_manifest(stack.store, "predictions", MODEL, ds)
    assert manifest is not None, f"predictions/{MODEL}/ds={ds} has no manifest"
    assert manifest["run_id"] == run.run_id and manifest["ds"] == ds
    assert str(manifest["model_version"]) == version == str(published["model_version"])
    assert manifest["rows"] + manifest["quarantined_rows"] == ROWS_PER_DAY
    assert len(manifest["files"]) == FILES_PER_DAY
    assert all(stack.store.exists(part["key"]) for part in manifest["files"])


def test_the_lifecycle_runs_on_celery_workers_with_postgres_redis_and_s3(
    stack: Stack, admin: AirflowClient
) -> None:
    registry = MlflowClient(tracking_uri=stack.native.mlflow_url, registry_uri=stack.native.mlflow_url)
    started = time.monotonic()

    # 1. The first champion.
    train = admin.wait_for_dag_run(
        TRAIN, admin.trigger_dag_run(TRAIN, {"as_of": FIRST_AS_OF}).run_id, timeout=420, interval=2
    )
    assert_succeeded(admin, train)
    first = registry.get_model_version_by_alias(MODEL, "champion").version
    print(f"train {FIRST_AS_OF}: champion v{first} after {time.monotonic() - started:.0f} s")

    # 2. Its promotion (an asset event) re-scores the last day it was trained on.
    auto_id = wait_for_new_run(admin, SCORE, set(), timeout=60)
    auto = admin.wait_for_dag_run(SCORE, auto_id, timeout=300, interval=2)
    check_scoring_run(stack, admin, auto, FIRST_AS_OF, first)
    print(f"score {FIRST_AS_OF} (asset-triggered): {time.monotonic() - started:.0f} s")

    # 3. The first days of the drift episode, through the REST API with `ds` (one run at a time).
    runs = {ds: admin.trigger_dag_run(SCORE, {"ds": ds}) for ds in DRIFT_DAYS}
    for ds, run in runs.items():
        check_scoring_run(stack, admin, admin.wait_for_dag_run(SCORE, run.run_id, timeout=300), ds, first)
    print(f"score {DRIFT_DAYS[0]}..{DRIFT_DAYS[-1]}: {time.monotonic() - started:.0f} s")

    # 4. Two drifted windows of three: the second one triggers retraining (N=2 of M=3).
    trains = {run.run_id for run in admin.list_dag_runs(TRAIN)}
    scores = {run.run_id for run in admin.list_dag_runs(SCORE)}
    decisions = []
    for end in ("2026-04-03", "2026-04-04"):
        run = admin.trigger_dag_run(MONITOR, {"end": end, "window_days": 3})
        finished = admin.wait_for_dag_run(MONITOR, run.run_id, timeout=300, interval=2)
        # `retrain` is skipped (short-circuit) while too few windows drifted.
        assert_succeeded(admin, finished, allowed=frozenset({"skipped"}))
        decisions.append(admin.get_xcom(MONITOR, run.run_id, "check"))
    assert [d["trigger"] for d in decisions] == [False, True], decisions
    reason = decisions[-1]["decision"]["reason"]
    assert "data drift in" in reason
    print(f"monitor: retraining triggered ({reason}) at {time.monotonic() - started:.0f} s")

    # 5. The retrain the monitor triggered: a new train run with the window's end and the reason.
    retrain_id = wait_for_new_run(admin, TRAIN, trains, timeout=60)
    retrain = admin.wait_for_dag_run(TRAIN, retrain_id, timeout=420, interval=2)
    assert_succeeded(admin, retrain)
    assert retrain.conf is not None
    assert retrain.conf["as_of"] == DRIFT_DAYS[-1] and retrain.conf["reason"] == reason
    second = registry.get_model_version_by_alias(MODEL, "champion").version
    assert second != first
    print(f"retrain: champion v{second} at {time.monotonic() - started:.0f} s")

    # 6. The new champion's asset event re-scores its last training day, replacing the partition.
    rescore_id = wait_for_new_run(admin, SCORE, scores, timeout=60)
    rescore = admin.wait_for_dag_run(SCORE, rescore_id, timeout=300, interval=2)
    check_scoring_run(stack, admin, rescore, DRIFT_DAYS[-1], second)
    assert read_manifest(stack.store, "predictions", MODEL, DRIFT_DAYS[-1])["generation"] == 2
    print(f"re-score {DRIFT_DAYS[-1]} with v{second}: {time.monotonic() - started:.0f} s")

    # 7. The champion moved exactly once per passing gate, in MLflow and in the history alike.
    history = promotion_history(stack.store, MODEL)
    versions = sorted(registry.search_model_versions(f"name='{MODEL}'"), key=lambda v: int(v.version))
    assert [v.version for v in versions] == [first, second]
    assert all(v.tags.get("gates_passed") == "true" for v in versions)
    for run in (train, retrain):
        assert admin.get_xcom(TRAIN, run.run_id, "evaluate")["passed"] is True
        assert len([r for r in history if r.dag_run_id == run.run_id]) == 1
    assert [(r.action, r.from_version, r.to_version) for r in history] == [
        ("promote", None, first),
        ("promote", first, second),
    ]
    assert registry.get_model_version_by_alias(MODEL, "champion").version == history[-1].to_version


def test_the_services_keep_their_state_in_postgres_redis_and_s3(stack: Stack) -> None:
    """Where the lifecycle above left its traces: the stack is what it claims to be."""
    import boto3
    import psycopg2
    import redis

    settings = stack.native.settings
    assert settings["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    airflow_db = settings["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", "")
    with psycopg2.connect(airflow_db) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM dag_run WHERE state = 'success'")
        assert cursor.fetchone()[0] >= 10
        # The Celery result backend: one result per task the workers ran.
        cursor.execute("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")
        assert cursor.fetchone()[0] >= 40
    mlflow_db = settings["MLFLOW_BACKEND_STORE_URI"].replace("+psycopg2", "")
    with psycopg2.connect(mlflow_db) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM model_versions WHERE name = %s", (MODEL,))
        assert cursor.fetchone()[0] == 2
    # The broker is the stack's own Redis database, holding our claim.
    broker = redis.Redis.from_url(settings["AIRFLOW__CELERY__BROKER_URL"])
    assert broker.exists("mlops-native-stack:claimed-by")
    # MLflow's artifacts went to their S3 bucket through the server.
    s3 = boto3.client("s3", **stack.native.s3_client_kwargs())
    destination = urlparse(settings["MLFLOW_ARTIFACTS_DESTINATION"])
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=destination.netloc, Prefix=destination.path.strip("/")
    )
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    assert any(key.endswith("model.skops") for key in keys), keys[:20]


def wait_for_series(stack: Stack, promql: str, timeout: float = 30) -> list[dict]:
    """The instant vector of `promql` once Prometheus has scraped something for it."""
    assert stack.native.prometheus is not None, "the native stack runs Prometheus"
    deadline = time.monotonic() + timeout
    while not (result := stack.native.prometheus.query(promql)) and time.monotonic() < deadline:
        time.sleep(1)
    assert result, f"Prometheus has no series for {promql}"
    return result


def test_prometheus_holds_what_an_operator_graphs_for_the_churn_model(stack: Stack) -> None:
    """After the lifecycle above: each run pushed its figures, and Prometheus scraped them."""
    registry = MlflowClient(tracking_uri=stack.native.mlflow_url, registry_uri=stack.native.mlflow_url)
    champion = registry.get_model_version_by_alias(MODEL, "champion").version
    churn = f'model="{MODEL}"'

    def values(promql: str) -> dict[str, float]:
        return {
            ",".join(
                f"{k}={v}" for k, v in sorted(s["metric"].items()) if k not in {"__name__", "instance"}
            ): float(s["value"][1])
            for s in wait_for_series(stack, promql)
        }

    # Volume, per scored day over the test: every day published, each with its 800 rows.
    per_day = values(f"max by (ds) (max_over_time(mlops_score_input_rows{{{churn}}}[2h]))")
    assert per_day == {f"ds={ds}": ROWS_PER_DAY for ds in (FIRST_AS_OF, *DRIFT_DAYS)}, per_day
    # The last run (the re-score by the new champion): its latency percentiles and prediction
    # distribution, which counts every published row, and the champion serving all of them.
    (p95,) = values(
        f"histogram_quantile(0.95, sum by (le) (mlops_score_batch_latency_seconds_bucket{{{churn}}}))"
    ).values()
    assert 0 < p95 <= 10
    published = read_manifest(stack.store, "predictions", MODEL, DRIFT_DAYS[-1])["rows"]
    assert values(f"sum(mlops_score_prediction_probability_count{{{churn}}})") == {"": published}
    assert values(f"mlops_score_version_rows_ratio{{{churn}}}") == {
        f"ds={DRIFT_DAYS[-1]},job=mlops_score,model={MODEL},version={champion}": 1.0
    }
    missing = values(f"max by (feature) (mlops_score_feature_missing_ratio{{{churn}}})")
    assert len(missing) >= 5 and all(0 <= rate <= 1 for rate in missing.values()), missing
    # The last monitoring window: drift per feature, and the retraining it triggered.
    drift = values(f"max by (feature) (mlops_monitor_feature_drift_score{{{churn}}})")
    assert set(drift) == set(missing), (drift, missing)
    assert values(f'mlops_monitor_decision{{{churn},action="retrain"}}') == {
        f"action=retrain,end={DRIFT_DAYS[-1]},job=mlops_monitor,model={MODEL}": 1.0
    }
    assert values(f"mlops_train_gate_passed{{{churn}}}") == {f"job=mlops_train,model={MODEL}": 1.0}
    # Run health: each job succeeded within the test.
    since = values(f"time() - mlops_last_success_timestamp_seconds{{{churn}}}")
    assert set(since) == {
        f"job={job},model={MODEL}" for job in ("mlops_monitor", "mlops_score", "mlops_train")
    }
    assert all(0 <= seconds < 1200 for seconds in since.values()), since
