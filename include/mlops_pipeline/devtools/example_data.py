"""Example data for the two example models, generated offline and deterministically.

* **churn** (`include/models/churn.yaml`): synthetic daily batches of subscriber snapshots. Features are
  correlated through a hidden "engagement" trait per customer, and `churned` is drawn from a logistic
  function of several features plus noise, so a model can learn it but not perfectly. The calendar holds
  three planned events that exercise the pipeline:

  - :data:`DRIFT_START` (2026-04-01) onwards: charges rise, engagement falls, the region and plan mix
    shift and churn goes up (a drift episode for the monitor to detect);
  - :data:`DEFECTIVE_DAY` (2026-03-10): a broken upstream export, ~40% defective rows (over the
    spec's quarantine limit, so validation must stop the batch);
  - :data:`MINOR_DEFECT_DAY` (2026-02-14): ~1% defective rows (under the limit, so they are quarantined).

  Every other day passes every rule of the spec.
* **diabetes** (`include/models/diabetes.yaml`): the real diabetes data of Efron et al. (2004), shipped
  inside scikit-learn, so nothing is downloaded.

Everything is a pure function of its arguments (a numpy Generator seeded from `seed` and the day),
so a rerun writes byte-identical files.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops_pipeline.store import ObjectStore

DRIFT_START = datetime.date(2026, 4, 1)
DEFECTIVE_DAY = datetime.date(2026, 3, 10)
MINOR_DEFECT_DAY = datetime.date(2026, 2, 14)
# Share of rows with a defect on the two defective days (the churn spec quarantines up to 5%).
DEFECTIVE_SHARE = 0.40
MINOR_DEFECT_SHARE = 0.01

DEFAULT_SEED = 20260101
DEFAULT_START = datetime.date(2026, 1, 1)
DEFAULT_END = datetime.date(2026, 4, 30)
DIABETES_DS = datetime.date(2026, 1, 1)

CHURN_LANDING = "landing/churn"
# Scoring inputs of the churn model (its spec's scoring.input.uri), several files a day.
CHURN_INCOMING = "incoming/churn"
SCORING_FILES_PER_DAY = 4
# The true outcome of each customer scored on a day (the churn spec's labels.uri).
CHURN_LABELS = "labels/churn"
DIABETES_LANDING = "landing/diabetes"
PENGUINS_LANDING = "landing/penguins"
PENGUINS_INCOMING = "incoming/penguins"
PENGUINS_DS = datetime.date(2026, 1, 1)
# The day the same penguins are scored (a day after the training snapshot).
PENGUINS_SCORING_DS = datetime.date(2026, 1, 2)

CHURN_ID_COLUMN = "customer_id"
CHURN_TARGET = "churned"
# In the order of include/models/churn.yaml; the CSV columns are id, these, target.
CHURN_FEATURES = (
    "tenure_months",
    "monthly_charges",
    "total_charges",
    "support_calls",
    "data_usage_gb",
    "avg_session_minutes",
    "days_since_last_login",
    "num_devices",
    "late_payments",
    "satisfaction_score",
    "age",
    "plan",
    "region",
    "payment_method",
)
CHURN_COLUMNS = (CHURN_ID_COLUMN, *CHURN_FEATURES, CHURN_TARGET)

PLANS = ("basic", "standard", "premium")
REGIONS = ("north", "south", "east", "west")
PAYMENT_METHODS = ("card", "bank_transfer", "paypal", "invoice")

_PLAN_P = np.array([0.45, 0.35, 0.20])
_PLAN_P_DRIFT = np.array([0.33, 0.35, 0.32])
_REGION_P = np.array([0.28, 0.22, 0.25, 0.25])
_REGION_P_DRIFT = np.array([0.18, 0.44, 0.19, 0.19])
_PAYMENT_P = np.array([0.40, 0.25, 0.20, 0.15])

_PLAN_PRICE = np.array([35.0, 65.0, 100.0])
_PLAN_USAGE_GB = np.array([12.0, 35.0, 80.0])
# Log-odds of churn per plan and payment method (invoice payers churn most, bank transfers least).
_PLAN_LOGIT = np.array([0.35, 0.0, -0.35])
_PAYMENT_LOGIT = np.array([0.0, -0.35, 0.15, 0.45])
# Calibrated for a churn rate of ~28% before the drift episode; the drifted inputs raise it to ~45%.
_CHURN_INTERCEPT = -2.6
_CHURN_NOISE_SD = 0.3

_DIABETES_FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")


@dataclass(frozen=True)
class ExampleDataSummary:
    """What :func:`write_example_data` wrote."""

    dates: tuple[datetime.date, ...]
    churn_rows: int
    diabetes_rows: int
    churn_uri: str
    diabetes_uri: str
    penguins_rows: int = 0
    penguins_uri: str = ""

    @property
    def total_rows(self) -> int:
        """Rows written over all models."""
        return self.churn_rows + self.diabetes_rows + self.penguins_rows


def _rng(seed: int, ds: datetime.date) -> np.random.Generator:
    # A SeedSequence over (seed, day): independent streams per day, identical on every rerun.
    return np.random.default_rng([seed, ds.toordinal()])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _clean_churn_frame(ds: datetime.date, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """A clean batch: every value inside the spec's rules."""
    drift = ds >= DRIFT_START
    n = rows

    # A hidden engagement trait ties session length, logins, satisfaction and support calls together.
    engagement = rng.normal(-0.2 if drift else 0.0, 1.0, n)

    plan = rng.choice(3, size=n, p=_PLAN_P_DRIFT if drift else _PLAN_P)
    region = rng.choice(4, size=n, p=_REGION_P_DRIFT if drift else _REGION_P)
    payment = rng.choice(4, size=n, p=_PAYMENT_P)

    age = np.clip(np.rint(rng.normal(44.0, 13.0, n)), 18, 90).astype(np.int64)
    # Long tails of loyal customers; older customers tend to have stayed longer.
    tenure = np.clip(np.floor(rng.gamma(1.4, 18.0, n) * np.exp(0.008 * (age - 44))), 0, 120).astype(np.int64)

    num_devices = np.clip(1 + rng.poisson(0.8 + 0.9 * plan), 1, 20).astype(np.int64)
    price_shift = 22.0 if drift else 0.0  # about one standard deviation of monthly_charges
    monthly = _PLAN_PRICE[plan] + 4.0 * num_devices + price_shift + rng.normal(0.0, 12.0, n)
    monthly = np.round(np.clip(monthly, 5.0, 495.0), 2)
    # Past bills, a little below today's price (discounts, earlier tariffs); new customers pay their first.
    total = monthly * np.maximum(tenure, 1) * rng.uniform(0.85, 1.02, n)
    total = np.round(np.clip(total, 0.0, 60000.0), 2)

    usage_scale = _PLAN_USAGE_GB[plan] * (1.0 + 0.3 * num_devices) * np.exp(0.3 * engagement)
    data_usage = np.round(np.clip(usage_scale * rng.lognormal(0.0, 0.5, n), 0.0, 1999.0), 2)

    raw_session = rng.gamma(4.0, 11.0 * np.exp(0.35 * engagement) * (0.65 if drift else 1.0))
    session = np.round(np.clip(raw_session, 0.0, 600.0), 2)
    login_days = np.rint(rng.exponential(5.0 * np.exp(-0.6 * engagement) * (1.5 if drift else 1.0)))
    login_days = np.clip(login_days, 0, 365).astype(np.int64)

    support = np.clip(rng.poisson(0.9 * np.exp(-0.45 * engagement) + 0.3 * (plan == 0)), 0, 50).astype(
        np.int64
    )
    late = rng.poisson(0.2 + 0.5 * (payment == 3) + 0.15 * (payment == 2) + 0.1 * (monthly > 100))
    late = np.clip(late, 0, 24).astype(np.int64)
    satisfaction = rng.normal(6.8 + 0.8 * engagement - 0.3 * support, 1.2)
    satisfaction = np.round(np.clip(satisfaction, 0.0, 10.0), 1)

    logit = (
        _CHURN_INTERCEPT
        - 0.85 * (np.log1p(tenure) - 3.0)
        + 0.028 * (monthly - 70.0)
        + 0.45 * support
        + 0.07 * np.minimum(login_days, 60)
        + 0.55 * late
        - 0.55 * (satisfaction - 6.5)
        + _PLAN_LOGIT[plan]
        + _PAYMENT_LOGIT[payment]
        - 0.01 * (age - 44)
        + rng.normal(0.0, _CHURN_NOISE_SD, n)
    )
    churned = (rng.random(n) < _sigmoid(logit)).astype(np.int64)

    # Nulls only where the spec allows them (new accounts and unanswered surveys), after the label.
    total_out = np.where(rng.random(n) < 0.03, np.nan, total)
    satisfaction_out = np.where(rng.random(n) < 0.04, np.nan, satisfaction)

    return pd.DataFrame(
        {
            CHURN_ID_COLUMN: [f"c{ds:%Y%m%d}-{i:05d}" for i in range(n)],
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total_out,
            "support_calls": support,
            "data_usage_gb": data_usage,
            "avg_session_minutes": session,
            "days_since_last_login": login_days,
            "num_devices": num_devices,
            "late_payments": late,
            "satisfaction_score": satisfaction_out,
            "age": age,
            "plan": np.array(PLANS, dtype=object)[plan],
            "region": np.array(REGIONS, dtype=object)[region],
            "payment_method": np.array(PAYMENT_METHODS, dtype=object)[payment],
            CHURN_TARGET: churned,
        },
        columns=list(CHURN_COLUMNS),
    )


