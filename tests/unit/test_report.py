"""Known answers of the marketing report's KPIs and attribution rules on tiny hand-made stores."""

from __future__ import annotations

from datetime import datetime

import duckdb
import numpy as np
import pandas as pd
import pytest

from omnicrm import schema
from omnicrm.report import attribution as attr
from omnicrm.report import kpis

D = datetime


def store(events: list[tuple], treatments: list[tuple] = (), surveys: list[tuple] = ()) -> duckdb.DuckDBPyConnection:
    """An in-memory store: events are (customer, ts, channel, event_type, amount)."""
    con = duckdb.connect()
    for table in schema.TABLES:
        con.execute(schema.create_table_sql(table))
    for i, (cust, ts, channel, etype, amount) in enumerate(events):
        con.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, 1.0, ?)",
            [f"e{i}", cust, ts, channel, etype, f"o{i}" if etype == "purchase" else None, amount],
        )
    for cust, ts, camp, action, channel, group, cost in treatments:
        con.execute(
            "INSERT INTO treatments VALUES (?, ?, ?, ?, ?, ?, ?)", [cust, ts, camp, action, channel, group, cost]
        )
    for cust, ts, score in surveys:
        con.execute("INSERT INTO surveys VALUES (?, ?, ?)", [cust, ts, score])
    return con


def buy(cust: str, ts: datetime, channel: str, amount: float) -> tuple:
    return (cust, ts, channel, "purchase", amount)


# A: Jan, Feb, Mar; B: Jan only; C: twice in Feb; D: mid-2023, then back in March (a 9-month gap)
ORDERS = [
    buy("A", D(2024, 1, 5), "web", 10.0),
    buy("A", D(2024, 2, 10), "store", 20.0),
    buy("A", D(2024, 3, 15), "web", 30.0),
    buy("B", D(2024, 1, 20), "store", 40.0),
    buy("C", D(2024, 2, 3), "app", 50.0),
    buy("C", D(2024, 2, 25), "app", 10.0),
    buy("D", D(2023, 6, 1), "store", 100.0),
    buy("D", D(2024, 3, 2), "store", 60.0),
]
START, END = D(2024, 1, 1), D(2024, 5, 1)


@pytest.fixture
def orders_store() -> duckdb.DuckDBPyConnection:
    con = store(ORDERS)
    yield con
    con.close()


def test_customer_base_by_hand(orders_store: duckdb.DuckDBPyConnection) -> None:
    base = kpis.customer_base(orders_store, START, END, lapse_days=90).set_index("month")
    got = base[["active", "new", "returning", "reactivated", "lost"]].to_numpy().tolist()
    # Jan: A, B new. Feb: A returning, C new. Mar: A returning, D reactivated (last order 9 months
    # before). Apr: nobody buys; B's last order (Jan 20) turns 90 days old on Apr 19: lost.
    assert got == [[2, 2, 0, 0, 0], [2, 1, 1, 0, 0], [2, 0, 1, 1, 0], [0, 0, 0, 0, 1]]


def test_customer_base_of_a_month_reads_nothing_after_it(orders_store: duckdb.DuckDBPyConnection) -> None:
    full = kpis.customer_base(orders_store, START, END, 90)
    cut = kpis.customer_base(orders_store, START, D(2024, 2, 1), 90)
    pd.testing.assert_frame_equal(cut, full.iloc[:1])


def test_cohort_retention_by_hand(orders_store: duckdb.DuckDBPyConnection) -> None:
    got = kpis.cohort_retention(orders_store, START, END)
    cohort = got["cohort"].astype(str).str[:10]
    jan, feb = got[cohort == "2024-01-01"], got[cohort == "2024-02-01"]
    # January cohort {A, B}: both in Jan, A in Feb and Mar, nobody in Apr
    assert jan["retention"].tolist() == [1.0, 0.5, 0.5, 0.0]
    assert jan["cohort_size"].unique().tolist() == [2]
    # February cohort {C}: C in Feb only
    assert feb["retention"].tolist() == [1.0, 0.0, 0.0]
    # D's cohort (June 2023) is before the period; no cohort starts in March or April
    assert sorted(cohort.unique()) == ["2024-01-01", "2024-02-01"]


def test_repurchase_rate_by_hand(orders_store: duckdb.DuckDBPyConnection) -> None:
    got = kpis.repurchase(orders_store, START, END, days=90)
    # only January's cohort had 90 days after its month by May 1; A came back (Feb 10), B did not
    assert got["cohort"].astype(str).str[:10].tolist() == ["2024-01-01"]
    assert got[["customers", "repurchased", "repurchase_rate"]].to_numpy().tolist() == [[2, 1, 0.5]]


