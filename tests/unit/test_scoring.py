"""Batch scoring of one file: row checks and their policies, the output schema, byte-identical
reruns, streaming in batches (Parquet and CSV), shadow agreement and bounded memory.

A real churn pipeline is trained once for the module on clean example days read back from CSV
text (as ingest reads them); the files scored are the example scoring batches.
"""

from __future__ import annotations

import datetime
import io
import json
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from threadpoolctl import threadpool_limits

from mlops_pipeline.devtools import example_data as ex
from mlops_pipeline.rules import arrow_path_applies
from mlops_pipeline.scoring import (
    REASONS_COLUMN,
    FileResult,
    RunStamp,
    ScoreStats,
    model_classes,
    output_schema,
    score_file,
    sha256_file,
)
from mlops_pipeline.scoring_inputs import ScoringRejected
from mlops_pipeline.spec import ModelSpec, load_spec
from mlops_pipeline.store import LocalStore
from mlops_pipeline.training import features_frame, train_model

REPO = Path(__file__).resolve().parents[2]
CLEAN_DAY = datetime.date(2026, 3, 2)
TRAIN_DAYS = [datetime.date(2026, 1, day) for day in (5, 6, 7)]
STAMP = RunStamp(
    model_name="churn",
    model_version="3",
    run_id="scheduled__2026-03-10T00:00:00+00:00",
    logical_ts=datetime.datetime(2026, 3, 10, tzinfo=datetime.UTC),
)
BIG_BATCH = 50_000


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Small fits and predictions: OpenMP threads only spin-wait on a busy machine."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_spec(REPO / "include/models/churn.yaml")


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as ingest reads a landed CSV: text, only empty cells null."""
    data = frame.to_csv(index=False, lineterminator="\n").encode()
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""])


@pytest.fixture(scope="module")
def pipeline(spec: ModelSpec) -> Any:
    """The churn pipeline fitted on three clean days (2,400 rows) through the text round-trip."""
    frame = as_text(pd.concat([ex.churn_batch(day) for day in TRAIN_DAYS], ignore_index=True))
    return train_model(frame, spec).pipeline


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    """The scoring inputs as the example data writes them: one Parquet file per day."""
    store = LocalStore(tmp_path_factory.mktemp("inputs"))
    ex.write_scoring_inputs(store, CLEAN_DAY, rows=2_000, files=1)
    ex.write_scoring_inputs(store, ex.DEFECTIVE_DAY, rows=1_200, files=1)
    return store


def input_path(store: LocalStore, day: datetime.date) -> Path:
    return store.root / ex.scoring_keys(day, files=1)[0]


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path, index=False)
    return path


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False, lineterminator="\n")
    return path


def score(
    source: Path,
    spec: ModelSpec,
    pipeline: Any,
    out: Path,
    *,
    fmt: str = "parquet",
    batch_rows: int = BIG_BATCH,
    stamp: RunStamp = STAMP,
    shadow: tuple[Any, RunStamp, Path] | None = None,
) -> tuple[FileResult, Path, Path]:
    """Score `source` into `<out>.parquet` and `<out>.quarantine.parquet`."""
    output, quarantine = out.with_suffix(".parquet"), out.with_suffix(".quarantine.parquet")
    result = score_file(
        source, fmt, spec, pipeline, stamp, output, quarantine, batch_rows=batch_rows, shadow=shadow
    )
    return result, output, quarantine


def comparable(stats: ScoreStats) -> dict[str, Any]:
    """Stats without the timing, rounded sums (batches add floats in another order)."""
    data = stats.to_dict()
    for timing in ("seconds", "batch_latency_counts", "batch_latency_sum"):
        data.pop(timing)
    data["prediction_sum"] = round(data["prediction_sum"], 6)
    data["prediction_sq_sum"] = round(data["prediction_sq_sum"], 6)
    return data


def spec_with(spec: ModelSpec, **features: dict[str, Any]) -> ModelSpec:
    """A copy of `spec` with some features' settings replaced."""
    data = spec.model_dump()
    for name, changes in features.items():
        data["features"][name] = {**data["features"][name], **changes}
    return ModelSpec.model_validate(data)


