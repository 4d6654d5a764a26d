"""The list: sent rows with their reasons, and the excluded rows of candidates not chosen.

Each sent row says why: the effect (after the channel's reach) and its largest drivers for the
customer (:mod:`omnicrm.nba.drivers`, computed for sent rows only), the value (and its long-term
weight, when the catalogue sets one) and the cost, and, when the customer had a candidate of higher
expected value that was not sent, which binding constraint kept it out (the budget, a channel's
capacity, an action's volume, or the customer's own limit).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from omnicrm import schema
from omnicrm.nba.allocate import Allocation
from omnicrm.nba.policy import _excluded

__all__ = ["constraint_summary", "nba_rows", "not_chosen"]


def _bound_by(row_action: str, row_channel: str, tight: list[str]) -> str:
    """The binding constraints that can explain why a candidate was left out.

    The budget, the candidate's channel capacity and action maximum, and any action's minimum volume
    (it claims budget and customers). None binding: the method's own choice, within its reported gap.
    """
    mine = ("budget", f"capacity:{row_channel}", f"max_volume:{row_action}")
    hits = [t for t in tight if t in mine or t.startswith("min_volume:")]
    return "bound by " + ", ".join(hits) if hits else "no binding limit (the solver's choice, within its reported gap)"


def nba_rows(
    cands: pd.DataFrame, alloc: Allocation, outcome: str, as_of: pd.Timestamp, drivers: pd.Series | None = None
) -> pd.DataFrame:
    """The ``nba`` output table: sent candidates ranked per customer by expected value, with reasons.

    ``cands`` holds ``customer_id, action, channel, product_id, effect, value, cost, expected_value``
    (and ``long_term``, the value's weight, when there is one) in allocation order; ``drivers`` the
    text of :func:`omnicrm.nba.drivers.effect_drivers` for the sent rows, indexed like ``cands``.
    """
    sent = cands[alloc.chosen].copy()
    sent = sent.sort_values(["customer_id", "expected_value"], ascending=[True, False], kind="stable")
    sent["rank"] = sent.groupby("customer_id", sort=False).cumcount().astype("int64") + 1
    # the best candidate of each customer that was not sent, when it beats a sent one
    left = cands[~alloc.chosen].sort_values("expected_value", ascending=False, kind="stable")
    left = left.drop_duplicates("customer_id").set_index("customer_id")
    better = left.reindex(sent["customer_id"].to_numpy())
    beats = (better["expected_value"].to_numpy() > sent["expected_value"].to_numpy()) & better[
        "action"
    ].notna().to_numpy()
    eff = pd.Series(sent["effect"].to_numpy(float)).map("{:+.4f}".format).to_numpy(object)
    val = pd.Series(sent["value"].to_numpy(float)).map("{:.4f}".format).to_numpy(object)
    cost = pd.Series(sent["cost"].to_numpy(float)).map("{:.4f}".format).to_numpy(object)
    ev = pd.Series(sent["expected_value"].to_numpy(float)).map("{:.4f}".format).to_numpy(object)
    why = np.full(len(sent), "", dtype=object)
    if drivers is not None:
        d = drivers.reindex(sent.index).fillna("").to_numpy(object)
        why = np.where(d != "", " (" + d + ")", "")
    lt = np.full(len(sent), "", dtype=object)
    if "long_term" in sent.columns:
        w = sent["long_term"].to_numpy(float)
        text = pd.Series(w).map(" (long-term weight ×{:.3f})".format).to_numpy(object)
        lt = np.where(np.isclose(w, 1.0), "", text)
    reasons = "effect " + eff + f" on {outcome}" + why + ", value " + val + lt + ", cost " + cost + ", expected " + ev
    extra = np.full(len(sent), "", dtype=object)
    for i in np.flatnonzero(beats):
        b = better.iloc[i]
        extra[i] = f"; {b['action']} on {b['channel']} (expected {b['expected_value']:.4f}) not sent: " + _bound_by(
            b["action"], b["channel"], alloc.tight
        )
    sent["reasons"] = reasons + extra
    sent["as_of"] = as_of
    return conform_nba(sent.reset_index(drop=True))


def conform_nba(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the ``nba`` contract's columns first."""
    from omnicrm.store.outputs import conform

    return conform(frame, schema.NBA)


def not_chosen(cands: pd.DataFrame, alloc: Allocation) -> pd.DataFrame:
    """Excluded rows (step ``allocation``) for the candidates the allocation did not send.

    A candidate worth less than what its customer was sent lost to it (the per-customer limit); any
    other was kept out by a binding limit (or, with none binding, by the method within its gap).
    """
    left = cands[~alloc.chosen]
    sent_value = cands[alloc.chosen].groupby("customer_id")["expected_value"].min().astype(float)
    floor = sent_value.reindex(left["customer_id"].to_numpy()).to_numpy(float)  # NaN: the customer got nothing
    beaten = left["expected_value"].to_numpy(float) <= floor
    why = np.array(
        [
            "not sent: the customer got an action of higher value (per-customer limit)"
            if b
            else "not sent: " + _bound_by(a, c, alloc.tight)
            for b, a, c in zip(beaten, left["action"], left["channel"], strict=True)
        ],
        dtype=object,
    )
    return _excluded(left, "allocation", pd.Series(why, index=left.index))


def constraint_summary(
    excluded: pd.DataFrame, nba: pd.DataFrame, population: int, alloc: Allocation, budget: float | None
) -> dict[str, float]:
    """What the run logs: customers dropped per step, budget used, contacts per channel, value, gap."""
    out: dict[str, float] = {
        "customers": float(population),
        "customers_sent": float(nba["customer_id"].nunique()),
        "sends": float(len(nba)),
        "expected_incremental_value": float(nba["expected_value"].sum()),
        "cost": float(nba["cost"].sum()),
        "solver_gap": float(alloc.gap),
        "solver_bound": float(alloc.bound),
        "solver_seconds": float(alloc.seconds),
    }
    if budget is not None:
        out["budget"] = float(budget)
        out["budget_used"] = float(nba["cost"].sum() / budget) if budget > 0 else 0.0
    unsent = excluded[~excluded["customer_id"].isin(nba["customer_id"])]
    # a customer without a row counts once, under the latest funnel step any of their candidates reached
    order = {s: i for i, s in enumerate(STEPS)}
    last = unsent.assign(o=unsent["step"].map(order)).groupby("customer_id")["o"].max()
    for i, n in last.value_counts().items():
        out[f"customers_dropped.{STEPS[int(i)]}"] = float(n)
    for ch, n in nba["channel"].value_counts().items():
        out[f"contacts.{ch}"] = float(n)
    for a, n in nba["action"].value_counts().items():
        out[f"sends.{a}"] = float(n)
    return out


#: the steps of the funnel, in order (the ``step`` column of ``excluded``)
STEPS = (
    "eligibility",
    "applicability",
    "suitability",
    "quiet",
    "consent",
    "suppression",
    "cap",
    "product",
    "value",
    "allocation",
)
