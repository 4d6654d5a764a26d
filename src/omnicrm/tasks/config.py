"""Task configs: dataset + task + model + search space, composed from parts, with a time-split guard.

A task file names its parts by path (relative to the file) or gives them inline::

    dataset: ../datasets/synthetic.yaml     # store + feature definitions
    model: ../models/lightgbm.yaml          # LightGBM parameters, early stopping, calibration
                                            # ({from: ../models/lightgbm.yaml, params: {...}} overrides keys)
    search: ../search/lightgbm.yaml         # Optuna search space (``omnicrm tune``)
    task: {kind: churn, horizon_days: 90, ...}
    cutoffs: {train: {start: 2023-06-01, end: 2024-04-01}, validation: 2024-07-01, evaluation: 2024-10-01}

:func:`load_task_config` resolves the parts into one :class:`TaskConfig` (logged to MLflow as the
*resolved* config, so a run can be re-evaluated without the files). The ``task`` section is the
task itself: ``kind`` picks its class from :data:`omnicrm.tasks.registry.TASKS`, and that class
validates the rest of the section (its own keys; a key of another task is an unknown key).

The time-split guard rejects a config whose label windows overlap the later cutoffs: every training
label window ``[T, T+h)`` must end by the validation cutoff, and the validation window by the
evaluation cutoff. A short history that cannot hold three disjoint label windows sets
``validation: holdout``: early stopping and calibration then use a share of the training cutoffs'
*customers* (``holdout_share``, split by a hash of the customer id, so no customer is on both
sides), and only the training windows must end by the evaluation cutoff.

After evaluating, ``omnicrm train`` refits the model on every labelled cutoff of the config
(training, validation and evaluation stacked) and registers that refit (``model.refit``, on by
default; ``model.refit_trees`` says how its tree count follows from early stopping).
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from omnicrm.config import StrictModel, read_yaml, validate_config
from omnicrm.errors import ConfigError
from omnicrm.features.cutoffs import CutoffSpec
from omnicrm.tasks.base import Target, Task
from omnicrm.tasks.registry import TASKS, unknown_kind

#: the task section's class: a registered :class:`~omnicrm.tasks.base.Task`
T = TypeVar("T", bound=Task)


class DatasetConfig(StrictModel):
    """Where the unified history lives and which features to build from it."""

    name: str
    store: str
    features: str | dict[str, Any] = {}
    feature_cache: str | None = "data/cache/features"  # Parquet per (store fingerprint, features, cutoff)
    # registered models are omnicrm-<task>; a second data set names its own: omnicrm-<namespace>-<task>
    registry_namespace: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]*$")


#: ``cutoffs.validation: holdout``: validate on held-out customers of the training cutoffs
HOLDOUT = "holdout"


class Cutoffs(StrictModel):
    """Training cutoffs (stacked), the validation cutoff (early stopping, calibration, tuning), the evaluation one.

    ``validation: holdout`` (short histories) validates on ``holdout_share`` of the training
    cutoffs' customers instead of a later cutoff: see the module docstring.
    """

    train: CutoffSpec
    validation: date | Literal["holdout"]
    evaluation: date
    holdout_share: float = Field(0.2, gt=0, lt=1)

    @property
    def holdout(self) -> bool:
        """Whether validation uses held-out customers of the training cutoffs (no validation cutoff)."""
        return self.validation == HOLDOUT

    def validation_dates(self) -> list[date]:
        """The validation cutoff as a list (empty with ``holdout``)."""
        return [] if self.holdout else [self.validation]  # type: ignore[list-item]


class ModelConfig(StrictModel):
    """LightGBM settings; ``params`` go to the estimator (seeded and deterministic by default)."""

    family: Literal["lightgbm"] = "lightgbm"
    params: dict[str, Any] = {}
    early_stopping_rounds: int = Field(50, gt=0)
    calibration: Literal["auto", "none", "isotonic", "sigmoid"] = "auto"
    seed: int = 42
    # after evaluating, refit on every labelled cutoff (training, validation, evaluation) and register
    # that refit; false registers the model fitted on the training cutoffs (as evaluated)
    refit: bool = True
    # the refit's tree count: "keep" = the best iteration as it is; "scale" = best iteration x refit
    # rows / training rows (the rule for i.i.d. rows; stacked cutoffs repeat the same customers, so
    # it overshoots: on Online Retail it ranked worse, benchmarks/refit.py)
    refit_trees: Literal["keep", "scale"] = "keep"
    # "auto": mix the model's score with the one baseline (and weight) that scores best on validation,
    # if any beats the model alone there (omnicrm.tasks.model.choose_blend; small logs, docs/tasks.md)
    blend: Literal["none", "auto"] = "none"

    @field_validator("params")
    @classmethod
    def _lightgbm_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        from omnicrm.lgbm_params import check_lgbm_params

        return check_lgbm_params(params)


class SearchParam(StrictModel):
    """One dimension of the Optuna search space: an int or float range (optionally log), or choices."""

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


class TaskConfig(StrictModel, Generic[T]):
    """A whole task config: dataset, task section, cutoffs, model, search space, baselines.

    ``task`` is an instance of the registered task class its ``kind`` names; ``TaskConfig[Churn]``
    is the config of a churn task (what :func:`load_task_config` validates against, so messages
    about the section list that task's keys).
    """

    name: str
    dataset: DatasetConfig
    task: SerializeAsAny[T]
    cutoffs: Cutoffs
    model: ModelConfig = ModelConfig()
    search: SearchConfig = SearchConfig()
    baselines: list[str] | None = None  # default per task (Task.baselines)

    @field_validator("task", mode="before")
    @classmethod
    def _task_class(cls, value: Any) -> Any:
        # the section's kind picks its class; an unknown kind is left to Task's own check
        if isinstance(value, dict) and isinstance(value.get("kind"), str) and value["kind"] in TASKS:
            return TASKS[value["kind"]].model_validate(value)
        return value

    @model_validator(mode="after")
    def _time_split_guard(self) -> TaskConfig:
        check_time_split(self)
        return self

    @model_validator(mode="after")
    def _params_by_position(self) -> TaskConfig:
        # an extra model (next_purchase's timing model) fits on other columns (its time bin first):
        # a list by feature position cannot mean the same features for both
        from omnicrm.lgbm_params import feature_keys

        keys = feature_keys(self.model.params)
        if keys and type(self.task).fit_extra is not Task.fit_extra:
            raise ValueError(
                f"model.params: {', '.join(keys)} refer to features by position, and {self.task.kind}'s extra model"
                " fits on other columns than its main model; not supported for this task"
            )
        return self

    def train_cutoffs(self) -> list[date]:
        """The training cutoffs, sorted and unique."""
        return self.cutoffs.train.as_list()

    def refit_cutoffs(self) -> list[date]:
        """Every labelled cutoff of the config, sorted: training, validation (unless ``holdout``), evaluation."""
        return sorted({*self.train_cutoffs(), *self.cutoffs.validation_dates(), self.cutoffs.evaluation})

    def labels_end(self, refit: bool) -> date:
        """The day after the last label a model of this config saw (a refit sees the evaluation window).

        Parameters
        ----------
        refit : bool
            The refit on every labelled cutoff; else the model fitted on the training cutoffs and
            stopped early on the validation cutoff (or held-out customers of the training cutoffs).
        """
        h = timedelta(days=self.task.label_days())
        seen = self.refit_cutoffs() if refit else [*self.train_cutoffs(), *self.cutoffs.validation_dates()]
        return max(seen) + h

    def experiment_name(self) -> str:
        """The MLflow experiment of this config's runs: ``omnicrm-[<namespace>-]<task>``, one per dataset and task.

        A dataset with its own ``registry_namespace`` (the real-data examples) gets its own
        experiments, so a reviewer compares its runs without the synthetic world's in between.
        """
        return self.registered_name()

    def registered_name(self, target: Target | None = None) -> str:
        """``omnicrm-[<namespace>-]<task>[-<suffix>]``: the registered model of ``target``.

        Parameters
        ----------
        target : Target, optional
            Its ``registry_suffix`` (clv's margin, a propensity target) ends the name.

        Returns
        -------
        str
        """
        ns = self.dataset.registry_namespace
        base = f"omnicrm-{ns}-{self.task.kind}" if ns else f"omnicrm-{self.task.kind}"
        suffix = target.registry_suffix if target is not None else None
        return f"{base}-{suffix}" if suffix else base


def check_time_split(cfg: TaskConfig) -> None:
    """Raise ``ValueError`` unless train < validation < evaluation with label windows included.

    With ``validation: holdout`` there is no validation cutoff: the training label windows must end
    by the evaluation cutoff.
    """
    h = timedelta(days=cfg.task.label_days())
    train = cfg.cutoffs.train.as_list()
    if not train:
        raise ValueError("cutoffs.train gives no dates")
    ev = cfg.cutoffs.evaluation
    last = max(train)
    if cfg.cutoffs.holdout:
        if last + h > ev:
            raise ValueError(
                f"time split: the last training cutoff {last} plus its {h.days}-day label window ends "
                f"{last + h}, after the evaluation cutoff {ev}; the evaluation cutoff must come after "
                "training, label windows included"
            )
        return
    val = cfg.cutoffs.validation
    if last + h > val:
        raise ValueError(
            f"time split: the last training cutoff {last} plus its {h.days}-day label window ends "
            f"{last + h}, after the validation cutoff {val}; move training cutoffs earlier, or, where the "
            "history is too short for three label windows, set cutoffs.validation: holdout (docs/tasks.md)"
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


def _validate(data: dict[str, Any], source: str) -> TaskConfig:
    """Validate a resolved task config against the config class of the task its ``kind`` names."""
    section = data.get("task")
    kind = section.get("kind") if isinstance(section, dict) else None
    if isinstance(section, dict) and "kind" in section and not (isinstance(kind, str) and kind in TASKS):
        raise ConfigError(f"{source}: key 'task.kind': {unknown_kind(kind)}")
    model = TaskConfig[TASKS[kind]] if isinstance(kind, str) else TaskConfig
    return validate_config(model, data, source)


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
    return _validate(resolved, str(path))


#: keys every task section carried, with their defaults, in configs logged before each task had its
#: own class (one flat section for all tasks): dropped from a logged config where they are not the
#: task's own and still hold the default, so ``omnicrm promote`` can rebuild an older candidate's frame
_FLAT_SECTION_DEFAULTS: dict[str, Any] = {
    "timing_max_days": None,
    "timing_bins": [7, 14, 21, 30, 45, 60, 90, 120],
    "clv_objective": "tweedie",
    "tweedie_variance_power": 1.3,
    "btyd_features": True,
    "margin": True,
    "targets": [],
}


def task_config_from_dict(data: dict[str, Any], source: str = "resolved config") -> TaskConfig:
    """Re-validate a resolved config (as logged to MLflow), also one logged before the task classes."""
    section = data.get("task")
    if isinstance(section, dict) and section.get("kind") in TASKS:
        own = TASKS[section["kind"]].model_fields
        section = {
            k: v
            for k, v in section.items()
            if k in own or k not in _FLAT_SECTION_DEFAULTS or v != _FLAT_SECTION_DEFAULTS[k]
        }
        data = data | {"task": section}
    return _validate(data, source)
