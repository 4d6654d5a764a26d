"""Judging a next-best-action catalogue before it ships: its policy against simpler ones, off-policy.

On randomised campaign history (one row per exposure, its features at send time, the outcome over
the following window), every row is a decision the catalogue could have made: which of its actions
allowed on the row's channel to send, or none. Five policies decide on the same rows, at the same
budget - the same share of eligible rows contacted, per campaign, one action per row (a campaign
reaches a customer once, so contact caps per customer hold by construction):

``next-best action``
    The catalogue's own rule: the action of highest expected incremental value (effect × reach ×
    value × lever − expected cost, the formula of :mod:`omnicrm.nba.value`), rows with the highest
    positive values first; a row whose best value is not positive is not contacted.
``propensity-ranked``
    What the suites send: the action of highest *response* × value (the modelled outcome of treated
    customers, not what the action changes), the highest scores first, no value floor.
``best single action``
    One action for everyone on a channel (the one with the highest mean expected value), sent to a
    random share of the rows.
``random``
    A random action to a random share.
``no action``
    Nothing: the reference every value is measured against.

The effect and outcome models are cross-fitted by customer: each row's estimates come from models
fitted on the other customers' rows, so no row is judged by a model that saw its outcome. Values are
in money per eligible row (the outcome times its unit value, minus the contact and offer costs
actually incurred), estimated by IPW and doubly-robust estimators (:mod:`omnicrm.nba.offpolicy`). On a
synthetic world the generator's true per-person effects give each policy's true value too, so the
estimators themselves are checked. Levers and other business weights rank actions but are not money:
they are left out of the judged value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from omnicrm.errors import InputError
from omnicrm.nba.catalogue import Catalogue
from omnicrm.nba.offpolicy import Logged, estimate

__all__ = [
    "NBA",
    "NO_ACTION",
    "POLICIES",
    "EvalRows",
    "Judgement",
    "cross_fit",
    "decide",
    "expected_values",
    "modelled_costs",
    "modelled_rewards",
    "observed_rewards",
    "judge",
    "prepare_rows",
    "true_values",
    "verdicts",
]

NBA = "next-best action"
PROPENSITY = "propensity-ranked"
SINGLE = "best single action"
RANDOM = "random"
NO_ACTION = "no action"
#: the policies compared, the catalogue's own first
POLICIES = (NBA, PROPENSITY, SINGLE, RANDOM, NO_ACTION)


@dataclass
class EvalRows:
    """Randomised rows in the terms of one catalogue.

    Attributes
    ----------
    arms
        Arm labels, the control first then every action of the history (sorted); codes index it.
    actions
        The catalogue's actions, each the name of a history arm (``arms[1:]``) it is judged on.
    arm
        Logged arm code of each row.
    propensity
        Share of the logged arm in the row's campaign (known by design).
    outcome
        Observed outcome.
    binary
        Whether the outcome is 0/1 (then the modelled outcome is the probability an offer is paid).
    channel, group, cluster
        Channel, campaign and customer of each row.
    allowed
        ``(n_rows, n_arms)``: the catalogue may send this arm on the row's channel and the row passes
        the arm's rules (column 0, no action, is always allowed).
    unit_value, order_value, base_rate
        What a unit of the outcome is worth, the order value an order-share offer pays on, and the
        conversion without an action (:func:`omnicrm.nba.value.unit_values`).
    reach, contact, fixed, share, lever
        ``(n_rows, n_arms)`` catalogue terms of each arm on the row's channel (0 for the control and
        for arms the catalogue lacks); ``lever`` includes the customer's long-term weight.
    """

    arms: list[str]
    actions: list[str]
    arm: np.ndarray
    propensity: np.ndarray
    outcome: np.ndarray
    binary: bool
    channel: np.ndarray
    group: np.ndarray
    cluster: np.ndarray
    allowed: np.ndarray
    unit_value: np.ndarray
    order_value: np.ndarray
    base_rate: np.ndarray
    reach: np.ndarray
    contact: np.ndarray
    fixed: np.ndarray
    share: np.ndarray
    lever: np.ndarray

    @property
    def eligible(self) -> np.ndarray:
        """Rows with at least one action the catalogue may send."""
        return self.allowed[:, 1:].any(axis=1)

    def subset(self, keep: np.ndarray) -> EvalRows:
        """The rows where ``keep`` is true."""
        out = {}
        for name, value in self.__dict__.items():
            out[name] = value[keep] if isinstance(value, np.ndarray) else value
        return EvalRows(**out)


def prepare_rows(
    arm_labels: np.ndarray,
    control: str,
    outcome: np.ndarray,
    channel: np.ndarray,
    group: np.ndarray,
    cluster: np.ndarray,
    passed: pd.DataFrame,
    units: pd.DataFrame,
    cat: Catalogue,
) -> EvalRows:
    """Rows in the catalogue's terms.

    Parameters
    ----------
    arm_labels
        Logged arm of each row (``control`` or an action name of the history); rules were applied by
        the caller (``passed``).
    control
        The control's label.
    outcome, channel, group, cluster
        Per row: outcome, channel, campaign, customer.
    passed
        ``row`` (position), ``action`` (a catalogue action): the candidates that passed the rules.
    units
        :func:`omnicrm.nba.value.unit_values` per row, in row order.
    cat
        The catalogue.
    """
    n = len(arm_labels)
    history = sorted({a for a in np.asarray(arm_labels, dtype=object).tolist() if a != control}, key=str)
    arms = [control, *history]
    source = {a: (spec.effect_action or a) for a, spec in cat.actions.items()}
    missing = {a: s for a, s in source.items() if s not in history}
    if missing:
        raise InputError(
            f"catalogue '{cat.name}': action(s) {sorted(missing)} have no randomised history to be judged on "
            f"(arms in the history: {history}); name the arm with 'effect_action'"
        )
    code = {a: j for j, a in enumerate(arms)}
    arm = pd.Series(arm_labels).map(code).to_numpy()
    group = np.asarray(group, dtype=object)
    # the arm's share in its campaign: the probability it was drawn with
    keys = pd.DataFrame({"g": group, "a": arm})
    propensity = keys.groupby(["g", "a"])["a"].transform("size") / keys.groupby("g")["a"].transform("size")
    y = np.asarray(outcome, dtype=float)
    channel = np.asarray(channel, dtype=object)
    k = len(arms)
    allowed = np.zeros((n, k), dtype=bool)
    allowed[:, 0] = True
    reach, contact, fixed, share, lever = (np.zeros((n, k)) for _ in range(5))
    chan_cost = pd.Series(channel).map({c: s.cost for c, s in cat.channels.items()}).fillna(0.0).to_numpy(float)
    chan_reach = pd.Series(channel).map({c: s.reach for c, s in cat.channels.items()}).fillna(0.0).to_numpy(float)
    long_term = units["long_term"].to_numpy(float) if "long_term" in units.columns else np.ones(n)
    for j in range(1, k):
        contact[:, j] = chan_cost  # a logged send cost the channel's contact even if the catalogue lacks the arm
    by_arm = {s: a for a, s in source.items()}
    rows_passed = passed.assign(arm=passed["action"].map(source).map(code))
    for j, a in enumerate(arms[1:], start=1):
        action = by_arm.get(a)
        if action is None:
            continue
        spec = cat.actions[action]
        on = np.isin(channel, spec.channels)
        ok = np.zeros(n, dtype=bool)
        ok[rows_passed.loc[rows_passed["arm"] == j, "row"].to_numpy(int)] = True
        allowed[:, j] = on & ok
        reach[:, j] = chan_reach
        fixed[:, j] = spec.offer.fixed
        share[:, j] = spec.offer.share
        # business weights rank actions: the action's lever times the customer's long-term weight
        lever[:, j] = spec.lever * long_term
    return EvalRows(
        arms=arms,
        actions=[source[a] for a in cat.actions],
        arm=arm.astype(int),
        propensity=propensity.to_numpy(float),
        outcome=y,
        binary=bool(np.isin(y, (0.0, 1.0)).all()),
        channel=channel,
        group=group,
        cluster=np.asarray(cluster, dtype=object),
        allowed=allowed,
        unit_value=units["unit_value"].to_numpy(float),
        order_value=units["order_value"].to_numpy(float),
        base_rate=units["base_rate"].to_numpy(float),
        reach=reach,
        contact=contact,
        fixed=fixed,
        share=share,
        lever=lever,
    )


def cross_fit(
    make_effect: Callable[[int], Any],
    make_outcome: Callable[[int], Any],
    X: pd.DataFrame,
    arm_labels: np.ndarray,
    arms: list[str],
    y: np.ndarray,
    folds: np.ndarray,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out effects and outcome means of every row, from models fitted on the other folds.

    Parameters
    ----------
    make_effect
        ``seed -> unfitted uplift learner`` (:func:`omnicrm.uplift.config.learner_factory`).
    make_outcome
        ``seed -> unfitted outcome model`` (a classifier for a 0/1 outcome, else a regressor).
    X, arm_labels, y
        Features, logged arm labels and outcomes.
    arms
        The arm labels, the control first (:attr:`EvalRows.arms`).
    folds
        Fold of each row (by customer: :func:`omnicrm.uplift.evaluate.unit_folds`).
    seed
        Base seed of the models.

    Returns
    -------
    tuple of numpy.ndarray
        ``effect`` ``(n, n_arms)`` (column 0 is 0: the control's effect) and ``mu`` ``(n, n_arms)``,
        the modelled outcome under each arm.
    """
    n = len(X)
    effect = np.zeros((n, len(arms)))
    mu = np.zeros((n, len(arms)))
    arm_labels = np.asarray(arm_labels, dtype=object)
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        learner = make_effect(seed * 1000 + int(k)).fit(X[train], arm_labels[train], y[train])
        if list(learner.actions_) != arms[1:]:
            raise InputError(f"fold {k} lacks an action (has {learner.actions_}, needs {arms[1:]}); use fewer folds")
        effect[test, 1:] = learner.predict_effect(X[test])
        for j, a in enumerate(arms):
            rows = train & (arm_labels == a)
            model = make_outcome(seed * 1000 + 100 * int(k) + j).fit(X[rows], y[rows])
            proba = getattr(model, "predict_proba", None)
            mu[test, j] = proba(X[test])[:, 1] if proba is not None else model.predict(X[test])
    return effect, mu


