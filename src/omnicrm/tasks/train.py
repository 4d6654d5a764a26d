"""Fit one target of a task and evaluate it next to its baselines: pure, frames in, results out.

Flow per target (:func:`train_target`): LightGBM with early stopping on the validation cutoff ->
calibration kept only where it helps out of sample -> the task's extra model, if any -> baselines
fitted on the same training frame -> every score evaluated on the *evaluation* cutoff (later than
training and validation, label windows included: the config guard) -> the refit for deployment
(:func:`refit_target`, unless ``model.refit: false``). What differs between tasks comes from the
task (:mod:`omnicrm.tasks.base`); loading frames, logging and registering are the wiring's
(:mod:`omnicrm.pipeline.train`).

The refit is the model a business deploys: the evaluated configuration fitted once more on every
labelled cutoff (training, validation and evaluation stacked), so it has learnt from the latest
behaviour whose outcome is known. Its figures are the evaluation phase's (nothing later is
labelled to judge it on); the rules that keep it coherent:

* **trees**: no validation data is left for early stopping, so the tree count is carried over:
  ``model.refit_trees: keep`` (default) uses the best iteration as it is; ``scale`` multiplies it
  by the ratio of refit rows to training rows (the usual rule when the extra rows are new
  independent samples; here they are mostly the same customers at later cutoffs, and on Online
  Retail the scaled refit ranked worse than the kept one, ``benchmarks/refit.py``);
* **calibration**: the calibrator chosen and fitted on validation is kept as it is (its method and
  mapping): a calibrator refitted on the refit's own training rows would learn in-sample, over-
  confident scores; same parameters and a similar tree count give raw scores on the same scale;
* **the extra model** (next_purchase's timing model) is refitted on the same stacked rows with its
  own best iteration carried over by the same rule (an extra model that records none is kept as
  evaluated);
* **baselines** are refitted on the same stacked rows, so the registered baseline is as recent as
  the model it stands beside.

``validation: holdout`` (short histories, :mod:`omnicrm.tasks.config`): :func:`holdout_split`
splits the training cutoffs' rows by customer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

import lightgbm as lgb
import numpy as np
import pandas as pd

from omnicrm.errors import InputError
from omnicrm.interrupts import worker_pool
from omnicrm.tasks.base import Target
from omnicrm.tasks.baselines import Baseline
from omnicrm.tasks.config import TaskConfig
from omnicrm.tasks.frames import model_columns
from omnicrm.tasks.model import (
    DEFAULT_PARAMS,
    BaselineModel,
    Blend,
    Encoding,
    TaskModel,
    choose_blend,
    choose_calibration,
    fit_lgbm,
)

R = TypeVar("R")


@dataclass
class Frames:
    """The three frames of a task config and where they came from.

    Attributes
    ----------
    train, validation, evaluation : DataFrame
        Stacked training cutoffs; the validation cutoff (with ``validation: holdout``: the held-out
        customers' rows of the training cutoffs, which are then not in ``train``); the evaluation cutoff.
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


def holdout_split(frame: pd.DataFrame, share: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows by customer: about ``share`` of the customers (all their cutoffs) held out.

    The customer's side is a hash of its id and ``seed``, so it is the same at every cutoff (no
    customer is on both sides: a customer's rows at neighbouring cutoffs are near copies, and
    validating on them would reward memorising the customer) and the same from run to run.

    Parameters
    ----------
    frame : DataFrame
        Stacked training rows with ``customer_id``.
    share : float
        Share of customers held out, in (0, 1).
    seed : int
        Salt of the hash (the model's seed).

    Returns
    -------
    train, held : DataFrame
        The rows of the kept customers and of the held-out ones, index reset.
    """
    ids = frame["customer_id"].astype(str) + f"|{seed}"
    bucket = pd.util.hash_pandas_object(ids, index=False).to_numpy() % 10_000
    held = bucket < round(share * 10_000)
    return frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)


def lgbm_params(cfg: TaskConfig, target: Target, override: dict[str, Any] | None = None) -> dict[str, Any]:
    """LightGBM params of a target: the model config's, seeded, the task's objective, then ``override``."""
    params = dict(cfg.model.params) | {"random_state": cfg.model.seed}
    params |= cfg.task.objective_params(target)
    return params | (override or {})


class RefitStopped(Exception):
    """The refit was stopped by its caller (:func:`refit_target`'s ``stop``)."""


def _stop_when(stop: threading.Event) -> Callable[[Any], None]:
    def check(env: Any) -> None:  # a LightGBM callback, called after every tree
        if stop.is_set():
            raise RefitStopped("the refit was stopped")

    return check


@contextmanager
def _beside(fn: Callable[..., R], *args: Any) -> Iterator[Future[R]]:
    """``fn(*args)`` on a second thread while the block runs (the block then waits for it).

    LightGBM fits on one thread (:data:`omnicrm.determinism.LIGHTGBM`, for identical models run to
    run), so on a machine with two cores or more the baselines fit on another core meanwhile. Both
    are single-threaded, deterministic computations on their own data, so running them side by side
    changes no bit of either (``benchmarks/train.py`` checks the scores across runs; the time it
    saves is in ``benchmarks/README.md``). An error of ``fn`` is raised by ``result()``.
    """
    with worker_pool(1, "omnicrm-baselines") as pool:
        yield pool.submit(fn, *args)


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
    #: the refit for deployment (:func:`refit_target`): what is registered; ``None`` without refit
    refit: Refit | None = None
    #: the run that logged the refit and registered it (``run_id`` is the evaluation run)
    refit_run_id: str | None = None
    #: the refit still fitting on another thread (:func:`train_target`'s ``background``); its
    #: ``result()`` is the :class:`Refit` to :func:`attach_refit`
    pending_refit: Future[Refit] | None = field(repr=False, default=None)

    @property
    def deployed(self) -> TaskModel:
        """The model registered as the version: the refit, else the evaluated model."""
        return self.refit.model if self.refit is not None else self.model

    def baseline_model(self, name: str | None = None) -> BaselineModel:
        """Baseline ``name`` (default: the best) as a registrable model scored like :attr:`deployed`.

        With a refit, the baseline refitted on the same rows, beside the refit's encoding and extra model.

        Parameters
        ----------
        name : str, optional
            One of :attr:`baselines`; the best on the evaluation cutoff by default.

        Returns
        -------
        BaselineModel
        """
        name = name or self.best_baseline[0]
        m = self.deployed
        fitted = self.refit.baselines if self.refit is not None else self.baselines
        meta = m.meta | {"model_family": f"baseline:{name}"}
        return BaselineModel(m.task, m.target, m.problem, m.score_column, fitted[name], m.encoding, m.extra, meta)

    @property
    def best_baseline(self) -> tuple[str, float]:
        """The baseline with the highest primary metric (NaN counts as lowest), and that metric."""
        name = max(self.baseline_metrics, key=lambda b: _nan_low(self.baseline_metrics[b][self.primary]))
        return name, self.baseline_metrics[name][self.primary]

    @property
    def beats_baseline(self) -> bool:
        """Whether the model's primary metric is above the best baseline's."""
        return self.model_metrics[self.primary] > self.best_baseline[1]


@dataclass
class Refit:
    """The evaluated configuration refitted on every labelled cutoff (:func:`refit_target`).

    Attributes
    ----------
    model : TaskModel
        The refit (``meta``: ``refit``, ``fitted_cutoffs``, ``labels_end``).
    baselines : dict
        The baselines refitted on the same rows, by name.
    info : dict
        ``refit_rows``, ``refit_cutoffs``, ``refit_trees`` and the rule that gave them.
    seconds : float
        How long the refit took.
    """

    model: TaskModel
    baselines: dict[str, Baseline] = field(repr=False)
    info: dict[str, Any]
    seconds: float = 0.0


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
    cfg: TaskConfig,
    target: Target,
    frames: Frames,
    override: dict[str, Any] | None = None,
    refit: bool = True,
    background: Executor | None = None,
    stop: threading.Event | None = None,
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
    refit : bool
        ``False``: leave the refit of ``model.refit`` to the caller (:func:`refit_target`, then
        :func:`attach_refit`).
    background : Executor, optional
        Fit the refit of ``model.refit`` here, started as soon as the LightGBM fit has its best
        iteration: it then fits while the calibration, the evaluation and the caller's logging run
        (``benchmarks/README.md``). The result's ``pending_refit`` is its future, for the caller to
        :func:`attach_refit`. The refit's baselines are fitted there first, while LightGBM fits
        (after the evaluated baselines, so that two threads share the cores, not three). An
        executor of one worker keeps these tasks in order.
    stop : threading.Event, optional
        With ``background``: set by a caller that no longer wants the refit (:func:`refit_target`).

    Returns
    -------
    TargetResult
        With row counts in ``info`` and ``fit_seconds`` / ``frames_seconds`` in ``seconds``.
    """
    tr, va, ev = (target.rows(f) for f in (frames.train, frames.validation, frames.evaluation))
    start = time.perf_counter()
    # the model's features (its encoding drops columns constant in training), known before the fit
    features = Encoding.learn(tr, model_columns(tr, cfg.task.label_columns)).features
    names = baseline_names(cfg)
    early = bool(cfg.model.refit and refit and background is not None)
    fitting: Future[RefitFit] | None = None
    with _beside(cfg.task.fit_baselines, target, names, features, tr) as baselines:
        # on the refit's worker, in order: the refit's baselines once the evaluated ones are fitted
        # (during the LightGBM fit), then the refit's LightGBM fit, then the refit put together
        rebased = (
            background.submit(_refit_baselines, baselines, cfg, target, names, features, frames, stop)
            if early
            else None
        )
        try:
            model, info = fit_target(cfg, target, tr, va, override)
        except BaseException:
            if rebased is not None:  # not started yet: dropped; waiting for the baselines: it stops then
                rebased.cancel()
                if stop is not None:
                    stop.set()
            raise
        fit_seconds = time.perf_counter() - start
        if rebased is not None:
            # every input of the refit's fits is known now; the model object is only read (its
            # encoding and extra model, set by fit_target), and the rest is joined in assemble_refit
            fitting = background.submit(
                fit_refit, cfg, target, frames, model, dict(info), len(tr), rebased, override, stop
            )
    fitted = baselines.result()
    if model.encoding.features != features:  # a programming error: the baselines saw other columns
        raise AssertionError(f"{cfg.name}: baselines fitted on other features than the model's")
    model.baselines = fitted  # registered with the model: `predict --baselines` scores every one
    if cfg.model.blend == "auto":
        primary = cfg.task.primary_metric(target)
        model.blend, blend_info = choose_blend(
            model.predict_score(va),
            fitted,
            va,
            va[target.label].to_numpy(),
            target.problem,
            lambda y, s: cfg.task.metrics(target, y, s)[primary],
        )
        info |= blend_info
    model.meta = {
        "evaluation_cutoff": str(cfg.cutoffs.evaluation),
        "config": cfg.name,
        "labels_end": str(cfg.labels_end(refit=False)),
    }
    result = evaluate_target(cfg, target, model, tr, va, ev, baselines=fitted)
    result.info = info | {"train_rows": len(tr), "validation_rows": len(va), "evaluation_rows": len(ev)}
    result.seconds = {"fit_seconds": fit_seconds, "frames_seconds": frames.seconds}
    if fitting is not None:  # put together after the fits, on the same worker: result is complete now
        result.pending_refit = background.submit(lambda: assemble_refit(result, fitting.result()))
    elif cfg.model.refit and refit:
        attach_refit(result, refit_target(cfg, target, result, frames, override))
    return result


def attach_refit(result: TargetResult, refit: Refit) -> None:
    """Record ``refit`` (from :func:`refit_target`) as the deployed model of ``result``."""
    result.refit = refit
    result.seconds["refit_seconds"] = refit.seconds


def refit_trees(rule: str, best_iteration: int, train_rows: int, refit_rows: int) -> int:
    """The refit's tree count: the best iteration, scaled by the row ratio (``scale``) or kept (``keep``)."""
    if rule == "keep" or train_rows <= 0:
        return max(int(best_iteration), 1)
    return max(round(best_iteration * refit_rows / train_rows), 1)


def refit_target(
    cfg: TaskConfig,
    target: Target,
    result: TargetResult,
    frames: Frames,
    override: dict[str, Any] | None = None,
    stop: threading.Event | None = None,
) -> Refit:
    """The evaluated model's configuration refitted on every labelled cutoff; rules in the module docstring.

    Parameters
    ----------
    cfg : TaskConfig
    target : Target
    result : TargetResult
        The evaluated target (its model's features, best iteration, calibrator, baselines).
    frames : Frames
        Training, validation and evaluation frames: stacked, they are the refit's rows.
    override : dict, optional
        The LightGBM params the evaluated model was fitted with over the config's.
    stop : threading.Event, optional
        Set by a caller that no longer wants the refit (it fits on another thread): LightGBM stops
        at its next tree with :class:`RefitStopped`.

    Returns
    -------
    Refit
    """
    fitted = fit_refit(
        cfg,
        target,
        frames,
        result.model,
        result.info,
        result.info["train_rows"],
        list(result.baselines),
        override,
        stop,
    )
    return assemble_refit(result, fitted)


def refit_rows(target: Target, frames: Frames) -> pd.DataFrame:
    """The refit's rows: the target's rows of the training, validation and evaluation frames, stacked."""
    return pd.concat([target.rows(f) for f in (frames.train, frames.validation, frames.evaluation)], ignore_index=True)


def _refit_baselines(
    after: Future[Any],
    cfg: TaskConfig,
    target: Target,
    names: list[str],
    features: list[str],
    frames: Frames,
    stop: threading.Event | None = None,
) -> tuple[pd.DataFrame, dict[str, Baseline]]:
    """The refit's rows (:func:`refit_rows`) and its baselines fitted on them, once ``after`` is done.

    ``after`` is the evaluated baselines' fit; :func:`fit_refit` then fits LightGBM on the same rows.
    Run on the refit's worker while the evaluated LightGBM fits: the baselines need neither its best
    iteration nor its calibration, and waiting for ``after`` keeps two threads, not three, on the
    cores, so neither fit is slowed. ``features`` are the evaluated model's, which the stacked rows
    keep (a column that varies in training varies in any superset of its rows).
    """
    after.result()
    if stop is not None and stop.is_set():
        raise RefitStopped("the refit was stopped")
    rows = refit_rows(target, frames)
    return rows, cfg.task.fit_baselines(target, names, features, rows)


@dataclass
class RefitFit:
    """The refit's fitted parts (:func:`fit_refit`), before :func:`assemble_refit` joins them to the evaluated model."""

    encoding: Encoding
    estimator: Any
    #: the extra model refitted on the same rows, or ``None`` (kept as evaluated)
    extra: Any
    baselines: dict[str, Baseline]
    info: dict[str, Any]
    #: what the refit's ``meta`` adds to the evaluated model's
    meta: dict[str, Any]
    started: float


def fit_refit(
    cfg: TaskConfig,
    target: Target,
    frames: Frames,
    evaluated: TaskModel,
    info: dict[str, Any],
    train_rows: int,
    baselines: list[str] | Future[tuple[pd.DataFrame, dict[str, Baseline]]],
    override: dict[str, Any] | None = None,
    stop: threading.Event | None = None,
) -> RefitFit:
    """The refit's fits: LightGBM (its baselines beside it) and the extra model, on every labelled cutoff.

    They need only what the evaluated fit knows as soon as it ends (its features, best iterations
    and extra model), not its calibration, blend or evaluation: :func:`train_target` can start them
    then, on another thread (``background``). :func:`assemble_refit` puts the refit together.

    Parameters
    ----------
    cfg, target, frames, override, stop
        As for :func:`refit_target`.
    evaluated : TaskModel
        The evaluated model; its ``encoding`` and ``extra`` are read, and nothing set later.
    info : dict
        The evaluated fit's info (``best_iteration``, ``timing_best_iteration``).
    train_rows : int
        Rows of the evaluated model's training frame (the ``scale`` rule's denominator).
    baselines : list of str, or Future
        The baselines to refit (beside LightGBM), or their refit on the refit's worker, ahead of
        this call (:func:`_refit_baselines`: a future of the rows and the baselines fitted on them).

    Returns
    -------
    RefitFit
    """
    start = time.perf_counter()
    if isinstance(baselines, list):
        rows, prefitted = refit_rows(target, frames), None
    else:  # done already on a worker of one thread, where they ran before this call
        rows, prefitted = baselines.result()
    enc = Encoding.learn(rows, evaluated.encoding.features)
    if enc.features != evaluated.encoding.features:  # a column constant on the stacked rows is constant in training too
        raise AssertionError(f"{cfg.name}: the refit's rows dropped features the evaluated model uses")
    X, y = enc.transform(rows), rows[target.label].to_numpy()
    rule = cfg.model.refit_trees
    trees = refit_trees(rule, info["best_iteration"], train_rows, len(rows))
    params = lgbm_params(cfg, target, override) | {"n_estimators": trees}
    est_cls = lgb.LGBMClassifier if target.problem == "binary" else lgb.LGBMRegressor
    with (
        _beside(cfg.task.fit_baselines, target, baselines, enc.features, rows)
        if prefitted is None
        else nullcontext() as refitting
    ):
        est = est_cls(**(DEFAULT_PARAMS | params)).fit(X, y, callbacks=[_stop_when(stop)] if stop else None)
    out: dict[str, Any] = {
        "refit_rows": len(rows),
        "refit_cutoffs": len(cfg.refit_cutoffs()),
        "refit_trees": trees,
        "refit_trees_rule": rule,
    }
    extra = None  # an extra model without a recorded best iteration is kept as evaluated
    if evaluated.extra is not None and "timing_best_iteration" in info:
        extra_trees = refit_trees(rule, info["timing_best_iteration"], train_rows, len(rows))
        # no validation rows are left: early stopping watches the training rows themselves, whose loss
        # keeps falling, so the extra model runs to the carried-over tree count
        extra, _ = cfg.task.fit_extra(
            target, enc, rows, rows, params | {"n_estimators": extra_trees}, cfg.model.early_stopping_rounds
        )
        out["refit_timing_trees"] = extra_trees
    meta = {
        "refit": True,
        "fitted_cutoffs": [str(d) for d in cfg.refit_cutoffs()],
        "labels_end": str(cfg.labels_end(refit=True)),
    }
    refitted = prefitted if prefitted is not None else refitting.result()
    return RefitFit(enc, est, extra, refitted, out, meta, start)


def assemble_refit(result: TargetResult, fitted: RefitFit) -> Refit:
    """The refit of :func:`fit_refit` with the evaluated model's calibrator and blend (module docstring)."""
    evaluated = result.model
    model = TaskModel(
        evaluated.task, result.target, result.problem, evaluated.score_column, fitted.encoding, fitted.estimator
    )
    model.calibrator = evaluated.calibrator  # kept: see the module docstring
    model.extra = fitted.extra if fitted.extra is not None else evaluated.extra
    model.meta = evaluated.meta | fitted.meta
    model.baselines = fitted.baselines  # the refitted baselines travel with the refit (`predict --baselines`)
    if evaluated.blend is not None:  # the weight chosen on validation, with the refitted baseline
        model.blend = Blend(fitted.baselines[evaluated.blend.name], evaluated.blend.weight)
    return Refit(model, fitted.baselines, fitted.info, time.perf_counter() - fitted.started)


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
