"""``omnicrm train CONFIG``: fit each target of a task, evaluate it next to its baselines, log and register.

Flow per target: training frame (several stacked cutoffs) -> LightGBM with early stopping on the
validation cutoff -> calibration kept only where it helps out of sample -> baselines fitted on the
same training frame -> every score evaluated on the *evaluation* cutoff (later than training and
validation, label windows included: the config guard) -> one MLflow run with config, data
fingerprint, git commit, cutoffs, metrics side by side, plots, SHAP summary, importance, and the
model registered as ``omnicrm-<task>[-<target>]`` with alias ``candidate``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omnicrm.errors import InputError
from omnicrm.progress import Progress, silent
from omnicrm.tasks import baselines as bl
from omnicrm.tasks import metrics as mt
from omnicrm.tasks.config import TaskConfig, load_task_config
from omnicrm.tasks.frames import build_frame, model_columns, store_fingerprint
from omnicrm.tasks.model import Encoding, HazardModel, TaskModel, choose_calibration, fit_lgbm

#: the metric a target is judged by (higher is better), per kind of target
PRIMARY = {"binary": "roc_auc", "regression": "normalised_gini"}


@dataclass(frozen=True)
class Target:
    """One model of a task: its label column, kind and (propensity) consent filter."""

    name: str
    label: str
    kind: str  # binary | regression
    consent: str | None = None


def targets_of(cfg: TaskConfig, frame: pd.DataFrame) -> list[Target]:
    kind = cfg.task.kind
    if kind == "churn":
        return [Target("churn", "y_churn", "binary")]
    if kind == "next_purchase":
        return [Target("next_purchase", "y_purchase", "binary")]
    if kind == "clv":
        out = [Target("spend", "y_spend", "regression")]
        if "y_margin" in frame.columns:
            out.append(Target("margin", "y_margin", "regression"))
        return out
    return [Target(t.name, f"y_{t.name}", "binary", t.consent) for t in cfg.task.targets]


def label_column(task: str, target: str) -> str:
    """The frame column holding a target's label (see ``frames._with_labels``)."""
    return {"churn": "y_churn", "next_purchase": "y_purchase"}.get(task, f"y_{target}")


def registered_name(cfg: TaskConfig, target: Target) -> str:
    """``omnicrm-churn``, ``omnicrm-clv`` (spend) / ``omnicrm-clv-margin``, ``omnicrm-propensity-<t>``."""
    if cfg.task.kind in ("churn", "next_purchase") or (cfg.task.kind == "clv" and target.name == "spend"):
        return cfg.registered_name()
    return cfg.registered_name(target.name)


@dataclass
class Frames:
    train: pd.DataFrame
    validation: pd.DataFrame
    evaluation: pd.DataFrame
    fingerprint: str
    seconds: float


def load_frames(cfg: TaskConfig, progress: Progress = silent) -> Frames:
    from omnicrm.store import open_store

    start = time.perf_counter()
    con = open_store(cfg.dataset.store, deterministic=True)
    try:
        progress(f"{cfg.name}: training frame", 0.05)
        tr = build_frame(con, cfg, cfg.train_cutoffs(), what="training")
        progress(f"{cfg.name}: validation and evaluation frames", 0.25)
        va = build_frame(con, cfg, [cfg.cutoffs.validation], what="validation")
        ev = build_frame(con, cfg, [cfg.cutoffs.evaluation], what="evaluation")
        fp = store_fingerprint(con)
    finally:
        con.close()
    return Frames(tr, va, ev, fp, time.perf_counter() - start)


def target_rows(frame: pd.DataFrame, target: Target) -> pd.DataFrame:
    if target.consent:
        return frame[frame[f"consent_{target.consent}"].fillna(False).astype(bool)].reset_index(drop=True)
    return frame


def lgbm_params(cfg: TaskConfig, target: Target, override: dict[str, Any] | None = None) -> dict[str, Any]:
    params = dict(cfg.model.params) | {"random_state": cfg.model.seed}
    if target.kind == "regression":
        if cfg.task.clv_objective == "tweedie":
            params |= {"objective": "tweedie", "tweedie_variance_power": cfg.task.tweedie_variance_power}
        else:
            params |= {"objective": "regression"}
    return params | (override or {})


