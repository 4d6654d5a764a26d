"""The cadence estimator recovers a known dose-response; consent and the hard maximum always hold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omnicrm.config import validate_config
from omnicrm.errors import ConfigError
from omnicrm.frequency.config import EstimatorSettings, FrequencyConfig, UnsubscribeCost
from omnicrm.frequency.data import nearest_arm
from omnicrm.frequency.estimate import arm_slope, arm_slope_interval, best_cadence, fit_cadence_model
from omnicrm.frequency.evaluate import class_shares, confusion, policies, true_best, true_values
from omnicrm.frequency.recommend import NO_CONSENT, contact_frequency, frequency_features

ARMS = [1, 2, 4, 8]


def _simulated(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Members with a visible trait ``x`` setting their tolerance; opens and unsubscribes follow a known dose curve.

    Tolerance ``T = 4 * exp(x)``; at cadence ``k`` a member opens ``k * 0.3 * exp(-k / T) * 5`` e-mails on
    average, unsubscribes with probability ``min(0.02 * exp(2 * (k / T - 1)), 0.9)``, and every open brings
    2.0 of margin (``noise`` an unrelated feature). Returns the rows and the true value of every arm per
    member with an unsubscribe cost of 30 (``share`` 0.1 of a CLV of 300).
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.7, n)
    tol = 4.0 * np.exp(x)
    arm = rng.choice(ARMS, n)
    k = arm.astype(float)

    def mean_opens(c: np.ndarray | float) -> np.ndarray:
        return c * 0.3 * np.exp(-c / tol) * 5

    def p_unsub(c: np.ndarray | float) -> np.ndarray:
        return np.minimum(0.02 * np.exp(2 * (c / tol - 1)), 0.9)

    opens = rng.poisson(mean_opens(k)).astype(float)
    unsub = (rng.random(n) < p_unsub(k)).astype(float)
    margin = 2.0 * opens + rng.normal(0.0, 3.0, n)
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(n)],
            "arm": arm,
            "opens": opens,
            "unsubscribed": unsub,
            "margin": margin,
            "orders": opens / 2,
            "x": x,
            "noise": rng.normal(size=n),
            "spend_365d": np.full(n, 1000.0),
        }
    )
    truth = np.column_stack([2.0 * mean_opens(a) - 30.0 * p_unsub(a) for a in ARMS])
    return frame, truth


@pytest.fixture(scope="module")
def simulated() -> tuple[pd.DataFrame, np.ndarray]:
    return _simulated(12000, 0)


def test_the_dose_model_recovers_a_known_dose_response(simulated: tuple[pd.DataFrame, np.ndarray]) -> None:
    frame, truth = simulated
    settings = EstimatorSettings(model={"n_estimators": 150, "min_child_samples": 100}, scale_column=None)
    cost = UnsubscribeCost(share=0.1)  # CLV = 0.3 * 1000 * 1 year = 300: an unsubscribe costs 30
    model = fit_cadence_model(frame, ["x", "noise"], [], ARMS, 4, 147, settings, cost)
    # every open brings 2.0 of margin: measured between the randomised arms
    assert model.beta == pytest.approx(2.0, abs=0.35)
    test, test_truth = _simulated(4000, 1)
    values, effects = model.values(test)
    true_rel = test_truth - test_truth[:, [2]]
    # the per-member curves track the true ones ...
    for j in (0, 1, 3):
        assert np.corrcoef(values[:, j], true_rel[:, j])[0, 1] > 0.8
    # ... the best cadence is the true best far more often than any single cadence is, and never more than
    # one arm away (the curves are flat near their top) ...
    best = best_cadence(values, ARMS, np.ones_like(values, dtype=bool))
    true_best = np.asarray(ARMS)[test_truth.argmax(axis=1)]
    assert float((best == true_best).mean()) > max(float((true_best == a).mean()) for a in ARMS) + 0.1
    assert float((np.abs(np.log2(best) - np.log2(true_best)) <= 1).mean()) > 0.95
    # ... and it earns most of what knowing the truth would add over the best single cadence
    rows = np.arange(len(best))
    learned = test_truth[rows, [ARMS.index(b) for b in best]].mean()
    best_static, oracle = test_truth.mean(axis=0).max(), test_truth.max(axis=1).mean()
    assert learned - best_static > 0.7 * (oracle - best_static)
    # opens never fall, unsubscribes never fall, with more e-mails (the monotone dose model)
    assert np.all(np.diff(effects["opens"], axis=1) >= -1e-9)
    assert np.all(np.diff(effects["unsubscribed"], axis=1) >= -1e-9)


def test_the_learned_policy_beats_every_static_cadence_on_the_simulated_truth(
    simulated: tuple[pd.DataFrame, np.ndarray],
) -> None:
    frame, _ = simulated
    settings = EstimatorSettings(model={"n_estimators": 150, "min_child_samples": 100}, scale_column=None)
    model = fit_cadence_model(frame, ["x", "noise"], [], ARMS, 4, 147, settings, UnsubscribeCost(share=0.1))
    test, truth = _simulated(4000, 2)
    values, _ = model.values(test)
    table = true_values(truth, ARMS, policies(values, ARMS, 4, 8)).set_index("policy")["true_value"]
    assert table["learned"] > max(table[f"static_{a}"] for a in ARMS)
    counts = confusion(truth, policies(values, ARMS, 4, 8)["learned"], ARMS, 4)
    assert int(counts.to_numpy().sum()) == len(test)
    assert np.trace(counts.to_numpy()) / len(test) > 0.5


def test_arm_slope_is_the_margin_per_open_between_arms() -> None:
    arm = np.repeat([1, 2, 4], 3)
    opens = np.repeat([1.0, 2.0, 4.0], 3)
    assert arm_slope(arm, opens, 3.0 * opens + 7.0) == pytest.approx(3.0)
    assert arm_slope(arm, opens, -opens) == 0.0  # noise that says opens cost margin is floored


def test_the_slope_interval_covers_the_slope_and_narrows_with_more_members() -> None:
    def interval(n: int, seed: int) -> tuple[float, float]:
        rng = np.random.default_rng(seed)
        arm = rng.choice(ARMS, n)
        opens = arm + rng.normal(0.0, 2.0, n)
        return arm_slope_interval(arm, opens, 3.0 * opens + rng.normal(0.0, 20.0, n), seed=seed)

    covered = sum(low < 3.0 < high for low, high in (interval(2000, seed) for seed in range(20)))
    assert covered >= 16  # a 95% interval: 19 of 20 expected
    small, large = interval(2000, 0), interval(32000, 0)
    assert large[1] - large[0] < 0.5 * (small[1] - small[0])  # 16 times the members: a quarter of the width
    arm = np.repeat(ARMS, 50)
    assert arm_slope_interval(arm, arm.astype(float), -arm.astype(float)) == (0.0, 0.0)  # floored like the slope


def _settings(**kw: object) -> EstimatorSettings:
    return EstimatorSettings(model={"n_estimators": 150, "min_child_samples": 100}, scale_column=None, **kw)


def test_margin_per_open_from_orders_uses_the_weeks_the_arms_differ(simulated: tuple[pd.DataFrame, np.ndarray]) -> None:
    frame, _ = simulated
    rng = np.random.default_rng(5)
    # the whole window's margin is noise; the experiment's own weeks (beta_*) hold the 2.0 per open
    noisy = frame.assign(margin=rng.normal(0.0, 30.0, len(frame)))
    early = noisy.assign(beta_opens=frame["opens"], beta_orders=frame["orders"], beta_margin=frame["margin"])
    for mediator in ("margin", "orders"):
        model = fit_cadence_model(
            early, ["x", "noise"], [], ARMS, 4, 147, _settings(mediator=mediator), UnsubscribeCost(share=0.1)
        )
        assert model.beta == pytest.approx(2.0, rel=0.1), mediator
        assert model.beta_interval[0] < 2.0 < model.beta_interval[1]
    # an order is worth 4 here (orders = opens / 2): counting orders is as right as summing margin
    without = fit_cadence_model(noisy, ["x", "noise"], [], ARMS, 4, 147, _settings(), UnsubscribeCost(share=0.1))
    assert abs(without.beta - 2.0) > 0.2 or without.beta_interval[1] - without.beta_interval[0] > 2.0


def test_the_contact_cost_is_what_the_customers_opens_would_bring(simulated: tuple[pd.DataFrame, np.ndarray]) -> None:
    frame, _ = simulated
    cost = UnsubscribeCost(basis="contact", horizon_years=1.0)
    model = fit_cadence_model(frame, ["x", "noise"], [], ARMS, 4, 147, _settings(), cost)
    test, _ = _simulated(3000, 9)
    tol = 4.0 * np.exp(test["x"].to_numpy())
    # 2.0 of margin per open, times the opens of a year at the current cadence 4
    true_cost = 2.0 * 4 * 0.3 * np.exp(-4 / tol) * 5 * 365 / 147
    estimated = model.unsubscribe_cost(test)
    assert np.corrcoef(estimated, true_cost)[0, 1] > 0.9
    assert estimated.mean() == pytest.approx(true_cost.mean(), rel=0.15)
    # the CLV basis prices everyone alike when they spend alike, whatever their opens
    flat = fit_cadence_model(frame, ["x", "noise"], [], ARMS, 4, 147, _settings(), UnsubscribeCost(share=0.1))
    assert np.ptp(flat.unsubscribe_cost(test)) == 0.0


def test_the_decision_truth_moves_a_member_only_for_a_true_gain_above_min_gain() -> None:
    truth = np.array([[0.0, 10.5, 10.0, 9.0], [0.0, 8.0, 10.0, 13.0], [0.0, 11.5, 10.0, 9.0], [1.0, 2.0, 3.0, 4.0]])
    assert true_best(truth, ARMS, 4).tolist() == [2, 8, 2, 8]
    assert true_best(truth, ARMS, 4, min_gain=1.0).tolist() == [4, 8, 2, 4]
    learned = np.array([4, 8, 4, 4])
    strict, decision = confusion(truth, learned, ARMS, 4), confusion(truth, learned, ARMS, 4, 1.0)
    shares = class_shares({"true": strict, "decision": decision}).set_index("class")
    assert shares.loc["saturated", "learned"] == 0.0 and shares.loc["on_target", "learned"] == 0.75
    assert shares.loc["saturated", "true"] == 0.5 and shares.loc["saturated", "decision"] == 0.25
    assert shares.loc["agreement", "true"] == 0.25 and shares.loc["agreement", "decision"] == 0.75
    assert shares.drop(index="agreement").sum().tolist() == pytest.approx([1.0, 1.0, 1.0])


def _customers(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(n)],
            "consent": rng.random(n) < 0.6,
            "current_cadence": rng.integers(0, 12, n).astype(float),
        }
    )
    return frame, rng.normal(0.0, 5.0, (n, len(ARMS)))


@pytest.mark.parametrize("maximum", [0, 1, 3, 4, 8, 20])
def test_no_consent_means_zero_and_the_cadence_never_exceeds_the_hard_maximum(maximum: int) -> None:
    customers, values = _customers(3000, maximum)
    table = contact_frequency(customers, values, ARMS, "email", maximum, min_gain=0.5)
    consent = customers["consent"].to_numpy()
    rec = table["recommended_cadence"].to_numpy()
    assert np.all(rec[~consent] == 0)
    assert set(table.loc[~consent, "class"]) == {NO_CONSENT}
    assert np.all(rec <= maximum)
    allowed = [a for a in ARMS if a <= maximum]
    if allowed:
        assert set(rec[consent]) <= set(allowed)
        assert (table.loc[consent, "class"] != NO_CONSENT).all()
    else:
        assert np.all(rec == 0)
    assert np.all(table.loc[rec == 0, "expected_gain"] == 0.0)


def test_the_recommendation_is_the_best_allowed_arm_and_its_gain_over_the_current() -> None:
    customers = pd.DataFrame(
        {"customer_id": ["A", "B", "C"], "consent": [True, True, True], "current_cadence": [4.0, 4.0, 1.0]}
    )
    values = np.array([[0.0, 3.0, 0.0, -1.0], [0.0, 0.0, 0.0, 9.0], [0.0, 0.2, 0.5, 0.0]])
    table = contact_frequency(customers, values, ARMS, "email", 4, min_gain=1.0)
    # A: 2 beats the current 4 by 3 -> saturated; B: 8 is above the maximum of 4 -> stays on 4;
    # C: currently 1, 4 gains only 0.5 (< min_gain 1) -> stays on 1
    assert table["recommended_cadence"].tolist() == [2, 4, 1]
    assert table["class"].tolist() == ["saturated", "on_target", "on_target"]
    assert table["expected_gain"].tolist() == pytest.approx([3.0, 0.0, 0.0])
    wide = frequency_features(table)
    assert list(wide.columns) == ["customer_id", "email_cadence", "email_cadence_class", "email_cadence_gain"]


def test_nearest_arm_on_a_log_scale() -> None:
    assert nearest_arm(np.array([0.0, 1.0, 3.0, 5.0, 6.0, 20.0]), ARMS).tolist() == [1, 1, 4, 4, 8, 8]


def test_the_config_needs_a_maximum_for_the_experiments_channel() -> None:
    base = {"name": "x", "store": "s.duckdb"}
    assert validate_config(FrequencyConfig, base, "f.yaml").max_cadence == {"email": 8}
    with pytest.raises(ConfigError, match="max_cadence"):
        validate_config(FrequencyConfig, {**base, "max_cadence": {"sms": 2}}, "f.yaml")
    with pytest.raises(ConfigError, match="current"):
        validate_config(FrequencyConfig, {**base, "experiment": {"arms": [1, 2], "current": 4}}, "f.yaml")
    with pytest.raises(ConfigError, match="beta_days"):
        validate_config(FrequencyConfig, {**base, "experiment": {"window_days": 91, "beta_days": 147}}, "f.yaml")
