"""Pareto/NBD: the published CDNOW fit, lifetimes' ParetoNBDFitter as a second oracle, simulated truth."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad

from omnicrm.tasks.btyd import (
    PARETO_COLUMNS,
    PARETO_NBD_PARAMS,
    BtydModel,
    fit_pareto_nbd,
    pareto_nbd_expected_purchases,
    pareto_nbd_log_likelihood,
    pareto_nbd_p_alive,
)

from .test_btyd import _lifetimes_datasets

CDNOW_PUBLISHED = {"r": 0.5533, "alpha": 10.5776, "s": 0.6061, "beta": 11.6686}


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    """2,357 CDNOW customers in weeks: x, t_x, T and zbar."""
    frame = pd.read_csv(_lifetimes_datasets() / "cdnow_customers_summary_with_transactions.csv")
    return frame.rename(columns={"x": "frequency", "t_x": "recency", "zbar": "monetary"})


def _xtT(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(frame[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T"))


def test_cdnow_fit_reproduces_the_published_parameters(cdnow: pd.DataFrame) -> None:
    # Fader & Hardie's Pareto/NBD note and the BG/NBD paper's comparison: r 0.5533, alpha 10.5776,
    # s 0.6061, beta 11.6686, log-likelihood -9595.0 on the 2,357 CDNOW customers (weeks)
    fitted, loglik = fit_pareto_nbd(*_xtT(cdnow))
    for name, published in CDNOW_PUBLISHED.items():
        assert fitted[name] == pytest.approx(published, abs=1.5e-3), name
    assert loglik == pytest.approx(-9595.0, abs=0.05)
    # the optimum is at least as likely as the published (rounded) parameters
    at_published = pareto_nbd_log_likelihood(list(CDNOW_PUBLISHED.values()), *_xtT(cdnow)).sum()
    assert 0 <= loglik - at_published < 0.01


@pytest.mark.parametrize(
    "params",
    [
        (0.5533, 10.5776, 0.6061, 11.6686),  # CDNOW: alpha < beta
        (0.5533, 14.0, 0.6061, 3.0),  # alpha > beta: the other branch of the closed form
        (0.73, 8.8, 1e-5, 3e5),  # nobody dies: what Online Retail's fit drifts to
        (2.0, 5.0, 1.0, 20.0),  # s = 1: the expected-purchases bracket is 0/0
    ],
)
def test_conditional_quantities_match_lifetimes(cdnow: pd.DataFrame, params: tuple[float, ...]) -> None:
    x, t_x, T = _xtT(cdnow)
    with warnings.catch_warnings():  # lifetimes 0.11.3 emits pandas/numpy deprecation warnings
        warnings.simplefilter("ignore")
        from lifetimes import ParetoNBDFitter

        ref = ParetoNBDFitter()
        ref.params_ = pd.Series(dict(zip(PARETO_NBD_PARAMS, params, strict=True)))
        ref_ll = np.asarray(ParetoNBDFitter._conditional_log_likelihood(params, x, t_x, T))
        ref_alive = np.asarray(ref.conditional_probability_alive(x, t_x, T))
        ref_purchases = (
            np.asarray(ref.conditional_expected_number_of_purchases_up_to_time(39, x, t_x, T))
            if params[2] != 1.0
            else None  # lifetimes divides by s - 1
        )
    np.testing.assert_allclose(pareto_nbd_log_likelihood(params, x, t_x, T), ref_ll, rtol=1e-10)
    np.testing.assert_allclose(pareto_nbd_p_alive(params, x, t_x, T), ref_alive, rtol=1e-10, atol=1e-300)
    if ref_purchases is not None:
        got = pareto_nbd_expected_purchases(params, 39, x, t_x, T)
        np.testing.assert_allclose(got, ref_purchases, rtol=1e-9, atol=1e-300)


def test_expected_purchases_equal_the_integral_over_the_posterior_lifetime() -> None:
    """Independent route: alive at T, E[Y(t)] = E[lambda] E[min(tau, t)] with the posterior Gammas
    ``lambda ~ Gamma(r+x, alpha+T)`` and ``mu ~ Gamma(s, beta+T)``, ``tau ~ Exp(mu)``; integrated over mu."""
    from scipy.stats import gamma

    for r, alpha, s, beta in ((0.55, 10.6, 0.61, 11.7), (2.0, 5.0, 1.0, 20.0), (1.5, 3.0, 2.5, 8.0)):
        x, t_x, T, t = 3.0, 20.0, 30.0, 52.0
        rate = (r + x) / (alpha + T)
        mu = gamma(s, scale=1 / (beta + T))
        # E[min(tau, t) | mu] = (1 - exp(-mu t)) / mu
        mean_life = quad(lambda m, mu=mu, t=t: mu.pdf(m) * -np.expm1(-m * t) / m, 0, np.inf, epsrel=1e-12, limit=200)[0]
        alive = pareto_nbd_p_alive((r, alpha, s, beta), [x], [t_x], [T])[0]
        got = pareto_nbd_expected_purchases((r, alpha, s, beta), t, [x], [t_x], [T])[0]
        assert got == pytest.approx(alive * rate * mean_life, rel=1e-8)


def simulate_pareto_nbd(n: int, r: float, alpha: float, s: float, beta: float, seed: int) -> pd.DataFrame:
    """Customers with a first purchase at 0 and T in [20, 60] weeks: Poisson(lambda) buying until tau."""
    rng = np.random.default_rng(seed)
    T = rng.uniform(20, 60, n)
    lam = rng.gamma(r, 1 / alpha, n)
    tau = rng.exponential(1 / rng.gamma(s, 1 / beta, n))
    active = np.minimum(tau, T)
    x = rng.poisson(lam * active)
    # the last of x uniform purchase times in (0, active): active * Beta(x, 1)
    t_x = np.where(x > 0, active * rng.beta(np.maximum(x, 1), 1.0), 0.0)
    return pd.DataFrame({"frequency": x.astype(float), "recency": t_x, "T": T})


def test_fit_recovers_simulated_parameters() -> None:
    truth = {"r": 0.8, "alpha": 6.0, "s": 0.9, "beta": 15.0}
    data = simulate_pareto_nbd(10_000, *truth.values(), seed=2)
    fitted, loglik = fit_pareto_nbd(*_xtT(data))
    for name, value in truth.items():
        assert fitted[name] == pytest.approx(value, rel=0.15), name
    at_truth = pareto_nbd_log_likelihood(list(truth.values()), *_xtT(data)).sum()
    assert 0 <= loglik - at_truth < 10


def test_btyd_model_adds_pareto_columns_only_when_asked(cdnow: pd.DataFrame) -> None:
    plain = BtydModel().fit(cdnow).predict(cdnow, 39 * 7)
    assert not set(PARETO_COLUMNS) & set(plain.columns)
    model = BtydModel(pareto=True).fit(cdnow)
    out = model.predict(cdnow, 39 * 7)
    params = [model.pareto_nbd_params_[k] for k in PARETO_NBD_PARAMS]
    np.testing.assert_allclose(out["pnbd_expected_purchases"], pareto_nbd_expected_purchases(params, 39, *_xtT(cdnow)))
    np.testing.assert_allclose(out["pnbd_clv"], out["pnbd_expected_purchases"] * out["btyd_expected_spend"])
    assert out["pnbd_p_alive"].between(0, 1).all()
    # the BG/NBD columns are unchanged by fitting Pareto/NBD beside it
    pd.testing.assert_frame_equal(out[plain.columns], plain)
