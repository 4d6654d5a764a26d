"""The report as data: sections of tables, each with the plot that goes beside it.

:func:`build_report` is the pure step: a store connection, the period, the settings and the frames
the wiring read (a CLV score frame from the registry, the synthetic truth) in; a :class:`Report`
out. It computes every figure through :mod:`omnicrm.report.kpis`,
:mod:`omnicrm.report.campaigns` and :mod:`omnicrm.report.attribution` (DuckDB SQL), and decides
which sections have no data and says why. :mod:`omnicrm.report.page` turns it into HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd

from omnicrm import schema
from omnicrm.errors import InputError
from omnicrm.progress import Progress, silent
from omnicrm.report import attribution as attr
from omnicrm.report import campaigns as camp
from omnicrm.report import kpis
from omnicrm.report.config import ReportConfig


@dataclass
class Plot:
    """What to draw beside a table.

    ``kind``: ``line`` (``y`` columns over ``x``), ``twin`` (two ``y`` columns over ``x`` on their
    own axes), ``bar`` (``y`` per ``x``), ``stacked`` (the ``y`` columns as shares of their sum per
    ``x``), ``heatmap`` (a wide table: rows labelled by ``x``, the ``y`` columns as cells), ``hist``
    (the ``y`` column's distribution), ``interval`` (``y`` with ``low`` / ``high`` per ``x``) or
    ``grouped`` (several ``y`` columns per ``x``, side by side).
    """

    kind: str
    x: str
    y: list[str]
    low: str | None = None
    high: str | None = None
    title: str = ""
    ylabel: str = ""
    log: bool = False


@dataclass
class Block:
    """A table, its plot and a sentence saying how to read them (``data``: what the plot draws, when not the table)."""

    title: str
    table: pd.DataFrame
    plot: Plot
    note: str = ""
    data: pd.DataFrame | None = None


@dataclass
class Section:
    """A section of the page; ``empty`` says why it has no data (then it has no blocks)."""

    key: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    empty: str | None = None


@dataclass
class Report:
    """Everything the page shows: the headline ``kpis`` (logged as metrics too) and the sections."""

    name: str
    start: datetime
    end: datetime
    kpis: dict[str, float]
    summary: list[str]
    sections: list[Section]


def _snapshot(con: duckdb.DuckDBPyConnection, at: datetime, feats) -> pd.DataFrame:  # noqa: ANN001
    from omnicrm.features import build_features

    return build_features(con, [at], feats)


def customer_base_section(
    con: duckdb.DuckDBPyConnection,
    cfg: ReportConfig,
    feats,
    start: datetime,
    end: datetime,
    heads: dict,  # noqa: ANN001
) -> tuple[Section, dict[str, pd.DataFrame]]:
    """Customer base per month, lifecycle stage counts at each month's end and the transition matrix."""
    base = kpis.customer_base(con, start, end, cfg.lapse_days)
    month_ends = [min(pd.Timestamp(m) + pd.DateOffset(months=1), pd.Timestamp(end)) for m in base["month"]]
    snaps = {pd.Timestamp(start).to_pydatetime(): _snapshot(con, start, feats)}
    for m in month_ends:
        snaps.setdefault(m.to_pydatetime(), _snapshot(con, m.to_pydatetime(), feats))
    stages = pd.concat(list(snaps.values()), ignore_index=True)
    counts = kpis.stage_counts(con, stages, "lifecycle_stage")
    wide = counts.pivot(index="date", columns="stage", values="customers").fillna(0).astype(int).reset_index()
    order = [s for s in ("prospect", "new", "active", "at_risk", "dormant", "churned") if s in wide.columns]
    wide = wide[["date", *order]]
    first, last = snaps[min(snaps)], snaps[max(snaps)]
    trans = kpis.transitions(con, first, last, "lifecycle_stage")
    matrix = trans.pivot(index="stage_from", columns="stage_to", values="customers").fillna(0).astype(int)
    matrix = matrix.reindex(columns=[s for s in order if s in matrix.columns])
    matrix = matrix.reindex([s for s in ["not known", *order] if s in matrix.index]).reset_index()
    heads["active_customers_last_month"] = float(base["active"].iloc[-1]) if len(base) else float("nan")
    heads["new_customers"] = float(base["new"].sum())
    heads["reactivated_customers"] = float(base["reactivated"].sum())
    heads["lost_customers"] = float(base["lost"].sum())
    section = Section(
        "base",
        "Customer base",
        [
            Block(
                "Customers per month",
                base,
                Plot("line", "month", ["active", "new", "returning", "reactivated", "lost"], ylabel="customers"),
                f"Active: an order in the month. Returning: ordered in the {cfg.lapse_days} days before too; "
                f"reactivated: after a longer gap; lost: the last order turned {cfg.lapse_days} days old in the month.",
            ),
            Block(
                "Lifecycle stages at each month's end",
                wide,
                Plot("stacked", "date", order, ylabel="share of known customers"),
                "Stages as the features compute them at the date (reading only earlier events).",
            ),
            Block(
                f"Lifecycle transitions {min(snaps):%Y-%m-%d} -> {max(snaps):%Y-%m-%d}",
                matrix,
                Plot(
                    "heatmap",
                    "stage_from",
                    [c for c in matrix.columns if c != "stage_from"],
                    title="rows: stage at the start; columns: at the end",
                ),
                "Where each stage's customers at the start of the period stood at its end ('not known': "
                "first seen during the period).",
            ),
        ],
    )
    return section, {"first": first}


def retention_section(
    con: duckdb.DuckDBPyConnection, cfg: ReportConfig, start: datetime, end: datetime, heads: dict
) -> Section:
    """Cohort retention heat-map, repurchase rate per cohort, monthly order KPIs, inter-purchase time."""
    cohorts = kpis.cohort_retention(con, start, end)
    rep = kpis.repurchase(con, start, end, cfg.repurchase_days)
    orders = kpis.order_kpis(con, start, end)
    gaps = kpis.inter_purchase_days(con, start, end)
    summary = kpis.period_summary(con, start, end)
    heads.update({k: v for k, v in summary.items()})
    if len(rep):
        heads["repurchase_rate"] = float(rep["repurchased"].sum() / rep["customers"].sum())
    blocks = []
    if len(cohorts):
        wide = cohorts.pivot(index="cohort", columns="months_since", values="retention")
        wide.columns = [f"m{int(c)}" for c in wide.columns]
        sizes = cohorts.groupby("cohort")["cohort_size"].first()
        wide.insert(0, "customers", sizes)
        wide = wide.reset_index()
        wide["cohort"] = wide["cohort"].astype(str).str[:10]
        blocks.append(
            Block(
                "Retention by acquisition cohort",
                wide,
                Plot(
                    "heatmap",
                    "cohort",
                    [c for c in wide.columns if c not in ("cohort", "m0", "customers")],
                    title="share of the cohort buying in month k (k >= 1)",
                ),
                "Cohort: customers whose first order ever fell in the month; "
                "m<k>: share of them ordering k months later.",
            )
        )
    if len(rep):
        blocks.append(
            Block(
                f"Repurchase within {cfg.repurchase_days} days of the first order",
                rep,
                Plot("bar", "cohort", ["repurchase_rate"], ylabel="share"),
                f"Cohorts whose month ended at least {cfg.repurchase_days} days before the period's end.",
            )
        )
    blocks.append(
        Block(
            "Orders, frequency and average order value per month",
            orders,
            Plot("twin", "month", ["aov", "frequency"]),
            "Frequency: orders per buying customer in the month; AOV: revenue per order.",
        )
    )
    if len(gaps):
        q = gaps["days"].quantile([0.1, 0.25, 0.5, 0.75, 0.9])
        table = pd.DataFrame({"quantile": ["10%", "25%", "median", "75%", "90%"], "days": q.to_numpy()})
        table.loc[len(table)] = ["mean", gaps["days"].mean()]
        blocks.append(
            Block(
                "Days between consecutive orders",
                table,
                Plot("hist", "days", ["days"], ylabel="orders"),
                "Every order of the period that followed an earlier order of the same customer.",
                data=gaps,
            )
        )
    return Section("retention", "Retention and repurchase", blocks)


def classic_clv(con: duckdb.DuckDBPyConnection, end: datetime, horizon_days: int) -> pd.DataFrame:
    """BG/NBD + Gamma-Gamma fitted on the store at ``end``: ``customer_id``, ``clv`` over ``horizon_days``."""
    from omnicrm.tasks.btyd import BtydModel, rfm_summary

    summary = rfm_summary(con, end)
    pred = BtydModel().fit(summary).predict(summary, horizon_days)
    return pd.DataFrame({"customer_id": pred["customer_id"], "clv": pred["btyd_clv"]})


def value_section(
    con: duckdb.DuckDBPyConnection,
    cfg: ReportConfig,
    start: datetime,
    end: datetime,
    first: pd.DataFrame,
    clv: pd.DataFrame | None,
    clv_source: str,
    heads: dict,
) -> Section:
    """Revenue and margin per customer, CLV deciles, value by RFM segment."""
    blocks = []
    per = kpis.value_per_customer(con, start, end)
    if len(per):
        q = per[["revenue", "margin", "orders"]].quantile([0.25, 0.5, 0.75, 0.9]).T
        q.columns = ["25%", "median", "75%", "90%"]
        q.insert(0, "mean", per[["revenue", "margin", "orders"]].mean())
        heads["revenue_per_customer"] = float(per["revenue"].mean())
        heads["margin_per_customer"] = float(per["margin"].mean())
        blocks.append(
            Block(
                "Revenue and margin per buying customer in the period",
                q.reset_index(names="per customer"),
                Plot("hist", "revenue", ["revenue"], ylabel="customers", log=True),
                "Customers with an order in the period; margin = revenue - quantity x unit cost.",
                data=per,
            )
        )
    if clv is None:
        try:
            clv = classic_clv(con, end, cfg.clv.horizon_days)
            clv_source = f"BG/NBD + Gamma-Gamma fitted at {end:%Y-%m-%d}, {cfg.clv.horizon_days}-day horizon"
        except InputError as exc:
            clv_source = f"No CLV figures: BG/NBD + Gamma-Gamma could not be fitted ({exc})."
            if blocks:
                blocks[0].note += f" {clv_source}"
    if clv is not None and len(clv):
        dec = kpis.clv_deciles(con, clv)
        heads["clv_mean"] = float(clv["clv"].mean())
        heads["clv_top_decile_share"] = float(dec["share_of_clv"].iloc[-1])
        blocks.append(
            Block(
                "CLV deciles",
                dec,
                Plot("bar", "decile", ["share_of_clv"], ylabel="share of total CLV"),
                f"Source: {clv_source}. Decile 10 holds the highest CLVs.",
            )
        )
    seg = kpis.value_by_segment(con, first, "rfm_segment", start, end)
    if len(seg):
        blocks.append(
            Block(
                "Value by RFM segment at the period's start",
                seg,
                Plot("bar", "segment", ["revenue_per_customer"], ylabel="revenue per customer"),
                "Segments as of the start date; revenue and margin per member over the period (non-buyers count as 0).",
            )
        )
    return Section("value", "Value", blocks, None if blocks else "no orders in the period")


def omnichannel_section(
    con: duckdb.DuckDBPyConnection, cfg: ReportConfig, start: datetime, end: datetime, heads: dict
) -> Section:
    """Online-only, offline-only and both: what each group is worth; channel mix per month."""
    groups = kpis.channel_groups(con, start, end, cfg.retention_days)
    mix = kpis.channel_mix(con, start, end)
    online = set(mix["channel"]) & set(schema.ONLINE_CHANNELS)
    offline = set(mix["channel"]) & set(schema.OFFLINE_CHANNELS)
    if not (online and offline):
        return Section(
            "omni",
            "Omni-channel",
            empty="the store's orders carry no online and offline channels both "
            f"(channels seen: {', '.join(sorted(set(mix['channel']))) or 'none'})",
        )
    blocks = []
    if len(groups):
        g = groups.set_index("group")
        if "both" in g.index and "online only" in g.index:
            spend = g["spend_per_customer"]
            heads["omni_spend_ratio_vs_online"] = float(spend["both"] / spend["online only"])
        blocks.append(
            Block(
                "Online only, offline only and both",
                groups,
                Plot("grouped", "group", ["spend_per_customer"], ylabel="spend per customer"),
                f"Groups from the orders before the period's last {cfg.retention_days} days; retention: "
                f"an order in those last {cfg.retention_days} days.",
            )
        )
    wide = mix.pivot(index="month", columns="channel", values="revenue_share").fillna(0).reset_index()
    blocks.append(
        Block(
            "Revenue share by purchase channel",
            wide,
            Plot("stacked", "month", [c for c in wide.columns if c != "month"], ylabel="share of revenue"),
            "Orders by the channel they were placed on.",
        )
    )
    return Section("omni", "Omni-channel", blocks)


def satisfaction_section(
    con: duckdb.DuckDBPyConnection, cfg: ReportConfig, start: datetime, end: datetime, first: pd.DataFrame, heads: dict
) -> Section:
    """NPS per month and per segment with 95% intervals; service contacts vs NPS vs churn."""
    monthly = kpis.nps_by_month(con, start, end)
    if monthly.empty:
        return Section("satisfaction", "Satisfaction", empty="no survey answers in the period")
    blocks = [
        Block(
            "NPS per month (95% interval)",
            monthly,
            Plot("interval", "month", ["nps"], low="nps_low", high="nps_high", ylabel="NPS"),
            "NPS = 100 x (share 9-10 - share 0-6) of the month's answers; normal-approximation interval.",
        )
    ]
    seg = kpis.nps_by_segment(con, first, "rfm_segment", start, end)
    blocks.append(
        Block(
            "NPS by RFM segment at the period's start",
            seg,
            Plot("interval", "segment", ["nps"], low="nps_low", high="nps_high", ylabel="NPS"),
        )
    )
    sc = kpis.service_nps_churn(con, start, end, cfg.satisfaction.contact_days, cfg.satisfaction.churn_days)
    if len(sc):
        blocks.append(
            Block(
                "Service contacts, NPS and later churn",
                sc,
                Plot("grouped", "service_contacts", ["churn"], ylabel="churn"),
                f"Per answer: the customer's service contacts in the {cfg.satisfaction.contact_days} days before it; "
                f"churn: no order in the {cfg.satisfaction.churn_days} days after it.",
            )
        )
    allp = (
        con.execute(
            f"SELECT {kpis.nps_sql('score')} FROM {schema.SURVEYS} WHERE ts >= ? AND ts < ? AND score IS NOT NULL",
            [start, end],
        )
        .df()
        .iloc[0]
    )
    heads.update({k: float(allp[k]) for k in ("nps", "nps_low", "nps_high")})
    return Section("satisfaction", "Satisfaction", blocks)


def _ci(frame: pd.DataFrame, col: str, fmt: str) -> pd.Series:
    """``value [low, high]`` strings of a column and its ``_low`` / ``_high`` interval."""
    return pd.Series(
        [
            f"{format(v, fmt)} [{format(lo, fmt)}, {format(hi, fmt)}]" if np.isfinite(v) else ""
            for v, lo, hi in zip(frame[col], frame[f"{col}_low"], frame[f"{col}_high"], strict=True)
        ],
        index=frame.index,
    )


def campaign_table(returns: pd.DataFrame) -> pd.DataFrame:
    """The campaign return table as the page shows it: one column per figure, intervals in brackets."""
    return pd.DataFrame(
        {
            "campaign": returns["campaign_id"],
            "channel": returns["channel"],
            "sent": pd.to_datetime(returns["send_ts"]).dt.strftime("%Y-%m-%d"),
            "action": returns["action"],
            "treated": returns["treated"],
            "control": returns["control"],
            "cost": returns["cost"],
            "incr. orders": _ci(returns, "incremental_orders", ",.0f"),
            "incr. revenue": _ci(returns, "incremental_spend", ",.0f"),
            "incr. margin": _ci(returns, "incremental_margin", ",.0f"),
            "ROI": _ci(returns, "roi", ",.1f"),
            "ROAS": _ci(returns, "roas", ",.1f"),
        }
    )


def campaign_sections(
    con: duckdb.DuckDBPyConnection,
    cfg: ReportConfig,
    start: datetime,
    end: datetime,
    truth: tuple[pd.DataFrame, pd.DataFrame] | None,
    heads: dict,
    progress: Progress,
) -> tuple[Section, Section]:
    """The campaign return section and the attribution section (with its check against the campaigns)."""
    w = cfg.campaigns.window_days
    returns, exposures = (pd.DataFrame(), pd.DataFrame())
    if kpis.has_rows(con, schema.TREATMENTS):
        returns, exposures = camp.campaign_return(con, start, end, w)
    if returns.empty:
        why = (
            "the store holds no campaigns"
            if not kpis.has_rows(con, schema.TREATMENTS)
            else (f"no campaign was sent in the period with its {w}-day outcome window closed before its end")
        )
        campaigns = Section("campaigns", "Campaigns", empty=why)
    else:
        heads["campaign_cost"] = float(returns["cost"].sum())
        heads["campaign_incremental_margin"] = float(returns["incremental_margin"].sum())
        heads["campaign_incremental_revenue"] = float(returns["incremental_spend"].sum())
        cost = heads["campaign_cost"]
        heads["campaign_roi"] = (heads["campaign_incremental_margin"] - cost) / cost if cost > 0 else float("nan")
        show = returns.assign(label=returns["campaign_id"] + " " + returns["action"])
        campaigns = Section(
            "campaigns",
            "Campaigns",
            [
                Block(
                    "Incremental orders, revenue and margin against the randomised control",
                    campaign_table(returns),
                    Plot(
                        "interval",
                        "label",
                        ["incremental_margin"],
                        low="incremental_margin_low",
                        high="incremental_margin_high",
                        ylabel="incremental margin",
                    ),
                    f"Effect (treated mean - control mean in the {w} days after the send, Welch 95% interval) "
                    "x treated exposures. ROI = (incremental margin - cost) / cost; ROAS = incremental revenue / cost.",
                    data=show,
                ),
            ],
        )
    touches = con.execute(
        f"SELECT count(*) FROM {schema.EVENTS} WHERE event_type IN ('email_open', 'email_click', 'push_open', 'visit')"
        " AND ts < ?",
        [end],
    ).fetchone()[0]
    if not touches and not kpis.has_rows(con, schema.TREATMENTS):
        return campaigns, Section(
            "attribution",
            "Attribution",
            empty="the store holds no touchpoints (no e-mail, push, SMS or web/app visit events)",
        )
    progress("report: attribution", 0.8)
    la, hl = cfg.attribution.lookback_days, cfg.attribution.half_life_days
    credits, counts = attr.attribution(con, start, end, la, hl)
    heads["conversions"] = counts["conversions"]
    heads["touched_conversion_share"] = counts["touched"] / max(counts["conversions"], 1)
    blocks = [
        Block(
            "Conversions credited per channel by each rule",
            credits,
            Plot("grouped", "channel", list(attr.RULES), ylabel="conversions credited"),
            f"Conversions: orders in the period; touches in the {la} days before each "
            f"(time decay half-life {hl:g} days). "
            f"{counts['touched'] / max(counts['conversions'], 1):.0%} of the conversions had a touch.",
        )
    ]
    if not returns.empty:
        scope = camp.scope_sql(start, end, w)
        scoped, _ = attr.attribution(con, start, end, la, hl, scope)
        true = None
        if truth is not None:
            from omnicrm.uplift.truth import true_effects

            links = con.execute("SELECT source, source_record_id, customer_id FROM identity_links").df()
            effects = true_effects(truth[0], truth[1], links, exposures)
            true = camp.true_incremental(effects, exposures, cfg.truth.effect_weeks if cfg.truth else 2)
        check = camp.attribution_vs_incrementality(scoped, returns, true, attr.RULES)
        for r in attr.RULES:
            inc = check["incremental_orders"].sum()
            heads[f"attribution_over_{r}"] = float(check[r].sum() / inc) if inc > 0 else float("nan")
        shown = pd.DataFrame(
            {"channel": check["channel"], "incremental orders (95% CI)": _ci(check, "incremental_orders", ",.0f")}
        )
        if "true_incremental" in check.columns:
            shown["truth (generator)"] = check["true_incremental"]
        for r in attr.RULES:
            shown[r] = [f"{v:,.0f} ({o:.2f}x)" for v, o in zip(check[r], check[f"{r}_over"], strict=True)]
        blocks.append(
            Block(
                "Attribution checked against the randomised campaigns",
                shown,
                Plot("grouped", "channel", ["incremental_orders", *attr.RULES], ylabel="orders"),
                "Orders of treated customers in the campaigns' outcome windows, credited to the campaign's channel by "
                "each rule (the message itself counts as a touch), next to the orders the campaigns caused "
                "(readout: effect on orders x treated, 95% interval)"
                + ("; truth (generator): expected extra purchase-weeks" if true is not None else "")
                + ". (n.nnx): the rule's credit / the incremental orders; above 1, the rule credits orders that "
                "would have happened anyway.",
                data=check,
            )
        )
    return campaigns, Section("attribution", "Attribution", blocks)


def _plottable(block: Block) -> bool:
    """Whether a block's plot has at least one finite value to draw."""
    data = block.data if block.data is not None else block.table
    cols = [c for c in block.plot.y if c in data.columns]
    if data.empty or not cols:
        return False
    values = data[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    return bool(np.isfinite(values).any())


def summary_lines(h: dict[str, float], start: datetime, end: datetime, repurchase_days: int = 90) -> list[str]:
    """A few sentences for the top of the page, from the headline KPIs."""

    def f(key: str, fmt: str = ",.0f") -> str:
        v = h.get(key, float("nan"))
        return "n/a" if v is None or not np.isfinite(v) else format(v, fmt)

    lines = [
        f"{f('customers')} customers placed {f('orders')} orders worth {f('revenue')} "
        + (f"(margin {f('margin')}) " if "margin" in h else "")
        + f"between {start:%Y-%m-%d} and {end:%Y-%m-%d} (end excluded); "
        f"average order value {f('aov', ',.2f')}, {f('frequency', '.2f')} orders per customer, "
        f"{f('repeat_share', '.0%')} of them ordered more than once.",
        f"{f('new_customers')} new customers, {f('reactivated_customers')} reactivated, {f('lost_customers')} lost; "
        f"{f('active_customers_last_month')} active in the last month; "
        f"{f('repurchase_rate', '.0%')} of the customers acquired in the period ordered again within "
        f"{repurchase_days} days of their first order (cohorts that had the {repurchase_days} days).",
    ]
    if "omni_spend_ratio_vs_online" in h:
        lines.append(
            f"Customers buying online and in store spent {f('omni_spend_ratio_vs_online', '.2f')}x what "
            "online-only customers spent."
        )
    if "nps" in h:
        lines.append(f"NPS {f('nps', '.1f')} (95% interval {f('nps_low', '.1f')} to {f('nps_high', '.1f')}).")
    if "campaign_cost" in h:
        lines.append(
            f"Campaigns cost {f('campaign_cost')} and caused an incremental margin of "
            f"{f('campaign_incremental_margin')} (ROI {f('campaign_roi', '.1f')})."
        )
    if "attribution_over_last_touch" in h:
        lines.append(
            f"Against the randomised campaigns, last-touch credits {f('attribution_over_last_touch', '.2f')}x the "
            f"orders they caused, linear {f('attribution_over_linear', '.2f')}x, "
            f"Markov {f('attribution_over_markov', '.2f')}x."
        )
    return lines


def build_report(
    con: duckdb.DuckDBPyConnection,
    cfg: ReportConfig,
    feats,  # noqa: ANN001 - a FeatureConfig with the lifecycle and rfm_segment groups
    start: datetime,
    end: datetime,
    clv: pd.DataFrame | None = None,
    clv_source: str = "",
    truth: tuple[pd.DataFrame, pd.DataFrame] | None = None,
    progress: Progress = silent,
) -> Report:
    """Every section of the report over ``[start, end)``.

    Parameters
    ----------
    con
        The store, read-only (the wiring opens it ``deterministic``).
    cfg, feats
        The report config and its feature config (:func:`omnicrm.report.config.load_report_config`).
    start, end
        The period; every figure reads only events before ``end`` (a month's: before its end).
    clv, clv_source
        CLV scores (``customer_id``, ``clv``) from a registered model and a sentence naming it; when
        ``None``, BG/NBD + Gamma-Gamma is fitted at ``end``.
    truth
        The synthetic world's true effects and record owners, for the attribution check.
    progress
        Progress callback.
    """
    if end <= start:
        raise InputError(f"report: --to {end:%Y-%m-%d} must be after --from {start:%Y-%m-%d}")
    heads: dict[str, float] = {}
    progress("report: customer base", 0.05)
    base, snaps = customer_base_section(con, cfg, feats, start, end, heads)
    progress("report: retention", 0.3)
    retention = retention_section(con, cfg, start, end, heads)
    progress("report: value", 0.45)
    value = value_section(con, cfg, start, end, snaps["first"], clv, clv_source, heads)
    progress("report: omni-channel and satisfaction", 0.6)
    omni = omnichannel_section(con, cfg, start, end, heads)
    sat = satisfaction_section(con, cfg, start, end, snaps["first"], heads)
    progress("report: campaigns", 0.7)
    campaigns, attribution = campaign_sections(con, cfg, start, end, truth, heads, progress)
    sections = [base, retention, value, omni, sat, campaigns, attribution]
    for sec in sections:
        # a table with nothing to plot (no rows, or no finite value to draw) is left out, and a
        # section left without tables says so
        sec.blocks = [b for b in sec.blocks if _plottable(b)]
        if not sec.blocks and not sec.empty:
            sec.empty = f"nothing to show between {start:%Y-%m-%d} and {end:%Y-%m-%d} (no orders or customers yet)"
    if not con.execute(f"SELECT count(margin) FROM {schema.PRODUCTS}").fetchone()[0]:
        # without product margins every margin would read 0: leave them out instead
        heads = {k: v for k, v in heads.items() if "margin" not in k}
        for sec in sections:
            for b in sec.blocks:
                b.table = b.table.drop(columns=[c for c in b.table.columns if "margin" in str(c)])
                if b.table.columns[0] == "per customer":
                    b.table = b.table[b.table["per customer"] != "margin"].reset_index(drop=True)
                b.note = b.note.replace(
                    "; margin = revenue - quantity x unit cost", "; the store has no product margins"
                )
    first = con.execute(f"SELECT min(ts) FROM {schema.EVENTS}").fetchone()[0]
    if first is not None and first > start - pd.Timedelta(days=cfg.lapse_days):
        base.blocks[0].note += (
            f" The store's events start on {first:%Y-%m-%d}: a customer's orders before that are unknown, so near it "
            "'new' includes earlier customers and reactivations are undercounted."
        )
    heads = {k: float(v) for k, v in heads.items() if v is not None and np.isfinite(v)}
    return Report(cfg.name, start, end, heads, summary_lines(heads, start, end, cfg.repurchase_days), sections)


__all__ = ["Block", "Plot", "Report", "Section", "build_report"]
