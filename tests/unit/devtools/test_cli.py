"""Unit tests of the `mlops` command line (`mlops_pipeline.devtools.cli`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_pipeline.devtools import cli, demo


def test_conf_must_be_a_json_object() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["demo", "--conf", '{"as_of": "2026-03-10"}']).conf == {"as_of": "2026-03-10"}
    for bad in ("[1]", "{not json"):
        with pytest.raises(SystemExit):
            parser.parse_args(["demo", "--conf", bad])


@pytest.mark.slow
def test_example_data_command_writes_the_store(tmp_path: Path, capsys) -> None:
    assert cli.main(["example-data", "--store", (tmp_path / "store").as_uri()]) == 0
    assert (tmp_path / "store" / "landing" / "churn" / "ds=2026-02-28" / "batch.csv").is_file()
    assert "96000 churn rows" in capsys.readouterr().out
    # The demo's own check sees it as already there and does not rewrite it.
    assert demo.ensure_example_data(tmp_path / "store").startswith("example data: already in")
