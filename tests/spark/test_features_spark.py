"""The feature SQL gives the same snapshot on Spark as on DuckDB (DESIGN.md: one definition, two engines).

A small hand-made store exercises every feature group and the places where the engines could
disagree: sub-second and microsecond times (fractional days), a cutoff with microseconds and one
given as a date, rows exactly at a cutoff, ties (RFM ranks, the top category, surveys at the same
time, one with a NULL score), a single purchase day (no gap), zero spend, a NULL category,
category names with a quote and a backslash, returns larger than purchases, customers first seen
at or after a cutoff.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import duckdb
import pandas as pd
import pytest

from omnicrm import schema
from omnicrm.features import FEATURE_GROUPS, FeatureConfig, build_features, feature_dtypes

pytest.importorskip("pyspark")

from omnicrm.features.spark import FEATURE_TABLES, build_features_spark, register_store_views  # noqa: E402

pytestmark = pytest.mark.spark

T1 = datetime(2024, 7, 1)
T2 = datetime(2024, 3, 15, 12, 0, 0, 250_000)
T3 = date(2023, 10, 1)  # a date: midnight UTC
CUTOFFS = [T1, T2, T3]
US = timedelta(microseconds=1)

CUSTOMERS = [
    ("a", datetime(2023, 1, 1)),  # rich history, every kind of event
    ("b", datetime(2023, 5, 1)),  # one purchase day (no gap); latest survey has no score
    ("c", T1 - timedelta(seconds=1)),  # first seen 1 s before T1, buys 1 µs before T1
    ("d", datetime(2022, 6, 1)),  # never buys: prospect with messages, visits, service, treatments
    ("e", datetime(2024, 8, 1)),  # first seen after every cutoff: in no snapshot
    ("f", datetime(2023, 2, 1)),  # f and g: identical purchases (RFM rank ties)
    ("g", datetime(2023, 2, 1)),
    ("h", datetime(2023, 3, 1)),  # category edge cases, returns above purchases
    ("i", datetime(2023, 8, 1)),  # buys exactly at T2 and 1 µs before; tied surveys
    ("j", T2),  # first seen exactly at T2: not in the T2 snapshot
]


def purchase(cid, ts, channel, order_id, category, amount):
    return (cid, ts, channel, "purchase", order_id, "p1", category, 1.0, amount)


def event(cid, ts, event_type, channel="email", amount=None):
    return (cid, ts, channel, event_type, None, None, None, None, amount)


EVENTS = [
    # a: o1 has two lines; o5's lines straddle midnight (the order's time is its first line's);
    # one line without an order id is an order of its own; the purchase at T1 is not read at T1
    purchase("a", datetime(2024, 6, 21, 10), "store", "o1", "food", 30.0),
    purchase("a", datetime(2024, 6, 21, 10), "store", "o1", "toys", 10.0),
    purchase("a", datetime(2024, 5, 2, 12), "web", "o2", "food", 20.0),
    purchase("a", datetime(2024, 1, 3), "app", "o3", "food", 40.0),
    purchase("a", datetime(2023, 11, 30, 23, 59, 59), "web", "o5", "toys", 15.25),
    purchase("a", datetime(2023, 12, 1, 0, 0, 1), "web", "o5", "Kid's toys", 4.75),
    purchase("a", datetime(2023, 8, 15, 9, 30), "app", None, "Kid's toys", 12.5),
    purchase("a", T1, "web", "o6", "food", 1000.0),
    event("a", datetime(2024, 6, 25), "return", "store", 10.0),
    event("a", datetime(2023, 12, 10), "return", "web", 5.0),
    event("a", datetime(2024, 6, 10), "email_sent"),
    event("a", datetime(2024, 4, 15), "email_sent"),
    event("a", datetime(2024, 2, 1), "email_sent"),
    event("a", datetime(2024, 6, 11), "email_open"),
    event("a", datetime(2024, 2, 2), "email_open"),
    event("a", datetime(2024, 6, 11, 0, 5), "email_click"),
    event("a", datetime(2024, 6, 28), "push_sent", "push"),
    event("a", datetime(2024, 3, 1), "push_sent", "push"),
    event("a", datetime(2024, 6, 28, 1), "push_open", "push"),
    event("a", datetime(2024, 6, 15), "visit", "web"),
    event("a", datetime(2024, 3, 1), "visit", "app"),
    event("a", datetime(2023, 9, 1), "visit", "store"),
    event("a", datetime(2024, 5, 1), "service_contact", "phone"),
    event("a", datetime(2023, 11, 11), "service_contact", "chat"),
    event("a", T1, "visit", "web"),
    # b
    purchase("b", datetime(2023, 9, 10, 15), "store", "b1", "home", 50.0),
    event("b", datetime(2023, 9, 1), "email_sent"),
    event("b", datetime(2023, 9, 2), "email_click"),
    # c
    purchase("c", T1 - US, "web", "c1", "food", 3.0),
    # d
    event("d", datetime(2024, 6, 30, 23), "email_sent"),
    event("d", datetime(2024, 6, 29), "push_sent", "push"),
    event("d", datetime(2024, 6, 20), "visit", "web"),
    event("d", datetime(2024, 1, 20), "service_contact", "phone"),
    # e (after every cutoff)
    purchase("e", datetime(2024, 7, 15), "web", "e1", "food", 99.0),
    # f and g: same days, channels and amounts
    purchase("f", datetime(2024, 2, 10, 8), "store", "f1", "food", 25.0),
    purchase("f", datetime(2023, 12, 20, 8), "web", "f2", "toys", 25.0),
    purchase("g", datetime(2024, 2, 10, 8), "store", "g1", "food", 25.0),
    purchase("g", datetime(2023, 12, 20, 8), "web", "g2", "toys", 25.0),
    # h: a tie for the top category (ties go to the first name: "Kid's toys" < "a\b"), a line
    # without category, a zero-amount line, returns above spend
    purchase("h", datetime(2024, 1, 5, 11), "store", "h1", "Kid's toys", 20.0),
    purchase("h", datetime(2024, 1, 5, 11), "store", "h1", "a\\b", 20.0),
    purchase("h", datetime(2024, 2, 20), "web", "h2", None, 7.5),
    purchase("h", datetime(2024, 2, 21), "app", "h3", "food", 0.0),
    event("h", datetime(2024, 2, 25), "return", "store", 60.0),
    # i: exactly at T2 (not read at T2) and 1 µs before
    purchase("i", T2, "web", "i1", "food", 10.0),
    purchase("i", T2 - US, "app", "i2", "toys", 10.0),
    purchase("i", datetime(2023, 9, 30, 23, 59, 59, 999_999), "store", "i3", "food", 5.5),
    # j
    purchase("j", datetime(2024, 4, 1), "store", "j1", "food", 8.0),
]
SURVEYS = [
    ("a", datetime(2024, 2, 1), 9),
    ("a", datetime(2024, 6, 1), 3),
    ("b", datetime(2023, 9, 20), 6),
    ("b", datetime(2023, 9, 25), None),
    ("i", datetime(2024, 3, 1), 7),  # three at the same time: the highest score wins
    ("i", datetime(2024, 3, 1), None),
    ("i", datetime(2024, 3, 1), 5),
    ("i", T2, 2),  # at T2: read at T1 only
]
TREATMENTS = [
    ("a", datetime(2024, 6, 20), "k1", "coupon", "email", "treatment", 1.0),
    ("a", datetime(2024, 6, 22), "k2", "coupon", "email", "control", 0.0),
    ("d", datetime(2024, 6, 30, 23), "k3", "coupon", "push", "treatment", 1.0),
    ("d", datetime(2024, 3, 10), "k4", "coupon", "push", "treatment", 1.0),
    ("f", datetime(2024, 3, 14), "k5", "coupon", "email", "treatment", 1.0),
]
CONFIG = FeatureConfig(categories={"shares": ["food", "Kid's toys", "a\\b"]})


@pytest.fixture(scope="module")
def store() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for table in FEATURE_TABLES:
        con.execute(schema.create_table_sql(table))
    for cid, first_seen in CUSTOMERS:
        con.execute(
            f"INSERT INTO {schema.CUSTOMERS} VALUES (?, ?, 'north', 'web', true, true, true, 1)", [cid, first_seen]
        )
    con.executemany(
        f"INSERT INTO {schema.EVENTS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(f"e{i}", *row) for i, row in enumerate(EVENTS)],
    )
    con.executemany(f"INSERT INTO {schema.SURVEYS} VALUES (?, ?, ?)", SURVEYS)
    con.executemany(f"INSERT INTO {schema.TREATMENTS} VALUES (?, ?, ?, ?, ?, ?, ?)", TREATMENTS)
    return con


@pytest.fixture(scope="module")
def views(spark, store):
    return register_store_views(spark, store)


def assert_same(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same columns, dtypes and rows; ints, strings and times exact, floats to rtol 1e-9."""
    assert list(actual.columns) == list(expected.columns)
    assert actual.dtypes.to_dict() == expected.dtypes.to_dict()
    floats = [c for c in expected.columns if expected[c].dtype == "float64"]
    others = [c for c in expected.columns if c not in floats]
    pd.testing.assert_frame_equal(actual[others], expected[others], check_exact=True)
    pd.testing.assert_frame_equal(actual[floats], expected[floats], check_exact=False, rtol=1e-9, atol=0)


