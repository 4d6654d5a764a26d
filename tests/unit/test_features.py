"""Point-in-time features on tiny inline stores whose answers are computed by hand below."""

from __future__ import annotations

import math
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlglot
from pydantic import ValidationError
from sqlglot import ErrorLevel

from omnicrm import schema
from omnicrm.config import load_config
from omnicrm.errors import ConfigError
from omnicrm.features import (
    FEATURE_GROUPS,
    LIFECYCLE_STAGES,
    RFM_SEGMENTS,
    FeatureConfig,
    build_features,
    feature_batches,
    feature_dtypes,
    feature_sql,
    sources,
    write_features,
)
from omnicrm.features import snapshot as snapshot_module
from omnicrm.features.snapshot import GROUP_BUILDERS
from omnicrm.sql import literal as sql_literal

REPO = Path(__file__).resolve().parents[2]
T = datetime(2024, 7, 1)


def ago(days: float) -> datetime:
    return T - timedelta(days=days)


def make_store(customers=(), events=(), surveys=(), treatments=()) -> duckdb.DuckDBPyConnection:
    """In-memory store with the contract tables; rows are tuples in contract column order.

    ``customers`` rows are ``(customer_id, first_seen)``; the other columns take defaults.
    ``events`` rows omit ``event_id`` (numbered here).
    """
    con = duckdb.connect()
    for table in (schema.CUSTOMERS, schema.EVENTS, schema.SURVEYS, schema.TREATMENTS):
        con.execute(schema.create_table_sql(table))
    for cid, first_seen in customers:
        con.execute(
            f"INSERT INTO {schema.CUSTOMERS} VALUES (?, ?, 'north', 'web', true, true, true, 1)",
            [cid, first_seen],
        )
    for i, row in enumerate(events):
        con.execute(f"INSERT INTO {schema.EVENTS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [f"e{i}", *row])
    for row in surveys:
        con.execute(f"INSERT INTO {schema.SURVEYS} VALUES (?, ?, ?)", list(row))
    for row in treatments:
        con.execute(f"INSERT INTO {schema.TREATMENTS} VALUES (?, ?, ?, ?, ?, ?, ?)", list(row))
    return con


def purchase(cid, ts, channel, order_id, category, amount, quantity=1.0):
    return (cid, ts, channel, "purchase", order_id, "p1", category, quantity, amount)


def event(cid, ts, event_type, channel="email", amount=None):
    return (cid, ts, channel, event_type, None, None, None, None, amount)


# --- the reference store ------------------------------------------------------------------------
# A: active, several orders, every kind of event; B: one purchase 213 days ago (dormant);
# C: first purchase 16 days ago (new); D: last purchase 547 days ago (churned); E: never bought
# (prospect); F: single purchase 122 days ago (at_risk); G first seen exactly at T and H after T
# are not in the snapshot.
CUSTOMERS = [
    ("A", datetime(2023, 1, 1)),
    ("B", datetime(2022, 1, 1)),
    ("C", datetime(2024, 6, 1)),
    ("D", datetime(2021, 1, 1)),
    ("E", datetime(2024, 1, 1)),
    ("F", datetime(2023, 6, 1)),
    ("G", T),
    ("H", datetime(2024, 8, 1)),
]
EVENTS = [
    # A: order o1 has two lines (one order), 9.583 days before T
    purchase("A", datetime(2024, 6, 21, 10), "store", "o1", "food", 30.0),
    purchase("A", datetime(2024, 6, 21, 10), "store", "o1", "toys", 10.0),
    purchase("A", datetime(2024, 5, 2, 12), "web", "o2", "food", 20.0),
    purchase("A", datetime(2024, 1, 3), "app", "o3", "food", 40.0),  # exactly T-180d
    purchase("A", T, "web", "o4", "food", 1000.0),  # exactly at T: must be ignored
    event("A", datetime(2024, 6, 25), "return", "store", 10.0),
    event("A", datetime(2024, 6, 10), "email_sent"),
    event("A", datetime(2024, 4, 15), "email_sent"),
    event("A", datetime(2024, 6, 11), "email_open"),
    event("A", datetime(2024, 6, 11), "email_click"),
    event("A", datetime(2024, 6, 28), "push_sent", "push"),
    event("A", datetime(2024, 6, 15), "visit", "web"),
    event("A", datetime(2024, 3, 1), "visit", "app"),  # 122 days: outside 90d
    event("A", datetime(2024, 5, 1), "service_contact", "phone"),
    event("A", T, "email_sent"),  # at T: ignored
    event("A", T, "visit", "web"),  # at T: ignored
    purchase("B", datetime(2023, 12, 1), "store", "b1", "home", 50.0),
    purchase("C", datetime(2024, 6, 15), "web", "c1", "food", 15.0),
    purchase("D", datetime(2023, 1, 1), "store", "d1", "food", 500.0),
    purchase("F", datetime(2024, 3, 1), "app", "f1", "toys", 25.0),
    purchase("G", datetime(2024, 7, 2), "web", "g1", "food", 5.0),
]
SURVEYS = [
    ("A", datetime(2024, 2, 1), 9),
    ("A", datetime(2024, 6, 1), 3),
    ("A", T, 10),  # at T: ignored
]
TREATMENTS = [
    ("A", datetime(2024, 6, 20), "k1", "coupon", "email", "treatment", 1.0),
    ("A", datetime(2024, 6, 22), "k2", "coupon", "email", "control", 0.0),
    ("A", T, "k3", "coupon", "email", "treatment", 1.0),  # at T: ignored
]


@pytest.fixture(scope="module")
def snapshot() -> pd.DataFrame:
    con = make_store(CUSTOMERS, EVENTS, SURVEYS, TREATMENTS)
    frame = build_features(con, [T], FeatureConfig(categories={"shares": ["food", "toys"]}))
    return frame.set_index("customer_id")


def test_rows_are_customers_first_seen_strictly_before_cutoff(snapshot):
    assert list(snapshot.index) == ["A", "B", "C", "D", "E", "F"]
    assert (snapshot["cutoff"] == T).all()


def test_rfm_values(snapshot):
    a = snapshot.loc["A"]
    assert a["recency_days"] == pytest.approx(9 + 14 / 24)
    assert a["orders_total"] == 3  # o1 (two lines) counts once, o4 at T not at all
    assert a["spend_total"] == pytest.approx(100.0)
    assert (a["orders_30d"], a["orders_90d"], a["orders_365d"]) == (1, 2, 3)
    assert (a["spend_30d"], a["spend_90d"], a["spend_365d"]) == pytest.approx((40.0, 60.0, 100.0))
    assert (a["aov_30d"], a["aov_90d"], a["aov_365d"]) == pytest.approx((40.0, 30.0, 100 / 3))
    e = snapshot.loc["E"]
    assert math.isnan(e["recency_days"]) and e["orders_total"] == 0 and e["spend_365d"] == 0.0
    assert math.isnan(e["aov_365d"])
    d = snapshot.loc["D"]
    assert (d["orders_total"], d["orders_365d"], d["spend_total"]) == (1, 0, 500.0)


def test_tenure(snapshot):
    assert snapshot.loc["A", "tenure_days"] == pytest.approx(547.0)
    assert snapshot.loc["A", "first_purchase_days"] == pytest.approx(180.0)
    assert math.isnan(snapshot.loc["E", "first_purchase_days"])


def test_gaps_between_distinct_purchase_days(snapshot):
    a = snapshot.loc["A"]
    # purchase days 2024-01-03, 2024-05-02, 2024-06-21: gaps 120 and 50 days
    assert a["purchase_days"] == 3
    assert a["gap_mean_days"] == pytest.approx(85.0)
    assert a["gap_std_days"] == pytest.approx(math.sqrt(35**2 + 35**2))
    assert a["gap_last_days"] == 50
    assert a["gap_overdue_ratio"] == pytest.approx((9 + 14 / 24) / 85.0)
    b = snapshot.loc["B"]
    assert b["purchase_days"] == 1
    assert b[["gap_mean_days", "gap_std_days", "gap_last_days"]].isna().all()


def test_trend_includes_the_window_start(snapshot):
    a = snapshot.loc["A"]
    # o3 lies exactly at T-180d, the inclusive start of the earlier window [T-180d, T-90d)
    assert a["spend_prev_90d"] == pytest.approx(40.0)
    assert a["spend_trend_90d"] == pytest.approx(60.0 / 40.0)
    assert a["orders_trend_90d"] == pytest.approx(2.0)
    assert math.isnan(snapshot.loc["C", "spend_trend_90d"])  # nothing before to compare with


def test_category_shares(snapshot):
    a = snapshot.loc["A"]
    assert a["n_categories_365d"] == 2
    assert a["category_entropy_365d"] == pytest.approx(-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)))
    assert a["top_category_365d"] == "food"
    assert a["top_category_share_365d"] == pytest.approx(0.9)
    assert a["category_share_food_365d"] == pytest.approx(0.9)
    assert a["category_share_toys_365d"] == pytest.approx(0.1)
    c = snapshot.loc["C"]
    assert c["category_entropy_365d"] == 0.0 and math.copysign(1, c["category_entropy_365d"]) == 1
    assert c["category_share_toys_365d"] == 0.0
    e = snapshot.loc["E"]
    assert e["n_categories_365d"] == 0 and pd.isna(e["top_category_365d"])


