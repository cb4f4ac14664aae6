"""A quick churn champion for the task-body tests, trained through the train steps."""

from __future__ import annotations

import datetime

from mlops_pipeline import steps
from mlops_pipeline.spec import ModelSpec
from mlops_pipeline.steps import train as train_steps
from mlops_pipeline.store import LocalStore

# The churn champion of these tests is trained on the 7 days ending here.
CHAMPION_AS_OF = datetime.date(2026, 2, 28)


def train_quick_champion(churn: ModelSpec, store: LocalStore) -> str:
    """Train, register and promote a churn model through the train steps; its version.

    Fewer boosting rounds than the spec's 200: the same features and gates, a fraction of the time
    (each later model load costs less too).
    """
    params = {**churn.estimator.params, "max_iter": 40}
    quick = churn.model_copy(update={"estimator": churn.estimator.model_copy(update={"params": params})})
    run = steps.RunInfo("churn__train", "manual__champion", "tester", f"{CHAMPION_AS_OF}T00:00:00+00:00")
    manifest = train_steps.ingest(quick, store, CHAMPION_AS_OF, 7)
    validated = train_steps.validate(quick, store, manifest, run)
    candidate = train_steps.train(quick, store, manifest, validated, run)
    evaluation = train_steps.evaluate(quick, store, validated, candidate, run)
    registered = train_steps.register(quick, manifest, candidate, evaluation, run)
    return train_steps.promote(quick, store, registered, run)["champion_version"]
