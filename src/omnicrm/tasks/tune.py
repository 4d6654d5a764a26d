"""``omnicrm tune CONFIG``: an Optuna study per target over the config's search space.

* The objective is the target's primary metric on the **validation** cutoff (never the evaluation
  one); the tuned model is then trained once more and evaluated on the evaluation cutoff like any
  ``omnicrm train`` run, next to its baselines, and registered as ``candidate``.
* Storage is SQLite (``search.storage``) and the study name is derived from the config, so an
  interrupted study resumes: ``n_trials`` is the total wanted, and only the missing trials run.
* Binary targets are pruned with Optuna's LightGBM callback on the validation AUC (median pruner).
  Regression targets (CLV) are not pruned: their early-stopping metric (Tweedie deviance) runs the
  other way from the tuning metric (normalised Gini), which the callback cannot mix.
* Each trial is a nested MLflow run under a parent run that records the best trial.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from omnicrm import tracking
from omnicrm.pipeline.progress import Progress, silent
from omnicrm.tasks.config import SearchParam, TaskConfig, load_task_config
from omnicrm.tasks.tracked import run_tags
from omnicrm.tasks.train import (
    PRIMARY,
    Frames,
    Target,
    TargetResult,
    fit_target,
    load_frames,
    score_metrics,
    target_rows,
    targets_of,
    train,
)


def study_name(cfg: TaskConfig, target: Target) -> str:
    """Stable per (config content, target): a changed search space or data window starts a new study."""
    digest = hashlib.sha256(
        json.dumps(
            cfg.model_dump(mode="json", exclude={"search": {"n_trials", "timeout_seconds"}}), sort_keys=True
        ).encode()
    ).hexdigest()[:10]
    return f"{cfg.name}-{target.name}-{digest}"


def suggest(trial: optuna.Trial, space: dict[str, SearchParam]) -> dict[str, Any]:
    params = {}
    for name, p in space.items():
        if p.type == "int":
            params[name] = trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
        elif p.type == "float":
            params[name] = trial.suggest_float(name, float(p.low), float(p.high), log=p.log)
        else:
            params[name] = trial.suggest_categorical(name, p.choices)
    return params


@dataclass
class TuneResult:
    target: str
    study: str
    trials_total: int
    trials_run: int
    pruned: int
    best_value: float
    best_params: dict[str, Any]
    parent_run_id: str


def _storage_url(storage: str) -> str:
    if "://" in storage:
        return storage
    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(storage).resolve()}"


def _done(study: optuna.Study) -> int:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(t.state in states for t in study.trials)


def tune_target(
    cfg: TaskConfig,
    target: Target,
    frames: Frames,
    n_trials: int | None = None,
    progress: Progress = silent,
    on_trial: Any = None,
) -> TuneResult:
    """Run (or resume) the study of one target; see the module docstring."""
    from optuna_integration import LightGBMPruningCallback

    tr, va = target_rows(frames.train, target), target_rows(frames.validation, target)
    total = n_trials or cfg.search.n_trials
    name = study_name(cfg, target)
    study = optuna.create_study(
        study_name=name,
        storage=_storage_url(cfg.search.storage),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.model.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=cfg.search.pruner_warmup_steps),
        load_if_exists=True,
    )
    before = _done(study)
    metric = PRIMARY[target.kind]
    tags = run_tags(cfg, target.name, frames.fingerprint) | {"optuna_study": name}

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, cfg.search.space)
        pruned = False
        value = float("nan")
        with tracking.start_run(f"omnicrm-{cfg.task.kind}", f"trial {trial.number}", tags=tags, nested=True):
            tracking.log_params({"trial": trial.number, **params})
            callbacks = []
            override = dict(params)
            if target.kind == "binary":
                override["metric"] = "auc"
                callbacks.append(LightGBMPruningCallback(trial, "auc", valid_name="valid"))
            try:
                with warnings.catch_warnings():
                    # the pruning callback warns that it is experimental-ish in some versions; not an error
                    warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
                    model, _ = fit_target(cfg, target, tr, va, override, callbacks)
                value = score_metrics(target.kind, va[target.label].to_numpy(), model.predict_score(va))[metric]
                tracking.log_metrics({f"val.{metric}": value, "best_iteration": model.estimator.best_iteration_})
            except optuna.TrialPruned:
                pruned = True
                tracking.set_tags({"optuna_state": "PRUNED"})
        if on_trial is not None:
            on_trial(trial)
        if pruned:  # raised outside the MLflow run, so the child run ends FINISHED, not FAILED
            raise optuna.TrialPruned()
        progress(f"{cfg.name}: tuning {target.name} ({_done(study) + 1}/{total})", _done(study) / max(total, 1))
        return value

    remaining = max(total - before, 0)
    with tracking.start_run(
        f"omnicrm-{cfg.task.kind}", f"tune {target.name} · {cfg.dataset.name}", tags=tags | {"run_kind": "tuning"}
    ) as parent:
        tracking.log_config(cfg.model_dump(mode="json"))
        if remaining:
            study.optimize(objective, n_trials=remaining, timeout=cfg.search.timeout_seconds)
        best = study.best_trial
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
        tracking.log_metrics({f"best.val.{metric}": best.value, "trials": _done(study), "pruned": pruned})
        tracking.log_params({"best": best.params})
        tracking.set_tags({"best_trial": best.number})
    return TuneResult(
        target.name, name, _done(study), _done(study) - before, pruned, best.value, best.params, parent.run_id
    )


def tune(
    config: str | Path | TaskConfig, progress: Progress = silent, n_trials: int | None = None
) -> tuple[list[TuneResult], list[TargetResult]]:
    """Tune every target, then train/evaluate/register each with its best parameters."""
    cfg = config if isinstance(config, TaskConfig) else load_task_config(config)
    frames = load_frames(cfg, progress)
    tuned, results = [], []
    for target in targets_of(cfg, frames.train):
        t = tune_target(cfg, target, frames, n_trials, progress)
        tuned.append(t)
        results += train(
            cfg,
            progress,
            override=t.best_params,
            frames=frames,
            run_tags={"tuned_by": t.parent_run_id},
            only=target.name,
        )
    return tuned, results