def test_top_category_tie_goes_to_first_name():
    con = make_store(
        [("X", datetime(2024, 1, 1))],
        [
            purchase("X", datetime(2024, 6, 1), "web", "x1", "zebra", 10.0),
            purchase("X", datetime(2024, 6, 1), "web", "x1", "apple", 10.0),
        ],
    )
    frame = build_features(con, [T], FeatureConfig(groups=["categories"]))
    assert frame.loc[0, "top_category_365d"] == "apple"
    assert frame.loc[0, "category_entropy_365d"] == pytest.approx(math.log(2))


def test_channel_mix(snapshot):
    a = snapshot.loc["A"]
    assert a["online_share_365d"] == pytest.approx(2 / 3)
    for ch in ("store", "web", "app"):
        assert a[f"channel_share_{ch}_365d"] == pytest.approx(1 / 3)
    assert math.isnan(snapshot.loc["D", "online_share_365d"])  # no order in the window


def test_engagement_returns_service_nps_contacts(snapshot):
    a = snapshot.loc["A"]
    assert a["email_sent_90d"] == 2
    assert a["email_open_rate_90d"] == pytest.approx(0.5)
    assert a["email_click_rate_90d"] == pytest.approx(0.5)
    assert a["push_sent_90d"] == 1 and a["push_open_rate_90d"] == 0.0
    assert (a["visits_30d"], a["visits_90d"]) == (1, 1)
    assert a["return_amount_365d"] == pytest.approx(10.0)
    assert a["returns_share_365d"] == pytest.approx(0.1)
    assert (a["service_contacts_90d"], a["service_contacts_365d"]) == (1, 1)
    assert a["last_nps_score"] == 3  # the survey at T (score 10) is not visible yet
    assert a["days_since_last_survey"] == pytest.approx(30.0)
    # e-mail on 06-10 + push on 06-28 + treatment on 06-20; the control exposure is no contact
    assert a["contacts_30d"] == 3
    b = snapshot.loc["B"]
    assert math.isnan(b["email_open_rate_90d"]) and math.isnan(b["last_nps_score"])
    assert b["contacts_30d"] == 0 and b["returns_share_365d"] == 0.0
    assert math.isnan(snapshot.loc["D", "returns_share_365d"])  # no purchase in the window