# --- a clean file --------------------------------------------------------------------------------


def test_a_clean_file_is_scored_in_full_with_the_output_schema(
    spec: ModelSpec, pipeline: Any, inputs: LocalStore, tmp_path: Path
) -> None:
    source = input_path(inputs, CLEAN_DAY)
    result, output, quarantine = score(source, spec, pipeline, tmp_path / "out")

    assert (result.stats.rows_in, result.stats.rows_scored, result.stats.rows_quarantined) == (
        2_000,
        2_000,
        0,
    )
    assert (result.output_rows, result.quarantine_rows) == (2_000, 0)
    assert not quarantine.exists()
    classes = model_classes(pipeline, spec)
    table = pq.read_table(output)
    assert table.schema.equals(output_schema(classes), check_metadata=False)
    assert table.column_names == [
        "id",
        "prediction",
        "proba_0",
        "proba_1",
        "model_name",
        "model_version",
        "run_id",
        "logical_ts",
    ]

    frame = table.to_pandas()
    expected_input = pd.read_parquet(source)
    assert frame["id"].tolist() == expected_input[spec.id_column].tolist()
    # The run's logical timestamp, never the wall clock; identity columns constant.
    assert (frame["logical_ts"] == pd.Timestamp("2026-03-10T00:00:00Z")).all()
    assert set(frame["model_name"]) == {"churn"}
    assert set(frame["model_version"]) == {"3"}
    assert set(frame["run_id"]) == {STAMP.run_id}
    probabilities = frame[["proba_0", "proba_1"]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    assert (frame["prediction"].to_numpy() == classes[probabilities.argmax(axis=1)]).all()
    # The same numbers as the pipeline gives for the whole frame at once.
    direct = pipeline.predict_proba(features_frame(expected_input, spec))
    np.testing.assert_allclose(probabilities, direct, rtol=0, atol=1e-12)
    assert sum(result.stats.predicted_labels.values()) == 2_000
    assert result.stats.prediction_sum == pytest.approx(probabilities[:, 1].sum())
    assert result.stats.nulls_by_feature["total_charges"] == expected_input["total_charges"].isna().sum()


def test_the_same_input_and_model_give_byte_identical_files(
    spec: ModelSpec, pipeline: Any, inputs: LocalStore, tmp_path: Path
) -> None:
    # The model as a later task loads it (a deserialised copy), scoring again with the same stamp.
    reloaded = pickle.loads(pickle.dumps(pipeline))
    for day in (CLEAN_DAY, ex.DEFECTIVE_DAY):
        source = input_path(inputs, day)
        _, first, first_quarantine = score(source, spec, pipeline, tmp_path / f"{day}-a")
        _, second, second_quarantine = score(source, spec, reloaded, tmp_path / f"{day}-b")
        assert sha256_file(first) == sha256_file(second)
        if day == ex.DEFECTIVE_DAY:
            assert sha256_file(first_quarantine) == sha256_file(second_quarantine)


def test_another_run_stamp_changes_only_the_identity_columns(
    spec: ModelSpec, pipeline: Any, inputs: LocalStore, tmp_path: Path
) -> None:
    source = input_path(inputs, CLEAN_DAY)
    other = RunStamp("churn", "3", "manual__x", datetime.datetime(2026, 3, 11, tzinfo=datetime.UTC))
    _, first, _ = score(source, spec, pipeline, tmp_path / "a")
    _, second, _ = score(source, spec, pipeline, tmp_path / "b", stamp=other)
    assert sha256_file(first) != sha256_file(second)
    one, two = pq.read_table(first), pq.read_table(second)
    assert one.drop_columns(["run_id", "logical_ts"]).equals(two.drop_columns(["run_id", "logical_ts"]))
    assert set(two.column("run_id").to_pylist()) == {"manual__x"}


def test_a_logical_timestamp_in_another_zone_is_written_as_the_same_instant_in_utc(
    spec: ModelSpec, pipeline: Any, inputs: LocalStore, tmp_path: Path
) -> None:
    paris = datetime.timezone(datetime.timedelta(hours=1))
    stamp = RunStamp("churn", "3", "r", datetime.datetime(2026, 3, 10, 1, 0, tzinfo=paris))
    _, output, _ = score(input_path(inputs, CLEAN_DAY), spec, pipeline, tmp_path / "out", stamp=stamp)
    values = set(pq.read_table(output).column("logical_ts").to_pylist())
    assert values == {datetime.datetime(2026, 3, 10, 0, 0, tzinfo=datetime.UTC)}


# --- unscorable rows -----------------------------------------------------------------------------


def expected_rules(row: pd.Series) -> set[str]:
    """The rules one row of the defective export breaks, from its values."""
    rules = set()
    if pd.isna(row["tenure_months"]):
        rules.add("not_null:tenure_months")
    if str(row["support_calls"]) == "-1":
        rules.add("range:support_calls")
    if float(row["monthly_charges"]) == 9999.0:
        rules.add("range:monthly_charges")
    if row["plan"] == "gold":
        rules.add("allowed:plan")
    if row["region"] not in ex.REGIONS:
        rules.add("allowed:region")
    if row["data_usage_gb"] == "n/a":
        rules.add("type:data_usage_gb")
    return rules


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_the_defective_day_quarantines_each_broken_row_with_its_rules(
    fmt: str, spec: ModelSpec, pipeline: Any, inputs: LocalStore, tmp_path: Path
) -> None:
    raw = ex.churn_scoring_batch(ex.DEFECTIVE_DAY, rows=1_200)
    source = input_path(inputs, ex.DEFECTIVE_DAY) if fmt == "parquet" else write_csv(raw, tmp_path / "in.csv")
    result, output, quarantine = score(source, spec, pipeline, tmp_path / "out", fmt=fmt)

    expected = {row[spec.id_column]: expected_rules(row) for _, row in raw.iterrows()}
    broken = {key: rules for key, rules in expected.items() if rules}
    assert len(broken) == round(ex.DEFECTIVE_SHARE * len(raw))
    stats = result.stats
    assert stats.rows_in == len(raw)
    assert stats.rows_scored + stats.rows_quarantined == stats.rows_in
    assert stats.rows_quarantined == len(broken)

    held = pq.read_table(quarantine).to_pandas()
    scored = pq.read_table(output).column("id").to_pylist()
    assert len(held) == stats.rows_quarantined and len(scored) == stats.rows_scored
    # Every row lands on exactly one side, none is dropped; only broken rows are held back.
    assert set(held[spec.id_column]).isdisjoint(scored)
    assert set(held[spec.id_column]) | set(scored) == set(raw[spec.id_column])
    reasons = dict(zip(held[spec.id_column], held[REASONS_COLUMN], strict=True))
    assert {key: set(value.split(";")) for key, value in reasons.items()} == broken
    counted: dict[str, int] = {}
    for rules in broken.values():
        for rule in rules:
            counted[rule] = counted.get(rule, 0) + 1
    assert stats.quarantined_by_rule == counted
    assert set(counted) == {
        "not_null:tenure_months",
        "range:support_calls",
        "range:monthly_charges",
        "allowed:plan",
        "allowed:region",
        "type:data_usage_gb",
    }
    # The held rows keep their values as they arrived, as text.
    assert set(held.loc[held[REASONS_COLUMN] == "type:data_usage_gb", "data_usage_gb"]) == {"n/a"}
    assert set(held.loc[held[REASONS_COLUMN] == "allowed:plan", "plan"]) == {"gold"}
    assert held.loc[held[REASONS_COLUMN] == "not_null:tenure_months", "tenure_months"].isna().all()


def test_a_word_in_a_nullable_number_column_is_a_type_error_not_a_missing_value(
    spec: ModelSpec, pipeline: Any, tmp_path: Path
) -> None:
    frame = ex.churn_scoring_batch(CLEAN_DAY, rows=50)
    frame["total_charges"] = frame["total_charges"].astype(object)
    frame.loc[[3, 7, 9, 11], "total_charges"] = ["n/a", "NA", "null", "NaN"]
    frame.loc[[4], "total_charges"] = None
    for fmt, source in (
        ("csv", write_csv(frame, tmp_path / "in.csv")),
        ("parquet", write_parquet(frame.astype({"total_charges": "string"}), tmp_path / "in.parquet")),
    ):
        result, _, quarantine = score(source, spec, pipeline, tmp_path / fmt, fmt=fmt)
        held = pq.read_table(quarantine).to_pandas()
        assert result.stats.quarantined_by_rule == {"type:total_charges": 4}, fmt
        assert held["total_charges"].tolist() == ["n/a", "NA", "null", "NaN"], fmt
        # The empty value is a null, which total_charges allows: scored.
        assert result.stats.rows_scored == 46, fmt


def test_an_unseen_category_is_quarantined_under_the_default_policy(
    spec: ModelSpec, pipeline: Any, tmp_path: Path
) -> None:
    frame = ex.churn_scoring_batch(CLEAN_DAY, rows=300)
    frame.loc[[5, 50, 250], "plan"] = "platinum"
    result, output, quarantine = score(
        write_parquet(frame, tmp_path / "in.parquet"), spec, pipeline, tmp_path / "o"
    )
    held = pq.read_table(quarantine).to_pandas()
    assert held[spec.id_column].tolist() == frame[spec.id_column].iloc[[5, 50, 250]].tolist()
    assert set(held[REASONS_COLUMN]) == {"allowed:plan"}
    assert result.stats.quarantined_by_rule == {"allowed:plan": 3}
    assert result.stats.rows_scored == 297
    assert pq.read_metadata(output).num_rows == 297


def test_a_warn_rule_scores_the_row_and_counts_it(spec: ModelSpec, pipeline: Any, tmp_path: Path) -> None:
    frame = ex.churn_scoring_batch(CLEAN_DAY, rows=300)
    frame.loc[[1, 2], "age"] = [150, 12]  # age's policy is warn
    result, output, quarantine = score(
        write_parquet(frame, tmp_path / "in.parquet"), spec, pipeline, tmp_path / "o"
    )
    assert result.stats.warned_by_rule == {"range:age": 2}
    assert result.stats.rows_scored == 300 and result.stats.rows_quarantined == 0
    assert not quarantine.exists()
    assert pq.read_table(output).column("id").to_pylist() == frame[spec.id_column].tolist()


def test_a_fail_rule_rejects_the_file_naming_the_rule(spec: ModelSpec, pipeline: Any, tmp_path: Path) -> None:
    strict = spec_with(spec, plan={"on_violation": "fail"})
    frame = ex.churn_scoring_batch(CLEAN_DAY, rows=300)
    frame.loc[[7, 8], "plan"] = "gold"
    with pytest.raises(ScoringRejected, match=r"allowed:plan \(2 rows\)"):
        score(write_parquet(frame, tmp_path / "in.parquet"), strict, pipeline, tmp_path / "o")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("rows", [300, 0])
def test_a_missing_column_rejects_the_file_naming_it(
    fmt: str, rows: int, spec: ModelSpec, pipeline: Any, tmp_path: Path
) -> None:
    frame = ex.churn_scoring_batch(CLEAN_DAY, rows=300).drop(columns=["region"]).head(rows)
    writer = write_parquet if fmt == "parquet" else write_csv
    source = writer(frame, tmp_path / f"in.{fmt}")
    # An empty file lacking the column is refused as well: the check reads the schema, not a batch.
    with pytest.raises(ScoringRejected, match=r"lacks column\(s\) \['region'\] that model churn needs"):
        score(source, spec, pipeline, tmp_path / "o", fmt=fmt)


def test_a_file_whose_every_row_is_unscorable_gives_an_empty_output_with_the_schema(
    spec: ModelSpec, pipeline: Any, tmp_path: Path
) -> None:
    frame = ex.churn_scoring_batch(CLEAN_DAY, rows=40)
    frame["plan"] = "gold"
    result, output, _ = score(write_parquet(frame, tmp_path / "in.parquet"), spec, pipeline, tmp_path / "o")
    assert (result.stats.rows_scored, result.stats.rows_quarantined) == (0, 40)
    table = pq.read_table(output)
    assert table.num_rows == 0
    assert table.schema.equals(output_schema(model_classes(pipeline, spec)), check_metadata=False)


# --- streaming in batches ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_small_batches_give_the_same_rows_in_more_row_groups(
    fmt: str, spec: ModelSpec, pipeline: Any, tmp_path: Path
) -> None:
    """One row group per batch, so the bytes differ with the batch size; the content does not."""
    frame = ex.churn_scoring_batch(ex.DEFECTIVE_DAY, rows=5_000)
    source = (
        write_parquet(frame.astype({"data_usage_gb": "string"}), tmp_path / "in.parquet")
        if fmt == "parquet"
        else write_csv(frame, tmp_path / "in.csv")
    )
    whole, one, one_q = score(source, spec, pipeline, tmp_path / "one", fmt=fmt)
    small, many, many_q = score(source, spec, pipeline, tmp_path / "many", fmt=fmt, batch_rows=1_000)

    assert pq.read_metadata(one).num_row_groups == 1
    assert pq.read_metadata(many).num_row_groups == 5
    assert pq.read_table(one).equals(pq.read_table(many))
    assert pq.read_table(one_q).equals(pq.read_table(many_q))
    assert comparable(whole.stats) == comparable(small.stats)
    # The latency histogram counts the batches the model predicted; the probability histogram, rows.
    assert (sum(whole.stats.batch_latency_counts), sum(small.stats.batch_latency_counts)) == (1, 5)
    assert sum(small.stats.probability_counts) == small.stats.rows_scored > 0


