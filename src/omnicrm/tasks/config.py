"""Task configs: dataset + task + model + search space, composed from parts, with a time-split guard.

A task file names its parts by path (relative to the file) or gives them inline::

    dataset: ../datasets/synthetic.yaml     # store + feature definitions
    model: ../models/lightgbm.yaml          # LightGBM parameters, early stopping, calibration
                                            # ({from: ../models/lightgbm.yaml, params: {...}} overrides keys)
    search: ../search/lightgbm.yaml         # Optuna search space (``omnicrm tune``)
    task: {kind: churn, horizon_days: 90, ...}
    cutoffs: {train: {start: 2023-06-01, end: 2024-04-01}, validation: 2024-07-01, evaluation: 2024-10-01}

:func:`load_task_config` resolves the parts into one :class:`TaskConfig` (logged to MLflow as the
*resolved* config, so a run can be re-evaluated without the files). The time-split guard rejects a
config whose label windows overlap the later cutoffs: every training label window ``[T, T+h)`` must
end by the validation cutoff, and the validation window by the evaluation cutoff.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from omnicrm.config import StrictModel, read_yaml, validate_config
from omnicrm.errors import ConfigError
from omnicrm.features.cutoffs import CutoffSpec

TaskKind = Literal["churn", "next_purchase", "clv", "propensity"]
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class DatasetConfig(StrictModel):
    """Where the unified history lives and which features to build from it."""

    name: str
    store: str
    features: str | dict[str, Any] = {}
    feature_cache: str | None = "data/cache/features"  # Parquet per (store fingerprint, features, cutoff)
    # registered models are omnicrm-<task>; a second data set names its own: omnicrm-<namespace>-<task>
    registry_namespace: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]*$")


class Population(StrictModel):
    """Who is scored at a cutoff: customers with a purchase in the ``active_days`` before it."""

    active_days: int = Field(365, gt=0)
    min_purchases: int = Field(1, ge=1)
    consent: Literal["email", "sms", "push"] | None = None  # also require this consent (e.g. e-mail targets)


class PropensityTarget(StrictModel):
    """One propensity target: does an event of these types (matching ``where``) happen in ``[T, T+h)``?"""

    name: str
    event_types: list[str] = ["purchase"]
    where: str | None = None  # SQL condition on the events table, e.g. "category = 'Beauty'"
    consent: Literal["email", "sms", "push"] | None = None

    @model_validator(mode="after")
    def _check(self) -> PropensityTarget:
        if not _NAME.match(self.name):
            raise ValueError(f"target name {self.name!r} must be lower_snake_case (it names a registered model)")
        return self


class TaskSpec(StrictModel):
    """What is predicted. ``horizon_days`` is the label window ``[T, T+horizon)``."""

    kind: TaskKind
    horizon_days: int = Field(gt=0)
    population: Population = Population()
    # next_purchase: expected days to the next purchase, censored at this many days (see docs/tasks.md)
    timing_max_days: int | None = Field(None, gt=0)
    timing_bins: list[int] = [7, 14, 21, 30, 45, 60, 90, 120]
    # clv: objective and whether the BG/NBD + Gamma-Gamma outputs are offered as features
    clv_objective: Literal["tweedie", "regression", "two_part"] = "tweedie"
    tweedie_variance_power: float = Field(1.3, gt=1.0, lt=2.0)
    btyd_features: bool = True
    margin: bool = True  # also model margin when products carry one
    targets: list[PropensityTarget] = []

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if self.kind == "propensity" and not self.targets:
            raise ValueError("a propensity task needs at least one entry under 'targets'")
        if self.kind != "propensity" and self.targets:
            raise ValueError(f"'targets' is only for propensity tasks, not {self.kind}")
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"target names must be unique, got {names}")
        if self.timing_max_days and max(self.timing_bins) > self.timing_max_days:
            raise ValueError("timing_bins must not exceed timing_max_days")
        return self

    def label_days(self) -> int:
        """How far after a cutoff the labels read (the guard uses this)."""
        return max(self.horizon_days, self.timing_max_days or 0)


class Cutoffs(StrictModel):
    train: CutoffSpec
    validation: date
    evaluation: date


class ModelConfig(StrictModel):
    """LightGBM settings; ``params`` go to the estimator (seeded and deterministic by default)."""

    family: Literal["lightgbm"] = "lightgbm"
    params: dict[str, Any] = {}
    early_stopping_rounds: int = Field(50, gt=0)
    calibration: Literal["auto", "none", "isotonic", "sigmoid"] = "auto"
    seed: int = 42


class SearchParam(StrictModel):
    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> SearchParam:
        if self.type == "categorical" and not self.choices:
            raise ValueError("a categorical search parameter needs 'choices'")
        if self.type != "categorical" and (self.low is None or self.high is None or self.low > self.high):
            raise ValueError("a numeric search parameter needs 'low' <= 'high'")
        return self


class SearchConfig(StrictModel):
    """Optuna study: search space over LightGBM params, trials, pruning, resumable storage."""

    space: dict[str, SearchParam] = {}
    n_trials: int = Field(20, gt=0)
    timeout_seconds: float | None = None
    storage: str = "data/optuna/studies.db"  # SQLite: an interrupted study resumes
    pruner_warmup_steps: int = 20


class TaskConfig(StrictModel):
    name: str
    dataset: DatasetConfig
    task: TaskSpec
    cutoffs: Cutoffs
    model: ModelConfig = ModelConfig()
    search: SearchConfig = SearchConfig()
    baselines: list[str] | None = None  # default per task kind

    @model_validator(mode="after")
    def _time_split_guard(self) -> TaskConfig:
        check_time_split(self)
        return self

    def train_cutoffs(self) -> list[date]:
        return self.cutoffs.train.as_list()

    def registered_name(self, target: str | None = None) -> str:
        ns = self.dataset.registry_namespace
        base = f"omnicrm-{ns}-{self.task.kind}" if ns else f"omnicrm-{self.task.kind}"
        return f"{base}-{target}" if target else base


def check_time_split(cfg: TaskConfig) -> None:
    """Raise ``ValueError`` unless train < validation < evaluation with label windows included."""
    h = timedelta(days=cfg.task.label_days())
    train = cfg.cutoffs.train.as_list()
    if not train:
        raise ValueError("cutoffs.train gives no dates")
    val, ev = cfg.cutoffs.validation, cfg.cutoffs.evaluation
    last = max(train)
    if last + h > val:
        raise ValueError(
            f"time split: the last training cutoff {last} plus its {h.days}-day label window ends "
            f"{last + h}, after the validation cutoff {val}; move training cutoffs earlier"
        )
    if val + h > ev:
        raise ValueError(
            f"time split: the validation cutoff {val} plus its {h.days}-day label window ends {val + h}, "
            f"after the evaluation cutoff {ev}; the evaluation cutoff must come after training and "
            "validation, label windows included"
        )


def _part(value: Any, base: Path, key: str) -> Any:
    """A part given by path (relative to the task file) is read; a mapping is used as is."""
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        data = read_yaml(base / value)
        return _resolve_nested(data, (base / value).parent)
    if isinstance(value, dict) and isinstance(value.get("from"), str):
        # {from: part.yaml, <overrides>}: the part, with these keys merged over it
        base_part = _part(value["from"], base, key)
        return _merge(base_part, {k: v for k, v in value.items() if k != "from"})
    if value is not None and not isinstance(value, dict):
        raise ConfigError(f"key '{key}': expected a path to a YAML file or a mapping, got {value!r}")
    return value


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _resolve_nested(data: dict[str, Any], base: Path) -> dict[str, Any]:
    # a dataset part may itself name its feature config by path: resolve it against *its* folder
    feats = data.get("features")
    if isinstance(feats, str) and feats.endswith((".yaml", ".yml")):
        data = data | {"features": read_yaml(base / feats)}
    return data


def load_task_config(path: str | Path) -> TaskConfig:
    """Read a task file, resolve its parts, validate; errors name the file and key."""
    path = Path(path)
    raw = read_yaml(path)
    base = path.parent
    resolved = dict(raw)
    for key in ("dataset", "model", "search"):
        if key in raw:
            resolved[key] = _part(raw[key], base, key)
    resolved.setdefault("name", path.stem)
    return validate_config(TaskConfig, resolved, str(path))


def task_config_from_dict(data: dict[str, Any], source: str = "resolved config") -> TaskConfig:
    """Re-validate a resolved config (as logged to MLflow)."""
    return validate_config(TaskConfig, data, source)


def as_datetime(d: date) -> datetime:
    return datetime(d.year, d.month, d.day)
