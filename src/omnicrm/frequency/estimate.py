"""The value of each cadence per customer, learnt from the randomised cadence experiment.

A dose model over the cadence arms: for each outcome (``opens``, ``unsubscribed`` and, in ``direct``
mode, ``margin``) a model estimates each arm's effect against the current cadence per customer. The
default learner ``dose`` is one LightGBM model per outcome (the shared settings of
:func:`omnicrm.uplift.learners.default_model`) over the features and ``log2(cadence)``, constrained to
be monotone in the cadence (more e-mails never mean fewer opens or fewer unsubscribes), so the arms
borrow strength from each other and a customer's curve is smooth; ``S``, ``T``, ``X`` and ``DR``
are the :mod:`omnicrm.uplift.learners` meta-learners with the current cadence as control. The value of
cadence ``k`` for customer ``i``, against the current one::

    value(i, k) = margin_effect(i, k) - unsubscribe_cost(i) * unsubscribe_effect(i, k)

``margin_effect`` is, in ``direct`` mode, the learner's change of margin over the window; in
``mediated`` mode (default) ``beta * scale(i) * opens_effect(i, k)``, where ``beta`` is the margin one
more open brings, measured *between the randomised arms* (the slope of the arms' mean margin on
their mean opens: an instrumental-variable estimate, the arms being the instruments), and
``scale(i)`` the customer's order value over its mean (capped to [0.25, 4]). A quarter's margin is
far noisier than its opens, so the mediated value is learnt from the low-noise outcomes and priced
with the one number the noisy outcome can support.

``beta`` is measured over the weeks the arms differ (``beta_*`` outcomes) from margin or, with
``mediator: orders``, from orders times the margin of an order (:func:`mediator_outcomes`), with a
bootstrap interval (:func:`arm_slope_interval`).

``unsubscribe_cost(i)``: the lost future value of a contactable customer
(:class:`~omnicrm.frequency.config.UnsubscribeCost`): ``share * clv(i)`` (``basis: clv``; ``share``
may be measured here, :func:`contact_share`), or what the customer's own opens would bring over the
horizon at the current cadence (``basis: contact``, :meth:`CadenceModel.unsubscribe_cost`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from omnicrm.errors import InputError
from omnicrm.frequency.config import EstimatorSettings, UnsubscribeCost
from omnicrm.uplift.data import to_model_frame
from omnicrm.uplift.learners import UpliftLearner, default_model, make_learner

#: weeks in a four-week cadence period and in a year
_WEEKS_A_YEAR = 52.0


def arm_slope(arm: np.ndarray, opens: np.ndarray, margin: np.ndarray) -> float:
    """Margin per extra open between randomised arms: weighted least squares of arm means (>= 0).

    With randomised arms, the arm means differ only through the cadence; the slope of mean margin on
    mean opens across arms (weighted by arm size) is the two-stage least squares estimate with the arm
    dummies as instruments. A negative slope (noise) is floored at 0: opens do not cost margin.
    """
    _, code = np.unique(np.asarray(arm), return_inverse=True)
    return float(_arm_slopes(code[None, :], np.asarray(opens, float)[None, :], np.asarray(margin, float)[None, :])[0])


def arm_slope_interval(
    arm: np.ndarray, opens: np.ndarray, margin: np.ndarray, n_boot: int = 400, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of :func:`arm_slope` over a bootstrap of members (same floor at 0).

    Said beside the estimate because a quarter's experiment pins the margin of an open down only
    loosely, and every value scales with it: on the default world 1.36-3.55 around 2.43 (orders over
    the experiment's weeks), 0-4.5 from margins over the whole window. The regression adjustment and
    the margin of an order are held fixed, so the interval is a little narrow.
    """
    _, code = np.unique(np.asarray(arm), return_inverse=True)
    idx = np.random.default_rng(seed).integers(0, code.size, size=(n_boot, code.size))
    slopes = _arm_slopes(code[idx], np.asarray(opens, float)[idx], np.asarray(margin, float)[idx])
    low, high = np.percentile(slopes, [2.5, 97.5])
    return float(low), float(high)


