"""Task metrics and plots: hand-computed cases, scikit-learn as reference, brute-force Harrell's C."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from omnicrm.errors import InputError
from omnicrm.tasks.metrics import (
    binary_metrics,
    calibration_table,
    clv_metrics,
    concordance_index,
    decile_table,
    gain_table,
    timing_metrics,
)
from omnicrm.tasks.plots import calibration_figure, decile_figure, lift_gain_figure, roc_pr_figure

CLV_Y = np.array([0, 0, 0, 0, 0, 0, 10, 20, 30, 40], dtype=float)


@pytest.fixture
def binary_case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    y = (rng.random(400) < 0.25).astype(int)
    p = np.clip(0.15 + 0.4 * y + rng.normal(0, 0.2, 400), 0.0, 1.0)
    p[:5] = [0.0, 1.0, 0.0, 1.0, 0.5]  # exercise the clipping in the log loss
    return y, p


# --- binary ----------------------------------------------------------------------------------------


def test_binary_metrics_match_scikit_learn(binary_case):
    y, p = binary_case
    m = binary_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p), rel=1e-12)
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p), rel=1e-12)
    assert m["log_loss"] == pytest.approx(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)), rel=1e-12)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    assert (m["n"], m["positives"], m["base_rate"]) == (400.0, float(y.sum()), pytest.approx(y.mean()))


def test_lift_is_precision_in_top_share_over_base_rate():
    # 20 rows, 4 positives (base rate 0.2); the top 10 % (2 rows) hold one positive: precision 0.5, lift 2.5
    y = np.array([1, 0] + [1, 1, 1] + [0] * 15)
    p = np.linspace(0.99, 0.01, 20)
    assert binary_metrics(y, p)["lift_at_10"] == pytest.approx(2.5)
    # top 25 % = 5 rows hold all 4 positives: precision 0.8, lift 4; the key is named after the share
    assert binary_metrics(y, p, top_share=0.25)["lift_at_25"] == pytest.approx(4.0)


def test_lift_counts_ties_at_the_boundary_by_expectation_not_row_order():
    # top 10 % = 1 row, but the top score is shared by a positive and a negative: expected precision 0.5
    y = np.array([1, 0] + [0] * 8)
    p = np.array([0.9, 0.9] + [0.1] * 8)
    assert binary_metrics(y, p)["lift_at_10"] == pytest.approx(0.5 / 0.1)
    assert binary_metrics(y[::-1], p[::-1])["lift_at_10"] == pytest.approx(5.0)
    # a constant score ranks nothing: lift 1 whatever the order
    assert binary_metrics(y, np.full(10, 0.3))["lift_at_10"] == pytest.approx(1.0)


def test_one_class_gives_nan_aucs_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for y in (np.zeros(6), np.ones(6)):
            m = binary_metrics(y, np.linspace(0.1, 0.6, 6))
            assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"])
            assert math.isfinite(m["log_loss"]) and math.isfinite(m["brier"])
        assert math.isnan(binary_metrics(np.zeros(6), np.full(6, 0.2))["lift_at_10"])


@pytest.mark.parametrize(
    "call",
    [
        lambda p: binary_metrics([0, 1, 1], p),
        lambda p: calibration_table([0, 1, 1], p),
        lambda p: gain_table([0, 1, 1], p),
        lambda p: clv_metrics([0, 1, 1], p),
        lambda p: decile_table([0, 1, 1], p),
        lambda p: concordance_index([1, 2, 3], [1, 1, 0], p),
    ],
)
def test_nan_prediction_is_an_input_error(call):
    with pytest.raises(InputError, match="1 NaN"):
        call(np.array([0.2, np.nan, 0.4]))
    with pytest.raises(InputError, match="1 NaN"):  # pandas nullable NA too
        call(pd.Series([0.2, pd.NA, 0.4], dtype="Float64"))


def test_bad_inputs_are_named():
    with pytest.raises(InputError, match="p: expected probabilities"):
        binary_metrics([0, 1], [0.2, 1.5])
    with pytest.raises(InputError, match="y_true: expected only 0/1"):
        binary_metrics([0, 2], [0.2, 0.5])
    with pytest.raises(InputError, match="same length"):
        clv_metrics([1, 2, 3], [1, 2])
    with pytest.raises(InputError, match="non-negative"):
        gain_table([-1, 2], [1, 2])


def test_calibration_table_bins_by_quantile_and_keeps_ties_together():
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    y = np.array([0, 0, 1, 0, 1, 1, 1, 1])
    table = calibration_table(y, p, bins=4)
    assert table["bin"].tolist() == [1, 2, 3, 4]
    assert table["count"].tolist() == [2, 2, 2, 2]
    assert table["mean_predicted"].tolist() == pytest.approx([0.15, 0.35, 0.55, 0.75])
    assert table["observed_rate"].tolist() == pytest.approx([0.0, 0.5, 1.0, 1.0])
    tied = calibration_table(y, np.r_[[0.1] * 5, 0.6, 0.7, 0.8], bins=4)  # five tied rows share one bin
    assert tied["count"].sum() == 8 and 5 in tied["count"].tolist()


def test_gain_table_for_revenue():
    table = gain_table(CLV_Y, CLV_Y, points=10)
    assert table["share_captured"].tolist() == pytest.approx([0.4, 0.7, 0.9, 1.0, 1, 1, 1, 1, 1, 1])
    assert table["lift"].iloc[0] == pytest.approx(4.0)
    assert gain_table(CLV_Y, np.zeros(10), points=10)["share_captured"].tolist() == pytest.approx(np.arange(1, 11) / 10)


# --- clv -------------------------------------------------------------------------------------------


def test_clv_metrics_hand_computed():
    perfect = clv_metrics(CLV_Y, CLV_Y)
    assert perfect["normalised_gini"] == pytest.approx(1.0)
    assert (perfect["top10_capture"], perfect["top20_capture"]) == (pytest.approx(0.4), pytest.approx(0.7))
    assert perfect["zero_share"] == pytest.approx(0.6) and perfect["mean_actual"] == pytest.approx(10.0)
    reversed_ = clv_metrics(CLV_Y, -CLV_Y)
    assert reversed_["normalised_gini"] == pytest.approx(-1.0)
    assert reversed_["top10_capture"] == 0.0 and reversed_["spearman"] == pytest.approx(-1.0)

    pred = CLV_Y / 2 + 1  # perfect order, half scale: ranking metrics perfect, errors hand-computed
    m = clv_metrics(CLV_Y, pred)
    assert m["normalised_gini"] == pytest.approx(1.0) and m["spearman"] == pytest.approx(1.0)
    assert m["total_ratio"] == pytest.approx(60 / 100)
    assert m["mae"] == pytest.approx((6 * 1 + 4 + 9 + 14 + 19) / 10)
    assert m["rmse"] == pytest.approx(math.sqrt((6 * 1 + 16 + 81 + 196 + 361) / 10))
    assert m["mean_predicted"] == pytest.approx(6.0)

    flat = clv_metrics(CLV_Y, np.full(10, 5.0))  # a constant prediction ranks nothing
    assert flat["normalised_gini"] == pytest.approx(0.0) and flat["top10_capture"] == pytest.approx(0.1)
    assert math.isnan(flat["spearman"])


def test_gini_of_a_swap_is_hand_computed():
    # Order by pred: 40, 30, 10, 20, then zeros. Cumulative shares 0.4, 0.7, 0.8, 1.0, 1 x6 sum to 8.9;
    # perfect order gives 0.4, 0.7, 0.9, 1.0, 1 x6 = 9.0; Gini = (sum - 5.5) / 10, so (3.4/10) / (3.5/10).
    pred = np.array([0, 0, 0, 0, 0, 0, 2, 1, 3, 4], dtype=float) - 1
    assert clv_metrics(CLV_Y, pred)["normalised_gini"] == pytest.approx(3.4 / 3.5)


def test_decile_table_hand_computed():
    table = decile_table(CLV_Y, CLV_Y)
    assert table["decile"].tolist() == list(range(1, 11))
    assert table["mean_actual"].iloc[:4].tolist() == [40, 30, 20, 10]
    assert table["share_of_actual"].iloc[:4].tolist() == pytest.approx([0.4, 0.3, 0.2, 0.1])
    # the six tied zeros stay together, in the decile of their average rank (7.5 of 10 -> decile 8)
    assert table["n"].tolist() == [1, 1, 1, 1, 0, 0, 0, 6, 0, 0]
    assert table["mean_actual"].isna().sum() == 5
    rows = np.arange(100.0)
    even = decile_table(rows, rows)
    assert even["n"].tolist() == [10] * 10 and even["mean_actual"].iloc[0] == pytest.approx(94.5)


# --- concordance -----------------------------------------------------------------------------------


def brute_force_c(time, event, pred) -> float:
    """Harrell's C by definition, O(n^2): the independent reference."""
    t, e, p = (np.asarray(a, dtype=float) for a in (time, event, pred))
    comparable = (t[:, None] < t[None, :]) & (e[:, None] == 1)
    score = np.where(p[:, None] < p[None, :], 1.0, np.where(p[:, None] == p[None, :], 0.5, 0.0))
    return float((score * comparable).sum() / comparable.sum())


