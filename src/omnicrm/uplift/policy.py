"""Policy value on held-out randomised data: what would targeting by the estimated effects earn?

A policy maps each customer to one arm (an action or the control). On randomised data the value of
any policy - the expected outcome per customer if we followed it - is estimated without a model by
inverse-propensity weighting over the rows whose observed arm agrees with the policy (Horvitz &
Thompson 1952; here the self-normalised, Hajek form, which has a smaller variance):

    V(pi) = sum_i w_i y_i / sum_i w_i,   w_i = 1[T_i = pi(x_i)] / e(T_i)

with the arm shares ``e`` known by design. The direct (model-based) estimate is the control mean plus
the mean estimated effect of the chosen actions. A personalised policy is compared with the best
constant policy (everyone gets the same arm, including no action) by the paired difference of their
IPW scores and its standard error; when the difference is not clearly positive the output says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

Z95 = 1.959963984540054


@dataclass(frozen=True)
class PolicyValue:
    """Value of one policy: IPW estimate and its standard error, direct estimate, share treated."""

    policy: str
    ipw: float
    se: float
    direct: float
    treated_share: float


def _weights(t: np.ndarray, chosen: np.ndarray, propensity: dict) -> np.ndarray:
    e = pd.Series(t).map(propensity).to_numpy(float)
    return (t == chosen) / e


def ipw_value(y: np.ndarray, t: np.ndarray, chosen: np.ndarray, propensity: dict) -> tuple[float, np.ndarray]:
    """Hajek estimate of the policy value and the per-row influence values (for standard errors)."""
    w = _weights(np.asarray(t, dtype=object), np.asarray(chosen, dtype=object), propensity)
    if w.sum() == 0:
        return float("nan"), np.full(y.size, np.nan)
    value = float(np.sum(w * y) / np.sum(w))
    # linearisation of the ratio estimator: w (y - V) / mean(w)
    return value, w * (y - value) / w.mean()


def policies(effect: np.ndarray, actions: list, control: object, top_k: float) -> dict[str, np.ndarray]:
    """The candidate policies: no action, each action for all, each action for its top k, best action."""
    n = effect.shape[0]
    out: dict[str, np.ndarray] = {"no action": np.full(n, control, dtype=object)}
    for a in actions:
        out[f"all: {a}"] = np.full(n, a, dtype=object)
    n_top = int(round(top_k * n))
    for j, a in enumerate(actions):
        chosen = np.full(n, control, dtype=object)
        chosen[np.argsort(-effect[:, j], kind="stable")[:n_top]] = a
        out[f"top {top_k:.0%}: {a}"] = chosen
    best = np.asarray(actions, dtype=object)[np.argmax(effect, axis=1)]
    out["best action (effect > 0)"] = np.where(effect.max(axis=1) > 0, best, control)
    return out


def evaluate_policies(
    y: np.ndarray,
    t: np.ndarray,
    effect: np.ndarray,
    actions: list,
    control: object,
    propensity: dict,
    top_k: float = 0.3,
) -> tuple[list[PolicyValue], dict[str, float]]:
    """Value of every candidate policy, and the personalised-vs-best-constant comparison.

    Returns
    -------
    values
        One :class:`PolicyValue` per policy.
    comparison
        ``best_constant_ipw``, ``personalised_ipw`` (the best-action policy), ``gain`` (their difference)
        and ``gain_se`` (paired standard error).
    """
    y = np.asarray(y, float)
    t = np.asarray(t, dtype=object)
    ctrl_mean = float(y[t == control].mean())
    values, influence = [], {}
    for name, chosen in policies(effect, actions, control, top_k).items():
        v, infl = ipw_value(y, t, chosen, propensity)
        influence[name] = infl
        col = pd.Series(chosen).map({a: j for j, a in enumerate(actions)}).fillna(-1).to_numpy(int)
        picked = np.where(col >= 0, effect[np.arange(y.size), np.maximum(col, 0)], 0.0)
        values.append(
            PolicyValue(
                policy=name,
                ipw=v,
                se=float(np.std(infl, ddof=1) / np.sqrt(y.size)),
                direct=ctrl_mean + float(picked.mean()),
                treated_share=float((chosen != control).mean()),
            )
        )
    constants = [p for p in values if p.policy == "no action" or p.policy.startswith("all: ")]
    best_const = max(constants, key=lambda p: p.ipw)
    pers = next(p for p in values if p.policy.startswith("best action"))
    diff = influence[pers.policy] - influence[best_const.policy]
    comparison = {
        "best_constant": best_const.policy,
        "best_constant_ipw": best_const.ipw,
        "personalised_ipw": pers.ipw,
        "gain": pers.ipw - best_const.ipw,
        "gain_se": float(np.std(diff, ddof=1) / np.sqrt(y.size)),
    }
    return values, comparison


def verdict(gain: float, gain_se: float, best_constant: str) -> str:
    """Plain words: does personalisation beat the best constant policy beyond its uncertainty?"""
    lo, hi = gain - Z95 * gain_se, gain + Z95 * gain_se
    if lo > 0:
        return (
            f"personalisation beats the best constant policy ({best_constant}): gain {gain:+.4g} [{lo:+.4g}, {hi:+.4g}]"
        )
    return (
        f"personalisation does NOT beat the best constant policy ({best_constant}) beyond its uncertainty: "
        f"gain {gain:+.4g} [{lo:+.4g}, {hi:+.4g}]; treat by the constant policy"
    )


def values_frame(values: list[PolicyValue]) -> pd.DataFrame:
    return pd.DataFrame([v.__dict__ for v in values])