# The defects of a broken export, one per affected row, in turn.
_DEFECT_KINDS = (
    "null_tenure",
    "negative_support_calls",
    "charges_sentinel",
    "unknown_plan",
    "dirty_region",
    "text_in_usage",
)
_DIRTY_REGIONS = np.array(["North ", "SOUTH", " east", "West"], dtype=object)


def _inject_defects(frame: pd.DataFrame, share: float, rng: np.random.Generator) -> pd.DataFrame:
    """Damage `share` of the rows, one defect each, spread evenly over the defect kinds."""
    frame = frame.copy()
    count = max(1, round(share * len(frame)))
    rows = np.sort(rng.choice(len(frame), size=count, replace=False))
    kinds = rng.permutation(np.arange(count) % len(_DEFECT_KINDS))
    chosen = {kind: rows[kinds == k] for k, kind in enumerate(_DEFECT_KINDS)}

    # Integer columns with a null become nullable integers; a text value makes the column text.
    frame["tenure_months"] = frame["tenure_months"].astype("Int64")
    frame["data_usage_gb"] = frame["data_usage_gb"].astype(object)
    loc = frame.columns.get_loc
    frame.iloc[chosen["null_tenure"], loc("tenure_months")] = pd.NA
    frame.iloc[chosen["negative_support_calls"], loc("support_calls")] = -1
    frame.iloc[chosen["charges_sentinel"], loc("monthly_charges")] = 9999.0
    frame.iloc[chosen["unknown_plan"], loc("plan")] = "gold"
    dirty = chosen["dirty_region"]
    frame.iloc[dirty, loc("region")] = _DIRTY_REGIONS[np.arange(len(dirty)) % len(_DIRTY_REGIONS)]
    frame.iloc[chosen["text_in_usage"], loc("data_usage_gb")] = "n/a"
    return frame


