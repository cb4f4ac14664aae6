"""Published prediction partitions on both stores (file and S3): the checks before publishing, the
manifest written last, reruns that switch readers in one step, races on a generation, and the
cleaning of crashed runs' staging.

Part files are real Parquet files in the scorer's output schema, staged and read through the store.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_pipeline.layout import MANIFEST, PREDICTIONS, SHADOW, part_key, partition_prefix, staging_prefix
from mlops_pipeline.predictions import (
    PartFile,
    PublishError,
    clean_stale_parts,
    publish_partition,
    published_days,
    read_manifest,
    read_partition,
    upload_part,
)
from mlops_pipeline.scoring import Predictions, RunStamp, output_schema, prediction_table
from mlops_pipeline.store import ObjectStore

MODEL = "churn"
DS = "2026-03-10"
CLASSES = np.array([0, 1])
SCHEMA = output_schema(CLASSES)
RUN_ID = "scheduled__2026-03-10T00:00:00+00:00"


def predictions_table(ids: list[str], seed: int, schema: pa.Schema = SCHEMA) -> pa.Table:
    """Predictions for `ids` as the scorer writes them (random but deterministic probabilities)."""
    rng = np.random.default_rng(seed)
    stamp = RunStamp(MODEL, "3", RUN_ID, datetime.datetime(2026, 3, 10, tzinfo=datetime.UTC))
    if schema.field("prediction").type == pa.float64():  # a regression model's output
        return prediction_table(pd.Series(ids), Predictions(None, rng.random(len(ids))), None, stamp, schema)
    positive = rng.random(len(ids))
    values = np.column_stack([1.0 - positive, positive])
    return prediction_table(
        pd.Series(ids, dtype=object),
        Predictions(CLASSES[values.argmax(axis=1)], values),
        CLASSES,
        stamp,
        schema,
    )


def ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(count)]


class Stager:
    """Writes part files locally like the scorer (one ParquetWriter per file) and stages them."""

    def __init__(self, store: ObjectStore, folder: Path) -> None:
        self.store = store
        self.folder = folder
        self.written = 0

    def local(self, table: pa.Table) -> Path:
        self.written += 1
        path = self.folder / f"part-{self.written}.parquet"
        with pq.ParquetWriter(path, table.schema, compression="snappy") as writer:
            if table.num_rows:
                writer.write_table(table)
        return path

    def stage(
        self, token: str, tables: list[pa.Table], *, ds: str = DS, area: str = PREDICTIONS, model: str = MODEL
    ) -> list[PartFile]:
        return [
            upload_part(
                self.store,
                self.local(table),
                part_key(area, model, ds, token, index),
                f"incoming/{model}/ds={ds}/part-{index:03d}.parquet",
                f"{index:064x}",
            )
            for index, table in enumerate(tables)
        ]


@pytest.fixture
def stager(store: ObjectStore, tmp_path: Path) -> Stager:
    return Stager(store, tmp_path)


def publish(
    store: ObjectStore,
    parts: list[PartFile],
    *,
    ds: str = DS,
    area: str = PREDICTIONS,
    model: str = MODEL,
    expected_rows: int | None = None,
    schema: pa.Schema = SCHEMA,
) -> dict[str, Any]:
    return publish_partition(
        store,
        area,
        model,
        ds,
        parts,
        expected_rows=sum(part.rows for part in parts) if expected_rows is None else expected_rows,
        schema=schema,
        details={"model_version": "3", "run_id": RUN_ID},
    )


def tokens_on_disk(store: ObjectStore, ds: str = DS) -> set[str]:
    runs = f"{partition_prefix(PREDICTIONS, MODEL, ds)}/_runs/"
    return {key[len(runs) :].split("/", 1)[0] for key in store.list(runs)}


def nothing_published(store: ObjectStore, ds: str = DS) -> bool:
    prefix = partition_prefix(PREDICTIONS, MODEL, ds)
    return (
        read_partition(store, MODEL, ds) is None
        and read_manifest(store, PREDICTIONS, MODEL, ds) is None
        and not store.exists(f"{prefix}/{MANIFEST}")
        and store.list(f"{prefix}/_manifests") == []
        and ds not in published_days(store, PREDICTIONS, MODEL)
    )


# --- publish and read ----------------------------------------------------------------------------


def test_a_published_partition_reads_back_exactly_its_rows(store: ObjectStore, stager: Stager) -> None:
    tables = [predictions_table(ids("a", 100), 1), predictions_table(ids("b", 50), 2)]
    parts = stager.stage("run-1", tables)
    manifest = publish(store, parts)

    read = read_partition(store, MODEL, DS)
    assert read is not None and read.equals(pa.concat_tables(tables))
    assert read.schema.equals(SCHEMA, check_metadata=False)
    assert manifest == read_manifest(store, PREDICTIONS, MODEL, DS)
    assert (manifest["generation"], manifest["rows"], manifest["model_version"]) == (1, 150, "3")
    assert [entry["key"] for entry in manifest["files"]] == [part.key for part in parts]
    assert [entry["rows"] for entry in manifest["files"]] == [100, 50]
    assert manifest["schema"][:2] == ["id: string", "prediction: int64"]
    assert published_days(store, PREDICTIONS, MODEL) == [DS]
    assert store.list(f"{partition_prefix(PREDICTIONS, MODEL, DS)}/_manifests") == [
        f"{partition_prefix(PREDICTIONS, MODEL, DS)}/_manifests/000001.json"
    ]


def test_a_day_whose_every_row_was_quarantined_is_published_empty(store: ObjectStore, stager: Stager) -> None:
    parts = stager.stage("run-1", [predictions_table([], 1), predictions_table([], 2)])
    publish(store, parts, expected_rows=0)
    read = read_partition(store, MODEL, DS)
    # Published and empty is not the same as not published (None).
    assert read is not None and read.num_rows == 0
    assert read.schema.equals(SCHEMA, check_metadata=False)


def test_staged_parts_without_a_manifest_are_invisible(store: ObjectStore, stager: Stager) -> None:
    """A crash between staging the parts and publishing leaves no partition visible, even one
    after the create-only generation file and before `_manifest.json`."""
    parts = stager.stage("crashed", [predictions_table(ids("a", 10), 1)])
    assert nothing_published(store)
    generation = f"{partition_prefix(PREDICTIONS, MODEL, DS)}/_manifests/000001.json"
    store.create_only(generation, json.dumps({"files": [dataclasses.asdict(parts[0])]}).encode())
    assert read_partition(store, MODEL, DS) is None
    assert published_days(store, PREDICTIONS, MODEL) == []


# --- the checks before publishing ----------------------------------------------------------------


def _wrong_rows(store: ObjectStore, stager: Stager, parts: list[PartFile]) -> dict[str, Any]:
    return {"parts": parts, "expected_rows": 149}


def _changed_bytes(store: ObjectStore, stager: Stager, parts: list[PartFile]) -> dict[str, Any]:
    # Same ids and row count, other probabilities: only the recorded sha256 can tell.
    store.write_bytes(parts[1].key, stager.local(predictions_table(ids("b", 50), 99)).read_bytes())
    return {"parts": parts}


def _recorded_rows(store: ObjectStore, stager: Stager, parts: list[PartFile]) -> dict[str, Any]:
    return {"parts": [parts[0], dataclasses.replace(parts[1], rows=51)], "expected_rows": 151}


def _missing_part(store: ObjectStore, stager: Stager, parts: list[PartFile]) -> dict[str, Any]:
    store.delete_prefix(staging_prefix(PREDICTIONS, MODEL, DS, "run-1"))
    return {"parts": parts}


def _regression_schema(store: ObjectStore, stager: Stager, parts: list[PartFile]) -> dict[str, Any]:
    other = stager.stage("run-2", [predictions_table(ids("b", 50), 2, output_schema(None))])
    return {"parts": [parts[0], *other]}


def _missing_column(store: ObjectStore, stager: Stager, parts: list[PartFile]) -> dict[str, Any]:
    table = predictions_table(ids("b", 50), 2).drop_columns(["proba_1"])
    return {"parts": [parts[0], *stager.stage("run-2", [table])]}


REFUSALS = {
    "wrong_row_count": (_wrong_rows, r"staged parts hold 150 rows, expected 149"),
    "changed_bytes": (_changed_bytes, r"part-00001\.parquet changed: sha256"),
    "recorded_rows": (_recorded_rows, r"has 50 rows, recorded 51"),
    "missing_part": (_missing_part, r"part-00000\.parquet is missing"),
    "regression_schema": (_regression_schema, r"(?s)has schema .*, expected"),
    "missing_column": (_missing_column, r"(?s)has schema .*, expected"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_publish_refuses_bad_parts_and_writes_no_manifest(
    case: str, store: ObjectStore, stager: Stager
) -> None:
    parts = stager.stage("run-1", [predictions_table(ids("a", 100), 1), predictions_table(ids("b", 50), 2)])
    damage, message = REFUSALS[case]
    arguments = damage(store, stager, parts)
    with pytest.raises(PublishError, match=message):
        publish(store, arguments["parts"], expected_rows=arguments.get("expected_rows"))
    assert nothing_published(store)


def test_a_refused_rerun_leaves_the_previous_partition_as_it_was(store: ObjectStore, stager: Stager) -> None:
    first = [predictions_table(ids("a", 30), 1)]
    publish(store, stager.stage("run-1", first))
    bad = stager.stage("run-2", [predictions_table(ids("b", 40), 2)])
    with pytest.raises(PublishError):
        publish(store, bad, expected_rows=41)
    assert read_partition(store, MODEL, DS).equals(pa.concat_tables(first))  # type: ignore[union-attr]
    assert read_manifest(store, PREDICTIONS, MODEL, DS)["generation"] == 1  # type: ignore[index]


# --- reruns and races ----------------------------------------------------------------------------


def test_a_rerun_replaces_the_partition_as_a_whole(store: ObjectStore, stager: Stager) -> None:
    old = [predictions_table(ids("a", 100), 1), predictions_table(ids("b", 50), 2)]
    publish(store, stager.stage("run-1", old))
    new = [predictions_table(ids("c", 70), 3)]
    manifest = publish(store, stager.stage("run-2", new))

    assert manifest["generation"] == 2
    assert {entry["key"].rsplit("/", 2)[1] for entry in manifest["files"]} == {"run-2"}
    read = read_partition(store, MODEL, DS)
    # Only the new file set: none of the old rows, although the old parts are still stored.
    assert read is not None and read.equals(pa.concat_tables(new))
    assert tokens_on_disk(store) == {"run-1", "run-2"}
    assert published_days(store, PREDICTIONS, MODEL) == [DS]


class RacingStore:
    """A real store through which a rival run publishes the same generation first: right after this
    run has listed the generations and just before its create-only write (the race window)."""

    def __init__(self, inner: ObjectStore, rival: Any) -> None:
        self._inner = inner
        self._rival = rival

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create_only(self, key: str, data: bytes) -> None:
        if "/_manifests/" in key and self._rival is not None:
            rival, self._rival = self._rival, None
            rival()
        self._inner.create_only(key, data)


def test_two_runs_publishing_the_same_generation_cannot_both_win(store: ObjectStore, stager: Stager) -> None:
    publish(store, stager.stage("run-1", [predictions_table(ids("a", 10), 1)]))
    rival_rows = [predictions_table(ids("rival", 20), 2)]
    rival_parts = stager.stage("run-rival", rival_rows)
    mine = stager.stage("run-mine", [predictions_table(ids("mine", 30), 3)])

    racing = RacingStore(store, lambda: publish(store, rival_parts))
    with pytest.raises(PublishError, match="another run published generation 2 at the same time"):
        publish(racing, mine)  # type: ignore[arg-type]
    read = read_partition(store, MODEL, DS)
    assert read is not None and read.equals(pa.concat_tables(rival_rows))
    assert read_manifest(store, PREDICTIONS, MODEL, DS)["generation"] == 2  # type: ignore[index]


class LateStore(RacingStore):
    """A real store through which this run is held just before it writes `_manifest.json`, while a
    rival run publishes a newer generation in full."""

    def create_only(self, key: str, data: bytes) -> None:
        self._inner.create_only(key, data)

    def write_bytes(self, key: str, data: bytes) -> None:
        if key.endswith(f"/{MANIFEST}") and self._rival is not None:
            rival, self._rival = self._rival, None
            rival()
        self._inner.write_bytes(key, data)


def test_an_overlapping_older_publish_cannot_point_readers_back(store: ObjectStore, stager: Stager) -> None:
    late_parts = stager.stage("run-late", [predictions_table(ids("late", 10), 1)])
    rival_rows = [predictions_table(ids("rival", 20), 2)]
    rival_parts = stager.stage("run-rival", rival_rows)

    late = LateStore(store, lambda: publish(store, rival_parts))
    assert publish(late, late_parts)["generation"] == 1  # type: ignore[arg-type]
    # The late run wrote generation 1 over the rival's 2, saw the newer one and set it back.
    assert read_manifest(store, PREDICTIONS, MODEL, DS)["generation"] == 2  # type: ignore[index]
    read = read_partition(store, MODEL, DS)
    assert read is not None and read.equals(pa.concat_tables(rival_rows))


def test_a_generation_file_already_present_is_never_overwritten(store: ObjectStore, stager: Stager) -> None:
    """A generation file left by a crashed publish is counted: the next publish takes the next number."""
    prefix = partition_prefix(PREDICTIONS, MODEL, DS)
    store.create_only(f"{prefix}/_manifests/000001.json", b'{"files": []}')
    manifest = publish(store, stager.stage("run-1", [predictions_table(ids("a", 10), 1)]))
    assert manifest["generation"] == 2
    assert store.read_bytes(f"{prefix}/_manifests/000001.json") == b'{"files": []}'


# --- retries of one publish: one generation per run's staged parts --------------------------------


class LostAnswer(ConnectionError):
    """The store carried the write out (or will), but the answer never reached the publisher."""


class AttemptDied(BaseException):
    """Stands for the end of a task attempt (killed worker): nothing after it runs."""


def publish_attempt(store: ObjectStore, parts: list[PartFile], token: str) -> dict[str, Any]:
    """One attempt of the `publish` task of the run whose `plan` staged `parts` under `token`."""
    return publish_partition(
        store,
        PREDICTIONS,
        MODEL,
        DS,
        parts,
        expected_rows=sum(part.rows for part in parts),
        schema=SCHEMA,
        details={"model_version": "3", "run_id": RUN_ID, "token": token},
    )


def generation_files(store: ObjectStore) -> list[str]:
    return store.list(f"{partition_prefix(PREDICTIONS, MODEL, DS)}/_manifests")


class AnswerLostStore(RacingStore):
    """A real store whose generation write lands, but whose answer is lost (`LostAnswer`)."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner, None)

    def create_only(self, key: str, data: bytes) -> None:
        self._inner.create_only(key, data)
        if "/_manifests/" in key:
            raise LostAnswer("read timed out")


