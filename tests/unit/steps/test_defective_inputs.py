"""The defective-input corpus (`defective_inputs.py`) through the real task bodies, on a file store.

Training files go through `steps.train.ingest` and `validate`; scoring files through
`steps.score.plan`, `score` (each input file) and `publish`, with a champion trained for the module.
Each file is refused with a message naming the file and the rule (nothing published, no snapshot
for an unreadable file, a record under `quarantine/`), or its bad rows are quarantined under the
named rule and the rest goes on; format variants are read as the clean file. No defect leads to a
promotion, and no refused scoring day has a manifest under `predictions/`.
"""

from __future__ import annotations

import datetime
import io
import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest

from mlops_pipeline import layout, steps
from mlops_pipeline.layout import PREDICTIONS
from mlops_pipeline.predictions import read_manifest, read_partition
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.steps import score as score_steps
from mlops_pipeline.steps import train as train_steps
from mlops_pipeline.store import LocalStore

from .champions import train_quick_champion
from .defective_inputs import Defect, scoring_defects, training_defects

pytestmark = pytest.mark.slow

TRAINING = training_defects()
SCORING = scoring_defects()
FIRST_TRAINING_DAY = datetime.date(2026, 6, 1)
FIRST_SCORING_DAY = datetime.date(2026, 7, 1)


def _day(first: datetime.date, defects: list[Defect], defect: Defect) -> datetime.date:
    """Each defect lands on a day of its own, so the cases do not see each other."""
    return first + datetime.timedelta(days=defects.index(defect))


@pytest.fixture(scope="module")
def store(example_store) -> LocalStore:
    return example_store("defects", (datetime.date(2026, 2, 22), datetime.date(2026, 2, 28)))


@pytest.fixture(scope="module")
def champion(churn: ModelSpec, store: LocalStore) -> str:
    return train_quick_champion(churn, store)


def _variant(spec: ModelSpec, kind: str) -> ModelSpec:
    """The churn spec for a kind of defect: Parquet training sources, CSV scoring inputs."""
    assert spec.scoring is not None
    if kind == "train_parquet":
        source = spec.source.model_copy(
            update={"uri": "landing/churn/ds={ds}/*.parquet", "format": "parquet"}
        )
        return spec.model_copy(update={"source": source})
    if kind == "score_csv":
        scoring_input = spec.scoring.input.model_copy(
            update={"uri": "incoming/churn/ds={ds}/*.csv", "format": "csv"}
        )
        return spec.model_copy(update={"scoring": spec.scoring.model_copy(update={"input": scoring_input})})
    return spec


@dataclass(frozen=True)
class Outcome:
    """What the steps did with one defective file."""

    outcome: str
    message: str
    payload: dict[str, Any]


def _run(dag: str, defect: Defect, day: datetime.date) -> steps.RunInfo:
    return steps.RunInfo(
        dag, f"manual__defect_{defect.kind}_{defect.name}", "tester", f"{day}T00:00:00+00:00"
    )


# --- training ------------------------------------------------------------------------------------


def _train(spec: ModelSpec, store: LocalStore, defect: Defect, day: datetime.date) -> Outcome:
    store.write_bytes(f"landing/churn/ds={day}/{defect.filename}", defect.data)
    run = _run("churn__train", defect, day)
    manifest: dict[str, Any] = {}
    try:
        manifest = dict(train_steps.ingest(spec, store, day, 1))
        validated = train_steps.validate(spec, store, manifest, run)  # type: ignore[arg-type]
    except steps.StepRejected as exc:
        return Outcome("refused", str(exc), manifest)
    outcome = "quarantined" if validated["quarantined_rows"] else "accepted"
    return Outcome(outcome, "", {**manifest, **validated, "run_id": run.dag_run_id})


@pytest.mark.parametrize("defect", TRAINING, ids=[f"train-{d.name}" for d in TRAINING])
def test_a_defective_training_file_is_refused_or_quarantined_under_its_rule(
    churn: ModelSpec, store: LocalStore, champion: str, defect: Defect
) -> None:
    spec = _variant(churn, defect.kind)
    day = _day(FIRST_TRAINING_DAY, TRAINING, defect)
    result = _train(spec, store, defect, day)
    assert result.outcome == defect.outcome, result.message
    if defect.outcome == "refused":
        assert defect.rule in result.message
        if not result.payload:  # refused at ingest: the file and its day are named, and recorded
            assert defect.filename in result.message and str(day) in result.message
            records = store.list(layout.unreadable_prefix("churn", "source", str(day)))
            assert len(records) == 1
            record = json.loads(store.read_bytes(records[0]))
            assert record["file"].endswith(defect.filename) and record["rule"] == "readable"
            assert store.list(f"raw/churn/ds={day}") == []  # nothing was snapshotted
        else:  # refused by validation: the message names the snapshot and the file it was read from
            assert result.payload["data_uri"] in result.message
            assert [f.rsplit("/", 1)[1] for f in result.payload["source_files"]] == [defect.filename]
            assert result.payload["source_files"][0] in result.message
        return
    if defect.outcome == "accepted":
        assert (result.payload["rows"], result.payload["clean_rows"]) == (800, 800)
        assert result.payload["columns"][0] == "customer_id"  # the byte order mark is not in the name
        return
    rows = pd.read_parquet(
        io.BytesIO(store.read_bytes(layout.quarantine_rows_key("churn", result.payload["run_id"])))
    )
    assert rows["_reasons"].str.contains(defect.rule, regex=False).any(), rows["_reasons"].tolist()
    assert result.payload["clean_rows"] == result.payload["rows"] - len(rows) > 0
    if defect.rule == "encoding":
        (error,) = rows["_decode_error"].dropna().tolist()
        assert defect.filename in error and " line " in error