def test_period_summary_and_channel_groups_by_hand(orders_store: duckdb.DuckDBPyConnection) -> None:
    s = kpis.period_summary(orders_store, START, END)
    assert (s["customers"], s["orders"], s["revenue"]) == (4, 7, 220.0)
    assert s["aov"] == pytest.approx(220 / 7)
    assert s["repeat_share"] == pytest.approx(2 / 4)  # A and C ordered more than once
    groups = kpis.channel_groups(orders_store, START, END, retention_days=30).set_index("group")
    # orders before Apr 1: A web + store (both), B store, D store (offline only), C app (online only)
    assert groups.loc["both", "customers"] == 1 and groups.loc["offline only", "customers"] == 2
    assert groups.loc["online only", "spend_per_customer"] == 60.0
    assert groups["retention"].tolist() == [0.0, 0.0, 0.0]  # nobody ordered in April


def test_nps_and_its_interval_by_hand() -> None:
    con = store(
        ORDERS,
        surveys=[
            ("A", D(2024, 1, 9), 10),
            ("B", D(2024, 1, 21), 9),
            ("C", D(2024, 1, 30), 8),
            ("D", D(2024, 1, 31), 3),
            ("A", D(2024, 2, 11), 6),
        ],
    )
    got = kpis.nps_by_month(con, START, END).set_index("month")
    jan = got.iloc[0]
    # promoters 2/4, detractors 1/4: NPS 25; SE = 100 sqrt((p + d - (p - d)^2) / n) = 100 sqrt(0.6875 / 4)
    se = 100 * np.sqrt(0.6875 / 4)
    assert jan["nps"] == pytest.approx(25.0)
    assert jan["nps_low"] == pytest.approx(25 - kpis.Z95 * se)
    assert jan["nps_high"] == 100.0  # 25 + 81.3 clipped to the scale
    assert got.iloc[1]["nps"] == pytest.approx(-100.0) and got.iloc[1]["responses"] == 1


# --- attribution: three journeys worked by hand -------------------------------------------------------
#   P: email open (Mar 1), web visit (Mar 8)                  -> order Mar 11 (ages 10 and 3 days)
#   Q: SMS campaign (Mar 5), app visit (Mar 6), e-mail click (Mar 9) -> order Mar 10 (ages 5, 4, 1)
#   R: web visit (Mar 20), no order                           -> a non-converting journey
#   S: an order (Mar 15) with no touch before it
JOURNEYS = [
    ("P", D(2024, 3, 1), "email", "email_open", None),
    ("P", D(2024, 3, 8), "web", "visit", None),
    buy("P", D(2024, 3, 11), "web", 30.0),
    ("Q", D(2024, 3, 6), "app", "visit", None),
    ("Q", D(2024, 3, 9), "email", "email_click", None),
    buy("Q", D(2024, 3, 10), "app", 20.0),
    ("R", D(2024, 3, 20), "web", "visit", None),
    buy("S", D(2024, 3, 15), "store", 10.0),
]
SMS = [("Q", D(2024, 3, 5), "CMP1", "discount", "sms", "treatment", 0.05)]


@pytest.fixture
def journeys_store() -> duckdb.DuckDBPyConnection:
    con = store(JOURNEYS, treatments=SMS)
    yield con
    con.close()


