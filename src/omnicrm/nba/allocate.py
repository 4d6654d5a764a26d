"""Allocation of actions under constraints: maximise total expected incremental value.

Variables ``x[j]`` in {0, 1}, one per candidate (customer, action, channel) with a positive expected
value ``v[j]`` and cost ``c[j]``. Maximise ``sum v x`` subject to

* per customer: at most ``slots[i]`` actions (``allocation.per_customer``, fewer when a cap over all
  channels leaves fewer), at most one per channel and at most one per action;
* ``sum c x <= budget``;
* per channel ``k``: at most ``capacity[k]`` sends;
* per action ``a``: ``min_volume[a] <= sends <= max_volume[a]``.

Leaving a customer out ("no action") is always allowed, and only positive-value candidates reach
the allocator, so nothing of non-positive value is ever sent. Two solvers:

``exact``
    The mixed-integer programme, solved by HiGHS (``scipy.optimize.milp``, relative MIP gap 1e-4,
    a time limit), up to ``allocation.exact_limit`` candidates or whenever a customer may get more
    than one action. The LP relaxation is solved as well, so the reported gap is to the LP bound.
    Measured: HiGHS needs minutes, or finds no solution in 30 s, for 30k candidates with a budget,
    so larger one-action problems go to the Lagrangian method (also when HiGHS runs out of time).
``lagrangian``
    For larger problems with one action per customer: the coupling constraints (budget,
    capacities, volumes) are priced by multipliers found by projected subgradient steps (Polyak
    steps toward the best feasible value), each customer takes the candidate of highest priced
    value, and a greedy pass repairs the choice to a feasible one. The Lagrangian dual value is an
    upper bound on the LP optimum (every customer's own problem has an integral polytope), so the
    reported gap bounds the distance to the optimum.

``Allocation.gap`` is ``(bound - objective) / bound``: 0 for a proven optimum of the LP bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

from omnicrm.errors import InputError

__all__ = ["Allocation", "Limits", "allocate"]

_TOL = 1e-9


@dataclass(frozen=True)
class Limits:
    """The allocation's limits (``None``: unlimited)."""

    budget: float | None = None
    capacity: dict[str, int] = field(default_factory=dict)
    min_volume: dict[str, int] = field(default_factory=dict)
    max_volume: dict[str, int] = field(default_factory=dict)
    exact_limit: int = 5_000
    time_limit: float = 60.0


@dataclass
class Allocation:
    """The chosen candidates and how good the choice is.

    Attributes
    ----------
    chosen
        One boolean per input candidate.
    objective
        Total expected value of the chosen candidates.
    bound
        An upper bound on the optimum (the LP relaxation, or the Lagrangian dual value).
    gap
        ``(bound - objective) / bound`` (0 when ``bound`` is 0).
    method
        ``exact`` or ``lagrangian``.
    tight
        The coupling constraints that are binding in the solution: ``budget``, ``capacity:<channel>``,
        ``max_volume:<action>``, ``min_volume:<action>``.
    seconds
        Solve time.
    """

    chosen: np.ndarray
    objective: float
    bound: float
    gap: float
    method: str
    tight: list[str]
    seconds: float


def _codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    codes, uniques = pd.factorize(values, sort=False)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def _check(frame: pd.DataFrame, slots: np.ndarray) -> None:
    if len(slots) != len(frame):
        raise ValueError("slots: one value per candidate expected")
    if not (frame["expected_value"].to_numpy(float) > 0).all():
        raise ValueError("allocate: only candidates of positive expected value may be allocated")


def _tight(frame: pd.DataFrame, chosen: np.ndarray, limits: Limits) -> list[str]:
    out = []
    sent = frame[chosen]
    if limits.budget is not None and sent["cost"].sum() >= limits.budget * (1 - 1e-6) - 1e-9:
        out.append("budget")
    elif limits.budget is not None:
        # the budget binds when the cheapest candidate left out would not fit in what is left
        free = limits.budget - sent["cost"].sum()
        left = frame.loc[~chosen, "cost"]
        if len(left) and left.min() > free:
            out.append("budget")
    per_channel = sent["channel"].value_counts()
    out += [f"capacity:{k}" for k, cap in limits.capacity.items() if per_channel.get(k, 0) >= cap]
    per_action = sent["action"].value_counts()
    out += [f"max_volume:{a}" for a, m in limits.max_volume.items() if per_action.get(a, 0) >= m]
    out += [f"min_volume:{a}" for a, m in limits.min_volume.items() if m > 0 and per_action.get(a, 0) <= m]
    return out


