"""End to end: a shadow period and an automatic rollback under the real DAGs (`dag.test()`, real MLflow, the file store).

The churn spec with `rollout: {shadow_days: 2}` (and the offline gates relaxed, so that a
candidate's fate is the live evidence's). v1 becomes champion at once (nothing to compare with);
v2 enters its shadow period instead of being promoted, is scored beside v1 on two days (the first
waits, the second decides) and is promoted with the numbers in the history. v3, a crippled model
the relaxed gates let through, is worse on the late labels: refused after its shadow day, with the
numbers recorded, its `challenger` alias removed, and the champion left where it was.

Then, without a shadow period but with `rollout.rollback`, a crippled v4 is promoted at once;
the monitor sees its late labels far below v2's on the same window and triggers
`churn__rollback` once (an alert reaches a local webhook); the rollback restores v2, queues the
re-scoring of the day v4 published, and v4 can never be champion again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from dag_runs import Run, run_dag
from mlflow import MlflowClient

from mlops_pipeline.canary import canary_mask
from mlops_pipeline.layout import PREDICTIONS, SHADOW
from mlops_pipeline.predictions import read_manifest, read_partition
from mlops_pipeline.registry import promotion_history
from mlops_pipeline.rollout import shadow_outcome, shadow_started
from mlops_pipeline.store import LocalStore

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
CANARY_SHARE = 0.25


def write_spec(
    folder: Path, *, shadow_days: int, crippled: bool = False, watched: bool = False, canary: float = 0.0
) -> Path:
    spec = yaml.safe_load((REPO / "include/models/churn.yaml").read_text())
    spec["rollout"] = {"shadow_days": shadow_days, "min_labels": 100, "max_live_regression": 0.02}
    if canary:
        spec["rollout"]["canary_share"] = canary
    if watched:
        spec["rollout"]["rollback"] = {"max_live_drop": 0.05, "min_labels": 100}
    spec["gates"] |= {"floors": {"roc_auc": 0.5}, "max_regression": 1.0, "slices": []}
    if crippled:
        spec["estimator"]["params"] = {"max_iter": 1, "max_depth": 1, "learning_rate": 0.01}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "churn.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def client(mlflow_server) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rollout-specs")
    return {
        "two_days": write_spec(root / "two-days", shadow_days=2, canary=CANARY_SHARE),
        "crippled": write_spec(root / "crippled", shadow_days=1, crippled=True),
        "one_day": write_spec(root / "one-day", shadow_days=1),
        "watched": write_spec(root / "watched", shadow_days=0, crippled=True, watched=True),
    }


def in_models(monkeypatch, folder: Path, dag_id: str, conf: dict) -> Run:
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(folder))
    return run_dag(dag_id, conf)


@pytest.fixture(scope="module")
def promoted_after_shadow(pipeline_env, specs, monkeypatch_module, client) -> dict[str, Run]:
    runs = {
        "v1": in_models(
            monkeypatch_module, specs["two_days"], "churn__train", {"as_of": "2026-02-21", "window_days": 7}
        ),
        "v2": in_models(
            monkeypatch_module, specs["two_days"], "churn__train", {"as_of": "2026-02-28", "window_days": 7}
        ),
    }
    runs["v2_champion"] = client.get_model_version_by_alias("churn", "champion").version
    runs["day1"] = in_models(monkeypatch_module, specs["two_days"], "churn__score", {"ds": "2026-03-01"})
    runs["day2"] = in_models(monkeypatch_module, specs["two_days"], "churn__score", {"ds": "2026-03-02"})
    return runs


def test_the_canary_publishes_a_stable_share_of_ids_from_the_challenger(
    promoted_after_shadow, pipeline_env
) -> None:
    for ds in ("2026-03-01", "2026-03-02"):
        manifest = read_manifest(pipeline_env, PREDICTIONS, "churn", ds)
        table = read_partition(pipeline_env, "churn", ds)
        ids = table.column("id").to_pylist()
        versions = np.asarray([str(v) for v in table.column("model_version").to_pylist()])
        # Each row's version is a function of its id alone: the same id, the same version, any day.
        assert (versions == np.where(canary_mask(ids, CANARY_SHARE, "churn"), "2", "1")).all(), ds
        assert manifest["rows_by_version"] == {
            "1": int((versions == "1").sum()),
            "2": int((versions == "2").sum()),
        }
        assert abs(manifest["rows_by_version"]["2"] / len(ids) - CANARY_SHARE) < 0.06, manifest[
            "rows_by_version"
        ]
        assert manifest["model_version"] == "1" and manifest["canary_share"] == CANARY_SHARE


def test_a_candidate_enters_its_shadow_period_instead_of_being_promoted(
    promoted_after_shadow, pipeline_env, client
) -> None:
    runs = promoted_after_shadow
    assert runs["v1"].tasks["promote"] == "success"  # the first model: nothing to compare with
    assert runs["v2"].state == "success" and runs["v2"].tasks["promote"] == "skipped", runs["v2"].tasks
    assert runs["v2_champion"] == "1"
    started = shadow_started(pipeline_env, "churn", "2")
    assert started is not None and (started.champion_version, started.shadow_days) == ("1", 2)
    # Promoted since: the tags show the period's end, with its reasons.
    assert client.get_model_version("churn", "2").tags["rollout_reason"].startswith("live roc_auc v2 ")


def test_the_challenger_is_scored_beside_the_champion_and_promoted_on_its_evidence(
    promoted_after_shadow, pipeline_env: LocalStore, client
) -> None:
    runs = promoted_after_shadow
    assert runs["day1"].state == "success" and runs["day1"].tasks["conclude_shadow"] == "skipped"
    for ds in ("2026-03-01", "2026-03-02"):
        shadow = read_manifest(pipeline_env, SHADOW, "churn", ds)
        assert shadow is not None and (shadow["model_version"], shadow["champion_version"]) == ("2", "1"), ds
    assert runs["day2"].tasks["conclude_shadow"] == "success", runs["day2"].tasks
    assert client.get_model_version_by_alias("churn", "champion").version == "2"

    outcome = shadow_outcome(pipeline_env, "churn", "2")
    assert outcome is not None and outcome.decision.action == "promote"
    assert outcome.evidence.days == ["2026-03-01", "2026-03-02"]
    assert (
        outcome.evidence.live["2"]["labelled_rows"] >= 100
        and outcome.evidence.live["1"]["labelled_rows"] >= 100
    )
    last = promotion_history(pipeline_env, "churn")[-1]
    assert (last.from_version, last.to_version) == ("1", "2")
    assert last.reason.startswith("shadow period: live roc_auc v2 ") and "no worse" in last.reason
    assert client.get_model_version("churn", "2").tags["rollout"] == "promoted"


@pytest.fixture(scope="module")
def refused(promoted_after_shadow, specs, monkeypatch_module) -> dict[str, Run]:
    return {
        "v3": in_models(
            monkeypatch_module, specs["crippled"], "churn__train", {"as_of": "2026-02-28", "window_days": 7}
        ),
        "day3": in_models(monkeypatch_module, specs["one_day"], "churn__score", {"ds": "2026-03-03"}),
    }


def test_a_challenger_worse_on_the_late_labels_is_refused_and_recorded(refused, pipeline_env, client) -> None:
    assert refused["v3"].tasks["promote"] == "skipped", refused["v3"].tasks
    assert refused["day3"].state == "success" and refused["day3"].tasks["conclude_shadow"] == "skipped"
    assert client.get_model_version_by_alias("churn", "champion").version == "2"
    outcome = shadow_outcome(pipeline_env, "churn", "3")
    assert outcome is not None and outcome.decision.action == "refuse", outcome
    assert "live roc_auc v3 " in outcome.decision.reasons[0] and outcome.decision.reasons[0].endswith(
        ": worse"
    )
    assert outcome.evidence.live["3"]["roc_auc"] < outcome.evidence.live["2"]["roc_auc"] - 0.02
    tags = client.get_model_version("churn", "3").tags
    assert tags["rollout"] == "refused" and tags["rollout_reason"].startswith("live roc_auc v3 ")
    assert "challenger" not in client.get_registered_model("churn").aliases
    assert [r.to_version for r in promotion_history(pipeline_env, "churn")] == ["1", "2"]


def operator_triggered(dag_id: str) -> list[dict]:
    """The confs of the runs of `dag_id` that another DAG's task triggered (not `dag.test()`)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType

    with create_session() as session:
        runs = DagRun.find(dag_id=dag_id, session=session)
        return [dict(r.conf or {}) for r in runs if r.triggered_by == DagRunTriggeredByType.OPERATOR]


