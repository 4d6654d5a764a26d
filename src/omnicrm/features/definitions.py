"""Behavioural feature groups: each is a small function from (cutoff, config) to SQL fragments.

A group asks sources (:mod:`omnicrm.features.sources`) for aggregates and turns them into output
columns. All windows are ``[T - days, T)``; "days" below are fractional days to ``T`` unless a
name says otherwise. Counts are 0 when there is nothing to count; a ratio is NULL when its
denominator is 0 (nothing to divide by), so a model can tell "never" from "zero share".

Groups and columns (``<w>`` = each of ``windows``, others from the group's settings)
-------------------------------------------------------------------------------------
rfm
    ``recency_days`` (since the last order; NULL if none), ``orders_total``, ``spend_total``,
    ``orders_<w>d``, ``spend_<w>d``, ``aov_<w>d`` (spend per order). Orders are distinct
    ``order_id`` of purchase lines; spend is **gross** (purchase amounts before returns, which the
    ``returns`` group reports) and falls in a window by the order's first line.
tenure
    ``tenure_days`` (since ``first_seen``), ``first_purchase_days`` (since the first order).
gaps
    Over distinct UTC days with an order: ``purchase_days``, ``gap_mean_days``, ``gap_std_days``
    (sample std, NULL below two gaps), ``gap_last_days`` (last two purchase days), and
    ``gap_overdue_ratio`` = ``recency_days / gap_mean_days`` (>1: later than usual).
trend
    ``spend_prev_<d>d`` (spend in ``[T-2d, T-d)``), ``spend_trend_<d>d`` = spend in
    ``[T-d, T)`` / ``spend_prev_<d>d``, ``orders_trend_<d>d`` likewise for orders.
categories
    Over purchase lines of ``[T-d, T)`` with a category: ``n_categories_<d>d``,
    ``category_entropy_<d>d`` (Shannon entropy of spend shares, nats), ``top_category_<d>d``
    (largest spend; ties to the first name), ``top_category_share_<d>d``, and
    ``category_share_<slug>_<d>d`` for each configured category.
channels
    Share of orders of ``[T-d, T)`` per purchase channel (``channel_share_<ch>_<d>d`` for
    store, web, app) and ``online_share_<d>d`` (web + app). An order's channel is its lines'
    smallest channel name (lines of one order share a channel in practice).
engagement
    Over ``[T-d, T)``: ``email_sent_<d>d``, ``email_open_rate_<d>d`` and ``email_click_rate_<d>d``
    (opens, clicks per e-mail sent), ``push_sent_<d>d``, ``push_open_rate_<d>d``; and
    ``visits_<v>d`` per visit window.
returns
    ``return_amount_<d>d`` (refunds of ``[T-d, T)``) and ``returns_share_<d>d`` = refunds /
    gross spend of the same window (can exceed 1 when earlier purchases are returned).
service
    ``service_contacts_<s>d`` per window.
nps
    ``last_nps_score`` (score 0–10 of the latest survey before ``T``; same-time ties to the higher
    score) and ``days_since_last_survey``.
contacts
    ``contacts_<d>d``: marketing contacts received in ``[T-d, T)`` = ``email_sent`` + ``push_sent``
    events + treatments in the ``treatment`` group (a treated exposure logged both as a treatment
    and as a message counts twice: the feature measures logged contact pressure).
"""

from __future__ import annotations

from collections.abc import Callable

from omnicrm.features.config import FeatureConfig, category_slug
from omnicrm.features.sources import (
    EMAIL_CLICK,
    EMAIL_OPEN,
    EMAIL_SENT,
    PUSH_OPEN,
    PUSH_SENT,
    RETURN,
    SERVICE_CONTACT,
    VISIT,
    category_share_alias,
    event_amount,
    event_count,
)
from omnicrm.features.sql import Agg, Cutoff, GroupSql, ratio
from omnicrm.schema import OFFLINE_CHANNELS, ONLINE_CHANNELS
from omnicrm.sql import literal

GroupBuilder = Callable[[Cutoff, FeatureConfig], GroupSql]

#: Purchase channels with their own share column, offline first.
PURCHASE_CHANNELS: tuple[str, ...] = (*OFFLINE_CHANNELS, *ONLINE_CHANNELS)


# --- purchase aggregates shared by several groups ---------------------------------------------
def first_order() -> Agg:
    return Agg("first_ts", "min(ts)")


def last_order() -> Agg:
    return Agg("last_ts", "max(ts)")


