"""Evaluation metrics for the prediction tasks (churn, next_purchase, clv, propensity).

Pure functions of array-likes: no paths, no tracking. Every input is checked before anything is
computed: a NaN or infinite prediction is an :class:`~omnicrm.errors.InputError` naming the argument,
never a silently dropped row (a model that fails on 5 % of customers must not look better for it).

Ties in a score are handled the same way everywhere: tied rows are never split by their row order.
Ranking metrics (gains, captures, lift, normalised Gini) use the *expected* value under a random order
within each tie group, which is linear interpolation of the cumulative-gains curve across the group;
bin tables (calibration, deciles) keep a tie group in one bin, placed by its average rank. So a
constant score always gets lift 1 and Gini 0, whatever the row order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score

from omnicrm.errors import InputError

LOG_LOSS_EPS = 1e-15
"""Probabilities are clipped to [eps, 1 - eps] for the log loss, as scikit-learn did before 1.5."""


# --- input checks -------------------------------------------------------------------------------


def as_vector(values: Any, name: str) -> np.ndarray:
    """A 1-d float array of finite values, or an InputError naming ``name``.

    pandas nullable arrays (``Float64`` with ``pd.NA``) are converted with NA -> NaN first, so a
    missing value is reported rather than raising an obscure conversion error.
    """
    try:
        if hasattr(values, "to_numpy"):
            arr = values.to_numpy(dtype="float64", na_value=np.nan)
        else:
            arr = np.asarray(values, dtype="float64")
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected numbers, could not convert ({exc})") from exc
    arr = np.atleast_1d(np.squeeze(arr)) if arr.ndim > 1 and max(arr.shape) == arr.size else arr
    if arr.ndim != 1:
        raise InputError(f"{name}: expected a 1-d array, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name}: expected at least one value, got an empty array")
    bad = ~np.isfinite(arr)
    if bad.any():
        n_nan = int(np.isnan(arr).sum())
        raise InputError(
            f"{name}: {n_nan} NaN and {int(bad.sum()) - n_nan} infinite values in {arr.size} rows; "
            "every row needs a finite value (rows are never dropped silently)"
        )
    return arr


def as_binary(values: Any, name: str) -> np.ndarray:
    """A 1-d float array of 0/1 values (bool accepted), or an InputError naming ``name``."""
    arr = as_vector(values, name)
    if not np.isin(arr, (0.0, 1.0)).all():
        found = np.unique(arr[~np.isin(arr, (0.0, 1.0))])[:5].tolist()
        raise InputError(f"{name}: expected only 0/1 values, found {found}")
    return arr


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise InputError(f"arrays must have the same length, got {lengths}")
    return next(iter(lengths.values()))


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den != 0 else math.nan


# --- ranking curves shared by lift, gains, captures and Gini -------------------------------------


def _gain_knots(value: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots of the expected cumulative-gains curve when rows are taken by descending ``score``.

    Returns (rows taken, cumulative value) at the end of each tie group, starting at (0, 0). Between
    knots the curve is linear, which is exactly the expectation over random orders inside a tie group
    (each tied row is equally likely to be in any position of the group).
    """
    order = np.argsort(-score, kind="stable")
    s = score[order]
    cum = np.cumsum(value[order])
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    return np.r_[0.0, ends + 1.0], np.r_[0.0, cum[ends]]


def _captured(value: np.ndarray, score: np.ndarray, rows: np.ndarray | float) -> np.ndarray | float:
    """Expected sum of ``value`` in the top ``rows`` rows by score (``rows`` may be fractional)."""
    knots_x, knots_y = _gain_knots(value, score)
    return np.interp(rows, knots_x, knots_y)


def _share_key(prefix: str, share: float) -> str:
    """``lift_at_10`` for 0.10; ``lift_at_2_5`` for 0.025 (no dots in metric names)."""
    pct = round(share * 100, 6)
    text = str(int(pct)) if float(pct).is_integer() else f"{pct:g}".replace(".", "_")
    return f"{prefix}_{text}"


