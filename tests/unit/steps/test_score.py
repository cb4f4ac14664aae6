"""The `<model>__score` task bodies outside Airflow, on the churn spec with a trained and promoted champion.

MLflow is real (a SQLite tracking/registry store and local artifacts in a temp dir), the store is a
file store holding the example data; the champion is trained once for the module through the
`steps.train` functions. Each test scores its own day, so the tests do not depend on their order.
"""

from __future__ import annotations

import datetime
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops_pipeline import layout, registry, steps
from mlops_pipeline.devtools.example_data import churn_scoring_batch, scoring_keys
from mlops_pipeline.layout import PREDICTIONS
from mlops_pipeline.predictions import read_manifest, read_partition
from mlops_pipeline.scoring import ScoreStats
from mlops_pipeline.spec import ModelSpec, load_spec
from mlops_pipeline.steps import score as score_steps
from mlops_pipeline.steps.results import ScoredInput, ScorePlan
from mlops_pipeline.store import LocalStore

from .champions import train_quick_champion

REPO = Path(__file__).resolve().parents[3]
ROWS_PER_DAY = 800
FILES_PER_DAY = 4
MINOR_DEFECT_DAY = datetime.date(2026, 2, 14)  # 8 of 800 rows break a quarantine rule
NO_INPUT_DAY = datetime.date(2026, 3, 20)  # no example data written for it
OVER_LIMIT_DAY = datetime.date(2026, 3, 21)  # an input crafted by a test, 10% of it unscorable


@pytest.fixture(scope="module")
def store(example_store) -> LocalStore:
    """The example data around the champion's window and the minor-defect day, with MLflow beside it."""
    return example_store(
        "score-steps",
        (datetime.date(2026, 2, 22), datetime.date(2026, 3, 3)),
        (MINOR_DEFECT_DAY, MINOR_DEFECT_DAY),
    )


@pytest.fixture(scope="module")
def champion(churn: ModelSpec, store: LocalStore) -> str:
    """A churn champion trained and promoted through the train steps; its version."""
    return train_quick_champion(churn, store)


def _run(day: datetime.date, name: str) -> steps.RunInfo:
    return steps.RunInfo("churn__score", f"{name}__{day}", "tester", f"{day}T00:00:00+00:00")


def _plan_and_score(
    spec: ModelSpec, store: LocalStore, day: datetime.date, run: steps.RunInfo
) -> tuple[ScorePlan, list[ScoredInput]]:
    plan = score_steps.plan(spec, store, day, None, False, run)
    return plan, [score_steps.score(spec, store, plan, item, run) for item in score_steps.inputs(plan)]


def _score_day(spec: ModelSpec, store: LocalStore, day: datetime.date, run: steps.RunInfo) -> dict[str, Any]:
    plan, results = _plan_and_score(spec, store, day, run)
    return dict(score_steps.publish(spec, store, plan, results, run))


# --- plan ----------------------------------------------------------------------------------------


def test_plan_resolves_the_champion_and_lists_the_days_inputs_in_key_order(
    churn: ModelSpec, store: LocalStore, champion: str
) -> None:
    """plan names the champion with its recorded sha256 and the day's input files, indexed in key order."""
    day = datetime.date(2026, 3, 1)
    plan = score_steps.plan(churn, store, day, None, False, _run(day, "plan"))
    version = registry.configured_client().get_model_version("churn", champion)
    assert plan["model"] == {
        "name": "churn",
        "version": champion,
        "model_uri": f"models:/churn/{champion}",
        "artifact_sha256": version.tags["artifact_sha256"],
    }
    assert plan["shadow_model"] is None and plan["shadow_requested"] is False
    assert plan["ds"] == "2026-03-01" and plan["input_root"] == store.root_uri
    keys = scoring_keys(day)
    assert len(keys) == FILES_PER_DAY and keys == sorted(keys)
    assert plan["inputs"] == [{"index": index, "key": key} for index, key in enumerate(keys)]


