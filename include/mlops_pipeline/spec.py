"""The model spec: one YAML file describes one model, validated with clear, located errors.

One module, although past 600 lines: every section of the file (source, target, features,
estimator, training, gates, drift, scoring) is a small pydantic model here, and the checks across
sections (a metric for the task, a slice on a feature, labels and an id) need them all together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Policy = Literal["fail", "warn", "quarantine"]
# `classification` is binary or multiclass, whichever the training data holds (checked at train).
TaskKind = Literal["classification", "binary", "multiclass", "regression"]
CLASSIFICATION_TASKS = ("classification", "binary", "multiclass")
Label = int | bool | str
# Evidently 0.7 drift methods that are distances (scores comparable to a threshold at any size).
DriftMethod = Literal["wasserstein", "jensenshannon", "psi", "kl_div", "hellinger", "ed"]
FeatureType = Literal["number", "integer", "category", "boolean"]

# Binary metrics read the positive class's probability (`target.positive`, else the larger label).
BINARY_METRICS = {"roc_auc", "accuracy", "f1", "precision", "recall", "log_loss"}
MULTICLASS_METRICS = {"accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "roc_auc_ovr", "log_loss"}
REGRESSION_METRICS = {"rmse", "mae", "r2", "mape"}
# Kept for readers of the old name: every metric of a classification task.
CLASSIFICATION_METRICS = BINARY_METRICS | MULTICLASS_METRICS
METRICS_BY_TASK: dict[str, set[str]] = {
    "binary": BINARY_METRICS,
    "multiclass": MULTICLASS_METRICS,
    "classification": CLASSIFICATION_METRICS,
    "regression": REGRESSION_METRICS,
}
# Metrics where a smaller value is better; the gates compare in the right direction.
LOWER_IS_BETTER = {"rmse", "mae", "mape", "log_loss"}

# The short estimator kinds: aliases of import paths, per task family.
ESTIMATOR_ALIASES: dict[str, dict[str, str]] = {
    "hist_gradient_boosting": {
        "classification": "sklearn.ensemble.HistGradientBoostingClassifier",
        "regression": "sklearn.ensemble.HistGradientBoostingRegressor",
    },
    "random_forest": {
        "classification": "sklearn.ensemble.RandomForestClassifier",
        "regression": "sklearn.ensemble.RandomForestRegressor",
    },
    "logistic_regression": {"classification": "sklearn.linear_model.LogisticRegression"},
    "ridge": {"regression": "sklearn.linear_model.Ridge"},
    "lightgbm": {"classification": "lightgbm.LGBMClassifier", "regression": "lightgbm.LGBMRegressor"},
}
# "classification" here stands for every classification task.
ESTIMATORS: dict[str, set[str]] = {kind: set(paths) for kind, paths in ESTIMATOR_ALIASES.items()}
# Packages whose estimators skops loads safely with the exact types a fitted pipeline holds
# (tested: tests/unit/test_candidates.py and test_registry.py). A model of any other package could
# only be logged with pickle or with skops told to trust what it cannot check: refused when the
# spec is read.
TRUSTED_ESTIMATOR_PACKAGES = ("sklearn", "lightgbm")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")

# The id of a table without one: a stable hash of each row's feature values, added when read.
ROW_ID = "_row_id"

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    """One input column: its type and the values it may take."""

    type: FeatureType
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = Field(default=None, description="Allowed values of a category column.")
    on_violation: Policy | None = Field(
        default=None, description="Policy for this column's rules; defaults to validation.default_policy."
    )

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.type == "category" and not self.allowed:
            raise ValueError("a category feature needs a non-empty 'allowed' list")
        if self.type != "category" and self.allowed:
            raise ValueError(f"'allowed' is only for category features, not {self.type}")
        if self.type in ("category", "boolean") and (self.min is not None or self.max is not None):
            raise ValueError(f"'min'/'max' are only for numeric features, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class _DailyFiles(_Strict):
    """A URI pattern of files keyed by day: `{ds}` is replaced by the day (YYYY-MM-DD)."""

    uri: str = Field(
        description="URI pattern with {ds}, relative to the store root or absolute (file://, s3://)."
    )
    format: Literal["csv", "parquet"] = "csv"

    @field_validator("uri")
    @classmethod
    def _has_ds(cls, value: str) -> str:
        if "{ds}" not in value:
            raise ValueError("the uri must contain '{ds}' so that each run reads the files of its own days")
        return value


class SourceSpec(_DailyFiles):
    """Where raw training batches land, one or more files per day."""

    window_days: int = Field(default=28, ge=1, le=3650, description="Days of batches one training run reads.")


class ScoringInputSpec(_DailyFiles):
    """Where the batches to score land: one partition per day, one or more files per partition."""

    format: Literal["csv", "parquet"] = "parquet"


class LabelsSpec(_DailyFiles):
    """Where true labels (id and target columns) arrive later, keyed by the day the rows were scored."""


class ScoringSpec(_Strict):
    """Batch scoring: the input, how much of it may be unscorable, and the streaming batch size."""

    input: ScoringInputSpec
    max_quarantine_share: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Share of input rows that may be quarantined before the run fails.",
    )
    batch_rows: int = Field(
        default=50_000,
        ge=1_000,
        le=1_000_000,
        description="Rows per streamed batch (bounds memory per task).",
    )
    min_rows: int = Field(
        default=1,
        ge=0,
        description=(
            "Input rows a day must hold (all its files together, before quarantine); a day with fewer"
            " fails with that reason and publishes nothing."
        ),
    )
    allow_empty: bool = Field(
        default=False,
        description=(
            "Publish an explicitly empty partition (manifest `empty_day: true`) for a day whose files"
            " hold no rows, instead of failing; needs min_rows 0."
        ),
    )
    duplicate_ids: Policy | None = Field(
        default=None,
        description=(
            "Policy of the `unique:<id>` rule on an input file (every row of a repeated id);"
            " default: validation.default_policy, as in training."
        ),
    )

    @model_validator(mode="after")
    def _empty_days(self) -> ScoringSpec:
        if self.allow_empty and self.min_rows > 0:
            raise ValueError(
                f"allow_empty: true publishes days without rows, but min_rows {self.min_rows} refuses them;"
                " set min_rows: 0 with it"
            )
        return self


class EstimatorSpec(_Strict):
    """The scikit-learn-compatible estimator at the end of the pipeline: a short `kind` or a `class`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: str | None = Field(default=None, description=f"A short name: one of {sorted(ESTIMATORS)}.")
    class_path: str | None = Field(
        default=None,
        alias="class",
        description="Import path of any scikit-learn-compatible estimator, e.g. sklearn.ensemble.ExtraTreesClassifier.",
    )
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None and value not in ESTIMATORS:
            raise ValueError(
                f"unknown estimator {value!r}; choose one of {sorted(ESTIMATORS)} or give `class`"
            )
        return value

    @field_validator("class_path")
    @classmethod
    def _trusted(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not _IMPORT_PATH.match(value):
            raise ValueError(f"{value!r} is not an import path such as sklearn.ensemble.ExtraTreesClassifier")
        if value.split(".", 1)[0] not in TRUSTED_ESTIMATOR_PACKAGES:
            raise ValueError(
                f"{value!r}: models are stored with skops, which loads only types it was told to trust; "
                f"estimators of {sorted(TRUSTED_ESTIMATOR_PACKAGES)} are known to load safely, others "
                "would need pickle (unsafe to load) and are refused"
            )
        return value

    @model_validator(mode="after")
    def _one_of(self) -> EstimatorSpec:
        if (self.kind is None) == (self.class_path is None):
            raise ValueError("give exactly one of `kind` (a short name) and `class` (an import path)")
        return self

    def import_path(self, family: str) -> str:
        """The estimator class to import for a task family (`classification` or `regression`)."""
        if self.class_path is not None:
            return self.class_path
        assert self.kind is not None
        return ESTIMATOR_ALIASES[self.kind][family]

    @property
    def package(self) -> str:
        """The top-level package of the estimator (whose types skops is told to trust)."""
        path = self.class_path or next(iter(ESTIMATOR_ALIASES[str(self.kind)].values()))
        return path.split(".", 1)[0]

    @property
    def label(self) -> str:
        """How runs record the estimator: the kind, else the import path."""
        return self.kind or str(self.class_path)


class SearchSpec(_Strict):
    """A hyperparameter search with scikit-learn's own search classes on the training rows.

    Every candidate is logged to MLflow as a child run of the training run; the best one (by
    the gates' primary metric, cross-validated) is refitted on all training rows and gated as usual.
    """

    method: Literal["grid", "random"] = "grid"
    space: dict[str, list[Any]] = Field(
        description="Estimator parameters and the values to try, e.g. {max_iter: [100, 200]}.", min_length=1
    )
    cv: int = Field(default=3, ge=2, le=10, description="Folds of the cross-validation.")
    n_iter: int = Field(default=10, ge=1, le=200, description="Candidates a random search draws.")

    @field_validator("space")
    @classmethod
    def _values(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if empty := [name for name, values in value.items() if not values]:
            raise ValueError(f"search.space: {empty} have no values to try")
        return value


class TrainingSpec(_Strict):
    """How the estimator is fitted: class imbalance and an optional hyperparameter search."""

    class_weight: Literal["balanced"] | dict[str, float] | None = Field(
        default=None,
        description="Passed to estimators that take `class_weight` ('balanced', or label → weight).",
    )
    sample_weight_column: str | None = Field(
        default=None, description="A numeric column of the data (not a feature) used as sample weights."
    )
    search: SearchSpec | None = None


class SplitSpec(_Strict):
    """Deterministic holdout: a row's side is decided by a hash of its id and the seed."""

    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=0.9)
    seed: int = 42


class ExtraExpectation(_Strict):
    """A Great Expectations expectation added to the generated suite."""

    type: str = Field(
        description="GX expectation class name in snake_case, e.g. expect_column_mean_to_be_between."
    )
    kwargs: dict[str, Any] = Field(default_factory=dict)
    policy: Policy = "warn"


class ValidationSpec(_Strict):
    """How the batch is checked before it may be used."""

    default_policy: Policy = "quarantine"
    schema_policy: Policy = Field(default="fail", description="Missing columns or unparseable types.")
    min_rows: int = Field(default=100, ge=1)
    max_quarantine_share: float = Field(default=0.05, ge=0.0, le=1.0)
    extra_expectations: list[ExtraExpectation] = Field(default_factory=list)


class SliceFloor(_Strict):
    """A metric floor that must hold within each value of a slice column."""

    column: str
    floors: dict[str, float]
    min_rows: int = Field(
        default=30, ge=1, description="Slices with fewer holdout rows are reported, not gated."
    )


class FairnessSpec(_Strict):
    """Limits on how differently the candidate treats the groups of sensitive columns (Fairlearn).

    A column that is not a feature is kept for evaluation only: read from the source as text,
    carried to the holdout, never fed to the model. Each limit is checked per column over its
    groups with at least `min_group_rows` holdout rows (smaller groups are reported, not gated).
    """

    columns: list[str] = Field(
        min_length=1,
        description="Sensitive columns: category/boolean features, or columns kept only for evaluation.",
    )
    max_demographic_parity_difference: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description=(
            "Classification: largest gap in the share of rows predicted positive between groups"
            " (multiclass: per class, one against the rest, the worst class)."
        ),
    )
    max_equalized_odds_difference: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description=(
            "Classification: largest gap in true-positive or false-positive rate between groups"
            " (multiclass: per class, one against the rest, the worst class)."
        ),
    )
    max_error_gap: float | None = Field(
        default=None,
        ge=0.0,
        description="Regression: largest gap in mean absolute error between groups, in the target's units.",
    )
    min_group_rows: int = Field(
        default=30, ge=1, description="Groups with fewer holdout rows are reported, not gated."
    )

    @field_validator("columns")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"columns are named more than once: {value}")
        return value

    @property
    def classification_limits(self) -> dict[str, float]:
        """The limits a classifier is checked against, by Fairlearn's measure name."""
        limits = {
            "demographic_parity_difference": self.max_demographic_parity_difference,
            "equalized_odds_difference": self.max_equalized_odds_difference,
        }
        return {name: limit for name, limit in limits.items() if limit is not None}


