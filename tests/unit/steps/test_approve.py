"""`<model>__approve`'s steps outside Airflow, on the real diabetes data and a real (SQLite) MLflow
registry: what each answer does to the registry, the promotion history and the version's tags.
The wait itself (Airflow's Human-in-the-loop step, its timeout and supersession) runs under the
real scheduler and triggerer in tests/system/test_rollout.py."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_pipeline import approval, registry, steps
from mlops_pipeline.devtools.example_data import DIABETES_DS, write_example_data
from mlops_pipeline.settings import get_settings
from mlops_pipeline.spec import ModelSpec, load_spec
from mlops_pipeline.steps import approve
from mlops_pipeline.steps import train as train_steps
from mlops_pipeline.steps.results import Registered
from mlops_pipeline.store import LocalStore

from ..test_approval import answer

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def diabetes() -> ModelSpec:
    return load_spec(REPO / "include/models/diabetes.yaml")


@pytest.fixture(scope="module")
def store(tmp_path_factory, monkeypatch_module) -> Iterator[LocalStore]:
    import mlflow

    root = tmp_path_factory.mktemp("approve")
    store = LocalStore(root / "store")
    write_example_data(store, start=datetime.date(2026, 3, 9), end=datetime.date(2026, 3, 9))
    monkeypatch_module.chdir(root)
    monkeypatch_module.setenv("MLOPS_STORE_URI", store.root_uri)
    monkeypatch_module.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    monkeypatch_module.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    get_settings.cache_clear()
    registry.connect(f"sqlite:///{root}/mlflow.db")
    mlflow.create_experiment("diabetes", artifact_location=(root / "artifacts").as_uri())
    yield store
    get_settings.cache_clear()
    mlflow.set_tracking_uri(None)


def a_candidate(spec: ModelSpec, store: LocalStore, n: int) -> Registered:
    """Train and register one candidate of diabetes, as `<model>__train` run `train_<n>` does."""
    run = steps.RunInfo("diabetes__train", f"train_{n}", "scheduler", f"2026-03-0{n}T00:00:00+00:00")
    manifest = train_steps.ingest(spec, store, DIABETES_DS, None)
    validated = train_steps.validate(spec, store, manifest, run)
    candidate = train_steps.train(spec, store, manifest, validated, run)
    evaluation = train_steps.evaluate(spec, store, validated, candidate, run)
    return train_steps.register(spec, manifest, candidate, evaluation, run)


def approve_run(version: str) -> steps.RunInfo:
    return steps.RunInfo(
        "diabetes__approve", f"v{version}__approval", "scheduler", "2026-03-09T00:00:00+00:00"
    )


def test_an_approved_candidate_becomes_champion_in_its_approvers_name(diabetes, store) -> None:
    version = a_candidate(diabetes, store, 1)["version"]
    run = approve_run(version)
    asked = approve.request(diabetes, store, version, "2026-03-09", run)
    assert asked["gate_report_path"] == "/mlops/runs/diabetes__train/train_1/gate-report"
    assert set(asked["holdout_metrics"]) >= {"rmse", "r2"} and asked["champion_version"] is None

    decided = approve.decide(diabetes, store, asked, answer(["Promote"], "rmse within budget"), run)
    promoted = approve.promote(diabetes, store, decided, run)

    assert isinstance(promoted, dict) and promoted["champion_version"] == version
    assert (promoted["actor"], promoted["reason"]) == (
        "alice",
        "passed its gates; approved by alice: rmse within budget",
    )
    client = registry.configured_client()
    assert registry.alias_version(client, "diabetes", registry.CHAMPION).version == int(version)
    tags = client.get_model_version("diabetes", version).tags
    assert (tags["approval"], tags["approval_by"], tags["approval_reason"]) == (
        "approved",
        "alice",
        "rmse within budget",
    )


def test_a_rejection_is_in_the_promotion_history_with_who_and_why_and_moves_nothing(diabetes, store) -> None:
    client = registry.configured_client()
    champion_before = registry.alias_version(client, "diabetes", registry.CHAMPION)
    version = a_candidate(diabetes, store, 2)["version"]
    assert registry.alias_version(client, "diabetes", registry.CHALLENGER).version == int(version)
    run = approve_run(version)
    asked = approve.request(diabetes, store, version, None, run)

    decided = approve.decide(
        diabetes, store, asked, answer(["Reject"], "residuals grow with age", user="bob"), run
    )

    assert (
        not decided["approved"]
        and decided["summary"] == f"diabetes v{version} rejected by bob: residuals grow with age"
    )
    refusal = registry.promotion_history(store, "diabetes")[-1]
    assert (refusal.action, refusal.to_version, refusal.actor) == ("reject", version, "bob")
    assert "residuals grow with age" in refusal.reason
    assert refusal.from_version == str(champion_before.version)
    assert registry.alias_version(client, "diabetes", registry.CHAMPION).version == champion_before.version
    assert registry.alias_version(client, "diabetes", registry.CHALLENGER) is None
    with pytest.raises(steps.StepRejected, match="not approved"):
        approve.promote(diabetes, store, decided, run)
    # A retry of decide (or a second answer) changes nothing; a new run about it is refused.
    again = approve.decide(diabetes, store, asked, answer(["Promote"], "changed my mind"), run)
    assert again == decided
    assert [r.action for r in registry.promotion_history(store, "diabetes")].count("reject") == 1
    with pytest.raises(steps.StepRejected, match=r"already decided: .* rejected by bob"):
        approve.request(diabetes, store, version, None, approve_run(version))


def test_no_answer_in_time_is_a_recorded_refusal_by_the_timeout(diabetes, store) -> None:
    version = a_candidate(diabetes, store, 3)["version"]
    run = approve_run(version)
    asked = approve.request(diabetes, store, version, None, run)
    decided = approve.decide(diabetes, store, asked, answer(["Reject"], user=None), run)
    assert (decided["outcome"], decided["by"], decided["reason"]) == (
        "timed_out",
        "timeout",
        "no answer within 3 days",
    )
    refusal = registry.promotion_history(store, "diabetes")[-1]
    assert (refusal.action, refusal.to_version, refusal.actor) == ("reject", version, "timeout")
    assert approval.recorded_decision(store, "diabetes", version).outcome == "timed_out"


def test_an_older_candidate_approved_after_a_newer_one_registered_is_superseded(diabetes, store) -> None:
    client = registry.configured_client()
    champion_before = registry.alias_version(client, "diabetes", registry.CHAMPION).version
    older = a_candidate(diabetes, store, 4)["version"]
    asked = approve.request(diabetes, store, older, None, approve_run(older))
    newer = a_candidate(diabetes, store, 5)["version"]

    decided = approve.decide(diabetes, store, asked, answer(["Promote"], "looks good"), approve_run(older))

    assert decided["outcome"] == "superseded" and not decided["approved"]
    assert decided["reason"] == f"superseded by v{newer}, a newer candidate"
    assert registry.alias_version(client, "diabetes", registry.CHAMPION).version == champion_before
    # The newer candidate keeps `challenger`: the refusal of the older one does not take it.
    assert registry.alias_version(client, "diabetes", registry.CHALLENGER).version == int(newer)


def test_a_version_that_does_not_exist_is_not_asked_about(diabetes, store) -> None:
    with pytest.raises(steps.StepRejected, match="does not exist"):
        approve.request(diabetes, store, "999", None, approve_run("999"))
