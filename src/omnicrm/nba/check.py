"""A list checked against the catalogue and the store's history: every constraint, counted again.

:func:`violations` recounts, from the store and the list alone, what the allocation promised: consent
per channel, caps per channel and over all channels counting the history before ``as_of`` plus the
list's own sends (the learned cadence of ``policy.cadence`` likewise; in its ``instead`` mode the
channel's static caps are not counted for the customers it has a cadence for), the quiet period
after a service contact, suppression, the budget, capacities,
volumes, the per-customer limits and a positive expected value for every row. The wiring runs it
after every allocation and logs the count (it must be 0; a violation is a bug, and the run fails).
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from omnicrm.nba.catalogue import Catalogue
from omnicrm.nba.policy import contact_history, contact_policy
from omnicrm.sql import ident, ts_literal

__all__ = ["violations"]


def violations(nba: pd.DataFrame, con, cat: Catalogue, as_of: datetime) -> list[str]:  # noqa: ANN001, C901
    """Every constraint the list ``nba`` breaks, in words (empty: none).

    Parameters
    ----------
    nba
        The list (``customer_id, action, channel, cost, expected_value``).
    con
        A connection to the store the list was built from.
    cat
        The catalogue it was built with.
    as_of
        Its decision date.
    """
    out: list[str] = []
    if nba.empty:
        return out
    sent = nba[["customer_id", "action", "channel", "cost", "expected_value"]]
    learned = cat.policy.cadence
    cadences = cat.learned_cadences() if learned is not None else None
    con.register("_nba_sent", sent)
    if cadences is not None:
        con.register("_nba_cadence_check", cadences)
    try:
        t = ts_literal(as_of)
        for ch in cat.channels:
            n = con.execute(
                f"SELECT count(*) FROM _nba_sent s LEFT JOIN customers c USING (customer_id) "
                f"WHERE s.channel = ? AND c.{ident(cat.consent_column(ch))} IS NOT TRUE",
                [ch],
            ).fetchall()[0][0]
            if n:
                out.append(f"{n} sends on {ch} without consent")
        for cap in cat.policy.caps:
            on_h = "" if cap.channel == "any" else "AND h.channel = ?"
            on_s = "" if cap.channel == "any" else "WHERE channel = ?"
            params = [] if cap.channel == "any" else [cap.channel]
            if learned is not None and learned.mode == "instead" and cap.channel == learned.channel:
                # the learned cadence replaces this cap for the customers it has a cadence for
                on_s += " AND customer_id NOT IN (SELECT customer_id FROM _nba_cadence_check)"
            n = con.execute(
                f"WITH h AS ({contact_history(as_of)}), s AS (SELECT customer_id, count(*) AS n FROM _nba_sent "
                f"{on_s} GROUP BY customer_id) SELECT count(*) FROM s WHERE s.n + (SELECT count(*) FROM h "
                f"WHERE h.customer_id = s.customer_id AND h.ts >= {t} - INTERVAL {cap.days} DAY {on_h}) > {cap.max}",
                params + params,
            ).fetchall()[0][0]
            if n:
                out.append(f"{n} customers over the cap {cap.channel} {cap.max} in {cap.days} days")
        if learned is not None:
            n = con.execute(
                f"WITH h AS ({contact_history(as_of)}), s AS (SELECT customer_id, count(*) AS n FROM _nba_sent "
                "WHERE channel = ? GROUP BY customer_id) SELECT count(*) FROM s JOIN _nba_cadence_check k "
                "USING (customer_id) WHERE s.n + (SELECT count(*) FROM h WHERE h.customer_id = s.customer_id "
                f"AND h.channel = ? AND h.ts >= {t} - INTERVAL {learned.days} DAY) > k.recommended_cadence",
                [learned.channel, learned.channel],
            ).fetchall()[0][0]
            if n:
                out.append(f"{n} customers over their learned {learned.channel} cadence in {learned.days} days")
        if cat.policy.quiet_days_after_service:
            q = cat.policy.quiet_days_after_service
            n = con.execute(
                f"SELECT count(DISTINCT customer_id) FROM _nba_sent WHERE customer_id IN (SELECT customer_id "
                f"FROM events WHERE event_type = 'service_contact' AND ts >= {t} - INTERVAL {q} DAY AND ts < {t})"
            ).fetchall()[0][0]
            if n:
                out.append(f"{n} customers contacted in their quiet period")
    finally:
        con.unregister("_nba_sent")
        if cadences is not None:
            con.unregister("_nba_cadence_check")
    if cat.policy.suppression:
        blocked = contact_policy(con, sent["customer_id"], cat, as_of).blocked
        blocked = blocked[blocked["step"] == "suppression"]
        n = len(sent.merge(blocked, on=["customer_id", "channel"]))
        if n:
            out.append(f"{n} sends on a suppressed channel")
    budget = cat.allocation.budget
    if budget is not None and sent["cost"].sum() > budget * (1 + 1e-9) + 1e-9:
        out.append(f"cost {sent['cost'].sum():.4f} over the budget {budget}")
    for ch, cap in cat.allocation.capacity.items():
        if (sent["channel"] == ch).sum() > cap:
            out.append(f"{(sent['channel'] == ch).sum()} sends on {ch} over its capacity {cap}")
    for a, spec in cat.actions.items():
        n = int((sent["action"] == a).sum())
        if n < spec.min_volume or (spec.max_volume is not None and n > spec.max_volume):
            out.append(f"{n} sends of {a} outside [{spec.min_volume}, {spec.max_volume}]")
    if (sent.groupby("customer_id").size() > cat.allocation.per_customer).any():
        out.append(f"customers with more than {cat.allocation.per_customer} actions")
    if sent.duplicated(["customer_id", "channel"]).any() or sent.duplicated(["customer_id", "action"]).any():
        out.append("a customer with two actions on one channel or one action twice")
    if not (sent["expected_value"] > 0).all():
        out.append("rows of non-positive expected value")
    return out