class GateSpec(_Strict):
    """What a candidate must show before it may be promoted."""

    primary_metric: str
    floors: dict[str, float] = Field(default_factory=dict)
    max_regression: float = Field(
        default=0.0, ge=0.0, description="Allowed drop of the primary metric against the champion (absolute)."
    )
    slices: list[SliceFloor] = Field(default_factory=list)
    max_latency_ms_per_1k: float = Field(default=500.0, gt=0)
    max_model_size_mb: float = Field(default=100.0, gt=0)
    fairness: FairnessSpec | None = None


class DriftSpec(_Strict):
    """Monitoring thresholds (used by the monitor DAG)."""

    threshold: float = Field(
        default=0.1, gt=0, description="Per-column drift score above which a column drifted."
    )
    drift_share: float = Field(
        default=0.3, gt=0, le=1, description="Share of drifted columns that is dataset drift."
    )
    column_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Per-column thresholds, used exactly as written (no noise floor is applied).",
    )
    # 1%, not 5%: a check that alarms on one window in twenty of unchanged data would push the
    # N-of-M retraining rule too often, and the calibration benchmark holds the measured rate <= 5%.
    false_alarm_rate: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description=(
            "Largest share of checks of identical data that may alarm: below a few thousand rows a"
            " side, `threshold` is raised to the score chance alone reaches (the noise floor)."
        ),
    )
    # Distance measures, not p-value tests: a p-value test alarms on identical distributions once
    # samples are large ("everything drifted"); a distance does not grow with the sample size.
    num_method: DriftMethod = Field(
        default="wasserstein", description="Evidently method for numeric columns."
    )
    cat_method: DriftMethod = Field(
        default="jensenshannon", description="Evidently method for categorical columns."
    )
    column_methods: dict[str, DriftMethod] = Field(default_factory=dict)
    sample_rows: int = Field(
        default=50_000,
        ge=1_000,
        description="Rows per side Evidently compares; larger sides are reduced to a quantile sketch.",
    )
    window_days: int = Field(
        default=7, ge=1, le=365, description="Days of scored data one monitoring window holds."
    )
    windows_needed: int = Field(default=2, ge=1, description="N of the last M windows must drift to retrain.")
    windows_considered: int = Field(default=3, ge=1)
    cooldown_days: int = Field(default=7, ge=0)

    @model_validator(mode="after")
    def _n_of_m(self) -> DriftSpec:
        if self.windows_needed > self.windows_considered:
            raise ValueError("windows_needed cannot exceed windows_considered")
        return self