def test_plan_gives_every_call_a_unique_staging_token(
    churn: ModelSpec, store: LocalStore, champion: str
) -> None:
    """Two plans of the same run and try get different tokens, so a rerun never stages over published parts."""
    day = datetime.date(2026, 3, 1)
    run = _run(day, "token")
    tokens = {score_steps.plan(churn, store, day, None, False, run, attempt=1)["token"] for _ in range(3)}
    assert len(tokens) == 3
    assert all(token.startswith(f"{run.dag_run_id}-try1-") for token in tokens)


def test_the_model_is_resolved_once_per_run_at_plan(
    churn: ModelSpec, store: LocalStore, champion: str
) -> None:
    """score uses the version plan resolved, even when `champion` moves between plan and score."""
    client = registry.configured_client()
    current = client.get_model_version("churn", champion)
    other = client.create_model_version(
        name="churn",
        source=current.source,
        run_id=current.run_id,
        model_id=getattr(current, "model_id", None),
        tags=dict(current.tags),
    )
    day = datetime.date(2026, 3, 1)
    run = _run(day, "once")
    plan = score_steps.plan(churn, store, day, None, False, run)
    try:
        client.set_registered_model_alias("churn", registry.CHAMPION, other.version)
        moved = score_steps.plan(churn, store, day, None, False, run)
        result = score_steps.score(churn, store, plan, plan["inputs"][0], run)
    finally:
        client.set_registered_model_alias("churn", registry.CHAMPION, champion)
    assert moved["model"]["version"] == str(other.version) != champion, "the alias really moved"
    staged = pd.read_parquet(io.BytesIO(store.read_bytes(result["part"]["key"])))
    assert set(staged["model_version"].astype(str)) == {champion}


def test_plan_refuses_a_tampered_artifact_before_writing_anything(
    churn: ModelSpec, store: LocalStore, champion: str
) -> None:
    """plan checks the artifact's sha256 and refuses a changed file, with nothing written for the day."""
    version = registry.configured_client().get_model_version("churn", champion)
    model_id = version.source.removeprefix("models:/")
    (artifact,) = [p for p in (store.root.parent / "artifacts").rglob("model.skops") if model_id in str(p)]
    original = artifact.read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0x01
    artifact.write_bytes(bytes(tampered))
    day = datetime.date(2026, 2, 26)
    try:
        with pytest.raises(steps.StepRejected, match="refusing to load"):
            score_steps.plan(churn, store, day, None, False, _run(day, "tampered"))
    finally:
        artifact.write_bytes(original)
    assert store.list(layout.partition_prefix(PREDICTIONS, "churn", day.isoformat())) == []


def test_plan_refuses_a_day_without_input_files(churn: ModelSpec, store: LocalStore, champion: str) -> None:
    """plan refuses a day with no input files, naming the day and the input pattern."""
    with pytest.raises(steps.StepRejected) as refused:
        score_steps.plan(churn, store, NO_INPUT_DAY, None, False, _run(NO_INPUT_DAY, "empty"))
    message = str(refused.value)
    assert "no input files to score for churn on 2026-03-20" in message
    assert "'incoming/churn/ds={ds}/*.parquet'" in message and store.root_uri in message
    assert store.list(layout.partition_prefix(PREDICTIONS, "churn", NO_INPUT_DAY.isoformat())) == []


def test_plan_refuses_a_model_without_a_champion(churn: ModelSpec, store: LocalStore, champion: str) -> None:
    """plan refuses a model that has no champion (and no pinned version), saying so."""
    unpromoted = churn.model_copy(update={"name": "unpromoted"})
    day = datetime.date(2026, 3, 1)
    with pytest.raises(steps.StepRejected, match="unpromoted has no champion yet"):
        score_steps.plan(unpromoted, store, day, None, False, _run(day, "nochampion"))


def test_inputs_are_the_plans_inputs(churn: ModelSpec, store: LocalStore, champion: str) -> None:
    """inputs returns plan's input files, as a new list (mapping over it cannot change the plan)."""
    day = datetime.date(2026, 3, 1)
    plan = score_steps.plan(churn, store, day, None, False, _run(day, "inputs"))
    listed = score_steps.inputs(plan)
    assert listed == plan["inputs"] and len(listed) == FILES_PER_DAY
    listed.pop()
    assert len(plan["inputs"]) == FILES_PER_DAY


