"""The off-policy estimators recover a known policy value on simulated randomised data."""

from __future__ import annotations

import numpy as np
import pytest

from omnicrm.errors import InputError
from omnicrm.nba.offpolicy import Logged, estimate, row_scores

SHARES = np.array([0.5, 0.25, 0.25])  # control, action 1, action 2


def _effects(x: np.ndarray) -> np.ndarray:
    """True effect of each arm (control first): action 1 helps low x, action 2 a little for everyone."""
    return np.column_stack([np.zeros_like(x), 0.5 - x, np.full_like(x, 0.2)])


def _policy(x: np.ndarray) -> np.ndarray:
    return np.where(x < 0.3, 1, np.where(x > 0.8, 2, 0))


#: E[tau_pi(X)] for X ~ U(0, 1): int_0^0.3 (0.5 - x) dx + 0.2 * 0.2
TRUE_VALUE = 0.15 - 0.045 + 0.04


def _simulate(rng: np.random.Generator, n: int, model_bias: float, per_customer: int = 1) -> tuple[Logged, dict]:
    x = rng.random(n)
    arm = rng.choice(3, size=n, p=SHARES)
    tau = _effects(x)
    base = 1 + x
    reward = base + tau[np.arange(n), arm] + rng.normal(0, 1, n)
    # a deliberately wrong reward model: DR must stay unbiased anyway
    model = base[:, None] + tau + model_bias
    cluster = np.arange(n) // per_customer
    logged = Logged(arm, SHARES[arm], reward, model, cluster)
    return logged, {"no action": np.zeros(n, dtype=int), "policy": _policy(x)}


def test_intervals_cover_the_true_value_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    hits = {"ipw": 0, "dr": 0}
    sims = 150
    for s in range(sims):
        logged, policies = _simulate(rng, 2000, model_bias=0.3)
        est = estimate(logged, policies, baseline="no action", n_boot=200, seed=s)
        row = est.values[est.values["policy"] == "policy"].set_index("estimator")
        for e in hits:
            hits[e] += int(row.loc[e, "lo"] <= TRUE_VALUE <= row.loc[e, "hi"])
    for e, h in hits.items():
        assert 0.88 <= h / sims <= 0.99, f"{e}: coverage {h / sims:.2f}"


def test_dr_with_a_good_model_is_tighter_than_ipw_and_both_are_unbiased() -> None:
    rng = np.random.default_rng(3)
    logged, policies = _simulate(rng, 40_000, model_bias=0.0)
    est = estimate(logged, policies, baseline="no action", n_boot=200).values.set_index(["policy", "estimator"])
    ipw, dr = est.loc[("policy", "ipw")], est.loc[("policy", "dr")]
    assert abs(dr["value"] - TRUE_VALUE) < 0.02
    assert abs(ipw["value"] - TRUE_VALUE) < 0.05
    assert (dr["hi"] - dr["lo"]) < 0.7 * (ipw["hi"] - ipw["lo"])
    # the baseline's own incremental value is exactly zero
    assert est.loc[("no action", "dr"), "value"] == 0.0


def test_customers_with_several_rows_are_resampled_together() -> None:
    """A customer's response is their own in all their rows: row-level intervals would be too narrow."""
    rng = np.random.default_rng(11)
    n, per = 6000, 6
    x = np.repeat(rng.random(n // per), per)
    arm = rng.choice(3, size=n, p=SHARES)
    own = np.repeat(rng.normal(0, 2, n // per), per)  # a customer's own response to any action
    reward = 1 + _effects(x)[np.arange(n), arm] + (arm > 0) * own + rng.normal(0, 0.5, n)
    policies = {"no action": np.zeros(n, dtype=int), "policy": _policy(x)}
    clustered = Logged(arm, SHARES[arm], reward, None, np.arange(n) // per)
    rowwise = Logged(arm, SHARES[arm], reward, None, np.arange(n))
    width = {}
    for name, logged in (("customer", clustered), ("row", rowwise)):
        v = estimate(logged, policies, "no action", n_boot=300).values
        r = v[v["policy"] == "policy"].iloc[0]
        width[name] = r["hi"] - r["lo"]
    assert width["customer"] > 1.3 * width["row"]


def test_paired_differences_against_a_reference() -> None:
    rng = np.random.default_rng(5)
    logged, policies = _simulate(rng, 20_000, model_bias=0.1)
    policies["everyone action 2"] = np.full(logged.arm.size, 2)
    est = estimate(logged, policies, "no action", reference="policy", n_boot=200)
    d = est.differences.set_index(["policy", "estimator"])
    # policy (0.145) vs action 2 for all (0.2): a difference of -0.055
    assert d.loc[("everyone action 2", "dr"), "value"] == pytest.approx(-0.055, abs=0.03)
    assert d.loc[("everyone action 2", "dr"), "hi"] < 0


def test_row_scores_without_a_model_give_ipw_only() -> None:
    logged = Logged(np.array([0, 1]), np.array([0.5, 0.5]), np.array([1.0, 2.0]), None, np.array([0, 1]))
    ipw, dr = row_scores(logged, np.array([1, 1]))
    assert ipw.tolist() == [0.0, 4.0]
    assert np.isnan(dr).all()


def test_bad_rows_are_refused_with_a_message() -> None:
    with pytest.raises(InputError, match="propensity"):
        Logged(np.array([0]), np.array([0.0]), np.array([1.0]), None, np.array([0]))
    with pytest.raises(InputError, match="reward"):
        Logged(np.array([0, 1]), np.array([0.5, 0.5]), np.array([1.0]), None, np.array([0, 1]))
    logged = Logged(np.array([0]), np.array([0.5]), np.array([1.0]), None, np.array([0]))
    with pytest.raises(InputError, match="baseline policy 'none'"):
        estimate(logged, {"x": np.array([0])}, baseline="none")