class DiesBeforeReadersStore(AnswerLostStore):
    """A real store through which the attempt dies after step 1, before `_manifest.json` is written."""

    def create_only(self, key: str, data: bytes) -> None:
        self._inner.create_only(key, data)

    def write_bytes(self, key: str, data: bytes) -> None:
        if key.endswith(f"/{MANIFEST}"):
            raise AttemptDied("killed between the generation file and the manifest")
        self._inner.write_bytes(key, data)


class InFlightStore(AnswerLostStore):
    """A store that stalls: the generation write is held in flight (not yet carried out) and the
    attempt times out; `land()` then carries it out late, as S3 does with a queued request."""

    def create_only(self, key: str, data: bytes) -> None:
        if "/_manifests/" in key:
            self.in_flight = (key, data)
            raise LostAnswer("read timed out")
        self._inner.create_only(key, data)

    def land(self) -> None:
        self._inner.create_only(*self.in_flight)


def test_a_retry_after_a_lost_answer_to_the_generation_write_publishes_no_second_generation(
    store: ObjectStore, stager: Stager
) -> None:
    rows = [predictions_table(ids("a", 40), 1), predictions_table(ids("b", 25), 2)]
    parts = stager.stage("run-1-try1", rows)
    with pytest.raises(LostAnswer):
        publish_attempt(AnswerLostStore(store), parts, "run-1-try1")  # type: ignore[arg-type]
    assert len(generation_files(store)) == 1 and read_partition(store, MODEL, DS) is None

    manifest = publish_attempt(store, parts, "run-1-try1")
    assert manifest["generation"] == 1
    assert len(generation_files(store)) == 1
    assert read_manifest(store, PREDICTIONS, MODEL, DS) == manifest
    assert [entry["key"] for entry in manifest["files"]] == [part.key for part in parts]
    read = read_partition(store, MODEL, DS)
    assert read is not None and read.equals(pa.concat_tables(rows))


