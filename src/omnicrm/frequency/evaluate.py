"""Judge learned cadences on the experiment: cross-fitted, off-policy with intervals, and on truth.

The members are split into folds by customer; the dose model is fitted on the other folds and values
each held-out member's cadences from their features at the experiment's start. Policies, each a
cadence per member:

* ``learned``: the held-out estimate's best cadence (never above the hard maximum);
* ``static_<k>``: everyone gets ``k`` (the best single static cap is the best of these);
* ``current``: everyone keeps the current cadence.

**Off-policy** (:mod:`omnicrm.nba.offpolicy`): each member's logged arm was drawn with a known
probability; the reward is the observed ``margin - unsubscribe_cost * unsubscribed`` over the
window, minus a cross-fitted prediction of the margin from the member's features alone (regression
adjustment: the same for every arm, so it leaves every policy's value against ``current`` unbiased
and removes most of the variance a quarter's margin has between customers). IPW and doubly-robust
values against ``current``, with 95% customer-bootstrap intervals.

**Truth** (synthetic worlds): the generator's true value of every cadence for every member
(``truth/cadence.parquet``, mapped to customers through the identity links) gives each policy's
true mean value, and the true best cadence gives the true class (against the current cadence) for
the confusion table of the classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from omnicrm.errors import InputError
from omnicrm.frequency.config import EstimatorSettings, UnsubscribeCost
from omnicrm.frequency.estimate import adjusted_margin, best_cadence, fit_cadence_model
from omnicrm.frequency.recommend import CLASSES, allowed_arms, classify
from omnicrm.nba.offpolicy import Logged, estimate
from omnicrm.uplift.data import to_model_frame


@dataclass
class CrossFit:
    """Held-out values of every member.

    Attributes
    ----------
    values
        ``(rows, arms)`` estimated value of each cadence against the current one (held out).
    reward
        Observed reward ``margin - cost * unsubscribed``, less the feature-only margin prediction.
    cost
        Each member's unsubscribe cost (the fold model's share times their CLV).
    shares, betas
        Per fold: the estimated contact share and margin per open.
    """

    values: np.ndarray
    reward: np.ndarray
    cost: np.ndarray
    shares: list[float]
    betas: list[float]


def folds_of(customers: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold per row, by customer, seeded."""
    uniq, codes = np.unique(customers, return_inverse=True)
    perm = np.random.default_rng(seed).permutation(uniq.size)
    return (perm % k)[codes]


def cross_fit(
    frame: pd.DataFrame,
    features: list[str],
    categorical: list[str],
    arms: list[int],
    current: int,
    window_days: int,
    settings: EstimatorSettings,
    cost: UnsubscribeCost,
) -> CrossFit:
    """Held-out values of every member (each fold's model never saw the member)."""
    fold = folds_of(frame["customer_id"].to_numpy(), settings.folds, settings.seed)
    values = np.zeros((len(frame), len(arms)))
    reward = np.zeros(len(frame))
    costs = np.zeros(len(frame))
    shares, betas = [], []
    margin = frame["margin"].to_numpy(float)
    adjust = adjusted_margin(to_model_frame(frame, features, categorical), margin, settings, settings.seed + 1)
    for f in range(settings.folds):
        train, test = frame[fold != f], frame[fold == f]
        model = fit_cadence_model(
            train, features, categorical, arms, current, window_days, settings, cost, seed=settings.seed + 10 * f
        )
        v, _ = model.values(test)
        values[fold == f] = v
        c = model.unsubscribe_cost(test)
        costs[fold == f] = c
        reward[fold == f] = margin[fold == f] - adjust[fold == f] - c * test["unsubscribed"].to_numpy(float)
        shares.append(model.share)
        betas.append(model.beta)
    return CrossFit(values, reward, costs, shares, betas)


def policies(
    values: np.ndarray, arms: list[int], current: int, maximum: int, min_gain: float = 0.0
) -> dict[str, np.ndarray]:
    """Cadence per member of every policy judged (see the module docstring)."""
    n = values.shape[0]
    out = {"learned": best_cadence(values, arms, allowed_arms(arms, maximum, n), current, min_gain)}
    for a in arms:
        if a <= maximum:
            out[f"static_{a}"] = np.full(n, a)
    out["current"] = np.full(n, current)
    return out


def off_policy(
    arm: np.ndarray,
    reward: np.ndarray,
    values: np.ndarray,
    customers: np.ndarray,
    arms: list[int],
    chosen: dict[str, np.ndarray],
    n_boot: int,
    seed: int,
) -> pd.DataFrame:
    """IPW and DR value per member of each policy against ``current``, with 95% bootstrap intervals.

    The DR reward model of arm ``k`` is the mean reward of the current arm plus the held-out value of
    ``k`` against it. Propensities are the arms' shares (randomised with equal chances).
    """
    col = {a: j for j, a in enumerate(arms)}
    code = np.asarray([col[a] for a in arm], dtype=int)
    shares = np.bincount(code, minlength=len(arms)) / code.size
    cur = col[int(np.asarray(chosen["current"])[0])]
    base = float(reward[code == cur].mean()) if (code == cur).any() else 0.0
    logged = Logged(code, shares[code], reward, base + values, customers)
    coded = {name: np.asarray([col[a] for a in c], dtype=int) for name, c in chosen.items()}
    est = estimate(logged, coded, baseline="current", n_boot=n_boot, seed=seed)
    return est.values