def test_lifecycle_stages(snapshot):
    assert snapshot["lifecycle_stage"].to_dict() == {
        "A": "active",
        "B": "dormant",
        "C": "new",
        "D": "churned",
        "E": "prospect",
        "F": "at_risk",
    }
    assert set(snapshot["lifecycle_stage"]) <= set(LIFECYCLE_STAGES)


@pytest.mark.parametrize(
    ("last_purchase_days_ago", "stage"),
    [(90, "active"), (90.5, "at_risk"), (180, "at_risk"), (181, "dormant"), (365, "dormant"), (366, "churned")],
)
def test_lifecycle_thresholds_are_inclusive(last_purchase_days_ago, stage):
    # two purchases so that the first one (400 days ago) rules out "new"
    con = make_store(
        [("X", ago(500))],
        [
            purchase("X", ago(400), "web", "x0", "food", 1.0),
            purchase("X", ago(last_purchase_days_ago), "web", "x1", "food", 1.0),
        ],
    )
    frame = build_features(con, [T], FeatureConfig(groups=["lifecycle"]))
    assert frame.loc[0, "lifecycle_stage"] == stage


def test_rfm_scores_within_cutoff_and_segments(snapshot):
    # purchasers A, B, C, D, F (n = 5): R by last purchase; F = orders, M = spend in 365 days
    scores = snapshot.loc[["A", "B", "C", "D", "F"], ["rfm_r", "rfm_f", "rfm_m"]]
    assert scores.to_dict("index") == {
        "A": {"rfm_r": 5, "rfm_f": 5, "rfm_m": 5},
        "B": {"rfm_r": 2, "rfm_f": 2, "rfm_m": 4},  # three customers tie on one order: rank 2
        "C": {"rfm_r": 4, "rfm_f": 2, "rfm_m": 2},
        "D": {"rfm_r": 1, "rfm_f": 1, "rfm_m": 1},  # bought before the window: F = M = 0
        "F": {"rfm_r": 3, "rfm_f": 2, "rfm_m": 3},
    }
    assert snapshot["rfm_segment"].to_dict() == {
        "A": "champions",
        "B": "at_risk",
        "C": "promising",
        "D": "lost",
        "E": "prospect",
        "F": "needs_attention",
    }
    assert snapshot.loc["E", ["rfm_r", "rfm_f", "rfm_m"]].isna().all()
    assert set(snapshot["rfm_segment"]) <= set(RFM_SEGMENTS)


def test_rfm_scores_are_ranked_per_cutoff():
    # Y's purchase is the latest at the first cutoff but not at the second
    con = make_store(
        [("X", datetime(2023, 1, 1)), ("Y", datetime(2023, 1, 1)), ("Z", datetime(2023, 1, 1))],
        [
            purchase("X", datetime(2024, 1, 1), "web", "x1", "food", 1.0),
            purchase("Y", datetime(2024, 2, 1), "web", "y1", "food", 1.0),
            purchase("Z", datetime(2024, 3, 1), "web", "z1", "food", 1.0),
        ],
    )
    frame = build_features(con, [date(2024, 2, 15), date(2024, 4, 1)], FeatureConfig())
    r = frame.set_index(["cutoff", "customer_id"])["rfm_r"]
    # n = 2 scored: 1 + floor(5 * 1 / 2) = 3; later n = 3: 1 + floor(5 * 1 / 3) = 2
    assert r[(datetime(2024, 2, 15), "Y")] == 3 and math.isnan(r[(datetime(2024, 2, 15), "Z")])
    assert r[(datetime(2024, 4, 1), "Y")] == 2 and r[(datetime(2024, 4, 1), "Z")] == 4


def test_hibernating_segment():
    # four purchasers; W bought second-earliest and little -> R = 2 of 4 bins, FM low
    con = make_store(
        [(c, datetime(2023, 1, 1)) for c in "VWXY"],
        [
            purchase("V", datetime(2024, 1, 1), "web", "v1", "food", 1.0),
            purchase("W", datetime(2024, 2, 1), "web", "w1", "food", 2.0),
            purchase("X", datetime(2024, 3, 1), "web", "x1", "food", 30.0),
            purchase("X", datetime(2024, 3, 2), "web", "x2", "food", 30.0),
            purchase("Y", datetime(2024, 4, 1), "web", "y1", "food", 40.0),
            purchase("Y", datetime(2024, 4, 2), "web", "y2", "food", 40.0),
        ],
    )
    cfg = FeatureConfig(groups=["rfm_segment"], rfm={"bins": 4, "high": 4, "mid": 3, "lost": 1})
    frame = build_features(con, [T], cfg).set_index("customer_id")
    # V: R1 F1 M1 -> lost; W: R2 F1 M2 -> hibernating; X: R3 F3 M3 -> loyal; Y: R4 F3 M4 -> loyal
    assert frame["rfm_segment"].to_dict() == {
        "V": "lost",
        "W": "hibernating",
        "X": "loyal",
        "Y": "loyal",
    }


