"""The model file, byte for byte the same whenever the same pipeline is saved.

skops (the models' format, through MLflow's sklearn flavor) writes a zip whose entries carry the
time of writing and are named after `id()`s of the saved arrays (memory addresses), and whose
`schema.json` refers to objects by those ids. So two saves of one fitted pipeline differ, and an
artifact's sha256 could never prove that a model was rebuilt exactly (`reproduction.py`). skops
has no option for this (0.16), so :func:`canonicalize_skops` rewrites the file once it is saved:
ids renumbered in the order `schema.json` first names them (the order skops walks the object),
entries in a fixed order with a fixed time and mode, `schema.json` dumped as skops dumps it. What
loads is unchanged: the same references between the same objects, the same array bytes.

:data:`DETERMINISTIC_SKLEARN` is MLflow's sklearn flavor with that step after `save_model`, for
`mlflow.models.Model.log` (which saves into a local folder, then uploads it).
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

SCHEMA_FILE = "schema.json"
# The date zip's format starts at: no wall-clock time in the file.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644 << 16
_ARRAY_FILE = re.compile(r"^(\d+)\.npy$")


def canonicalize_skops(path: Path) -> None:
    """Rewrite the skops file at `path` in its canonical form (same content, deterministic bytes)."""
    with zipfile.ZipFile(path) as source:
        schema = json.loads(source.read(SCHEMA_FILE))
        entries = {info.filename: (info, source.read(info.filename)) for info in source.infolist()}
    renumbered: dict[int, int] = {}
    schema = _renumber(schema, renumbered)
    files: list[tuple[str, bytes, int]] = []
    for name, (info, data) in entries.items():
        if name == SCHEMA_FILE:
            continue
        match = _ARRAY_FILE.match(name)
        if match is None or int(match.group(1)) not in renumbered:
            raise ValueError(f"{path}: unexpected entry {name!r} in a skops file; cannot make it canonical")
        files.append((f"{renumbered[int(match.group(1))]}.npy", data, info.compress_type))
    files.sort(key=lambda item: int(item[0].removesuffix(".npy")))
    schema_type = entries[SCHEMA_FILE][0].compress_type
    # skops writes schema.json with indent=2 and reads it with json.loads: the same form here.
    files.append((SCHEMA_FILE, json.dumps(schema, indent=2).encode(), schema_type))
    staged = path.with_name(path.name + ".canonical")
    with zipfile.ZipFile(staged, "w") as target:
        for name, data, compression in files:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = compression
            info.external_attr = FILE_MODE
            info.create_system = 3  # Unix, whatever machine saved it
            target.writestr(info, data)
    staged.replace(path)


def _renumber(node: Any, renumbered: dict[int, int]) -> Any:
    """`node` with every object id (`__id__`) and array file name (`<id>.npy`) renumbered 1, 2, …
    in the order of first appearance; one id keeps one number (shared objects stay shared)."""

    def number(old: int) -> int:
        return renumbered.setdefault(old, len(renumbered) + 1)

    if isinstance(node, list):
        return [_renumber(item, renumbered) for item in node]
    if not isinstance(node, dict):
        return node
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key == "__id__" and isinstance(value, int):
            result[key] = number(value)
        elif key == "file" and isinstance(value, str) and (match := _ARRAY_FILE.match(value)):
            result[key] = f"{number(int(match.group(1)))}.npy"
        else:
            result[key] = _renumber(value, renumbered)
    return result


def _save_model(path: str, mlflow_model: Any = None, **kwargs: Any) -> None:
    """MLflow's sklearn `save_model`, then the skops file made canonical."""
    import mlflow.sklearn

    from mlops_pipeline.registry import artifact_file

    mlflow.sklearn.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
    if kwargs.get("serialization_format") == "skops":
        canonicalize_skops(artifact_file(Path(path)))


# A flavor for `mlflow.models.Model.log(flavor=...)`, which calls only its `save_model` (and reads
# `__name__` for the logged model's flavor unless `flavor_name` is given).
DETERMINISTIC_SKLEARN = SimpleNamespace(__name__="mlflow.sklearn", save_model=_save_model)


def save_pipeline(pipeline: Any, folder: Path, trusted_types: list[str]) -> Path:
    """Save `pipeline` as the train step logs it (skops, canonical) into `folder`; the model file.

    For comparing a rebuilt pipeline with a logged one by sha256 without logging it (explicit
    requirements: MLflow's inference would cost seconds and changes nothing in the model file).
    """
    from mlops_pipeline.registry import artifact_file

    _save_model(
        str(folder),
        sk_model=pipeline,
        serialization_format="skops",
        skops_trusted_types=trusted_types,
        pip_requirements=["scikit-learn"],
    )
    return artifact_file(folder)