def churn_batch(ds: datetime.date, rows: int = 800, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """One day's training batch of the churn model: id, the 14 features of churn.yaml, and `churned`.

    Deterministic per (`seed`, `ds`, `rows`); customer ids embed the day, so they are unique across days.
    Clean days use int64 for integer features and float64 (with NaN where nullable) for numbers. On
    :data:`DEFECTIVE_DAY` and :data:`MINOR_DEFECT_DAY` some rows are damaged, so `tenure_months` is a
    nullable `Int64` and `data_usage_gb` holds text as well as numbers.
    """
    if rows < 1:
        raise ValueError(f"rows must be positive, got {rows}")
    rng = _rng(seed, ds)
    frame = _clean_churn_frame(ds, rows, rng)
    if ds == DEFECTIVE_DAY:
        frame = _inject_defects(frame, DEFECTIVE_SHARE, rng)
    elif ds == MINOR_DEFECT_DAY:
        frame = _inject_defects(frame, MINOR_DEFECT_SHARE, rng)
    return frame


def churn_scoring_batch(ds: datetime.date, rows: int = 800, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """The batch that arrives for scoring on `ds`: :func:`churn_batch` without the `churned` label."""
    return churn_batch(ds, rows=rows, seed=seed).drop(columns=[CHURN_TARGET])


def churn_labels(ds: datetime.date, rows: int = 800, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """The labels that arrive later for the customers scored on `ds`: `customer_id` and `churned`."""
    return churn_batch(ds, rows=rows, seed=seed)[[CHURN_ID_COLUMN, CHURN_TARGET]].reset_index(drop=True)


def diabetes_frame() -> pd.DataFrame:
    """The real diabetes data (442 patients), in the columns of diabetes.yaml, with `progression` as target.

    Values are unscaled and unchanged; `sex` is the category "1"/"2" and `age` an integer.
    """
    from sklearn.datasets import load_diabetes  # heavy import, only when the data is needed

    raw = load_diabetes(scaled=False, as_frame=True).frame
    frame = pd.DataFrame({"patient_id": [f"p{i:04d}" for i in range(1, len(raw) + 1)]})
    for column in _DIABETES_FEATURES:
        frame[column] = raw[column].to_numpy()
    frame["age"] = frame["age"].astype(np.int64)
    frame["sex"] = frame["sex"].astype(np.int64).astype(str)
    frame["progression"] = raw["target"].to_numpy()
    return frame


def penguins_frame() -> pd.DataFrame:
    """The Palmer penguins table (344 penguins, three species; CC0), as the `palmerpenguins`
    package ships it: text labels, missing values, categorical features and no id column."""
    from palmerpenguins import load_penguins  # reads the CSV inside the package: no download

    return load_penguins().reset_index(drop=True)


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    import io

    # A column holding text and numbers (a defective export) is written as text, as it arrived.
    mixed = [name for name in frame.columns if frame[name].dtype == object and name not in ("plan", "region")]
    frame = frame.astype({name: "string" for name in mixed})
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="snappy")
    return buffer.getvalue()


def scoring_keys(ds: datetime.date, files: int = SCORING_FILES_PER_DAY) -> list[str]:
    """The keys of one day's scoring input files."""
    return [f"{CHURN_INCOMING}/ds={ds:%Y-%m-%d}/part-{index:03d}.parquet" for index in range(files)]


def write_scoring_inputs(
    store: ObjectStore, ds: datetime.date, rows: int = 800, files: int = SCORING_FILES_PER_DAY
) -> list[str]:
    """Write the customers to score on `ds` (:func:`churn_scoring_batch`) as `files` Parquet files."""
    frame = churn_scoring_batch(ds, rows=rows)
    keys = scoring_keys(ds, files)
    for key, part in zip(keys, np.array_split(np.arange(len(frame)), files), strict=True):
        store.write_bytes(key, _parquet_bytes(frame.iloc[part]))
    return keys


def write_example_data(
    store: ObjectStore,
    start: datetime.date = DEFAULT_START,
    end: datetime.date = DEFAULT_END,
    rows_per_day: int = 800,
) -> ExampleDataSummary:
    """Write the churn batches for every day in [`start`, `end`] and the diabetes data into `store`.

    Keys: `landing/churn/ds=YYYY-MM-DD/batch.csv` (training data with labels),
    `incoming/churn/ds=YYYY-MM-DD/part-NNN.parquet` (the same customers to score, without labels),
    `labels/churn/ds=YYYY-MM-DD/labels.csv` (their outcomes, for performance monitoring) and
    `landing/diabetes/ds=2026-01-01/data.csv`, `landing/penguins/ds=2026-01-01/penguins.csv` and the
    same penguins without their species to score, `incoming/penguins/ds=2026-01-02/penguins.parquet`. Each file
    is replaced whole, with the same bytes on every run, so rerunning is harmless.
    """
    if end < start:
        raise ValueError(f"end ({end}) is before start ({start})")
    dates = tuple(start + datetime.timedelta(days=offset) for offset in range((end - start).days + 1))
    churn_rows = 0
    for ds in dates:
        frame = churn_batch(ds, rows=rows_per_day)
        store.write_bytes(f"{CHURN_LANDING}/ds={ds:%Y-%m-%d}/batch.csv", _csv_bytes(frame))
        write_scoring_inputs(store, ds, rows=rows_per_day)
        store.write_bytes(
            f"{CHURN_LABELS}/ds={ds:%Y-%m-%d}/labels.csv", _csv_bytes(churn_labels(ds, rows=rows_per_day))
        )
        churn_rows += len(frame)
    diabetes = diabetes_frame()
    store.write_bytes(f"{DIABETES_LANDING}/ds={DIABETES_DS:%Y-%m-%d}/data.csv", _csv_bytes(diabetes))
    penguins = penguins_frame()
    store.write_bytes(f"{PENGUINS_LANDING}/ds={PENGUINS_DS:%Y-%m-%d}/penguins.csv", _csv_bytes(penguins))
    store.write_bytes(
        f"{PENGUINS_INCOMING}/ds={PENGUINS_SCORING_DS:%Y-%m-%d}/penguins.parquet",
        _parquet_bytes(penguins.drop(columns=["species"])),
    )
    return ExampleDataSummary(
        dates=dates,
        churn_rows=churn_rows,
        diabetes_rows=len(diabetes),
        churn_uri=store.uri(CHURN_LANDING),
        diabetes_uri=store.uri(DIABETES_LANDING),
        penguins_rows=len(penguins),
        penguins_uri=store.uri(PENGUINS_LANDING),
    )