def test_event_exactly_at_cutoff_is_not_counted():
    con = make_store(
        [("X", datetime(2024, 1, 1))],
        [
            purchase("X", T - timedelta(microseconds=1), "web", "x1", "food", 1.0),
            purchase("X", T, "web", "x2", "food", 100.0),
        ],
    )
    frame = build_features(con, [T], FeatureConfig(groups=["rfm"]))
    assert frame.loc[0, "orders_total"] == 1 and frame.loc[0, "spend_total"] == 1.0
    assert frame.loc[0, "recency_days"] == pytest.approx(1 / 86_400_000_000)
    # one microsecond later both are visible
    later = build_features(con, [T + timedelta(microseconds=1)], FeatureConfig(groups=["rfm"]))
    assert later.loc[0, "orders_total"] == 2


def test_customers_first_seen_at_or_after_cutoff_are_excluded():
    con = make_store([("X", T), ("Y", T + timedelta(days=1)), ("Z", T - timedelta(microseconds=1))])
    frame = build_features(con, [T], FeatureConfig())
    assert frame["customer_id"].tolist() == ["Z"]


def test_purchase_line_without_order_id_is_its_own_order():
    con = make_store(
        [("X", datetime(2024, 1, 1))],
        [
            purchase("X", datetime(2024, 6, 1), "web", None, "food", 1.0),
            purchase("X", datetime(2024, 6, 2), "web", None, "food", 2.0),
            purchase("X", datetime(2024, 6, 3), "web", "x1", "food", 3.0),
        ],
    )
    frame = build_features(con, [T], FeatureConfig(groups=["rfm"]))
    assert frame.loc[0, "orders_total"] == 3 and frame.loc[0, "spend_total"] == 6.0


def test_same_day_orders_count_one_purchase_day():
    # two orders on one day: one purchase day, and no gap of 0 days in the statistics
    con = make_store(
        [("X", datetime(2024, 1, 1))],
        [
            purchase("X", datetime(2024, 6, 1, 9), "web", "x1", "food", 1.0),
            purchase("X", datetime(2024, 6, 1, 18), "store", "x2", "food", 2.0),
            purchase("X", datetime(2024, 6, 11), "web", "x3", "food", 3.0),
            purchase("X", datetime(2024, 6, 15), "web", "x4", "food", 3.0),
            purchase("X", datetime(2024, 6, 15, 1), "web", "x5", "food", 3.0),
        ],
    )
    row = build_features(con, [T], FeatureConfig(groups=["gaps"])).iloc[0]
    assert row["purchase_days"] == 3
    assert row["gap_mean_days"] == 7.0 and row["gap_last_days"] == 4.0
    assert row["gap_std_days"] == pytest.approx(math.sqrt(18.0))


def test_event_types_are_read_only_over_their_longest_window():
    # Y's only events are a visit and an e-mail 200 days back: outside every window that reads them
    # (visits 30/90 days, e-mails 90), inside the year that returns are read over
    con = make_store(
        [("Y", datetime(2023, 1, 1)), ("Z", datetime(2023, 1, 1))],
        [
            event("Y", ago(200), "visit", "web"),
            event("Y", ago(200), "email_sent"),
            event("Z", ago(200), "return", "store", 7.0),
        ],
    )
    cfg = FeatureConfig(groups=["engagement", "returns"])
    sql = feature_sql(T, cfg)
    assert "(event_type IN ('return') AND ts >= TIMESTAMP '2023-07-02 00:00:00')" not in sql  # the longest: outer range
    assert "AND ts >= TIMESTAMP '2024-04-02 00:00:00')" in sql and "ts >= TIMESTAMP '2023-07-02 00:00:00'" in sql
    frame = build_features(con, [T], cfg).set_index("customer_id")
    assert frame.loc["Y", ["email_sent_90d", "visits_30d", "visits_90d", "return_amount_365d"]].tolist() == [0, 0, 0, 0]
    assert frame.loc["Y", ["email_open_rate_90d", "returns_share_365d"]].isna().all()
    assert frame.loc["Z", "return_amount_365d"] == 7.0 and frame.loc["Z", "visits_90d"] == 0


def _without_order_ids() -> duckdb.DuckDBPyConnection:
    lines = [e[:4] + (None,) + e[5:] if e[3] == "purchase" else e for e in EVENTS]
    return make_store(CUSTOMERS, lines, SURVEYS, TREATMENTS)


def test_store_without_order_ids_skips_the_grouping_with_the_same_result():
    con = _without_order_ids()
    assert not snapshot_module.has_order_ids(con, T)
    assert snapshot_module.has_order_ids(make_store(CUSTOMERS, EVENTS), T)
    # only purchase lines before the cutoff count: a later order id does not change the SQL's form
    later = make_store(CUSTOMERS, [purchase("A", T, "web", "o9", "food", 1.0), event("A", ago(1), "visit", "web")])
    assert not snapshot_module.has_order_ids(later, T) and snapshot_module.has_order_ids(later, T + timedelta(1))
    cfg = FeatureConfig(categories={"shares": ["food", "toys"]})
    plain = feature_sql(T, cfg, order_ids=False)
    assert "GROUP BY customer_id, COALESCE(order_id, event_id)" in feature_sql(T, cfg)
    assert "order_id" not in plain
    grouped = con.sql(feature_sql(T, cfg)).df().astype(feature_dtypes(cfg))
    frame = build_features(con, [T], cfg)  # probes the store and runs the plain form
    pd.testing.assert_frame_equal(frame, grouped, check_exact=True)
    # A's two lines of o1 are now two orders
    assert frame.set_index("customer_id").loc["A", "orders_total"] == 4