@pytest.fixture(scope="module")
def webhook(monkeypatch_module, alert_sink, webhook_env) -> list[dict]:
    """The alerts of this module's runs, as a local webhook received them."""
    url, received = alert_sink
    for name, value in webhook_env(url).items():
        monkeypatch_module.setenv(name, value)
    return received


@pytest.fixture(scope="module")
def rolled_back(refused, specs, monkeypatch_module, webhook) -> dict[str, object]:
    watched = specs["watched"]
    runs: dict[str, object] = {
        "v4": in_models(
            monkeypatch_module, watched, "churn__train", {"as_of": "2026-02-28", "window_days": 7}
        ),
    }
    runs["day4"] = in_models(monkeypatch_module, watched, "churn__score", {"ds": "2026-03-04"})
    runs["monitor"] = in_models(
        monkeypatch_module, watched, "churn__monitor", {"end": "2026-03-04", "window_days": 2}
    )
    (conf,) = operator_triggered("churn__rollback")
    runs["rollback_conf"] = conf
    runs["rollback"] = in_models(monkeypatch_module, watched, "churn__rollback", conf)
    runs["rescore_confs"] = operator_triggered("churn__score")
    runs["rescored"] = [
        in_models(monkeypatch_module, watched, "churn__score", c) for c in runs["rescore_confs"]
    ]
    runs["monitor_again"] = in_models(
        monkeypatch_module, watched, "churn__monitor", {"end": "2026-03-04", "window_days": 2}
    )
    runs["back_to_v4"] = in_models(
        monkeypatch_module, watched, "churn__rollback", {"to_version": 4, "reason": "try it again"}
    )
    return runs