def orders_in(cutoff: Cutoff, days: int) -> Agg:
    """Orders in ``[T - days, T)``."""
    return Agg(f"orders_{days}d", f"count(*) FILTER (WHERE ts >= {cutoff.ago(days)})")


def spend_in(cutoff: Cutoff, days: int) -> Agg:
    """Gross spend of the orders in ``[T - days, T)`` (NULL when there are none)."""
    return Agg(f"spend_{days}d", f"sum(amount) FILTER (WHERE ts >= {cutoff.ago(days)})")


def zero_if_null(expr: str) -> str:
    return f"COALESCE({expr}, 0)"


# --- groups ---------------------------------------------------------------------------------------
def rfm(cutoff: Cutoff, config: FeatureConfig) -> GroupSql:
    g = GroupSql()
    g.need("pa", last_order(), Agg("orders_total", "count(*)"), Agg("spend_total", "sum(amount)"))
    g.column("recency_days", cutoff.days_since("pa.last_ts"), "float")
    g.column("orders_total", zero_if_null("pa.orders_total"), "int")
    g.column("spend_total", zero_if_null("pa.spend_total"), "float")
    for w in config.windows:
        g.need("pa", orders_in(cutoff, w), spend_in(cutoff, w))
        g.column(f"orders_{w}d", zero_if_null(f"pa.orders_{w}d"), "int")
        g.column(f"spend_{w}d", zero_if_null(f"pa.spend_{w}d"), "float")
        g.column(f"aov_{w}d", ratio(f"pa.spend_{w}d", f"pa.orders_{w}d"), "float")
    return g


def tenure(cutoff: Cutoff, config: FeatureConfig) -> GroupSql:
    g = GroupSql()
    g.need("pa", first_order())
    g.column("tenure_days", cutoff.days_since("base.first_seen"), "float")
    g.column("first_purchase_days", cutoff.days_since("pa.first_ts"), "float")
    return g


def gaps(cutoff: Cutoff, config: FeatureConfig) -> GroupSql:
    g = GroupSql()
    g.need("gs")
    g.need("pa", last_order())
    g.column("purchase_days", zero_if_null("gs.n_days"), "int")
    g.column("gap_mean_days", "gs.gap_mean", "float")
    g.column("gap_std_days", "gs.gap_std", "float")
    g.column("gap_last_days", "gs.gap_last", "float")
    g.column("gap_overdue_ratio", f"({cutoff.days_since('pa.last_ts')}) / gs.gap_mean", "float")
    return g


def trend(cutoff: Cutoff, config: FeatureConfig) -> GroupSql:
    d = config.trend.days
    g = GroupSql()
    earlier = f"ts >= {cutoff.ago(2 * d)} AND ts < {cutoff.ago(d)}"
    g.need(
        "pa",
        orders_in(cutoff, d),
        spend_in(cutoff, d),
        Agg(f"orders_prev_{d}d", f"count(*) FILTER (WHERE {earlier})"),
        Agg(f"spend_prev_{d}d", f"sum(amount) FILTER (WHERE {earlier})"),
    )
    g.column(f"spend_prev_{d}d", zero_if_null(f"pa.spend_prev_{d}d"), "float")
    g.column(f"spend_trend_{d}d", ratio(zero_if_null(f"pa.spend_{d}d"), f"pa.spend_prev_{d}d"), "float")
    g.column(
        f"orders_trend_{d}d",
        ratio(zero_if_null(f"pa.orders_{d}d"), f"pa.orders_prev_{d}d"),
        "float",
    )
    return g


def categories(cutoff: Cutoff, config: FeatureConfig) -> GroupSql:
    d = config.categories.days
    g = GroupSql()
    g.need("ca")
    g.column(f"n_categories_{d}d", zero_if_null("ca.n_categories"), "int")
    g.column(f"category_entropy_{d}d", "ca.entropy", "float")
    g.column(f"top_category_{d}d", "ca.top_category", "str")
    g.column(f"top_category_share_{d}d", "ca.top_share", "float")
    for c in config.categories.shares:
        g.column(f"category_share_{category_slug(c)}_{d}d", f"ca.{category_share_alias(c)}", "float")
    return g