# --- values ------------------------------------------------------------------------------------------
def expected_values(rows: EvalRows, effect: np.ndarray) -> np.ndarray:
    """The catalogue's expected incremental value of each arm per row (the list's ranking; −inf where not allowed)."""
    eff = effect * rows.reach
    paid = np.clip(rows.base_rate[:, None] + eff, 0.0, 1.0)
    cost = rows.contact + rows.fixed + rows.share * rows.order_value[:, None] * paid
    ev = eff * rows.unit_value[:, None] * rows.lever - cost
    ev[:, 0] = 0.0
    return np.where(rows.allowed, ev, -np.inf)


def modelled_costs(rows: EvalRows, mu: np.ndarray) -> np.ndarray:
    """Expected cost of each arm per row; an order-share offer is paid with the modelled conversion.

    For a 0/1 outcome the conversion is the modelled outcome; for any other outcome (spend) it is the
    catalogue's ``base_rate``. The control costs nothing.
    """
    paid = np.clip(mu, 0.0, 1.0) if rows.binary else np.broadcast_to(rows.base_rate[:, None], mu.shape)
    cost = rows.contact + rows.fixed + rows.share * rows.order_value[:, None] * paid
    cost[:, 0] = 0.0
    return cost


def modelled_rewards(rows: EvalRows, mu: np.ndarray) -> np.ndarray:
    """Modelled money reward of each arm per row: outcome × unit value − expected cost (the DR model)."""
    return mu * rows.unit_value[:, None] - modelled_costs(rows, mu)