def test_a_retry_after_the_attempt_died_between_the_two_steps_finishes_step_2(
    store: ObjectStore, stager: Stager
) -> None:
    rows = [predictions_table(ids("a", 30), 1)]
    parts = stager.stage("run-1-try1", rows)
    with pytest.raises(AttemptDied):
        publish_attempt(DiesBeforeReadersStore(store), parts, "run-1-try1")  # type: ignore[arg-type]
    assert len(generation_files(store)) == 1 and read_manifest(store, PREDICTIONS, MODEL, DS) is None

    assert publish_attempt(store, parts, "run-1-try1")["generation"] == 1
    assert len(generation_files(store)) == 1
    read = read_partition(store, MODEL, DS)
    assert read is not None and read.equals(pa.concat_tables(rows))


def test_a_retry_that_meets_its_earlier_write_landing_late_takes_that_generation(
    store: ObjectStore, stager: Stager
) -> None:
    """The earlier attempt's write lands after the retry listed the generations and before its own
    create-only write: the refusal names a generation that is this publish's own, not a rival's."""
    rows = [predictions_table(ids("a", 30), 1)]
    parts = stager.stage("run-1-try1", rows)
    stalled = InFlightStore(store)
    with pytest.raises(LostAnswer):
        publish_attempt(stalled, parts, "run-1-try1")  # type: ignore[arg-type]
    assert generation_files(store) == []

    manifest = publish_attempt(RacingStore(store, stalled.land), parts, "run-1-try1")  # type: ignore[arg-type]
    assert manifest["generation"] == 1
    assert len(generation_files(store)) == 1
    read = read_partition(store, MODEL, DS)
    assert read is not None and read.equals(pa.concat_tables(rows))


