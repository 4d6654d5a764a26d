"""What a training run of a task logs to MLflow (through :mod:`omnicrm.tracking`): one run per target.

Run names read ``churn · synthetic · lightgbm · train 2023-07-01…2024-04-01 ×10 · eval 2024-10-01``
(:func:`omnicrm.tasks.describe.run_name`), each run has a markdown description (the model against
every baseline and the verdict), and the registered model and each version are described; tags
carry task, target, dataset, cutoffs, model family and data fingerprint, so the MLflow UI's
comparison view lines runs up. Metrics are named ``model.<m>``, ``baseline.<name>.<m>`` and
``val.model.<m>``, side by side; durations are metrics too (``fit_seconds``, ``frames_seconds``),
params hold only what defines the run. With a refit (the default), the registered versions come
from a child run of the evaluation run (``run_kind=refit``), linked both ways by tags
(``evaluation_run_id`` / ``refit_run_id``) and by the versions' ``evaluated_as_run`` tag.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pandas as pd

from omnicrm import tracking
from omnicrm.tasks import describe, plots
from omnicrm.tasks import metrics as mt
from omnicrm.tasks.explain import importance, sample_rows, shap_summary_figure
from omnicrm.tasks.train import attach_refit, metrics_table

if TYPE_CHECKING:
    from concurrent.futures import Future

    from omnicrm.tasks.base import Target
    from omnicrm.tasks.config import TaskConfig
    from omnicrm.tasks.train import Frames, Refit, TargetResult


def run_tags(cfg: TaskConfig, target: str, fingerprint: str) -> dict[str, str]:
    """Tags that line runs up in the MLflow UI: task, target, dataset, config, cutoffs, data fingerprint."""
    return {
        "task": cfg.task.kind,
        "target": target,
        "dataset": cfg.dataset.name,
        "config": cfg.name,
        "model_family": cfg.model.family,
        "train_cutoffs": ",".join(str(d) for d in cfg.train_cutoffs()),
        "validation_cutoff": str(cfg.cutoffs.validation),
        "evaluation_cutoff": str(cfg.cutoffs.evaluation),
        "horizon_days": str(cfg.task.horizon_days),
        "data_fingerprint": fingerprint,
    }


def log_target(
    cfg: TaskConfig,
    target: Target,
    r: TargetResult,
    frames: Frames,
    ev: pd.DataFrame,
    extra_tags: dict[str, str],
    refit: Future[Refit] | None = None,
) -> None:
    """Log one target's run; register its model as ``candidate`` and its best baseline as ``baseline``.

    Sets ``r.run_id``, ``r.version`` and ``r.baseline_version``. The baseline version is tagged
    ``model_family=baseline:<name>`` (the model's is ``model_family=<family>``); registering it costs
    one more pyfunc log, recorded as the run's metric ``baseline_register_seconds``.

    With a refit (``r.refit``), the evaluation run logs metrics, plots and SHAP of the evaluated
    model and registers nothing; a child run (``run_kind=refit``, named ``… lightgbm refit · refit
    <cutoffs> …``) logs the refit and registers it and its refitted best baseline, tagged
    ``evaluated_as_run=<evaluation run>``, ``refit=true``, ``fitted_cutoffs`` and ``labels_end``
    (what ``omnicrm promote`` needs to stay honest); ``r.refit_run_id`` is that child run.

    Parameters
    ----------
    cfg : TaskConfig
    target : Target
    r : TargetResult
        The evaluated target.
    frames : Frames
        Its frames (row counts, data fingerprint).
    ev : DataFrame
        The target's evaluation rows (plots, SHAP sample, the model's input example).
    extra_tags : dict
        Tags beyond :func:`run_tags` (``tuned_by``).
    refit : Future, optional
        The refit, still fitting (:func:`omnicrm.tasks.train.refit_target` on another thread): the
        evaluation run is logged meanwhile, and the refit is waited for where it is registered.
    """
    tags = run_tags(cfg, r.target, frames.fingerprint) | extra_tags
    y = ev[target.label].to_numpy()
    tuned = "tuned_by" in extra_tags
    title = describe.run_name(cfg, r.target, tuned)
    # registration is all or nothing up to the run's last tag: an interrupt anywhere before deletes the
    # versions, so a candidate never comes from a run that failed (the aliases move at the very end)
    with (
        tracking.start_run(cfg.experiment_name(), title, tags=tags | {"run_kind": "evaluation"}) as run,
        tracking.staged_versions(),
    ):
        r.run_id = run.run_id
        tracking.log_config(cfg.model_dump(mode="json"))
        tracking.log_params({"frame": {"train_rows": len(frames.train), **_info(r.info | _encoding_info(r))}})
        # durations vary run to run: as params they would make identical configs look different
        tracking.log_metrics(r.seconds)
        tracking.log_metrics({"model": r.model_metrics, "val": {"model": r.validation_metrics}})
        tracking.log_metrics({"baseline": r.baseline_metrics})
        best, value = r.best_baseline
        tracking.log_metrics({f"model_minus_best_baseline.{r.primary}": r.model_metrics[r.primary] - value})
        if r.extra_metrics:
            tracking.log_metrics(r.extra_metrics)
        tracking.set_tags({"best_baseline": best, "beats_baseline": r.beats_baseline, "primary_metric": r.primary})
        if r.problem == "binary":
            tracking.log_figure(plots.roc_pr_figure(y, r.scores, title), "plots/roc_pr.png")
            tracking.log_figure(plots.calibration_figure(y, r.scores, title), "plots/calibration.png")
            tracking.log_figure(plots.lift_gain_figure(y, r.scores, title), "plots/lift_gain.png")
            tracking.log_table(mt.calibration_table(y, r.scores["model"]), "tables/calibration.csv")
        else:
            tracking.log_figure(plots.decile_figure(y, r.scores, title), "plots/deciles.png")
            tracking.log_figure(plots.lift_gain_figure(y, r.scores, title), "plots/lift_gain.png")
            tracking.log_table(mt.decile_table(y, r.scores["model"]), "tables/deciles.csv")
        rows = sample_rows(ev)
        contrib = r.model.contributions(rows)  # once, for the plot and the table
        shap_fig = shap_summary_figure(r.model, rows, f"SHAP summary: {title}", contrib)
        tracking.log_figure(shap_fig, "plots/shap_summary.png")
        tracking.log_table(importance(r.model, rows, contrib), "tables/importance.csv")
        tracking.log_table(metrics_table(r), "tables/metrics.csv")
        if refit is not None:
            attach_refit(r, refit.result())
            tracking.log_metrics({"refit_seconds": r.refit.seconds})
        if r.refit is None:
            _register(cfg, target, r, frames, ev)
        else:
            refit_tags = tags | {"run_kind": "refit", "evaluation_run_id": r.run_id}
            name = describe.run_name(cfg, r.target, tuned, refit=True)
            with tracking.start_run(cfg.experiment_name(), name, tags=refit_tags, nested=True) as child:
                r.refit_run_id = child.run_id
                tracking.set_run_description(describe.version_description(cfg, r))
                tracking.log_config(cfg.model_dump(mode="json"))
                tracking.log_params({"refit": _info(r.refit.info), "frame": _encoding_info(r, refit=True)})
                tracking.log_metrics({"refit_seconds": r.refit.seconds})
                _register(cfg, target, r, frames, ev)
            tracking.set_tags({"refit_run_id": r.refit_run_id})
        tracking.set_tags({"candidate_version": r.version, "baseline_version": r.baseline_version})
        # last: the description names the refit's run, known only now
        tracking.set_run_description(describe.run_description(cfg, r, tuned))


def _register(cfg: TaskConfig, target: Target, r: TargetResult, frames: Frames, ev: pd.DataFrame) -> None:
    """Register ``r.deployed`` (alias ``candidate``) and its best baseline (alias ``baseline``) from the active run.

    All or nothing (:func:`omnicrm.tracking.staged_versions`): an interrupted or failed registration
    deletes both versions and leaves the aliases where they were.
    """
    with tracking.staged_versions():
        _register_both(cfg, target, r, frames, ev)


def _register_both(cfg: TaskConfig, target: Target, r: TargetResult, frames: Frames, ev: pd.DataFrame) -> None:
    best, value = r.best_baseline
    model = r.deployed
    inputs = ev[model.encoding.features]
    sample = inputs.sample(min(len(ev), 2000), random_state=0)
    common = {
        "evaluation_cutoff": str(cfg.cutoffs.evaluation),
        "primary_metric": r.primary,
        "data_fingerprint": frames.fingerprint,
        "config": cfg.name,
        # the last label the version saw: promote scores a champion only on a cutoff whose labels it has not seen
        "labels_end": str(model.meta.get("labels_end", "")),
        # the run whose figures judge the version (the refit has none of its own)
        "evaluated_as_run": str(r.run_id),
    }
    if r.refit is not None:
        common |= {"refit": "true", "fitted_cutoffs": ",".join(model.meta["fitted_cutoffs"])}
    ref = tracking.log_model(
        model,
        inputs.head(5),
        signature_sample=sample,
        registered_name=r.registered_name,
        tags=common | {r.primary: f"{r.model_metrics[r.primary]:.6f}", "model_family": cfg.model.family},
    )
    r.version = ref.version
    # the best baseline becomes a version of the same registered model (alias ``baseline``), from
    # the same run, so ``promote`` can ship it when the model does not beat it
    start = time.perf_counter()
    base = tracking.log_model(
        r.baseline_model(best),
        inputs.head(5),
        name="baseline",
        signature_sample=sample,
        registered_name=r.registered_name,
        aliases=("baseline",),
        tags=common | {r.primary: f"{value:.6f}", "model_family": f"baseline:{best}", "candidate_version": ref.version},
    )
    r.baseline_version = base.version
    tracking.log_metrics({"baseline_register_seconds": time.perf_counter() - start})
    tracking.set_tags({"baseline_version": base.version})
    tracking.describe(r.registered_name, describe.model_description(cfg, target))
    tracking.describe(r.registered_name, describe.version_description(cfg, r), version=ref.version)
    tracking.describe(r.registered_name, describe.version_description(cfg, r, best), version=base.version)


def _encoding_info(r: TargetResult, refit: bool = False) -> dict:
    """The features the model (or its refit, which learns its own) uses and the candidates left out as constant."""
    enc = (r.refit.model if refit else r.model).encoding
    return {"features": len(enc.features), "features_dropped_constant": ",".join(enc.dropped) or "-"}


def _info(info: dict) -> dict:
    return {k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in info.items()}
