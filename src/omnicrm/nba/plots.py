"""Next-best-action figures: each policy's value against the budget.

Built with matplotlib's object-oriented API (no pyplot state), so they work headless with any
backend; the caller saves or logs them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from omnicrm.nba.evaluate import NO_ACTION, POLICIES

__all__ = ["value_budget_figure"]


def value_budget_figure(curve: pd.DataFrame, title: str, unit: str = "value") -> Figure:
    """Incremental value per row against the share contacted, one curve per policy.

    Parameters
    ----------
    curve
        :attr:`omnicrm.nba.evaluate.Judgement.table` over several budgets.
    title
        The figure's title (the catalogue and the history it was judged on).
    unit
        What the value is (``margin``), for the y label.

    Returns
    -------
    matplotlib.figure.Figure
        Solid lines: the doubly-robust estimate with its interval as a band; dashed lines of the same
        colour: the true value, when the curve has it (synthetic worlds).
    """
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    colours = dict(zip(POLICIES, ("C0", "C1", "C2", "C7", "k"), strict=True))
    has_truth = curve["true"].notna().any()
    for policy in POLICIES:
        part = curve[curve["policy"] == policy].sort_values("budget")
        if part.empty or policy == NO_ACTION:
            continue
        x = part["budget"].to_numpy(float)
        c = colours[policy]
        ax.plot(x, part["dr"], color=c, marker="o", ms=3, label=f"{policy} (DR estimate)")
        ax.fill_between(x, part["dr_lo"], part["dr_hi"], color=c, alpha=0.12, lw=0)
        if has_truth:
            ax.plot(x, part["true"], color=c, ls="--", lw=1.2, label=f"{policy} (true)")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlim(0, float(np.max(curve["budget"])) * 1.02)
    ax.set_xlabel("budget: share of eligible rows contacted (per campaign)")
    ax.set_ylabel(f"incremental {unit} per eligible row")
    ax.set_title(title)
    ax.legend(fontsize=7.5, ncol=2, loc="best")
    fig.tight_layout()
    return fig