def observed_rewards(rows: EvalRows) -> np.ndarray:
    """Observed money reward of each row under its logged arm: outcome × unit value − the cost incurred."""
    i = np.arange(rows.arm.size)
    paid = (rows.outcome > 0).astype(float)
    cost = rows.contact[i, rows.arm] + rows.fixed[i, rows.arm] + rows.share[i, rows.arm] * rows.order_value * paid
    cost = np.where(rows.arm == 0, 0.0, cost)
    return rows.outcome * rows.unit_value - cost


def true_values(rows: EvalRows, change: np.ndarray, p_buy: np.ndarray) -> np.ndarray:
    """True incremental money value of each arm per row (column 0: 0), from the generator's truth.

    ``change`` and ``p_buy`` are ``(n, n_arms)`` with column 0 ignored: the true change of the outcome
    and the true probability the offer is paid under each action.
    """
    cost = rows.contact + rows.fixed + rows.share * rows.order_value[:, None] * p_buy
    value = change * rows.unit_value[:, None] - cost
    value[:, 0] = 0.0
    return value


# --- policies ------------------------------------------------------------------------------------------
def _within_group_rank(score: np.ndarray, group: np.ndarray) -> np.ndarray:
    """0-based rank of each row within its group, highest score first (ties by row order)."""
    codes = pd.factorize(pd.Series(group), sort=True)[0]
    order = np.lexsort((np.arange(score.size), -score, codes))
    starts = np.searchsorted(codes[order], np.arange(codes.max() + 1 if codes.size else 0))
    rank = np.empty(score.size, dtype=int)
    rank[order] = np.arange(score.size) - starts[codes[order]]
    return rank


