"""Multi-touch attribution: conversions credited to the touchpoints that preceded them.

Touchpoints (:func:`touches_sql`): e-mail opens and clicks (``email``), push opens (``push``), SMS
campaign messages (``sms``; an SMS has no open event, so the treated send is the touch), and web
and app visits (``web``, ``app``). A conversion is an order (:func:`omnicrm.report.kpis.orders_sql`)
placed in the period. A touch belongs to a customer's *next* conversion when it lies within
``lookback_days`` before it (and after the previous conversion, which the as-of join ensures);
touches of no conversion form the customer's non-converting journeys (one per gap between
conversions), which only the Markov model reads.

Rules (weights of a converting journey's touches ``1..n``, summing to 1):

* ``last_touch`` / ``first_touch``: all to touch ``n`` / touch ``1``;
* ``linear``: ``1 / n`` each;
* ``time_decay``: proportional to ``2 ** (-age / half_life_days)``, ``age`` = days from the touch
  to the conversion;
* ``position_based``: 40% to the first and 40% to the last touch, 20% shared by the ones between
  (one touch: 100%; two: 50% each);
* ``markov``: the first-order Markov chain of journeys (start -> channels -> conversion | null) and
  each channel's *removal effect* ``1 - P(conversion | channel removed) / P(conversion)``; a
  channel's credit is its removal effect's share of the sum, times the touched conversions
  (Anderl, Becker, von Wangenheim & Schumann, "Mapping the customer journey", IJRM 2016).

Conversions with no touch in their look-back window are counted as ``(no touch)`` by every rule.
The weights are computed in DuckDB SQL; the Markov chain's transition counts too, and its
absorption probabilities are solved in numpy (a linear system of a handful of states).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd

from omnicrm import schema
from omnicrm.report.kpis import orders_sql
from omnicrm.sql import ts_literal

RULES = ("last_touch", "first_touch", "linear", "time_decay", "position_based", "markov")
NO_TOUCH = "(no touch)"


def touches_sql(start: datetime, end: datetime, campaign_sends: bool = False) -> str:
    """Every touchpoint in ``[start, end)``: ``customer_id``, ``ts``, ``channel``.

    ``campaign_sends`` adds the treated e-mail and push campaign messages as touches of their
    channel (the campaign check: the message itself, not only its opens, is the touch).
    """
    s, e = ts_literal(start), ts_literal(end)
    sends = (
        f"""
        UNION ALL
        SELECT customer_id, ts, channel FROM {schema.TREATMENTS}
        WHERE ts >= {s} AND ts < {e} AND channel IN ('email', 'push') AND "group" = 'treatment'"""
        if campaign_sends
        else ""
    )
    return f"""
        SELECT customer_id, ts, channel FROM {schema.EVENTS}
        WHERE ts >= {s} AND ts < {e} AND (event_type IN ('email_open', 'email_click', 'push_open')
              OR (event_type = 'visit' AND channel IN ('web', 'app')))
        UNION ALL
        SELECT customer_id, ts, 'sms' AS channel FROM {schema.TREATMENTS}
        WHERE ts >= {s} AND ts < {e} AND channel = 'sms' AND "group" = 'treatment'{sends}"""


def journeys_sql(start: datetime, end: datetime, lookback_days: int, campaign_sends: bool = False) -> str:
    """Touches with their journey, place in it and age at the conversion.

    Columns: ``customer_id``, ``journey`` (the conversion's order key, or a null-journey key),
    ``converted``, ``channel``, ``ts``, ``conv_ts``, ``age_days``, ``pos`` and ``n`` (place and
    length in the journey).
    """
    look = f"INTERVAL {int(lookback_days)} DAY"
    t0 = start - timedelta(days=lookback_days)
    return f"""
        WITH o AS ({orders_sql(end)}),
        conv AS (SELECT customer_id, order_key, ts FROM o WHERE ts >= {ts_literal(t0)}),
        t AS ({touches_sql(t0, end, campaign_sends)}),
        j AS (
            SELECT t.customer_id, t.ts, t.channel, c.order_key, c.ts AS conv_ts,
                   c.ts IS NOT NULL AND c.ts - t.ts <= {look} AND c.ts >= {ts_literal(start)} AS converted
            FROM t ASOF LEFT JOIN conv c ON t.customer_id = c.customer_id AND t.ts < c.ts),
        k AS (
            SELECT customer_id, ts, channel, converted, conv_ts,
                   CASE WHEN converted THEN order_key
                        ELSE customer_id || '|open|' || COALESCE(order_key, '') END AS journey
            FROM j
            -- touches before the period that belong to no conversion in it are not part of the report
            WHERE converted OR ts >= {ts_literal(start)})
        SELECT customer_id, journey, converted, channel, ts, conv_ts,
               date_diff('second', ts, conv_ts) / 86400.0 AS age_days,
               row_number() OVER (PARTITION BY customer_id, journey ORDER BY ts, channel) AS pos,
               count(*) OVER (PARTITION BY customer_id, journey) AS n
        FROM k"""


def rule_credits(
    con: duckdb.DuckDBPyConnection,
    start: datetime,
    end: datetime,
    lookback_days: int,
    half_life_days: float,
    scope_sql: str | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Credit per channel under the five rules, and the conversion counts.

    ``scope_sql`` (SQL of rows ``customer_id, w0, w1``) keeps only the conversions of those
    customers in ``[w0, w1)``, and makes the treated campaign messages touches (the campaign check).

    Returns
    -------
    (DataFrame, dict)
        Columns ``channel`` and one per rule (conversions credited; the ``(no touch)`` row holds the
        conversions without a touch); ``{"conversions": ..., "touched": ...}``.
    """
    hl = float(half_life_days)
    sends = scope_sql is not None
    keep = (
        f"converted AND EXISTS (SELECT 1 FROM ({scope_sql}) sc WHERE sc.customer_id = t.customer_id"
        " AND t.conv_ts >= sc.w0 AND t.conv_ts < sc.w1)"
        if sends
        else "converted"
    )
    scoped_orders = (
        f"SELECT DISTINCT o.order_key FROM o JOIN ({scope_sql}) sc ON sc.customer_id = o.customer_id"
        " AND o.ts >= sc.w0 AND o.ts < sc.w1"
        if sends
        else f"SELECT order_key FROM o WHERE ts >= {ts_literal(start)}"
    )
    frame = con.execute(
        f"""
        WITH t AS ({journeys_sql(start, end, lookback_days, sends)}),
        c AS (SELECT * FROM t WHERE {keep}),
        w AS (
            SELECT channel,
                   CASE WHEN pos = n THEN 1.0 ELSE 0.0 END AS last_touch,
                   CASE WHEN pos = 1 THEN 1.0 ELSE 0.0 END AS first_touch,
                   1.0 / n AS linear,
                   power(2.0, -age_days / {hl})
                       / sum(power(2.0, -age_days / {hl})) OVER (PARTITION BY customer_id, journey) AS time_decay,
                   CASE WHEN n = 1 THEN 1.0 WHEN n = 2 THEN 0.5 WHEN pos = 1 OR pos = n THEN 0.4
                        ELSE 0.2 / (n - 2) END AS position_based
            FROM c)
        SELECT channel, sum(last_touch) AS last_touch, sum(first_touch) AS first_touch, sum(linear) AS linear,
               sum(time_decay) AS time_decay, sum(position_based) AS position_based
        FROM w GROUP BY 1 ORDER BY 1"""
    ).df()
    conversions, touched = con.execute(
        f"""
        WITH o AS ({orders_sql(end)}), t AS ({journeys_sql(start, end, lookback_days, sends)})
        SELECT (SELECT count(*) FROM ({scoped_orders})),
               (SELECT count(DISTINCT journey) FROM t WHERE {keep})"""
    ).fetchone()
    none = conversions - touched
    if none:
        frame = pd.concat(
            [frame, pd.DataFrame([{"channel": NO_TOUCH, **{r: float(none) for r in RULES[:5]}}])], ignore_index=True
        )
    return frame, {"conversions": float(conversions), "touched": float(touched)}


def transition_counts(
    con: duckdb.DuckDBPyConnection, start: datetime, end: datetime, lookback_days: int, campaign_sends: bool = False
) -> pd.DataFrame:
    """Counts of the journeys' transitions ``src -> dst`` (``(start)``, channels, ``(conversion)``, ``(null)``)."""
    return con.execute(
        f"""
        WITH t AS ({journeys_sql(start, end, lookback_days, campaign_sends)}),
        steps AS (
            SELECT CASE WHEN pos = 1 THEN '(start)' ELSE lag(channel) OVER w END AS src, channel AS dst FROM t
            WINDOW w AS (PARTITION BY customer_id, journey ORDER BY pos)
            UNION ALL
            SELECT channel AS src, CASE WHEN converted THEN '(conversion)' ELSE '(null)' END AS dst
            FROM t WHERE pos = n)
        SELECT src, dst, count(*) AS n FROM steps GROUP BY 1, 2 ORDER BY 1, 2"""
    ).df()


def markov_removal(counts: pd.DataFrame) -> pd.DataFrame:
    """Each channel's removal effect in the first-order Markov chain of the transition ``counts``.

    Parameters
    ----------
    counts
        ``src``, ``dst``, ``n`` as :func:`transition_counts` returns.

    Returns
    -------
    DataFrame
        ``channel``, ``removal_effect`` (``1 - P(conv | removed) / P(conv)``) and ``share`` (its
        share of the sum of removal effects; 0 for all when nothing converts).
    """
    special = {"(start)", "(conversion)", "(null)"}
    channels = sorted((set(counts["src"]) | set(counts["dst"])) - special)
    states = ["(start)", *channels]
    index = {s: i for i, s in enumerate(states)}
    k = len(states)
    q = np.zeros((k, k))
    r = np.zeros(k)  # probability of stepping into (conversion)
    totals = counts.groupby("src")["n"].sum()
    for src, dst, n in counts[["src", "dst", "n"]].itertuples(index=False):
        p = n / totals[src]
        if dst == "(conversion)":
            r[index[src]] += p
        elif dst != "(null)":
            q[index[src], index[dst]] += p

    def p_conv(removed: int | None) -> float:
        qq, rr = q.copy(), r.copy()
        if removed is not None:
            qq[:, removed] = 0.0  # stepping into the removed channel ends the journey without a conversion
            qq[removed, :] = 0.0
            rr[removed] = 0.0
        return float(np.linalg.solve(np.eye(k) - qq, rr)[0])

    base = p_conv(None) if channels else 0.0
    effects = np.array([1 - p_conv(index[c]) / base if base > 0 else 0.0 for c in channels])
    total = effects.sum()
    share = effects / total if total > 0 else np.zeros_like(effects)
    return pd.DataFrame({"channel": channels, "removal_effect": effects, "share": share})


def attribution(
    con: duckdb.DuckDBPyConnection,
    start: datetime,
    end: datetime,
    lookback_days: int,
    half_life_days: float,
    scope_sql: str | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Conversions credited to each channel by every rule of :data:`RULES`, and the conversion counts.

    With ``scope_sql`` (see :func:`rule_credits`) the Markov shares are those of the chain of all
    the period's journeys (campaign messages included), applied to the scoped touched conversions.
    """
    credits, counts = rule_credits(con, start, end, lookback_days, half_life_days, scope_sql)
    removal = markov_removal(transition_counts(con, start, end, lookback_days, scope_sql is not None))
    credits = credits.merge(removal[["channel", "share"]], on="channel", how="left")
    credits["markov"] = credits.pop("share").fillna(0.0) * counts["touched"]
    credits.loc[credits["channel"] == NO_TOUCH, "markov"] = counts["conversions"] - counts["touched"]
    return credits, counts
