"""The effect's largest drivers per sent row: which features raise or lower the customer's estimated effect.

Exact per-row contributions of the effect model (LightGBM ``pred_contrib`` on the learner's final
regressors, :meth:`omnicrm.uplift.model.EffectModel.effect_contributions`) cost far more than the
effect itself, so they are computed for the rows the allocation sent and for no other candidate.
Contributions are scaled by the channel's reach, like the effect, so a row's drivers and the
effect model's baseline add up to the effect its reasons show. The ``n`` largest in absolute value
are named with the customer's value and their signed share:
``drivers: recency_days=12 +0.0213, aov_365d=54.2 +0.0150, orders_365d=1 -0.0081``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

__all__ = ["Drivers", "effect_drivers"]


class Drivers(NamedTuple):
    """The drivers' text per sent row (index of the sent rows; empty where not available) and notes."""

    text: pd.Series
    rows: int  # rows whose contributions were computed
    unavailable: dict[str, str]  # action -> why it has no drivers (the learner does not decompose)


def _fmt_value(v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)) or v is pd.NA:
        return "missing"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


def effect_drivers(
    sent: pd.DataFrame,
    features: pd.DataFrame,
    models: Mapping[str, tuple[Any, str]],
    reach: Mapping[str, float],
    n: int = 3,
) -> Drivers:
    """The ``n`` largest contributions to each sent row's effect, as text.

    Parameters
    ----------
    sent
        The sent rows: ``customer_id``, ``action``, ``channel`` (any index; the result keeps it).
    features
        One row per customer (``customer_id`` and the effect models' feature columns).
    models
        Per catalogue action: the effect model (``effect_contributions(frame, name)``) and the
        action's name in it.
    reach
        Per channel: the share of the effect it delivers (the contributions are scaled by it).
    n
        Drivers per row; 0 computes nothing.

    Returns
    -------
    Drivers
        ``text`` (``drivers: feature=value +share, ...``) for every row of ``sent``.
    """
    text = pd.Series("", index=sent.index, dtype=object)
    unavailable: dict[str, str] = {}
    if n <= 0 or sent.empty:
        return Drivers(text, 0, unavailable)
    by_customer = features.set_index("customer_id")
    computed = 0
    for action, rows in sent.groupby("action", sort=True):
        model, name = models[str(action)]
        frame = by_customer.reindex(rows["customer_id"].to_numpy())
        try:
            contrib = model.effect_contributions(frame.reset_index(), name)
        except NotImplementedError as exc:
            unavailable[str(action)] = str(exc)
            continue
        computed += len(rows)
        names = np.asarray([c for c in contrib.columns if c != "baseline"], dtype=object)
        vals = contrib[list(names)].to_numpy(float) * rows["channel"].map(reach).to_numpy(float)[:, None]
        k = min(n, len(names))
        top = np.argsort(-np.abs(vals), axis=1, kind="stable")[:, :k]
        raw = frame[list(names)].to_numpy(object)
        idx = np.arange(len(rows))
        parts = []
        for i in range(k):
            col = top[:, i]
            value = pd.Series(raw[idx, col]).map(_fmt_value).to_numpy(object)
            share = pd.Series(vals[idx, col]).map("{:+.4f}".format).to_numpy(object)
            parts.append(names[col] + "=" + value + " " + share)
        joined = parts[0]
        for p in parts[1:]:
            joined = joined + ", " + p
        text.loc[rows.index] = "drivers: " + joined
    return Drivers(text, computed, unavailable)