def _take(score: np.ndarray, choice: np.ndarray, rows: EvalRows, budget: float, floor: bool) -> np.ndarray:
    """Send ``choice`` to the best-scored rows of each campaign, up to ``budget`` of its rows."""
    size = pd.Series(rows.group).map(pd.Series(rows.group).value_counts()).to_numpy(float)
    quota = np.floor(budget * size + 1e-9)
    valid = np.isfinite(score) & ((score > 0) if floor else True)
    rank = _within_group_rank(np.where(valid, score, -np.inf), rows.group)
    return np.where(valid & (rank < quota), choice, 0)


def decide(rows: EvalRows, effect: np.ndarray, mu: np.ndarray, budget: float, seed: int) -> dict[str, np.ndarray]:
    """The arm code each policy picks for each (eligible) row at ``budget``, a share of each campaign's rows."""
    n = rows.arm.size
    ev = expected_values(rows, effect)
    ev_act = ev[:, 1:]
    best = 1 + np.argmax(ev_act, axis=1)
    out = {NBA: _take(ev_act.max(axis=1), best, rows, budget, floor=True)}

    response = np.where(rows.allowed, mu * rows.unit_value[:, None] * rows.lever, -np.inf)[:, 1:]
    out[PROPENSITY] = _take(response.max(axis=1), 1 + np.argmax(response, axis=1), rows, budget, floor=False)

    rng = np.random.default_rng(seed)
    lottery = rng.random(n)
    single = np.zeros(n, dtype=int)
    known = np.where(np.isfinite(ev_act), ev_act, np.nan)
    for ch in pd.unique(rows.channel):
        on = rows.channel == ch
        counts = np.isfinite(known[on]).sum(axis=0)
        if counts.any():
            means = np.where(counts > 0, np.nansum(known[on], axis=0) / np.maximum(counts, 1), -np.inf)
            single[on] = 1 + int(np.argmax(means))
    single_ok = rows.allowed[np.arange(n), single] & (single > 0)
    out[SINGLE] = _take(np.where(single_ok, lottery, -np.inf), single, rows, budget, floor=False)

    pick = rng.random((n, ev_act.shape[1])) * rows.allowed[:, 1:]
    # the same lottery as the single action's: the two differ only in which action is sent (paired)
    anyone = np.where(rows.eligible, lottery, -np.inf)
    out[RANDOM] = _take(anyone, 1 + np.argmax(pick, axis=1), rows, budget, floor=False)
    out[NO_ACTION] = np.zeros(n, dtype=int)
    return out


