"""Every benchmark script imports: they are run by hand, not by the suite, so an import broken by a
move (as `bench_scoring.py`'s once was, by the layout change) would otherwise wait for the next
measurement to be found."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py"))


def test_there_are_benchmarks() -> None:
    assert len(BENCHMARKS) >= 4


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda path: path.name)
def test_the_benchmark_imports(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As `python benchmarks/<name>.py` runs it: its folder first on the path (calibrate_drift.py
    # imports bench_drift.py beside it), the module registered while it runs (dataclasses look it up).
    monkeypatch.syspath_prepend(str(path.parent))
    name = f"benchmark_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)  # runs the module's top level only: `main()` is behind __main__
    assert callable(getattr(module, "main", None)), f"{path.name} has a main()"
