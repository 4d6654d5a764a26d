"""Honest evaluation of uplift learners: out-of-fold effects over several split seeds.

Uplift signals are weak and one split can flatter or bury a learner, so every figure is computed for
several seeds and reported as mean and standard deviation. For each seed the units are split into
``folds`` groups (by unit, so a customer in several campaigns is never on both sides); a learner
fitted on the other folds predicts each fold (cross-fitting), so every row gets one held-out effect
and all rows are used for evaluation. Metrics per action use that action's rows and the controls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from omnicrm.uplift import metrics as M
from omnicrm.uplift.learners import UpliftLearner
from omnicrm.uplift.policy import evaluate_policies, values_frame, verdict

LearnerFactory = Callable[[int], UpliftLearner]


def unit_folds(units: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold of each row: units are shuffled by ``seed`` and dealt round-robin to ``folds`` folds."""
    codes, uniq = pd.factorize(pd.Series(units), sort=True)
    rng = np.random.default_rng(seed)
    fold_of_unit = rng.permutation(len(uniq)) % folds
    return fold_of_unit[codes]


def cross_fit_effects(
    make: LearnerFactory, X: pd.DataFrame, arm: np.ndarray, y: np.ndarray, units: np.ndarray, folds: int, seed: int
) -> tuple[np.ndarray, list]:
    """Held-out effects of every row (``n_rows x n_actions``) from ``folds``-fold cross-fitting."""
    fold = unit_folds(units, folds, seed)
    effect: np.ndarray | None = None
    actions: list = []
    for k in range(folds):
        train, test = fold != k, fold == k
        learner = make(seed * 1000 + k).fit(X[train], arm[train], y[train])
        pred = learner.predict_effect(X[test])
        if effect is None:
            actions = list(learner.actions_)
            effect = np.full((len(X), len(actions)), np.nan)
        elif list(learner.actions_) != actions:
            raise ValueError("a training fold lacks an action; use fewer folds")
        effect[test] = pred
    assert effect is not None
    return effect, actions


@dataclass
class Evaluation:
    """Per-seed figures and their summaries for one outcome."""

    outcome: str
    metrics: pd.DataFrame  # learner, action, seed, metric, value
    policy: pd.DataFrame  # learner, seed, policy, ipw, se, direct, treated_share
    comparison: pd.DataFrame  # learner, seed, best_constant, gain, gain_se, ...
    curves: dict = field(default_factory=dict)  # (learner, action) -> (x share, qini per row) of seed 0
    effects: dict = field(default_factory=dict)  # learner -> held-out effects of the first seed

    def summary(self) -> pd.DataFrame:
        """Mean and standard deviation over seeds, one row per (learner, action, metric)."""
        g = self.metrics.groupby(["learner", "action", "metric"], sort=False)["value"]
        return g.agg(mean="mean", std="std", seeds="count").reset_index()

    def policy_summary(self) -> pd.DataFrame:
        g = self.policy.groupby(["learner", "policy"], sort=False)
        return g.agg(
            value=("ipw", "mean"),
            value_std=("ipw", "std"),
            se=("se", "mean"),
            direct=("direct", "mean"),
            treated_share=("treated_share", "mean"),
        ).reset_index()

    def verdicts(self) -> dict[str, str]:
        """Per learner: does its best-action policy beat the best constant policy (mean over seeds)?"""
        out = {}
        for learner, part in self.comparison.groupby("learner", sort=False):
            best = part["best_constant"].mode().iloc[0]
            out[str(learner)] = verdict(float(part["gain"].mean()), float(part["gain_se"].mean()), best)
        return out


def _truth_figures(estimate: np.ndarray, true: np.ndarray, by: np.ndarray | None) -> dict[str, float]:
    """Spearman correlation of estimated and true effects, overall and per group (rows with truth only)."""
    known = ~np.isnan(true)
    out = {"spearman_truth": float(stats.spearmanr(estimate[known], true[known]).statistic)}
    if by is not None:
        for g in sorted(pd.unique(by[known]).tolist(), key=str):
            m = known & (by == g)
            out[f"spearman_truth.{g}"] = float(stats.spearmanr(estimate[m], true[m]).statistic)
    return out


