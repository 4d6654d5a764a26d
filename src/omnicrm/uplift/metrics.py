"""Uplift evaluation on held-out randomised data: Qini and uplift curves, their coefficients, uplift at k.

Definitions follow Radcliffe (2007), "Using control groups to target on predicted lift", and the
conventions of scikit-uplift 0.5.1 (``sklift.metrics``), so binary-outcome figures can be checked
against it; unlike scikit-uplift these work for continuous outcomes (spend, margin) too.

Rows are sorted by predicted effect (descending, ties kept together). At each distinct score, with
``n_t, n_c`` treated / control rows so far and ``Y_t, Y_c`` their summed outcomes:

* Qini curve: ``Q = Y_t - Y_c * n_t / n_c`` (incremental outcomes among the treated targeted so far);
* uplift curve: ``U = (Y_t / n_t - Y_c / n_c) * (n_t + n_c)``.

Coefficients are the area between a curve and the random-targeting line (the straight line to the
curve's end point), divided by the same area of the perfect ranking (treated responders first,
control responders last): 0 is random targeting, 1 is perfect.
"""

from __future__ import annotations

import numpy as np


def _check(y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, score, treated = np.asarray(y, float), np.asarray(score, float), np.asarray(treated)
    if not (y.size == score.size == treated.size):
        raise ValueError(f"y, score and treated differ in length: {y.size}, {score.size}, {treated.size}")
    if not np.isin(treated, (0, 1, True, False)).all():
        raise ValueError("treated must be 0/1 (1 = the action, 0 = control)")
    treated = treated.astype(bool)
    if treated.all() or not treated.any():
        raise ValueError("need both treated and control rows")
    return y, score, treated


def _cumulative(y: np.ndarray, score: np.ndarray, treated: np.ndarray):  # noqa: ANN202
    order = np.argsort(score, kind="mergesort")[::-1]
    y, score, treated = y[order], score[order], treated[order]
    # one point per distinct score: tied rows cannot be told apart, so they enter together
    cut = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]
    n_t = np.cumsum(treated)[cut].astype(float)
    y_t = np.cumsum(np.where(treated, y, 0.0))[cut]
    y_c = np.cumsum(np.where(treated, 0.0, y))[cut]
    n = (cut + 1).astype(float)
    return n, n_t, n - n_t, y_t, y_c


def _from_origin(n: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if n.size == 0 or n[0] != 0 or values[0] != 0:
        return np.r_[0.0, n], np.r_[0.0, values]
    return n, values


def qini_curve(y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number targeted and incremental outcome (Qini), one point per distinct score, from (0, 0)."""
    n, n_t, n_c, y_t, y_c = _cumulative(*_check(y, score, treated))
    q = y_t - y_c * np.divide(n_t, n_c, out=np.zeros_like(n_t), where=n_c > 0)
    return _from_origin(n, q)


def uplift_curve(y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number targeted and ``(mean_t - mean_c) * n`` among them, from (0, 0)."""
    n, n_t, n_c, y_t, y_c = _cumulative(*_check(y, score, treated))
    rate_t = np.divide(y_t, n_t, out=np.zeros_like(y_t), where=n_t > 0)
    rate_c = np.divide(y_c, n_c, out=np.zeros_like(y_c), where=n_c > 0)
    return _from_origin(n, (rate_t - rate_c) * n)


def _perfect_score(y: np.ndarray, treated: np.ndarray) -> np.ndarray:
    # treated rows with large outcomes first, control rows with large outcomes last
    return np.where(treated, y, -y)


def _perfect_uplift_score(y: np.ndarray, treated: np.ndarray) -> np.ndarray:
    # scikit-uplift's perfect uplift ranking for binary outcomes (treated responders and control
    # non-responders first); for continuous outcomes the Qini ordering is used
    if np.isin(y, (0.0, 1.0)).all():
        t = treated.astype(float)
        cr = np.sum((y == 1) & ~treated)
        tn = np.sum((y == 0) & treated)
        return 2 * (y == t) + (y if cr > tn else t)
    return _perfect_score(y, treated)


def _area_above_random(x: np.ndarray, v: np.ndarray) -> float:
    return float(np.trapezoid(v, x) - 0.5 * x[-1] * v[-1])


def qini_coefficient(y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> float:
    """Normalised area between the Qini curve and random targeting (0 random, 1 perfect).

    Matches ``sklift.metrics.qini_auc_score(..., negative_effect=True)`` on binary outcomes.
    """
    y, score, treated = _check(y, score, treated)
    actual = _area_above_random(*qini_curve(y, score, treated))
    perfect = _area_above_random(*qini_curve(y, _perfect_score(y, treated), treated))
    return actual / perfect if perfect != 0 else float("nan")


def qini_area(y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> float:
    """Unnormalised area between the Qini curve and random targeting, per row (outcome units)."""
    y, score, treated = _check(y, score, treated)
    x, v = qini_curve(y, score, treated)
    return _area_above_random(x, v) / (x[-1] ** 2)


def uplift_auc(y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> float:
    """Normalised area between the uplift curve and random targeting (``sklift.metrics.uplift_auc_score``)."""
    y, score, treated = _check(y, score, treated)
    actual = _area_above_random(*uplift_curve(y, score, treated))
    perfect = _area_above_random(*uplift_curve(y, _perfect_uplift_score(y, treated), treated))
    return actual / perfect if perfect != 0 else float("nan")


def uplift_at_k(y: np.ndarray, score: np.ndarray, treated: np.ndarray, k: float = 0.3) -> float:
    """Mean outcome of treated minus control among the top ``k`` share of rows by score.

    The ``overall`` strategy of ``sklift.metrics.uplift_at_k``: the top ``int(n * k)`` rows of both
    groups together. Compare with the same difference over all rows (random targeting).
    """
    y, score, treated = _check(y, score, treated)
    if not 0 < k < 1:
        raise ValueError(f"k must be in (0, 1), got {k}")
    top = np.argsort(score, kind="mergesort")[::-1][: int(y.size * k)]
    t = treated[top]
    if t.all() or not t.any():
        return float("nan")
    return float(y[top][t].mean() - y[top][~t].mean())


def average_effect(y: np.ndarray, treated: np.ndarray) -> float:
    """Difference in means over all rows: what random targeting achieves per targeted row."""
    y, treated = np.asarray(y, float), np.asarray(treated).astype(bool)
    return float(y[treated].mean() - y[~treated].mean())