def test_a_csv_file_gives_the_same_predictions_as_the_parquet_file(
    spec: ModelSpec, pipeline: Any, inputs: LocalStore, tmp_path: Path
) -> None:
    source = input_path(inputs, CLEAN_DAY)
    text = write_csv(pd.read_parquet(source), tmp_path / "in.csv")
    _, from_parquet, _ = score(source, spec, pipeline, tmp_path / "p")
    result, from_csv, _ = score(text, spec, pipeline, tmp_path / "c", fmt="csv")
    assert result.stats.rows_scored == 2_000
    assert pq.read_table(from_csv).equals(pq.read_table(from_parquet))


# --- shadow scoring ------------------------------------------------------------------------------


def test_a_shadow_of_the_same_model_agrees_fully(
    spec: ModelSpec, pipeline: Any, inputs: LocalStore, tmp_path: Path
) -> None:
    shadow_stamp = RunStamp("churn", "4", STAMP.run_id, STAMP.logical_ts)
    shadow_out = tmp_path / "shadow.parquet"
    result, output, _ = score(
        input_path(inputs, ex.DEFECTIVE_DAY),
        spec,
        pipeline,
        tmp_path / "out",
        shadow=(pickle.loads(pickle.dumps(pipeline)), shadow_stamp, shadow_out),
    )
    assert result.agreement is not None
    summary = result.agreement.summary()
    assert summary == {"rows": result.stats.rows_scored, "label_agreement": 1.0, "mean_abs_diff": 0.0}
    primary, shadow = pq.read_table(output), pq.read_table(shadow_out)
    # The shadow scores the same scorable rows; only its version differs.
    assert shadow.drop_columns(["model_version"]).equals(primary.drop_columns(["model_version"]))
    assert set(shadow.column("model_version").to_pylist()) == {"4"}


