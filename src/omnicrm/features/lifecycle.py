"""Lifecycle stage and RFM segment: rule-based labels of a customer at the cutoff ``T``.

Lifecycle stage (``lifecycle_stage``; thresholds from :class:`~omnicrm.features.config.LifecycleConfig`)
--------------------------------------------------------------------------------------------------------
"Within d days" means at or after ``T - d days`` (and, as always, before ``T``). The first rule
that matches wins:

1. ``prospect`` — known (``first_seen < T``) but no purchase before ``T``;
2. ``new`` — first purchase within ``new_days``;
3. ``active`` — last purchase within ``active_days``;
4. ``at_risk`` — last purchase within ``at_risk_days`` (but not within ``active_days``);
5. ``dormant`` — last purchase within ``dormant_days`` (but not within ``at_risk_days``);
6. ``churned`` — last purchase longer than ``dormant_days`` ago.

Purchases are orders as in :mod:`omnicrm.features.sources`. Defaults: 90 / 90 / 180 / 365 days.

RFM scores and segment (``rfm_r``, ``rfm_f``, ``rfm_m``, ``rfm_segment``; :class:`~omnicrm.features.config.RfmConfig`)
---------------------------------------------------------------------------------------------------------------------------
Scored population: the snapshot's customers with at least one purchase before ``T``, **within
each cutoff** (scores compare customers at the same ``T`` only). Inputs: R = time of the last
order (later is better), F = orders and M = gross spend in ``[T - window_days, T)`` (0 if none).
A score is a quantile bin computed from ranks so that ties always share a score::

    score = 1 + floor(bins * (rank - 1) / n)

where ``rank`` is the SQL ``RANK()`` of the value in ascending order (1 + the number of scored
customers with a strictly smaller value) and ``n`` the number scored. So the smallest value scores
1, a score of ``k`` means that between ``(k-1)/bins`` and ``k/bins`` of the customers have a
strictly smaller value, and many tied values (e.g. F = 1) share the lowest bin they reach. With
``bins = 5`` these are quintile scores 1–5. Customers without purchases get NULL scores.

The segment uses R and FM = (F + M) / 2 with thresholds ``high`` (default 4), ``mid`` (3) and
``lost`` (1); the first rule that matches wins:

=================  ==========================================  ===============================
segment            rule                                        reading
=================  ==========================================  ===============================
prospect           no purchase before ``T``                    not scored
champions          R ≥ high and FM ≥ high                      recent, frequent, big spenders
loyal              R ≥ mid and FM ≥ mid                        good and still buying
promising          R ≥ high (FM < mid)                         recent but small so far
needs_attention    R ≥ mid (FM < mid)                          middling on everything
at_risk            FM ≥ mid (R < mid)                          were good, not bought lately
lost               R ≤ lost (FM < mid)                         oldest purchases, small
hibernating        otherwise (lost < R < mid, FM < mid)        long ago and small
=================  ==========================================  ===============================

The grid follows the common R × FM segment map of RFM practice (e.g. Fader, Hardie & Lee, "RFM
and CLV: Using Iso-Value Curves for Customer Base Analysis", JMR 2005, for the R/F/M variables;
the named cells are the usual marketing vocabulary).
"""

from __future__ import annotations

from omnicrm.features.config import FeatureConfig
from omnicrm.features.definitions import first_order, last_order, orders_in, spend_in
from omnicrm.features.sources import Source
from omnicrm.features.sql import Agg, Cutoff, GroupSql
from omnicrm.sql import literal

LIFECYCLE_STAGES: tuple[str, ...] = ("prospect", "new", "active", "at_risk", "dormant", "churned")
RFM_SEGMENTS: tuple[str, ...] = (
    "prospect",
    "champions",
    "loyal",
    "promising",
    "needs_attention",
    "at_risk",
    "lost",
    "hibernating",
)


def lifecycle(cutoff: Cutoff, config: FeatureConfig) -> GroupSql:
    lc = config.lifecycle
    g = GroupSql()
    g.need("pa", first_order(), last_order())
    stage = (
        f"CASE WHEN pa.last_ts IS NULL THEN {literal('prospect')}"
        f" WHEN pa.first_ts >= {cutoff.ago(lc.new_days)} THEN {literal('new')}"
        f" WHEN pa.last_ts >= {cutoff.ago(lc.active_days)} THEN {literal('active')}"
        f" WHEN pa.last_ts >= {cutoff.ago(lc.at_risk_days)} THEN {literal('at_risk')}"
        f" WHEN pa.last_ts >= {cutoff.ago(lc.dormant_days)} THEN {literal('dormant')}"
        f" ELSE {literal('churned')} END"
    )
    g.column("lifecycle_stage", stage, "str")
    return g


def _score(value: str, bins: int) -> str:
    # RANK (not NTILE): ties share a score, so the result never depends on row order.
    return (
        f"1 + CAST(floor(CAST({bins} * (rank() OVER (ORDER BY {value}) - 1) AS DOUBLE) / count(*) OVER ()) AS INTEGER)"
    )


def rfm_inputs(config: FeatureConfig) -> tuple[str, str, str]:
    """The R, F and M values a purchaser is scored on, over the ``pa`` source."""
    w = config.rfm.window_days
    return "pa.last_ts", f"COALESCE(pa.orders_{w}d, 0)", f"COALESCE(pa.spend_{w}d, 0)"


def rfm_scores(config: FeatureConfig, r: str, f: str, m: str) -> str:
    """The select list ``r, f, m`` of the scores of the values ``r``, ``f``, ``m`` over the rows scored together."""
    bins = config.rfm.bins
    return f"{_score(r, bins)} AS r,\n    {_score(f, bins)} AS f,\n    {_score(m, bins)} AS m"


def _rfm_scores(cutoff: Cutoff, config: FeatureConfig, aggs: list[Agg]) -> list[tuple[str, str]]:
    # joined to base so the scored population is exactly the snapshot's purchasers
    return [
        (
            "rs",
            f"SELECT pa.customer_id,\n    {rfm_scores(config, *rfm_inputs(config))}\n"
            "  FROM pa JOIN base ON base.customer_id = pa.customer_id",
        )
    ]


RFM_SOURCE = Source("rs", _rfm_scores, depends=("pa",))


def rfm_segment(cutoff: Cutoff, config: FeatureConfig) -> GroupSql:
    c = config.rfm
    w = c.window_days
    g = GroupSql()
    g.need("pa", last_order(), orders_in(cutoff, w), spend_in(cutoff, w))
    g.need("rs")
    fm = "(rs.f + rs.m)"  # FM >= x  <=>  F + M >= 2x, kept in integers
    segment = (
        f"CASE WHEN rs.r IS NULL THEN {literal('prospect')}"
        f" WHEN rs.r >= {c.high} AND {fm} >= {2 * c.high} THEN {literal('champions')}"
        f" WHEN rs.r >= {c.mid} AND {fm} >= {2 * c.mid} THEN {literal('loyal')}"
        f" WHEN rs.r >= {c.high} THEN {literal('promising')}"
        f" WHEN rs.r >= {c.mid} THEN {literal('needs_attention')}"
        f" WHEN {fm} >= {2 * c.mid} THEN {literal('at_risk')}"
        f" WHEN rs.r <= {c.lost} THEN {literal('lost')}"
        f" ELSE {literal('hibernating')} END"
    )
    g.column("rfm_r", "rs.r", "float")
    g.column("rfm_f", "rs.f", "float")
    g.column("rfm_m", "rs.m", "float")
    g.column("rfm_segment", segment, "str")
    return g


GROUPS = {"lifecycle": lifecycle, "rfm_segment": rfm_segment}