def _arm_slopes(code: np.ndarray, opens: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """:func:`arm_slope` of every row of ``(samples, members)`` arrays (arm codes 0..k-1), floored at 0."""
    rows, k = code.shape[0], int(code.max()) + 1
    offset = (np.arange(rows)[:, None] * k + code).ravel()
    n = np.bincount(offset, minlength=rows * k).reshape(rows, k).astype(float)
    o_sum = np.bincount(offset, weights=opens.ravel(), minlength=rows * k).reshape(rows, k)
    m_sum = np.bincount(offset, weights=margin.ravel(), minlength=rows * k).reshape(rows, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        o, m = o_sum / n, m_sum / n  # an arm a resample left empty has no mean (and no weight)
        ob = np.nansum(n * o, axis=1, keepdims=True) / n.sum(axis=1, keepdims=True)
        mb = np.nansum(n * m, axis=1, keepdims=True) / n.sum(axis=1, keepdims=True)
        var = np.nansum(n * (o - ob) ** 2, axis=1)
        slope = np.where(var > 0, np.nansum(n * (o - ob) * (m - mb), axis=1) / var, 0.0)
    return np.maximum(slope, 0.0)


def mediator_outcomes(frame: pd.DataFrame, mediator: str) -> tuple[np.ndarray, np.ndarray, float]:
    """``(opens, outcome, unit)`` between which the margin of an extra open is measured.

    The ``beta_*`` columns (the weeks the arms differ, :func:`omnicrm.frequency.data.outcomes`) when
    the frame has them, else the whole window's. ``outcome`` is margin (``unit`` 1) or orders (``unit``
    the margin of an order over the same weeks, so that the slope times ``unit`` is margin per open).
    """
    early = all(f"beta_{c}" in frame.columns for c in ("opens", "orders", "margin"))
    prefix = "beta_" if early else ""
    opens = frame[f"{prefix}opens"].to_numpy(float)
    margin = frame[f"{prefix}margin"].to_numpy(float)
    if mediator == "margin":
        return opens, margin, 1.0
    orders = frame[f"{prefix}orders"].to_numpy(float)
    total = float(orders.sum())
    if total <= 0:
        raise InputError("frequency: estimator.mediator 'orders' needs orders in the experiment; it has none")
    return opens, orders, float(margin.sum()) / total


def adjusted_margin(X: pd.DataFrame, margin: np.ndarray, settings: EstimatorSettings, seed: int) -> np.ndarray:
    """Cross-fitted prediction of each member's margin from their features alone (the arm left out).

    Subtracting it before comparing arms (regression adjustment, as CUPED does with the pre-period)
    removes the part of a quarter's margin that the customer's history predicts; the arms are
    randomised, so the adjustment is independent of the arm and the slope stays unbiased, with a
    much smaller variance. Two folds, so no member's own margin is in its prediction.
    """
    fold = np.random.default_rng(seed).permutation(len(margin)) % 2
    out = np.zeros(len(margin))
    for f in (0, 1):
        model = default_model("regressor", seed, **settings.model).fit(X[fold != f], margin[fold != f])
        out[fold == f] = model.predict(X[fold == f])
    return out


def clv(frame: pd.DataFrame, cost: UnsubscribeCost) -> np.ndarray:
    """Each customer's CLV: ``margin_rate * column * horizon_years`` (0 where missing or negative)."""
    if cost.column not in frame.columns:
        raise InputError(f"frequency: unsubscribe_cost.column '{cost.column}' is not a feature column")
    x = pd.to_numeric(frame[cost.column], errors="coerce").to_numpy(float)
    return np.where(np.isfinite(x) & (x > 0), cost.margin_rate * x * cost.horizon_years, 0.0)


def unsubscribe_cost(frame: pd.DataFrame, cost: UnsubscribeCost, share: float) -> np.ndarray:
    """What an unsubscribe costs per customer: ``share * clv`` (``fallback`` where the CLV is 0)."""
    value = share * clv(frame, cost)
    return np.where(value > 0, value, cost.fallback)


def contact_share(
    beta: float, opens_current: np.ndarray, window_days: int, frame: pd.DataFrame, cost: UnsubscribeCost
) -> float:
    """The share of CLV that rests on contact: e-mail-driven margin a year over CLV a year (in [0, 1]).

    ``beta * mean(opens in the current arm) * (365 / window_days)`` is the margin the channel brings a
    customer a year at the current cadence; the mean CLV (per ``horizon_years``) is the margin a year.
    """
    year_clv = float(np.mean(clv(frame, cost))) / cost.horizon_years
    if year_clv <= 0:
        return 0.0
    per_year = beta * float(np.mean(opens_current)) * 365.0 / window_days
    return float(np.clip(per_year / year_clv, 0.0, 1.0))


def order_scale(frame: pd.DataFrame, column: str | None, reference: float | None = None) -> tuple[np.ndarray, float]:
    """The customer's order value over the reference (its mean here unless given), in [0.25, 4]; 1 if missing."""
    if column is None:
        return np.ones(len(frame)), 1.0
    if column not in frame.columns:
        raise InputError(f"frequency: estimator.scale_column '{column}' is not a feature column")
    x = pd.to_numeric(frame[column], errors="coerce").to_numpy(float)
    ok = np.isfinite(x) & (x > 0)
    ref = float(np.mean(x[ok])) if reference is None and ok.any() else (reference or 1.0)
    return np.where(ok, np.clip(x / ref, 0.25, 4.0), 1.0), ref


#: name of the cadence column the dose model adds to the features
DOSE = "__log2_cadence"


class DoseLearner:
    """One LightGBM model of an outcome over features and ``log2(cadence)``, monotone in the cadence.

    Same contract as the uplift learners (``fit(X, arm, y)``, ``predict_effect(X)`` against the control
    arm, ``actions_``), so :class:`CadenceModel` treats both alike.

    Parameters
    ----------
    control
        The current cadence (effects are against it).
    direction
        +1: the outcome rises with the cadence (opens, unsubscribes); 0: unconstrained (margin).
    params
        LightGBM settings over :func:`omnicrm.uplift.learners.default_model`'s.
    random_state
        Seed.
    """

    def __init__(self, control: int, direction: int, params: dict[str, Any], random_state: int = 0) -> None:
        self.control = control
        self.direction = direction
        self.params = params
        self.random_state = random_state

    def _with_dose(self, X: pd.DataFrame, cadence: np.ndarray | float) -> pd.DataFrame:
        out = X.copy()
        out[DOSE] = np.log2(np.broadcast_to(np.asarray(cadence, dtype=float), (len(X),)))
        return out

    def fit(self, X: pd.DataFrame, arm: np.ndarray, y: np.ndarray) -> DoseLearner:
        """Fit on features, arms (cadences) and the outcome."""
        arm = np.asarray(arm)
        y = np.asarray(y, dtype=float)
        self.binary_ = bool(np.isin(y, (0.0, 1.0)).all()) and len(np.unique(y)) == 2
        self.actions_ = sorted({int(a) for a in arm.tolist() if a != self.control})
        Xd = self._with_dose(X.reset_index(drop=True), arm)
        constraints = [0] * (Xd.shape[1] - 1) + [self.direction]
        kind = "classifier" if self.binary_ else "regressor"
        self.model_ = default_model(kind, self.random_state, monotone_constraints=constraints, **self.params)
        self.model_.fit(Xd, y)
        return self

    def mean(self, X: pd.DataFrame, cadence: float) -> np.ndarray:
        """Predicted outcome of every row at ``cadence``."""
        Xd = self._with_dose(X.reset_index(drop=True), cadence)
        return self.model_.predict_proba(Xd)[:, 1] if self.binary_ else self.model_.predict(Xd)

    def predict_effect(self, X: pd.DataFrame) -> np.ndarray:
        """``(rows, actions)``: predicted outcome at each non-control cadence minus at the control's."""
        base = self.mean(X, self.control)
        return np.column_stack([self.mean(X, a) - base for a in self.actions_])


#: outcomes that rise with the cadence (the dose model's monotone constraint)
_DIRECTION = {"opens": 1, "unsubscribed": 1, "margin": 0}


def _learner(settings: EstimatorSettings, current: int, y: np.ndarray, seed: int, outcome: str = "opens") -> Any:
    params = {**settings.model, **settings.outcome_models.get(outcome, {})}
    if settings.learner == "dose":
        return DoseLearner(current, _DIRECTION[outcome], params, seed)
    binary = bool(np.isin(y, (0.0, 1.0)).all())
    base = default_model("classifier" if binary else "regressor", seed, **params)
    eff = default_model("regressor", seed, **params)
    return make_learner(
        settings.learner,
        control=current,
        outcome="binary" if binary else "continuous",
        base_model=base,
        effect_model=eff,
        random_state=seed,
    )


@dataclass
class CadenceModel:
    """Fitted per-outcome effect learners over the cadence arms and the pricing of their value.

    Attributes
    ----------
    arms
        Cadences, sorted; ``current`` among them.
    learners
        Outcome -> fitted learner (effects of the non-current arms against the current one).
    beta, beta_interval
        Margin per extra open between arms, and its 95% bootstrap interval over members.
    scale_reference
        The mean order value the scale divides by (``mediated``).
    share
        The share of CLV an unsubscribe loses.
    """

    arms: list[int]
    current: int
    features: list[str]
    categorical: list[str]
    settings: EstimatorSettings
    cost: UnsubscribeCost
    learners: dict[str, UpliftLearner | DoseLearner] = field(default_factory=dict)
    beta: float = float("nan")
    beta_interval: tuple[float, float] = (float("nan"), float("nan"))
    scale_reference: float = 1.0
    share: float = 0.0
    arm_means: pd.DataFrame | None = None
    window_days: int = 0
    opens_level: Any = None

    def effects(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Outcome -> ``(rows, arms)`` predicted change against the current arm (its column is 0)."""
        X = to_model_frame(frame, self.features, self.categorical)
        out = {}
        for outcome, learner in self.learners.items():
            eff = learner.predict_effect(X)
            full = np.zeros((len(frame), len(self.arms)))
            for j, a in enumerate(learner.actions_):
                full[:, self.arms.index(int(a))] = eff[:, j]
            out[outcome] = full
        return out

    def values(self, frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(rows, arms)`` value of each cadence against the current one, and the outcome effects behind it."""
        eff = self.effects(frame)
        if self.settings.mode == "mediated":
            scale, _ = order_scale(frame, self.settings.scale_column, self.scale_reference)
            margin = self.beta * scale[:, None] * eff["opens"]
        else:
            margin = eff["margin"]
        return margin - self.unsubscribe_cost(frame)[:, None] * eff["unsubscribed"], eff

    def unsubscribe_cost(self, frame: pd.DataFrame) -> np.ndarray:
        """What an unsubscribe costs each customer (:class:`~omnicrm.frequency.config.UnsubscribeCost`)."""
        if self.cost.basis == "clv":
            return unsubscribe_cost(frame, self.cost, self.share)
        X = to_model_frame(frame, self.features, self.categorical)
        opens = np.maximum(self.opens_level.predict(X), 0.0) if self.opens_level is not None else np.zeros(len(frame))
        scale, _ = order_scale(frame, self.settings.scale_column, self.scale_reference)
        value = self.beta * scale * opens * (365.0 / self.window_days) * self.cost.horizon_years
        return np.where(value > 0, value, self.cost.fallback)


def fit_cadence_model(
    frame: pd.DataFrame,
    features: list[str],
    categorical: list[str],
    arms: list[int],
    current: int,
    window_days: int,
    settings: EstimatorSettings,
    cost: UnsubscribeCost,
    seed: int | None = None,
) -> CadenceModel:
    """Fit the dose model on experiment rows (``arm`` and the outcomes ``opens``, ``unsubscribed``, ``margin``).

    Parameters
    ----------
    frame
        One row per member: ``arm``, outcomes, feature columns.
    features, categorical
        Model inputs.
    arms, current
        The cadences and the current one (the learners' control).
    window_days
        Length of the outcome window (to turn opens into opens a year for the estimated share).
    settings, cost
        Estimator and unsubscribe pricing.
    seed
        Seed of the learners (``settings.seed`` when ``None``).

    Returns
    -------
    CadenceModel
    """
    seed = settings.seed if seed is None else seed
    arm = frame["arm"].to_numpy(int)
    present = sorted(set(arm.tolist()))
    if present != sorted(arms):
        raise InputError(f"frequency: the experiment rows hold arms {present}, the config {sorted(arms)}")
    X = to_model_frame(frame, features, categorical)
    model = CadenceModel(sorted(arms), current, features, categorical, settings, cost)
    outcomes = ["opens", "unsubscribed"] + (["margin"] if settings.mode == "direct" else [])
    for k, outcome in enumerate(outcomes):
        y = frame[outcome].to_numpy(float)
        model.learners[outcome] = _learner(settings, current, y, seed + k, outcome).fit(X, arm, y)
    b_opens, outcome, unit = mediator_outcomes(frame, settings.mediator)
    adjusted = outcome - adjusted_margin(X, outcome, settings, seed)
    model.beta = arm_slope(arm, b_opens, adjusted) * unit
    low, high = arm_slope_interval(arm, b_opens, adjusted, seed=seed)
    model.beta_interval = (low * unit, high * unit)
    opens = frame["opens"].to_numpy(float)
    _, model.scale_reference = order_scale(frame, settings.scale_column)
    model.window_days = window_days
    if cost.basis == "contact":
        model.opens_level = _opens_level(model.learners["opens"], X, arm, opens, current, settings, seed)
    if cost.basis == "contact":  # priced per customer; no share of a CLV column is used
        model.share = float("nan")
    elif cost.share == "estimated":
        model.share = contact_share(model.beta, opens[arm == current], window_days, frame, cost)
    else:
        model.share = float(cost.share)
    model.arm_means = (
        frame.groupby("arm")[["opens", "unsubscribed", "margin", "orders"]].mean().reset_index().astype(float)
    )
    return model


class _AtCadence:
    """A dose learner's prediction at one cadence, as a ``predict(X)`` model."""

    def __init__(self, learner: DoseLearner, cadence: int) -> None:
        self.learner, self.cadence = learner, cadence

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The learner's prediction of every row at the cadence."""
        return self.learner.mean(X, self.cadence)


def _opens_level(
    learner: Any,
    X: pd.DataFrame,
    arm: np.ndarray,
    opens: np.ndarray,
    current: int,
    settings: EstimatorSettings,
    seed: int,
) -> Any:
    """A model of each customer's opens over the window at the current cadence.

    The dose model's own prediction, or a regression on the current arm's members (the meta-learners
    predict effects, not levels).
    """
    if isinstance(learner, DoseLearner):
        return _AtCadence(learner, current)
    at = arm == current
    params = {**settings.model, **settings.outcome_models.get("opens", {})}
    return default_model("regressor", seed, **params).fit(X[at], opens[at])


def best_cadence(
    values: np.ndarray, arms: list[int], allowed: np.ndarray, current: int | None = None, min_gain: float = 0.0
) -> np.ndarray:
    """Per row, the arm of highest value among the ``allowed`` ones (``(rows, arms)`` bool); 0 when none is.

    With ``current``, a customer stays on it (when allowed) unless another arm beats it by more than
    ``min_gain``: a tie or a gain within the estimate's noise is no reason to change.
    """
    v = np.where(allowed, values, -np.inf)
    if current is not None and current in arms:
        j = arms.index(current)
        v = v.copy()
        v[:, j] = np.where(allowed[:, j], v[:, j] + min_gain + 1e-12, v[:, j])
    pick = np.argmax(v, axis=1)
    best = np.asarray(arms)[pick]
    return np.where(allowed.any(axis=1), best, 0).astype(int)


def any_params(settings: EstimatorSettings) -> dict[str, Any]:
    """The estimator's settings as flat MLflow params."""
    return {
        "estimator.learner": settings.learner,
        "estimator.mode": settings.mode,
        "estimator.scale_column": settings.scale_column or "",
        "estimator.folds": settings.folds,
    }
