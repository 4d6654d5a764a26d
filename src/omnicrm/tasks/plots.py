"""Evaluation figures for the prediction tasks: the model and its baselines on the same axes.

Each function takes ``scores``, a mapping from a legend label (``"model"``, ``"baseline: recency"``)
to one score per row, and returns a :class:`matplotlib.figure.Figure`. Figures are built with the
object-oriented API and never touch pyplot's global state, so they work headless with any backend and
need no ``show``; the caller saves or logs them (``tracking.log_figure`` closes them afterwards).
Scores are checked like the metrics: a NaN is an InputError naming the score's label.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from omnicrm.errors import InputError
from omnicrm.tasks.metrics import as_binary, as_vector, calibration_table, decile_table, gain_table

REFERENCE_STYLE = {"color": "0.55", "linestyle": ":", "linewidth": 1.0}


def _checked(y_true: Any, scores: Mapping[str, Any], *, binary: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The outcome and every score as finite float vectors of one length; errors name the score's label."""
    if not scores:
        raise InputError("scores: expected at least one score to draw, got an empty mapping")
    y = as_binary(y_true, "y_true") if binary else as_vector(y_true, "y_true")
    checked = {}
    for label, values in scores.items():
        arr = as_vector(values, f"score {label!r}")
        if len(arr) != len(y):
            raise InputError(f"score {label!r}: expected {len(y)} values (one per row of y_true), got {len(arr)}")
        checked[str(label)] = arr
    return y, checked


def _one_class_note(ax: Axes) -> None:
    ax.text(0.5, 0.5, "undefined: y_true has one class", ha="center", va="center", transform=ax.transAxes)


def roc_pr_figure(y_true: Any, scores: Mapping[str, Any], title: str) -> Figure:
    """Two panels: ROC curve (with the chance diagonal) and precision-recall curve (with the base rate).

    Legend labels carry ROC AUC and average precision. With one class in ``y_true`` both curves are
    undefined and the panels say so instead of drawing (no warning is raised).
    """
    y, checked = _checked(y_true, scores, binary=True)
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    ax_roc, ax_pr = fig.subplots(1, 2)
    base_rate = float(y.mean())
    if 0.0 < base_rate < 1.0:
        for label, s in checked.items():
            fpr, tpr, _ = roc_curve(y, s)
            ax_roc.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(y, s):.3f})")
            precision, recall, _ = precision_recall_curve(y, s)
            ax_pr.step(recall, precision, where="post", label=f"{label} (AP {average_precision_score(y, s):.3f})")
        ax_roc.plot([0, 1], [0, 1], label="chance", **REFERENCE_STYLE)
        ax_pr.axhline(base_rate, label=f"base rate {base_rate:.3f}", **REFERENCE_STYLE)
        ax_roc.legend(loc="lower right", fontsize="small")
        ax_pr.legend(loc="upper right", fontsize="small")
    else:
        _one_class_note(ax_roc)
        _one_class_note(ax_pr)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1.02))
    ax_pr.set(xlabel="recall", ylabel="precision", title="precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    fig.suptitle(title)
    return fig


def calibration_figure(y_true: Any, scores: Mapping[str, Any], title: str, bins: int = 10) -> Figure:
    """Reliability diagram over quantile bins (top) and the distribution of predicted probabilities (bottom)."""
    y, checked = _checked(y_true, scores, binary=True)
    fig = Figure(figsize=(6.4, 7.2), layout="constrained")
    ax_rel, ax_hist = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    edges = np.linspace(0.0, 1.0, 41)
    for label, p in checked.items():
        table = calibration_table(y, p, bins=bins)
        (line,) = ax_rel.plot(table["mean_predicted"], table["observed_rate"], marker="o", label=label)
        ax_hist.hist(np.clip(p, 0.0, 1.0), bins=edges, histtype="step", color=line.get_color(), label=label)
    ax_rel.plot([0, 1], [0, 1], label="perfectly calibrated", **REFERENCE_STYLE)
    ax_rel.set(ylabel="observed rate", title=f"reliability ({bins} quantile bins)", xlim=(0, 1), ylim=(0, 1.02))
    ax_rel.legend(loc="upper left", fontsize="small")
    ax_hist.set(xlabel="mean predicted probability", ylabel="rows")
    fig.suptitle(title)
    return fig


def lift_gain_figure(y_true: Any, scores: Mapping[str, Any], title: str) -> Figure:
    """Cumulative gains (left) and lift by decile (right) for a 0/1 outcome or a non-negative value.

    Gains: the share of positives (or of revenue) captured by targeting the top share of rows by each
    score, against random targeting and the ideal ordering by ``y_true`` itself. Lift by decile: the
    decile's mean outcome over the overall mean (decile 1 = highest score).
    """
    y, checked = _checked(y_true, scores, binary=False)
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    ax_gain, ax_lift = fig.subplots(1, 2)
    overall = float(y.mean())
    width = 0.8 / len(checked)
    deciles = np.arange(1, 11)
    for k, (label, s) in enumerate(checked.items()):
        gains = gain_table(y, s)
        (line,) = ax_gain.plot(np.r_[0.0, gains["share_targeted"]], np.r_[0.0, gains["share_captured"]], label=label)
        table = decile_table(y, s)
        lift = table["mean_actual"] / overall if overall > 0 else np.full(10, np.nan)
        offset = (k - (len(checked) - 1) / 2) * width
        ax_lift.bar(deciles + offset, lift, width=width, color=line.get_color(), label=label)
    ideal = gain_table(y, y)
    ax_gain.plot(
        np.r_[0.0, ideal["share_targeted"]],
        np.r_[0.0, ideal["share_captured"]],
        label="ideal",
        color="0.3",
        linestyle="--",
        linewidth=1.0,
    )
    ax_gain.plot([0, 1], [0, 1], label="random", **REFERENCE_STYLE)
    ax_lift.axhline(1.0, label="random", **REFERENCE_STYLE)
    ax_gain.set(
        xlabel="share targeted (by descending score)",
        ylabel="share of outcome captured",
        title="cumulative gains",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax_lift.set(
        xlabel="decile (1 = highest score)",
        ylabel="lift (decile mean / overall mean)",
        title="lift by decile",
        xticks=deciles,
    )
    ax_gain.legend(loc="lower right", fontsize="small")
    ax_lift.legend(loc="upper right", fontsize="small")
    fig.suptitle(title)
    return fig


def decile_figure(y_true: Any, scores: Mapping[str, Any], title: str) -> Figure:
    """CLV decile chart: per decile of each score, mean actual value (solid) and mean prediction (dashed).

    A well-ranked, well-scaled model has a steeply falling solid line with the dashed line on top of
    it. Deciles a score leaves empty (ties, see ``decile_table``) are gaps in its lines.
    """
    y, checked = _checked(y_true, scores, binary=False)
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    for label, s in checked.items():
        table = decile_table(y, s)
        (line,) = ax.plot(table["decile"], table["mean_actual"], marker="o", label=f"{label}: actual")
        ax.plot(
            table["decile"],
            table["mean_predicted"],
            marker="x",
            linestyle="--",
            color=line.get_color(),
            label=f"{label}: predicted",
        )
    ax.axhline(float(y.mean()), label="overall mean actual", **REFERENCE_STYLE)
    ax.set(xlabel="decile of score (1 = highest)", ylabel="mean value per customer", xticks=np.arange(1, 11))
    ax.legend(loc="upper right", fontsize="small")
    fig.suptitle(title)
    return fig
