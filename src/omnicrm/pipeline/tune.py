"""``omnicrm tune CONFIG``: an Optuna study per target over the config's search space.

* The objective (:func:`omnicrm.tasks.tune.fit_trial`) is the target's primary metric on the
  **validation** cutoff; the tuned model is then trained once more and evaluated on the evaluation
  cutoff like any ``omnicrm train`` run, next to its baselines, refitted on every labelled cutoff
  (unless ``model.refit: false``) and registered as ``candidate``.
* Storage is SQLite (``search.storage``) and the study name is derived from the config, so an
  interrupted study resumes: ``n_trials`` is the total wanted, and only the missing trials run.
* Each trial is a nested MLflow run under a parent run that records the best trial.

Optuna's log level is not set here (nor at import anywhere): library quieting belongs to the
program's entry point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from omnicrm import tracking
from omnicrm.pipeline.task_frames import load_frames
from omnicrm.pipeline.task_tracking import run_tags
from omnicrm.pipeline.train import train
from omnicrm.progress import Progress, silent
from omnicrm.tasks.base import Target
from omnicrm.tasks.config import TaskConfig, load_task_config
from omnicrm.tasks.train import Frames, TargetResult
from omnicrm.tasks.tune import TuneResult, fit_trial, study_name, suggest


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
    """Run (or resume) the study of one target; see the module docstring.

    Parameters
    ----------
    cfg : TaskConfig
    target : Target
    frames : Frames
    n_trials : int, optional
        Total trials wanted (default ``search.n_trials``); only the missing ones run.
    progress : Progress
    on_trial : callable, optional
        Called with each finished trial (tests interrupt a study with it).

    Returns
    -------
    TuneResult
    """
    tr, va = target.rows(frames.train), target.rows(frames.validation)
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
    metric = cfg.task.primary_metric(target)
    tags = run_tags(cfg, target.name, frames.fingerprint) | {"optuna_study": name}

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, cfg.search.space)
        pruned = False
        value = float("nan")
        with tracking.start_run(cfg.experiment_name(), f"trial {trial.number}", tags=tags, nested=True):
            tracking.log_params({"trial": trial.number, **params})
            try:
                value, best_iteration = fit_trial(cfg, target, tr, va, trial, params)
                tracking.log_metrics({f"val.{metric}": value, "best_iteration": best_iteration})
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
        cfg.experiment_name(), f"tune {target.name} · {cfg.dataset.name}", tags=tags | {"run_kind": "tuning"}
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
    for target in cfg.task.targets_of(frames.train):
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