# --- score ---------------------------------------------------------------------------------------


def test_score_stages_one_part_per_input_under_the_runs_prefix_unpublished(
    churn: ModelSpec, store: LocalStore, champion: str
) -> None:
    """Each score stages one part per input file under the run's staging prefix, and nothing is published."""
    import hashlib

    day = datetime.date(2026, 3, 1)
    plan, results = _plan_and_score(churn, store, day, _run(day, "staged"))
    ds = day.isoformat()
    prefix = layout.staging_prefix(PREDICTIONS, "churn", ds, plan["token"])
    expected = [layout.part_key(PREDICTIONS, "churn", ds, plan["token"], i) for i in range(FILES_PER_DAY)]
    id_hashes = [layout.id_hashes_key("churn", ds, plan["token"], i) for i in range(FILES_PER_DAY)]
    assert [r["part"]["key"] for r in results] == expected
    assert [r["id_hashes_key"] for r in results] == id_hashes
    assert store.list(prefix) == sorted(expected + id_hashes)
    for result, item in zip(results, plan["inputs"], strict=True):
        assert result["index"] == item["index"] and result["input_key"] == item["key"]
        assert result["input_sha256"] == hashlib.sha256(store.read_bytes(item["key"])).hexdigest()
        assert result["part"]["sha256"] == hashlib.sha256(store.read_bytes(result["part"]["key"])).hexdigest()
        assert result["part"]["rows"] == ROWS_PER_DAY // FILES_PER_DAY == result["stats"]["rows_scored"]
        assert result["quarantine_key"] is None and result["classes"] == [0, 1]
    assert not store.exists(layout.manifest_key(PREDICTIONS, "churn", ds))
    assert read_partition(store, "churn", ds) is None


# --- publish -------------------------------------------------------------------------------------


def test_publish_writes_the_manifest_last_naming_exactly_the_staged_parts(
    churn: ModelSpec, store: LocalStore, champion: str
) -> None:
    """publish writes `_manifest.json` after the parts, naming exactly them, and returns what it says."""
    day = datetime.date(2026, 3, 2)
    run = _run(day, "publish")
    plan, results = _plan_and_score(churn, store, day, run)
    published = score_steps.publish(churn, store, plan, results, run)

    ds = day.isoformat()
    manifest = read_manifest(store, PREDICTIONS, "churn", ds)
    assert manifest is not None
    assert [f["key"] for f in manifest["files"]] == [r["part"]["key"] for r in results]
    assert [f["sha256"] for f in manifest["files"]] == [r["part"]["sha256"] for r in results]
    assert manifest["rows"] == manifest["input_rows"] == ROWS_PER_DAY and manifest["quarantined_rows"] == 0
    assert manifest["token"] == plan["token"] and manifest["run_id"] == run.dag_run_id
    assert published["manifest_uri"] == store.uri(layout.manifest_key(PREDICTIONS, "churn", ds))
    assert published["rows"] == manifest["rows"]
    assert published["model_version"] == manifest["model_version"] == champion
    assert published["generation"] == manifest["generation"] == 1
    assert published["metrics"]["rows_in"] == ROWS_PER_DAY
    assert read_partition(store, "churn", ds).num_rows == ROWS_PER_DAY

    written = store.root / layout.manifest_key(PREDICTIONS, "churn", ds)
    earlier = [store.root / r["part"]["key"] for r in results]
    earlier.append(store.root / layout.generation_key(PREDICTIONS, "churn", ds, 1))
    assert all(written.stat().st_mtime_ns >= path.stat().st_mtime_ns for path in earlier)

    client = registry.configured_client()
    logged = client.search_runs(
        [client.get_experiment_by_name("churn-scoring").experiment_id],
        filter_string=f"tags.`airflow.dag_run_id` = '{run.dag_run_id}'",
    )
    assert len(logged) == 1 and logged[0].data.metrics["rows_scored"] == ROWS_PER_DAY


