"""What a reviewer reads in the MLflow UI about a task's run and registered model, as markdown text.

Pure text from a task config and a trained target: the run's name (what differs between runs of
one task: dataset, tuned or not, the training cutoffs, the evaluation cutoff), the run's
description (the model against every baseline on the evaluation cutoff, and the verdict the
promotion gate applies), the refit's run name and version description (the cutoffs it was
refitted on and the evaluation run whose figures justify it), and the descriptions of the
registered model (what it predicts, on which horizon and population) and of each version (how it
was trained and how it compares). The
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


def _span(cfg: TaskConfig, refit: bool = False) -> str:
    cutoffs = cfg.refit_cutoffs() if refit else cfg.train_cutoffs()
    word = "refit" if refit else "train"
    if len(cutoffs) == 1:
        return f"{word} {cutoffs[0]}"
    return f"{word} {cutoffs[0]}…{cutoffs[-1]} ×{len(cutoffs)}"


def run_name(cfg: TaskConfig, target: str, tuned: bool = False, refit: bool = False) -> str:
    """``churn · synthetic · lightgbm tuned · train 2023-07-01…2024-04-01 ×10 · eval 2024-10-01``.

    Everything that tells two runs of one task apart in the runs table: the dataset, the model
    family and whether its parameters came from a tuning study, the training cutoffs, the
    evaluation cutoff. The refit's run reads ``… · lightgbm refit · refit 2023-07-01…2024-10-01 ×12
    · eval 2024-10-01``: the cutoffs it was fitted on, and the cutoff its evaluation run judged.
    """
    family = f"{cfg.model.family} tuned" if tuned else cfg.model.family
    family += " refit" if refit else ""
    span = _span(cfg, refit)
    return f"{_label(cfg, target)} · {cfg.dataset.name} · {family} · {span} · eval {cfg.cutoffs.evaluation}"


def _validation(cfg: TaskConfig) -> str:
    """Where early stopping and calibration looked: the validation cutoff or held-out customers."""
    c = cfg.cutoffs
    if c.holdout:
        return f"early stopping on {c.holdout_share:.0%} of the training cutoffs' customers held out"
    return f"early stopping on {c.validation}"


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
        f"{_validation(cfg)}, judged on {cfg.cutoffs.evaluation}."
        + (
            f" The registered version is the refit on every labelled cutoff "
            f"({_span(cfg, True).removeprefix('refit ')}; run `{r.refit_run_id}`): these are its "
            "evaluation-phase figures."
            if r.refit is not None and r.refit_run_id
            else ""
        ),
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
        "training run (alias `candidate`; refit on every labelled cutoff unless `model.refit: false`) and "
        "its best baseline (alias `baseline`); `omnicrm promote` sets `champion` to the better of the two "
        "on the evaluation cutoff, by the figures of the evaluation run."
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
    if r.refit is None:
        return f"{what}, {_span(cfg)}, evaluated on {cfg.cutoffs.evaluation}: {r.primary} {_fmt(mine)} against {other}."
    trees = "" if baseline else f", {r.refit.info['refit_trees']} trees ({_trees_rule(r)})"
    return (
        f"{what} refit on cutoffs {_span(cfg, True).removeprefix('refit ')} (training, validation and evaluation "
        f"stacked, labels up to {cfg.labels_end(refit=True)}){trees}; evaluated as run `{r.run_id}`: fitted on "
        f"{_span(cfg).removeprefix('train ')} and judged on {cfg.cutoffs.evaluation}, {r.primary} {_fmt(mine)} "
        f"against {other}. `omnicrm promote` decides on those evaluation-phase figures."
    )


def _trees_rule(r: TargetResult) -> str:
    info = r.refit.info if r.refit is not None else {}
    if info.get("refit_trees_rule") == "keep":
        return f"the best iteration {r.info['best_iteration']} kept"
    return (
        f"best iteration {r.info['best_iteration']} × {info.get('refit_rows')} refit rows / "
        f"{r.info['train_rows']} training rows"
    )