def test_written_features_read_back_as_the_frame(tmp_path):
    for con in (make_store(CUSTOMERS, EVENTS, SURVEYS, TREATMENTS), _without_order_ids(), make_store()):
        cfg = FeatureConfig(categories={"shares": ["food"]})
        cutoffs = [T, datetime(2024, 1, 1), datetime(2023, 6, 1, 12)]
        frame = build_features(con, cutoffs, cfg)
        path = tmp_path / "f.parquet"
        assert write_features(con, cutoffs, cfg, path) == len(frame)
        pd.testing.assert_frame_equal(pd.read_parquet(path), frame, check_exact=True)
        batches = list(feature_batches(con, cutoffs, cfg, batch_rows=2))
        assert all(b.schema == snapshot_module.feature_schema(cfg) for b in batches)
        assert sum(b.num_rows for b in batches) == len(frame)


def test_many_cutoffs_ordered_deduplicated_and_normalised():
    con = make_store(CUSTOMERS, EVENTS, SURVEYS, TREATMENTS)
    cfg = FeatureConfig(groups=["rfm", "lifecycle"])
    aware = datetime(2024, 7, 1, 2, tzinfo=timezone(timedelta(hours=2)))  # = T in UTC
    frame = build_features(con, [T, date(2024, 1, 1), aware, pd.Timestamp("2024-01-01")], cfg)
    assert frame["cutoff"].drop_duplicates().tolist() == [datetime(2024, 1, 1), T]
    assert frame.equals(frame.sort_values(["cutoff", "customer_id"], ignore_index=True))
    one = build_features(con, [T], cfg)
    pd.testing.assert_frame_equal(frame[frame["cutoff"] == T].reset_index(drop=True), one, check_exact=True)
    # at 2024-01-01 only A, B, D, F were known; A's o3 (2024-01-03) is still in the future
    early = frame[frame["cutoff"] == datetime(2024, 1, 1)].set_index("customer_id")
    assert list(early.index) == ["A", "B", "D", "F"]
    assert early.loc["A", "lifecycle_stage"] == "prospect"


def _log_store(
    order_ids: bool, n_customers: int = 10_000, n_events: int = 100_000, *, by_customer: bool = False
) -> duckdb.DuckDBPyConnection:
    """A time-ordered log with cent amounts, big enough that DuckDB's hash tables adapt mid-scan.

    ``by_customer``: the events stored in customer order, as ``omnicrm ingest`` writes them and
    records in ``store_meta`` (a large base is then computed a range of customers at a time).
    """
    rng = np.random.default_rng(7)
    start, span = np.datetime64("2023-01-01", "us").astype(np.int64), 300 * 86_400_000_000
    first = start + rng.integers(0, span, n_customers)
    cust = rng.integers(0, n_customers, n_events)
    types = rng.choice(["purchase", "return", "email_sent", "visit"], n_events, p=[0.4, 0.3, 0.2, 0.1])
    cents = np.round(rng.uniform(1, 300, n_events), 2)
    events = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n_events)],
            "customer_id": [f"c{c}" for c in cust],
            "ts": pd.to_datetime(np.sort(first[cust] + rng.integers(0, span, n_events)), unit="us"),
            "channel": rng.choice(["store", "web", "app"], n_events),
            "event_type": types,
            "order_id": [f"o{i // 2}" if order_ids and t == "purchase" else None for i, t in enumerate(types)],
            "product_id": None,
            "category": rng.choice(["a", "b", "c", "d"], n_events),
            "quantity": 1.0,
            "amount": np.where(np.isin(types, ["purchase", "return"]), cents, np.nan),
        }
    )
    customers = pd.DataFrame({"customer_id": [f"c{c}" for c in range(n_customers)], "first_seen": first})
    customers["first_seen"] = pd.to_datetime(customers["first_seen"], unit="us")
    con = make_store()
    con.register("new_customers", customers)
    con.register("new_events", events)  # NaN amounts arrive as NULL
    con.execute(f"INSERT INTO {schema.CUSTOMERS} (customer_id, first_seen) SELECT * FROM new_customers")
    order = f" ORDER BY {schema.EVENTS_ORDER}" if by_customer else ""
    con.execute(f"INSERT INTO {schema.EVENTS} SELECT * FROM new_events{order}")
    if by_customer:
        con.execute(schema.create_table_sql(schema.STORE_META))
        con.execute(
            f"INSERT INTO {schema.STORE_META} VALUES ({sql_literal(schema.EVENTS_ORDER_KEY)}, "
            f"{sql_literal(schema.EVENTS_ORDER)})"
        )
    con.execute("SET threads TO 1")  # as model code reads the store: one thread gives the same bits every run
    return con


@pytest.mark.parametrize("per_query", [None, 997], ids=["whole", "ranges"])
@pytest.mark.parametrize("order_ids", [True, False])
def test_many_cutoffs_in_one_call_are_bit_identical_to_single_snapshots(order_ids, per_query, tmp_path, monkeypatch):
    # Spend and return sums are floating-point, and DuckDB's hash aggregate splits a group's rows
    # into partial sums at points that depend on the plan. A plan that shared the event scans
    # between these cutoffs (issue 16; benchmarks/README.md, "Six cutoffs sharing work") moved two
    # return amounts and their shares by one ulp here. Every cutoff of a call must carry the bits
    # of its own snapshot, in the frame and in the written file; so must the snapshots computed a
    # range of customers at a time (a large base on one thread), however the queries are scheduled.
    if per_query is not None:
        monkeypatch.setattr(snapshot_module, "CUSTOMERS_PER_QUERY", per_query)
    con = _log_store(order_ids, by_customer=per_query is not None)
    cfg = FeatureConfig()
    cutoffs = [datetime(2024, m, 1) for m in range(2, 8)]
    frame = build_features(con, cutoffs, cfg)
    write_features(con, cutoffs, cfg, tmp_path / "all.parquet")
    written = pq.read_table(tmp_path / "all.parquet")
    for cutoff in cutoffs:
        one = build_features(con, [cutoff], cfg)
        assert len(one) > 1000
        part = frame[frame["cutoff"] == cutoff].reset_index(drop=True)
        pd.testing.assert_frame_equal(part, one, check_exact=True)
        write_features(con, [cutoff], cfg, tmp_path / "one.parquet")
        rows = written.filter(pc.equal(written["cutoff"], pa.scalar(cutoff, written.schema.field("cutoff").type)))
        assert rows.equals(pq.read_table(tmp_path / "one.parquet"))