class AutoRollbackSpec(_Strict):
    """When the monitor rolls a new champion back: its live primary metric on the late labels of
    the window fell more than `max_live_drop` below the previous champion's on the same window."""

    max_live_drop: float = Field(ge=0.0, description="Largest drop of the live primary metric tolerated.")
    min_labels: int = Field(
        default=200, ge=1, description="Late labels each version needs in the window before it can decide."
    )


class RolloutSpec(_Strict):
    """How a candidate that passed its gates replaces a champion: after a shadow period.

    With `shadow_days` > 0 the candidate becomes `challenger` and is scored in shadow beside the
    champion on every scoring day; once `shadow_days` days are scored and both versions have
    `min_labels` late labels, it is promoted when its live primary metric is no worse than the
    champion's by more than `max_live_regression` (and its labels agree with the champion's on at
    least `min_agreement` of the rows, if set), else refused. A first model has no champion to be
    compared with and is promoted at once.
    """

    shadow_days: int = Field(
        default=0, ge=0, le=90, description="Scoring days in shadow; 0: promote at once."
    )
    max_live_regression: float = Field(
        default=0.0,
        ge=0.0,
        description="Allowed drop of the live primary metric against the champion's (absolute).",
    )
    min_labels: int = Field(
        default=100, ge=1, description="Late labels each version needs before the live metrics decide."
    )
    min_agreement: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Classification: least share of rows labelled as the champion labels them.",
    )
    canary_share: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description=(
            "During the shadow period, the share of ids (stable: a hash of the id) whose published"
            " prediction is the challenger's; 0: the challenger publishes nothing."
        ),
    )
    rollback: AutoRollbackSpec | None = Field(
        default=None, description="Automatic rollback of a new champion that does worse live; none: never."
    )


