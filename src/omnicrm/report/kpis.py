"""Marketing KPIs of a store over a report period, computed in DuckDB SQL.

Every function takes a DuckDB connection to the store and the period ``[start, end)`` and returns
a small frame; nothing here opens a file. Point in time: a month's figure reads only events before
the month's end (``ts < month_end``), a period figure only events before ``end``. Months are
calendar months (UTC), clipped to the period. Orders are purchase events grouped by
``COALESCE(order_id, event_id)`` (as in :mod:`omnicrm.features.sources`); an order's time is its
first line's, its value the sum of its lines' amounts and its margin
``amount - quantity * (price - margin)`` of each line (the products table's unit margin, as the
campaign outcomes in :mod:`omnicrm.uplift.data` compute it; lines of unknown products add 0).
The exact definitions are tabled in ``docs/report.md``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd

from omnicrm import schema
from omnicrm.sql import in_list, ts_literal

#: z quantile of a two-sided 95% interval
Z95 = 1.959963984540054


def orders_sql(end: datetime) -> str:
    """One row per order placed before ``end``: customer, time, channel, value, margin."""
    return f"""
        SELECT e.customer_id, COALESCE(e.order_id, e.event_id) AS order_key, min(e.ts) AS ts,
               min(e.channel) AS channel, sum(e.amount) AS amount,
               sum(COALESCE(e.amount - e.quantity * (p.price - p.margin), 0)) AS margin
        FROM {schema.EVENTS} e LEFT JOIN {schema.PRODUCTS} p ON p.product_id = e.product_id
        WHERE e.event_type = 'purchase' AND e.ts < {ts_literal(end)}
        GROUP BY e.customer_id, COALESCE(e.order_id, e.event_id)"""


def months_sql(start: datetime, end: datetime) -> str:
    """The period's calendar months: ``month`` (its first day), ``m0`` and ``m1`` (clipped bounds)."""
    return f"""
        SELECT CAST(m AS DATE) AS month, greatest(m, {ts_literal(start)}) AS m0,
               least(m + INTERVAL 1 MONTH, {ts_literal(end)}) AS m1
        FROM range(date_trunc('month', {ts_literal(start)}), {ts_literal(end)}, INTERVAL 1 MONTH) r(m)"""


