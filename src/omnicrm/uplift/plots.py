"""Uplift figures: Qini curves of every learner against random targeting.

Figures are built with matplotlib's object-oriented API (no pyplot state), so they work headless
with any backend; the caller saves or logs them (``tracking.log_figure`` closes them afterwards).
"""

from __future__ import annotations

from matplotlib.figure import Figure

from omnicrm.uplift.evaluate import Evaluation


def qini_figure(ev: Evaluation, action: str) -> Figure:
    """The held-out Qini curves of one action (first split seed), one line per learner, and random targeting.

    Parameters
    ----------
    ev
        An evaluation whose ``curves`` map ``(learner, action)`` to ``(share targeted, incremental
        outcome per row)``.
    action
        The action to draw.

    Returns
    -------
    matplotlib.figure.Figure
        x: share of rows targeted by predicted effect; y: incremental outcome per row. The dashed
        line joins (0, 0) to the curves' common end point: what random targeting gets.
    """
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    end = None
    for (learner, a), (x, q) in ev.curves.items():
        if a == action:
            ax.plot(x, q, label=learner)
            end = q[-1]
    if end is not None:
        ax.plot([0, 1], [0, end], "k--", label="random")
    ax.set_xlabel("share targeted (by predicted effect)")
    ax.set_ylabel(f"incremental {ev.outcome} per row")
    ax.set_title(f"Qini: {action} on {ev.outcome} (held-out, seed 0)")
    ax.legend()
    return fig


def qini_figures(ev: Evaluation) -> dict[str, Figure]:
    """:func:`qini_figure` of every action in ``ev``, by action (sorted)."""
    return {action: qini_figure(ev, action) for action in sorted({a for _, a in ev.curves})}
