"""Aggregate tables (CTEs) that feature groups read from, one per kind of input.

Every source reads its store table with ``ts < T`` and groups by ``customer_id``; the snapshot
then left-joins the sources onto the customers known before ``T``. Keeping one aggregate per input
(instead of one CTE per feature) means the events table is grouped once for all purchase features
and once for all other events, which is what makes the generated query as fast as a hand-written
one (``benchmarks/README.md``).

Sources
-------
orders (not joined)
    One row per purchase order: ``order_id`` lines of event type ``purchase`` before ``T``; a line
    without an ``order_id`` counts as an order of its own. On a store without any ``order_id``
    (``ORDER_LINES``) the lines are the orders and are not grouped at all: same rows, less work.
    The order's ``ts`` is its first line's, its ``amount`` the sum of its lines (gross, before
    returns).
pa (purchase aggregates)
    Per customer over ``orders``: whatever the groups ask for (first/last order, counts and spend
    per window…).
order_days (not joined; part of the orders source)
    ``(customer_id, day)`` of every order, its UTC calendar day.
gs (gap statistics)
    Over the distinct UTC calendar days with an order: their number, and the mean, sample
    standard deviation and last of the day gaps between consecutive purchase days.
ca (category mix)
    Over purchase *lines* in the categories window with a non-NULL category.
ea (other events)
    Per customer over non-purchase events, scanning only the event types and the time range the
    requested aggregates need.
sv (last survey), tr (treatments received)
    From ``surveys`` and ``treatments``.
rs (RFM scores)
    Defined in :mod:`omnicrm.features.lifecycle`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omnicrm.features.config import FeatureConfig, category_slug
from omnicrm.features.sql import Agg, Cutoff
from omnicrm.schema import CUSTOMERS, EVENTS, SURVEYS, TREATMENTS
from omnicrm.sql import in_list, literal

# Event types the features read; a unit test checks each is in omnicrm.schema.EVENT_TYPES.
PURCHASE = "purchase"
RETURN = "return"
VISIT = "visit"
EMAIL_SENT = "email_sent"
EMAIL_OPEN = "email_open"
EMAIL_CLICK = "email_click"
PUSH_SENT = "push_sent"
PUSH_OPEN = "push_open"
SERVICE_CONTACT = "service_contact"
#: Treatment group that actually received an action (the other is the randomised control).
TREATED = "treatment"

#: A source builder returns ``(cte_name, select_sql)`` pairs, the last one named like the alias.
Builder = Callable[[Cutoff, FeatureConfig, list[Agg]], list[tuple[str, str]]]


@dataclass(frozen=True)
class Source:
    """A named aggregate CTE; ``joined`` sources are left-joined on ``customer_id``."""

    name: str
    build: Builder
    depends: tuple[str, ...] = ()
    joined: bool = True


def base_cte(cutoff: Cutoff) -> tuple[str, str]:
    """Customers known before the cutoff: the rows of the snapshot."""
    return (
        "base",
        f"SELECT customer_id, first_seen FROM {CUSTOMERS} WHERE first_seen < {cutoff.lit}",
    )


def _select_aggs(aggs: list[Agg]) -> str:
    return "".join(f",\n    {a.expr} AS {a.alias}" for a in aggs)


def _orders(cutoff: Cutoff, config: FeatureConfig, aggs: list[Agg]) -> list[tuple[str, str]]:
    return [
        (
            "orders",
            f"SELECT customer_id, min(ts) AS ts, sum(amount) AS amount{_select_aggs(aggs)}\n"
            f"  FROM {EVENTS}\n"
            f"  WHERE event_type = {literal(PURCHASE)} AND ts < {cutoff.lit}\n"
            "  GROUP BY customer_id, COALESCE(order_id, event_id)",
        ),
        ("order_days", "SELECT customer_id, CAST(ts AS DATE) AS day FROM orders"),
    ]


def _order_lines(cutoff: Cutoff, config: FeatureConfig, aggs: list[Agg]) -> list[tuple[str, str]]:
    # For a store whose events carry no order_id at all: every purchase line is an order of its own,
    # so the grouping by COALESCE(order_id, event_id) above would change nothing and was a third of
    # the query's CPU (10M events). The lines pass straight through, each aggregate in its one-line
    # form. (Not a UNION ALL of both forms for every store: that changed the order in which a store
    # with order ids feeds its orders to the spend sums, and so their last bits.)
    missing = [a.alias for a in aggs if a.line_expr is None]
    if missing:  # a programming error in the definitions, not user input
        raise AssertionError(f"orders aggregates without a one-line form: {missing}")
    # The purchase days for the gaps scan the lines again rather than read the orders CTE: with
    # two consumers of different kinds (aggregate, window) DuckDB buffers a shared CTE, which cost
    # more memory and time than a second scan of two columns.
    purchases = f"FROM {EVENTS}\n  WHERE event_type = {literal(PURCHASE)} AND ts < {cutoff.lit}"
    return [
        (
            "orders",
            "SELECT customer_id, ts, amount"
            + "".join(f", {a.line_expr} AS {a.alias}" for a in aggs)
            + f"\n  {purchases}",
        ),
        ("order_days", f"SELECT customer_id, CAST(ts AS DATE) AS day\n  {purchases}"),
    ]


def _purchase_aggregates(cutoff: Cutoff, config: FeatureConfig, aggs: list[Agg]) -> list[tuple[str, str]]:
    return [("pa", f"SELECT customer_id{_select_aggs(aggs)}\n  FROM orders GROUP BY customer_id")]


def _gaps(cutoff: Cutoff, config: FeatureConfig, aggs: list[Agg]) -> list[tuple[str, str]]:
    # LAG over the orders' days sorted by day: an order on the same day as the one before has a gap
    # of 0, so the gaps between distinct purchase days are exactly the gaps > 0 and each customer's
    # first day is the one row without a gap (this replaces a DISTINCT over (customer, day) before
    # the window, and feeds the aggregates the same gaps in the same order). The mean and last gap
    # alone have closed forms, but the standard deviation needs consecutive pairs.
    return [
        (
            "gap_lags",
            "SELECT customer_id, day,\n"
            "    date_diff('day', lag(day) OVER (PARTITION BY customer_id ORDER BY day), day) AS gap\n"
            "  FROM order_days",
        ),
        (
            "gs",
            "SELECT customer_id, count(*) FILTER (WHERE gap IS NULL OR gap > 0) AS n_days,\n"
            "    avg(gap) FILTER (WHERE gap > 0) AS gap_mean,\n"
            "    stddev_samp(gap) FILTER (WHERE gap > 0) AS gap_std,\n"
            "    max_by(gap, day) FILTER (WHERE gap > 0) AS gap_last\n"
            "  FROM gap_lags GROUP BY customer_id",
        ),
    ]


def category_share_alias(category: str) -> str:
    return f"share_{category_slug(category)}"


def _categories(cutoff: Cutoff, config: FeatureConfig, aggs: list[Agg]) -> list[tuple[str, str]]:
    cats = config.categories
    shares = "".join(
        f",\n    COALESCE(sum(spend) FILTER (WHERE category = {literal(c)}), 0)"
        f" / NULLIF(sum(spend), 0) AS {category_share_alias(c)}"
        for c in cats.shares
    )
    return [
        (
            "cat_spend",
            "SELECT customer_id, category, sum(amount) AS spend\n"
            f"  FROM {EVENTS}\n"
            f"  WHERE event_type = {literal(PURCHASE)} AND ts < {cutoff.lit}"
            f" AND ts >= {cutoff.ago(cats.days)}\n"
            "    AND category IS NOT NULL\n"
            "  GROUP BY customer_id, category",
        ),
        (
            # Shannon entropy in nats of the spend shares p = s / S in closed form,
            # H = ln S - sum(s ln s) / S, so one GROUP BY does it (a window over the
            # (customer, category) rows to get S first was 1.5x slower); one category is exactly 0.
            # The top category is the largest spend, ties to the alphabetically first name: the
            # smallest (-spend, category), so the result never depends on scan order (arg_max by
            # spend alone would pick any of the tied rows). In this same GROUP BY, cat_spend is
            # read once: a join back to it for the top category made DuckDB materialise the CTE
            # (1.4M rows, 99 MB at 10M events) and cost a second hash join.
            "cat_totals",
            "SELECT customer_id, count(*) AS n_categories, sum(spend) AS total, max(spend) AS top,\n"
            "    sum(CASE WHEN spend > 0 THEN spend * ln(spend) ELSE 0 END) AS spend_ln_spend,\n"
            "    arg_min(category, struct_pack(neg_spend := -spend, name := category))"
            " FILTER (WHERE spend IS NOT NULL) AS top_category"
            f"{shares}\n"
            "  FROM cat_spend GROUP BY customer_id",
        ),
        (
            "ca",
            "SELECT cat_totals.*,\n"
            "    CASE WHEN n_categories = 1 THEN 0.0 WHEN total > 0 THEN"
            " greatest(0.0, ln(total) - spend_ln_spend / total) END AS entropy,\n"
            "    top / NULLIF(total, 0) AS top_share\n"
            "  FROM cat_totals",
        ),
    ]


def _events(cutoff: Cutoff, config: FeatureConfig, aggs: list[Agg]) -> list[tuple[str, str]]:
    # Each event type is read only as far back as the longest window of an aggregate over it: visits
    # counted over 30 and 90 days are not scanned for a year because returns are summed over 365
    # days (on the perf reference's 10M events: 45% fewer rows into the grouping). A customer whose
    # only events fall outside every window loses the row here, not a value: every output column
    # over this source is a COALESCE to 0 or a ratio that is NULL either way.
    span: dict[str, int | None] = {}
    for a in aggs:
        for t in a.event_types:
            span[t] = None if a.days is None or span.get(t, 0) is None else max(span.get(t, 0), a.days)
    by_span: dict[int | None, list[str]] = {}
    for t in sorted(span):
        by_span.setdefault(span[t], []).append(t)
    longest = None if not span or None in by_span else max(by_span)
    since = "" if longest is None else f" AND ts >= {cutoff.ago(longest)}"
    if len(by_span) <= 1:
        types = f"event_type IN {in_list(sorted(span))}"
    else:  # the longest span is already in ``since``
        types = " OR ".join(
            f"(event_type IN {in_list(ts)}" + ("" if d == longest else f" AND ts >= {cutoff.ago(d)}") + ")"
            for d, ts in sorted(by_span.items(), key=lambda kv: -1 if kv[0] is None else kv[0])
        )
        types = f"({types})"
    return [
        (
            "ea",
            f"SELECT customer_id{_select_aggs(aggs)}\n"
            f"  FROM {EVENTS}\n"
            f"  WHERE {types} AND ts < {cutoff.lit}{since}\n"
            "  GROUP BY customer_id",
        )
    ]


def event_count(alias: str, event_types: tuple[str, ...], cutoff: Cutoff, days: int) -> Agg:
    """Number of events of ``event_types`` in ``[T - days, T)``."""
    pred = (
        f"event_type = {literal(event_types[0])}" if len(event_types) == 1 else f"event_type IN {in_list(event_types)}"
    )
    return Agg(alias, f"count(*) FILTER (WHERE {pred} AND ts >= {cutoff.ago(days)})", event_types, days)


def event_amount(alias: str, event_type: str, cutoff: Cutoff, days: int) -> Agg:
    """Sum of ``amount`` of ``event_type`` events in ``[T - days, T)``."""
    return Agg(
        alias,
        f"sum(amount) FILTER (WHERE event_type = {literal(event_type)} AND ts >= {cutoff.ago(days)})",
        (event_type,),
        days,
    )


def _surveys(cutoff: Cutoff, config: FeatureConfig, aggs: list[Agg]) -> list[tuple[str, str]]:
    # Latest survey before T; two on the same timestamp resolve to the higher score (deterministic).
    return [
        (
            "survey_ranked",
            "SELECT customer_id, ts, score,\n"
            "    row_number() OVER (PARTITION BY customer_id ORDER BY ts DESC, score DESC) AS rn\n"
            f"  FROM {SURVEYS} WHERE ts < {cutoff.lit}",
        ),
        (
            "sv",
            "SELECT customer_id, ts AS last_ts, score AS last_score FROM survey_ranked WHERE rn = 1",
        ),
    ]


def _treatments(cutoff: Cutoff, config: FeatureConfig, aggs: list[Agg]) -> list[tuple[str, str]]:
    return [
        (
            "tr",
            "SELECT customer_id, count(*) AS treated\n"
            f"  FROM {TREATMENTS}\n"
            f'  WHERE "group" = {literal(TREATED)} AND ts < {cutoff.lit}'
            f" AND ts >= {cutoff.ago(config.contacts.days)}\n"
            "  GROUP BY customer_id",
        )
    ]


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("orders", _orders, joined=False),
        Source("pa", _purchase_aggregates, depends=("orders",)),
        Source("gs", _gaps, depends=("orders",)),
        Source("ca", _categories),
        Source("ea", _events),
        Source("sv", _surveys),
        Source("tr", _treatments),
    )
}

#: The orders source of a store without any ``order_id`` (:func:`omnicrm.features.snapshot.has_order_ids`).
ORDER_LINES = Source("orders", _order_lines, joined=False)
