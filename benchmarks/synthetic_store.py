"""Synthetic unified store for the feature benchmark, generated with numpy straight into DuckDB.

This is *not* the package's synthetic world (``omnicrm.synthetic``, which knows ground truth such
as churn hazards); it only needs realistic volumes and shapes for timing: skewed activity per
customer, multi-line orders on three purchase channels, returns referring to orders, marketing and
service events, surveys and campaign treatments. Every timestamp of a customer is at or after their
``first_seen``, as ingest guarantees.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from omnicrm.schema import CUSTOMERS, EVENTS, SURVEYS, TREATMENTS, create_table_sql

START = np.datetime64("2021-01-01T00:00:00", "us")
END = np.datetime64("2025-01-01T00:00:00", "us")
CATEGORIES = ("grocery", "fashion", "beauty", "home", "electronics", "toys", "sports", "books")
#: Non-purchase event types and their share of the non-purchase events.
OTHER_TYPES = {
    "visit": 0.40,
    "email_sent": 0.25,
    "email_open": 0.09,
    "email_click": 0.03,
    "push_sent": 0.09,
    "push_open": 0.03,
    "return": 0.04,
    "service_contact": 0.07,
}
#: Fraction of events that are purchase lines.
PURCHASE_LINE_SHARE = 0.30


def _sql_list(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def generate_store(con: duckdb.DuckDBPyConnection, n_events: int, n_customers: int, seed: int = 0) -> None:
    """Create and fill ``customers``, ``events``, ``surveys`` and ``treatments`` in ``con``.

    Parameters
    ----------
    con
        Connection to an empty database.
    n_events
        Approximate number of event rows (exact up to rounding of order sizes).
    n_customers
        Number of customers.
    seed
        Seed of the numpy generator; the same arguments give the same store.
    """
    rng = np.random.default_rng(seed)
    span = (END - START).astype(np.int64)  # µs
    start_us = START.astype(np.int64)

    # --- customers: first_seen spread over the period, activity heavily skewed (gamma weights)
    first_seen = start_us + (rng.random(n_customers) * 0.95 * span).astype(np.int64)
    weight = rng.gamma(0.6, 1.0, n_customers)
    weight /= weight.sum()
    cust = pd.DataFrame(
        {
            "c": np.arange(n_customers, dtype=np.int64),
            "first_seen_us": first_seen,
            "region": rng.integers(0, 5, n_customers),
            "signup": rng.integers(0, 3, n_customers),
            "consent": rng.random(n_customers),
        }
    )
    for table in (CUSTOMERS, EVENTS, SURVEYS, TREATMENTS):
        con.execute(create_table_sql(table))
    con.register("cust_src", cust)
    con.execute(
        f"""
        INSERT INTO {CUSTOMERS}
        SELECT printf('C%07d', c), make_timestamp(first_seen_us),
               ['north', 'south', 'east', 'west', 'centre'][region + 1],
               ['store', 'web', 'app'][signup + 1],
               consent < 0.7, consent < 0.3, consent < 0.5, 1
        FROM cust_src
        """
    )
    con.unregister("cust_src")

    def times_for(owner: np.ndarray) -> np.ndarray:
        # uniform between the owner's first_seen and the end of the period
        lo = first_seen[owner]
        return lo + (rng.random(owner.size) * (END.astype(np.int64) - lo)).astype(np.int64)

    # --- purchases: orders with 1..n lines on one channel
    n_lines_target = int(n_events * PURCHASE_LINE_SHARE)
    n_orders = max(1, int(n_lines_target / 2.0))
    order_cust = rng.choice(n_customers, n_orders, p=weight)
    order_ts = times_for(order_cust)
    order_channel = rng.choice(3, n_orders, p=[0.55, 0.30, 0.15])  # store, web, app
    lines_per_order = 1 + rng.poisson(1.0, n_orders)
    line_order = np.repeat(np.arange(n_orders), lines_per_order)
    n_lines = line_order.size
    cat = rng.choice(len(CATEGORIES), n_lines, p=[0.3, 0.15, 0.12, 0.12, 0.08, 0.08, 0.08, 0.07])
    qty = 1 + rng.poisson(0.4, n_lines)
    price = np.round(rng.lognormal(3.0, 0.8, n_lines), 2)

    # --- other events
    n_other = max(0, n_events - n_lines)
    other_cust = rng.choice(n_customers, n_other, p=weight)
    other_ts = times_for(other_cust)
    other_type = rng.choice(len(OTHER_TYPES), n_other, p=list(OTHER_TYPES.values()))

    purchases = pd.DataFrame(
        {
            "c": order_cust[line_order],
            "ts_us": order_ts[line_order],
            "kind": np.zeros(n_lines, dtype=np.int64),  # index into the type list below
            "ch": order_channel[line_order],
            "o": line_order,
            "cat": cat,
            "qty": qty.astype(np.float64),
            "amount": np.round(price * qty, 2),
        }
    )
    others = pd.DataFrame(
        {
            "c": other_cust,
            "ts_us": other_ts,
            "kind": other_type + 1,
            "ch": rng.integers(0, 3, n_other),
            "o": rng.integers(0, n_orders, n_other),
            "cat": rng.integers(0, len(CATEGORIES), n_other),
            "qty": np.ones(n_other),
            "amount": np.round(rng.lognormal(3.0, 0.8, n_other), 2),
        }
    )
    src = pd.concat([purchases, others], ignore_index=True)
    del purchases, others
    src = src.sort_values("ts_us", kind="stable", ignore_index=True)  # an append-only log
    types = ("purchase",) + tuple(OTHER_TYPES)
    con.register("ev_src", src)
    # channel by type: purchases/returns/visits on store/web/app, messages on their own channel
    con.execute(
        f"""
        INSERT INTO {EVENTS}
        SELECT printf('E%09d', row_number() OVER ()), printf('C%07d', c), make_timestamp(ts_us),
               CASE WHEN kind IN (0, 1, 7) THEN ['store', 'web', 'app'][ch + 1]
                    WHEN kind BETWEEN 2 AND 4 THEN 'email'
                    WHEN kind BETWEEN 5 AND 6 THEN 'push'
                    ELSE ['phone', 'chat', 'phone'][ch + 1] END,
               {_sql_list(types)}[kind + 1],
               CASE WHEN kind IN (0, 7) THEN printf('O%09d', o) END,
               CASE WHEN kind IN (0, 7) THEN printf('P%05d', (o * 7 + cat) % 20000) END,
               CASE WHEN kind IN (0, 7) THEN {_sql_list(CATEGORIES)}[cat + 1] END,
               CASE WHEN kind IN (0, 7) THEN qty END,
               CASE WHEN kind IN (0, 7) THEN amount END
        FROM ev_src
        """
    )
    con.unregister("ev_src")
    del src

    # --- surveys (~ one per 25 customers per year) and treatments
    n_surveys = max(1, n_customers // 6)
    s_cust = rng.integers(0, n_customers, n_surveys)
    surveys = pd.DataFrame({"c": s_cust, "ts_us": times_for(s_cust), "score": rng.integers(0, 11, n_surveys)})
    con.register("sv_src", surveys)
    con.execute(
        f"INSERT INTO {SURVEYS} SELECT printf('C%07d', c), make_timestamp(ts_us), score FROM sv_src ORDER BY ts_us"
    )
    con.unregister("sv_src")
    n_treat = max(1, n_customers // 2)
    t_cust = rng.integers(0, n_customers, n_treat)
    treat = pd.DataFrame(
        {
            "c": t_cust,
            "ts_us": times_for(t_cust),
            "camp": rng.integers(0, 40, n_treat),
            "grp": (rng.random(n_treat) < 0.8).astype(np.int64),
        }
    )
    con.register("tr_src", treat)
    con.execute(
        f"""
        INSERT INTO {TREATMENTS}
        SELECT printf('C%07d', c), make_timestamp(ts_us), printf('K%03d', camp),
               ['email_offer', 'push_offer', 'coupon'][camp % 3 + 1],
               ['email', 'push', 'sms'][camp % 3 + 1],
               CASE WHEN grp = 1 THEN 'treatment' ELSE 'control' END,
               CASE WHEN grp = 1 THEN 0.05 ELSE 0.0 END
        FROM tr_src ORDER BY ts_us
        """
    )
    con.unregister("tr_src")