def test_a_late_retry_does_not_point_readers_back_at_its_older_generation(
    store: ObjectStore, stager: Stager
) -> None:
    """Generation 1 is the retried run's (its first attempt died before step 2); a rerun published
    generation 2 meanwhile. The retry recognises generation 1 and leaves readers on generation 2."""
    mine = stager.stage("run-1-try1", [predictions_table(ids("a", 30), 1)])
    with pytest.raises(AttemptDied):
        publish_attempt(DiesBeforeReadersStore(store), mine, "run-1-try1")  # type: ignore[arg-type]
    rerun_rows = [predictions_table(ids("b", 20), 2)]
    publish_attempt(store, stager.stage("run-2-try1", rerun_rows), "run-2-try1")

    assert publish_attempt(store, mine, "run-1-try1")["generation"] == 1
    assert len(generation_files(store)) == 2
    assert read_manifest(store, PREDICTIONS, MODEL, DS)["generation"] == 2  # type: ignore[index]
    read = read_partition(store, MODEL, DS)
    assert read is not None and read.equals(pa.concat_tables(rerun_rows))


# --- cleaning staged parts -----------------------------------------------------------------------


def test_clean_stale_parts_deletes_crashed_runs_and_keeps_the_last_two_generations(
    store: ObjectStore, stager: Stager
) -> None:
    for number in (1, 2):
        publish(store, stager.stage(f"run-{number}", [predictions_table(ids(f"r{number}", 20), number)] * 2))
    reader_manifest = read_manifest(store, PREDICTIONS, MODEL, DS)  # a reader that started before run 3
    newest = [predictions_table(ids("r3", 20), 3)]
    publish(store, stager.stage("run-3", newest))
    stager.stage("crashed", [predictions_table(ids("x", 5), 4)] * 3)
    stager.stage("in-flight", [predictions_table(ids("y", 5), 5)])

    deleted = clean_stale_parts(store, PREDICTIONS, MODEL, DS, keep_token="in-flight")

    assert deleted == 2 + 3  # run-1's two parts and the crashed run's three
    assert tokens_on_disk(store) == {"run-2", "run-3", "in-flight"}
    assert read_partition(store, MODEL, DS).equals(pa.concat_tables(newest))  # type: ignore[union-attr]
    # The generation before is kept whole for readers that are mid-read.
    assert reader_manifest is not None
    assert all(store.exists(entry["key"]) for entry in reader_manifest["files"])
    assert clean_stale_parts(store, PREDICTIONS, MODEL, DS, keep_token="in-flight") == 0
    assert clean_stale_parts(store, PREDICTIONS, MODEL, DS) == 1  # the in-flight run, once not kept


