"""BG/NBD + Gamma-Gamma ("buy 'til you die") CLV model: the classic baseline and a feature provider.

Two probability models on an RFM summary (one row per customer):

* **BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way: an alternative to the
  Pareto/NBD model", Marketing Science 24(2)). While alive a customer buys as a Poisson process with
  rate ``lambda ~ Gamma(r, alpha)``; after every purchase they drop out with probability
  ``p ~ Beta(a, b)``. Inputs per customer: ``x`` = number of *repeat* transactions, ``t_x`` = time of
  the last one since the first, ``T`` = time from the first transaction to the cutoff.
* **Pareto/NBD** (Schmittlein, Morrison & Colombo 1987, "Counting your customers: who are they and
  what will they do next?", Management Science 33(1); expressions from Fader & Hardie 2005, "A note
  on deriving the Pareto/NBD model and related expressions"). Purchases as in BG/NBD, but the
  customer dies after an exponential lifetime, ``mu ~ Gamma(s, beta)``, at any time rather than only
  right after a purchase; on long cohorts it often ranks buyers better. Implemented here (numpy/scipy,
  vectorised; checked against the published CDNOW fit r 0.5533, alpha 10.5776, s 0.6061, beta 11.6686
  and against ``lifetimes``' ParetoNBDFitter). pymc-marketing (0.19, the maintained library with a
  ParetoNBDModel) downloads but pulls in pymc, pytensor (C compilation), arviz, preliz, xarray and
  seaborn and fits by MCMC or MAP through pytensor: too heavy for a baseline fitted at every cutoff.
* **Gamma-Gamma** spend model (Fader, Hardie & Lee 2005, "RFM and CLV: using iso-value curves for
  customer base analysis", JMR 42(4)), fitted on repeat customers: the mean value ``zbar`` of a
  customer's ``x`` repeat transactions, with a Gamma(p, nu) value per transaction and
  ``nu ~ Gamma(q, gamma)``.

Everything is vectorised over customers (numpy/scipy); parameters are fitted by maximum likelihood on
log-parameters with L-BFGS-B, from several scale-aware starting points.

:func:`rfm_summary_sql` builds the summary from the store's ``events`` table point-in-time (only
``ts < cutoff``), merging purchases on the same calendar day (UTC) into one transaction, as the paper
and the ``lifetimes`` package do.

The CLV here is **undiscounted**: expected number of purchases in the horizon times the expected value
per transaction (no discount rate, no margin).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import OptimizeResult, minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1
from threadpoolctl import threadpool_limits

from omnicrm import schema
from omnicrm.errors import InputError
from omnicrm.features.cutoffs import normalize_cutoff
from omnicrm.sql import ts_literal

FREQUENCY = "frequency"
RECENCY = "recency"
AGE = "T"
MONETARY = "monetary"
CUSTOMER_ID = "customer_id"
SUMMARY_COLUMNS = (FREQUENCY, RECENCY, AGE, MONETARY)
OUTPUT_COLUMNS = ("btyd_expected_purchases", "btyd_p_alive", "btyd_expected_spend", "btyd_clv")
PARETO_COLUMNS = ("pnbd_expected_purchases", "pnbd_p_alive", "pnbd_clv")

BGNBD_PARAMS = ("r", "alpha", "a", "b")
PARETO_NBD_PARAMS = ("r", "alpha", "s", "beta")
GAMMA_GAMMA_PARAMS = ("p", "q", "gamma")

#: log-parameters are kept in [-_LOG_BOUND, _LOG_BOUND] so a wandering line search never overflows.
_LOG_BOUND = 25.0
#: A tiny ridge on log(a) and log(b), the Beta of the dropout probability, added to the mean negative
#: log-likelihood. When the data show no dropout (a short history: nobody has lapsed yet) the
#: likelihood is flat along a ridge (a -> 0, or a and b -> infinity with a / b fixed), and L-BFGS-B
#: stopped anywhere on it: where depended on the last bits of the sums, which differ between CPUs
#: (numpy's AVX-512 and AVX2 paths gave a = 1.2e-6 and 2.8e-7, b = 1.8e6 and 3.7e6 on the small
#: test world), and so did the BG/NBD outputs a model learns from (expected purchases up to 25 apart).
#: The ridge gives the flat direction a unique minimum; where the data do identify a and b it moves
#: them by about 1e-5 relative (CDNOW: within the published fit's rounding).
DROPOUT_RIDGE = 1e-6
#: within this distance of a = 1 the conditional expectation is interpolated (its closed form is 0/0).
_A_NEAR_ONE = 1e-4

Array = NDArray[np.float64]


# --- BG/NBD ------------------------------------------------------------------------------------
def bgnbd_log_likelihood(params: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """Log-likelihood of each customer under BG/NBD (Fader, Hardie & Lee 2005, eq. 6).

    ``L = B(a, b+x)/B(a, b) * Gamma(r+x) alpha^r / Gamma(r)
    * [(alpha+T)^-(r+x) + 1{x>0} a/(b+x-1) (alpha+t_x)^-(r+x)]``, summed in log space
    (``logaddexp``) so large ``x`` or ``T`` cannot underflow.
    """
    r, alpha, a, b = (float(v) for v in params)
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b)
    at_T = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        # x = 0 has no "dropped out after the last purchase" term; b + x - 1 > 0 whenever x >= 1
        at_tx = np.where(x > 0, np.log(a) - np.log(b + x - 1) - (r + x) * np.log(alpha + t_x), -np.inf)
    return common + np.logaddexp(at_T, at_tx)


def bgnbd_p_alive(params: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """P(alive at T | x, t_x, T) = 1 / (1 + 1{x>0} a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)).

    Fader, Hardie & Lee (2005), eq. 11; evaluated as a logistic of the log-odds to stay in [0, 1].
    A customer with no repeat purchase is alive with probability 1 (the model lets people drop
    out only right after a purchase).
    """
    r, alpha, a, b = (float(v) for v in params)
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_odds_dead = np.log(a) - np.log(b + x - 1) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    return np.where(x > 0, expit(-log_odds_dead), 1.0)


def bgnbd_expected_purchases(
    params: ArrayLike, t: float | ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
) -> Array:
    """Expected number of purchases in ``(T, T + t]`` given ``(x, t_x, T)`` (FHL 2005, eq. 10).

    Written as ``P(alive) * E[Y(t) | alive]`` with
    ``E[Y(t) | alive] = (a+b+x-1)/(a-1) * [1 - (1-z)^(r+x) 2F1(r+x, b+x; a+b+x-1; z)]``,
    ``z = t / (alpha+T+t)``. Two numerical guards:

    * Euler's transformation ``2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z)`` turns the
      bracket into ``1 - (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)``. The original 2F1 diverges
      like ``(1-z)^(a-1-r-x)`` as ``z -> 1`` (long horizons, heavy buyers) and is multiplied by a
      vanishing power; the transformed one is bounded there whenever ``r+x+1 > a``.
    * At ``a = 1`` the formula is 0/0 (its limit is finite): within ``1e-4`` of 1 the value is
      interpolated linearly between ``a = 1 - 1e-4`` and ``a = 1 + 1e-4`` (the function is smooth in
      ``a``, so the error is O(1e-8) relative; the direct formula would lose ~half its digits).

    Any value that still comes out non-finite or negative (e.g. ``x = 0`` with ``a + b <= 1``, where
    the 2F1's ``C`` is <= 0) is recomputed by quadrature of the equivalent integral
    ``E_p~Beta(a, b+x)[(1 - (1 + p t/(alpha+T))^-(r+x)) / p]`` (see :func:`_expected_if_alive_quadrature`).
    """
    r, alpha, a, b = (float(v) for v in params)
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    t_arr = np.broadcast_to(np.asarray(t, dtype=float), np.broadcast_shapes(np.shape(t), x.shape))
    if np.any(t_arr < 0):
        raise InputError(f"the prediction horizon must be >= 0, got {np.min(t_arr)}")
    if abs(a - 1.0) < _A_NEAR_ONE:
        lo = _expected_if_alive(r, alpha, 1.0 - _A_NEAR_ONE, b, t_arr, x, T)
        hi = _expected_if_alive(r, alpha, 1.0 + _A_NEAR_ONE, b, t_arr, x, T)
        if_alive = lo + (hi - lo) * (a - (1.0 - _A_NEAR_ONE)) / (2 * _A_NEAR_ONE)
    else:
        if_alive = _expected_if_alive(r, alpha, a, b, t_arr, x, T)
    bad = ~np.isfinite(if_alive) | (if_alive < 0)
    if np.any(bad):
        if_alive = np.array(if_alive, dtype=float)
        if_alive[bad] = _expected_if_alive_quadrature(r, alpha, a, b, t_arr[bad], x[bad], T[bad])
    return bgnbd_p_alive(params, x, t_x, T) * if_alive


def _expected_if_alive(r: float, alpha: float, a: float, b: float, t: Array, x: Array, T: Array) -> Array:
    """``E[Y(t) | alive at T, x, T]`` in closed form, Euler-transformed (see the caller)."""
    c = a + b + x - 1
    with np.errstate(all="ignore"):
        z = t / (alpha + T + t)
        log1mz = np.log1p(-z)
        hyp = hyp2f1(a + b - 1 - r, a - 1, c, z)
        # 1 - (1-z)^(a-1) * F  ==  -expm1((a-1) log(1-z)) - (1-z)^(a-1) (F - 1), keeps digits for small z
        power = np.exp((a - 1) * log1mz)
        bracket = -np.expm1((a - 1) * log1mz) - power * (hyp - 1.0)
        out = c / (a - 1) * bracket
    return np.where(t == 0, 0.0, out)


def _tanh_sinh_nodes(step: float = 1 / 32, u_max: float = 9.0) -> tuple[Array, Array, Array]:
    """Nodes of tanh-sinh quadrature on (0, 1): ``log p``, ``log(1-p)`` and ``log(dp/du) + log(step)``.

    Tanh-sinh copes with the integrable endpoint singularities of a Beta density (a < 1 or
    b + x < 1). Everything is in logs so nodes at 1e-300 from an endpoint stay exact.
    """
    u = np.arange(-u_max, u_max + step / 2, step)
    s = np.pi * np.sinh(u)
    log_p = -np.logaddexp(0.0, -s)  # p = expit(s)
    log_q = -np.logaddexp(0.0, s)  # 1 - p, computed directly (no cancellation near p = 1)
    log_w = np.log(np.pi) + np.log(np.cosh(u)) + log_p + log_q + np.log(step)
    return log_p, log_q, log_w


def _expected_if_alive_quadrature(r: float, alpha: float, a: float, b: float, t: Array, x: Array, T: Array) -> Array:
    """``E[Y(t) | alive]`` by quadrature: slower than the closed form but valid for all parameters.

    Given alive at T, the posterior is ``lambda ~ Gamma(r+x, alpha+T)``, ``p ~ Beta(a, b+x)``, and
    ``E[Y(t) | lambda, p] = (1 - exp(-lambda p t)) / p``; integrating lambda out leaves the bounded
    integrand ``(1 - (1 + p t/(alpha+T))^-(r+x)) / p`` against the Beta density.
    """
    log_p, log_q, log_w = _tanh_sinh_nodes()
    out = np.empty(len(x))
    # chunks keep the (customers x nodes) matrix small for large customer bases
    for start in range(0, len(x), 4096):
        sl = slice(start, start + 4096)
        xs, ts, Ts = x[sl, None], t[sl, None], T[sl, None]
        bx = b + xs
        log_density = (a - 1) * log_p + (bx - 1) * log_q - betaln(a, bx)
        k, s = r + xs, ts / (alpha + Ts)
        with np.errstate(all="ignore"):
            y = np.exp(log_p + np.log(s))  # p * s, from logs
            # (1 - (1+y)^-k) / (k y): its series below 1e-8, where y may even be subnormal (tiny a puts
            # real mass at p ~ 1e-300, and dividing by a subnormal p loses most digits)
            ratio = np.where(y < 1e-8, 1.0 - (k + 1) * y / 2, -np.expm1(-k * np.log1p(y)) / (k * y))
        out[sl] = np.sum(np.exp(log_density + log_w) * (k * s) * ratio, axis=1)
    return out


def bgnbd_gradient(params: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """Gradient of each customer's BG/NBD log-likelihood with respect to (r, alpha, a, b), shape (n, 4).

    Differentiates :func:`bgnbd_log_likelihood` term by term (digamma for the Gamma and Beta
    functions); ``w3``/``w4`` are the shares of the two bracketed terms in the likelihood.
    """
    r, alpha, a, b = (float(v) for v in params)
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    repeat = x > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        at_T = -(r + x) * np.log(alpha + T)
        at_tx = np.where(repeat, np.log(a) - np.log(b + x - 1) - (r + x) * np.log(alpha + t_x), -np.inf)
        total = np.logaddexp(at_T, at_tx)
        w3, w4 = np.exp(at_T - total), np.exp(at_tx - total)
        inv_bx1 = np.where(repeat, 1.0 / (b + x - 1), 0.0)
    d_r = digamma(r + x) - digamma(r) + np.log(alpha) - w3 * np.log(alpha + T) - w4 * np.log(alpha + t_x)
    d_alpha = r / alpha - (r + x) * (w3 / (alpha + T) + w4 / (alpha + t_x))
    d_a = digamma(a + b) - digamma(a + b + x) + w4 / a
    d_b = digamma(b + x) - digamma(a + b + x) - digamma(b) + digamma(a + b) - w4 * inv_bx1
    return np.stack([d_r, d_alpha, d_a, d_b], axis=1)


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> tuple[dict[str, float], float]:
    """Maximum-likelihood (r, alpha, a, b) and the total log-likelihood at the optimum.

    Optimises the mean negative log-likelihood over log-parameters (L-BFGS-B, analytic gradient) from
    a few starting points and keeps the best. Identical (x, t_x, T) rows are evaluated once and
    weighted (summaries in whole days repeat a lot). ``alpha`` carries the time unit, so its start
    is scaled by the data (``mean(T) / mean(x)``: the Gamma mean ``r / alpha`` then matches the
    observed purchase rate); fits in days and in weeks therefore converge alike.
    """
    n = len(np.asarray(x))
    (x, t_x, T), weight = _unique_rows(x, t_x, T)
    alpha0 = max(float(np.average(T, weights=weight)), 1e-6) / max(float(np.average(x, weights=weight)), 0.1)

    def objective(theta: Array) -> tuple[float, Array]:
        params = np.exp(theta)
        with np.errstate(all="ignore"):  # far-off trial points may overflow; they just score badly
            value = -weight @ bgnbd_log_likelihood(params, x, t_x, T)
            grad = -(weight @ bgnbd_gradient(params, x, t_x, T)) * params  # chain rule for log-params
        # the dropout Beta's ridge (see DROPOUT_RIDGE)
        value += DROPOUT_RIDGE * (theta[2] ** 2 + theta[3] ** 2)
        grad = grad + DROPOUT_RIDGE * 2.0 * np.array([0.0, 0.0, theta[2], theta[3]])
        return value, grad

    starts = [(1.0, alpha0, 1.0, 1.0), (0.5, 0.5 * alpha0, 0.5, 2.0), (2.0, 2.0 * alpha0, 2.0, 0.5)]
    best = _minimise_best(objective, starts)
    params = np.exp(best.x)
    with np.errstate(all="ignore"):
        loglik = float(weight @ bgnbd_log_likelihood(params, x, t_x, T)) * n
    return dict(zip(BGNBD_PARAMS, params.tolist(), strict=True)), loglik


def _unique_rows(*columns: ArrayLike) -> tuple[list[Array], Array]:
    """Distinct rows of the given columns and how often each occurs (weights for the likelihood)."""
    stacked = np.column_stack([np.asarray(c, dtype=float) for c in columns])
    rows, counts = np.unique(stacked, axis=0, return_counts=True)
    # the objective is divided by n so the optimiser's tolerances mean the same for any data size
    return [rows[:, i] for i in range(rows.shape[1])], counts / counts.sum()


# --- Pareto/NBD --------------------------------------------------------------------------------
def _pnbd_log_tail(params: ArrayLike, x: Array, u: Array) -> Array:
    """``log(s * integral_u^inf (alpha+tau)^-(r+x) (beta+tau)^-(s+1) dtau)`` per customer, at ``u``.

    Fader & Hardie (2005, "A note on deriving the Pareto/NBD model and related expressions") write
    it as ``s/(r+s+x) * 2F1(r+s+x, b; r+s+x+1; z) / (max(alpha, beta)+u)^(r+s+x)`` with
    ``z = |alpha-beta| / (max(alpha, beta)+u)`` in ``[0, 1)``. As ``z -> 1`` (one rate scale far
    above the other, as when a fit drifts to "nobody dies", ``s -> 0`` with ``beta`` large) scipy's
    2F1 needs ever more terms (70 ms instead of 0.3 ms for 1,400 customers) and overflows for heavy
    buyers. Substituting ``y = (m+u)/(m+tau)``, ``m = min(alpha, beta)``, gives instead

    ``(m+u)^-(r+s+x) / (r+s+x) * 2F1(b, r+s+x; r+s+x+1; -k)``, ``k = |alpha-beta| / (m+u) >= 0``,

    with ``b = s+1`` when ``alpha < beta`` and ``b = r+x`` otherwise: a 2F1 on the negative axis that
    decreases from 1 (at ``alpha = beta``) without overflow, and that scipy evaluates in constant time.
    Both forms agree to 1e-13 (tests compare against ``lifetimes``, which uses the first).
    """
    r, alpha, s, beta = (float(v) for v in params)
    rsx = r + s + x
    low = min(alpha, beta)
    first = s + 1.0 if alpha < beta else r + x
    k = abs(alpha - beta) / (low + u)
    return np.log(s) - np.log(rsx) - rsx * np.log(low + u) + np.log(hyp2f1(first, rsx, rsx + 1.0, -k))


def _pnbd_log_parts(params: ArrayLike, x: Array, t_x: Array, T: Array) -> tuple[Array, Array]:
    """The two terms of the Pareto/NBD likelihood bracket, in logs: alive at ``T``, and died in ``(t_x, T]``.

    Alive: ``(alpha+T)^-(r+x) (beta+T)^-s``. Died after the last purchase: ``s * integral_{t_x}^T``
    of the density above, the difference of two tails (:func:`_pnbd_log_tail`), taken in logs.
    """
    r, alpha, s, beta = (float(v) for v in params)
    log_alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    at_tx, at_T = _pnbd_log_tail(params, x, t_x), _pnbd_log_tail(params, x, T)
    with np.errstate(divide="ignore", invalid="ignore"):
        # tail(t_x) >= tail(T); equal (t_x = T) means no room to die in: log 0 = -inf
        log_died = at_tx + np.log1p(-np.exp(np.minimum(at_T - at_tx, 0.0)))
    return log_alive, np.where(t_x < T, log_died, -np.inf)


def pareto_nbd_log_likelihood(params: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """Log-likelihood of each customer under Pareto/NBD (Schmittlein, Morrison & Colombo 1987).

    While alive a customer buys as a Poisson process with rate ``lambda ~ Gamma(r, alpha)`` and dies
    after an exponential lifetime with rate ``mu ~ Gamma(s, beta)`` (any time, not only after a
    purchase as in BG/NBD). ``L = Gamma(r+x) alpha^r beta^s / Gamma(r) * [(alpha+T)^-(r+x) (beta+T)^-s
    + s integral_{t_x}^T (alpha+tau)^-(r+x) (beta+tau)^-(s+1) dtau]`` (Fader & Hardie 2005, eq. 22),
    evaluated in logs (:func:`_pnbd_log_parts`).
    """
    r, alpha, s, beta = (float(v) for v in params)
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    return common + np.logaddexp(*_pnbd_log_parts(params, x, t_x, T))


def pareto_nbd_p_alive(params: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """P(alive at T | x, t_x, T): the "alive" term's share of the likelihood bracket (FH 2005, eq. 18)."""
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    log_alive, log_died = _pnbd_log_parts(params, x, t_x, T)
    return np.exp(log_alive - np.logaddexp(log_alive, log_died))


def pareto_nbd_expected_purchases(
    params: ArrayLike, t: float | ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
) -> Array:
    """Expected purchases in ``(T, T + t]`` given ``(x, t_x, T)`` (FH 2005, eq. 41).

    ``P(alive) * (r+x)(beta+T) / ((alpha+T)(s-1)) * [1 - ((beta+T)/(beta+T+t))^(s-1)]``; the
    bracket over ``s - 1`` is written as ``-expm1((s-1) L) / (s-1)`` with ``L = log((beta+T)/(beta+T+t))``,
    whose limit at ``s = 1`` is ``-L`` (used within 1e-8 of it).
    """
    r, alpha, s, beta = (float(v) for v in params)
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    t_arr = np.broadcast_to(np.asarray(t, dtype=float), np.broadcast_shapes(np.shape(t), x.shape))
    if np.any(t_arr < 0):
        raise InputError(f"the prediction horizon must be >= 0, got {np.min(t_arr)}")
    log_ratio = np.log(beta + T) - np.log(beta + T + t_arr)
    k = s - 1.0
    growth = -log_ratio if abs(k) < 1e-8 else -np.expm1(k * log_ratio) / k
    return pareto_nbd_p_alive(params, x, t_x, T) * (r + x) * (beta + T) / (alpha + T) * growth


def fit_pareto_nbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> tuple[dict[str, float], float]:
    """Maximum-likelihood (r, alpha, s, beta) and the total log-likelihood at the optimum.

    As :func:`fit_bgnbd` (weighted distinct rows, log-parameters, L-BFGS-B from scale-aware starts),
    with a finite-difference gradient: the likelihood's derivatives through the 2F1 have no cheap
    closed form. ``alpha`` starts at ``mean(T) / mean(x)`` (the observed purchase rate) and ``beta``
    at ``mean(T)`` (lifetimes of the order of the observed span).
    """
    n = len(np.asarray(x))
    (x, t_x, T), weight = _unique_rows(x, t_x, T)
    t_scale = max(float(np.average(T, weights=weight)), 1e-6)
    alpha0 = t_scale / max(float(np.average(x, weights=weight)), 0.1)

    def value(theta: Array) -> float:
        with np.errstate(all="ignore"):
            v = -weight @ pareto_nbd_log_likelihood(np.exp(theta), x, t_x, T)
        return float(v) if np.isfinite(v) else 1e300

    def objective(theta: Array) -> tuple[float, Array]:
        # central differences: the optimum is flat, one-sided steps stop L-BFGS-B early
        f0, h = value(theta), 1e-6
        grad = np.array([(value(theta + h * e) - value(theta - h * e)) / (2 * h) for e in np.eye(len(theta))])
        return f0, grad

    starts = [(1.0, alpha0, 1.0, t_scale), (0.5, 0.5 * alpha0, 0.5, 0.5 * t_scale), (2.0, 2 * alpha0, 2.0, 2 * t_scale)]
    best = _minimise_best(objective, starts)
    return dict(zip(PARETO_NBD_PARAMS, np.exp(best.x).tolist(), strict=True)), -best.fun * n


# --- Gamma-Gamma -------------------------------------------------------------------------------
def gamma_gamma_log_likelihood(params: ArrayLike, x: ArrayLike, zbar: ArrayLike) -> Array:
    """Log-likelihood of each repeat customer's mean transaction value (FHL 2005, iso-value, eq. 3).

    ``f(zbar | x) = Gamma(px+q) / (Gamma(px) Gamma(q)) * gamma^q x^(px) zbar^(px-1) / (gamma + x zbar)^(px+q)``;
    needs ``x >= 1`` and ``zbar > 0``.
    """
    p, q, g = (float(v) for v in params)
    x, zbar = (np.asarray(v, dtype=float) for v in (x, zbar))
    px = p * x
    return (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(g)
        + px * np.log(x)
        + (px - 1) * np.log(zbar)
        - (px + q) * np.log(g + x * zbar)
    )


def gamma_gamma_expected_spend(params: ArrayLike, x: ArrayLike, zbar: ArrayLike) -> Array:
    """``E[M | x, zbar] = (q-1)/(px+q-1) * p gamma/(q-1) + px/(px+q-1) * zbar`` (iso-value paper, eq. 5).

    A weighted mean of the population mean value ``p gamma / (q-1)`` and the customer's own mean;
    customers with ``x = 0`` get the population mean (needs ``q > 1``, checked at fit time). The model
    assumes a customer's spend is independent of their purchase frequency (check before relying on it).
    """
    p, q, g = (float(v) for v in params)
    x, zbar = (np.asarray(v, dtype=float) for v in (x, zbar))
    px = p * x
    return (g + x * np.where(x > 0, zbar, 0.0)) * p / (px + q - 1)


def gamma_gamma_gradient(params: ArrayLike, x: ArrayLike, zbar: ArrayLike) -> Array:
    """Gradient of each repeat customer's Gamma-Gamma log-likelihood w.r.t. (p, q, gamma), shape (n, 3)."""
    p, q, g = (float(v) for v in params)
    x, zbar = (np.asarray(v, dtype=float) for v in (x, zbar))
    px, log_gxz = p * x, np.log(g + x * zbar)
    d_p = x * (digamma(px + q) - digamma(px) + np.log(x) + np.log(zbar) - log_gxz)
    d_q = digamma(px + q) - digamma(q) + np.log(g) - log_gxz
    d_g = q / g - (px + q) / (g + x * zbar)
    return np.stack([d_p, d_q, d_g], axis=1)


def fit_gamma_gamma(x: ArrayLike, zbar: ArrayLike) -> tuple[dict[str, float], float]:
    """Maximum-likelihood (p, q, gamma) on repeat customers and the total log-likelihood.

    ``gamma`` carries the currency scale, so its start is set from the data (the population mean
    ``p gamma / (q-1)`` equals the mean of ``zbar`` at the start).
    """
    n = len(np.asarray(x))
    (x, zbar), weight = _unique_rows(x, zbar)
    mean_value = float(np.average(zbar, weights=weight))

    def objective(theta: Array) -> tuple[float, Array]:
        params = np.exp(theta)
        with np.errstate(all="ignore"):
            value = -weight @ gamma_gamma_log_likelihood(params, x, zbar)
            grad = -(weight @ gamma_gamma_gradient(params, x, zbar)) * params
        return value, grad

    starts = [(p0, q0, mean_value * (q0 - 1) / p0) for p0, q0 in ((1.0, 2.0), (5.0, 3.0), (0.5, 5.0))]
    best = _minimise_best(objective, starts)
    return dict(zip(GAMMA_GAMMA_PARAMS, np.exp(best.x).tolist(), strict=True)), -best.fun * n


def _minimise_best(
    objective: Callable[[Array], tuple[float, Array]], starts: list[tuple[float, ...]]
) -> OptimizeResult:
    """L-BFGS-B on log-parameters from each start; the result with the lowest objective.

    A non-finite objective (a trial point where the likelihood overflows) is reported as a huge
    value with a zero gradient, so the line search backs off instead of stopping.
    """

    def safe(theta: Array) -> tuple[float, Array]:
        value, grad = objective(theta)
        if not (np.isfinite(value) and np.all(np.isfinite(grad))):
            return 1e300, np.zeros_like(theta)
        return float(value), grad

    results = []
    for start in starts:
        theta0 = np.log(np.asarray(start, dtype=float))
        bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(theta0)
        # L-BFGS-B's tiny (3-4 parameter) linear algebra goes through BLAS; multithreaded BLAS only
        # adds synchronisation (measured: a CDNOW fit took 0.63 s instead of 0.03 s on a busy 2-core machine)
        with threadpool_limits(limits=1, user_api="blas"):
            result = minimize(
                safe,
                theta0,
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                options={"ftol": 1e-14, "gtol": 1e-9, "maxiter": 2000},
            )
        results.append(result)
    best = min(results, key=lambda res: res.fun)
    if not np.isfinite(best.fun) or best.fun >= 1e300:
        raise InputError("the BTYD likelihood could not be evaluated at any parameter value; check the summary")
    return best


# --- the estimator -----------------------------------------------------------------------------
@dataclass
class BtydModel:
    """BG/NBD + Gamma-Gamma on an RFM summary (columns ``frequency, recency, T, monetary``).

    Parameters
    ----------
    unit_days
        Length of the summary's time unit in days: 7.0 (weeks, as in the paper; the default) or 1.0
        (days). ``recency`` and ``T`` of the summary must be in this unit (as produced by
        :func:`rfm_summary` with the same ``unit_days``); horizons are given in days.
    pareto
        Also fit Pareto/NBD, and predict its expected purchases, P(alive) and CLV (``pnbd_*``
        columns; its spend per transaction is Gamma-Gamma's, as for BG/NBD).

    Attributes (after :meth:`fit`)
    ------------------------------
    bgnbd_params_, gamma_gamma_params_
        Fitted parameters; :attr:`params` merges them into one dict.
    bgnbd_log_likelihood_, gamma_gamma_log_likelihood_
        Total log-likelihood at the optimum.
    pareto_nbd_params_, pareto_nbd_log_likelihood_
        With ``pareto``: (r, alpha, s, beta) and the log-likelihood (kept apart from :attr:`params`,
        whose ``r`` and ``alpha`` are BG/NBD's).
    """

    unit_days: float = 7.0
    pareto: bool = False

    def fit(self, summary: pd.DataFrame) -> BtydModel:
        """Fit BG/NBD (and Pareto/NBD) on every customer and Gamma-Gamma on repeat customers with positive value."""
        if not (isinstance(self.unit_days, int | float) and self.unit_days > 0):
            raise InputError(f"unit_days must be a positive number of days, got {self.unit_days!r}")
        x, t_x, T, m = _validated(summary)
        self.bgnbd_params_, self.bgnbd_log_likelihood_ = fit_bgnbd(x, t_x, T)
        if self.pareto:
            self.pareto_nbd_params_, self.pareto_nbd_log_likelihood_ = fit_pareto_nbd(x, t_x, T)
        repeat = (x > 0) & (m > 0)
        if repeat.sum() < 2:
            raise InputError(
                f"the Gamma-Gamma spend model needs customers with {FREQUENCY} > 0 and {MONETARY} > 0; "
                f"the summary has {int(repeat.sum())}"
            )
        self.gamma_gamma_params_, self.gamma_gamma_log_likelihood_ = fit_gamma_gamma(x[repeat], m[repeat])
        if self.gamma_gamma_params_["q"] <= 1:
            raise InputError(
                f"the Gamma-Gamma fit gave q = {self.gamma_gamma_params_['q']:.3g} <= 1: the mean spend of a "
                f"customer without repeat purchases is infinite; column {MONETARY!r} is too heavy-tailed "
                "for this model (cap outliers or use another spend model)"
            )
        return self

    @property
    def params(self) -> dict[str, float]:
        """All fitted parameters: r, alpha, a, b (BG/NBD; alpha in the summary's unit) and p, q, gamma."""
        if not hasattr(self, "bgnbd_params_"):
            raise InputError("BtydModel is not fitted yet: call fit(summary) first")
        return {**self.bgnbd_params_, **self.gamma_gamma_params_}

    def predict(self, summary: pd.DataFrame, horizon_days: float) -> pd.DataFrame:
        """Per customer: expected purchases in the next ``horizon_days``, P(alive), spend and CLV.

        Returns a frame with the summary's index (and its ``customer_id`` column, when present) and
        the columns ``btyd_expected_purchases``, ``btyd_p_alive``, ``btyd_expected_spend`` (expected
        value per transaction) and ``btyd_clv`` = expected purchases x expected spend, undiscounted;
        with ``pareto``, then ``pnbd_expected_purchases``, ``pnbd_p_alive`` and ``pnbd_clv``.
        """
        params = self.params
        if not (np.isfinite(horizon_days) and horizon_days >= 0):
            raise InputError(f"horizon_days must be a non-negative number, got {horizon_days!r}")
        x, t_x, T, m = _validated(summary)
        bgnbd = [params[k] for k in BGNBD_PARAMS]
        gg = [params[k] for k in GAMMA_GAMMA_PARAMS]
        purchases = bgnbd_expected_purchases(bgnbd, horizon_days / self.unit_days, x, t_x, T)
        # a repeat customer with value 0 carries no spend information: population mean, like x = 0
        spend = gamma_gamma_expected_spend(gg, np.where(m > 0, x, 0.0), m)
        out = pd.DataFrame(
            {
                "btyd_expected_purchases": purchases,
                "btyd_p_alive": bgnbd_p_alive(bgnbd, x, t_x, T),
                "btyd_expected_spend": spend,
                "btyd_clv": purchases * spend,
            },
            index=summary.index,
        )
        if self.pareto:
            pnbd = [self.pareto_nbd_params_[k] for k in PARETO_NBD_PARAMS]
            t = horizon_days / self.unit_days
            out["pnbd_expected_purchases"] = pareto_nbd_expected_purchases(pnbd, t, x, t_x, T)
            out["pnbd_p_alive"] = pareto_nbd_p_alive(pnbd, x, t_x, T)
            out["pnbd_clv"] = out["pnbd_expected_purchases"] * spend
        if CUSTOMER_ID in summary.columns:
            out.insert(0, CUSTOMER_ID, summary[CUSTOMER_ID])
        return out


def _validated(summary: pd.DataFrame) -> tuple[Array, Array, Array, Array]:
    """The summary's four columns as float arrays, or an InputError naming what is wrong."""
    if not isinstance(summary, pd.DataFrame):
        raise InputError(f"the RFM summary must be a pandas DataFrame, got {type(summary).__name__}")
    missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
    if missing:
        raise InputError(
            f"the RFM summary lacks column(s) {missing}; expected {list(SUMMARY_COLUMNS)} (got {list(summary.columns)})"
        )
    if summary.empty:
        raise InputError("the RFM summary is empty: no customer has a purchase before the cutoff")
    arrays = []
    for col in SUMMARY_COLUMNS:
        values = pd.to_numeric(summary[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            raise InputError(
                f"column {col!r} of the RFM summary must be finite and >= 0; "
                f"{int(bad.sum())} row(s) are not (first: {summary[col].iloc[int(np.argmax(bad))]!r})"
            )
        arrays.append(values)
    x, t_x, T, m = arrays
    if np.any(x != np.round(x)):
        raise InputError(f"column {FREQUENCY!r} counts repeat transactions and must hold whole numbers")
    late = t_x > T * (1 + 1e-12)
    if late.any():
        raise InputError(
            f"column {RECENCY!r} must be <= column {AGE!r} (the last purchase happens before the cutoff); "
            f"{int(late.sum())} row(s) violate it"
        )
    return x, t_x, T, m


# --- the RFM summary from the store --------------------------------------------------------------
def rfm_summary_sql(cutoff: datetime | date, lookback_days: float | None = None, unit_days: float = 7.0) -> str:
    """DuckDB SQL for the BTYD summary at ``cutoff``: one row per customer with a purchase before it.

    Reads only ``events`` with ``event_type = 'purchase'`` and ``ts < cutoff`` (and, with
    ``lookback_days``, ``ts >= cutoff - lookback_days``). Purchases on the same calendar day (UTC,
    the store's time zone) are one transaction whose value is the sum of their amounts. Columns:
    ``customer_id``, ``frequency`` (transaction days after the first), ``recency`` (first to last
    transaction day), ``T`` (first transaction day, midnight, to the cutoff), ``monetary`` (mean value
    of the repeat transactions, 0 without any); times in units of ``unit_days`` days.
    """
    if not unit_days > 0:
        raise InputError(f"unit_days must be a positive number of days, got {unit_days!r}")
    at = normalize_cutoff(cutoff)
    where = f"event_type = 'purchase' AND ts < {ts_literal(at)}"
    if lookback_days is not None:
        if not lookback_days > 0:
            raise InputError(f"lookback_days must be positive or None, got {lookback_days!r}")
        where += f" AND ts >= {ts_literal(at - timedelta(days=lookback_days))}"
    unit_us = f"{float(unit_days) * 86_400_000_000:.1f}"
    return f"""
WITH tx AS (
    SELECT customer_id, CAST(ts AS DATE) AS day, COALESCE(SUM(amount), 0) AS value
    FROM {schema.EVENTS}
    WHERE {where}
    GROUP BY customer_id, CAST(ts AS DATE)
), per_customer AS (
    SELECT customer_id, MIN(day) AS first_day, MAX(day) AS last_day, COUNT(*) AS n_days,
           SUM(value) AS total, arg_min(value, day) AS first_value
    FROM tx
    GROUP BY customer_id
)
SELECT
    customer_id,
    CAST(n_days - 1 AS BIGINT) AS {FREQUENCY},
    CAST(date_diff('microsecond', CAST(first_day AS TIMESTAMP), CAST(last_day AS TIMESTAMP)) AS DOUBLE)
        / {unit_us} AS {RECENCY},
    CAST(date_diff('microsecond', CAST(first_day AS TIMESTAMP), {ts_literal(at)}) AS DOUBLE) / {unit_us} AS "{AGE}",
    CASE WHEN n_days > 1 THEN CAST((total - first_value) AS DOUBLE) / (n_days - 1) ELSE 0.0 END AS {MONETARY}
FROM per_customer
ORDER BY customer_id
"""


def rfm_summary(
    con: duckdb.DuckDBPyConnection,
    cutoff: datetime | date,
    lookback_days: float | None = None,
    unit_days: float = 7.0,
) -> pd.DataFrame:
    """Run :func:`rfm_summary_sql` on a store connection; one row per customer, sorted by id."""
    return con.execute(rfm_summary_sql(cutoff, lookback_days, unit_days)).df()
