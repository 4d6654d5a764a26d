"""Every uplift learner honours the one contract and recovers a known effect on simulated arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.linear_model import LinearRegression, LogisticRegression

from omnicrm.uplift import LEARNERS, make_learner
from omnicrm.uplift.learners import default_model

NAMES = sorted(LEARNERS)
SMALL = {"n_estimators": 60, "min_child_samples": 40}


def simulate(n: int = 6000, seed: int = 0, binary: bool = False):  # noqa: ANN201
    """Two actions against a shared control (1/3 each). True effects: a = 2 * x0, b = -1 + x1 (continuous)."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x0": rng.uniform(0, 1, n), "x1": rng.uniform(0, 1, n), "noise": rng.normal(size=n)})
    arm = rng.choice(np.array(["ctrl", "a", "b"], dtype=object), n)
    tau = np.column_stack([2 * X["x0"], -1 + X["x1"]])
    base = X["x1"].to_numpy() + 0.5 * X["noise"].to_numpy()
    if binary:
        tau = tau * 0.15  # effects on a probability
        p = 0.3 + 0.2 * X["x1"].to_numpy() + np.where(arm == "a", tau[:, 0], 0) + np.where(arm == "b", tau[:, 1], 0)
        y = (rng.random(n) < np.clip(p, 0, 1)).astype(float)
    else:
        y = base + np.where(arm == "a", tau[:, 0], 0) + np.where(arm == "b", tau[:, 1], 0) + rng.normal(0, 0.5, n)
    return X, arm, y, tau


def learner(name: str, binary: bool = False, seed: int = 0):  # noqa: ANN201
    base = default_model("classifier" if binary else "regressor", seed, **SMALL)
    return make_learner(
        name, control="ctrl", base_model=base, effect_model=default_model("regressor", seed, **SMALL), random_state=seed
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("binary", [False, True], ids=["continuous", "binary"])
def test_contract_shapes_actions_and_determinism(name: str, binary: bool) -> None:
    X, arm, y, _ = simulate(1500, binary=binary)
    m = learner(name, binary).fit(X, arm, y)
    assert m.actions_ == ["a", "b"]
    assert m.binary_ is binary
    assert m.propensity_ == pytest.approx({a: float((arm == a).mean()) for a in ("ctrl", "a", "b")})
    effect = m.predict_effect(X.iloc[:50])
    assert effect.shape == (50, 2) and np.isfinite(effect).all()
    again = learner(name, binary).fit(X, arm, y).predict_effect(X.iloc[:50])
    np.testing.assert_array_equal(effect, again)  # seeded and deterministic
    assert m.predict_effect(X.to_numpy()[:5]).shape == (5, 2)  # arrays are accepted like frames


@pytest.mark.parametrize("name", NAMES)
def test_recovers_a_known_heterogeneous_effect(name: str) -> None:
    X, arm, y, tau = simulate(6000, seed=1)
    Xt, _, _, tau_t = simulate(2000, seed=2)
    est = learner(name).fit(X, arm, y).predict_effect(Xt)
    for j in range(2):
        assert stats.spearmanr(est[:, j], tau_t[:, j]).statistic > 0.8
        assert est[:, j].mean() == pytest.approx(tau_t[:, j].mean(), abs=0.15)


@pytest.mark.parametrize("name", NAMES)
def test_binary_outcome_effects_are_probability_differences(name: str) -> None:
    X, arm, y, tau = simulate(9000, seed=3, binary=True)
    est = learner(name, binary=True).fit(X, arm, y).predict_effect(X)
    assert est[:, 0].mean() == pytest.approx(tau[:, 0].mean(), abs=0.03)  # mean effect of a: +0.15
    assert est[:, 1].mean() == pytest.approx(tau[:, 1].mean(), abs=0.03)  # mean effect of b: -0.075
    assert stats.spearmanr(est[:, 0], tau[:, 0]).statistic > 0.25  # ranks by x0 (random: ~0)


@pytest.mark.parametrize("name", NAMES)
def test_any_scikit_learn_base_model(name: str) -> None:
    X, arm, y, tau = simulate(3000, seed=4)
    m = make_learner(name, control="ctrl", base_model=LinearRegression(), effect_model=LinearRegression())
    est = m.fit(X, arm, y).predict_effect(X)
    if name == "S":
        # a linear S-learner has no arm-by-feature interaction: one constant effect, the average one
        assert np.ptp(est[:, 0]) == pytest.approx(0, abs=1e-9)
        assert est[0, 0] == pytest.approx(tau[:, 0].mean(), abs=0.1)
    else:
        assert stats.spearmanr(est[:, 0], tau[:, 0]).statistic > 0.9


@pytest.mark.parametrize("name", NAMES)
def test_errors_name_the_problem(name: str) -> None:
    X, arm, y, _ = simulate(600)
    with pytest.raises(RuntimeError, match="not fitted"):
        make_learner(name, control="ctrl").predict_effect(X)
    with pytest.raises(ValueError, match="no control rows"):
        make_learner(name, control="nobody").fit(X, arm, y)
    with pytest.raises(ValueError, match="differ in length"):
        make_learner(name, control="ctrl").fit(X, arm[:-1], y)
    with pytest.raises(ValueError, match="needs a regressor"):
        make_learner(name, control="ctrl", base_model=LogisticRegression()).fit(X, arm, y)
    with pytest.raises(ValueError, match="other than 0 and 1"):
        make_learner(name, control="ctrl", outcome="binary").fit(X, arm, y)
    fitted = learner(name).fit(X, arm, y)
    with pytest.raises(ValueError, match="features"):
        fitted.predict_effect(X[["x0"]])


def test_unknown_learner_name_lists_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"among \['DR', 'S', 'T', 'X'\]"):
        make_learner("Z")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("binary", [False, True], ids=["continuous", "binary"])
def test_effect_contributions_add_up_to_the_effect_where_the_learner_decomposes(name: str, binary: bool) -> None:
    X, arm, y, _ = simulate(1500, binary=binary)
    m = learner(name, binary).fit(X, arm, y)
    rows = X.iloc[:40]
    if name == "S" or (name == "T" and binary):  # a difference of probabilities: no additive contributions
        with pytest.raises(NotImplementedError, match="not a sum of per-feature contributions"):
            m.effect_contributions(rows, "a")
        return
    effect = m.predict_effect(rows)
    for j, action in enumerate(m.actions_):
        contrib = m.effect_contributions(rows, action)
        assert contrib.shape == (40, X.shape[1] + 1)
        np.testing.assert_allclose(contrib.sum(axis=1), effect[:, j], atol=1e-9)
    if not binary:  # action a's true effect is 2 * x0: x0 carries the largest share of its variation across rows
        spread = m.effect_contributions(X.iloc[:500], "a")[:, :-1].std(axis=0)
        assert int(np.argmax(spread)) == 0
    with pytest.raises(ValueError, match="unknown action"):
        m.effect_contributions(rows, "zz")


def test_contributions_need_a_lightgbm_regressor() -> None:
    X, arm, y, _ = simulate(600)
    m = make_learner("DR", control="ctrl", base_model=LinearRegression(), effect_model=LinearRegression()).fit(
        X, arm, y
    )
    with pytest.raises(NotImplementedError, match="LightGBM regressors only"):
        m.effect_contributions(X.iloc[:5], "a")