def test_clean_stale_parts_never_deletes_the_published_files(store: ObjectStore, stager: Stager) -> None:
    """Two later publishes that crashed after their create-only generation file and before
    `_manifest.json` leave the last two generation files naming unpublished runs: the files of the
    partition readers still see must survive the cleaning all the same."""
    published = [predictions_table(ids("a", 10), 1)]
    publish(store, stager.stage("run-1", published))
    prefix = partition_prefix(PREDICTIONS, MODEL, DS)
    for number, token in ((2, "crash-a"), (3, "crash-b")):
        parts = stager.stage(token, [predictions_table(ids(token, 10), number)])
        entry = {"generation": number, "files": [dataclasses.asdict(part) for part in parts]}
        store.create_only(f"{prefix}/_manifests/{number:06d}.json", json.dumps(entry).encode())

    clean_stale_parts(store, PREDICTIONS, MODEL, DS)

    assert "run-1" in tokens_on_disk(store)
    read = read_partition(store, MODEL, DS)
    assert read is not None and read.equals(pa.concat_tables(published))


def test_clean_stale_parts_of_a_partition_with_nothing_staged_deletes_nothing(store: ObjectStore) -> None:
    assert clean_stale_parts(store, PREDICTIONS, MODEL, DS) == 0
    assert clean_stale_parts(store, SHADOW, MODEL, DS, keep_token="x") == 0