def test_cutoffs_run_in_parallel_only_on_a_single_threaded_connection(monkeypatch):
    # One DuckDB thread is how model code reads the store (the same bits every run); the other
    # cores then work on other cutoffs, each query still on one thread. The bits are checked above
    # (many cutoffs in one call = single snapshots); here, when it happens.
    monkeypatch.setattr(snapshot_module.os, "sched_getaffinity", lambda _pid: {0, 1, 2}, raising=False)
    con = make_store()
    con.execute("SET threads TO 1")
    assert snapshot_module._parallel_cutoffs(con, 6) == 3
    assert snapshot_module._parallel_cutoffs(con, 2) == 2
    assert snapshot_module._parallel_cutoffs(con, 1) == 1
    con.execute("SET threads TO 2")
    assert snapshot_module._parallel_cutoffs(con, 6) == 1


@pytest.mark.parametrize("order_ids", [True, False])
def test_a_large_base_on_one_thread_is_computed_by_customer_range_with_the_whole_snapshot_values(
    order_ids, monkeypatch, tmp_path
):
    # Model code reads the store on one DuckDB thread; a base of more than CUSTOMERS_PER_QUERY
    # customers is then computed a range at a time, so that one query's hash tables and sort hold
    # one range (the memory of a whole-base snapshot grew with the base). The ranges must give the
    # whole snapshot: every row once, in order, the same values (a sum may differ in its last bits:
    # the ranges cut DuckDB's partial sums elsewhere), RFM scores ranked over the whole base, and
    # the same bits on every run.
    con = _log_store(order_ids, by_customer=True)
    cutoffs = [datetime(2024, 2, 1), datetime(2024, 5, 1)]
    whole = build_features(con, cutoffs, FeatureConfig())
    monkeypatch.setattr(snapshot_module, "CUSTOMERS_PER_QUERY", 997)
    ranges = snapshot_module.customer_ranges(con, cutoffs[1])
    assert len(ranges) == 11 and ranges[0][0] is None and ranges[-1][1] is None
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # contiguous
    ranged = build_features(con, cutoffs, FeatureConfig())
    pd.testing.assert_frame_equal(ranged, build_features(con, cutoffs, FeatureConfig()), check_exact=True)
    pd.testing.assert_frame_equal(ranged, whole, check_exact=False, rtol=1e-12)
    rfm = ["lifecycle_stage", "rfm_r", "rfm_f", "rfm_m", "rfm_segment"]
    pd.testing.assert_frame_equal(ranged[rfm], whole[rfm], check_exact=True)
    assert ranged["rfm_r"].notna().sum() > 5000
    # ranges come from the customers known before the cutoff only: later customers change nothing
    con.execute(f"INSERT INTO {schema.CUSTOMERS} (customer_id, first_seen) VALUES ('c0000', TIMESTAMP '2024-05-01')")
    assert snapshot_module.customer_ranges(con, cutoffs[1]) == ranges
    write_features(con, cutoffs, FeatureConfig(), tmp_path / "f.parquet")  # the same, written
    written = pd.read_parquet(tmp_path / "f.parquet").astype(feature_dtypes(FeatureConfig()))
    pd.testing.assert_frame_equal(written, ranged, check_exact=True)
    # one query per cutoff on a multi-threaded connection, or on a store not in customer order
    monkeypatch.setattr(snapshot_module, "customer_ranges", lambda *_: pytest.fail("ranges"))
    con.execute("SET threads TO 2")
    build_features(con, cutoffs[:1], FeatureConfig())
    con.execute("SET threads TO 1")
    con.execute(f"DELETE FROM {schema.STORE_META}")
    build_features(con, cutoffs[:1], FeatureConfig())


def test_customer_ranges_read_the_connections_catalog_and_leave_a_null_id_to_the_whole_query(monkeypatch):
    # Worker cursors start in the default catalog: a store attached under another name and USEd
    # made the ranged build fail (or read stale tables of the same names in the default catalog).
    monkeypatch.setattr(snapshot_module, "CUSTOMERS_PER_QUERY", 997)
    con = _log_store(order_ids=False, n_customers=3_000, n_events=30_000, by_customer=True)
    cutoff = [datetime(2024, 5, 1)]
    whole_con = _log_store(order_ids=False, n_customers=3_000, n_events=30_000)
    whole = build_features(whole_con, cutoff, FeatureConfig())
    con.execute("ATTACH ':memory:' AS shop")
    for t in (schema.CUSTOMERS, schema.EVENTS, schema.SURVEYS, schema.TREATMENTS, schema.STORE_META):
        con.execute(f"CREATE TABLE shop.main.{t} AS SELECT * FROM memory.main.{t}")
        con.execute(f"DELETE FROM memory.main.{t}")  # stale copies, empty, in the default catalog
    con.execute("USE shop")
    assert len(snapshot_module.customer_ranges(con, cutoff[0])) == 4
    pd.testing.assert_frame_equal(build_features(con, cutoff, FeatureConfig()), whole, check_exact=False, rtol=1e-12)
    # a NULL customer id (not in the store contract) falls in no range: the whole query keeps it
    con.execute(f"INSERT INTO {schema.CUSTOMERS} (customer_id, first_seen) VALUES (NULL, TIMESTAMP '2023-01-05')")
    assert snapshot_module.customer_ranges(con, cutoff[0]) == [None]
    assert len(build_features(con, cutoff, FeatureConfig())) == len(whole) + 1


