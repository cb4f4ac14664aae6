"""Published prediction partitions: staging, the checks before publishing, the manifest, and the reader.

A partition is `<area>/<model>/ds=<date>/` (area `predictions` or `predictions_shadow`). A run
writes its part files under a staging prefix of its own, `…/ds=<date>/_runs/<token>/`, checks
them, and then publishes **last**:

1. `…/_manifests/<generation>.json` with a create-only write (S3 `IfNoneMatch="*"`, a hard link
   on the file store): two runs can never publish the same generation. Unless the generation files
   already hold this publish's own (same run, same staging token, same files): then nothing is
   written and the publish goes on to step 2 with that generation. So a retry whose earlier attempt
   wrote its generation but never heard back (the answer lost in an S3 outage, or the attempt died
   before step 2) publishes no second generation of the same parts; nor does one that finds its
   earlier attempt's write landing late, in the create-only write's refusal;
2. `…/_manifest.json`, replaced atomically (a rename on the file store, a PUT on S3), and set
   forward to the newest generation if an overlapping publish wrote a newer one meanwhile.

Readers go through `_manifest.json` only, which names the exact files (with row counts and
sha256): a partition without a manifest does not exist for them, and a rerun that replaces a
partition switches readers from the old file set to the new one in one step, never a mix. Part
files that no manifest of the last two generations names (a crashed run's staging) are deleted
by the next run of that partition.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlops_pipeline.layout import (
    MANIFEST,
    PREDICTIONS,
    generation_key,
    generations_prefix,
    manifest_key,
    partition_prefix,
    staging_root,
)
from mlops_pipeline.scoring import PREDICTION, sha256_file
from mlops_pipeline.store import ObjectExistsError, ObjectStore, safe_segment

# Generations whose files are kept: the current one and the one before (a reader may be mid-read).
KEPT_GENERATIONS = 2


class PublishError(RuntimeError):
    """Staged parts failed the checks before publishing; nothing was published."""


@dataclass(frozen=True)
class PartFile:
    """One staged output file."""

    key: str
    rows: int
    sha256: str
    bytes: int
    input_key: str
    input_sha256: str


def upload_part(store: ObjectStore, local: Path, key: str, input_key: str, input_sha256: str) -> PartFile:
    """Upload one local part file to its staging key and describe it."""
    rows = pq.ParquetFile(local).metadata.num_rows
    store.upload_file(local, key)
    return PartFile(key, rows, sha256_file(local), local.stat().st_size, input_key, input_sha256)


def read_manifest(store: ObjectStore, area: str, model: str, ds: str) -> dict[str, Any] | None:
    """The published manifest of a partition, or None when the partition was never published."""
    key = f"{partition_prefix(area, model, ds)}/{MANIFEST}"
    try:
        return dict(json.loads(store.read_bytes(key)))
    except FileNotFoundError:
        return None


def _generations(store: ObjectStore, area: str, model: str, ds: str) -> list[str]:
    return [k for k in store.list(generations_prefix(area, model, ds)) if k.endswith(".json")]


def _check_part(store: ObjectStore, part: PartFile, schema: pa.Schema) -> None:
    """Re-read a staged part: it exists, has the recorded bytes, the schema, and no missing prediction."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "part.parquet"
        try:
            store.download_file(part.key, local)
        except FileNotFoundError as exc:
            raise PublishError(f"staged part {store.uri(part.key)} is missing") from exc
        if (actual := sha256_file(local)) != part.sha256:
            raise PublishError(f"staged part {store.uri(part.key)} changed: sha256 {actual} != {part.sha256}")
        parquet = pq.ParquetFile(local)
        if not parquet.schema_arrow.equals(schema, check_metadata=False):
            raise PublishError(f"{store.uri(part.key)} has schema {parquet.schema_arrow}, expected {schema}")
        if parquet.metadata.num_rows != part.rows:
            raise PublishError(
                f"{store.uri(part.key)} has {parquet.metadata.num_rows} rows, recorded {part.rows}"
            )
        column = parquet.schema_arrow.get_field_index(PREDICTION)
        for group in range(parquet.metadata.num_row_groups):
            statistics = parquet.metadata.row_group(group).column(column).statistics
            if statistics is None or statistics.null_count:
                raise PublishError(f"{store.uri(part.key)} has rows without a prediction")


def publish_partition(
    store: ObjectStore,
    area: str,
    model: str,
    ds: str,
    parts: list[PartFile],
    *,
    expected_rows: int,
    schema: pa.Schema,
    details: dict[str, Any],
) -> dict[str, Any]:
    """Check the staged parts, then publish the partition's manifest last; the manifest.

    `expected_rows` is the input rows minus the quarantined ones; `details` (model version, run,
    data sha256, metrics …) is recorded in the manifest.
    """
    rows = sum(part.rows for part in parts)
    if rows != expected_rows:
        raise PublishError(
            f"{partition_prefix(area, model, ds)}: staged parts hold {rows} rows, expected {expected_rows} "
            "(input rows minus quarantined rows); not publishing"
        )
    for part in parts:
        _check_part(store, part, schema)
    files = [asdict(part) for part in sorted(parts, key=lambda p: p.key)]
    generations = _generations(store, area, model, ds)
    if (own := _own_generation(store, generations, details, files)) is not None:
        return _finish_own(store, area, model, ds, *own)
    generation = len(generations) + 1
    manifest = {
        **details,
        "area": area,
        "model": model,
        "ds": ds,
        "generation": generation,
        "rows": rows,
        "files": files,
        "schema": [f"{field.name}: {field.type}" for field in schema],
    }
    data = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
    prefix = partition_prefix(area, model, ds)
    key = generation_key(area, model, ds, generation)
    try:
        store.create_only(key, data)
    except ObjectExistsError as exc:
        # Our own earlier attempt's write may be the one that got there first (S3 carried out a
        # timed-out PUT after all): then this generation is ours, and only step 2 is left.
        if (own := _own_generation(store, [key], details, files)) is not None:
            return _finish_own(store, area, model, ds, *own)
        raise PublishError(
            f"{prefix}: another run published generation {generation} at the same time"
        ) from exc
    _point_readers_at(store, area, model, ds, generation, data)
    return manifest