class ScheduleSpec(_Strict):
    """Cron expressions or presets for each DAG kind; null means manual/asset-triggered only."""

    train: str | None = None
    score: str | None = "@daily"
    monitor: str | None = "@daily"


Name = Annotated[str, Field(description="Safe identifier: lowercase letters, digits, underscores.")]


class ModelSpec(_Strict):
    """Everything the pipeline needs to know about one model."""

    name: Name
    description: str = ""
    owner: str = "mlops"
    task: TaskKind
    source: SourceSpec
    id_column: str = Field(
        default=ROW_ID,
        description=f"The row id column; absent: {ROW_ID!r}, a hash of the row's feature values (rules.row_ids).",
    )
    target: str = Field(description="The target column; in YAML also `{column, classes, positive}`.")
    target_classes: list[Label] | None = Field(
        default=None,
        description="The labels a classification target may take (YAML: target.classes); others break `allowed:<target>`.",
    )
    positive_class: Label | None = Field(
        default=None,
        description="The positive label of a binary target (YAML: target.positive); default: the larger label.",
    )
    features: dict[str, FeatureSpec]
    estimator: EstimatorSpec
    pipeline: str | None = Field(
        default=None,
        description=(
            "Your own feature code: `module.path:function`, a function of the spec that returns the"
            " preprocessing (or the whole pipeline); the module lives in include/ (see the README)."
        ),
    )
    training: TrainingSpec = TrainingSpec()
    split: SplitSpec = SplitSpec()
    validation: ValidationSpec = ValidationSpec()
    gates: GateSpec
    drift: DriftSpec = DriftSpec()
    schedules: ScheduleSpec = ScheduleSpec()
    approval_required: bool = Field(
        default=False,
        description=(
            "A person approves each candidate that passed its gates (`<model>__approve`, Airflow's"
            " Required Actions page) before it is promoted or enters its shadow period."
        ),
    )
    approval_timeout: timedelta = Field(
        default=timedelta(days=3),
        ge=timedelta(seconds=1),
        le=timedelta(days=30),
        description="How long a candidate waits for an answer before it is refused (YAML: seconds, or P3D, PT30M).",
    )
    approvers: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list,
        max_length=50,
        description="Airflow user ids who may answer (HITL assigned users); empty: anyone who may edit the DAG.",
    )
    rollout: RolloutSpec = RolloutSpec()
    scoring: ScoringSpec | None = Field(
        default=None, description="Batch scoring; no `<model>__score` DAG when absent."
    )
    labels: LabelsSpec | None = Field(default=None, description="Late labels for performance monitoring.")
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _target_mapping(cls, data: Any) -> Any:
        """`target: {column, classes, positive}` is the same as `target: column` plus the two fields."""
        if isinstance(data, dict) and isinstance(data.get("target"), dict):
            target = dict(data["target"])
            unknown = set(target) - {"column", "classes", "positive"}
            if unknown or "column" not in target:
                raise ValueError(
                    "target: a mapping takes `column` (required), `classes` and `positive`"
                    + (f"; unknown: {sorted(unknown)}" if unknown else "")
                )
            if spelled := sorted(
                key for key in ("target_classes", "positive_class") if data.get(key) is not None
            ):
                raise ValueError(f"give the labels in the target mapping only, not also as {spelled}")
            data = {**data, "target": target["column"]}
            if "classes" in target:
                data["target_classes"] = target["classes"]
            if "positive" in target:
                data["positive_class"] = target["positive"]
        return data

    @field_validator("pipeline")
    @classmethod
    def _factory_exists(cls, value: str | None) -> str | None:
        """The factory's module must be found (not imported: parsing stays light; see feature_code.py)."""
        if value is None:
            return value
        module, _, function = value.partition(":")
        if not _IMPORT_PATH.match(module + ".x") or not function.isidentifier():
            raise ValueError(f"{value!r} is not `module.path:function`, e.g. my_models.churn_features:build")
        import importlib.util

        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError) as exc:
            found, reason = None, str(exc)
        else:
            reason = "no such module on the import path (put it under include/, beside the package)"
        if found is None:
            raise ValueError(f"pipeline: module {module!r} cannot be found: {reason}")
        return value

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(
                f"{value!r} is not a safe identifier (lowercase letter first, then a-z, 0-9, _; max 63)"
            )
        return value

    @model_validator(mode="after")
    def _coherent(self) -> ModelSpec:
        if not self.features:
            raise ValueError("features: at least one feature is required")
        if ROW_ID in self.features or self.target == ROW_ID:
            raise ValueError(f"{ROW_ID!r} is the pipeline's own row id; rename that column")
        if self.derived_row_id and self.labels is not None:
            raise ValueError(
                "labels: late labels are joined to predictions by id; a table without id_column has none"
            )
        if (weights := self.training.sample_weight_column) is not None and weights in {
            *self.features,
            self.target,
            self.id_column,
        }:
            raise ValueError(
                f"training.sample_weight_column {weights!r} must not be a feature, the id or the target"
            )
        if self.training.class_weight is not None and not self.is_classification:
            raise ValueError("training.class_weight is for classification tasks")
        if self.training.search is not None and (
            unknown := set(self.training.search.space) & {"random_state"}
        ):
            raise ValueError(f"training.search.space: {sorted(unknown)} is set from split.seed")
        reserved = {self.id_column, self.target}
        if self.id_column == self.target:
            raise ValueError("id_column and target must be different columns")
        if clash := reserved & set(self.features):
            raise ValueError(f"features must not include the id or target column: {sorted(clash)}")
        if self.estimator.kind is not None and self.family not in ESTIMATORS[self.estimator.kind]:
            raise ValueError(f"estimator {self.estimator.kind!r} cannot do {self.task}")
        self._check_labels()
        allowed_metrics = METRICS_BY_TASK[self.task]
        named = {self.gates.primary_metric, *self.gates.floors}
        for slice_ in self.gates.slices:
            named |= set(slice_.floors)
            if slice_.column not in self.features:
                raise ValueError(f"gates.slices: {slice_.column!r} is not a feature")
            if self.features[slice_.column].type not in ("category", "boolean"):
                raise ValueError(f"gates.slices: {slice_.column!r} must be a category or boolean feature")
        if unknown := named - allowed_metrics:
            raise ValueError(
                f"gates: metrics {sorted(unknown)} do not apply to {self.task}; use {sorted(allowed_metrics)}"
            )
        self._check_fairness()
        if not self.approval_required and (
            self.approvers or self.approval_timeout != ModelSpec.model_fields["approval_timeout"].default
        ):
            raise ValueError("approvers and approval_timeout need approval_required: true")
        if self.rollout.shadow_days and self.scoring is None:
            raise ValueError("rollout.shadow_days needs a scoring section: the shadow period is scoring days")
        if self.rollout.canary_share and not self.rollout.shadow_days:
            raise ValueError(
                "rollout.canary_share needs shadow_days: the canary serves during the shadow period"
            )
        if self.rollout.rollback is not None and (self.scoring is None or self.labels is None):
            raise ValueError("rollout.rollback needs scoring and labels sections: it compares live metrics")
        if self.rollout.min_agreement is not None and not self.is_classification:
            raise ValueError("rollout.min_agreement is for classification (labels that agree)")
        if unknown_cols := set(self.drift.column_thresholds) - set(self.features):
            raise ValueError(f"drift.column_thresholds: {sorted(unknown_cols)} are not features")
        if unknown_cols := set(self.drift.column_methods) - set(self.features):
            raise ValueError(f"drift.column_methods: {sorted(unknown_cols)} are not features")
        return self

    def _check_fairness(self) -> None:
        fairness = self.gates.fairness
        if fairness is None:
            return
        for column in fairness.columns:
            feature = self.features.get(column)
            if feature is not None and feature.type not in ("category", "boolean"):
                raise ValueError(
                    f"gates.fairness.columns: {column!r} is a {feature.type} feature; sensitive columns"
                    " are groups (category or boolean features, or columns kept only for evaluation)"
                )
            if column in {self.id_column, self.target, self.training.sample_weight_column}:
                raise ValueError(
                    f"gates.fairness.columns: {column!r} is the id, the target or the sample weights"
                )
        if self.is_classification:
            if fairness.max_error_gap is not None:
                raise ValueError(
                    "gates.fairness.max_error_gap is for regression; a classifier has no error gap"
                )
            if not fairness.classification_limits:
                raise ValueError(
                    "gates.fairness: give max_demographic_parity_difference and/or max_equalized_odds_difference"
                )
        else:
            if fairness.classification_limits:
                raise ValueError(
                    f"gates.fairness: {sorted(fairness.classification_limits)} are for classification;"
                    " a regression takes max_error_gap"
                )
            if fairness.max_error_gap is None:
                raise ValueError("gates.fairness: give max_error_gap (the gap in mean absolute error)")

    def _check_labels(self) -> None:
        if not self.is_classification and (
            self.target_classes is not None or self.positive_class is not None
        ):
            raise ValueError("target: `classes` and `positive` are for classification tasks, not regression")
        classes = self.target_classes
        if classes is not None:
            if len({str(c) for c in classes}) != len(classes) or len(classes) < 2:
                raise ValueError(f"target.classes must list at least two distinct labels, got {classes}")
            if len({type(c) for c in classes}) != 1:
                raise ValueError(
                    f"target.classes must all be of one type (all text, numbers or booleans): {classes}"
                )
            if self.task == "binary" and len(classes) != 2:
                raise ValueError(f"task binary needs exactly two target.classes, got {len(classes)}")
            if self.task == "multiclass" and len(classes) < 3:
                raise ValueError(
                    f"task multiclass needs three or more target.classes, got {len(classes)}; use binary"
                )
        if self.positive_class is not None:
            if self.task == "multiclass":
                raise ValueError("target.positive is for binary targets; a multiclass target has none")
            # Compared by type too: True == 1 in Python, but a boolean is not the label 1.
            if classes is not None and not any(
                type(label) is type(self.positive_class) and label == self.positive_class for label in classes
            ):
                raise ValueError(
                    f"target.positive {self.positive_class!r} is not one of target.classes {classes}"
                )

    @property
    def derived_row_id(self) -> bool:
        """Whether the rows have no id column of their own (the id is a hash of their features)."""
        return self.id_column == ROW_ID

    @property
    def family(self) -> str:
        """`classification` (binary, multiclass or either) or `regression`."""
        return "classification" if self.is_classification else "regression"

    @property
    def is_classification(self) -> bool:
        """Whether the task is binary, multiclass or classification (either, from the data)."""
        return self.task in CLASSIFICATION_TASKS

    @property
    def evaluation_columns(self) -> list[str]:
        """Columns kept only to evaluate the model (the fairness gates' sensitive columns that are
        not features): read and validated as present, never fed to the model."""
        if self.gates.fairness is None:
            return []
        return [column for column in self.gates.fairness.columns if column not in self.features]

    @property
    def columns(self) -> list[str]:
        """All columns a training batch must have: id, features, target, sample weights if named,
        evaluation-only columns (the derived id is added on reading)."""
        weights = [self.training.sample_weight_column] if self.training.sample_weight_column else []
        return [
            *([] if self.derived_row_id else [self.id_column]),
            *self.features,
            self.target,
            *weights,
            *self.evaluation_columns,
        ]

    def metric_higher_is_better(self, metric: str) -> bool:
        """Whether a larger value of `metric` is an improvement."""
        return metric not in LOWER_IS_BETTER


