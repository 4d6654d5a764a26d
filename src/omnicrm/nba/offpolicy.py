"""Off-policy value of targeting policies on randomised history: IPW and doubly-robust estimates.

Each row is one randomised exposure: its logged arm ``A_i`` (an action, or the control) was drawn with
a known probability ``e_i`` (the arm's share in its campaign), and its reward ``R_i`` is the observed
outcome valued in money minus what the logged arm cost. A policy assigns every row an arm ``pi_i``.
Its value per row is estimated by

* **IPW** (Horvitz-Thompson): ``mean_i 1[A_i = pi_i] R_i / e_i``, unbiased with known propensities;
* **doubly robust** (AIPW, Dudik et al. 2011): ``mean_i m_i(pi_i) + 1[A_i = pi_i] (R_i - m_i(A_i)) / e_i``,
  where ``m_i(a)`` is a model of the reward under arm ``a`` (cross-fitted: never fitted on row ``i``).
  It stays unbiased when the model is wrong (the propensities are known) and has a smaller variance
  when the model is good.

The *incremental* value of a policy is its value minus the value of sending nothing, estimated on the
same rows, so the reward of the many customers who would have bought anyway cancels. Intervals are
percentile bootstrap intervals over customers: a customer exposed in several campaigns is resampled
with all their rows, because their rows are not independent. Every policy is resampled with the same
draws, so differences between policies get paired intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from omnicrm.errors import InputError

__all__ = ["Logged", "OffPolicyEstimate", "estimate", "row_scores"]


@dataclass(frozen=True)
class Logged:
    """Randomised history in the estimators' terms.

    Attributes
    ----------
    arm
        Logged arm of each row as a code: 0 is the control, ``1..n_actions`` the actions.
    propensity
        Probability with which the logged arm was drawn (known by design), one per row.
    reward
        Observed reward of each row under its logged arm.
    model
        ``(n_rows, n_arms)`` modelled reward of every arm (column 0: the control); ``None`` for IPW only.
    cluster
        The unit that is resampled together (the customer), one per row.
    """

    arm: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray
    model: np.ndarray | None
    cluster: np.ndarray

    def __post_init__(self) -> None:
        """Check lengths and propensities (a zero propensity makes IPW undefined)."""
        n = self.arm.size
        sizes = {"propensity": self.propensity.size, "reward": self.reward.size, "cluster": self.cluster.size}
        if self.model is not None:
            sizes["model rows"] = self.model.shape[0]
        bad = {k: v for k, v in sizes.items() if v != n}
        if bad:
            raise InputError(f"off-policy rows: {n} arms but {bad}")
        if not (np.all(self.propensity > 0) and np.all(self.propensity <= 1)):
            raise InputError("off-policy rows: every logged arm needs a propensity in (0, 1]")
        if not np.all(np.isfinite(self.reward)):
            raise InputError("off-policy rows: rewards must be finite")


def row_scores(logged: Logged, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row IPW and DR terms of the policy that picks arm code ``chosen[i]`` for row ``i``.

    Their means are the policy's estimated value per row; the DR terms are NaN without a reward model.
    """
    chosen = np.asarray(chosen, dtype=int)
    match = chosen == logged.arm
    weighted = np.where(match, logged.reward / logged.propensity, 0.0)
    if logged.model is None:
        return weighted, np.full(chosen.size, np.nan)
    rows = np.arange(chosen.size)
    modelled = logged.model[rows, chosen]
    correction = np.where(match, (logged.reward - logged.model[rows, logged.arm]) / logged.propensity, 0.0)
    return weighted, modelled + correction


@dataclass
class OffPolicyEstimate:
    """Incremental value per row of each policy, with bootstrap intervals.

    Attributes
    ----------
    values
        One row per (policy, estimator): ``policy``, ``estimator`` (``ipw``, ``dr``), ``value``,
        ``lo``, ``hi`` (the interval at ``level``).
    differences
        Paired differences of the ``reference`` policy against each other policy, same columns.
    level
        Coverage of the intervals.
    """

    values: pd.DataFrame
    differences: pd.DataFrame
    level: float


def _cluster_sums(codes: np.ndarray, n_clusters: int, terms: np.ndarray) -> np.ndarray:
    """Column sums of ``terms`` per cluster, ``(n_clusters, n_columns)``."""
    out = np.zeros((n_clusters, terms.shape[1]))
    np.add.at(out, codes, terms)
    return out


def estimate(
    logged: Logged,
    policies: dict[str, np.ndarray],
    baseline: str,
    reference: str | None = None,
    n_boot: int = 400,
    seed: int = 0,
    level: float = 0.95,
) -> OffPolicyEstimate:
    """Incremental value per row of every policy against ``baseline``, with bootstrap intervals.

    Parameters
    ----------
    logged
        The randomised rows.
    policies
        Name -> chosen arm code per row; must contain ``baseline`` (usually "no action").
    baseline
        The policy every value is measured against (its own incremental value is 0).
    reference
        Optional policy compared with every other one (paired difference and its interval).
    n_boot, seed, level
        Bootstrap resamples of customers, their seed, interval coverage.

    Returns
    -------
    OffPolicyEstimate
    """
    if baseline not in policies:
        raise InputError(f"off-policy estimate: baseline policy '{baseline}' is not among {list(policies)}")
    names = list(policies)
    n = logged.arm.size
    if n == 0:
        raise InputError("off-policy estimate: no rows")
    estimators = ["ipw", "dr"] if logged.model is not None else ["ipw"]
    base_ipw, base_dr = row_scores(logged, policies[baseline])
    cols, labels = [], []
    for name in names:
        ipw, dr = row_scores(logged, policies[name])
        cols.append(ipw - base_ipw)
        labels.append((name, "ipw"))
        if "dr" in estimators:
            cols.append(dr - base_dr)
            labels.append((name, "dr"))
    terms = np.column_stack(cols)
    codes, uniq = pd.factorize(pd.Series(logged.cluster), sort=False)
    sums = _cluster_sums(codes, len(uniq), terms)
    counts = np.bincount(codes, minlength=len(uniq)).astype(float)
    rng = np.random.default_rng(seed)
    # one multinomial draw of customers per resample; every policy sees the same draws (paired)
    weights = rng.multinomial(len(uniq), np.full(len(uniq), 1.0 / len(uniq)), size=n_boot).astype(float)
    boot = (weights @ sums) / (weights @ counts)[:, None]
    point = terms.mean(axis=0)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha], axis=0)
    values = pd.DataFrame(
        {
            "policy": [p for p, _ in labels],
            "estimator": [e for _, e in labels],
            "value": point,
            "lo": lo,
            "hi": hi,
        }
    )
    diffs = []
    if reference is not None:
        if reference not in policies:
            raise InputError(f"off-policy estimate: reference policy '{reference}' is not among {names}")
        index = {lab: j for j, lab in enumerate(labels)}
        for name in names:
            if name == reference:
                continue
            for est in estimators:
                a, b = index[(reference, est)], index[(name, est)]
                d = boot[:, a] - boot[:, b]
                diffs.append(
                    {
                        "policy": name,
                        "estimator": est,
                        "value": float(point[a] - point[b]),
                        "lo": float(np.quantile(d, alpha)),
                        "hi": float(np.quantile(d, 1.0 - alpha)),
                    }
                )
    differences = pd.DataFrame(diffs, columns=["policy", "estimator", "value", "lo", "hi"])
    return OffPolicyEstimate(values, differences, level)
