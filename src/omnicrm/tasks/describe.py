"""What a reviewer reads in the MLflow UI about a task's run and registered model, as markdown text.

Pure text from a task config and a trained target: the run's name (what differs between runs of
one task: dataset, tuned or not, the training cutoffs, the evaluation cutoff), the run's
description (the model against every baseline on the evaluation cutoff, and the verdict the
promotion gate applies), and the descriptions of the registered model (what it predicts, on which
horizon and population) and of each version (how it was trained and how it compares). The
wiring (:mod:`omnicrm.pipeline.task_tracking`, :mod:`omnicrm.pipeline.promote`) sets them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from omnicrm.tasks.base import Target
    from omnicrm.tasks.config import TaskConfig
    from omnicrm.tasks.train import TargetResult

__all__ = ["model_description", "run_description", "run_name", "version_description"]


def _label(cfg: TaskConfig, target: str) -> str:
    return cfg.task.kind if target == cfg.task.kind else f"{cfg.task.kind}[{target}]"


def _span(cfg: TaskConfig) -> str:
    cutoffs = cfg.train_cutoffs()
    if len(cutoffs) == 1:
        return f"train {cutoffs[0]}"
    return f"train {cutoffs[0]}…{cutoffs[-1]} ×{len(cutoffs)}"


def run_name(cfg: TaskConfig, target: str, tuned: bool = False) -> str:
    """``churn · synthetic · lightgbm tuned · train 2023-07-01…2024-04-01 ×10 · eval 2024-10-01``.

    Everything that tells two runs of one task apart in the runs table: the dataset, the model
    family and whether its parameters came from a tuning study, the training cutoffs, the
    evaluation cutoff.
    """
    family = f"{cfg.model.family} tuned" if tuned else cfg.model.family
    return f"{_label(cfg, target)} · {cfg.dataset.name} · {family} · {_span(cfg)} · eval {cfg.cutoffs.evaluation}"


def _fmt(v: float | None) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def verdict(r: TargetResult) -> str:
    """One sentence: does the model beat its best baseline on the primary metric, and what the gate ships."""
    best, value = r.best_baseline
    model = r.model_metrics[r.primary]
    diff = model - value
    if r.beats_baseline:
        return (
            f"The model beats its best baseline ({best}) on {r.primary}: {_fmt(model)} against {_fmt(value)} "
            f"({diff:+.4f}). `omnicrm promote` ships the model."
        )
    return (
        f"The model does **not** beat its best baseline ({best}) on {r.primary}: {_fmt(model)} against "
        f"{_fmt(value)} ({diff:+.4f}). `omnicrm promote` ships the baseline (registered beside it with "
        "alias `baseline`) unless forced."
    )


def run_description(cfg: TaskConfig, r: TargetResult, tuned: bool = False) -> str:
    """The run's markdown note: what was trained, the model against every baseline, the verdict."""
    metrics = list(r.model_metrics)
    head = "| score | " + " | ".join(metrics) + " |"
    rule = "|---|" + "---:|" * len(metrics)
    rows = ["| **model** | " + " | ".join(_fmt(r.model_metrics[m]) for m in metrics) + " |"]
    for name, values in r.baseline_metrics.items():
        rows.append(f"| baseline `{name}` | " + " | ".join(_fmt(values.get(m)) for m in metrics) + " |")
    pop = cfg.task.population
    lines = [
        verdict(r),  # first: the UI shows the description's first lines and folds the rest
        "",
        f"**{_label(cfg, r.target)}** on **{cfg.dataset.name}**: {cfg.model.family}"
        + (" with parameters from the tuning study" if tuned else "")
        + f", trained on {len(cfg.train_cutoffs())} cutoff(s) ({_span(cfg).removeprefix('train ')}), "
        f"early stopping on {cfg.cutoffs.validation}, judged on {cfg.cutoffs.evaluation}.",
        "",
        f"Population at each cutoff: customers with at least {pop.min_purchases} purchase(s) in the "
        f"{pop.active_days} days before it; label window {cfg.task.horizon_days} days.",
        "",
        f"Evaluation cutoff {cfg.cutoffs.evaluation} (primary metric: {r.primary}):",
        "",
        head,
        rule,
        *rows,
    ]
    return "\n".join(lines)


def model_description(cfg: TaskConfig, target: Target) -> str:
    """The registered model's description: what it predicts, on which horizon and population."""
    pop = cfg.task.population
    consent = f", with {pop.consent} consent" if pop.consent else ""
    return (
        f"{_label(cfg, target.name)} of dataset {cfg.dataset.name}: predicts `{target.score_column}` "
        f"(label `{target.label}`) over the {cfg.task.horizon_days} days after the scoring date, for "
        f"customers with at least {pop.min_purchases} purchase(s) in the {pop.active_days} days before it"
        f"{consent}. Features read only events before the scoring date. Versions: the model of each "
        "training run (alias `candidate`) and its best baseline (alias `baseline`); `omnicrm promote` "
        "sets `champion` to the better of the two on the evaluation cutoff."
    )


def version_description(cfg: TaskConfig, r: TargetResult, baseline: str | None = None) -> str:
    """A version's description: how it was trained, its primary metric, and how it compares.

    ``baseline`` names the baseline this version *is* (its best-baseline version); ``None`` for the model.
    """
    best, value = r.best_baseline
    model = r.model_metrics[r.primary]
    what = f"baseline `{baseline}`" if baseline else cfg.model.family
    mine = value if baseline else model
    other = f"the model ({cfg.model.family}) {_fmt(model)}" if baseline else f"best baseline `{best}` {_fmt(value)}"
    return f"{what}, {_span(cfg)}, evaluated on {cfg.cutoffs.evaluation}: {r.primary} {_fmt(mine)} against {other}."