class SpecError(ValueError):
    """A spec file that cannot be used; the message names the file, the field and the problem."""


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = [f"invalid model spec {path}:"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  - {location}: {message}")
    return "\n".join(lines)


def load_spec(path: Path) -> ModelSpec:
    """Read and validate one spec file; raise :class:`SpecError` naming the file and the fields."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"invalid model spec {path}: cannot read YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(
            f"invalid model spec {path}: (top level): expected a mapping, got {type(raw).__name__}"
        )
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_format_validation_error(path, exc)) from exc
    if spec.name != path.stem:
        raise SpecError(
            f"invalid model spec {path}: name: {spec.name!r} must equal the file name {path.stem!r}"
        )
    return spec


@dataclass(frozen=True)
class SpecCatalog:
    """All specs of a folder: the valid ones, and an error message for each invalid one."""

    specs: dict[str, ModelSpec]
    errors: dict[Path, str]


def load_specs(folder: Path) -> SpecCatalog:
    """Load every `*.yaml` spec in `folder`; one bad file never hides the good ones."""
    specs: dict[str, ModelSpec] = {}
    errors: dict[Path, str] = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            spec = load_spec(path)
        except SpecError as exc:
            errors[path] = str(exc)
            continue
        specs[spec.name] = spec
    return SpecCatalog(specs=specs, errors=errors)


def default_models_dir() -> Path:
    """The spec folder: MLOPS_MODELS_DIR if set, else include/models of this checkout."""
    from mlops_pipeline.settings import ParseSettings

    if configured := ParseSettings().models_dir:
        return configured
    return Path(__file__).resolve().parents[1] / "models"