# --- which days exist ----------------------------------------------------------------------------


def test_published_days_lists_only_days_with_a_manifest(store: ObjectStore, stager: Stager) -> None:
    table = predictions_table(ids("a", 5), 1)
    for ds in ("2026-03-03", "2026-03-01"):
        publish(store, stager.stage("run", [table], ds=ds), ds=ds)
    stager.stage("crashed", [table], ds="2026-03-02")  # staged, never published
    publish(store, stager.stage("run", [table], model="churn_v2"), model="churn_v2")
    publish(store, stager.stage("run", [table], ds="2026-03-05", area=SHADOW), ds="2026-03-05", area=SHADOW)

    assert published_days(store, PREDICTIONS, MODEL) == ["2026-03-01", "2026-03-03"]
    assert published_days(store, SHADOW, MODEL) == ["2026-03-05"]
    assert published_days(store, PREDICTIONS, "churn_v2") == [DS]
    assert published_days(store, PREDICTIONS, "unknown") == []
    assert read_partition(store, MODEL, "2026-03-02") is None
    assert read_partition(store, MODEL, "2026-03-05", area=SHADOW).equals(table)  # type: ignore[union-attr]


def test_a_published_file_changed_afterwards_is_refused_by_the_reader(
    store: ObjectStore, stager: Stager
) -> None:
    parts = stager.stage("run-1", [predictions_table(ids("a", 10), 1)])
    publish(store, parts)
    tampered = predictions_table(ids("a", 10), 2)
    store.write_bytes(parts[0].key, stager.local(tampered).read_bytes())
    with pytest.raises(PublishError, match="does not match its manifest"):
        read_partition(store, MODEL, DS)
    assert read_partition(store, MODEL, DS, verify=False).equals(tampered)  # type: ignore[union-attr]


def test_staging_keys_are_per_run_and_safe_for_any_run_id() -> None:
    key = part_key(PREDICTIONS, MODEL, DS, "scheduled__2026-03-10T00:00:00+00:00-try1-ab12", 3)
    assert key == (
        "predictions/churn/ds=2026-03-10/_runs/scheduled__2026-03-10T00_00_00_00_00-try1-ab12/part-00003.parquet"
    )
    assert key.startswith(
        staging_prefix(PREDICTIONS, MODEL, DS, "scheduled__2026-03-10T00:00:00+00:00-try1-ab12")
    )