def test_a_range_query_reads_only_its_customers():
    # the whole snapshot's query, each store table it reads replaced by a CTE of the range's rows
    # (resolved as the whole query resolves the table: the connection's catalog and schema)
    cfg = FeatureConfig(columns=["tenure_days", "last_nps_score"])
    sql = feature_sql(T, cfg, order_ids=True)
    ranged = snapshot_module._query_sql(snapshot_module.Cutoff(T), cfg, True, ("c1", "c9"))
    where = "customer_id >= 'c1' AND customer_id < 'c9'"
    scoped = "".join(
        f"_range_{t} AS NOT MATERIALIZED (\n  SELECT * FROM {t} WHERE {where}\n),\n" for t in ("customers", "surveys")
    )
    assert ranged.startswith("WITH " + scoped)
    assert "_range_events" not in ranged  # only the tables it reads
    body = ranged.removeprefix("WITH " + scoped).replace("FROM _range_", "FROM ")
    assert body == sql.removeprefix("WITH ")


def _feature_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("omnicrm-features")]


def test_a_failing_or_abandoned_parallel_build_leaves_nothing_running(monkeypatch):
    con = _log_store(order_ids=False, n_customers=2_000, n_events=20_000)
    cutoffs = [datetime(2024, m, 1) for m in range(2, 8)]
    real = snapshot_module._snapshot_sql

    def broken(c, cutoff, config):
        return "SELECT error('cutoff 2024-04-01 failed')" if cutoff == datetime(2024, 4, 1) else real(c, cutoff, config)

    monkeypatch.setattr(snapshot_module, "_snapshot_sql", broken)
    with pytest.raises(duckdb.Error, match="cutoff 2024-04-01 failed"):
        build_features(con, cutoffs, FeatureConfig())
    assert not _feature_threads()
    monkeypatch.setattr(snapshot_module, "_snapshot_sql", real)
    batches = feature_batches(con, cutoffs, FeatureConfig())
    first = next(batches)
    assert first.num_rows > 0
    batches.close()  # a consumer that stops early: the queries ahead are stopped and waited for
    assert not _feature_threads()
    assert len(build_features(con, cutoffs, FeatureConfig())) > 0  # the connection is still usable


@pytest.mark.parametrize("order_ids", [True, False])
def test_selected_columns_equal_the_full_snapshot(order_ids):
    # A model that uses a handful of features asks for them alone (FeatureConfig.columns); the
    # pruned query must give the values the full snapshot gives, alone and in any company.
    con = _log_store(order_ids)
    cutoff = datetime(2024, 5, 1)
    full = build_features(con, [cutoff], FeatureConfig())
    names = list(full.columns[2:])
    selections = [[n] for n in names] + [names[i::7] for i in range(7)]
    for selection in selections:
        part = build_features(con, [cutoff], FeatureConfig(columns=list(reversed(selection))))
        assert list(part.columns) == ["customer_id", "cutoff", *selection]  # canonical order, keys first
        pd.testing.assert_frame_equal(part, full[list(part.columns)], check_exact=True)


def test_selected_columns_read_only_their_sources():
    tenure_only = feature_sql(T, FeatureConfig(columns=["tenure_days"]))
    assert "FROM events" not in tenure_only and "LEFT JOIN" not in tenure_only
    visits = feature_sql(T, FeatureConfig(columns=["visits_30d"]))
    assert "event_type IN ('visit')" in visits and "purchase" not in visits and "email" not in visits
    # the RFM segment ranks the purchase aggregates it names, nothing of the channel mix
    segment = feature_sql(T, FeatureConfig(columns=["rfm_segment"]))
    assert "LEFT JOIN pa" in segment and "LEFT JOIN rs" in segment
    assert "orders_365d" in segment and "channel" not in segment and "gap_lags" not in segment
    # the channel shares need the order's channel, the category count its own source only
    shares = feature_sql(T, FeatureConfig(columns=["channel_share_web_365d", "n_categories_365d"]))
    assert "min(channel) AS channel" in shares and "LEFT JOIN ca" in shares and "LEFT JOIN ea" not in shares


def test_unknown_selected_column_gives_clear_error(tmp_path):
    with pytest.raises(ValidationError, match=r"'orders_31d' \(did you mean 'orders_30d'\?\): not a column"):
        FeatureConfig(columns=["recency_days", "orders_31d"])
    # a column of a group that is not enabled is unknown too
    with pytest.raises(
        ValidationError, match=r"'tenure_days' \(a column of the group 'tenure', which is not enabled\)"
    ):
        FeatureConfig(groups=["rfm"], columns=["tenure_days"])
    with pytest.raises(ValidationError, match="columns\n.*lists a column twice"):
        FeatureConfig(columns=["recency_days", "recency_days"])
    with pytest.raises(ValidationError, match="columns\n.*it is empty"):
        FeatureConfig(columns=[])
    path = tmp_path / "features.yaml"
    path.write_text("engagement: {days: 30}\ncolumns: [email_open_rate_90d]\n")
    hint = r"features.yaml: key 'columns'.*'email_open_rate_90d' \(did you mean 'email_open_rate_30d'\?\)"
    with pytest.raises(ConfigError, match=hint):
        load_config(FeatureConfig, path)