def test_publish_counts_the_input_rows_minus_the_quarantined_ones(
    churn: ModelSpec, store: LocalStore, champion: str
) -> None:
    """Rows under the quarantine limit are left out: published rows = input rows - quarantined rows."""
    run = _run(MINOR_DEFECT_DAY, "minor")
    published = _score_day(churn, store, MINOR_DEFECT_DAY, run)
    manifest = read_manifest(store, PREDICTIONS, "churn", MINOR_DEFECT_DAY.isoformat())
    assert published["quarantined_rows"] == manifest["quarantined_rows"] == 8
    assert published["rows"] == manifest["rows"] == ROWS_PER_DAY - 8
    assert read_partition(store, "churn", MINOR_DEFECT_DAY.isoformat()).num_rows == ROWS_PER_DAY - 8
    reason_key = layout.score_quarantine_reason_key("churn", run.dag_run_id)
    assert manifest["quarantine_reason"] == store.uri(reason_key)
    reason = json.loads(store.read_bytes(reason_key))
    assert reason["rows"] == 8 and sum(reason["rules"].values()) >= 8
    quarantined = sum(len(pd.read_parquet(io.BytesIO(store.read_bytes(key)))) for key in reason["files"])
    assert quarantined == 8


def test_a_rerun_of_the_same_day_replaces_the_partition(
    churn: ModelSpec, store: LocalStore, champion: str
) -> None:
    """A rerun publishes generation 2 with a new file set (never old + new); older staging is cleaned later."""
    day = datetime.date(2026, 2, 27)
    ds = day.isoformat()
    run = _run(day, "rerun")
    first = _score_day(churn, store, day, run)
    before = read_manifest(store, PREDICTIONS, "churn", ds)
    second = _score_day(churn, store, day, run)
    after = read_manifest(store, PREDICTIONS, "churn", ds)

    assert (first["generation"], second["generation"], after["generation"]) == (1, 2, 2)
    assert {f["key"] for f in after["files"]}.isdisjoint(f["key"] for f in before["files"])
    assert [f["sha256"] for f in after["files"]] == [f["sha256"] for f in before["files"]]
    assert read_partition(store, "churn", ds).num_rows == ROWS_PER_DAY
    old_prefix = layout.staging_prefix(PREDICTIONS, "churn", ds, before["token"])
    # The previous generation's parts outlive one rerun (a reader may be mid-read), not two; the
    # id hashes staged beside them go with them.
    assert [key.endswith(".parquet") for key in store.list(old_prefix)].count(True) == FILES_PER_DAY
    third = _score_day(churn, store, day, run)
    assert third["generation"] == 3
    assert store.list(old_prefix) == []
    runs = store.list(layout.staging_root(PREDICTIONS, "churn", ds))
    assert len(runs) == 2 * 2 * FILES_PER_DAY


