"""A corpus of defective input files for the churn model, generated offline and deterministically.

Each :class:`Defect` is one file as it might land from a broken export, with what the pipeline must
do with it: `refused` (the run fails once, naming the file and the rule, nothing is published) or
`quarantined` (the offending rows are moved aside under the named rule and the rest goes on), or
`accepted` for format variants that must be read exactly like the clean file (no row lost).
Training files land under `source.uri`; scoring files under `scoring.input.uri` (Parquet, or CSV
for `score_csv`). The clean rows are the example data of one clean day.
"""

from __future__ import annotations

import datetime
import gzip
import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from mlops_pipeline.devtools.example_data import churn_batch, churn_scoring_batch

BASE_DAY = datetime.date(2026, 2, 20)  # a clean example day: 800 rows that pass every rule
Kind = Literal["train", "train_parquet", "score", "score_csv"]
Outcome = Literal["refused", "quarantined", "accepted"]


@dataclass(frozen=True)
class Defect:
    """One defective file and what must happen to it."""

    name: str
    kind: Kind
    data: bytes
    outcome: Outcome
    rule: str  # the rule the refusal or the quarantined rows must name
    extension: str = "csv"

    @property
    def filename(self) -> str:
        """The file's name in its day's folder (names the case, so a message shows which one it is)."""
        return f"{self.name}.{self.extension}"


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n").encode()


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _replace_line(data: bytes, number: int, change: bytes, by: bytes) -> bytes:
    """`data` with the first `change` on or after its 1-based line `number` replaced by `by`."""
    lines = _lines(data)
    index = next(i for i in range(number - 1, len(lines)) if change in lines[i])
    lines[index] = lines[index].replace(change, by, 1)
    return b"\n".join(lines)


def _random_bytes(size: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


HTML = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><h1>502 Bad Gateway</h1><p>The export service, the proxy, or both, failed.</p>\n"
    b"</body></html>\n"
)


def training_defects() -> list[Defect]:
    """Defective training source files (CSV, and Parquet where the spec says so)."""
    clean = churn_batch(BASE_DAY)
    good = _csv(clean)
    big = _csv(churn_batch(BASE_DAY, rows=1_600))
    duplicated = pd.concat([clean, clean.iloc[:8]], ignore_index=True)
    renamed = clean.rename(columns={"plan": "plan_name", "region": "area"})
    all_null = clean.assign(monthly_charges=np.nan)
    huge = clean.astype({"monthly_charges": object})
    huge.loc[5, "monthly_charges"] = "x" * 2_000_000
    # Looks like a number, overflows a float: +inf, which monthly_charges' max refuses.
    nines = clean.astype({"monthly_charges": object})
    nines.loc[7, "monthly_charges"] = "9" * 2_000_000
    mixed = _lines(good)
    for number in (11, 12, 13, 14):
        mixed[number - 1] = mixed[number - 1].replace(b",", b";")
    return [
        Defect("empty", "train", b"", "refused", "readable"),
        Defect("header_only", "train", _lines(good)[0] + b"\n", "refused", "row_count"),
        Defect("truncated_gzip", "train", gzip.compress(good, mtime=0)[:3_000], "refused", "readable"),
        Defect("html_page", "train", HTML, "refused", "readable"),
        Defect("random_bytes", "train", _random_bytes(20_000, seed=7), "refused", "readable"),
        Defect("utf16", "train", good.decode().encode("utf-16"), "refused", "readable"),
        Defect("parquet_named_csv", "train", _parquet(clean), "refused", "readable"),
        Defect("semicolons", "train", good.replace(b",", b";"), "refused", "readable"),
        Defect("wrong_columns", "train", _csv(renamed), "refused", "schema:plan"),
        Defect("all_null_column", "train", _csv(all_null), "refused", "not_null:monthly_charges"),
        # One line of Latin-1 in 1,600 lines of UTF-8: that row is quarantined, the batch goes on.
        Defect(
            "one_latin1_line",
            "train",
            _replace_line(big, 812, b"north", "nörth".encode("latin-1")),
            "quarantined",
            "encoding",
        ),
        Defect(
            "nul_bytes", "train", _replace_line(good, 40, b"basic", b"ba\x00sic"), "quarantined", "encoding"
        ),
        Defect("duplicated_ids", "train", _csv(duplicated), "quarantined", "unique:customer_id"),
        Defect("huge_field", "train", _csv(huge), "quarantined", "type:monthly_charges"),
        Defect("two_million_nines", "train", _csv(nines), "quarantined", "range:monthly_charges"),
        Defect("mixed_delimiters", "train", b"\n".join(mixed), "quarantined", "not_null:tenure_months"),
        Defect("truncated_csv", "train", good[: len(good) - 40], "quarantined", "not_null:"),
        Defect("bom_crlf", "train", b"\xef\xbb\xbf" + good.replace(b"\n", b"\r\n"), "accepted", ""),
        Defect(
            "truncated_parquet", "train_parquet", _parquet(clean)[:-200], "refused", "readable", "parquet"
        ),
    ]


def scoring_defects() -> list[Defect]:
    """Defective scoring input files (Parquet as the churn spec says; CSV for `score_csv`)."""
    clean = churn_scoring_batch(BASE_DAY)
    parquet = _parquet(clean)
    good = _csv(clean)
    duplicated = pd.concat([clean, clean.iloc[:8]], ignore_index=True)
    too_wide = _lines(good)
    too_wide[30] += b",surplus,fields"
    huge = clean.astype({"monthly_charges": object})
    huge.loc[3, "monthly_charges"] = "x" * 6_000_000  # larger than the CSV reader's 4 MiB blocks
    return [
        Defect("empty", "score", b"", "refused", "readable", "parquet"),
        Defect("truncated", "score", parquet[: len(parquet) // 2], "refused", "readable", "parquet"),
        Defect("footer_cut", "score", parquet[:-10], "refused", "readable", "parquet"),
        Defect("random_bytes", "score", _random_bytes(20_000, seed=11), "refused", "readable", "parquet"),
        Defect("html_page", "score", HTML, "refused", "readable", "parquet"),
        Defect("no_rows", "score", _parquet(clean.iloc[:0]), "refused", "min_rows", "parquet"),
        Defect(
            "missing_column", "score", _parquet(clean.drop(columns=["plan"])), "refused", "plan", "parquet"
        ),
        Defect(
            "all_null_column",
            "score",
            _parquet(clean.assign(region=None)),
            "refused",
            "not_null:region",
            "parquet",
        ),
        Defect(
            "duplicated_ids", "score", _parquet(duplicated), "quarantined", "unique:customer_id", "parquet"
        ),
        Defect("header_only", "score_csv", _lines(good)[0] + b"\n", "refused", "min_rows"),
        Defect("utf16", "score_csv", good.decode().encode("utf-16"), "refused", "readable"),
        Defect("too_many_fields", "score_csv", b"\n".join(too_wide), "refused", "readable"),
        Defect("huge_field", "score_csv", _csv(huge), "quarantined", "type:monthly_charges"),
        Defect(
            "one_latin1_line",
            "score_csv",
            _replace_line(good, 300, b"north", "nörth".encode("latin-1")),
            "quarantined",
            "encoding",
        ),
        Defect(
            "nul_bytes",
            "score_csv",
            _replace_line(good, 41, b"basic", b"ba\x00sic"),
            "quarantined",
            "encoding",
        ),
        Defect("duplicated_ids_csv", "score_csv", _csv(duplicated), "quarantined", "unique:customer_id"),
    ]