# --- binary outcomes: churn, propensity ----------------------------------------------------------


def binary_metrics(y_true: Any, p: Any, *, top_share: float = 0.10) -> dict[str, float]:
    """Discrimination, calibration and targeting metrics of probabilities ``p`` for 0/1 outcomes.

    Keys: ``roc_auc``, ``pr_auc`` (average precision of the positive class, label 1: for churn the
    churners, whichever class is the larger; its chance level is ``base_rate``), ``log_loss`` (p
    clipped to [1e-15, 1-1e-15]),
    ``brier``, ``lift_at_<pct>`` (precision in the top ``top_share`` of rows by p over the base rate;
    ties at the boundary count by expectation, and a fractional row count is interpolated, so this
    equals ``gain_table``'s lift at the same share), ``base_rate``, ``n``, ``positives``.

    With only one class in ``y_true``, ``roc_auc`` and ``pr_auc`` are NaN (undefined), without a
    warning; with no positives the lift is NaN too.
    """
    if not 0.0 < top_share <= 1.0:
        raise InputError(f"top_share: expected a share in (0, 1], got {top_share!r}")
    y = as_binary(y_true, "y_true")
    prob = as_vector(p, "p")
    n = _same_length(y_true=y, p=prob)
    if ((prob < 0.0) | (prob > 1.0)).any():
        raise InputError(
            f"p: expected probabilities in [0, 1], got min {prob.min():.4g}, max {prob.max():.4g}; "
            "rank-only scores belong in gain_table, not in log loss or Brier score"
        )
    positives = float(y.sum())
    two_classes = 0.0 < positives < n
    clipped = np.clip(prob, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    log_loss = -float(np.mean(y * np.log(clipped) + (1.0 - y) * np.log1p(-clipped)))
    captured = float(_captured(y, prob, top_share * n))
    return {
        "roc_auc": float(roc_auc_score(y, prob)) if two_classes else math.nan,
        "pr_auc": float(average_precision_score(y, prob)) if two_classes else math.nan,
        "log_loss": log_loss,
        "brier": float(np.mean((prob - y) ** 2)),
        _share_key("lift_at", top_share): _ratio(_ratio(captured, positives), top_share),
        "base_rate": positives / n,
        "n": float(n),
        "positives": positives,
    }


def calibration_table(y_true: Any, p: Any, bins: int = 10) -> pd.DataFrame:
    """Reliability table over quantile bins of ``p``: bin (1 = lowest p), mean_predicted, observed_rate, count.

    Bins hold about n / bins rows each, assigned by average rank so tied probabilities share a bin;
    a bin that receives no rows (heavy ties) is left out.
    """
    if bins < 1:
        raise InputError(f"bins: expected a positive number of bins, got {bins!r}")
    y = as_vector(y_true, "y_true")
    prob = as_vector(p, "p")
    n = _same_length(y_true=y, p=prob)
    bin_index = _rank_bins(rankdata(prob), n, bins)
    count = np.bincount(bin_index, minlength=bins)
    sum_p = np.bincount(bin_index, weights=prob, minlength=bins)
    sum_y = np.bincount(bin_index, weights=y, minlength=bins)
    keep = count > 0
    return pd.DataFrame(
        {
            "bin": np.arange(1, bins + 1)[keep],
            "mean_predicted": sum_p[keep] / count[keep],
            "observed_rate": sum_y[keep] / count[keep],
            "count": count[keep],
        }
    )


def _rank_bins(ranks: np.ndarray, n: int, bins: int) -> np.ndarray:
    """0-based equal-frequency bin of each row from its (average, 1-based) rank."""
    return np.minimum(np.floor((ranks - 0.5) * bins / n).astype(np.int64), bins - 1)


def gain_table(y_true: Any, score: Any, points: int = 100) -> pd.DataFrame:
    """Cumulative gains: share_targeted (k / points, k = 1..points), share_captured, lift.

    ``y_true`` is a 0/1 outcome or a non-negative value such as revenue; ``share_captured`` is the
    share of its total held by the top ``share_targeted`` rows by descending ``score`` (expected value
    over random orders inside tie groups) and ``lift`` is share_captured / share_targeted. The origin
    (0, 0) is not a row; add it when drawing. With a zero total, share_captured and lift are NaN.
    """
    if points < 1:
        raise InputError(f"points: expected a positive number of points, got {points!r}")
    y = as_vector(y_true, "y_true")
    s = as_vector(score, "score")
    n = _same_length(y_true=y, score=s)
    if (y < 0).any():
        raise InputError(f"y_true: cumulative gains need non-negative values, found minimum {y.min():.4g}")
    share_targeted = np.arange(1, points + 1) / points
    total = float(y.sum())
    share_captured = _captured(y, s, share_targeted * n) / total if total > 0 else np.full(points, np.nan)
    return pd.DataFrame(
        {"share_targeted": share_targeted, "share_captured": share_captured, "lift": share_captured / share_targeted}
    )


# --- continuous value: clv -------------------------------------------------------------------------


def _gini(value: np.ndarray, score: np.ndarray) -> float:
    """Gini of ``value`` ordered by descending ``score`` (the Kaggle / Allstate definition).

    sum_k cumsum_k / total - (n + 1) / 2, divided by n, with the tie-group expectation for cumsum_k.
    """
    n = len(value)
    total = float(value.sum())
    if total == 0:
        return math.nan
    cum = _captured(value, score, np.arange(1.0, n + 1.0))
    return (float(np.sum(cum)) / total - (n + 1) / 2) / n


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho (Pearson on average ranks); NaN for a constant input, without scipy's warning."""
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float(np.dot(ra, ra)) * float(np.dot(rb, rb)))
    return float(np.dot(ra, rb)) / den if den > 0 else math.nan


