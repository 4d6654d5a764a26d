"""Expected incremental value of each (customer, action, channel): effect × value − expected cost.

For customer ``i``, action ``a`` and channel ``c`` (formula documented in ``docs/nba.md``)::

    effect    = tau[i, a] × reach[c]                     # tau: the effect model's estimate
    value     = effect × unit_value[i] × lever[a]
    p_paid    = clip(base_rate[i] + effect, 0, 1)         # probability a share-of-order offer is paid
    cost      = contact_cost[c] + fixed[a] + share[a] × order_value[i] × p_paid
    expected_value = value − cost

``unit_value[i]`` is what one unit of the effect model's outcome is worth for the customer (for a
purchase-probability model: the margin of an order, ``column × scale``, ``fallback`` when the column
is null or not positive). Candidates whose expected value is not positive are dropped with the reason
``value`` ("no action" is always better than them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from omnicrm.nba.catalogue import Catalogue
from omnicrm.nba.policy import Candidates, _excluded

__all__ = ["expected_values", "unit_values"]


def _column_or(features: pd.DataFrame, column: str | None, fallback: float, scale: float = 1.0) -> pd.Series:
    if column is None:
        return pd.Series(fallback, index=features["customer_id"].to_numpy(), dtype=float)
    raw = pd.to_numeric(features[column], errors="coerce").to_numpy(float) * scale
    good = np.isfinite(raw) & (raw > 0)
    return pd.Series(np.where(good, raw, fallback), index=features["customer_id"].to_numpy())


def unit_values(features: pd.DataFrame, cat: Catalogue) -> pd.DataFrame:
    """Per customer: ``unit_value``, ``order_value`` and ``base_rate`` (see the module docstring)."""
    v = cat.value
    if isinstance(v.base_rate, str):
        base = pd.to_numeric(features[v.base_rate], errors="coerce").fillna(0.0).clip(0, 1).to_numpy(float)
    else:
        base = np.full(len(features), float(v.base_rate))
    return pd.DataFrame(
        {
            "unit_value": _column_or(features, v.column, v.fallback, v.scale).to_numpy(),
            "order_value": _column_or(features, v.order_value, v.order_value_fallback).to_numpy(),
            "base_rate": base,
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
    effect = kept["effect"].to_numpy(float) * reach
    value = effect * u["unit_value"].to_numpy(float) * lever
    paid = np.clip(u["base_rate"].to_numpy(float) + effect, 0.0, 1.0)
    cost = contact + fixed + share * u["order_value"].to_numpy(float) * paid
    kept = kept.assign(effect=effect, value=value, cost=cost, expected_value=value - cost)
    bad = ~(kept["expected_value"].to_numpy() > 0)
    parts.append(_excluded(kept[bad], "value", "expected value <= 0: no action is better"))
    return Candidates(kept[~bad].reset_index(drop=True), pd.concat(parts, ignore_index=True))
