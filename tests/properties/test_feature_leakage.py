"""Point-in-time law as a property: rows at or after the cutoff T never change the snapshot at T."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnicrm import schema
from omnicrm.features import FeatureConfig, build_features
from omnicrm.features import snapshot as snapshot_module

pytestmark = pytest.mark.property

ORIGIN = datetime(2024, 1, 1)
KNOWN = [f"c{i}" for i in range(5)]
NEW = ["n0", "n1"]
# windows that are short relative to the drawn time range, so rows fall on both sides of bounds
CONFIG = FeatureConfig(
    windows=[7, 30],
    trend={"days": 10},
    categories={"days": 30, "shares": ["a"]},
    channels={"days": 30},
    engagement={"days": 15, "visit_windows": [5, 20]},
    returns={"days": 30},
    service={"windows": [10]},
    contacts={"days": 5},
    lifecycle={"new_days": 10, "active_days": 5, "at_risk_days": 15, "dormant_days": 40},
    rfm={"window_days": 20},
)


def instants(lo_days: int, hi_days: int) -> st.SearchStrategy[datetime]:
    """Instants around ORIGIN at µs resolution, biased to whole minutes so that ties happen."""
    micros = st.integers(lo_days * 86_400_000_000, hi_days * 86_400_000_000)
    minutes = st.integers(lo_days * 1440, hi_days * 1440).map(lambda m: m * 60_000_000)
    return st.one_of(minutes, micros).map(lambda us: ORIGIN + timedelta(microseconds=us))


def after(cutoff: datetime) -> st.SearchStrategy[datetime]:
    """Instants at or after ``cutoff``, often exactly at it."""
    return st.one_of(
        st.just(cutoff),
        st.integers(0, 60 * 86_400_000_000).map(lambda us: cutoff + timedelta(microseconds=us)),
    )


amounts = st.floats(0.01, 500.0, allow_nan=False).map(lambda x: round(x, 2))
any_amounts = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))


ANY_CHANNEL = st.sampled_from(schema.CHANNELS)


def event_rows(customers, times, amount, channels=ANY_CHANNEL):
    return st.tuples(
        customers,
        times,
        channels,
        st.sampled_from(schema.EVENT_TYPES),
        st.sampled_from(["o1", "o2", "o3", None]),
        st.sampled_from(["p1", "p2", None]),
        st.sampled_from(["a", "b", "c", None]),
        st.one_of(st.none(), st.floats(-5, 5, allow_nan=False)),
        amount,
    )


def survey_rows(customers, times):
    return st.tuples(customers, times, st.integers(0, 10))


def treatment_rows(customers, times):
    return st.tuples(
        customers,
        times,
        st.sampled_from(["k1", "k2"]),
        st.sampled_from(["coupon", "email_offer"]),
        st.sampled_from(["email", "push", "sms"]),
        st.sampled_from(schema.TREATMENT_GROUPS),
        st.floats(0, 10, allow_nan=False),
    )


@st.composite
def stores(draw):
    """A small store, a cutoff T inside its time range, and a batch of rows at or after T."""
    cutoff = draw(instants(-30, 60))
    known = st.sampled_from(KNOWN)
    history = instants(-90, 90)  # before and after T: the store itself may hold later rows
    store = {
        "customers": [(c, draw(instants(-120, 60))) for c in KNOWN],
        "events": draw(st.lists(event_rows(known, history, amounts), max_size=40)),
        "surveys": draw(st.lists(survey_rows(known, history), max_size=6)),
        "treatments": draw(st.lists(treatment_rows(known, history), max_size=6)),
    }
    anyone = st.sampled_from(KNOWN + NEW)
    future = after(cutoff)
    channels = st.one_of(st.none(), st.sampled_from(schema.CHANNELS), st.text(max_size=3))
    batch = {
        # new customers only become known at or after T (an earlier first_seen is not the future)
        "customers": [(c, draw(future)) for c in draw(st.lists(st.sampled_from(NEW), unique=True))],
        "events": draw(st.lists(event_rows(anyone, future, any_amounts, channels), max_size=25)),
        "surveys": draw(st.lists(survey_rows(anyone, future), max_size=5)),
        "treatments": draw(st.lists(treatment_rows(anyone, future), max_size=5)),
    }
    return cutoff, store, batch


def insert(con: duckdb.DuckDBPyConnection, rows: dict[str, list[tuple]], offset: int) -> None:
    for cid, first_seen in rows["customers"]:
        con.execute(
            f"INSERT INTO {schema.CUSTOMERS} VALUES (?, ?, 'north', 'web', true, false, true, 1)",
            [cid, first_seen],
        )
    if rows["events"]:
        con.executemany(
            f"INSERT INTO {schema.EVENTS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [[f"e{offset + i}", *r] for i, r in enumerate(rows["events"])],
        )
    if rows["surveys"]:
        con.executemany(f"INSERT INTO {schema.SURVEYS} VALUES (?, ?, ?)", [list(r) for r in rows["surveys"]])
    if rows["treatments"]:
        con.executemany(
            f"INSERT INTO {schema.TREATMENTS} VALUES (?, ?, ?, ?, ?, ?, ?)",
            [list(r) for r in rows["treatments"]],
        )


def new_store(rows: dict[str, list[tuple]]) -> duckdb.DuckDBPyConnection:
    """An in-memory store with the contract tables and ``rows``."""
    con = duckdb.connect()
    for table in (schema.CUSTOMERS, schema.EVENTS, schema.SURVEYS, schema.TREATMENTS):
        con.execute(schema.create_table_sql(table))
    insert(con, rows, 0)
    return con


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores())
def test_rows_at_or_after_cutoff_do_not_change_the_snapshot(case):
    cutoff, store, batch = case
    con = new_store(store)
    before = build_features(con, [cutoff], CONFIG)
    insert(con, batch, 10_000)
    after_append = build_features(con, [cutoff], CONFIG)
    pd.testing.assert_frame_equal(before, after_append, check_exact=True)
    # and the snapshot is the set of customers known before T, whatever the batch added
    known = sorted(c for c, first_seen in store["customers"] if first_seen < cutoff)
    assert before["customer_id"].tolist() == known


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores())
def test_snapshots_computed_by_customer_range_obey_the_same_law(case):
    # On one DuckDB thread (model code) a large base is computed a range of customers at a time,
    # the ranges drawn from the customers known before T: here two customers per range, so the
    # five known customers make three ranges, computed in parallel and scored together for RFM.
    cutoff, store, batch = case
    con = new_store(store)
    con.execute("SET threads TO 1")
    whole = build_features(con, [cutoff], CONFIG)
    # declared in customer order as omnicrm ingest writes it (ranges are used only then; they give
    # the same rows in any order, the order only decides which row groups a range reads)
    con.execute(schema.create_table_sql(schema.STORE_META))
    con.execute(f"INSERT INTO {schema.STORE_META} VALUES ('{schema.EVENTS_ORDER_KEY}', '{schema.EVENTS_ORDER}')")
    saved, snapshot_module.CUSTOMERS_PER_QUERY = snapshot_module.CUSTOMERS_PER_QUERY, 2
    try:
        before = build_features(con, [cutoff], CONFIG)
        insert(con, batch, 10_000)
        after_append = build_features(con, [cutoff], CONFIG)
    finally:
        snapshot_module.CUSTOMERS_PER_QUERY = saved
    pd.testing.assert_frame_equal(before, after_append, check_exact=True)
    # the ranges give the whole snapshot: the same rows and values (sums to their last bits)
    pd.testing.assert_frame_equal(before, whole, check_exact=False, rtol=1e-12)