def test_a_worse_new_champion_is_rolled_back_automatically_once(
    rolled_back, pipeline_env, client, webhook
) -> None:
    runs = rolled_back
    assert runs["v4"].tasks["promote"] == "success"  # no shadow period in this spec: promoted at once
    assert runs["day4"].state == "success"
    assert read_manifest(pipeline_env, PREDICTIONS, "churn", "2026-03-04")["model_version"] == "2"  # rescored
    monitor = runs["monitor"]
    assert monitor.state == "success" and monitor.tasks["rollback"] == "success", monitor.tasks
    conf = runs["rollback_conf"]
    assert conf["to_version"] == 2
    assert conf["reason"].startswith("automatic: live roc_auc of champion v4 ")
    assert "over the limit of 0.05" in conf["reason"]
    alerts = [a["text"] for a in webhook if "rolled back automatically" in a["text"]]
    assert len(alerts) == 1 and "champion v4" in alerts[0]

    assert runs["rollback"].state == "success", runs["rollback"].tasks
    assert client.get_model_version_by_alias("churn", "champion").version == "2"
    last = promotion_history(pipeline_env, "churn")[-1]
    assert (last.action, last.from_version, last.to_version) == ("rollback", "4", "2")
    assert runs["rescore_confs"] == [{"ds": "2026-03-04"}]  # the one day v4 published
    assert all(run.state == "success" for run in runs["rescored"])


def test_the_rollback_fires_once_and_the_rolled_back_version_never_returns(rolled_back, client) -> None:
    again = rolled_back["monitor_again"]
    assert again.state == "success" and again.tasks["rollback"] == "skipped"
    assert len(operator_triggered("churn__rollback")) == 1
    assert client.get_model_version("churn", "4").tags["rolled_back_at"]
    assert rolled_back["back_to_v4"].state == "failed"
    assert client.get_model_version_by_alias("churn", "champion").version == "2"