def fit_target(
    cfg: TaskConfig,
    target: Target,
    tr: pd.DataFrame,
    va: pd.DataFrame,
    override: dict[str, Any] | None = None,
    callbacks: list | None = None,
) -> tuple[TaskModel, dict[str, Any]]:
    """Fit the LightGBM model of one target (early stopping and calibration on validation only)."""
    features = model_columns(tr)
    enc = Encoding.learn(tr, features)
    X_tr, X_va = enc.transform(tr), enc.transform(va)
    y_tr, y_va = tr[target.label].to_numpy(), va[target.label].to_numpy()
    if target.kind == "binary" and len(np.unique(y_tr)) < 2:
        raise InputError(f"{cfg.name}: target {target.name!r} has one class only in the training frame")
    params = lgbm_params(cfg, target, override)
    est = fit_lgbm(target.kind, X_tr, y_tr, X_va, y_va, params, cfg.model.early_stopping_rounds, callbacks)
    info: dict[str, Any] = {"best_iteration": int(est.best_iteration_ or est.n_estimators), "features": len(features)}
    model = TaskModel(cfg.task.kind, target.name, target.kind, enc, est)
    if target.kind == "binary":
        p_va = est.predict_proba(X_va)[:, 1]
        model.calibrator, cal = choose_calibration(p_va, y_va, cfg.model.calibration, cfg.model.seed)
        info |= cal
    if cfg.task.kind == "next_purchase":
        model.timing, tinfo = fit_timing(cfg, enc, tr, va, params)
        info |= tinfo
    return model, info


def fit_timing(cfg: TaskConfig, enc: Encoding, tr: pd.DataFrame, va: pd.DataFrame, params: dict[str, Any]):  # noqa: ANN201
    """The discrete-time hazard model behind ``expected_days`` (see :mod:`omnicrm.tasks.model`)."""
    cap = float(cfg.task.timing_max_days or cfg.task.horizon_days)
    edges = [0.0, *[float(b) for b in cfg.task.timing_bins if b < cap], cap]
    hz = HazardModel(edges)
    Xp_tr, yp_tr = hz.person_period(enc.transform(tr), tr["duration"].to_numpy(), tr["event"].to_numpy(), edges)
    Xp_va, yp_va = hz.person_period(enc.transform(va), va["duration"].to_numpy(), va["event"].to_numpy(), edges)
    hz.estimator = fit_lgbm("binary", Xp_tr, yp_tr, Xp_va, yp_va, params, cfg.model.early_stopping_rounds)
    return hz, {"timing_person_period_rows": len(Xp_tr), "timing_best_iteration": int(hz.estimator.best_iteration_)}


@dataclass
class TargetResult:
    task: str
    target: str
    kind: str
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
    timing_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    #: wall-clock durations (``fit_seconds``, ``frames_seconds``): logged as metrics, never as params
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def best_baseline(self) -> tuple[str, float]:
        name = max(self.baseline_metrics, key=lambda b: _nan_low(self.baseline_metrics[b][self.primary]))
        return name, self.baseline_metrics[name][self.primary]

    @property
    def beats_baseline(self) -> bool:
        return self.model_metrics[self.primary] > self.best_baseline[1]


def _nan_low(v: float) -> float:
    return -np.inf if v is None or np.isnan(v) else v


