"""Fit one target of a task and evaluate it next to its baselines: pure, frames in, results out.

Flow per target (:func:`train_target`): LightGBM with early stopping on the validation cutoff ->
calibration kept only where it helps out of sample -> the task's extra model, if any -> baselines
fitted on the same training frame -> every score evaluated on the *evaluation* cutoff (later than
training and validation, label windows included: the config guard). What differs between tasks
comes from the task (:mod:`omnicrm.tasks.base`); loading frames, logging and registering are the
wiring's (:mod:`omnicrm.pipeline.train`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from omnicrm.errors import InputError
from omnicrm.tasks.base import Target
from omnicrm.tasks.baselines import Baseline
from omnicrm.tasks.config import TaskConfig
from omnicrm.tasks.frames import model_columns
from omnicrm.tasks.model import BaselineModel, Encoding, TaskModel, choose_calibration, fit_lgbm


@dataclass
class Frames:
    """The three frames of a task config and where they came from.

    Attributes
    ----------
    train, validation, evaluation : DataFrame
        Stacked training cutoffs; the validation cutoff; the evaluation cutoff.
    fingerprint : str
        The store's data fingerprint.
    seconds : float
        How long building them took.
    """

    train: pd.DataFrame
    validation: pd.DataFrame
    evaluation: pd.DataFrame
    fingerprint: str
    seconds: float


def lgbm_params(cfg: TaskConfig, target: Target, override: dict[str, Any] | None = None) -> dict[str, Any]:
    """LightGBM params of a target: the model config's, seeded, the task's objective, then ``override``."""
    params = dict(cfg.model.params) | {"random_state": cfg.model.seed}
    params |= cfg.task.objective_params(target)
    return params | (override or {})


def fit_target(
    cfg: TaskConfig,
    target: Target,
    tr: pd.DataFrame,
    va: pd.DataFrame,
    override: dict[str, Any] | None = None,
    callbacks: list | None = None,
) -> tuple[TaskModel, dict[str, Any]]:
    """Fit the LightGBM model of one target (early stopping and calibration on validation only).

    Parameters
    ----------
    cfg : TaskConfig
    target : Target
    tr, va : DataFrame
        The target's training and validation rows (consent filter applied).
    override : dict, optional
        LightGBM params over the config's (a tuning trial's, or the best trial's).
    callbacks : list, optional
        Extra LightGBM callbacks (Optuna's pruning callback).

    Returns
    -------
    model : TaskModel
    info : dict
        Best iteration, feature count, calibration choice, the extra model's info.
    """
    task = cfg.task
    features = model_columns(tr, task.label_columns)
    enc = Encoding.learn(tr, features)
    X_tr, X_va = enc.transform(tr), enc.transform(va)
    y_tr, y_va = tr[target.label].to_numpy(), va[target.label].to_numpy()
    if target.problem == "binary" and len(np.unique(y_tr)) < 2:
        raise InputError(f"{cfg.name}: target {target.name!r} has one class only in the training frame")
    params = lgbm_params(cfg, target, override)
    est = fit_lgbm(target.problem, X_tr, y_tr, X_va, y_va, params, cfg.model.early_stopping_rounds, callbacks)
    info: dict[str, Any] = {"best_iteration": int(est.best_iteration_ or est.n_estimators), "features": len(features)}
    model = TaskModel(task.kind, target.name, target.problem, target.score_column, enc, est)
    if target.problem == "binary":
        p_va = est.predict_proba(X_va)[:, 1]
        model.calibrator, cal = choose_calibration(p_va, y_va, cfg.model.calibration, cfg.model.seed)
        info |= cal
    model.extra, extra_info = task.fit_extra(target, enc, tr, va, params, cfg.model.early_stopping_rounds)
    info |= extra_info
    return model, info


@dataclass
class TargetResult:
    """One trained target: its model, metrics next to the baselines', and where it was registered."""

    task: str
    target: str
    problem: str
    registered_name: str
    primary: str
    model_metrics: dict[str, float]
    baseline_metrics: dict[str, dict[str, float]]
    validation_metrics: dict[str, float]
    info: dict[str, Any]
    model: TaskModel
    scores: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    run_id: str | None = None
    version: str | None = None
    #: the extra model's metrics, ``{group: {score: {metric: value}}}`` (next_purchase: ``timing``)
    extra_metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    #: rows the extra model adds to :func:`summary_table`
    extra_rows: list[dict[str, Any]] = field(default_factory=list)
    #: wall-clock durations (``fit_seconds``, ``frames_seconds``): logged as metrics, never as params
    seconds: dict[str, float] = field(default_factory=dict)
    #: the fitted baselines, by name (the best one is registered beside the model)
    baselines: dict[str, Baseline] = field(repr=False, default_factory=dict)
    #: the registered version of the best baseline (alias ``baseline``), when registered
    baseline_version: str | None = None

    def baseline_model(self, name: str | None = None) -> BaselineModel:
        """Baseline ``name`` (default: the best) as a registrable model scored like :attr:`model`.

        Parameters
        ----------
        name : str, optional
            One of :attr:`baselines`; the best on the evaluation cutoff by default.

        Returns
        -------
        BaselineModel
        """
        name = name or self.best_baseline[0]
        m = self.model
        meta = self.model.meta | {"model_family": f"baseline:{name}"}
        return BaselineModel(
            m.task, m.target, m.problem, m.score_column, self.baselines[name], m.encoding, m.extra, meta
        )

    @property
    def best_baseline(self) -> tuple[str, float]:
        """The baseline with the highest primary metric (NaN counts as lowest), and that metric."""
        name = max(self.baseline_metrics, key=lambda b: _nan_low(self.baseline_metrics[b][self.primary]))
        return name, self.baseline_metrics[name][self.primary]

    @property
    def beats_baseline(self) -> bool:
        """Whether the model's primary metric is above the best baseline's."""
        return self.model_metrics[self.primary] > self.best_baseline[1]


def _nan_low(v: float) -> float:
    return -np.inf if v is None or np.isnan(v) else v


def baseline_names(cfg: TaskConfig) -> list[str]:
    """The baselines a config compares its model with: its own list, else the task's defaults."""
    return list(cfg.baselines or cfg.task.baselines)


def evaluate_target(
    cfg: TaskConfig,
    target: Target,
    model: TaskModel,
    tr: pd.DataFrame,
    va: pd.DataFrame,
    ev: pd.DataFrame,
    baselines: dict[str, Baseline] | None = None,
) -> TargetResult:
    """Model and baselines on the evaluation cutoff (and the model on validation, for reference).

    ``baselines`` fitted already (on ``tr`` with the model's features, :meth:`Task.fit_baselines`)
    are used as they are; otherwise they are fitted here.
    """
    task = cfg.task
    y_ev = ev[target.label].to_numpy()
    scores = {"model": model.predict_score(ev)}
    if baselines is None:
        baselines = task.fit_baselines(target, baseline_names(cfg), model.encoding.features, tr)
    fitted = baselines
    for name, b in fitted.items():
        scores[f"baseline_{name}"] = b.predict(ev, target.problem)
    base = {k.removeprefix("baseline_"): task.metrics(target, y_ev, v) for k, v in scores.items() if k != "model"}
    extra = task.extra_metrics(target, model, ev)
    return TargetResult(
        task=task.kind,
        target=target.name,
        problem=target.problem,
        registered_name=cfg.registered_name(target),
        primary=task.primary_metric(target),
        model_metrics=task.metrics(target, y_ev, scores["model"]),
        baseline_metrics=base,
        validation_metrics=task.metrics(target, va[target.label].to_numpy(), model.predict_score(va)),
        info={},
        model=model,
        scores=scores,
        extra_metrics=extra,
        extra_rows=task.extra_summary(target, extra) if extra else [],
        baselines=fitted,
    )


def train_target(
    cfg: TaskConfig, target: Target, frames: Frames, override: dict[str, Any] | None = None
) -> TargetResult:
    """Fit one target on ``frames`` and evaluate it next to its baselines (nothing is logged).

    Parameters
    ----------
    cfg : TaskConfig
    target : Target
        One of ``cfg.task.targets_of(frames.train)``.
    frames : Frames
    override : dict, optional
        LightGBM params over the config's (the best trial of a study).

    Returns
    -------
    TargetResult
        With row counts in ``info`` and ``fit_seconds`` / ``frames_seconds`` in ``seconds``.
    """
    tr, va, ev = (target.rows(f) for f in (frames.train, frames.validation, frames.evaluation))
    start = time.perf_counter()
    model, info = fit_target(cfg, target, tr, va, override)
    fit_seconds = time.perf_counter() - start
    # the baselines stay after the fit, on this thread: fitted on a second thread beside LightGBM
    # they made the fit phase slower on 2 cores (13.6-20.7 s against 8.8-9.1 s, benchmarks/train.py)
    fitted = cfg.task.fit_baselines(target, baseline_names(cfg), model.encoding.features, tr)
    model.baselines = fitted  # registered with the model: `predict --baselines` scores every one
    model.meta = {"evaluation_cutoff": str(cfg.cutoffs.evaluation), "config": cfg.name}
    result = evaluate_target(cfg, target, model, tr, va, ev, baselines=fitted)
    result.info = info | {"train_rows": len(tr), "validation_rows": len(va), "evaluation_rows": len(ev)}
    result.seconds = {"fit_seconds": fit_seconds, "frames_seconds": frames.seconds}
    return result


def summary_table(results: list[TargetResult]) -> pd.DataFrame:
    """One row per target: primary metric of the model and of its best baseline on the evaluation cutoff."""
    rows = []
    for r in results:
        name, value = r.best_baseline
        row = {
            "task": r.task,
            "target": r.target,
            "metric": r.primary,
            "model": r.model_metrics[r.primary],
            "best_baseline": name,
            "baseline": value,
            "version": r.version,
        }
        rows.append(row)
        rows += [{"task": r.task, **extra, "version": r.version} for extra in r.extra_rows]
    return pd.DataFrame(rows)


def metrics_table(r: TargetResult) -> pd.DataFrame:
    """Model and baselines as rows, metrics as columns (the evaluation cutoff)."""
    rows = [{"score": "model", **r.model_metrics}]
    rows += [{"score": f"baseline_{k}", **v} for k, v in r.baseline_metrics.items()]
    return pd.DataFrame(rows)


def evaluation_cutoff(results: list[TargetResult]) -> date | None:
    """The evaluation cutoff the results were judged on (``None`` without results)."""
    return date.fromisoformat(results[0].model.meta["evaluation_cutoff"]) if results else None