def clv_metrics(y_true: Any, pred: Any) -> dict[str, float]:
    """Ranking and accuracy metrics of predicted customer value ``pred`` against realised value.

    Keys: ``normalised_gini`` (Gini of y ordered by pred / Gini of y ordered by y: 1 for a perfect
    ranking, 0 for a constant or random one, -1 for the reversed one; tied predictions count by
    expectation over random orders), ``top10_capture`` / ``top20_capture`` (share of total actual
    value in the top 10 % / 20 % of rows by pred), ``spearman``, ``total_ratio`` (sum pred / sum
    actual), ``mae``, ``rmse``, ``n``, ``zero_share`` (share of y == 0), ``mean_actual``,
    ``mean_predicted``. Ratios with a zero denominator are NaN.
    """
    y = as_vector(y_true, "y_true")
    yhat = as_vector(pred, "pred")
    n = _same_length(y_true=y, pred=yhat)
    total = float(y.sum())
    err = yhat - y
    return {
        "normalised_gini": _ratio(_gini(y, yhat), _gini(y, y)),
        "top10_capture": _ratio(float(_captured(y, yhat, 0.10 * n)), total),
        "top20_capture": _ratio(float(_captured(y, yhat, 0.20 * n)), total),
        "spearman": _spearman(y, yhat),
        "total_ratio": _ratio(float(yhat.sum()), total),
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "n": float(n),
        "zero_share": float(np.mean(y == 0)),
        "mean_actual": float(y.mean()),
        "mean_predicted": float(yhat.mean()),
    }


