"""Feature code of the penguins example: bill shape ratios, then imputation and one-hot encoding.

`build(spec)` returns the preprocessing; the pipeline adds the spec's estimator (LightGBM) after
it. The ratio function is a module-level function, so skops stores it by name and loads it from
this module (trusted because the spec names this module as its feature code).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

MEASUREMENTS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def bill_ratios(frame: pd.DataFrame) -> np.ndarray:
    """The measurements and two ratios that separate the species: bill length/depth, flipper/mass."""
    values = frame[MEASUREMENTS].to_numpy(dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.column_stack([values[:, 0] / values[:, 1], values[:, 2] / values[:, 3]])
    return np.column_stack([values, ratios])


def build(spec: Any) -> ColumnTransformer:
    """The preprocessing of the penguins model (the spec's categories define the one-hot columns)."""
    categorical = [name for name, feature in spec.features.items() if feature.type == "category"]
    numeric = Pipeline(
        [
            ("ratios", FunctionTransformer(bill_ratios)),
            ("impute", SimpleImputer(strategy="median")),
        ]
    )
    encode = Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent")),
            (
                "encode",
                OneHotEncoder(
                    categories=[list(spec.features[name].allowed) for name in categorical],
                    handle_unknown="ignore",
                    sparse_output=False,
                ),
            ),
        ]
    )
    return ColumnTransformer(
        [
            ("measurements", numeric, MEASUREMENTS),
            ("categories", encode, categorical),
            ("year", "passthrough", ["year"]),
        ],
        remainder="drop",
    )
