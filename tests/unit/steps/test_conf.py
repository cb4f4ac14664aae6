"""The conf check of a run's first task: only the params its DAG declares."""

from __future__ import annotations

import pytest

from mlops_pipeline.steps import StepRejected
from mlops_pipeline.steps.conf import inspect_conf, refuse_unknown_conf

ROLLBACK = ("to_version", "reason")


def test_declared_keys_and_an_empty_conf_pass() -> None:
    assert inspect_conf({"to_version": 3, "reason": "bad day"}, ROLLBACK).ok
    assert inspect_conf({}, ROLLBACK).ok
    assert inspect_conf(None, ROLLBACK).ok
    refuse_unknown_conf({"reason": "only some of them"}, ROLLBACK, "churn__rollback")


def test_unknown_keys_are_listed_sorted_with_the_allowed_ones() -> None:
    result = inspect_conf({"to_version": 3, "zzz": 1, "to_verison": 2}, ROLLBACK)
    assert not result.ok
    assert result.unknown == ("to_verison", "zzz")
    assert result.allowed == ("reason", "to_version")


def test_the_refusal_names_the_dag_the_keys_and_the_params() -> None:
    with pytest.raises(StepRejected) as excinfo:
        refuse_unknown_conf({"junk": 1, "reason": "x"}, ROLLBACK, "churn__rollback")
    message = str(excinfo.value)
    assert message.startswith("churn__rollback does not know the conf key 'junk';")
    assert "its params are: reason, to_version" in message
    assert "Nothing was done" in message


def test_a_huge_key_or_many_keys_keep_the_message_short() -> None:
    conf = {"a" * 1_000_000: 1, **{f"junk{i:02d}": i for i in range(30)}}
    with pytest.raises(StepRejected) as excinfo:
        refuse_unknown_conf(conf, ROLLBACK, "churn__rollback")
    message = str(excinfo.value)
    assert len(message) < 1000
    assert "junk00" in message and "and 21 more" in message  # the long key sorts first
    assert "(1000000 chars)" in message


def test_a_dag_without_params_accepts_only_an_empty_conf() -> None:
    assert inspect_conf({}, ()).ok
    with pytest.raises(StepRejected, match="its params are: none"):
        refuse_unknown_conf({"x": 1}, (), "some__dag")