def test_stats_add_up_and_survive_json() -> None:
    one = ScoreStats(rows_in=3, rows_scored=2, rows_quarantined=1, quarantined_by_rule={"allowed:plan": 1})
    two = ScoreStats(rows_in=5, rows_scored=5, predicted_labels={"0": 5}, prediction_sum=1.5)
    one.add(two)
    assert (one.rows_in, one.rows_scored, one.rows_quarantined) == (8, 7, 1)
    assert ScoreStats.from_dict(json.loads(json.dumps(one.to_dict()))) == one


def test_a_regression_output_has_a_float_prediction_and_no_probabilities() -> None:
    schema = output_schema(None)
    assert schema.names == ["id", "prediction", "model_name", "model_version", "run_id", "logical_ts"]
    assert schema.field("prediction").type == pa.float64()


# --- bounded memory ------------------------------------------------------------------------------

_MEMORY_PROBE = textwrap.dedent(
    """
    import datetime, json, pickle, resource, sys
    from pathlib import Path

    import pyarrow as pa
    from threadpoolctl import threadpool_limits

    from mlops_pipeline.scoring import RunStamp, score_file
    from mlops_pipeline.spec import load_spec

    folder = Path(sys.argv[1])
    spec = load_spec(Path(sys.argv[2]))
    pipeline = pickle.loads((folder / "model.pkl").read_bytes())
    stamp = RunStamp("churn", "1", "r", datetime.datetime(2026, 3, 2, tzinfo=datetime.timezone.utc))

    def peak() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def run(name: str) -> int:
        result = score_file(
            folder / f"{name}.parquet", "parquet", spec, pipeline, stamp,
            folder / f"{name}-out.parquet", folder / f"{name}-q.parquet", batch_rows=20_000,
        )
        return result.output_rows

    with threadpool_limits(limits=1):
        warm_rows = run("warm")  # everything lazily loaded and allocated once per process
        warm_peak, warm_arrow = peak(), pa.default_memory_pool().max_memory()
        big_rows = run("big")
    print(json.dumps({
        "warm_rows": warm_rows, "big_rows": big_rows,
        "rss_growth": peak() - warm_peak,
        "arrow_warm": warm_arrow, "arrow_big": pa.default_memory_pool().max_memory(),
    }))
    """
)


