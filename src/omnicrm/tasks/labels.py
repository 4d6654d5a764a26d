"""Populations and labels in SQL: who is scored at a cutoff ``T`` (``ts < T``) and what happens in ``[T, T+h)``.

The building blocks the task modules share. Every query takes the cutoff as a literal timestamp
and reads the store's ``events``, ``customers`` and ``products`` tables. The population reads only
rows before ``T``; a label reads only rows in ``[T, T+h)``; nothing here reads both sides of the
cutoff for the same column.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from omnicrm.sql import in_list, ts_literal

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from omnicrm.tasks.base import Population

#: raw outcome columns :func:`with_purchase_outcomes` adds; a task derives its labels and drops them
OUTCOME_COLUMNS = ["purchases", "spend", "margin", "days_to_next"]


def population_sql(cutoff: datetime, pop: Population, consent: str | None = None) -> str:
    """``customer_id`` of customers with ``min_purchases`` purchases in ``[T - active_days, T)``."""
    start = cutoff - timedelta(days=pop.active_days)
    consent = consent or pop.consent
    join = ""
    if consent:
        join = f"JOIN customers c USING (customer_id) WHERE c.consent_{consent}"
    return f"""
        SELECT customer_id FROM (
            SELECT customer_id FROM events
            WHERE event_type = 'purchase' AND ts >= {ts_literal(start)} AND ts < {ts_literal(cutoff)}
            GROUP BY customer_id HAVING count(DISTINCT coalesce(order_id, event_id)) >= {pop.min_purchases}
        ) p {join}
    """


def _window(cutoff: datetime, days: int) -> str:
    return f"ts >= {ts_literal(cutoff)} AND ts < {ts_literal(cutoff + timedelta(days=days))}"


def purchase_outcomes_sql(cutoff: datetime, horizon_days: int, timing_max_days: int | None, margin: bool) -> str:
    """Per customer with a purchase in ``[T, T+max)``: purchases/spend/margin in the horizon, days to first."""
    span_end = ts_literal(cutoff + timedelta(days=max(horizon_days, timing_max_days or 0)))
    end = ts_literal(cutoff + timedelta(days=horizon_days))
    margin_expr = f"sum(CASE WHEN e.ts < {end} THEN e.quantity * p.margin END)" if margin else "NULL"
    join = "LEFT JOIN products p USING (product_id)" if margin else ""
    return f"""
        SELECT e.customer_id,
               count(DISTINCT CASE WHEN e.ts < {end} THEN coalesce(e.order_id, e.event_id) END) AS purchases,
               coalesce(sum(CASE WHEN e.ts < {end} THEN e.amount END), 0) AS spend,
               {margin_expr} AS margin,
               date_diff('second', {ts_literal(cutoff)}, min(e.ts)) / 86400.0 AS days_to_next
        FROM events e {join}
        WHERE e.event_type = 'purchase' AND e.ts >= {ts_literal(cutoff)} AND e.ts < {span_end}
        GROUP BY e.customer_id
    """


def events_sql(cutoff: datetime, horizon_days: int, event_types: list[str], where: str | None = None) -> str:
    """Customers with at least one event of ``event_types`` (matching ``where``) in ``[T, T+h)`` (label 1)."""
    cond = f"AND ({where})" if where else ""
    return f"""
        SELECT DISTINCT customer_id FROM events
        WHERE event_type IN {in_list(event_types)} AND {_window(cutoff, horizon_days)} {cond}
    """


def with_purchase_outcomes(
    con: duckdb.DuckDBPyConnection,
    cutoff: datetime,
    frame: pd.DataFrame,
    horizon_days: int,
    timing_max_days: int | None = None,
    margin: bool = False,
) -> pd.DataFrame:
    """``frame`` left-joined to :func:`purchase_outcomes_sql` (the :data:`OUTCOME_COLUMNS`)."""
    out = con.sql(purchase_outcomes_sql(cutoff, horizon_days, timing_max_days, margin)).df()
    return frame.merge(out, on="customer_id", how="left")


def has_margin(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the products carry a margin (clv then also models margin)."""
    return bool(con.sql(has_margin_sql()).fetchall()[0][0])


def has_margin_sql() -> str:
    """True when the products table has rows and at least one margin."""
    return "SELECT count(*) > 0 AND count(margin) > 0 FROM products"