def evaluate(
    learners: dict[str, LearnerFactory],
    X: pd.DataFrame,
    arm: np.ndarray,
    y: np.ndarray,
    units: np.ndarray,
    control: object,
    outcome: str,
    seeds: list[int],
    folds: int = 2,
    top_k: float = 0.3,
    truth: pd.DataFrame | None = None,
    truth_by: np.ndarray | None = None,
    progress: Callable[[float], None] | None = None,
) -> Evaluation:
    """Cross-fitted effects of every learner for every seed, scored against random targeting.

    Parameters
    ----------
    truth
        Optional true effects aligned with the rows, one column per action (synthetic data): adds the
        Spearman correlation of estimated and true effects per action (and per ``truth_by`` group).
    """
    arm = np.asarray(arm, dtype=object)
    propensity = {a: float((arm == a).mean()) for a in pd.unique(arm)}
    rows, prow, crow = [], [], []
    curves, first_effects = {}, {}
    steps, done = len(learners) * len(seeds), 0
    for name, make in learners.items():
        for seed in seeds:
            effect, actions = cross_fit_effects(make, X, arm, y, units, folds, seed)
            if seed == seeds[0]:
                first_effects[name] = (effect, actions)
            for j, a in enumerate(actions):
                sel = (arm == a) | (arm == control)
                yy, tt, ss = y[sel], (arm[sel] == a), effect[sel, j]
                figures = {
                    "qini": M.qini_coefficient(yy, ss, tt),
                    "qini_area": M.qini_area(yy, ss, tt),
                    "uplift_auc": M.uplift_auc(yy, ss, tt),
                    f"uplift_at_{top_k:.0%}": M.uplift_at_k(yy, ss, tt, top_k),
                    "ate": M.average_effect(yy, tt),
                    "mean_predicted": float(np.mean(effect[:, j])),
                }
                if truth is not None and a in truth.columns:
                    figures.update(_truth_figures(effect[:, j], truth[a].to_numpy(float), truth_by))
                rows += [
                    {"learner": name, "action": a, "seed": seed, "metric": k, "value": v} for k, v in figures.items()
                ]
                if seed == seeds[0]:
                    x, q = M.qini_curve(yy, ss, tt)
                    curves[(name, a)] = (x / x[-1], q / x[-1])
            values, comp = evaluate_policies(y, arm, effect, actions, control, propensity, top_k)
            pv = values_frame(values)
            pv.insert(0, "seed", seed)
            pv.insert(0, "learner", name)
            prow.append(pv)
            crow.append({"learner": name, "seed": seed, **comp})
            done += 1
            if progress is not None:
                progress(done / steps)
    return Evaluation(
        outcome=outcome,
        metrics=pd.DataFrame(rows),
        policy=pd.concat(prow, ignore_index=True),
        comparison=pd.DataFrame(crow),
        curves=curves,
        effects=first_effects,
    )


def qini_by_action(
    effect: np.ndarray, actions: list, arm: np.ndarray, y: np.ndarray, control: object
) -> dict[str, float]:
    """Qini coefficient of each action's predicted effects on its rows and the controls.

    Parameters
    ----------
    effect
        Predicted effects, ``(rows, actions)``, columns in ``actions``.
    actions
        The actions of the effect columns.
    arm, y
        Each row's arm label and outcome.
    control
        The control arm's label.

    Returns
    -------
    dict
        Action -> Qini coefficient, for the actions that occur in ``arm`` next to controls.
    """
    arm = np.asarray(arm, dtype=object)
    y = np.asarray(y, dtype=float)
    out = {}
    for j, a in enumerate(actions):
        sel = (arm == a) | (arm == control)
        treated = arm[sel] == a
        if treated.any() and (~treated).any():
            out[str(a)] = float(M.qini_coefficient(y[sel], effect[sel, j], treated))
    return out
