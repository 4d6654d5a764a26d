"""The pure half of ``omnicrm tune``: a study's name, a trial's parameters, a trial's fit and score.

* The objective is the target's primary metric on the **validation** cutoff (never the evaluation
  one).
* Binary targets are pruned with Optuna's LightGBM callback on the validation AUC (median pruner).
  Regression targets (CLV) are not pruned: their early-stopping metric (Tweedie deviance) runs the
  other way from the tuning metric (normalised Gini), which the callback cannot mix.

The study itself (resumable SQLite storage, nested MLflow runs, training the best) is wired in
:mod:`omnicrm.pipeline.tune`. Optuna's own logging is left as the caller set it: nothing here
changes global state at import.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd

from omnicrm.tasks.base import Target
from omnicrm.tasks.config import SearchParam, TaskConfig
from omnicrm.tasks.train import fit_target


def study_name(cfg: TaskConfig, target: Target) -> str:
    """Stable per (config content, target): a changed search space or data window starts a new study."""
    digest = hashlib.sha256(
        json.dumps(
            cfg.model_dump(mode="json", exclude={"search": {"n_trials", "timeout_seconds"}}), sort_keys=True
        ).encode()
    ).hexdigest()[:10]
    return f"{cfg.name}-{target.name}-{digest}"


def suggest(trial: optuna.Trial, space: dict[str, SearchParam]) -> dict[str, Any]:
    """One trial's LightGBM parameters drawn from the config's search space."""
    params = {}
    for name, p in space.items():
        if p.type == "int":
            params[name] = trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
        elif p.type == "float":
            params[name] = trial.suggest_float(name, float(p.low), float(p.high), log=p.log)
        else:
            params[name] = trial.suggest_categorical(name, p.choices)
    return params


def fit_trial(
    cfg: TaskConfig, target: Target, tr: pd.DataFrame, va: pd.DataFrame, trial: optuna.Trial, params: dict[str, Any]
) -> tuple[float, int]:
    """Fit one trial's model and score it on the validation frame.

    Parameters
    ----------
    cfg : TaskConfig
    target : Target
    tr, va : DataFrame
        The target's training and validation rows.
    trial : optuna.Trial
        Reports intermediate AUCs to the pruner (binary targets).
    params : dict
        The trial's parameters (:func:`suggest`).

    Returns
    -------
    value : float
        The target's primary metric on the validation frame.
    best_iteration : int

    Raises
    ------
    optuna.TrialPruned
        The pruner stopped the trial.
    """
    from optuna_integration import LightGBMPruningCallback

    callbacks = []
    override = dict(params)
    if target.problem == "binary":
        override["metric"] = "auc"
        callbacks.append(LightGBMPruningCallback(trial, "auc", valid_name="valid"))
    with warnings.catch_warnings():
        # the pruning callback warns that it is experimental-ish in some versions; not an error
        warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
        model, _ = fit_target(cfg, target, tr, va, override, callbacks)
    metric = cfg.task.primary_metric(target)
    value = cfg.task.metrics(target, va[target.label].to_numpy(), model.predict_score(va))[metric]
    return value, model.estimator.best_iteration_


@dataclass
class TuneResult:
    """One target's study: its size, the best trial, and the MLflow run that records it."""

    target: str
    study: str
    trials_total: int
    trials_run: int
    pruned: int
    best_value: float
    best_params: dict[str, Any]
    parent_run_id: str