def _df(con: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame:
    return con.execute(sql).df()


def customer_base(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime, lapse_days: int) -> pd.DataFrame:
    """Active, new, returning, reactivated and lost customers per month.

    ``active``: an order in the month; ``new``: the first order ever in the month; ``returning``:
    active, not new, and an order in the ``lapse_days`` before the month; ``reactivated``: active,
    not new, no order in those days; ``lost``: no order since, and the last order crossed
    ``lapse_days`` of age during the month (last order in ``[m0 - lapse, m1 - lapse)``).
    """
    lapse = f"INTERVAL {int(lapse_days)} DAY"
    return _df(
        con,
        f"""
        WITH o AS ({orders_sql(end)}),
        months AS ({months_sql(start, end)}),
        first AS (SELECT customer_id, min(ts) AS first_ts FROM o GROUP BY 1),
        act AS (
            SELECT m.month, o.customer_id, min(o.ts) AS ts
            FROM months m JOIN o ON o.ts >= m.m0 AND o.ts < m.m1 GROUP BY 1, 2),
        prev AS (
            SELECT m.month, o.customer_id, max(o.ts) AS last_ts
            FROM months m JOIN o ON o.ts < m.m0 GROUP BY 1, 2),
        status AS (
            SELECT a.month, a.customer_id,
                   CASE WHEN f.first_ts >= m.m0 THEN 'new'
                        WHEN p.last_ts >= m.m0 - {lapse} THEN 'returning'
                        ELSE 'reactivated' END AS status
            FROM act a JOIN months m USING (month) JOIN first f USING (customer_id)
            LEFT JOIN prev p USING (month, customer_id)),
        lost AS (
            SELECT m.month, count(*) AS lost
            FROM months m JOIN prev p ON p.month = m.month
            LEFT JOIN act a ON a.month = m.month AND a.customer_id = p.customer_id
            WHERE a.customer_id IS NULL AND p.last_ts >= m.m0 - {lapse} AND p.last_ts < m.m1 - {lapse}
            GROUP BY 1)
        SELECT m.month,
               count(s.customer_id) AS active,
               count(s.customer_id) FILTER (WHERE s.status = 'new') AS new,
               count(s.customer_id) FILTER (WHERE s.status = 'returning') AS returning,
               count(s.customer_id) FILTER (WHERE s.status = 'reactivated') AS reactivated,
               COALESCE(any_value(l.lost), 0) AS lost
        FROM months m LEFT JOIN status s USING (month) LEFT JOIN lost l USING (month)
        GROUP BY m.month ORDER BY m.month""",
    )


def stage_counts(con: duckdb.DuckDBPyConnection, stages: pd.DataFrame, column: str) -> pd.DataFrame:
    """Customers per (``cutoff``, ``column`` value) of a snapshot frame, counted by DuckDB."""
    con.register("__report_stages", stages[["cutoff", column]])
    try:
        return _df(
            con,
            f'SELECT CAST(cutoff AS DATE) AS date, "{column}" AS stage, count(*) AS customers '
            "FROM __report_stages GROUP BY ALL ORDER BY 1, 2",
        )
    finally:
        con.unregister("__report_stages")


def transitions(con: duckdb.DuckDBPyConnection, before: pd.DataFrame, after: pd.DataFrame, column: str) -> pd.DataFrame:
    """Stage-to-stage counts between two snapshots (rows: stage at the first date, ``not known`` if absent)."""
    con.register("__report_a", before[["customer_id", column]])
    con.register("__report_b", after[["customer_id", column]])
    try:
        return _df(
            con,
            f"""
            SELECT COALESCE(a."{column}", 'not known') AS stage_from, b."{column}" AS stage_to, count(*) AS customers
            FROM __report_b b LEFT JOIN __report_a a USING (customer_id)
            GROUP BY ALL ORDER BY 1, 2""",
        )
    finally:
        con.unregister("__report_a")
        con.unregister("__report_b")


def cohort_retention(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> pd.DataFrame:
    """Monthly acquisition cohorts x months since the first order: cohort size and share still buying.

    A cohort is the customers whose first order ever falls in a month of the period; ``retention``
    at ``k`` is the share of them with an order in calendar month ``cohort + k`` (0 when none
    ordered). Only months that ended by ``end`` are shown (``k = 0`` is 1 by definition).
    """
    return _df(
        con,
        f"""
        WITH o AS ({orders_sql(end)}),
        f AS (SELECT customer_id, date_trunc('month', min(ts)) AS cohort FROM o GROUP BY 1),
        c AS (SELECT * FROM f WHERE cohort >= date_trunc('month', {ts_literal(start)})),
        size AS (SELECT cohort, count(*) AS n FROM c GROUP BY 1),
        act AS (
            SELECT c.cohort, date_diff('month', c.cohort, date_trunc('month', o.ts)) AS k,
                   count(DISTINCT c.customer_id) AS customers
            FROM c JOIN o USING (customer_id) GROUP BY 1, 2),
        grid AS (
            SELECT s.cohort, s.n, CAST(r.k AS BIGINT) AS k FROM size s, range(0, 1200) r(k)
            WHERE s.cohort + to_months(CAST(r.k AS INTEGER) + 1) <= {ts_literal(end)})
        SELECT CAST(g.cohort AS DATE) AS cohort, g.k AS months_since, g.n AS cohort_size,
               COALESCE(a.customers, 0) AS customers, COALESCE(a.customers, 0) / g.n AS retention
        FROM grid g LEFT JOIN act a ON a.cohort = g.cohort AND a.k = g.k
        ORDER BY 1, 2""",
    )


def repurchase(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime, days: int) -> pd.DataFrame:
    """Per acquisition month: customers, and the share with a second order within ``days`` of the first.

    Only cohorts whose month ended at least ``days`` before ``end`` are shown, so every member had
    the full window to come back.
    """
    return _df(
        con,
        f"""
        WITH o AS ({orders_sql(end)}),
        r AS (SELECT customer_id, ts, row_number() OVER (PARTITION BY customer_id ORDER BY ts, order_key) AS n FROM o),
        p AS (
            SELECT customer_id, min(ts) FILTER (WHERE n = 1) AS t1, min(ts) FILTER (WHERE n = 2) AS t2
            FROM r GROUP BY 1)
        SELECT CAST(date_trunc('month', t1) AS DATE) AS cohort, count(*) AS customers,
               count(*) FILTER (WHERE t2 < t1 + INTERVAL {int(days)} DAY) AS repurchased,
               count(*) FILTER (WHERE t2 < t1 + INTERVAL {int(days)} DAY) / count(*) AS repurchase_rate
        FROM p
        WHERE t1 >= {ts_literal(start)}
          AND date_trunc('month', t1) + INTERVAL 1 MONTH + INTERVAL {int(days)} DAY <= {ts_literal(end)}
        GROUP BY 1 ORDER BY 1""",
    )


def order_kpis(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> pd.DataFrame:
    """Per month: orders, buying customers, revenue, margin, frequency (orders per buyer) and AOV."""
    return _df(
        con,
        f"""
        WITH o AS ({orders_sql(end)}), months AS ({months_sql(start, end)})
        SELECT m.month, count(o.order_key) AS orders, count(DISTINCT o.customer_id) AS customers,
               COALESCE(sum(o.amount), 0) AS revenue, COALESCE(sum(o.margin), 0) AS margin,
               count(o.order_key) / nullif(count(DISTINCT o.customer_id), 0) AS frequency,
               sum(o.amount) / nullif(count(o.order_key), 0) AS aov
        FROM months m LEFT JOIN o ON o.ts >= m.m0 AND o.ts < m.m1
        GROUP BY m.month ORDER BY m.month""",
    )


def inter_purchase_days(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> pd.DataFrame:
    """Days between consecutive orders of a customer, for every order placed in the period after an earlier one."""
    return _df(
        con,
        f"""
        WITH o AS ({orders_sql(end)}),
        g AS (SELECT ts, date_diff('second', lag(ts) OVER (PARTITION BY customer_id ORDER BY ts, order_key), ts)
                         / 86400.0 AS days FROM o)
        SELECT days FROM g WHERE days IS NOT NULL AND ts >= {ts_literal(start)} ORDER BY days""",
    )


def period_summary(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> dict[str, float]:
    """Headline figures of the period: buyers, orders, revenue, margin, AOV, frequency, repeat share, gap."""
    row = _df(
        con,
        f"""
        WITH o AS ({orders_sql(end)}),
        g AS (SELECT *, date_diff('second', lag(ts) OVER (PARTITION BY customer_id ORDER BY ts, order_key), ts)
                        / 86400.0 AS gap FROM o),
        p AS (SELECT * FROM g WHERE ts >= {ts_literal(start)}),
        c AS (SELECT customer_id, count(*) AS n FROM p GROUP BY 1)
        SELECT (SELECT count(*) FROM c) AS customers, count(*) AS orders, COALESCE(sum(amount), 0) AS revenue,
               COALESCE(sum(margin), 0) AS margin, sum(amount) / nullif(count(*), 0) AS aov,
               count(*) / nullif((SELECT count(*) FROM c), 0) AS frequency,
               (SELECT avg(CASE WHEN n >= 2 THEN 1.0 ELSE 0.0 END) FROM c) AS repeat_share,
               median(gap) AS median_gap_days
        FROM p""",
    )
    return {k: float(v) if v is not None and not pd.isna(v) else float("nan") for k, v in row.iloc[0].items()}


def value_per_customer(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> pd.DataFrame:
    """Revenue, margin and orders of each customer with an order in the period."""
    return _df(
        con,
        f"""
        WITH o AS ({orders_sql(end)})
        SELECT customer_id, count(*) AS orders, sum(amount) AS revenue, sum(margin) AS margin
        FROM o WHERE ts >= {ts_literal(start)} GROUP BY 1 ORDER BY 1""",
    )


def value_by_segment(
    con: duckdb.DuckDBPyConnection, segments: pd.DataFrame, column: str, start: datetime, end: datetime
) -> pd.DataFrame:
    """What each segment at the period's start was worth during the period.

    ``segments``: ``customer_id`` and ``column`` as of ``start`` (a feature snapshot). Per segment:
    customers, the share of them who bought, revenue and margin per customer (every member counted,
    buyers or not) and the segment's share of the period's revenue.
    """
    con.register("__report_seg", segments[["customer_id", column]])
    try:
        return _df(
            con,
            f"""
            WITH o AS ({orders_sql(end)}),
            v AS (SELECT customer_id, sum(amount) AS revenue, sum(margin) AS margin
                  FROM o WHERE ts >= {ts_literal(start)} GROUP BY 1)
            SELECT s."{column}" AS segment, count(*) AS customers,
                   avg(CASE WHEN v.customer_id IS NULL THEN 0.0 ELSE 1.0 END) AS buyer_share,
                   COALESCE(sum(v.revenue), 0) / count(*) AS revenue_per_customer,
                   COALESCE(sum(v.margin), 0) / count(*) AS margin_per_customer,
                   COALESCE(sum(v.revenue), 0) / nullif(sum(sum(v.revenue)) OVER (), 0) AS revenue_share
            FROM __report_seg s LEFT JOIN v USING (customer_id)
            GROUP BY 1 ORDER BY revenue_per_customer DESC, segment""",
        )
    finally:
        con.unregister("__report_seg")


def clv_deciles(con: duckdb.DuckDBPyConnection, scores: pd.DataFrame) -> pd.DataFrame:
    """CLV deciles (10 = highest): customers, mean, min and max CLV and the decile's share of the total.

    ``scores``: ``customer_id`` and ``clv``. Deciles are ``NTILE(10)`` over CLV, ties broken by
    customer id so the result does not depend on row order.
    """
    con.register("__report_clv", scores[["customer_id", "clv"]])
    try:
        return _df(
            con,
            """
            WITH d AS (SELECT clv, ntile(10) OVER (ORDER BY clv, customer_id) AS decile FROM __report_clv)
            SELECT decile, count(*) AS customers, avg(clv) AS mean_clv, min(clv) AS min_clv, max(clv) AS max_clv,
                   sum(clv) / nullif(sum(sum(clv)) OVER (), 0) AS share_of_clv
            FROM d GROUP BY 1 ORDER BY 1""",
        )
    finally:
        con.unregister("__report_clv")


def channel_groups(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime, retention_days: int) -> pd.DataFrame:
    """Online-only, offline-only and omni-channel buyers and what each group is worth.

    Groups are formed on the orders in ``[start, end - retention_days)``: a customer whose orders
    there were all online (``schema.ONLINE_CHANNELS``) is ``online only``, all offline
    (``schema.OFFLINE_CHANNELS``) ``offline only``, both ``both``. Per group: customers, orders
    and spend per customer and AOV over that span, and ``retention``: the share with an order in
    the last ``retention_days`` of the period. Empty when the period is not longer than that.
    """
    mid = end - timedelta(days=retention_days)
    if mid <= start:
        return pd.DataFrame(
            columns=["group", "customers", "orders_per_customer", "spend_per_customer", "aov", "retention"]
        )
    on, off = in_list(schema.ONLINE_CHANNELS), in_list(schema.OFFLINE_CHANNELS)
    return _df(
        con,
        f"""
        WITH o AS ({orders_sql(end)}),
        g AS (
            SELECT customer_id, count(*) AS orders, sum(amount) AS spend,
                   bool_or(channel IN {on}) AS online, bool_or(channel IN {off}) AS offline
            FROM o WHERE ts >= {ts_literal(start)} AND ts < {ts_literal(mid)} GROUP BY 1),
        later AS (SELECT DISTINCT customer_id FROM o WHERE ts >= {ts_literal(mid)})
        SELECT CASE WHEN online AND offline THEN 'both' WHEN online THEN 'online only'
                    WHEN offline THEN 'offline only' ELSE 'other' END AS "group",
               count(*) AS customers, avg(orders) AS orders_per_customer, avg(spend) AS spend_per_customer,
               sum(spend) / sum(orders) AS aov,
               avg(CASE WHEN later.customer_id IS NULL THEN 0.0 ELSE 1.0 END) AS retention
        FROM g LEFT JOIN later USING (customer_id)
        GROUP BY 1 ORDER BY 1""",
    )


def channel_mix(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> pd.DataFrame:
    """Per month and purchase channel: orders, revenue and the channel's share of the month's revenue."""
    return _df(
        con,
        f"""
        WITH o AS ({orders_sql(end)}), months AS ({months_sql(start, end)})
        SELECT m.month, COALESCE(o.channel, 'unknown') AS channel, count(*) AS orders, sum(o.amount) AS revenue,
               sum(o.amount) / nullif(sum(sum(o.amount)) OVER (PARTITION BY m.month), 0) AS revenue_share
        FROM months m JOIN o ON o.ts >= m.m0 AND o.ts < m.m1
        GROUP BY 1, 2 ORDER BY 1, 2""",
    )


def nps_sql(score: str) -> str:
    """SQL aggregates of NPS and its 95% interval over the rows of a group.

    Each answer counts +1 (score 9-10, promoter), 0 (7-8) or -1 (0-6, detractor); NPS is 100 times
    their mean and its standard error ``100 * sqrt((p + d - (p - d)^2) / n)`` (p, d: the promoter
    and detractor shares), so the interval is NPS +/- 1.96 SE (normal approximation), clipped to
    [-100, 100].
    """
    p = f"avg(CASE WHEN {score} >= 9 THEN 1.0 ELSE 0.0 END)"
    d = f"avg(CASE WHEN {score} <= 6 THEN 1.0 ELSE 0.0 END)"
    se = f"100 * sqrt(({p} + {d} - power({p} - {d}, 2)) / count(*))"
    return (
        f"count(*) AS responses, {p} AS promoters, {d} AS detractors, 100 * ({p} - {d}) AS nps, "
        f"greatest(-100, 100 * ({p} - {d}) - {Z95} * {se}) AS nps_low, "
        f"least(100, 100 * ({p} - {d}) + {Z95} * {se}) AS nps_high"
    )


def nps_by_month(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> pd.DataFrame:
    """NPS with its 95% interval per month of the period (survey answers of the month)."""
    return _df(
        con,
        f"""
        WITH months AS ({months_sql(start, end)})
        SELECT m.month, {nps_sql("s.score")}
        FROM months m JOIN {schema.SURVEYS} s ON s.ts >= m.m0 AND s.ts < m.m1 AND s.score IS NOT NULL
        GROUP BY 1 ORDER BY 1""",
    )


def nps_by_segment(
    con: duckdb.DuckDBPyConnection, segments: pd.DataFrame, column: str, start: datetime, end: datetime
) -> pd.DataFrame:
    """NPS with its 95% interval over the period's answers, per segment at the period's start."""
    con.register("__report_nseg", segments[["customer_id", column]])
    try:
        return _df(
            con,
            f"""
            SELECT COALESCE(g."{column}", 'not known') AS segment, {nps_sql("s.score")}
            FROM {schema.SURVEYS} s LEFT JOIN __report_nseg g USING (customer_id)
            WHERE s.ts >= {ts_literal(start)} AND s.ts < {ts_literal(end)} AND s.score IS NOT NULL
            GROUP BY 1 ORDER BY 1""",
        )
    finally:
        con.unregister("__report_nseg")


def service_nps_churn(
    con: duckdb.DuckDBPyConnection, start: datetime, end: datetime, contact_days: int, churn_days: int
) -> pd.DataFrame:
    """Service contacts before a survey answer, the answer's NPS, and churn after it.

    Per answer in the period whose ``churn_days`` after it end before ``end``: its customer's
    service contacts in the ``contact_days`` before it (0, 1, 2+). Per group: NPS with its interval
    and ``churn``, the share of answers after which the customer placed no order in ``churn_days``.
    """
    return _df(
        con,
        f"""
        WITH o AS ({orders_sql(end)}),
        a AS (
            SELECT s.customer_id, s.ts, s.score FROM {schema.SURVEYS} s
            WHERE s.ts >= {ts_literal(start)} AND s.ts + INTERVAL {int(churn_days)} DAY <= {ts_literal(end)}
              AND s.score IS NOT NULL),
        c AS (
            SELECT a.customer_id, a.ts, count(e.event_id) AS contacts
            FROM a LEFT JOIN {schema.EVENTS} e ON e.customer_id = a.customer_id AND e.event_type = 'service_contact'
              AND e.ts < a.ts AND e.ts >= a.ts - INTERVAL {int(contact_days)} DAY
            GROUP BY 1, 2),
        b AS (
            SELECT a.customer_id, a.ts, bool_or(o.ts IS NOT NULL) AS bought
            FROM a LEFT JOIN o ON o.customer_id = a.customer_id AND o.ts >= a.ts
              AND o.ts < a.ts + INTERVAL {int(churn_days)} DAY
            GROUP BY 1, 2),
        x AS (
            SELECT DISTINCT a.customer_id, a.ts, a.score, c.contacts, b.bought FROM a
            JOIN c USING (customer_id, ts) JOIN b USING (customer_id, ts))
        SELECT CASE WHEN contacts = 0 THEN '0' WHEN contacts = 1 THEN '1' ELSE '2+' END AS service_contacts,
               {nps_sql("score")}, avg(CASE WHEN bought THEN 0.0 ELSE 1.0 END) AS churn
        FROM x GROUP BY 1 ORDER BY 1""",
    )


def has_rows(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether a store table holds any row."""
    return bool(con.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0])


def as_float(values: pd.Series) -> np.ndarray:
    """A column as a float array (NULLs as NaN)."""
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