def allocate(frame: pd.DataFrame, slots: np.ndarray, limits: Limits) -> Allocation:
    """Choose candidates (see the module docstring).

    Parameters
    ----------
    frame
        ``customer_id, action, channel, cost, expected_value`` per candidate (expected value > 0).
    slots
        Per candidate: the most actions its customer may get (the same for every row of a customer).
    limits
        Budget, capacities and volumes.

    Raises
    ------
    InputError
        The minimum volumes cannot be met with positive-value candidates within the other limits.
    """
    slots = np.asarray(slots, dtype=np.int64)
    _check(frame, slots)
    start = time.perf_counter()
    have = frame["action"].value_counts()
    short = {a: m for a, m in limits.min_volume.items() if have.get(a, 0) < m}
    if short:
        raise InputError(
            f"allocation: the minimum volumes {short} cannot be met: too few customers have a positive-value "
            "candidate for those actions after the rules and the contact policy"
        )
    if len(frame) == 0:
        return Allocation(np.zeros(0, bool), 0.0, 0.0, 0.0, "exact", [], 0.0)
    one_each = slots.max() <= 1
    chosen = None
    if len(frame) <= limits.exact_limit or not one_each:
        chosen, bound, method = _exact(frame, slots, limits, one_each), None, "exact"
    if chosen is None:  # large, or the exact solver ran out of time: the Lagrangian method with its bound
        chosen, bound = _lagrangian(frame, limits)
        method = "lagrangian"
    objective = float(frame["expected_value"].to_numpy(float)[chosen].sum())
    if bound is None:
        bound = _lp_bound(frame, slots, limits)
    bound = max(bound, objective)
    gap = 0.0 if bound <= 0 else (bound - objective) / bound
    return Allocation(chosen, objective, bound, gap, method, _tight(frame, chosen, limits), time.perf_counter() - start)


# --- exact: HiGHS ----------------------------------------------------------------------------------------
def _constraints(frame: pd.DataFrame, slots: np.ndarray, limits: Limits) -> list[LinearConstraint]:
    n = len(frame)
    cols = np.arange(n)
    ones = np.ones(n)
    cust, _ = _codes(frame["customer_id"])
    n_cust = int(cust.max()) + 1
    cust_slots = np.zeros(n_cust, np.int64)
    cust_slots[cust] = slots
    out = [LinearConstraint(sp.csr_array((ones, (cust, cols)), shape=(n_cust, n)), -np.inf, cust_slots)]
    for key in ("channel", "action"):
        pair, _ = _codes(frame["customer_id"].astype(str) + "\x1f" + frame[key].astype(str))
        counts = np.bincount(pair)
        if (counts > 1).any():
            out.append(LinearConstraint(sp.csr_array((ones, (pair, cols)), shape=(len(counts), n)), -np.inf, 1))
    rows, lo, hi = [], [], []
    if limits.budget is not None:
        rows.append(frame["cost"].to_numpy(float))
        lo.append(-np.inf)
        hi.append(limits.budget)
    for k, cap in limits.capacity.items():
        rows.append((frame["channel"] == k).to_numpy(float))
        lo.append(-np.inf)
        hi.append(cap)
    for a in sorted(set(limits.min_volume) | set(limits.max_volume)):
        rows.append((frame["action"] == a).to_numpy(float))
        lo.append(limits.min_volume.get(a, 0))
        hi.append(limits.max_volume.get(a, np.inf))
    if rows:
        out.append(LinearConstraint(sp.csr_array(np.vstack(rows)), lo, hi))
    return out