def test_a_fault_before_the_manifest_leaves_the_published_partition_unchanged(
    churn: ModelSpec, store: LocalStore, champion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash at `before_manifest` raises InjectedFault, the old manifest stays, and the next plan cleans up."""
    day = datetime.date(2026, 3, 3)
    ds = day.isoformat()
    _score_day(churn, store, day, _run(day, "first"))
    key = layout.manifest_key(PREDICTIONS, "churn", ds)
    published = store.read_bytes(key)

    run = _run(day, "crashed")
    plan, results = _plan_and_score(churn, store, day, run)
    monkeypatch.setenv(steps.FAULT_POINT_VAR, "before_manifest")
    with pytest.raises(steps.InjectedFault, match="before_manifest"):
        score_steps.publish(churn, store, plan, results, run)
    assert store.read_bytes(key) == published
    assert len(store.list(layout.generations_prefix(PREDICTIONS, "churn", ds))) == 1
    crashed = layout.staging_prefix(PREDICTIONS, "churn", ds, plan["token"])
    assert len(store.list(crashed)) == 2 * FILES_PER_DAY, "the crashed run's parts and id hashes stay, unread"
    assert read_partition(store, "churn", ds).num_rows == ROWS_PER_DAY

    monkeypatch.delenv(steps.FAULT_POINT_VAR)
    retry = score_steps.plan(churn, store, day, None, False, run, attempt=2)
    assert retry["stale_objects_deleted"] == 2 * FILES_PER_DAY and store.list(crashed) == []


def test_a_retried_score_and_publish_of_a_killed_worker_publish_one_generation_of_the_retrys_parts(
    churn: ModelSpec, store: LocalStore, champion: str
) -> None:
    """A score task killed after staging is retried: the retry stages its own file (named for its
    try), the manifest names that one and not the killed try's; a publish retried after the
    manifest was written (its worker died before the task ended) writes no second generation."""
    day = datetime.date(2026, 2, 25)
    ds = day.isoformat()
    run = _run(day, "killed")
    plan, results = _plan_and_score(churn, store, day, run)
    killed = results[1]["part"]["key"]  # what the killed try 1 of score[1] left staged
    results[1] = score_steps.score(churn, store, plan, plan["inputs"][1], run, attempt=2)
    retried = results[1]["part"]["key"]
    assert retried == layout.part_key(PREDICTIONS, "churn", ds, plan["token"], 1, attempt=2) != killed

    published = score_steps.publish(churn, store, plan, results, run)
    manifest = read_manifest(store, PREDICTIONS, "churn", ds)
    named = [part["key"] for part in manifest["files"]]
    assert retried in named and killed not in named and len(named) == FILES_PER_DAY
    assert read_partition(store, "churn", ds).num_rows == ROWS_PER_DAY

    again = score_steps.publish(churn, store, plan, results, run)
    assert again["generation"] == published["generation"] == manifest["generation"]
    assert len(store.list(layout.generations_prefix(PREDICTIONS, "churn", ds))) == 1
    assert read_manifest(store, PREDICTIONS, "churn", ds) == manifest


def test_publish_refuses_a_run_over_the_quarantine_limit(
    churn: ModelSpec, store: LocalStore, champion: str
) -> None:
    """Over spec.scoring.max_quarantine_share quarantined, publish refuses and publishes nothing, quarantine kept."""
    frame = churn_scoring_batch(OVER_LIMIT_DAY, rows=200)
    frame.loc[frame.index[:20], "plan"] = "gold"  # 10% of the rows, over the 5% limit
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    pattern = churn.scoring.input.uri.format(ds=OVER_LIMIT_DAY.isoformat())
    store.write_bytes(pattern.replace("*", "part-000"), buffer.getvalue())

    run = _run(OVER_LIMIT_DAY, "overlimit")
    plan, results = _plan_and_score(churn, store, OVER_LIMIT_DAY, run)
    assert [r["stats"]["rows_quarantined"] for r in results] == [20]
    with pytest.raises(
        steps.StepRejected,
        match=r"20 of 200 input rows \(10\.0%\).*over the limit of 5\.0%; nothing published",
    ):
        score_steps.publish(churn, store, plan, results, run)
    ds = OVER_LIMIT_DAY.isoformat()
    assert read_manifest(store, PREDICTIONS, "churn", ds) is None
    assert store.list(layout.generations_prefix(PREDICTIONS, "churn", ds)) == []
    reason = json.loads(store.read_bytes(layout.score_quarantine_reason_key("churn", run.dag_run_id)))
    assert reason["rows"] == 20 and reason["rules"] == {"allowed:plan": 20}
    (quarantine_key,) = reason["files"]
    rows = pd.read_parquet(io.BytesIO(store.read_bytes(quarantine_key)))
    assert sorted(rows["customer_id"]) == sorted(frame["customer_id"][:20])


# --- ids that more than one input file of a day holds -------------------------------------------

SHARED_IDS_DAY = datetime.date(2026, 3, 24)  # two crafted files, the second repeating 5 ids of the first
SHARED = 5


def _write_files_sharing_ids(churn: ModelSpec, store: LocalStore) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two input files of 200 rows; the first 5 rows of the second carry ids of the first file's first 5."""
    assert churn.scoring is not None
    frame = churn_scoring_batch(SHARED_IDS_DAY, rows=400)
    first, second = frame.iloc[:200].reset_index(drop=True), frame.iloc[200:].reset_index(drop=True)
    second.loc[: SHARED - 1, "customer_id"] = first["customer_id"][:SHARED].to_numpy()
    pattern = churn.scoring.input.uri.format(ds=SHARED_IDS_DAY.isoformat())
    for name, part in (("part-000", first), ("part-001", second)):
        buffer = io.BytesIO()
        part.to_parquet(buffer, index=False)
        store.write_bytes(pattern.replace("*", name), buffer.getvalue())
    return first, second


def _with_duplicate_policy(churn: ModelSpec, policy: str) -> ModelSpec:
    assert churn.scoring is not None
    return churn.model_copy(update={"scoring": churn.scoring.model_copy(update={"duplicate_ids": policy})})


def test_ids_held_by_two_files_of_a_day_are_quarantined_in_both_and_the_rest_published(
    churn: ModelSpec, store: LocalStore, champion: str
) -> None:
    """Each score task sees one file; publish sees the day: every row of an id that two files hold
    breaks unique:<id> (as within one file), is quarantined from both files, and is not published.
    The files are scored again for it, their first parts deleted, the manifest naming the new ones."""
    first, second = _write_files_sharing_ids(churn, store)
    ds = SHARED_IDS_DAY.isoformat()
    run = _run(SHARED_IDS_DAY, "shared_ids")
    plan, results = _plan_and_score(churn, store, SHARED_IDS_DAY, run)
    assert [r["stats"]["rows_quarantined"] for r in results] == [0, 0], "no file repeats an id of its own"

    published = score_steps.publish(churn, store, plan, results, run)
    shared = set(first["customer_id"][:SHARED])
    assert published["quarantined_rows"] == 2 * SHARED and published["rows"] == 400 - 2 * SHARED
    table = read_partition(store, "churn", ds).to_pandas()
    assert len(table) == 400 - 2 * SHARED and table["id"].is_unique
    assert shared.isdisjoint(table["id"])
    assert set(table["id"]) == set(first["customer_id"][SHARED:]) | set(second["customer_id"][SHARED:])

    manifest = read_manifest(store, PREDICTIONS, "churn", ds)
    assert [f["key"] for f in manifest["files"]] == [
        layout.rescored_part_key(r["part"]["key"]) for r in results
    ]
    assert manifest["input_rows"] == 400 and manifest["quarantined_rows"] == 2 * SHARED
    assert not any(store.exists(r["part"]["key"]) for r in results), "the replaced parts are deleted"

    reason = json.loads(store.read_bytes(layout.score_quarantine_reason_key("churn", run.dag_run_id)))
    assert reason["rules"] == {"unique:customer_id": 2 * SHARED} and reason["rows"] == 2 * SHARED
    assert reason["files_sharing_ids"] == [r["input_key"] for r in results]
    quarantined = pd.concat([pd.read_parquet(io.BytesIO(store.read_bytes(key))) for key in reason["files"]])
    assert sorted(quarantined["customer_id"]) == sorted(2 * list(shared))
    assert set(quarantined["_reasons"]) == {"unique:customer_id"}

    again = score_steps.publish(churn, store, plan, results, run)
    assert again["generation"] == published["generation"], "a retried publish scores again to the same bytes"
    assert len(store.list(layout.generations_prefix(PREDICTIONS, "churn", ds))) == 1


def test_ids_held_by_two_files_are_left_out_of_the_shadow_partition_too(
    churn: ModelSpec, store: LocalStore, champion: str
) -> None:
    """With a challenger scoring in shadow, its partition is scored again the same way: the same rows out."""
    from mlops_pipeline.layout import SHADOW

    _write_files_sharing_ids(churn, store)
    client = registry.configured_client()
    current = client.get_model_version("churn", champion)
    challenger = client.create_model_version(
        name="churn", source=current.source, run_id=current.run_id, tags=dict(current.tags)
    )
    client.set_registered_model_alias("churn", registry.CHALLENGER, challenger.version)
    try:
        run = _run(SHARED_IDS_DAY, "shared_ids_shadow")
        plan = score_steps.plan(churn, store, SHARED_IDS_DAY, None, True, run)
        results = [score_steps.score(churn, store, plan, item, run) for item in score_steps.inputs(plan)]
        published = score_steps.publish(churn, store, plan, results, run)
    finally:
        client.delete_registered_model_alias("churn", registry.CHALLENGER)
    ds = SHARED_IDS_DAY.isoformat()
    assert published["shadow_version"] == str(challenger.version)
    shadow = read_manifest(store, SHADOW, "churn", ds)
    assert [f["key"] for f in shadow["files"]] == [
        layout.rescored_part_key(r["shadow_part"]["key"]) for r in results if r["shadow_part"]
    ]
    primary = read_partition(store, "churn", ds).to_pandas()
    shadowed = read_partition(store, "churn", ds, SHADOW).to_pandas()
    assert len(shadowed) == 400 - 2 * SHARED and sorted(shadowed["id"]) == sorted(primary["id"])
    assert not any(store.exists(r["shadow_part"]["key"]) for r in results if r["shadow_part"])


def test_a_day_whose_files_share_no_id_is_published_as_scored(
    churn: ModelSpec, store: LocalStore, champion: str
) -> None:
    """Ids repeated in the day only count across files: a clean multi-file day keeps the parts its
    score tasks staged (nothing scored twice)."""
    day = datetime.date(2026, 2, 24)
    run = _run(day, "no_shared_ids")
    plan, results = _plan_and_score(churn, store, day, run)
    again, replaced = score_steps.rescore_files_with_ids_of_other_files(churn, store, plan, results, run)
    assert again == results and replaced == []


def test_ids_held_by_two_files_refuse_the_day_under_policy_fail_and_are_published_under_warn(
    churn: ModelSpec, store: LocalStore, champion: str
) -> None:
    """scoring.duplicate_ids applies across files as within one: `fail` refuses the day naming the
    files, nothing published; `warn` publishes every row and counts the warning."""
    _write_files_sharing_ids(churn, store)
    ds = SHARED_IDS_DAY.isoformat()
    failing = _with_duplicate_policy(churn, "fail")
    run = _run(SHARED_IDS_DAY, "shared_ids_fail")
    plan, results = _plan_and_score(failing, store, SHARED_IDS_DAY, run)
    before = read_manifest(store, PREDICTIONS, "churn", ds)
    with pytest.raises(
        steps.StepRejected,
        match=rf"{SHARED} id\(s\) of churn on {ds} occur in more than one input file "
        r"\(.*part-000.parquet, .*part-001.parquet\).*unique:customer_id",
    ):
        score_steps.publish(failing, store, plan, results, run)
    assert read_manifest(store, PREDICTIONS, "churn", ds) == before

    warning = _with_duplicate_policy(churn, "warn")
    run = _run(SHARED_IDS_DAY, "shared_ids_warn")
    plan, results = _plan_and_score(warning, store, SHARED_IDS_DAY, run)
    published = score_steps.publish(warning, store, plan, results, run)
    assert published["rows"] == 400 and published["quarantined_rows"] == 0
    assert read_partition(store, "churn", ds).num_rows == 400


# --- scoring_metrics -----------------------------------------------------------------------------


def test_scoring_metrics_are_computed_from_the_stats_alone(churn: ModelSpec) -> None:
    """scoring_metrics is a pure function of the stats, the wall time and the agreement."""
    stats = ScoreStats(
        rows_in=10,
        rows_scored=8,
        rows_quarantined=2,
        quarantined_by_rule={"allowed:plan": 2},
        nulls_by_feature={"total_charges": 2, "satisfaction_score": 0},
        predicted_labels={"0": 6, "1": 2},
        prediction_sum=3.2,
        seconds=0.25,
    )
    snapshot = stats.to_dict()
    metrics = score_steps.scoring_metrics(churn, stats, 2.0, None)
    assert metrics == {
        "rows_in": 10.0,
        "rows_scored": 8.0,
        "rows_quarantined": 2.0,
        "seconds": 2.0,
        "scoring_seconds": 0.25,
        "rows_per_s": 5.0,
        "prediction_mean": pytest.approx(0.4),
        "predicted_share.0": 0.75,
        "predicted_share.1": 0.25,
        "missing_rate.total_charges": 0.25,
        "missing_rate.satisfaction_score": 0.0,
    }
    assert stats.to_dict() == snapshot, "the stats are not changed"
    assert score_steps.scoring_metrics(churn, stats, 2.0, None) == metrics
    shadow = score_steps.scoring_metrics(
        churn, stats, 2.0, {"label_agreement": 0.9, "mean_abs_diff": 0.05, "rows": 8}
    )
    assert shadow == {**metrics, "shadow_label_agreement": 0.9, "shadow_mean_abs_diff": 0.05}


def test_scoring_metrics_of_a_regression_give_the_predictions_spread() -> None:
    """For a regression, scoring_metrics reports the predictions' mean and standard deviation."""
    diabetes = load_spec(REPO / "include/models/diabetes.yaml")
    stats = ScoreStats(rows_in=4, rows_scored=4, prediction_sum=10.0, prediction_sq_sum=30.0)
    metrics = score_steps.scoring_metrics(diabetes, stats, 1.0, None)
    assert metrics["prediction_mean"] == 2.5 and metrics["prediction_std"] == pytest.approx(1.118, abs=1e-3)
    assert not any(name.startswith("predicted_share.") for name in metrics)


# --- day volume: scoring.min_rows and scoring.allow_empty ----------------------------------------

EMPTY_DAY = datetime.date(2026, 3, 23)  # a crafted input with a schema and no rows


def _write_empty_input(churn: ModelSpec, store: LocalStore) -> None:
    assert churn.scoring is not None
    buffer = io.BytesIO()
    churn_scoring_batch(EMPTY_DAY, rows=10).iloc[:0].to_parquet(buffer, index=False)
    pattern = churn.scoring.input.uri.format(ds=EMPTY_DAY.isoformat())
    store.write_bytes(pattern.replace("*", "part-000"), buffer.getvalue())


def test_a_day_without_rows_is_refused_unless_the_spec_allows_an_empty_day(
    churn: ModelSpec, store: LocalStore, champion: str
) -> None:
    """By default an empty day fails naming the rule and the files; with allow_empty it publishes an
    explicitly empty partition."""
    assert churn.scoring is not None
    _write_empty_input(churn, store)
    ds = EMPTY_DAY.isoformat()
    run = _run(EMPTY_DAY, "empty")
    with pytest.raises(
        steps.StepRejected, match=r"on 2026-03-23 \(.*part-000.parquet\) hold no rows \(rule min_rows\)"
    ):
        _score_day(churn, store, EMPTY_DAY, run)
    assert read_manifest(store, PREDICTIONS, "churn", ds) is None

    allowing = churn.model_copy(
        update={"scoring": churn.scoring.model_copy(update={"allow_empty": True, "min_rows": 0})}
    )
    published = _score_day(allowing, store, EMPTY_DAY, _run(EMPTY_DAY, "allowed_empty"))
    manifest = read_manifest(store, PREDICTIONS, "churn", ds)
    assert manifest is not None and manifest["empty_day"] is True and published["rows"] == 0


def test_a_day_with_fewer_rows_than_min_rows_is_refused(
    churn: ModelSpec, store: LocalStore, champion: str
) -> None:
    assert churn.scoring is not None
    demanding = churn.model_copy(update={"scoring": churn.scoring.model_copy(update={"min_rows": 10_000})})
    day = datetime.date(2026, 3, 2)
    with pytest.raises(steps.StepRejected, match=r"hold 800 rows, fewer than scoring.min_rows 10000"):
        _score_day(demanding, store, day, _run(day, "too_few"))