def credits(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    got, counts = attr.attribution(con, START, END, lookback_days=14, half_life_days=7.0)
    assert counts == {"conversions": 3.0, "touched": 2.0}
    return got.set_index("channel")


def test_last_and_first_touch_by_hand(journeys_store: duckdb.DuckDBPyConnection) -> None:
    got = credits(journeys_store)
    assert got["last_touch"].to_dict() == {"app": 0, "email": 1, "sms": 0, "web": 1, attr.NO_TOUCH: 1}
    assert got["first_touch"].to_dict() == {"app": 0, "email": 1, "sms": 1, "web": 0, attr.NO_TOUCH: 1}


def test_linear_and_position_based_by_hand(journeys_store: duckdb.DuckDBPyConnection) -> None:
    got = credits(journeys_store)
    # linear: P gives 1/2 to email and web; Q 1/3 to sms, app and email
    assert got["linear"].to_dict() == pytest.approx(
        {"app": 1 / 3, "email": 1 / 2 + 1 / 3, "sms": 1 / 3, "web": 0.5, attr.NO_TOUCH: 1}
    )
    # position-based: P has two touches (50/50); Q 40% first (sms), 20% middle (app), 40% last (email)
    assert got["position_based"].to_dict() == pytest.approx(
        {"app": 0.2, "email": 0.9, "sms": 0.4, "web": 0.5, attr.NO_TOUCH: 1}
    )


def test_time_decay_by_hand(journeys_store: duckdb.DuckDBPyConnection) -> None:
    got = credits(journeys_store)
    # P: weights 2^(-10/7) and 2^(-3/7), so e-mail gets 1 / (1 + 2) = 1/3 and web 2/3
    w = {"sms": 2 ** (-5 / 7), "app": 2 ** (-4 / 7), "email": 2 ** (-1 / 7)}
    q = {k: v / sum(w.values()) for k, v in w.items()}
    want = {"app": q["app"], "email": 1 / 3 + q["email"], "sms": q["sms"], "web": 2 / 3, attr.NO_TOUCH: 1}
    assert got["time_decay"].to_dict() == pytest.approx(want)


def test_markov_removal_effect_by_hand(journeys_store: duckdb.DuckDBPyConnection) -> None:
    # chain: start -> {email, sms, web} 1/3 each; email -> web 1/2, conv 1/2; web -> conv 1/2, null 1/2;
    # sms -> app -> email. P(conv) = 2/3; removing email: 1/6 (effect 3/4), web: 1/3 (1/2),
    # sms or app: 5/12 (3/8 each). Shares of the sum 2: 3/8, 1/4, 3/16, 3/16 of 2 touched conversions.
    removal = attr.markov_removal(attr.transition_counts(journeys_store, START, END, 14)).set_index("channel")
    assert removal["removal_effect"].to_dict() == pytest.approx(
        {"app": 3 / 8, "email": 3 / 4, "sms": 3 / 8, "web": 1 / 2}
    )
    got = credits(journeys_store)
    assert got["markov"].to_dict() == pytest.approx(
        {"app": 0.375, "email": 0.75, "sms": 0.375, "web": 0.5, attr.NO_TOUCH: 1}
    )


def test_every_rule_hands_out_every_conversion(journeys_store: duckdb.DuckDBPyConnection) -> None:
    got = credits(journeys_store)
    assert got[list(attr.RULES)].sum().to_numpy() == pytest.approx(np.full(len(attr.RULES), 3.0))


def test_a_touch_older_than_the_lookback_is_not_credited(journeys_store: duckdb.DuckDBPyConnection) -> None:
    got, counts = attr.attribution(journeys_store, START, END, lookback_days=7, half_life_days=7.0)
    got = got.set_index("channel")
    # with 7 days, P's e-mail (10 days before) drops out of P's journey: web takes all of P
    assert got.loc["web", "first_touch"] == 1 and got.loc["email", "first_touch"] == 0
    assert counts["touched"] == 2


def test_a_store_without_campaigns_surveys_or_margins_gives_a_page_that_says_so(
    orders_store: duckdb.DuckDBPyConnection,
) -> None:
    from omnicrm.features import FeatureConfig
    from omnicrm.report.build import build_report
    from omnicrm.report.config import ReportConfig
    from omnicrm.report.page import render

    for cust in "ABCD":
        orders_store.execute("INSERT INTO customers (customer_id, first_seen) VALUES (?, ?)", [cust, D(2023, 1, 1)])
    cfg = ReportConfig(name="tiny", store="unused.duckdb")
    feats = FeatureConfig(groups=["lifecycle", "rfm_segment"])
    report = build_report(orders_store, cfg, feats, START, END)
    empty = {s.key: s.empty for s in report.sections if s.empty}
    assert set(empty) == {"satisfaction", "campaigns", "attribution"}
    assert "no survey answers" in empty["satisfaction"] and "no campaigns" in empty["campaigns"]
    # no product carries a margin: no margin figure is shown (it would read 0)
    assert not any("margin" in k for k in report.kpis)
    assert all("margin" not in str(c) for s in report.sections for b in s.blocks for c in b.table.columns)
    # no registered CLV model handed in: the classic model is fitted at the period's end, and the page says so
    value = next(s for s in report.sections if s.key == "value")
    clv = next(b for b in value.blocks if b.title == "CLV deciles")
    assert "BG/NBD + Gamma-Gamma fitted at 2024-05-01" in clv.note
    assert report.kpis["orders"] == 7 and report.kpis["revenue"] == 220.0
    page = render(report)
    assert page.count("<section") == 7 and page.count("No data:") == 3
    assert "<script" not in page


def test_campaign_return_and_the_attribution_check_by_hand() -> None:
    from omnicrm.report import campaigns as camp

    send = D(2024, 3, 1, 7)
    exposures = [(c, send, "C1", "disc", "email", "treatment", 1.0) for c in ("T1", "T2", "T3")]
    exposures += [(c, send, "C1", "control", "email", "control", 0.0) for c in ("K1", "K2", "K3")]
    con = store(
        [
            buy("T1", D(2024, 3, 2), "web", 10.0),
            buy("T1", D(2024, 3, 5), "web", 20.0),
            buy("T2", D(2024, 3, 10), "store", 30.0),
            buy("T3", D(2024, 3, 21), "web", 99.0),  # after the 14-day window: not an outcome
            buy("K1", D(2024, 3, 3), "web", 12.0),
        ],
        treatments=exposures,
    )
    returns, rows = camp.campaign_return(con, D(2024, 3, 1), D(2024, 4, 1), window_days=14)
    r = returns.iloc[0]
    # orders: treated mean 3/3, control 1/3 -> effect 2/3 x 3 treated = 2; spend: (60 - 12) / 3 x 3 = 48
    assert (r["treated"], r["control"], r["cost"]) == (3, 3, 3.0)
    assert r["incremental_orders"] == pytest.approx(2.0) and r["incremental_purchase"] == pytest.approx(1.0)
    assert r["incremental_spend"] == pytest.approx(48.0) and r["roas"] == pytest.approx(16.0)
    # no product margins: incremental margin 0, so ROI = (0 - 3) / 3
    assert r["roi"] == pytest.approx(-1.0)
    assert r["incremental_orders_low"] < 2.0 < r["incremental_orders_high"]
    # a campaign whose window is still open at the period's end is left out
    assert camp.campaign_return(con, D(2024, 3, 1), D(2024, 3, 10), 14)[0].empty

    # the check: the treated customers' orders in the window are T1's two and T2's one; the e-mail send is
    # the touch of the next order only (T1's second order has none), so last-touch credits e-mail with 2
    scoped, counts = attr.attribution(
        con, D(2024, 3, 1), D(2024, 4, 1), 14, 7.0, camp.scope_sql(D(2024, 3, 1), D(2024, 4, 1), 14)
    )
    assert counts == {"conversions": 3.0, "touched": 2.0}
    check = camp.attribution_vs_incrementality(scoped, returns, None, attr.RULES).set_index("channel")
    assert check.loc["email", "last_touch"] == 2.0 and check.loc["email", "last_touch_over"] == pytest.approx(1.0)


def test_true_incremental_sums_the_effect_of_the_action_each_treated_customer_got() -> None:
    from omnicrm.report.campaigns import true_incremental

    exposures = pd.DataFrame({"campaign_id": ["C1"] * 4, "arm": ["a", "b", "control", "a"]})
    truth = pd.DataFrame({"a": [0.1, 0.5, 0.7, np.nan], "b": [0.9, 0.2, 0.3, 0.4]})
    got = true_incremental(truth, exposures, effect_weeks=2).set_index("action")["true_incremental"]
    # a: rows 0 and 3 (NaN counts 0) -> 2 x 0.1; b: row 1 -> 2 x 0.2; control rows are not summed
    assert got.to_dict() == pytest.approx({"a": 0.2, "b": 0.4})


def test_the_clv_section_says_so_when_the_classic_model_cannot_be_fitted() -> None:
    from omnicrm.report.build import value_section
    from omnicrm.report.config import ReportConfig

    con = store([buy("A", D(2024, 1, 5), "web", 10.0), buy("B", D(2024, 1, 6), "web", 10.0)])
    first = pd.DataFrame({"customer_id": ["A", "B"], "rfm_segment": ["prospect", "prospect"]})
    heads: dict = {}
    section = value_section(con, ReportConfig(name="t", store="-"), START, END, first, None, "", heads)
    assert "clv_mean" not in heads
    assert [b.title for b in section.blocks] == [
        "Revenue and margin per buying customer in the period",
        "Value by RFM segment at the period's start",
    ]
    assert "could not be fitted" in section.blocks[0].note


def test_a_period_without_orders_renders_and_says_what_is_missing(orders_store: duckdb.DuckDBPyConnection) -> None:
    from omnicrm.features import FeatureConfig
    from omnicrm.report.build import build_report
    from omnicrm.report.config import ReportConfig
    from omnicrm.report.page import render

    for cust in "ABCD":
        orders_store.execute("INSERT INTO customers (customer_id, first_seen) VALUES (?, ?)", [cust, D(2023, 1, 1)])
    feats = FeatureConfig(groups=["lifecycle", "rfm_segment"])
    report = build_report(orders_store, ReportConfig(name="t", store="-"), feats, D(2022, 1, 1), D(2022, 3, 1))
    retention = next(s for s in report.sections if s.key == "retention")
    assert retention.empty and "nothing to show" in retention.empty
    page = render(report)
    # every block that is shown has a plot with data marks
    assert page.count("class=plot") == sum(len(s.blocks) for s in report.sections) >= 1
    assert "data-marks=0" not in page
