"""Specs inferred by `mlops spec infer` from each shipped example's data go through the real train
steps (ingest → validate → train → evaluate → register → promote) to a promoted champion, unedited.

As a user would: the sample is a CSV read as the CLI reads it, the inferred YAML is written to
`<tmp>/models/<name>.yaml` and loaded with `load_spec`, and the same CSV lands in the store under the
spec's source pattern for one day. MLflow is real (one SQLite store for the module), the store a file store.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from mlops_pipeline import layout, registry, steps
from mlops_pipeline.devtools import spec_infer
from mlops_pipeline.devtools.example_data import churn_batch, diabetes_frame, penguins_frame
from mlops_pipeline.devtools.spec_infer import InferredSpec
from mlops_pipeline.settings import get_settings
from mlops_pipeline.spec import ModelSpec, load_spec
from mlops_pipeline.steps import train as train_steps
from mlops_pipeline.steps.results import Evaluation, Promotion, Registered, Validated
from mlops_pipeline.store import LocalStore

pytestmark = pytest.mark.slow

DS = datetime.date(2026, 1, 1)
CHURN_DAYS = [datetime.date(2026, 1, day) for day in (5, 6, 7)]
PENGUIN_SPECIES = ["Adelie", "Chinstrap", "Gentoo"]


def churn_sample() -> pd.DataFrame:
    """Three clean days of churn example data, 300 rows a day."""
    return pd.concat([churn_batch(day, rows=300) for day in CHURN_DAYS], ignore_index=True)


# name → (the example's table, its target column)
EXAMPLES: dict[str, tuple[Callable[[], pd.DataFrame], str]] = {
    "churn": (churn_sample, "churned"),
    "diabetes": (diabetes_frame, "progression"),
    "penguins": (penguins_frame, "species"),
}


def read_as_cli(path: Path) -> pd.DataFrame:
    """A CSV read as `mlops spec infer` (and the pipeline) reads it: text, only an empty field missing."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


@dataclass(frozen=True)
class Chain:
    """One example taken from its CSV through inference and every train step."""

    csv: Path
    inferred: InferredSpec
    spec: ModelSpec
    validated: Validated
    evaluation: Evaluation
    registered: Registered
    promoted: Promotion


@pytest.fixture(scope="module")
def workdir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A temp dir holding the file store and a SQLite MLflow store, with the settings the steps read."""
    import mlflow

    root = tmp_path_factory.mktemp("inferred")
    store = LocalStore(root / "store")
    monkeypatch_module.chdir(root)
    monkeypatch_module.setenv("MLOPS_STORE_URI", store.root_uri)
    monkeypatch_module.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    monkeypatch_module.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch_module.delenv(steps.FAULT_POINT_VAR, raising=False)
    get_settings.cache_clear()
    registry.connect(f"sqlite:///{root}/mlflow.db")
    for name in EXAMPLES:
        mlflow.create_experiment(name, artifact_location=(root / "artifacts" / name).as_uri())
    yield root
    get_settings.cache_clear()
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def chain(workdir: Path) -> Callable[[str], Chain]:
    """Run one example's chain once per module: CSV → inferred YAML → load_spec → the six train steps."""
    done: dict[str, Chain] = {}

    def run(name: str) -> Chain:
        if name in done:
            return done[name]
        make_table, target = EXAMPLES[name]
        csv = workdir / "samples" / f"{name}.csv"
        csv.parent.mkdir(exist_ok=True)
        make_table().to_csv(csv, index=False)
        inferred = spec_infer.infer_spec(read_as_cli(csv), target, name=name, sample_label=str(csv))
        spec_path = workdir / "models" / f"{name}.yaml"
        spec_path.parent.mkdir(exist_ok=True)
        spec_path.write_text(inferred.yaml_text)
        spec = load_spec(spec_path)
        store = LocalStore(workdir / "store")
        # The sample's own bytes, dropped where the spec's source pattern looks for day DS.
        key = spec.source.uri.format(ds=DS.isoformat()).replace("*", "data")
        store.write_bytes(key, csv.read_bytes())
        run_info = steps.RunInfo(f"{name}__train", "manual__inferred", "tester", f"{DS}T00:00:00+00:00")
        manifest = train_steps.ingest(spec, store, DS, None)
        validated = train_steps.validate(spec, store, manifest, run_info)
        candidate = train_steps.train(spec, store, manifest, validated, run_info)
        evaluation = train_steps.evaluate(spec, store, validated, candidate, run_info)
        registered = train_steps.register(spec, manifest, candidate, evaluation, run_info)
        promoted = train_steps.promote(spec, store, registered, run_info)
        done[name] = Chain(csv, inferred, spec, validated, evaluation, registered, promoted)
        return done[name]

    return run


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_inferred_spec_reaches_a_promoted_champion_without_edits(
    name: str, chain: Callable[[str], Chain], workdir: Path
) -> None:
    """The spec inferred from the example's CSV validates, trains, passes its gates and is promoted, as written."""
    result = chain(name)
    spec, baseline = result.spec, result.inferred.baseline
    assert spec == result.inferred.spec
    assert result.validated["passed"] and result.validated["quarantined_rows"] == 0
    metric = spec.gates.primary_metric
    floor = spec.gates.floors[metric]
    assert floor < baseline.mean
    assert result.evaluation["passed"] and result.evaluation["failures"] == []
    assert result.evaluation["candidate_metrics"][metric] >= floor
    report = json.loads(
        LocalStore(workdir / "store").read_bytes(layout.gate_report_key(name, "manual__inferred", "json"))
    )
    assert report["passed"] is True
    assert result.promoted["champion_version"] == result.registered["version"]
    champion = registry.alias_version(registry.configured_client(), name, registry.CHAMPION)
    assert champion is not None and str(champion.version) == result.registered["version"]


def test_inferred_penguins_spec_has_no_id_and_its_champion_predicts_the_text_labels(
    chain: Callable[[str], Chain],
) -> None:
    """Penguins (no id column, text labels): a derived row id, and the champion predicts Adelie/Chinstrap/Gentoo."""
    from mlops_pipeline.training import features_frame

    result = chain("penguins")
    assert result.spec.derived_row_id and result.spec.target_classes == PENGUIN_SPECIES
    client = registry.configured_client()
    champion = registry.alias_version(client, "penguins", registry.CHAMPION)
    assert champion is not None
    model = registry.load_version(client, champion)
    table = read_as_cli(result.csv)
    predicted = pd.Series(model.predict(features_frame(table, result.spec)))
    assert list(model.classes_) == PENGUIN_SPECIES
    assert set(predicted) == set(PENGUIN_SPECIES)
    assert (predicted.to_numpy() == table["species"].to_numpy()).mean() > 0.9
