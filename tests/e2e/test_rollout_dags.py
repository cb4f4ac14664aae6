"""End to end: a shadow period under the real DAGs (`dag.test()`, real MLflow, the file store).

The churn spec with `rollout: {shadow_days: 2}` (and the offline gates relaxed, so that a
candidate's fate is the live evidence's). v1 becomes champion at once (nothing to compare with);
v2 enters its shadow period instead of being promoted, is scored beside v1 on two days (the first
waits, the second decides) and is promoted with the numbers in the history. v3, a crippled model
the relaxed gates let through, is worse on the late labels: refused after its shadow day, with the
numbers recorded, its `challenger` alias removed, and the champion left where it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dag_runs import Run, run_dag
from mlflow import MlflowClient

from mlops_pipeline.layout import SHADOW
from mlops_pipeline.predictions import read_manifest
from mlops_pipeline.registry import promotion_history
from mlops_pipeline.rollout import shadow_outcome, shadow_started
from mlops_pipeline.store import LocalStore

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def write_spec(folder: Path, *, shadow_days: int, crippled: bool = False) -> Path:
    spec = yaml.safe_load((REPO / "include/models/churn.yaml").read_text())
    spec["rollout"] = {"shadow_days": shadow_days, "min_labels": 100, "max_live_regression": 0.02}
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
        "two_days": write_spec(root / "two-days", shadow_days=2),
        "crippled": write_spec(root / "crippled", shadow_days=1, crippled=True),
        "one_day": write_spec(root / "one-day", shadow_days=1),
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


def test_a_candidate_enters_its_shadow_period_instead_of_being_promoted(
    promoted_after_shadow, pipeline_env
) -> None:
    runs = promoted_after_shadow
    assert runs["v1"].tasks["promote"] == "success"  # the first model: nothing to compare with
    assert runs["v2"].state == "success" and runs["v2"].tasks["promote"] == "skipped", runs["v2"].tasks
    assert runs["v2_champion"] == "1"
    started = shadow_started(pipeline_env, "churn", "2")
    assert started is not None and (started.champion_version, started.shadow_days) == ("1", 2)


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
    assert client.get_model_version("churn", "3").tags["rollout"] == "refused"
    assert "challenger" not in client.get_registered_model("churn").aliases
    assert [r.to_version for r in promotion_history(pipeline_env, "churn")] == ["1", "2"]