def decile_table(y_true: Any, pred: Any) -> pd.DataFrame:
    """Deciles of ``pred``: decile (1 = highest pred .. 10), n, mean_predicted, mean_actual, share_of_actual.

    Always ten rows. Rows go to deciles by average rank, so tied predictions (e.g. many zeros from a
    "last period's spend" baseline) stay in one decile and the deciles they skip have n = 0 and NaN
    means; share_of_actual is the decile's share of total actual value (NaN if the total is 0).
    """
    y = as_vector(y_true, "y_true")
    yhat = as_vector(pred, "pred")
    n = _same_length(y_true=y, pred=yhat)
    decile = _rank_bins(rankdata(-yhat), n, 10)
    count = np.bincount(decile, minlength=10)
    sum_pred = np.bincount(decile, weights=yhat, minlength=10)
    sum_y = np.bincount(decile, weights=y, minlength=10)
    safe = np.where(count > 0, count, 1)
    total = float(y.sum())
    return pd.DataFrame(
        {
            "decile": np.arange(1, 11),
            "n": count,
            "mean_predicted": np.where(count > 0, sum_pred / safe, np.nan),
            "mean_actual": np.where(count > 0, sum_y / safe, np.nan),
            "share_of_actual": sum_y / total if total != 0 else np.full(10, np.nan),
        }
    )


# --- time to event: next_purchase ----------------------------------------------------------------


def concordance_index(time: Any, event: Any, predicted_time: Any) -> float:
    """Harrell's C for right-censored times (Harrell et al. 1982; Harrell, Lee & Mark 1996).

    A pair (i, j) is comparable when time_i < time_j and event_i = 1 (i's event was seen before j
    left observation); it is concordant when predicted_time_i < predicted_time_j, and a tie in
    prediction counts 0.5. Pairs tied in time are not comparable. Pass a *time* (larger = later);
    negate a risk score first. NaN when no pair is comparable.

    O(n log^2 n) and vectorised: divide and conquer over the bits of the dense time rank. At level l,
    rows whose rank agrees above bit l form a block; every pair with rank_i < rank_j is counted
    exactly once, at the highest bit where the ranks differ (i has 0 there, j has 1), by binary
    search of i's prediction rank among the sorted (block, prediction rank) keys of the j side.
    """
    t = as_vector(time, "time")
    e = as_binary(event, "event").astype(bool)
    p = as_vector(predicted_time, "predicted_time")
    _same_length(time=t, event=e, predicted_time=p)
    t_rank = np.unique(t, return_inverse=True)[1].astype(np.int64)
    p_rank = np.unique(p, return_inverse=True)[1].astype(np.int64)
    width = int(p_rank.max()) + 1  # keys block * width + p_rank never collide across blocks
    comparable = concordant = tied = 0
    for level in range(int(t_rank.max()).bit_length()):
        upper = ((t_rank >> level) & 1).astype(bool)  # the later-time side of each block
        lower_events = ~upper & e
        if not lower_events.any() or not upper.any():
            continue
        block = t_rank >> (level + 1)
        keys = np.sort(block[upper] * width + p_rank[upper])
        start = block[lower_events] * width
        query = start + p_rank[lower_events]
        block_end = np.searchsorted(keys, start + width, side="left")
        above = np.searchsorted(keys, query, side="right")
        equal = np.searchsorted(keys, query, side="left")
        comparable += int((block_end - np.searchsorted(keys, start, side="left")).sum())
        concordant += int((block_end - above).sum())
        tied += int((above - equal).sum())
    return (concordant + 0.5 * tied) / comparable if comparable else math.nan


def timing_metrics(time: Any, event: Any, predicted_time: Any) -> dict[str, float]:
    """Concordance (Harrell's C), MAE on rows whose event was observed, and the observed / censored counts.

    ``mae_observed`` ignores censored rows because their true time is unknown (only a lower bound);
    it is NaN when no event was observed.
    """
    t = as_vector(time, "time")
    e = as_binary(event, "event").astype(bool)
    p = as_vector(predicted_time, "predicted_time")
    _same_length(time=t, event=e, predicted_time=p)
    n_observed = int(e.sum())
    return {
        "concordance": concordance_index(t, e, p),
        "mae_observed": float(np.mean(np.abs(p[e] - t[e]))) if n_observed else math.nan,
        "n_observed": float(n_observed),
        "n_censored": float(len(e) - n_observed),
    }
