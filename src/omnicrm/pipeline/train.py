"""``omnicrm train CONFIG``: fit each target of a task, evaluate it next to its baselines, log and register.

Wiring around the pure :func:`omnicrm.tasks.train.train_target`: load the config, build the frames
from the store (:func:`omnicrm.pipeline.task_frames.load_frames`), then per target fit and evaluate,
and log one MLflow run with config, data fingerprint, git commit, cutoffs, metrics side by side,
plots, SHAP summary and importance, registering the model as ``omnicrm-<task>[-<target>]`` with
alias ``candidate`` (:func:`omnicrm.pipeline.task_tracking.log_target`). With ``model.refit`` (the
default) the registered model is the refit on every labelled cutoff
(:func:`omnicrm.tasks.train.refit_target`), logged in a child run of the evaluation run. The refit
starts on a second thread as soon as the evaluated fit has its best iteration, and fits while the
evaluation is computed and logged (LightGBM fits on one thread, for identical models run to run, so
the other core is free); an error or Ctrl-C meanwhile stops it at its next tree.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from omnicrm.interrupts import worker_pool
from omnicrm.pipeline.task_frames import load_frames
from omnicrm.progress import Progress, silent
from omnicrm.tasks.config import TaskConfig, load_task_config
from omnicrm.tasks.train import Frames, TargetResult, attach_refit, train_target


def train(
    config: str | Path | TaskConfig,
    progress: Progress = silent,
    override: dict[str, Any] | None = None,
    register: bool = True,
    frames: Frames | None = None,
    run_tags: dict[str, str] | None = None,
    only: str | None = None,
) -> list[TargetResult]:
    """Train, evaluate, log and register every target of a task config; see the module docstring.

    Parameters
    ----------
    config : path or TaskConfig
    progress : Progress
    override : dict, optional
        LightGBM params over the config's (the best trial of a study).
    register : bool
        Log to MLflow and register each model (``False``: fit and evaluate only).
    frames : Frames, optional
        Frames built already (tuning builds them once for the study and the final fit).
    run_tags : dict, optional
        Extra tags of every run (``tuned_by``).
    only : str, optional
        Train only the target of this name.

    Returns
    -------
    list of TargetResult
        With ``run_id`` and ``version`` set when registered.
    """
    cfg = config if isinstance(config, TaskConfig) else load_task_config(config)
    frames = frames or load_frames(cfg, progress)
    # mlflow is imported when the first run is logged, on this thread: importing it on a second
    # thread during the fit saved 1-3 s but raced the fit's own imports of mlflow's modules (a
    # "partially initialized module" ImportError from mlflow's circular imports, seen in CI)
    results = []
    targets = [t for t in cfg.task.targets_of(frames.train) if only is None or t.name == only]
    for i, target in enumerate(targets):
        progress(f"{cfg.name}: fitting {target.name}", 0.3 + 0.6 * i / len(targets))
        # The refit (LightGBM on one thread, its baselines beside it) starts as soon as the fit has
        # its best iteration and fits while the evaluation is computed and logged: calibration,
        # plots, SHAP and MLflow's start-up use the other core. Each side computes what it computed
        # alone (the registered models' scores are checked in benchmarks/train.py).
        stop = threading.Event()
        with worker_pool(1, "omnicrm-refit") as pool:
            try:
                result = train_target(cfg, target, frames, override, background=pool, stop=stop)
                refit = result.pending_refit
                if register:
                    progress(f"{cfg.name}: logging {target.name} to MLflow", 0.3 + 0.6 * (i + 0.8) / len(targets))
                    from omnicrm.pipeline.task_tracking import log_target

                    log_target(cfg, target, result, frames, target.rows(frames.evaluation), run_tags or {}, refit)
                elif refit is not None:
                    attach_refit(result, refit.result())
            except BaseException:
                stop.set()  # an error or Ctrl-C: the refit stops at its next tree instead of running out
                raise
        results.append(result)
    progress(f"{cfg.name}: done", 1.0)
    return results