def score_metrics(kind: str, y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    return mt.binary_metrics(y, s) if kind == "binary" else mt.clv_metrics(y, s)


def evaluate_target(
    cfg: TaskConfig, target: Target, model: TaskModel, tr: pd.DataFrame, va: pd.DataFrame, ev: pd.DataFrame
) -> TargetResult:
    """Model and baselines on the evaluation cutoff (and the model on validation, for reference)."""
    y_ev = ev[target.label].to_numpy()
    scores = {"model": model.predict_score(ev)}
    names = cfg.baselines or bl.DEFAULTS[cfg.task.kind]
    features = model.encoding.features
    for name in names:
        if name == "btyd" and "btyd_clv" not in ev.columns:
            continue
        b = bl.Baseline(name, features, horizon_days=cfg.task.horizon_days)
        b.fit(tr, tr[target.label].to_numpy(), target.kind)
        pred = b.predict(ev, target.kind)
        if target.name == "margin" and name in ("run_rate", "btyd"):
            # spend-based heuristics: turn spend into margin with the training frame's margin rate
            pred = pred * tr["y_margin"].sum() / max(tr["y_spend"].sum(), 1e-12)
        scores[f"baseline_{name}"] = pred
    base = {k.removeprefix("baseline_"): score_metrics(target.kind, y_ev, v) for k, v in scores.items() if k != "model"}
    result = TargetResult(
        task=cfg.task.kind,
        target=target.name,
        kind=target.kind,
        registered_name=registered_name(cfg, target),
        primary=PRIMARY[target.kind],
        model_metrics=score_metrics(target.kind, y_ev, scores["model"]),
        baseline_metrics=base,
        validation_metrics=score_metrics(target.kind, va[target.label].to_numpy(), model.predict_score(va)),
        info={},
        model=model,
        scores=scores,
    )
    if model.timing is not None:
        pred = model.predict_frame(ev)
        cap = model.timing.edges[-1]
        dur, event = ev["duration"].to_numpy(), ev["event"].to_numpy()
        m = mt.timing_metrics(dur, event, pred["expected_days"].to_numpy())
        # MAE on observed cases compares like with like: E[T | T < cap] against observed times
        m["mae_observed"] = mt.timing_metrics(dur, event, pred["expected_days_if_purchase"].to_numpy())["mae_observed"]
        g = bl.gap_days(ev, cap)
        result.timing_metrics = {"model": m, "baseline_gap": mt.timing_metrics(dur, event, g)}
    return result


def train(
    config: str | Path | TaskConfig,
    progress: Progress = silent,
    override: dict[str, Any] | None = None,
    register: bool = True,
    frames: Frames | None = None,
    run_tags: dict[str, str] | None = None,
    only: str | None = None,
) -> list[TargetResult]:
    """Train, evaluate, log and register every target of a task config; see the module docstring."""
    cfg = config if isinstance(config, TaskConfig) else load_task_config(config)
    frames = frames or load_frames(cfg, progress)
    results = []
    targets = [t for t in targets_of(cfg, frames.train) if only is None or t.name == only]
    for i, target in enumerate(targets):
        progress(f"{cfg.name}: fitting {target.name}", 0.3 + 0.6 * i / len(targets))
        tr, va, ev = (target_rows(f, target) for f in (frames.train, frames.validation, frames.evaluation))
        start = time.perf_counter()
        model, info = fit_target(cfg, target, tr, va, override)
        fit_seconds = time.perf_counter() - start
        model.meta = {"evaluation_cutoff": str(cfg.cutoffs.evaluation), "config": cfg.name}
        result = evaluate_target(cfg, target, model, tr, va, ev)
        result.info = info | {"train_rows": len(tr), "validation_rows": len(va), "evaluation_rows": len(ev)}
        result.seconds = {"fit_seconds": fit_seconds, "frames_seconds": frames.seconds}
        if register:
            progress(f"{cfg.name}: logging {target.name} to MLflow", 0.3 + 0.6 * (i + 0.8) / len(targets))
            from omnicrm.tasks.tracked import log_target

            log_target(cfg, result, frames, ev, run_tags or {})
        results.append(result)
    progress(f"{cfg.name}: done", 1.0)
    return results


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
        if r.timing_metrics:
            rows.append(
                {
                    "task": r.task,
                    "target": "expected_days",
                    "metric": "concordance",
                    "model": r.timing_metrics["model"]["concordance"],
                    "best_baseline": "gap",
                    "baseline": r.timing_metrics["baseline_gap"]["concordance"],
                    "version": r.version,
                }
            )
    return pd.DataFrame(rows)


def evaluation_cutoff(results: list[TargetResult]) -> date | None:
    return date.fromisoformat(results[0].model.meta["evaluation_cutoff"]) if results else None