def test_concordance_hand_example():
    time = [1, 2, 3, 4]
    event = [1, 0, 1, 1]
    # comparable pairs: (0,1), (0,2), (0,3), (2,3) -- row 1 is censored, (1,x) never counts
    pred = [1, 5, 2, 2]  # (0,1) c, (0,2) c, (0,3) c, (2,3) tie -> 3.5 / 4
    assert concordance_index(time, event, pred) == pytest.approx(3.5 / 4)
    assert concordance_index(time, event, time) == 1.0
    assert concordance_index(time, event, [-t for t in time]) == 0.0
    assert math.isnan(concordance_index([1, 2], [0, 0], [1, 2]))


@pytest.mark.parametrize("seed", range(8))
def test_concordance_matches_brute_force_with_ties_and_censoring(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    time = rng.integers(0, int(rng.integers(1, 60)), n).astype(float)  # many tied times
    event = rng.random(n) < rng.uniform(0.1, 0.9)
    pred = np.round(time + rng.normal(0, 10, n), int(rng.integers(-1, 2)))  # many tied predictions
    if not ((time[:, None] < time[None, :]) & event[:, None]).any():
        pytest.skip("no comparable pair drawn")
    assert concordance_index(time, event, pred) == pytest.approx(brute_force_c(time, event, pred), abs=1e-12)


def test_timing_metrics():
    m = timing_metrics([1, 2, 3, 4], [1, 0, 1, 1], [2, 9, 3, 1])
    assert m["mae_observed"] == pytest.approx((1 + 0 + 3) / 3)
    assert (m["n_observed"], m["n_censored"]) == (3.0, 1.0)
    assert m["concordance"] == pytest.approx(concordance_index([1, 2, 3, 4], [1, 0, 1, 1], [2, 9, 3, 1]))


# --- plots -----------------------------------------------------------------------------------------


def _legend_sizes(fig: Figure) -> list[int]:
    return [len(ax.get_legend().get_texts()) if ax.get_legend() else 0 for ax in fig.axes]


@pytest.mark.parametrize(
    ("draw", "binary", "axes", "legend_sizes"),
    [
        (roc_pr_figure, True, 2, [3, 3]),  # 2 scores + chance / base rate
        (calibration_figure, True, 2, [3, 0]),  # 2 scores + diagonal; histogram has no legend
        (lift_gain_figure, False, 2, [4, 3]),  # 2 scores + ideal + random; 2 scores + random
        (decile_figure, False, 1, [5]),  # actual and predicted per score + overall mean
    ],
)
def test_plots_draw_every_score_on_shared_axes(binary_case, draw, binary, axes, legend_sizes):
    y, p = binary_case
    if not binary:
        y = y * np.random.default_rng(1).gamma(2.0, 50.0, len(y))  # revenue-like: mostly zeros
    scores = {"model": p, "baseline": np.round(p, 1)}  # the rounded baseline has heavy ties
    fig = draw(y, scores, title="test")
    try:
        assert isinstance(fig, Figure)
        assert len(fig.axes) == axes
        assert _legend_sizes(fig) == legend_sizes
        assert fig.get_suptitle() == "test"
        fig.canvas.draw()  # renders headless without a warning
    finally:
        fig.clf()


def test_plots_refuse_nan_scores_naming_them(binary_case):
    y, p = binary_case
    with pytest.raises(InputError, match="score 'baseline'"):
        roc_pr_figure(y, {"model": p, "baseline": np.r_[np.nan, p[1:]]}, title="t")


def test_roc_pr_figure_with_one_class_draws_no_curve():
    fig = roc_pr_figure(np.zeros(5), {"model": np.linspace(0, 1, 5)}, title="t")
    assert all(ax.get_legend() is None and not ax.lines for ax in fig.axes)
    fig.clf()


def test_churn_pr_auc_is_the_churn_class_even_when_churners_are_the_majority() -> None:
    """Issue 11: PR-AUC must be the churners' (label 1), not the other class's, whatever their share."""
    from omnicrm.tasks.churn import Churn

    task = Churn(kind="churn", horizon_days=90)
    (target,) = task.declared_targets()
    y = np.array([1, 1, 1, 0, 1, 0, 1, 1])  # churners are the majority
    p = np.array([0.9, 0.8, 0.3, 0.4, 0.7, 0.2, 0.6, 0.1])
    got = task.metrics(target, y, p)
    assert target.label == "y_churn" and target.score_column == "p_churn"
    assert got["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert got["pr_auc"] != pytest.approx(average_precision_score(1 - y, 1 - p)), "not the stayers' PR-AUC"
    assert got["base_rate"] == pytest.approx(0.75)