def _exact(frame: pd.DataFrame, slots: np.ndarray, limits: Limits, fallback: bool) -> np.ndarray | None:
    """HiGHS' solution; ``None`` when it found none in time and ``fallback`` (the Lagrangian) is possible."""
    v = frame["expected_value"].to_numpy(float)
    res = milp(
        -v,
        constraints=_constraints(frame, slots, limits),
        integrality=np.ones(len(v)),
        bounds=Bounds(0, 1),
        options={"mip_rel_gap": 1e-4, "time_limit": limits.time_limit},
    )
    if res.x is None and res.status == 1:  # the time limit, without a feasible solution
        if fallback:
            return None
        raise InputError(
            f"allocation: HiGHS found no solution in {limits.time_limit:.0f} s for {len(v):,} candidates with "
            "more than one action per customer; set allocation.per_customer to 1 (solved at any size) or "
            "allocate fewer customers"
        )
    if res.x is None:
        raise InputError(
            f"allocation: no feasible list ({res.message.strip()}); the minimum volumes "
            f"{limits.min_volume} cannot be met with positive-value candidates within the budget and capacities"
        )
    return res.x > 0.5


def _lp_bound(frame: pd.DataFrame, slots: np.ndarray, limits: Limits) -> float:
    v = frame["expected_value"].to_numpy(float)
    res = milp(-v, constraints=_constraints(frame, slots, limits), integrality=np.zeros(len(v)), bounds=Bounds(0, 1))
    return float(-res.fun) if res.x is not None else float("inf")


# --- lagrangian: one action per customer ------------------------------------------------------------------
def _segments(cust: np.ndarray) -> np.ndarray:
    """Start of each customer's run in ``cust`` (sorted)."""
    return np.flatnonzero(np.r_[True, cust[1:] != cust[:-1]])


