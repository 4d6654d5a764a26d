"""Expected incremental value of each (customer, action, channel): effect × value − expected cost.

For customer ``i``, action ``a`` and channel ``c`` (formula documented in ``docs/nba.md``)::

    effect    = tau[i, a] × reach[c]                     # tau: the effect model's estimate
    value     = effect × unit_value[i] × lever[a] × long_term[i]
    p_paid    = clip(base_rate[i] + effect, 0, 1)         # probability a share-of-order offer is paid
    cost      = contact_cost[c] + fixed[a] + share[a] × order_value[i] × p_paid
    expected_value = value − cost

``unit_value[i]`` is what one unit of the effect model's outcome is worth for the customer (for a
purchase-probability model: the margin of an order, ``column × scale``, ``fallback`` when the column
is null or not positive). ``long_term[i]`` is the optional long-term weight (``value.long_term``)::

    long_term = clip(1 + weight × (x[i] / reference − 1), min, max)      # 1 when x[i] is missing

with ``x`` a feature or task-score column (CLV, a churn probability) and ``reference`` a number or
the population's mean or median of ``x`` at ``as_of``; without ``value.long_term`` it is 1.
Candidates whose expected value is not positive are dropped with the reason
``value`` ("no action" is always better than them).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from omnicrm.nba.catalogue import Catalogue, LongTermWeight
from omnicrm.nba.policy import Candidates, _excluded

__all__ = ["LongTerm", "expected_values", "long_term_weights", "unit_values"]


def _column_or(features: pd.DataFrame, column: str | None, fallback: float, scale: float = 1.0) -> pd.Series:
    if column is None:
        return pd.Series(fallback, index=features["customer_id"].to_numpy(), dtype=float)
    raw = pd.to_numeric(features[column], errors="coerce").to_numpy(float) * scale
    good = np.isfinite(raw) & (raw > 0)
    return pd.Series(np.where(good, raw, fallback), index=features["customer_id"].to_numpy())


class LongTerm(NamedTuple):
    """The long-term weights of a run and what produced them (logged with the run)."""

    weights: np.ndarray  # per customer, in the features' order
    reference: float  # the reference the column was divided by (resolved when it is mean/median)
    missing: int  # customers whose column was missing (weight 1)


def long_term_weights(features: pd.DataFrame, spec: LongTermWeight) -> LongTerm:
    """``clip(1 + weight × (x / reference − 1), min, max)`` per customer, 1 where ``x`` is missing.

    Parameters
    ----------
    features
        One row per customer with the column ``spec.column`` (a feature or a task score).
    spec
        The catalogue's ``value.long_term``.

    Returns
    -------
    LongTerm
        The weights, the reference used and how many customers had no value.
    """
    x = pd.to_numeric(features[spec.column], errors="coerce").to_numpy(float)
    known = np.isfinite(x)
    if isinstance(spec.reference, str):
        ref = float(np.mean(x[known]) if spec.reference == "mean" else np.median(x[known])) if known.any() else 0.0
    else:
        ref = float(spec.reference)
    if not ref > 0:  # a reference of 0 (every value 0 or missing) leaves nothing to compare with
        return LongTerm(np.ones(len(x)), ref, int((~known).sum()))
    w = np.clip(1.0 + spec.weight * (np.where(known, x, ref) / ref - 1.0), spec.min, spec.max)
    return LongTerm(w, ref, int((~known).sum()))


def unit_values(features: pd.DataFrame, cat: Catalogue, long_term: LongTerm | None = None) -> pd.DataFrame:
    """Per customer: ``unit_value``, ``order_value``, ``base_rate`` and ``long_term`` (see the module docstring).

    ``long_term`` (default: computed from ``cat.value.long_term``, all 1 without one) are the weights
    of :func:`long_term_weights`, in the order of ``features``.
    """
    v = cat.value
    if long_term is None and v.long_term is not None:
        long_term = long_term_weights(features, v.long_term)
    if isinstance(v.base_rate, str):
        base = pd.to_numeric(features[v.base_rate], errors="coerce").fillna(0.0).clip(0, 1).to_numpy(float)
    else:
        base = np.full(len(features), float(v.base_rate))
    return pd.DataFrame(
        {
            "unit_value": _column_or(features, v.column, v.fallback, v.scale).to_numpy(),
            "order_value": _column_or(features, v.order_value, v.order_value_fallback).to_numpy(),
            "base_rate": base,
            "long_term": long_term.weights if long_term is not None else np.ones(len(features)),
        },
        index=pd.Index(features["customer_id"].to_numpy(), name="customer_id"),
    )


def expected_values(cands: Candidates, effects: pd.DataFrame, units: pd.DataFrame, cat: Catalogue) -> Candidates:
    """The kept candidates with ``effect, value, cost, expected_value``; non-positive ones excluded.

    Parameters
    ----------
    cands
        Candidates after rules and policy.
    effects
        ``customer_id, action, effect`` with the catalogue's action names (the effect before reach).
    units
        :func:`unit_values`, indexed by ``customer_id``.
    cat
        The catalogue (reach, costs, levers).

    Returns
    -------
    Candidates
        Kept rows gain ``effect`` (after reach), ``value``, ``cost``, ``expected_value`` and
        ``long_term`` (the weight in ``value``).
    """
    kept = cands.kept.merge(effects[["customer_id", "action", "effect"]], on=["customer_id", "action"], how="left")
    missing = kept["effect"].isna().to_numpy()
    parts = [cands.excluded, _excluded(kept[missing], "value", "no effect estimate for this customer and action")]
    kept = kept[~missing].reset_index(drop=True)
    u = units.reindex(kept["customer_id"].to_numpy())
    reach = kept["channel"].map({c: s.reach for c, s in cat.channels.items()}).to_numpy(float)
    contact = kept["channel"].map({c: s.cost for c, s in cat.channels.items()}).to_numpy(float)
    fixed = kept["action"].map({a: s.offer.fixed for a, s in cat.actions.items()}).to_numpy(float)
    share = kept["action"].map({a: s.offer.share for a, s in cat.actions.items()}).to_numpy(float)
    lever = kept["action"].map({a: s.lever for a, s in cat.actions.items()}).to_numpy(float)
    # frames from before the long-term weight have no such column: weight 1
    weight = u["long_term"].to_numpy(float) if "long_term" in u.columns else 1.0
    effect = kept["effect"].to_numpy(float) * reach
    value = effect * u["unit_value"].to_numpy(float) * lever * weight
    paid = np.clip(u["base_rate"].to_numpy(float) + effect, 0.0, 1.0)
    cost = contact + fixed + share * u["order_value"].to_numpy(float) * paid
    kept = kept.assign(
        effect=effect, value=value, cost=cost, expected_value=value - cost, long_term=weight * np.ones(len(kept))
    )
    bad = ~(kept["expected_value"].to_numpy() > 0)
    parts.append(_excluded(kept[bad], "value", "expected value <= 0: no action is better"))
    return Candidates(kept[~bad].reset_index(drop=True), pd.concat(parts, ignore_index=True))