@pytest.mark.slow
def test_memory_stays_bounded_by_the_batch_whatever_the_file_size(
    spec: ModelSpec, pipeline: Any, tmp_path: Path
) -> None:
    """400,000 rows (141 MB decoded) in 50,000-row row groups, scored in 20,000-row batches in a
    fresh process: after a warm-up file of 100,000 rows, scoring the big file raises neither the
    peak RSS by more than a fraction of the decoded input nor Arrow's peak allocation by more
    than a fraction of the compressed file (with Arrow's pre-buffering, that peak grew by about
    the file's compressed size)."""
    base = ex.churn_scoring_batch(CLEAN_DAY, rows=5_000)
    schema = pa.Schema.from_pandas(base, preserve_index=False)
    decoded = 0
    with (
        pq.ParquetWriter(tmp_path / "big.parquet", schema) as big,
        pq.ParquetWriter(tmp_path / "warm.parquet", schema) as warm,
    ):
        for group in range(8):
            chunk = pd.concat(
                [
                    base.assign(customer_id=base["customer_id"] + f"-{group * 10 + copy:03d}")
                    for copy in range(10)
                ],
                ignore_index=True,
            )
            decoded += int(chunk.memory_usage(deep=True).sum())
            table = pa.Table.from_pandas(chunk, schema=schema, preserve_index=False)
            big.write_table(table)
            if group < 2:
                warm.write_table(table)
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(pipeline))

    completed = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(tmp_path), str(REPO / "include/models/churn.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    probe = json.loads(completed.stdout.strip().splitlines()[-1])
    assert (probe["warm_rows"], probe["big_rows"]) == (100_000, 400_000)
    assert decoded > 120e6
    assert probe["rss_growth"] < decoded / 4, probe
    # Arrow's peak may move by a batch in flight (read ahead, written behind), not by the file.
    compressed = (tmp_path / "big.parquet").stat().st_size
    assert compressed > 5e6
    assert probe["arrow_big"] - probe["arrow_warm"] < compressed / 2, (probe, compressed)


# --- the Arrow way and the pandas way -------------------------------------------------------------


def plain_typed_batch(rows: int) -> pd.DataFrame:
    """A clean day's batch in plain Arrow types, with every kind of broken value a typed file can hold."""
    frame = ex.churn_scoring_batch(CLEAN_DAY, rows=rows).astype(
        {"support_calls": "float64", "num_devices": "int32"}
    )
    frame.loc[1, "tenure_months"] = 200  # out of range
    frame.loc[2, "monthly_charges"] = np.nan  # not nullable
    frame.loc[3, "monthly_charges"] = np.inf
    frame.loc[4, "data_usage_gb"] = -np.inf
    frame.loc[5, "total_charges"] = np.nan  # nullable: scored
    frame.loc[6, "support_calls"] = 2.5  # a fraction in an integer feature
    frame.loc[7, "support_calls"] = np.nan
    frame.loc[13, "support_calls"] = np.inf  # not a finite number in an integer feature: one type rule
    frame.loc[8, "plan"] = None
    frame.loc[[9, 40], "region"] = "mars"
    frame.loc[10, "customer_id"] = None
    frame.loc[11, "age"] = 12  # warn: scored and counted
    frame.loc[12, ["plan", "region"]] = ["gold", None]
    return frame


@pytest.mark.parametrize("policy", ["quarantine", "warn"])
def test_the_arrow_way_gives_the_bytes_of_the_pandas_way(
    policy: str, spec: ModelSpec, pipeline: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_pipeline import scoring

    data = spec.model_dump()
    data["validation"]["default_policy"] = policy
    spec = ModelSpec.model_validate(data)
    table = pa.Table.from_pandas(plain_typed_batch(300), preserve_index=False)
    table = table.set_column(
        table.schema.get_field_index("payment_method"),
        "payment_method",
        table.column("payment_method").cast(pa.large_string()),
    )
    source = tmp_path / "in.parquet"
    pq.write_table(table, source)
    assert arrow_path_applies(pq.read_schema(source), spec)

    arrow_way, arrow_out, arrow_held = score(source, spec, pipeline, tmp_path / "arrow", batch_rows=37)
    monkeypatch.setattr(scoring, "arrow_path_applies", lambda schema, spec: False)
    pandas_way, pandas_out, pandas_held = score(source, spec, pipeline, tmp_path / "pandas", batch_rows=37)

    assert comparable(arrow_way.stats) == comparable(pandas_way.stats)
    assert sha256_file(arrow_out) == sha256_file(pandas_out)
    if policy == "quarantine":
        assert arrow_way.stats.rows_quarantined == 12
        # ±inf is not a finite number (and out of range): held, never handed to the model.
        assert arrow_way.stats.quarantined_by_rule["type:monthly_charges"] == 1
        assert arrow_way.stats.quarantined_by_rule["type:data_usage_gb"] == 1
        assert arrow_way.stats.quarantined_by_rule["type:support_calls"] == 2  # 2.5 and inf
        assert sha256_file(arrow_held) == sha256_file(pandas_held)
    else:
        assert arrow_way.stats.rows_scored == 300 and not arrow_held.exists()
    assert arrow_way.stats.warned_by_rule["range:age"] == 1


def test_shadow_agreement_of_three_classes_is_the_total_variation_distance() -> None:
    """With more than two classes, agreement compares whole probability vectors (half their L1 distance)."""
    from mlops_pipeline.scoring import Agreement, Predictions

    primary = Predictions(np.array(["a", "b"]), np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]]))
    shadow = Predictions(np.array(["a", "c"]), np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]]))
    agreement = Agreement()
    agreement.add(primary, shadow)
    assert agreement.summary() == pytest.approx(
        {"rows": 2, "label_agreement": 0.5, "mean_abs_diff": (0.1 + 0.2) / 2}
    )
    # Two classes: the same number as the positive class's |p - q|, as before.
    binary = Agreement()
    binary.add(
        Predictions(np.array([1]), np.array([[0.3, 0.7]])), Predictions(np.array([1]), np.array([[0.4, 0.6]]))
    )
    assert binary.summary()["mean_abs_diff"] == pytest.approx(0.1)
