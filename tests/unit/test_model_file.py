"""The model file: the same fitted pipeline saved twice, at other times and in other processes,
gives the same bytes, and loads to the same model."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io

from mlops_pipeline.candidates import trusted_types
from mlops_pipeline.model_file import FIXED_TIME, canonicalize_skops, save_pipeline

SAVE_SCRIPT = """
import sys
from pathlib import Path
import numpy as np, pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from mlops_pipeline.candidates import trusted_types
from mlops_pipeline.model_file import save_pipeline

rng = np.random.default_rng(0)
frame = pd.DataFrame({"x": rng.normal(size=300), "colour": rng.choice(["red", "blue", "green"], 300)})
pipeline = Pipeline([
    ("encode", ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), ["colour"])],
                                 remainder="passthrough")),
    ("model", HistGradientBoostingClassifier(max_iter=20, random_state=0)),
]).fit(frame, frame["x"] > 0)
print(save_pipeline(pipeline, Path(sys.argv[1]), trusted_types(pipeline)))
"""


def _saved_in_fresh_process(folder: Path, hash_seed: str) -> bytes:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    result = subprocess.run(
        [sys.executable, "-c", SAVE_SCRIPT, str(folder)], env=env, capture_output=True, text=True, check=True
    )
    return Path(result.stdout.strip().splitlines()[-1]).read_bytes()


@pytest.mark.slow
def test_two_processes_save_the_same_pipeline_to_the_same_bytes(tmp_path: Path) -> None:
    first = _saved_in_fresh_process(tmp_path / "a", "1")
    second = _saved_in_fresh_process(tmp_path / "b", "2")  # other set/dict hashing, other addresses
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()


def _pipeline():
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    return RandomForestClassifier(n_estimators=5, random_state=0).fit(frame, frame["a"] > frame["b"]), frame


def test_skops_alone_is_not_deterministic_and_the_canonical_form_is(tmp_path: Path) -> None:
    model, _ = _pipeline()
    plain = [skops.io.dumps(model), skops.io.dumps(model)]
    # Entries named after memory addresses: what the canonical form exists to remove.
    names = [sorted(zipfile.ZipFile(io.BytesIO(data)).namelist()) for data in plain]
    assert any(name.split(".")[0].isdigit() and int(name.split(".")[0]) > 10**6 for name in names[0])
    canonical = []
    for index, data in enumerate(plain):
        path = tmp_path / f"{index}.skops"
        path.write_bytes(data)
        canonicalize_skops(path)
        canonical.append(path.read_bytes())
    assert canonical[0] == canonical[1]
    with zipfile.ZipFile(tmp_path / "0.skops") as archive:
        infos = archive.infolist()
    assert {info.date_time for info in infos} == {FIXED_TIME}
    assert infos[-1].filename == "schema.json"
    numbers = [int(info.filename.removesuffix(".npy")) for info in infos[:-1]]
    assert numbers == sorted(numbers) and max(numbers) < 1000  # renumbered 1, 2, ..., not addresses


def test_the_canonical_file_loads_to_the_same_model(tmp_path: Path) -> None:
    model, frame = _pipeline()
    path = save_pipeline(model, tmp_path / "model", trusted_types(model))
    loaded = skops.io.load(path, trusted=trusted_types(model))
    assert loaded.predict_proba(frame).tobytes() == model.predict_proba(frame).tobytes()
    # Renumbered ids still resolve: every tree of the forest is there.
    assert len(loaded.estimators_) == 5


def test_an_unknown_entry_is_refused_rather_than_dropped(tmp_path: Path) -> None:
    model, _ = _pipeline()
    path = tmp_path / "odd.skops"
    path.write_bytes(skops.io.dumps(model))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("notes.txt", b"hello")
    with pytest.raises(ValueError, match=r"unexpected entry 'notes\.txt'"):
        canonicalize_skops(path)