def test_store_exercises_every_feature(store):
    """Guard on the fixture: every feature column takes at least two values across the snapshots."""
    frame = build_features(store, CUTOFFS, CONFIG)
    assert set(CONFIG.groups) == set(FEATURE_GROUPS)
    assert sorted(frame.loc[frame.cutoff == T1, "customer_id"]) == list("abcdfghij")
    assert "j" not in set(frame.loc[frame.cutoff == T2, "customer_id"])
    flat = [c for c in frame.columns if c not in ("customer_id", "cutoff") and frame[c].nunique(dropna=False) < 2]
    assert not flat


def test_spark_snapshot_equals_duckdb(spark, store, views):
    expected = build_features(store, CUTOFFS, CONFIG)
    actual = build_features_spark(spark, CUTOFFS, CONFIG)
    assert_same(actual, expected)
    assert list(actual.columns) == list(feature_dtypes(CONFIG))


def test_spark_other_settings_tables_mapping_and_zoned_timestamps(spark, store, views):
    """Another config; store tables given as DataFrames with zoned TIMESTAMP columns, read while the
    session is set to another time zone (build_features_spark runs in UTC and restores it)."""
    from pyspark.sql import functions as F

    config = FeatureConfig(
        windows=[7, 60],
        trend={"days": 30},
        categories={"days": 200, "shares": ["toys"]},
        engagement={"days": 30, "visit_windows": [10, 400]},
        service={"windows": [100]},
        contacts={"days": 7},
        rfm={"window_days": 100, "bins": 3, "high": 3, "mid": 2, "lost": 1},
    )
    zoned = {
        table: frame.select(
            *(
                F.col(c).cast("timestamp").alias(c) if t == "TIMESTAMP" else F.col(c)
                for c, t in schema.TABLES[table].items()
            )
        )
        for table, frame in views.items()
    }
    assert dict(zoned["events"].dtypes)["ts"] == "timestamp"
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        actual = build_features_spark(spark, [T1, T2], config, tables=zoned)
        assert spark.conf.get("spark.sql.session.timeZone") == "America/New_York"
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
    assert_same(actual, build_features(store, [T1, T2], config))


def test_spark_checks_arguments_like_duckdb(spark):
    with pytest.raises(ValueError, match="empty"):
        build_features_spark(spark, [], CONFIG)
    with pytest.raises(TypeError, match="sequence"):
        build_features_spark(spark, T1, CONFIG)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown store table"):
        build_features_spark(spark, [T1], CONFIG, tables={"orders": "x"})


def test_spark_selected_columns_equal_duckdb(spark, store, views):
    """A pruned query (FeatureConfig.columns: fewer sources and aggregates) runs on Spark too."""
    config = FeatureConfig(columns=["recency_days", "gap_std_days", "top_category_365d", "visits_30d", "rfm_segment"])
    expected = build_features(store, CUTOFFS, config)
    assert list(expected.columns[2:]) == config.columns
    assert_same(build_features_spark(spark, CUTOFFS, config), expected)