def test_a_latin1_line_in_1600_keeps_the_content_hash_defined_and_deterministic(
    churn: ModelSpec, store: LocalStore, champion: str, tmp_path
) -> None:
    """The snapshot of the file with one undecodable line hashes the same when ingested again elsewhere."""
    defect = next(d for d in TRAINING if d.name == "one_latin1_line")
    day = _day(FIRST_TRAINING_DAY, TRAINING, defect)
    again = LocalStore(tmp_path / "again")
    again.write_bytes(f"landing/churn/ds={day}/{defect.filename}", defect.data)
    first = next(
        json.loads(store.read_bytes(key))
        for key in store.list(f"raw/churn/ds={day}")
        if key.endswith("manifest.json")
    )
    second = train_steps.ingest(churn, again, day, 1)
    assert first["sha256"] == second["sha256"] and second["rows"] == 1_600


def test_no_defect_was_promoted(churn: ModelSpec, store: LocalStore, champion: str) -> None:
    """The promotion history holds only the champion's own promotion."""
    history = store.list(layout.promotion_history_prefix("churn"))
    assert len(history) == 1
    assert json.loads(store.read_bytes(history[0]))["to_version"] == champion


# --- scoring -------------------------------------------------------------------------------------


def _score(spec: ModelSpec, store: LocalStore, defect: Defect, day: datetime.date) -> Outcome:
    store.write_bytes(f"incoming/churn/ds={day}/{defect.filename}", defect.data)
    run = _run("churn__score", defect, day)
    try:
        plan = score_steps.plan(spec, store, day, None, False, run)
        results = [score_steps.score(spec, store, plan, item, run) for item in score_steps.inputs(plan)]
        published = score_steps.publish(spec, store, plan, results, run)
    except steps.StepRejected as exc:
        return Outcome("refused", str(exc), {})
    outcome = "quarantined" if published["quarantined_rows"] else "accepted"
    return Outcome(outcome, "", {**published, "results": results})


@pytest.mark.parametrize("defect", SCORING, ids=[f"score-{d.name}" for d in SCORING])
def test_a_defective_scoring_file_is_refused_or_quarantined_under_its_rule(
    churn: ModelSpec, store: LocalStore, champion: str, defect: Defect
) -> None:
    spec = _variant(churn, defect.kind)
    day = _day(FIRST_SCORING_DAY, SCORING, defect)
    result = _score(spec, store, defect, day)
    assert result.outcome == defect.outcome, result.message
    ds = str(day)
    if defect.outcome == "refused":
        assert defect.rule in result.message and ds in result.message
        assert defect.filename in result.message
        assert read_manifest(store, PREDICTIONS, "churn", ds) is None  # nothing published
        if defect.rule == "readable":  # refused before anything was staged, and recorded
            assert store.list(layout.partition_prefix(PREDICTIONS, "churn", ds)) == []
            (record,) = store.list(layout.unreadable_prefix("churn", "scoring input", ds))
            assert json.loads(store.read_bytes(record))["file"].endswith(defect.filename)
        return
    (scored,) = result.payload["results"]
    quarantined = pd.read_parquet(io.BytesIO(store.read_bytes(scored["quarantine_key"])))
    assert quarantined["_reasons"].str.contains(defect.rule, regex=False).all()
    table = read_partition(store, "churn", ds)
    assert table is not None
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == result.payload["rows"]
    assert result.payload["rows"] + result.payload["quarantined_rows"] == scored["stats"]["rows_in"]
    if defect.rule == "unique:customer_id":  # every row of a repeated id, as training's rule
        assert result.payload["quarantined_rows"] == 16
    if defect.rule == "encoding":
        (error,) = quarantined["_decode_error"].tolist()
        assert defect.filename in error and " line " in error


def test_the_corpus_has_at_least_twenty_defects_of_both_kinds() -> None:
    """Counts for the README: refused and quarantined per kind (format variants apart)."""
    counts = {
        (side, outcome): sum(1 for d in defects if d.outcome == outcome)
        for side, defects in (("training", TRAINING), ("scoring", SCORING))
        for outcome in ("refused", "quarantined", "accepted")
    }
    assert sum(v for (_, outcome), v in counts.items() if outcome != "accepted") >= 20
    assert all(
        counts[(side, "refused")] and counts[(side, "quarantined")] for side in ("training", "scoring")
    )