@dataclass
class Judgement:
    """Every policy's value at every budget.

    Attributes
    ----------
    table
        One row per (budget, policy): ``budget``, ``policy``, ``contacted`` (share of rows), ``cost``
        (per row), ``true`` (true incremental value per row, NaN without truth), and for ``ipw`` and
        ``dr`` the estimate with its interval (``ipw``, ``ipw_lo``, ``ipw_hi``, ``dr``, ...).
    differences
        The next-best-action policy minus each other policy (DR and IPW, paired intervals, and the
        true difference), per budget.
    rows
        Eligible rows judged.
    customers
        Distinct customers among them.
    """

    table: pd.DataFrame
    differences: pd.DataFrame
    rows: int
    customers: int


def judge(
    rows: EvalRows,
    effect: np.ndarray,
    mu: np.ndarray,
    budgets: list[float],
    truth: np.ndarray | None = None,
    n_boot: int = 400,
    seed: int = 0,
    level: float = 0.95,
) -> Judgement:
    """Value of every policy at every budget, estimated off-policy (and true when ``truth`` is given).

    Parameters
    ----------
    rows
        Eligible rows (:meth:`EvalRows.subset` of :attr:`EvalRows.eligible`).
    effect, mu
        Cross-fitted effects and outcome means (:func:`cross_fit`) of these rows.
    budgets
        Shares of each campaign's rows a policy may contact.
    truth
        Optional ``(n, n_arms)`` true incremental value of each arm (:func:`true_values`).
    n_boot, seed, level
        Bootstrap settings (:func:`omnicrm.nba.offpolicy.estimate`); ``seed`` also draws the random
        policies.
    """
    if rows.arm.size == 0:
        raise InputError("nba-eval: no eligible rows: every row fails the catalogue's rules or channels")
    logged = Logged(rows.arm, rows.propensity, observed_rewards(rows), modelled_rewards(rows, mu), rows.cluster)
    i = np.arange(rows.arm.size)
    cost_of = modelled_costs(rows, mu)
    tables, diffs = [], []
    for budget in budgets:
        chosen = decide(rows, effect, mu, budget, seed)
        est = estimate(logged, chosen, NO_ACTION, reference=NBA, n_boot=n_boot, seed=seed, level=level)
        wide = est.values.pivot(index="policy", columns="estimator", values=["value", "lo", "hi"])
        for policy, arms in chosen.items():
            rec: dict[str, Any] = {
                "budget": budget,
                "policy": policy,
                "contacted": float((arms > 0).mean()),
                "cost": float(np.where(arms > 0, cost_of[i, arms], 0.0).mean()),
                "true": float(np.nanmean(truth[i, arms])) if truth is not None else np.nan,
            }
            for e in ("ipw", "dr"):
                rec[e] = float(wide.loc[policy, ("value", e)])
                rec[f"{e}_lo"] = float(wide.loc[policy, ("lo", e)])
                rec[f"{e}_hi"] = float(wide.loc[policy, ("hi", e)])
            tables.append(rec)
        d = est.differences.assign(budget=budget)
        if truth is not None:
            true_nba = np.nanmean(truth[i, chosen[NBA]])
            d["true"] = [true_nba - np.nanmean(truth[i, chosen[p]]) for p in d["policy"]]
        else:
            d["true"] = np.nan
        diffs.append(d)
    return Judgement(
        table=pd.DataFrame(tables),
        differences=pd.concat(diffs, ignore_index=True),
        rows=int(rows.arm.size),
        customers=int(pd.Series(rows.cluster).nunique()),
    )


def verdicts(judgement: Judgement, budget: float) -> list[str]:
    """Plain sentences at ``budget``: whether the next-best-action policy beats each simpler one (DR, paired)."""
    d = judgement.differences
    d = d[(d["estimator"] == "dr") & np.isclose(d["budget"], budget)]
    out = []
    for r in d.itertuples(index=False):
        interval = f"{r.value:+.4f} per row [{r.lo:+.4f}, {r.hi:+.4f}]"
        truth = "" if np.isnan(r.true) else f"; true difference {r.true:+.4f}"
        if r.lo > 0:
            out.append(f"next-best action beats {r.policy}: {interval}{truth}")
        elif r.hi < 0:
            out.append(f"next-best action is WORSE than {r.policy}: {interval}{truth}")
        else:
            out.append(f"next-best action does NOT clearly beat {r.policy}: {interval}{truth}")
    return out