def _own_generation(
    store: ObjectStore, keys: list[str], details: dict[str, Any], files: list[dict[str, Any]]
) -> tuple[dict[str, Any], bytes] | None:
    """The generation among `keys` that this publish wrote already (an earlier attempt of it): the
    same run and staging token (unique per `plan`) naming the same files; None if there is none.

    Newest first, since a retry's own generation is normally the newest one. Every generation of
    the partition is read when none is ours: one small GET per earlier publish of the day.
    """
    for key in reversed(keys):
        data = store.read_bytes(key)
        existing = json.loads(data)
        if (
            existing.get("run_id") == details.get("run_id")
            and existing.get("token") == details.get("token")
            and existing.get("files") == files
        ):
            return dict(existing), data
    return None


def _finish_own(
    store: ObjectStore, area: str, model: str, ds: str, manifest: dict[str, Any], data: bytes
) -> dict[str, Any]:
    """Step 2 for a generation this publish wrote in an earlier attempt; its manifest.

    Readers are pointed at it, or straight at a newer generation if an overlapping publish wrote
    one since: its files may be gone already (kept are those of the last two generations).
    """
    generation = int(manifest["generation"])
    if (newest := _newest_generation(store, area, model, ds)) > generation:
        generation, data = newest, store.read_bytes(generation_key(area, model, ds, newest))
    _point_readers_at(store, area, model, ds, generation, data)
    return manifest


def _point_readers_at(
    store: ObjectStore, area: str, model: str, ds: str, generation: int, data: bytes
) -> None:
    """Write `_manifest.json` (generation `generation`, content `data`), then make sure it does not
    point at an older generation than the newest one published.

    Two publishes of one day that overlap can write `_manifest.json` out of order. Whoever finds a
    newer generation file after its own write copies the newest one there and looks again, so the
    last look of the last writer leaves readers on the newest complete partition. A reader may see
    the older generation for a moment, never a mix of both.
    """
    store.write_bytes(manifest_key(area, model, ds), data)
    written = generation
    while (newest := _newest_generation(store, area, model, ds)) > written:
        store.write_bytes(
            manifest_key(area, model, ds), store.read_bytes(generation_key(area, model, ds, newest))
        )
        written = newest


def _newest_generation(store: ObjectStore, area: str, model: str, ds: str) -> int:
    keys = _generations(store, area, model, ds)
    return max((int(key.rsplit("/", 1)[1].removesuffix(".json")) for key in keys), default=0)


def clean_stale_parts(
    store: ObjectStore, area: str, model: str, ds: str, keep_token: str | None = None
) -> int:
    """Delete the staging folders of runs that no recent manifest names (crashed or superseded runs).

    A run's parts share one folder `_runs/<token>/`, all named by its manifest or none, so whole
    folders are deleted. Returns how many objects were deleted.
    """
    runs = f"{staging_root(area, model, ds)}/"
    manifests = [
        json.loads(store.read_bytes(key)) for key in _generations(store, area, model, ds)[-KEPT_GENERATIONS:]
    ]
    # And the published one: generation files of publishes that crashed before `_manifest.json`
    # may be newer than it, and its files must outlive them.
    if (published := read_manifest(store, area, model, ds)) is not None:
        manifests.append(published)
    keep = {
        entry["key"][len(runs) :].split("/", 1)[0] for manifest in manifests for entry in manifest["files"]
    }
    if keep_token:
        keep.add(safe_segment(keep_token))
    tokens = {key[len(runs) :].split("/", 1)[0] for key in store.list(runs) if key.startswith(runs)}
    return sum(store.delete_prefix(f"{runs}{token}") for token in sorted(tokens - keep))


def published_days(store: ObjectStore, area: str, model: str) -> list[str]:
    """The days of `model` that have a published partition, sorted."""
    days = []
    for key in store.list(f"{area}/{model}"):
        parts = key.split("/")
        if len(parts) == 4 and parts[3] == MANIFEST and parts[2].startswith("ds="):
            days.append(parts[2][3:])
    return sorted(days)


def read_partition(
    store: ObjectStore, model: str, ds: str, area: str = PREDICTIONS, *, verify: bool = True
) -> pa.Table | None:
    """The published predictions of one day, or None if the day has no manifest.

    Only the files the manifest names are read; with `verify`, each file's sha256 is checked.
    """
    manifest = read_manifest(store, area, model, ds)
    if manifest is None:
        return None
    tables = []
    for entry in manifest["files"]:
        data = store.read_bytes(entry["key"])
        if verify:
            import hashlib

            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise PublishError(f"{store.uri(entry['key'])} does not match its manifest")
        tables.append(pq.read_table(io.BytesIO(data)))
    return pa.concat_tables(tables) if tables else None
