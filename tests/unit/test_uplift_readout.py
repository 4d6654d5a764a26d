"""Campaign readout and policy values: interval coverage, Welch's test, MDE, IPW against hand values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from omnicrm.uplift.policy import evaluate_policies, ipw_value, verdict
from omnicrm.uplift.readout import readout, welch_ate


def test_welch_interval_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    yt, yc = rng.normal(1.3, 2.0, 80), rng.normal(1.0, 1.0, 120)
    r = welch_ate(yt, yc)
    ref = stats.ttest_ind(yt, yc, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert r["ate"] == pytest.approx(yt.mean() - yc.mean())
    assert r["ci_low"] == pytest.approx(ci.low) and r["ci_high"] == pytest.approx(ci.high)
    assert r["p_value"] == pytest.approx(ref.pvalue)
    # MDE at 80% power, two-sided 5%: (1.96 + 0.8416) * SE
    assert r["mde"] == pytest.approx((1.959964 + 0.841621) * r["se"], rel=1e-5)


def test_95_percent_interval_covers_the_true_effect_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(42)
    reps, true_ate = 2000, 0.04
    yt = (rng.random((reps, 400)) < 0.10 + true_ate).astype(float)
    yc = (rng.random((reps, 300)) < 0.10).astype(float)
    covered = 0
    for i in range(reps):
        r = welch_ate(yt[i], yc[i])
        covered += r["ci_low"] <= true_ate <= r["ci_high"]
    # binomial tolerance: 3.5 standard errors of a 95% proportion over 2000 repetitions (~0.017)
    tol = 3.5 * np.sqrt(0.95 * 0.05 / reps)
    assert abs(covered / reps - 0.95) < tol


def test_mde_is_the_effect_detected_80_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    n = 2000
    base = welch_ate(rng.normal(0, 1, n), rng.normal(0, 1, n))
    mde = base["mde"]
    hits = sum(welch_ate(rng.normal(mde, 1, n), rng.normal(0, 1, n))["p_value"] < 0.05 for _ in range(600))
    assert abs(hits / 600 - 0.80) < 3.5 * np.sqrt(0.8 * 0.2 / 600)


def test_readout_per_group_and_action() -> None:
    frame = pd.DataFrame(
        {
            "campaign": ["c1"] * 6 + ["c2"] * 4,
            "arm": ["ctl", "ctl", "ctl", "a", "a", "b", "ctl", "ctl", "a", "a"],
            "y": [0, 1, 0, 1, 1, 0, 2, 4, 5, 7],
        }
    )
    out = readout(frame, "arm", "ctl", ["y"], ["campaign"])
    assert list(zip(out["campaign"], out["action"], strict=True)) == [("c1", "a"), ("c1", "b"), ("c2", "a")]
    c1a = out.iloc[0]
    assert (c1a["n_t"], c1a["n_c"]) == (2, 3)
    assert c1a["ate"] == pytest.approx(1 - 1 / 3)
    assert np.isnan(out.iloc[1]["ate"])  # one treated row: no variance, no interval
    assert out.iloc[2]["ate"] == pytest.approx(6 - 3)


def test_ipw_policy_value_by_hand() -> None:
    y = np.array([1.0, 0.0, 1.0, 1.0])
    t = np.array(["c", "c", "a", "a"], dtype=object)
    prop = {"c": 0.5, "a": 0.5}
    v, _ = ipw_value(y, t, np.array(["a"] * 4, dtype=object), prop)
    assert v == pytest.approx(1.0)  # treated rows' mean
    v, _ = ipw_value(y, t, np.array(["c"] * 4, dtype=object), prop)
    assert v == pytest.approx(0.5)
    # policy: a for rows 0 and 2, control for 1 and 3 -> agrees with rows 1 (y=0) and 2 (y=1)
    v, _ = ipw_value(y, t, np.array(["a", "c", "a", "c"], dtype=object), prop)
    assert v == pytest.approx(0.5)


def test_personalisation_that_does_not_help_is_called_out() -> None:
    rng = np.random.default_rng(3)
    n = 4000
    t = rng.choice(np.array(["c", "a", "b"], dtype=object), n)
    y = rng.random(n) < 0.2 + 0.05 * (t == "a")  # a helps everyone equally: no one to personalise for
    effect = rng.normal(size=(n, 2))  # an uninformative model
    values, comp = evaluate_policies(y.astype(float), t, effect, ["a", "b"], "c", {"c": 1 / 3, "a": 1 / 3, "b": 1 / 3})
    assert comp["best_constant"] == "all: a"
    text = verdict(comp["gain"], comp["gain_se"], comp["best_constant"])
    assert "does NOT beat" in text
    assert {v.policy for v in values} >= {"no action", "all: a", "all: b", "best action (effect > 0)"}


def test_personalisation_that_helps_is_recognised() -> None:
    rng = np.random.default_rng(4)
    n = 20000
    x = rng.random(n) < 0.5
    t = rng.choice(np.array(["c", "a", "b"], dtype=object), n)
    # a helps group x, b helps the others: the right action per customer beats either for all
    p = 0.2 + 0.15 * ((t == "a") & x) + 0.15 * ((t == "b") & ~x)
    y = (rng.random(n) < p).astype(float)
    effect = np.column_stack([np.where(x, 0.15, 0.0), np.where(x, 0.0, 0.15)])
    _, comp = evaluate_policies(y, t, effect, ["a", "b"], "c", {"c": 1 / 3, "a": 1 / 3, "b": 1 / 3})
    assert comp["gain"] == pytest.approx(0.075, abs=0.025)
    assert "beats the best constant" in verdict(comp["gain"], comp["gain_se"], comp["best_constant"])
