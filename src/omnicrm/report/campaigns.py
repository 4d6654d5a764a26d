"""Campaign return against the randomised control, and the attribution check against it.

A campaign counts in a report when it was sent in the period and its outcome window closed before
the period's end (``send + window_days <= end``). Outcomes per exposure come from
:func:`omnicrm.uplift.data.store_outcomes` (purchase, orders, spend, margin in ``[send, send +
window)``) and each action's effect against the campaign's control from
:func:`omnicrm.uplift.readout.readout` (difference in means, Welch 95% interval). Per campaign and
action:

* ``incremental_<outcome>`` = effect x treated exposures (with its interval, ``_low`` / ``_high``);
* ``cost``: the treatments' summed cost (message and expected offer cost);
* ``roi`` = (incremental margin - cost) / cost and ``roas`` = incremental revenue / cost, with the
  intervals of the effect carried through (the cost is known exactly).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd

from omnicrm import schema
from omnicrm.uplift.data import campaign_sends, store_outcomes
from omnicrm.uplift.readout import readout

OUTCOMES = ("purchase", "orders", "spend", "margin")


def closed_campaigns(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime, window_days: int) -> pd.DataFrame:
    """Campaigns sent in ``[start, end)`` whose window closed by ``end``: ``campaign_id``, ``send_ts``, ``channel``."""
    sends = con.execute(
        f"""SELECT campaign_id, min(ts) AS send_ts, min(channel) AS channel FROM {schema.TREATMENTS}
            GROUP BY 1 ORDER BY 2, 1"""
    ).df()
    if sends.empty:
        return sends
    ts = pd.to_datetime(sends["send_ts"])
    keep = (ts >= pd.Timestamp(start)) & (ts + timedelta(days=window_days) <= pd.Timestamp(end))
    return sends[keep.to_numpy()].reset_index(drop=True)


def campaign_return(
    con: duckdb.DuckDBPyConnection, start: datetime, end: datetime, window_days: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (campaign, action): incremental purchases, orders, revenue and margin, cost, ROI and ROAS.

    Returns
    -------
    (DataFrame, DataFrame)
        The return table and the exposures (one row per customer and campaign, with ``arm``).
    """
    camps = closed_campaigns(con, start, end, window_days)
    if camps.empty:
        return pd.DataFrame(), pd.DataFrame()
    sends = campaign_sends(con, camps["campaign_id"].tolist())
    rows = store_outcomes(con, sends, window_days)
    table = readout(rows, "arm", "control", list(OUTCOMES), ["campaign_id"])
    wide = table.pivot_table(
        index=["campaign_id", "action"], columns="outcome", values=["ate", "ci_low", "ci_high", "n_t", "n_c"]
    )
    out = pd.DataFrame(index=wide.index)
    out["treated"] = wide[("n_t", "purchase")].astype(int)
    out["control"] = wide[("n_c", "purchase")].astype(int)
    for o in OUTCOMES:
        for stat, suffix in (("ate", ""), ("ci_low", "_low"), ("ci_high", "_high")):
            out[f"incremental_{o}{suffix}"] = wide[(stat, o)] * out["treated"]
    out = out.reset_index()
    cost = con.execute(
        f"""SELECT campaign_id, action, sum(cost) AS cost FROM {schema.TREATMENTS}
            WHERE "group" = 'treatment' GROUP BY 1, 2"""
    ).df()
    out = out.merge(cost, on=["campaign_id", "action"], how="left").merge(
        camps[["campaign_id", "channel", "send_ts"]], on="campaign_id"
    )
    c = out["cost"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        for suffix in ("", "_low", "_high"):
            out[f"roi{suffix}"] = np.where(c > 0, (out[f"incremental_margin{suffix}"] - c) / c, np.nan)
            out[f"roas{suffix}"] = np.where(c > 0, out[f"incremental_spend{suffix}"] / c, np.nan)
    first = ["campaign_id", "channel", "send_ts", "action", "treated", "control", "cost"]
    return out[first + [col for col in out.columns if col not in first]], rows


def scope_sql(start: datetime, end: datetime, window_days: int) -> str:
    """SQL of the treated exposures' outcome windows: ``customer_id``, ``w0`` (send), ``w1`` (send + window).

    The campaigns are those of :func:`closed_campaigns`; the attribution check credits the orders
    placed in these windows.
    """
    from omnicrm.sql import ts_literal

    return f"""
        SELECT t.customer_id, s.send_ts AS w0, s.send_ts + INTERVAL {int(window_days)} DAY AS w1
        FROM {schema.TREATMENTS} t JOIN (SELECT campaign_id, min(ts) AS send_ts FROM {schema.TREATMENTS} GROUP BY 1) s
          USING (campaign_id)
        WHERE t."group" = 'treatment' AND s.send_ts >= {ts_literal(start)}
          AND s.send_ts + INTERVAL {int(window_days)} DAY <= {ts_literal(end)}"""


def true_incremental(truth: pd.DataFrame, exposures: pd.DataFrame, effect_weeks: int) -> pd.DataFrame:
    """The generator's expected incremental purchase-weeks per campaign and action (synthetic worlds only).

    Parameters
    ----------
    truth
        :func:`omnicrm.uplift.truth.true_effects` of the exposures: one column per action, aligned
        with ``exposures`` (the true change of the customer's weekly purchase probability).
    exposures
        ``campaign_id`` and ``arm`` per row (the exposures of :func:`campaign_return`).
    effect_weeks
        Weeks during which the generator adds the effect.

    Returns
    -------
    DataFrame
        ``campaign_id``, ``action``, ``true_incremental``: ``effect_weeks`` x the sum over treated
        exposures of the true effect of the action they received (NaN effects count as 0).
    """
    arm = exposures["arm"].to_numpy(object)
    effect = np.zeros(len(exposures))
    for action in truth.columns:
        hit = arm == action
        effect[hit] = np.nan_to_num(truth[action].to_numpy(float)[hit])
    frame = pd.DataFrame({"campaign_id": exposures["campaign_id"].to_numpy(), "action": arm, "e": effect})
    frame = frame[frame["action"] != "control"]
    out = frame.groupby(["campaign_id", "action"], as_index=False)["e"].sum()
    out["true_incremental"] = effect_weeks * out.pop("e")
    return out


def attribution_vs_incrementality(
    credits: pd.DataFrame, returns: pd.DataFrame, truth: pd.DataFrame | None, rules: tuple[str, ...]
) -> pd.DataFrame:
    """Each rule's credit per campaign channel next to the orders its randomised campaigns caused.

    ``incremental_orders`` (and its interval) sums the campaigns' readout per channel; ``true`` the
    generator's expected incremental purchase-weeks, when given. ``<rule>_over`` is the rule's credit
    divided by the measured incremental orders (1 = exact, above 1 = over-credit).
    """
    by = returns.groupby("channel", as_index=False)[
        ["incremental_orders", "incremental_orders_low", "incremental_orders_high"]
    ].sum()
    if truth is not None and not truth.empty:
        t = truth.merge(returns[["campaign_id", "action", "channel"]], on=["campaign_id", "action"])
        by = by.merge(t.groupby("channel", as_index=False)["true_incremental"].sum(), on="channel", how="left")
    out = by.merge(credits[["channel", *rules]], on="channel", how="left").fillna({r: 0.0 for r in rules})
    inc = out["incremental_orders"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        for r in rules:
            out[f"{r}_over"] = np.where(inc > 0, out[r].to_numpy(float) / inc, np.nan)
    return out
