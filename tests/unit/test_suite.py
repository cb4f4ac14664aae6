"""The validation suite generated from a spec: which rules, named how."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_pipeline.spec import ModelSpec, load_spec
from mlops_pipeline.suite import build_rules

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_spec(REPO / "include/models/churn.yaml")


def test_rules_cover_every_column_of_the_spec(spec: ModelSpec) -> None:
    names = {rule.name for rule in build_rules(spec, set(spec.columns))}
    for column in spec.columns:
        assert f"schema:{column}" in names
    assert {"unique:customer_id", "not_null:customer_id", "row_count", "type:churned"} <= names
    assert {"range:monthly_charges", "type:tenure_months", "allowed:plan"} <= names
    assert "not_null:total_charges" not in names  # nullable in the spec
    assert "not_null:tenure_months" in names
    assert any(name.startswith("extra:0:expect_column_mean_to_be_between") for name in names)
