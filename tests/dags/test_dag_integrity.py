"""DAG integrity: every DAG file parses, cheaply, and every DAG carries what operators rely on.

These tests parse the real `dags/` folder with Airflow's own DagBag, as the DAG processor does.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
HEAVY = ("sklearn", "mlflow", "great_expectations", "evidently", "pandas")
# Parsing 50 specs (200 DAGs) in a fresh interpreter, DagBag fill only (Airflow's own import
# excluded), measured in one run on 2 cores with the test suite running beside it: 3.5-4.4 s, and
# 4.4-4.8 s before the layout step (when parsing still imported pandas). The budget is about three
# times that: a loaded CI machine passes, while I/O at parse time or a heavy import per DAG fails it.
PARSE_BUDGET_50_SPECS_S = 12.0
MODELS = sorted(path.stem for path in (REPO / "include" / "models").glob("*.yaml"))
SCORED = ["churn", "penguins"]  # the example specs with a scoring section
APPROVED = ["diabetes"]  # the example specs with approval_required
EXPECTED_DAGS = (
    {f"{m}__{kind}" for m in MODELS for kind in ("train", "rollback", "reproduce")}
    | {f"{m}__{kind}" for m in SCORED for kind in ("score", "monitor")}
    | {f"{m}__approve" for m in APPROVED}
)


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_every_dag_file_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == EXPECTED_DAGS


def _parse_in_fresh_interpreter(env: dict[str, str] | None = None) -> dict:
    """Parse the DAG folder in a new interpreter: what it imported, how long the fill took."""
    # A fresh interpreter: this test process may already hold sklearn or mlflow from other tests.
    script = (
        "import json, sys, time\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "started = time.perf_counter()\n"
        f"bag = DagBag(dag_folder={str(DAGS)!r})\n"
        "seconds = time.perf_counter() - started\n"
        "print(json.dumps({'dags': len(bag.dags), 'errors': list(bag.import_errors), 'seconds': seconds,"
        " 'modules': sorted(sys.modules)}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_parsing_imports_no_heavy_library_and_no_devtools() -> None:
    result = _parse_in_fresh_interpreter()
    assert result["errors"] == []
    assert result["dags"] == len(EXPECTED_DAGS)
    heavy = [m for m in HEAVY if m in result["modules"]]
    assert heavy == [], f"parsing the DAGs imported {heavy}"
    devtools = [m for m in result["modules"] if m.startswith("mlops_pipeline.devtools")]
    assert devtools == [], f"parsing the DAGs imported {devtools}"


@pytest.mark.slow
def test_parsing_50_specs_stays_within_its_budget(tmp_path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    template = (REPO / "include" / "models" / "churn.yaml").read_text()
    for index in range(50):
        (models / f"m{index:02d}.yaml").write_text(template.replace("name: churn", f"name: m{index:02d}"))
    result = _parse_in_fresh_interpreter({**os.environ, "MLOPS_MODELS_DIR": str(models)})
    assert result["errors"] == []
    assert result["dags"] == 50 * 5  # train, rollback, reproduce, score, monitor
    assert result["seconds"] < PARSE_BUDGET_50_SPECS_S, (
        f"parsing 50 specs took {result['seconds']:.1f} s, over the budget of {PARSE_BUDGET_50_SPECS_S} s"
    )


def test_every_dag_has_tags_doc_and_owner(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 40, f"{dag_id} has no doc_md"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"


def test_lifecycle_dags_run_one_at_a_time_and_retry_external_calls(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.max_active_runs == 1, dag_id
        for task in dag.tasks:
            if task.task_type != "CandidateApproval":
                assert task.retries >= 2, f"{dag_id}.{task.task_id} talks to MLflow/the store without retries"


def test_train_dag_shape(dagbag) -> None:
    dag = dagbag.dags["churn__train"]
    order = ["ingest", "validate", "train", "evaluate", "register", "promote"]
    for upstream, downstream in itertools.pairwise(order):
        assert downstream in dag.task_dict[upstream].downstream_task_ids, f"{upstream} -> {downstream}"
    assert "request_approval" not in dag.task_dict  # churn.yaml does not ask for approval
    outlets = [asset.name for asset in dag.task_dict["promote"].outlets]
    assert outlets == ["churn__champion"]


def test_a_train_dag_with_approval_asks_in_its_own_run_and_never_promotes(dagbag) -> None:
    training = dagbag.dags["diabetes__train"]  # diabetes.yaml asks for approval
    assert "promote" not in training.task_dict
    asking = training.task_dict["request_approval"]
    assert asking.trigger_dag_id == "diabetes__approve"
    assert asking.skip_when_already_exists  # a retry does not ask twice
    assert "register" in asking.upstream_task_ids | {
        t for up in asking.upstream_task_ids for t in training.task_dict[up].upstream_task_ids
    }
    approving = dagbag.dags["diabetes__approve"]
    order = ["request", "approve", "decide", "promote"]
    for upstream, downstream in itertools.pairwise(order):
        assert downstream in approving.task_dict[upstream].downstream_task_ids, f"{upstream} -> {downstream}"
    waiting = approving.task_dict["approve"]
    assert waiting.retries == 0 and waiting.defaults == ["Reject"]
    assert waiting.options == ["Promote", "Reject"]
    assert [asset.name for asset in approving.task_dict["promote"].outlets] == ["diabetes__champion"]


def test_params_have_schemas_that_refuse_bad_input(dagbag) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    params = dagbag.dags["churn__train"].params
    assert set(params.keys()) == {"as_of", "window_days", "dry_run", "reason"}
    params.validate()  # the defaults are valid
    for name, bad in [
        ("window_days", -3),
        ("window_days", "seven"),
        ("dry_run", "yes"),
        ("as_of", "31/02/2026"),
    ]:
        candidate = copy.deepcopy(params)
        with pytest.raises(ParamValidationError, match=name):
            candidate[name] = bad
            candidate.validate()
    rollback = copy.deepcopy(dagbag.dags["churn__rollback"].params)
    with pytest.raises(ParamValidationError, match="to_version"):
        rollback["to_version"] = 0
        rollback.validate()


def test_a_broken_spec_is_one_clear_import_error_and_the_others_still_load(tmp_path, monkeypatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    models = tmp_path / "models"
    shutil.copytree(REPO / "include" / "models", models)
    broken = (REPO / "include" / "models" / "churn.yaml").read_text().replace("name: churn", "name: broken")
    broken = broken.replace("{type: integer, min: 0, max: 50}", "{type: integer, min: 50, max: 0}")
    (models / "broken.yaml").write_text(broken)
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))

    bag = DagBag(dag_folder=str(DAGS))

    assert list(bag.import_errors) == [str(DAGS / "model_spec_errors.py")]
    message = next(iter(bag.import_errors.values()))
    assert "broken.yaml" in message
    assert "features.support_calls" in message
    assert "min (50.0) is greater than max (0.0)" in message
    assert set(bag.dag_ids) == EXPECTED_DAGS


def test_score_and_monitor_params_refuse_bad_input(dagbag) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    for dag_id, name, bad in (
        ("churn__score", "ds", "2026-13-01"),
        ("churn__score", "model_version", 0),
        ("churn__monitor", "window_days", 0),
        ("churn__monitor", "end", "yesterday"),
    ):
        params = copy.deepcopy(dagbag.dags[dag_id].params)
        with pytest.raises(ParamValidationError, match=name):
            params[name] = bad
            params.validate()


def test_monitor_triggers_the_train_dag_only_through_its_decision(dagbag) -> None:
    monitor = dagbag.dags["churn__monitor"]
    retrain = monitor.get_task("retrain")
    assert retrain.trigger_dag_id == "churn__train"
    assert set(retrain.conf) == {"as_of", "reason"}
    assert [t.task_id for t in retrain.upstream_list] == ["retrain_needed"]


def _types(schema: dict) -> set[str]:
    declared = schema.get("type")
    return {declared} if isinstance(declared, str) else set(declared or ())


def test_every_param_of_every_dag_has_a_bounded_schema(dagbag) -> None:
    from mlops_pipeline.steps.conf import DATE_PATTERN, MAX_MODEL_VERSION, MAX_REASON_LENGTH

    for dag_id, dag in dagbag.dags.items():
        for name in dag.params:
            schema = dag.params.get_param(name).schema
            where = f"{dag_id} param {name}"
            types = _types(schema)
            assert types - {"null"} <= {"string", "integer", "boolean"}, f"{where}: type {types}"
            if "string" in types:
                assert 0 < schema.get("maxLength", 0) <= MAX_REASON_LENGTH, f"{where}: no sensible maxLength"
            if "integer" in types:
                assert "minimum" in schema and "maximum" in schema, f"{where}: unbounded integer"
                assert schema["maximum"] <= MAX_MODEL_VERSION, f"{where}: maximum beyond the registry's"
            if schema.get("format") == "date":
                assert schema["pattern"] == DATE_PATTERN and schema["maxLength"] == 10, where


# Per DAG kind: (param, a value its schema must refuse). Every param of every kind is here.
BAD_VALUES = {
    "train": [
        ("as_of", "20260301"),  # Python's fromisoformat would read it; the schema does not
        ("as_of", "2026-02-30"),
        ("as_of", "2026-03-01" + "x" * 1_000_000),
        ("window_days", 0),
        ("window_days", 3651),
        ("window_days", 1.5),
        ("dry_run", "false"),
        ("reason", "x" * 2001),
        ("reason", 7),
    ],
    "rollback": [
        ("to_version", 0),
        ("to_version", 99999999999999999999),
        ("to_version", 2**31),
        ("to_version", "3"),
        ("reason", "ok"),  # minLength 3
        ("reason", "x" * 501),
    ],
    "reproduce": [
        ("version", 0),
        ("version", 2**31),
        ("version", "3"),
        ("version", None),  # which version to rebuild must be said
    ],
    "score": [
        ("ds", "2026-3-1"),
        ("ds", "x" * 1_000_000),
        ("model_version", 99999999999999999999),
        ("model_version", -1),
        ("model_version", True),
        ("shadow", 1),
    ],
    "approve": [
        ("version", None),  # which candidate must be said
        ("version", 0),
        ("version", 2**31),
        ("version", "3"),
        ("as_of", "2026-3-1"),
        ("as_of", "x" * 1_000_000),
    ],
    "monitor": [
        ("end", "2026-04-04T00:00:00"),
        ("window_days", 366),
        ("window_days", 0),
        ("dry_run", None),
    ],
}


def test_the_bad_value_table_covers_every_param_of_every_dag_kind(dagbag) -> None:
    for kind, cases in BAD_VALUES.items():
        assert {name for name, _ in cases} == set(dagbag.dags[_dag_of(kind)].params), kind


def _dag_of(kind: str) -> str:
    """The example DAG of one kind: churn's, or diabetes' for approve (churn has no approval)."""
    return f"{'diabetes' if kind == 'approve' else 'churn'}__{kind}"


@pytest.mark.parametrize(
    ("kind", "name", "bad"),
    [(kind, name, bad) for kind, cases in BAD_VALUES.items() for name, bad in cases],
    ids=lambda value: str(value)[:24],
)
def test_param_schemas_refuse_oversized_and_malformed_values(dagbag, kind, name, bad) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    params = copy.deepcopy(dagbag.dags[_dag_of(kind)].params)
    with pytest.raises(ParamValidationError, match=f"param {name}"):
        params[name] = bad
        params.validate()


def test_param_schemas_accept_their_limits(dagbag) -> None:
    from mlops_pipeline.steps.conf import MAX_MODEL_VERSION, MAX_REASON_LENGTH

    for dag_id, values in (
        ("churn__train", {"as_of": "2026-02-28", "window_days": 3650, "reason": "x" * MAX_REASON_LENGTH}),
        ("churn__rollback", {"to_version": MAX_MODEL_VERSION, "reason": "x" * 500}),
        ("churn__reproduce", {"version": MAX_MODEL_VERSION}),
        ("churn__score", {"ds": "2026-03-01", "model_version": MAX_MODEL_VERSION, "shadow": True}),
        ("churn__monitor", {"end": "2026-04-04", "window_days": 365, "dry_run": True}),
        ("diabetes__approve", {"version": MAX_MODEL_VERSION, "as_of": "2026-03-01"}),
    ):
        params = copy.deepcopy(dagbag.dags[dag_id].params)
        for name, value in values.items():
            params[name] = value
        assert params.validate() == {**params.dump(), **values}, dag_id


def test_the_retrain_reason_fits_the_train_dags_schema_however_long_the_decision(dagbag) -> None:
    import jinja2

    from mlops_pipeline.steps.conf import MAX_REASON_LENGTH

    template = dagbag.dags["churn__monitor"].get_task("retrain").conf["reason"]
    for reason in ("2 of the last 3 windows alarming (latest: prediction drift)", "x " * 5000):
        checked = {"decision": {"reason": reason}}
        ti = SimpleNamespace(xcom_pull=lambda task_ids, checked=checked: checked)
        rendered = jinja2.Environment().from_string(template).render(ti=ti)
        assert len(rendered) <= MAX_REASON_LENGTH
        assert rendered == reason or rendered.endswith("...")
        params = copy.deepcopy(dagbag.dags["churn__train"].params)
        params["reason"] = rendered
        params.validate()
