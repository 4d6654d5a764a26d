"""The value of each cadence per class (object-oriented matplotlib: no pyplot state, works headless)."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

_COLOURS = {"saturated": "tab:red", "on_target": "tab:green", "under_saturated": "tab:blue"}


def value_by_class_figure(table: pd.DataFrame, current: int, unit: str = "margin per member") -> Figure:
    """Value of each cadence against the current one, one line per learned class.

    Parameters
    ----------
    table
        :func:`omnicrm.frequency.evaluate.value_by_class`: ``class, cadence, members, estimated`` and
        optionally ``true``.
    current
        The current cadence (value 0 by construction).
    unit
        What the value is, for the y label.

    Returns
    -------
    matplotlib.figure.Figure
        Solid lines: the true value (synthetic truth) where known; dashed: the held-out estimate.
    """
    fig = Figure(figsize=(9.5, 4.8))
    ax = fig.add_subplot()
    for klass, part in table.groupby("class", sort=False):
        part = part.sort_values("cadence")
        n = int(part["members"].iloc[0])
        if n == 0:
            continue
        colour = _COLOURS.get(str(klass))
        if "true" in part:
            ax.plot(part["cadence"], part["true"], "-o", color=colour, label=f"{klass} (n={n:,}): true")
        ax.plot(part["cadence"], part["estimated"], "--x", color=colour, label=f"{klass}: estimated")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.axvline(current, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xscale("log", base=2)
    ticks = sorted(table["cadence"].unique())
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("cadence (e-mails per four weeks)")
    ax.set_ylabel(f"value vs the current cadence ({unit})")
    ax.set_title("Value of each cadence by learned class (held-out members)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.subplots_adjust(left=0.09, right=0.68)
    return fig