def _lagrangian(frame: pd.DataFrame, limits: Limits, iterations: int = 30) -> tuple[np.ndarray, float]:
    codes = pd.factorize(frame["customer_id"], sort=False)[0]
    order = np.argsort(codes, kind="stable")
    v = frame["expected_value"].to_numpy(float)[order]
    c = frame["cost"].to_numpy(float)[order]
    cust = codes[order]
    chan, chan_names = _codes(frame["channel"].iloc[order])
    act, act_names = _codes(frame["action"].iloc[order])
    starts = _segments(cust)
    seg = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(v)]))
    cap = np.array([limits.capacity.get(k, np.inf) for k in chan_names], float)
    vmax = np.array([limits.max_volume.get(a, np.inf) for a in act_names], float)
    vmin = np.array([limits.min_volume.get(a, 0) for a in act_names], float)
    budget = np.inf if limits.budget is None else float(limits.budget)
    cap_f, vmax_f = np.where(np.isfinite(cap), cap, 0.0), np.where(np.isfinite(vmax), vmax, 0.0)

    combo = chan * len(act_names) + act

    def pick(lam: float, mu: np.ndarray, nu_hi: np.ndarray, nu_lo: np.ndarray) -> tuple[np.ndarray, float]:
        price = (mu[:, None] + nu_hi[None, :] - nu_lo[None, :]).reshape(-1)
        r = v - lam * c - price[combo]
        best = np.maximum.reduceat(r, starts)
        # one per customer with a positive priced value: the first of its best
        top = np.flatnonzero(r == best[seg])
        top = top[np.r_[True, seg[top][1:] != seg[top][:-1]]]
        keep = np.zeros(len(r), bool)
        keep[top[best[seg[top]] > 0]] = True
        # multipliers of absent limits stay 0 (their subgradient is 0): the finite stand-ins add nothing
        dual = float(np.clip(best, 0, None).sum())
        dual += (lam * budget if np.isfinite(budget) else 0.0) + float(mu @ cap_f) + float(nu_hi @ vmax_f)
        dual -= float(nu_lo @ vmin)
        return keep, dual

    lam, mu = 0.0, np.zeros(len(chan_names))
    nu_hi, nu_lo = np.zeros(len(act_names)), np.zeros(len(act_names))
    best_x, best_val, bound = None, -np.inf, np.inf
    for it in range(iterations):
        x, dual = pick(lam, mu, nu_hi, nu_lo)
        bound = min(bound, dual)
        if it % 10 == 0 or it == iterations - 1:
            feasible = _repair(x, v, c, chan, act, cap, vmax, vmin, budget, seg)
            if feasible is not None and v[feasible].sum() > best_val:
                best_x, best_val = feasible, float(v[feasible].sum())
        g_b = (c[x].sum() - budget) if np.isfinite(budget) else 0.0
        g_c = np.where(np.isfinite(cap), np.bincount(chan[x], minlength=len(cap)) - cap, 0.0)
        n_act = np.bincount(act[x], minlength=len(vmax)).astype(float)
        g_hi = np.where(np.isfinite(vmax), n_act - vmax, 0.0)
        g_lo = vmin - n_act
        norm = g_b**2 + (g_c**2).sum() + (g_hi**2).sum() + (g_lo**2).sum()
        if norm <= 0 or (best_val > -np.inf and bound - best_val <= 1e-4 * max(abs(bound), 1.0)):
            break
        target = best_val if best_val > -np.inf else 0.0
        step = max(bound - target, 1e-9 * max(abs(bound), 1.0)) / norm
        lam = max(0.0, lam + step * g_b)
        mu = np.maximum(0.0, mu + step * g_c)
        nu_hi = np.maximum(0.0, nu_hi + step * g_hi)
        nu_lo = np.maximum(0.0, nu_lo + step * g_lo)
    # coordinate bisection: each multiplier in turn set where its own subgradient changes sign, the
    # others held (the dual is convex in each); two sweeps tighten the bound and give better picks
    top = float(np.max(v)) + 1.0
    coords = [("lam", None, max(lam * 4, float(np.max(v / np.maximum(c, 1e-12)))))] if np.isfinite(budget) else []
    coords += [("mu", k, top) for k in np.flatnonzero(np.isfinite(cap))]
    coords += [("nu_hi", a, top) for a in np.flatnonzero(np.isfinite(vmax))]
    coords += [("nu_lo", a, top) for a in np.flatnonzero(vmin > 0)]

    def over(x: np.ndarray, name: str, k: int | None) -> bool:
        """Whether the constraint of this multiplier is violated by ``x`` (raise the multiplier)."""
        if name == "lam":
            return c[x].sum() > budget
        if name == "mu":
            return np.count_nonzero(chan[x] == k) > cap[k]
        if name == "nu_hi":
            return np.count_nonzero(act[x] == k) > vmax[k]
        return np.count_nonzero(act[x] == k) < vmin[k]

    for _ in range(2):
        for name, k, hi in coords:
            lo = 0.0
            for _ in range(14):
                mid = (lo + hi) / 2
                if name == "lam":
                    lam = mid
                else:
                    {"mu": mu, "nu_hi": nu_hi, "nu_lo": nu_lo}[name][k] = mid
                x, dual = pick(lam, mu, nu_hi, nu_lo)
                bound = min(bound, dual)
                lo, hi = (mid, hi) if over(x, name, k) else (lo, mid)
            if name == "lam":
                lam = hi
            else:
                {"mu": mu, "nu_hi": nu_hi, "nu_lo": nu_lo}[name][k] = hi
    x, dual = pick(lam, mu, nu_hi, nu_lo)
    bound = min(bound, dual)
    feasible = _repair(x, v, c, chan, act, cap, vmax, vmin, budget, seg)
    if feasible is not None and v[feasible].sum() > best_val:
        best_x, best_val = feasible, float(v[feasible].sum())
    if best_x is None:
        raise InputError(
            f"allocation: no feasible list found; the minimum volumes {limits.min_volume} cannot be met "
            "with positive-value candidates within the budget and capacities"
        )
    best_x = _fill(best_x, v, c, chan, act, cap, vmax, budget, seg)
    chosen = np.zeros(len(v), bool)
    chosen[order[best_x]] = True
    return chosen, bound