def test_frame_layout_and_dtypes_are_fixed_even_when_empty():
    con = make_store()
    cfg = FeatureConfig()
    frame = build_features(con, [T], cfg)
    assert frame.empty
    assert {c: str(t) for c, t in frame.dtypes.items()} == feature_dtypes(cfg)
    full = build_features(make_store(CUSTOMERS, EVENTS, SURVEYS, TREATMENTS), [T], cfg)
    assert {c: str(t) for c, t in full.dtypes.items()} == feature_dtypes(cfg)
    assert list(full.columns[:2]) == ["customer_id", "cutoff"]


def test_groups_select_columns_in_canonical_order():
    a = feature_dtypes(FeatureConfig(groups=["returns", "tenure"]))
    b = feature_dtypes(FeatureConfig(groups=["tenure", "returns"]))
    assert (
        list(a)
        == list(b)
        == [
            "customer_id",
            "cutoff",
            "tenure_days",
            "first_purchase_days",
            "return_amount_365d",
            "returns_share_365d",
        ]
    )


def test_unknown_group_gives_clear_error():
    with pytest.raises(ValidationError, match=r"unknown feature group\(s\) 'bogus'; allowed values: rfm, tenure"):
        FeatureConfig(groups=["rfm", "bogus"])


def test_config_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "features.yaml"
    path.write_text("groups: [rfm]\nlifecycle: {active_days: 200}\nwindows: [30, 30]\n")
    with pytest.raises(ConfigError) as err:
        load_config(FeatureConfig, path)
    message = str(err.value)
    assert f"{path}: key 'lifecycle'" in message and "active_days < at_risk_days" in message
    assert f"{path}: key 'windows'" in message


def test_shipped_config_is_the_default():
    assert load_config(FeatureConfig, REPO / "configs/features/default.yaml") == FeatureConfig()


def test_every_group_has_a_definition():
    assert set(GROUP_BUILDERS) == set(FEATURE_GROUPS)


def test_event_types_and_channels_come_from_the_schema():
    used = [
        sources.PURCHASE,
        sources.RETURN,
        sources.VISIT,
        sources.EMAIL_SENT,
        sources.EMAIL_OPEN,
        sources.EMAIL_CLICK,
        sources.PUSH_SENT,
        sources.PUSH_OPEN,
        sources.SERVICE_CONTACT,
    ]
    assert set(used) <= set(schema.EVENT_TYPES)
    assert sources.TREATED in schema.TREATMENT_GROUPS


def test_cutoff_is_required_and_validated():
    con = make_store()
    with pytest.raises(TypeError, match="sequence"):
        build_features(con, T, FeatureConfig())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        build_features(con, [], FeatureConfig())
    with pytest.raises(TypeError, match="datetime or a date"):
        build_features(con, ["2024-07-01"], FeatureConfig())  # type: ignore[list-item]
    with pytest.raises(ValueError, match="NaT"):
        build_features(con, [pd.NaT], FeatureConfig())


def _configs() -> list[FeatureConfig]:
    one_each = [FeatureConfig(groups=[g]) for g in FEATURE_GROUPS]
    some = FeatureConfig(columns=["recency_days", "gap_std_days", "top_category_365d", "visits_30d", "rfm_segment"])
    return [FeatureConfig(categories={"shares": ["food", "Kid's toys"]}), *one_each, some]


@pytest.mark.parametrize("config", _configs(), ids=lambda c: "+".join(c.groups)[:40])
def test_generated_sql_transpiles_to_spark(config):
    for cutoff, order_ids in ((T, True), (datetime(2024, 2, 29, 13, 5, 7, 123456), True), (T, False)):
        sql = feature_sql(cutoff, config, order_ids=order_ids)
        (spark,) = sqlglot.transpile(sql, read="duckdb", write="spark", unsupported_level=ErrorLevel.RAISE)
        assert "SELECT" in spark


@pytest.mark.parametrize("config", _configs(), ids=lambda c: "+".join(c.groups)[:40])
def test_every_group_runs_alone(config):
    con = make_store(CUSTOMERS, EVENTS, SURVEYS, TREATMENTS)
    frame = build_features(con, [T], config)
    assert len(frame) == 6 and list(frame.columns) == list(feature_dtypes(config))


@pytest.mark.parametrize("order_ids", [True, False])
def test_feature_sql_reads_only_before_cutoff(order_ids):
    sql = feature_sql(T, FeatureConfig(), order_ids=order_ids)
    # every scan of a store table carries the strict cutoff predicate
    lit = "ts < TIMESTAMP '2024-07-01 00:00:00'"
    # orders (and, without order ids, the purchase days), categories, other events, surveys, treatments
    assert sql.count(lit) == (5 if order_ids else 6)
    assert "first_seen < TIMESTAMP '2024-07-01 00:00:00'" in sql
    assert "ts <=" not in sql and "first_seen <=" not in sql


def test_an_interrupted_write_leaves_the_previous_file_and_no_worker(tmp_path, monkeypatch):
    # write_features writes beside the file and moves it into place when complete; the parallel
    # cutoffs' workers are stopped at once, not when a traceback holding the generator is dropped
    con = _log_store(order_ids=False, n_customers=2_000, n_events=20_000)
    cutoffs = [datetime(2024, m, 1) for m in range(2, 8)]
    path = tmp_path / "features.parquet"
    path.write_bytes(b"the previous file")
    real = pq.ParquetWriter.write_batch
    calls = []

    def interrupted(self, batch, *args, **kwargs):
        calls.append(batch.num_rows)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, batch, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_features(con, cutoffs, FeatureConfig(), path)
    assert not _feature_threads()  # inside the handler's reach: the traceback is still alive here
    assert path.read_bytes() == b"the previous file"
    assert [p.name for p in tmp_path.iterdir()] == ["features.parquet"]