def align_truth(truth: pd.DataFrame, pairs: pd.DataFrame, customers: pd.Series, arms: list[int]) -> pd.DataFrame:
    """True value of each cadence per customer (mean over the people behind them), NaN where unknown.

    Parameters
    ----------
    truth
        ``person_id`` and ``value_<arm>`` per arm (``truth/cadence.parquet``).
    pairs
        ``person_id, customer_id`` (:func:`omnicrm.uplift.truth.person_customers`).
    customers
        The customers wanted, in order.
    arms
        The cadences.
    """
    cols = [f"value_{a}" for a in arms]
    missing = [c for c in ["person_id", *cols] if c not in truth.columns]
    if missing:
        raise InputError(f"cadence truth: missing column(s) {missing}; it has {list(truth.columns)}")
    per = truth.merge(pairs, on="person_id").groupby("customer_id", as_index=False)[cols].mean()
    return pd.DataFrame({"customer_id": customers.to_numpy()}).merge(per, on="customer_id", how="left")


def true_values(truth_values: np.ndarray, arms: list[int], chosen: dict[str, np.ndarray]) -> pd.DataFrame:
    """Each policy's true mean value per member (over members with truth) and its gain over ``current``."""
    ok = np.isfinite(truth_values).all(axis=1)
    col = {a: j for j, a in enumerate(arms)}
    rows = np.flatnonzero(ok)
    out = []
    for name, c in chosen.items():
        j = np.asarray([col[a] for a in np.asarray(c)[ok]], dtype=int)
        out.append({"policy": name, "true_value": float(truth_values[rows, j].mean()) if rows.size else np.nan})
    frame = pd.DataFrame(out)
    frame["true_gain_vs_current"] = frame["true_value"] - float(
        frame.loc[frame["policy"] == "current", "true_value"].iloc[0]
    )
    frame.attrs["members_with_truth"] = int(ok.sum())
    frame.attrs["oracle_gain_vs_current"] = (
        float((truth_values[ok].max(axis=1) - truth_values[ok][:, col[int(chosen["current"][0])]]).mean())
        if ok.any()
        else np.nan
    )
    return frame


def true_best(truth_values: np.ndarray, arms: list[int], current: int, min_gain: float = 0.0) -> np.ndarray:
    """Each member's truly best cadence; with ``min_gain``, the current one unless another truly gains more.

    ``min_gain`` = 0 is the strict truth (the arg-max of the true values). The learned policy moves a
    member only for an estimated gain above ``min_gain``; the truth judged by the same rule says which
    members a move would truly pay for (the *decision* classes), and leaves on target those whose best
    cadence beats the current one by less than the margin a decision ignores.
    """
    values = np.where(np.isfinite(truth_values), truth_values, 0.0)
    return best_cadence(values, arms, np.ones(values.shape, dtype=bool), current, min_gain)


def confusion(
    truth_values: np.ndarray, learned: np.ndarray, arms: list[int], current: int, min_gain: float = 0.0
) -> pd.DataFrame:
    """Rows: true class (best true cadence against ``current``, see :func:`true_best`); columns: learned; counts."""
    ok = np.isfinite(truth_values).all(axis=1)
    best = true_best(truth_values, arms, current, min_gain)
    t = pd.Categorical(classify(best[ok], np.full(ok.sum(), current)), categories=CLASSES)
    p = pd.Categorical(classify(np.asarray(learned)[ok], np.full(ok.sum(), current)), categories=CLASSES)
    table = pd.crosstab(pd.Series(t, name="true"), pd.Series(p, name="learned"), dropna=False)
    return table.reindex(index=list(CLASSES), columns=list(CLASSES), fill_value=0)


def class_shares(confusions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Share of members in each class: learned, and per truth (each confusion's row sums), with agreement.

    ``confusions``: name of the truth -> its confusion table (rows true, columns learned, counts).
    """
    first = next(iter(confusions.values()))
    total = float(first.to_numpy().sum()) or 1.0
    out = pd.DataFrame({"class": list(CLASSES), "learned": first.sum(axis=0).to_numpy() / total})
    for name, table in confusions.items():
        out[name] = table.sum(axis=1).to_numpy() / total
    agreement = {"class": "agreement", "learned": np.nan}
    for name, table in confusions.items():
        agreement[name] = float(np.trace(table.to_numpy())) / total
    return pd.concat([out, pd.DataFrame([agreement])], ignore_index=True)


def value_by_class(
    values: np.ndarray, truth_values: np.ndarray | None, learned: np.ndarray, arms: list[int], current: int
) -> pd.DataFrame:
    """Mean value of each cadence against the current one per learned class: estimated and (if known) true."""
    klass = classify(np.asarray(learned), np.full(len(learned), current))
    j = arms.index(current)
    rows = []
    for c in CLASSES:
        m = klass == c
        for k, a in enumerate(arms):
            row = {"class": c, "cadence": a, "members": int(m.sum()), "estimated": float(values[m, k].mean())}
            if truth_values is not None:
                ok = m & np.isfinite(truth_values).all(axis=1)
                row["true"] = float((truth_values[ok, k] - truth_values[ok, j]).mean()) if ok.any() else np.nan
            rows.append(row if m.any() else {**row, "estimated": np.nan})
    return pd.DataFrame(rows)