def _fill(
    keep: np.ndarray,
    v: np.ndarray,
    c: np.ndarray,
    chan: np.ndarray,
    act: np.ndarray,
    cap: np.ndarray,
    vmax: np.ndarray,
    budget: float,
    seg: np.ndarray,
) -> np.ndarray:
    """``keep`` plus, for customers left without an action, their best candidate (value per cost) that still fits.

    The repair drops a customer whose priced pick does not fit; a cheaper candidate of theirs may.
    Only adds candidates within every limit, so the result stays feasible and its value can only rise.
    """
    keep = keep.copy()
    served = np.zeros(int(seg.max()) + 1, bool)
    served[seg[keep]] = True
    pool = np.flatnonzero(~served[seg])
    if not len(pool):
        return keep
    pool = pool[np.argsort(-(v[pool] / np.maximum(c[pool], 1e-12)), kind="stable")]
    n_chan = np.bincount(chan[keep], minlength=len(cap)).astype(float)
    n_act = np.bincount(act[keep], minlength=len(vmax)).astype(float)
    left = budget - c[keep].sum()
    for _ in range(3):  # each round: one candidate per still-unserved customer, within what is left
        pool = pool[~served[seg[pool]]]
        _, first = np.unique(seg[pool], return_index=True)
        pick = pool[np.sort(first)]
        ok = np.ones(len(pick), bool)
        for codes, limit, used in ((chan, cap, n_chan), (act, vmax, n_act)):
            for k in np.flatnonzero(np.isfinite(limit)):
                mine = ok & (codes[pick] == k)
                ok[mine & (np.cumsum(mine) + used[k] > limit[k])] = False
        pick = pick[ok]
        pick = pick[np.cumsum(c[pick]) <= left + _TOL]
        if not len(pick):
            break
        keep[pick] = True
        served[seg[pick]] = True
        left -= c[pick].sum()
        n_chan += np.bincount(chan[pick], minlength=len(cap))
        n_act += np.bincount(act[pick], minlength=len(vmax))
    return keep


def _repair(
    x: np.ndarray,
    v: np.ndarray,
    c: np.ndarray,
    chan: np.ndarray,
    act: np.ndarray,
    cap: np.ndarray,
    vmax: np.ndarray,
    vmin: np.ndarray,
    budget: float,
    seg: np.ndarray,
) -> np.ndarray | None:
    """A feasible choice close to ``x`` (at most one pick per customer), or ``None``.

    The picks are ranked by value per cost, each action's best picks up to its minimum volume first.
    Each channel keeps its first ``capacity`` picks, then each action its first ``max_volume`` of
    those, then the budget is filled in that order (twice: what the first pass skipped may still fit).
    Every filter counts picks a later filter drops, so the result is feasible (if conservative).
    Actions still below their minimum volume are filled with their best candidates of customers
    without an action.
    """
    picks = np.flatnonzero(x)
    picks = picks[np.argsort(-(v[picks] / np.maximum(c[picks], 1e-12)), kind="stable")]
    if (vmin > 0).any():
        rank = np.zeros(len(picks), np.int64)
        for a in np.flatnonzero(vmin > 0):
            mine = act[picks] == a
            rank[mine] = np.cumsum(mine)[mine]
        reserved = (rank > 0) & (rank <= vmin[act[picks]])
        picks = np.r_[picks[reserved], picks[~reserved]]
    ok = np.ones(len(picks), bool)
    for codes, limit in ((chan, cap), (act, vmax)):
        for k in np.flatnonzero(np.isfinite(limit)):
            mine = ok & (codes[picks] == k)
            ok[mine & (np.cumsum(mine) > limit[k])] = False
    keep = np.zeros(len(v), bool)
    left = budget
    for _ in range(2):
        cand = picks[ok & ~keep[picks]]
        fits = np.cumsum(c[cand]) <= left + _TOL
        keep[cand[fits]] = True
        left -= c[cand[fits]].sum()
    n_act = np.bincount(act[keep], minlength=len(vmax)).astype(float)
    short = np.flatnonzero(n_act < vmin)
    if len(short):
        n_chan = np.bincount(chan[keep], minlength=len(cap)).astype(float)
        served = np.zeros(seg.max() + 1, bool)
        served[seg[keep]] = True
        for a in short:
            pool = np.flatnonzero((act == a) & ~served[seg])
            for j in pool[np.argsort(-v[pool], kind="stable")]:
                if n_act[a] >= vmin[a]:
                    break
                if served[seg[j]] or c[j] > left + _TOL or n_chan[chan[j]] + 1 > cap[chan[j]]:
                    continue
                keep[j] = served[seg[j]] = True
                left -= c[j]
                n_chan[chan[j]] += 1
                n_act[a] += 1
        if (n_act < vmin).any():
            return None
    return keep