def channels(cutoff: Cutoff, config: FeatureConfig) -> GroupSql:
    d = config.channels.days
    since = cutoff.ago(d)
    g = GroupSql()
    # the order's channel is only computed when this group asks for it
    g.need("orders", Agg("channel", "min(channel)", line_expr="channel"))
    online = ", ".join(literal(c) for c in ONLINE_CHANNELS)
    g.need(
        "pa",
        orders_in(cutoff, d),
        Agg(f"orders_online_{d}d", f"count(*) FILTER (WHERE ts >= {since} AND channel IN ({online}))"),
        *(
            Agg(
                f"orders_{ch}_{d}d",
                f"count(*) FILTER (WHERE ts >= {since} AND channel = {literal(ch)})",
            )
            for ch in PURCHASE_CHANNELS
        ),
    )
    g.column(f"online_share_{d}d", ratio(f"pa.orders_online_{d}d", f"pa.orders_{d}d"), "float")
    for ch in PURCHASE_CHANNELS:
        g.column(f"channel_share_{ch}_{d}d", ratio(f"pa.orders_{ch}_{d}d", f"pa.orders_{d}d"), "float")
    return g


def engagement(cutoff: Cutoff, config: FeatureConfig) -> GroupSql:
    d = config.engagement.days
    g = GroupSql()
    counts = {
        f"email_sent_{d}d": EMAIL_SENT,
        f"email_open_{d}d": EMAIL_OPEN,
        f"email_click_{d}d": EMAIL_CLICK,
        f"push_sent_{d}d": PUSH_SENT,
        f"push_open_{d}d": PUSH_OPEN,
    }
    g.need("ea", *(event_count(alias, (t,), cutoff, d) for alias, t in counts.items()))
    g.column(f"email_sent_{d}d", zero_if_null(f"ea.email_sent_{d}d"), "int")
    g.column(f"email_open_rate_{d}d", ratio(f"ea.email_open_{d}d", f"ea.email_sent_{d}d"), "float")
    g.column(f"email_click_rate_{d}d", ratio(f"ea.email_click_{d}d", f"ea.email_sent_{d}d"), "float")
    g.column(f"push_sent_{d}d", zero_if_null(f"ea.push_sent_{d}d"), "int")
    g.column(f"push_open_rate_{d}d", ratio(f"ea.push_open_{d}d", f"ea.push_sent_{d}d"), "float")
    for v in config.engagement.visit_windows:
        g.need("ea", event_count(f"visits_{v}d", (VISIT,), cutoff, v))
        g.column(f"visits_{v}d", zero_if_null(f"ea.visits_{v}d"), "int")
    return g


def returns(cutoff: Cutoff, config: FeatureConfig) -> GroupSql:
    d = config.returns.days
    g = GroupSql()
    g.need("ea", event_amount(f"return_amount_{d}d", RETURN, cutoff, d))
    g.need("pa", spend_in(cutoff, d))
    g.column(f"return_amount_{d}d", zero_if_null(f"ea.return_amount_{d}d"), "float")
    g.column(
        f"returns_share_{d}d",
        ratio(zero_if_null(f"ea.return_amount_{d}d"), f"pa.spend_{d}d"),
        "float",
    )
    return g


def service(cutoff: Cutoff, config: FeatureConfig) -> GroupSql:
    g = GroupSql()
    for s in config.service.windows:
        g.need("ea", event_count(f"service_contacts_{s}d", (SERVICE_CONTACT,), cutoff, s))
        g.column(f"service_contacts_{s}d", zero_if_null(f"ea.service_contacts_{s}d"), "int")
    return g


def nps(cutoff: Cutoff, config: FeatureConfig) -> GroupSql:
    g = GroupSql()
    g.need("sv")
    g.column("last_nps_score", "sv.last_score", "float")
    g.column("days_since_last_survey", cutoff.days_since("sv.last_ts"), "float")
    return g


def contacts(cutoff: Cutoff, config: FeatureConfig) -> GroupSql:
    d = config.contacts.days
    g = GroupSql()
    g.need("ea", event_count(f"messages_{d}d", (EMAIL_SENT, PUSH_SENT), cutoff, d))
    g.need("tr")
    g.column(f"contacts_{d}d", f"{zero_if_null(f'ea.messages_{d}d')} + {zero_if_null('tr.treated')}", "int")
    return g


GROUPS: dict[str, GroupBuilder] = {
    "rfm": rfm,
    "tenure": tenure,
    "gaps": gaps,
    "trend": trend,
    "categories": categories,
    "channels": channels,
    "engagement": engagement,
    "returns": returns,
    "service": service,
    "nps": nps,
    "contacts": contacts,
}
