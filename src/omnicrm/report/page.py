"""The report as one self-contained HTML page: inline CSS, every plot an inline SVG, no script.

Nothing is fetched when the page opens (no script, font, style sheet or image from anywhere), so it
reads the same offline, attached to an e-mail or stored as an MLflow artifact. Plots are drawn
with matplotlib's SVG backend (text kept as paths, so no font is needed either).
"""

from __future__ import annotations

import html
import io
from datetime import date, datetime

import numpy as np
import pandas as pd

from omnicrm.report.build import Block, Plot, Report

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1320px;
       color: #1f2933; line-height: 1.4; }
h1 { font-size: 26px; margin-bottom: 4px; } h2 { font-size: 21px; border-bottom: 2px solid #d9e2ec;
       padding-bottom: 4px; margin-top: 36px; } h3 { font-size: 16px; margin: 18px 0 6px; }
.summary { background: #f0f4f8; border-left: 4px solid #486581; padding: 10px 16px; }
.summary li { margin: 4px 0; }
.kpis { display: flex; flex-wrap: wrap; gap: 8px; margin: 12px 0; }
.kpi { background: #fff; border: 1px solid #d9e2ec; border-radius: 4px; padding: 6px 10px; min-width: 130px; }
.kpi b { display: block; font-size: 18px; } .kpi span { font-size: 12px; color: #52606d; }
.block { display: flex; gap: 20px; align-items: flex-start; margin-bottom: 12px; flex-wrap: wrap; }
.table { flex: 1 1 520px; max-width: 760px; overflow-x: auto; max-height: 460px; overflow-y: auto; }
.plot { flex: 0 0 520px; } .plot svg { width: 520px; height: auto; }
.block.wide .table { flex-basis: 100%; max-width: none; } /* a wide table takes the row, its plot goes below */
table { border-collapse: collapse; font-size: 12px; } th, td { padding: 3px 7px; border-bottom: 1px solid #e4e7eb;
       white-space: nowrap; }
th { background: #f5f7fa; position: sticky; top: 0; text-align: left; } td.n { text-align: right;
       font-variant-numeric: tabular-nums; }
.note { font-size: 13px; color: #52606d; margin: 2px 0 8px; } .empty { font-style: italic; color: #7b8794; }
nav a { margin-right: 14px; }
"""

#: a table with more columns than this takes the page's width, with its plot below it
WIDE_COLUMNS = 8

COLOURS = ["#486581", "#e12d39", "#f0b429", "#3ebd93", "#9446ed", "#829ab1", "#cb6e17", "#2186eb"]


def _fmt(v: object) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, pd.Timestamp | datetime):
        return v.strftime("%Y-%m-%d %H:%M") if (v.hour or v.minute) else v.strftime("%Y-%m-%d")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, int | np.integer):
        return f"{int(v):,}"
    if isinstance(v, float | np.floating):
        a = abs(float(v))
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 10:
            return f"{v:,.1f}"
        return f"{v:.3f}"
    return str(v)


def table_html(frame: pd.DataFrame) -> str:
    """An HTML table of a frame (numbers right-aligned and rounded for reading)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for rec in frame.itertuples(index=False):
        cells = []
        for v in rec:
            num = isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
            cells.append(f"<td{' class=n' if num else ''}>{html.escape(_fmt(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _labels(values: pd.Series) -> list[str]:
    return [_fmt(v) for v in values]


def draw(plot: Plot, data: pd.DataFrame):  # noqa: ANN201, C901, PLR0912 - one branch per plot kind
    """A matplotlib figure of ``data`` as ``plot`` says."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6), dpi=80)
    x = data[plot.x] if plot.x in data.columns else pd.Series(range(len(data)))
    if plot.kind == "line":
        for i, col in enumerate(plot.y):
            ax.plot(
                pd.to_datetime(x) if "month" in plot.x or "date" in plot.x else x,
                data[col],
                marker="o",
                ms=3,
                label=col,
                color=COLOURS[i % len(COLOURS)],
            )
        if plot.log:
            ax.set_yscale("log")
        ax.legend(fontsize=8, ncol=3)
        fig.autofmt_xdate()
    elif plot.kind == "bar":
        pos = np.arange(len(data))
        ax.bar(pos, data[plot.y[0]].astype(float), color=COLOURS[0])
        ax.set_xticks(
            pos, _labels(x), rotation=45 if len(data) > 6 else 0, ha="right" if len(data) > 6 else "center", fontsize=8
        )
    elif plot.kind == "stacked":
        vals = data[plot.y].astype(float).to_numpy()
        shares = vals / np.where(vals.sum(axis=1, keepdims=True) > 0, vals.sum(axis=1, keepdims=True), 1)
        pos = np.arange(len(data))
        bottom = np.zeros(len(data))
        for i, col in enumerate(plot.y):
            ax.bar(pos, shares[:, i], bottom=bottom, label=col, color=COLOURS[i % len(COLOURS)], width=0.85)
            bottom += shares[:, i]
        ax.set_xticks(pos, _labels(x), rotation=45, ha="right", fontsize=8)
        ax.legend(fontsize=7, ncol=3, loc="lower left")
    elif plot.kind == "heatmap":
        # a wide table: one row per ``x`` label, the ``y`` columns as the heat-map's columns, in table order
        grid = data.set_index(plot.x)[plot.y].astype(float)
        im = ax.imshow(grid.to_numpy(), aspect="auto", cmap="Blues")
        ax.set_yticks(range(len(grid.index)), _labels(pd.Series(grid.index)), fontsize=7)
        ax.set_xticks(
            range(len(grid.columns)),
            [str(c) for c in grid.columns],
            fontsize=7,
            rotation=45 if max(len(str(c)) for c in grid.columns) > 3 else 0,
        )
        fig.colorbar(im, ax=ax, shrink=0.8)
    elif plot.kind == "twin":
        # two series on their own axes (left: y[0], right: y[1])
        t = pd.to_datetime(x)
        ax.plot(t, data[plot.y[0]], marker="o", ms=3, color=COLOURS[0], label=plot.y[0])
        ax.set_ylabel(plot.y[0], fontsize=9, color=COLOURS[0])
        right = ax.twinx()
        right.plot(t, data[plot.y[1]], marker="s", ms=3, color=COLOURS[1], label=plot.y[1])
        right.set_ylabel(plot.y[1], fontsize=9, color=COLOURS[1])
        right.tick_params(labelsize=8)
        for a, col in ((ax, plot.y[0]), (right, plot.y[1])):
            v = data[col].astype(float)
            a.set_ylim(0, float(np.nanmax(v)) * 1.15 if np.isfinite(v).any() and np.nanmax(v) > 0 else 1)
        fig.autofmt_xdate()
    elif plot.kind == "hist":
        v = data[plot.y[0]].astype(float)
        v = v[np.isfinite(v)]
        hi = np.quantile(v, 0.99) if len(v) else 1.0
        ax.hist(v.clip(upper=hi), bins=40, color=COLOURS[0])
        if plot.log:
            ax.set_yscale("log")
        ax.set_xlabel(f"{plot.y[0]} (top 1% shown at the edge)")
    elif plot.kind == "interval":
        pos = np.arange(len(data))
        y = data[plot.y[0]].astype(float).to_numpy()
        lo, hi = data[plot.low].astype(float).to_numpy(), data[plot.high].astype(float).to_numpy()
        ax.errorbar(pos, y, yerr=[y - lo, hi - y], fmt="o", color=COLOURS[0], ecolor=COLOURS[5], capsize=3)
        ax.axhline(0, color="#9aa5b1", lw=0.8)
        ax.set_xticks(
            pos, _labels(x), rotation=45 if len(data) > 4 else 0, ha="right" if len(data) > 4 else "center", fontsize=7
        )
    elif plot.kind == "grouped":
        pos = np.arange(len(data))
        width = 0.8 / len(plot.y)
        for i, col in enumerate(plot.y):
            ax.bar(
                pos + i * width - 0.4 + width / 2,
                data[col].astype(float),
                width=width,
                label=col,
                color=COLOURS[i % len(COLOURS)],
            )
        ax.set_xticks(pos, _labels(x), fontsize=8)
        if len(plot.y) > 1:
            ax.legend(fontsize=7, ncol=2)
    else:
        raise ValueError(f"unknown plot kind {plot.kind!r}")
    if plot.ylabel:
        ax.set_ylabel(plot.ylabel, fontsize=9)
    if plot.title:
        ax.set_title(plot.title, fontsize=9)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def svg(fig) -> str:  # noqa: ANN001 - a matplotlib figure
    """The figure as an inline SVG element (text as paths: no font is needed to show it); closes it."""
    import matplotlib
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "omnicrm"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def marks(fig) -> int:  # noqa: ANN001 - a matplotlib figure
    """How many data marks the figure's first axes hold (lines, bars, images, collections, error bars)."""
    ax = fig.axes[0]
    return len(ax.lines) + len(ax.patches) + len(ax.images) + len(ax.collections) + len(ax.containers)


def block_html(block: Block) -> str:
    """A block: its title, its note, the table and the plot beside it (``data-marks``: its data marks)."""
    fig = draw(block.plot, block.data if block.data is not None else block.table)
    n = marks(fig)
    plot = svg(fig)
    layout = "block wide" if len(block.table.columns) > WIDE_COLUMNS else "block"
    note = f"<p class=note>{html.escape(block.note)}</p>" if block.note else ""
    return (
        f"<h3>{html.escape(block.title)}</h3>{note}<div class='{layout}'><div class=table>{table_html(block.table)}"
        "</div>"
        f"<div class=plot data-marks={n}>{plot}</div></div>"
    )


KPI_LABELS = {
    "customers": ("customers", ",.0f"),
    "orders": ("orders", ",.0f"),
    "revenue": ("revenue", ",.0f"),
    "margin": ("margin", ",.0f"),
    "aov": ("average order value", ",.2f"),
    "repurchase_rate": ("repurchase rate", ".1%"),
    "nps": ("NPS", ".1f"),
    "clv_mean": ("mean CLV", ",.1f"),
    "campaign_roi": ("campaign ROI", ".2f"),
}


def render(report: Report) -> str:
    """The whole page as one HTML string."""
    title = f"omnicrm marketing report: {report.name}, {report.start:%Y-%m-%d} to {report.end:%Y-%m-%d}"
    kpis = "".join(
        f"<div class=kpi><b>{format(report.kpis[k], fmt)}</b><span>{label}</span></div>"
        for k, (label, fmt) in KPI_LABELS.items()
        if k in report.kpis
    )
    summary = "".join(f"<li>{html.escape(s)}</li>" for s in report.summary)
    nav = "".join(f"<a href='#{s.key}'>{html.escape(s.title)}</a>" for s in report.sections)
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p class=note>Period: from {report.start:%Y-%m-%d} up to, not including, "
        f"{report.end:%Y-%m-%d}; every figure reads only events before its period's end. "
        "Definitions: docs/report.md.</p>",
        f"<div class=summary><ul>{summary}</ul></div><div class=kpis>{kpis}</div><nav>{nav}</nav>",
    ]
    for s in report.sections:
        parts.append(f"<section id={s.key} data-section={s.key}><h2>{html.escape(s.title)}</h2>")
        if s.empty:
            parts.append(f"<p class=empty>No data: {html.escape(s.empty)}.</p>")
        parts.extend(block_html(b) for b in s.blocks)
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
