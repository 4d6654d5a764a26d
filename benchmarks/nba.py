"""Benchmark of next-best-action allocation: omnicrm's ``allocate`` against sort-and-take, same candidates.

A seeded synthetic base of N customers (``--sizes``) × 3 actions × 3 channels of candidates, valued as
:mod:`omnicrm.nba.value` does (effect × the customer's unit value − contact cost − offer cost, the
discount's share of the order paid only on conversion); candidates of non-positive expected value are
dropped as the pipeline drops them, so about half of the 9 candidates per customer reach the allocator.
Limits: one action per customer (so at most one per channel), a total budget and a capacity on every
channel, all set to bind (their figures are fractions of the number of customers, see :func:`limits`).

Implementations, each rep of each in a **fresh subprocess** (so its time has no warm caches and its
peak memory is its own), reps interleaved (rep 1 of every size and method, then rep 2, ...; the order of
the methods rotates from rep to rep):

* ``allocate``: :func:`omnicrm.nba.allocate.allocate` (the Lagrangian method at these sizes), with its
  objective, its upper bound and its gap to the bound;
* ``sort-and-take``: sort every candidate by expected value (descending) and take each one whose
  customer has no action yet, whose channel has capacity left and whose cost fits in what is left of
  the budget -- the exact result of that sequential rule, computed with vectorised numpy in rounds
  (each round accepts the longest run of customers' first remaining candidates that fits, then drops
  what can no longer fit; a handful of rounds);
* ``value-per-cost``: the same rule, candidates sorted by expected value / cost.

Every allocation is checked in its worker (budget, capacities, one per customer, positive values;
the objective recounted from the chosen rows); a violation stops the benchmark. In the first rep the
vectorised sort-and-take is also checked against the plain sequential loop (same rows; the loop's
time is printed for information). At sizes up to ``--lp-max`` the LP relaxation is solved once with
HiGHS (``scipy.optimize.linprog``, written here independently of omnicrm) as a reference optimum.

Usage::

    python benchmarks/nba.py                                  # 50k and 500k customers, 5 reps (~4 min loaded)
    python benchmarks/nba.py --sizes 2000 --reps 1            # quick check

Times: wall clock of the call, from the candidate frame to the chosen rows (factorising the ids
included), median over reps; the ratio column is the median of the per-rep ratios to sort-and-take
of the same size and rep. Peak RSS: the worker's high-water mark (Linux ``VmHWM``, reset to the
current size after the candidates are built where the kernel allows it, so it is the allocation's
peak with the candidates in memory), median over reps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from measure import peak_rss_mb

ACTIONS = ("discount_10pct", "free_shipping", "new_arrivals")
CHANNELS = ("email", "sms", "push")
#: The synthetic catalogue's figures (configs/nba/synthetic.yaml): contact cost and reach per channel,
#: fixed offer cost and share of the order value per action.
CONTACT_COST = np.array([0.01, 0.05, 0.01])
REACH = np.array([1.0, 0.8, 0.9])
FIXED_COST = np.array([0.0, 0.25, 0.0])
ORDER_SHARE = np.array([0.10, 0.0, 0.0])
#: Effect on the two-week purchase probability per action: mean and spread across customers.
EFFECT_MEAN = np.array([0.07, 0.05, 0.03])
EFFECT_SD = np.array([0.05, 0.035, 0.03])
BASE_RATE = 0.21
#: Limits as fractions of the number of customers: the budget (currency per customer) and the
#: capacity of each channel (sends per customer).
BUDGET_PER_CUSTOMER = 0.035
CAPACITY_SHARE = {"email": 0.22, "sms": 0.04, "push": 0.08}
METHODS = ("allocate", "sort-and-take", "value-per-cost")


def candidates(n_customers: int, seed: int) -> pd.DataFrame:
    """The positive-value candidates ``customer_id, action, channel, cost, expected_value`` (seeded).

    Per customer an average order value (lognormal around 30; the margin of an order is 30% of it),
    a responsiveness shared by the three actions and an engagement per channel (mean 1); per
    (customer, action) an effect on the purchase probability that may be negative.
    """
    rng = np.random.default_rng(seed)
    n = n_customers
    aov = rng.lognormal(np.log(30.0), 0.6, n)
    responsive = rng.normal(0.0, 1.0, n)
    tau = EFFECT_MEAN + EFFECT_SD * (0.6 * responsive[:, None] + 0.8 * rng.normal(size=(n, len(ACTIONS))))
    engage = rng.gamma(3.0, 1 / 3.0, size=(n, len(CHANNELS)))
    effect = tau[:, :, None] * (REACH * engage)[:, None, :]  # customer × action × channel
    value = effect * (0.3 * aov)[:, None, None]
    paid = np.clip(BASE_RATE + effect, 0.0, 1.0)
    cost = CONTACT_COST + FIXED_COST[:, None] + ORDER_SHARE[:, None] * aov[:, None, None] * paid
    expected = (value - cost).reshape(-1)
    keep = np.flatnonzero(expected > 0)  # the pipeline drops the rest: "no action" is better
    cust, rest = np.divmod(keep, len(ACTIONS) * len(CHANNELS))
    act, chan = np.divmod(rest, len(CHANNELS))
    ids = np.array([f"C{i:07d}" for i in range(n)], dtype=object)
    return pd.DataFrame(
        {
            "customer_id": pd.array(ids[cust], dtype="str"),
            "action": pd.Categorical.from_codes(act, ACTIONS).astype("str"),
            "channel": pd.Categorical.from_codes(chan, CHANNELS).astype("str"),
            "cost": cost.reshape(-1)[keep],
            "expected_value": expected[keep],
        }
    )


def limits(n_customers: int):  # noqa: ANN201 - omnicrm.nba.allocate.Limits
    """Budget and channel capacities for ``n_customers`` (one action per customer is the slots)."""
    from omnicrm.nba.allocate import Limits

    return Limits(
        budget=BUDGET_PER_CUSTOMER * n_customers,
        capacity={k: int(share * n_customers) for k, share in CAPACITY_SHARE.items()},
    )


# --- the baseline ---------------------------------------------------------------------------------------
def _order(v: np.ndarray, c: np.ndarray, key: str) -> np.ndarray:
    """Candidates by ``key``, descending (numpy's default sort: 2.7x faster than a stable one at 2.2M
    floats, and as deterministic; ties between continuous values are not a concern)."""
    return np.argsort(-(v if key == "value" else v / np.maximum(c, 1e-12)))


def _first_of_customer(cust: np.ndarray, n_cust: int) -> np.ndarray:
    """Whether each position is its customer's first in ``cust`` (in array order)."""
    first = np.full(n_cust, len(cust), np.int64)
    np.minimum.at(first, cust, np.arange(len(cust)))
    return first[cust] == np.arange(len(cust))


def sort_and_take(
    frame: pd.DataFrame, budget: float, capacity: dict[str, int], key: str = "value"
) -> tuple[np.ndarray, int]:
    """The sort-and-take list: ``(chosen mask, rounds)``.

    Candidates in order of ``key`` (``value``: expected value; ``value_per_cost``: expected value /
    cost), descending; each is taken when its customer has no action yet, its channel has capacity
    left and its cost fits in what is left of the budget. Computed in rounds, each on the candidates
    still alive: the customers' first alive candidates are taken in order up to the first one that
    breaks a limit (everything before it is then decided: taken, or its customer served); that one
    is rejected, then candidates of served customers, of full channels and costing more than what
    is left are dropped (none can be taken later: the budget and capacities only shrink).
    """
    v = frame["expected_value"].to_numpy(float)
    c = frame["cost"].to_numpy(float)
    cust, cust_names = pd.factorize(frame["customer_id"])
    chan, chan_names = pd.factorize(frame["channel"])
    left_cap = np.array([capacity.get(k, np.inf) for k in chan_names], float)
    alive = _order(v, c, key)
    served = np.zeros(len(cust_names), bool)
    chosen = np.zeros(len(v), bool)
    left = float(budget)
    tol = 1e-9 * max(1.0, abs(left))
    rounds = 0
    while len(alive):
        rounds += 1
        ca, ka = cust[alive], chan[alive]
        ok = ~served[ca] & (left_cap[ka] >= 1) & (c[alive] <= left + tol)
        alive, ca, ka = alive[ok], ca[ok], ka[ok]
        if not len(alive):
            break
        heads = np.flatnonzero(_first_of_customer(ca, len(cust_names)))
        hk = ka[heads]
        spent = np.cumsum(c[alive[heads]])
        used = np.zeros(len(heads))
        for k in np.flatnonzero(np.isfinite(left_cap)):
            mine = hk == k
            used[mine] = np.cumsum(mine)[mine]
        broken = np.flatnonzero((spent > left + tol) | (used > left_cap[hk]))
        stop = int(broken[0]) if len(broken) else len(heads)
        taken = alive[heads[:stop]]
        chosen[taken] = True
        served[cust[taken]] = True
        left -= float(c[taken].sum())
        left_cap -= np.bincount(chan[taken], minlength=len(left_cap))
        # candidates before the breaking head are decided; the breaking head itself is rejected
        alive = alive[heads[stop] + 1 :] if stop < len(heads) else alive[:0]
    return chosen, rounds


def sort_and_take_loop(frame: pd.DataFrame, budget: float, capacity: dict[str, int], key: str = "value") -> np.ndarray:
    """The same rule as a plain loop over the sorted candidates (the reference the rounds are checked against)."""
    v = frame["expected_value"].to_numpy(float)
    c = frame["cost"].to_numpy(float)
    cust, cust_names = pd.factorize(frame["customer_id"])
    chan, chan_names = pd.factorize(frame["channel"])
    left_cap = [capacity.get(k, np.inf) for k in chan_names]
    served = np.zeros(len(cust_names), bool)
    chosen = np.zeros(len(v), bool)
    left = float(budget)
    tol = 1e-9 * max(1.0, abs(left))
    for j in _order(v, c, key).tolist():
        if served[cust[j]] or left_cap[chan[j]] < 1 or c[j] > left + tol:
            continue
        chosen[j] = served[cust[j]] = True
        left_cap[chan[j]] -= 1
        left -= c[j]
    return chosen


def lp_optimum(frame: pd.DataFrame, budget: float, capacity: dict[str, int]) -> float:
    """The LP relaxation's optimum (HiGHS through ``scipy.optimize.linprog``), written here independently.

    Every feasible list is worth at most this, and so is any list omnicrm could find: a reference for
    how much of ``allocate``'s gap is its bound's and how much its list's.
    """
    import scipy.sparse as sp
    from scipy.optimize import linprog

    v = frame["expected_value"].to_numpy(float)
    cust, cust_names = pd.factorize(frame["customer_id"])
    cols = np.arange(len(v))
    per_customer = sp.csr_array((np.ones(len(v)), (cust, cols)), shape=(len(cust_names), len(v)))
    coupling = [frame["cost"].to_numpy(float)] + [(frame["channel"] == k).to_numpy(float) for k in capacity]
    a_ub = sp.vstack([per_customer, sp.csr_array(np.vstack(coupling))]).tocsr()
    b_ub = np.r_[np.ones(len(cust_names)), budget, list(capacity.values())]
    res = linprog(-v, A_ub=a_ub, b_ub=b_ub, bounds=(0, 1), method="highs")
    if res.status != 0:
        raise SystemExit(f"LP reference: {res.message}")
    return float(-res.fun)


# --- checks ---------------------------------------------------------------------------------------------
def violations(frame: pd.DataFrame, chosen: np.ndarray, budget: float, capacity: dict[str, int]) -> list[str]:
    """Every limit the chosen rows break, counted again from the frame (empty: feasible)."""
    out = []
    sent = frame[chosen]
    spent = float(sent["cost"].sum())
    if spent > budget * (1 + 1e-9) + 1e-9:
        out.append(f"budget: {spent:.6f} spent of {budget:.6f}")
    per_channel = sent["channel"].value_counts()
    out += [f"capacity {k}: {per_channel[k]} > {cap}" for k, cap in capacity.items() if per_channel.get(k, 0) > cap]
    per_customer = sent["customer_id"].value_counts()
    if len(per_customer) and per_customer.max() > 1:
        out.append(f"{int((per_customer > 1).sum())} customers with more than one action")
    if not (sent["expected_value"].to_numpy() > 0).all():
        out.append("a chosen row of non-positive expected value")
    return out


# --- workers --------------------------------------------------------------------------------------------
def _reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (``/proc/self/clear_refs``, Linux 4.0+); whether it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _worker(method: str, n_customers: int, seed: int, out: str, check_loop: bool) -> None:
    import gc

    from omnicrm.nba.allocate import allocate

    frame = candidates(n_customers, seed)
    lim = limits(n_customers)
    gc.collect()
    reset = _reset_peak()
    before_mb = peak_rss_mb()
    result: dict = {"method": method, "customers": n_customers, "candidates": len(frame), "reset": reset}
    start = time.perf_counter()
    if method == "lp":
        result |= {"lp": lp_optimum(frame, lim.budget, lim.capacity), "seconds": time.perf_counter() - start}
        Path(out).write_text(json.dumps(result))
        return
    if method == "allocate":
        alloc = allocate(frame, np.ones(len(frame), np.int64), lim)
        seconds = time.perf_counter() - start
        chosen = alloc.chosen
        recount = float(frame["expected_value"].to_numpy()[chosen].sum())
        if abs(recount - alloc.objective) > 1e-6 * max(1.0, recount) or alloc.bound < recount - 1e-6 * recount:
            raise SystemExit(
                f"allocate at {n_customers:,}: objective {alloc.objective} / bound {alloc.bound} "
                f"against {recount} recounted from the chosen rows"
            )
        result |= {"bound": alloc.bound, "gap": alloc.gap, "solver": alloc.method, "tight": alloc.tight}
    else:
        key = "value" if method == "sort-and-take" else "value_per_cost"
        chosen, rounds = sort_and_take(frame, lim.budget, lim.capacity, key)
        seconds = time.perf_counter() - start
        result["rounds"] = rounds
    peak_mb = peak_rss_mb()
    broken = violations(frame, chosen, lim.budget, lim.capacity)
    if broken:
        raise SystemExit(f"{method} at {n_customers:,} customers breaks its limits: {'; '.join(broken)}")
    if method != "allocate" and check_loop:
        key = "value" if method == "sort-and-take" else "value_per_cost"
        start = time.perf_counter()
        loop = sort_and_take_loop(frame, lim.budget, lim.capacity, key)
        result["loop_seconds"] = time.perf_counter() - start
        if not np.array_equal(loop, chosen):
            raise SystemExit(f"{method}: the vectorised rounds and the sequential loop chose different rows")
    sent = frame[chosen]
    result |= {
        "seconds": seconds,
        "peak_mb": peak_mb,
        "before_mb": before_mb,
        "objective": float(sent["expected_value"].sum()),
        "customers_sent": int(chosen.sum()),
        "spent": float(sent["cost"].sum()),
        "budget": lim.budget,
        "per_channel": {k: int(n) for k, n in sent["channel"].value_counts().items()},
        "capacity": lim.capacity,
    }
    Path(out).write_text(json.dumps(result))


def _run(method: str, n: int, seed: int, tmp: Path, check_loop: bool) -> dict:
    out = tmp / f"{method}-{n}.json"
    cmd = [sys.executable, __file__, "--worker", method, "--sizes", str(n), "--seed", str(seed), "--out", str(out)]
    if check_loop:
        cmd.append("--check-loop")
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


# --- the table ------------------------------------------------------------------------------------------
def _sends(r: dict) -> str:
    """Sends per channel, ``*`` on a channel at its capacity."""
    return " · ".join(
        f"{r['per_channel'].get(k, 0):,}" + ("*" if r["per_channel"].get(k, 0) >= cap else "")
        for k, cap in r["capacity"].items()
    )


def table(results: list[dict]) -> str:
    """The markdown table: per size and method, medians over reps (ratios: medians of per-rep ratios)."""
    lines = [
        "| customers | candidates | method | wall time (min–max) | vs sort-and-take | peak RSS (candidates alone) "
        "| objective | bound | gap to bound | customers sent | budget used | sends " + " · ".join(CHANNELS) + " |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sorted({r["customers"] for r in results}):
        at = [r for r in results if r["customers"] == n]
        bound = statistics.median(r["bound"] for r in at if r["method"] == "allocate")
        base = {r["rep"]: r["seconds"] for r in at if r["method"] == "sort-and-take"}
        for m in METHODS:
            rs = [r for r in at if r["method"] == m]
            if not rs:
                continue
            times = [r["seconds"] for r in rs]
            secs = statistics.median(times)
            ratio = statistics.median(r["seconds"] / base[r["rep"]] for r in rs) if base else float("nan")
            objective = statistics.median(r["objective"] for r in rs)
            last = rs[-1]
            lines.append(
                f"| {n:,} | {last['candidates']:,} | {m} | {secs:.2f} s ({min(times):.2f}–{max(times):.2f}) | "
                f"{ratio:.2f}× | "
                f"{statistics.median(r['peak_mb'] for r in rs):.0f} MB "
                f"({statistics.median(r['before_mb'] for r in rs):.0f} MB) | {objective:,.0f} | "
                f"{bound:,.0f} | {(bound - objective) / bound:.3%} | {last['customers_sent']:,} | "
                f"{last['spent'] / last['budget']:.1%} | {_sends(last)} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 500_000], help="numbers of customers")
    parser.add_argument("--reps", type=int, default=5, help="fresh-process runs of every size and method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--lp-max",
        type=int,
        default=50_000,
        help="solve the LP relaxation with HiGHS (once, for reference) at sizes up to this many customers",
    )
    parser.add_argument("--no-value-per-cost", action="store_true", help="leave out the value-per-cost variant")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--check-loop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.sizes[0], args.seed, args.out, args.check_loop)
        return

    methods = [m for m in METHODS if not (args.no_value_per_cost and m == "value-per-cost")]
    results = []
    start, load = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="omnicrm-bench-nba-") as tmpdir:
        for rep in range(args.reps):
            for n in args.sizes:
                shift = rep % len(methods)  # rotate the order, so no method always runs first
                for m in methods[shift:] + methods[:shift]:
                    r = _run(m, n, args.seed, Path(tmpdir), check_loop=rep == 0)
                    r["rep"] = rep
                    results.append(r)
                    extra = f", gap {r['gap']:.3%}" if m == "allocate" else f", {r['rounds']} rounds"
                    print(
                        f"  rep {rep + 1} {n:>9,} {m:<15} {r['seconds']:6.2f} s  peak {r['peak_mb']:5.0f} MB  "
                        f"objective {r['objective']:,.0f}{extra}",
                        flush=True,
                    )
        lps = {}
        for n in [n for n in args.sizes if n <= args.lp_max]:
            lps[n] = _run("lp", n, args.seed, Path(tmpdir), check_loop=False)
            print(f"  LP relaxation {n:>9,} {lps[n]['seconds']:6.2f} s  optimum {lps[n]['lp']:,.2f}", flush=True)
    if not all(r["reset"] for r in results):
        print("note: VmHWM could not be reset: peak RSS includes building the candidates")
    bounds = {(r["customers"], round(r["bound"], 6)) for r in results if r["method"] == "allocate"}
    if len(bounds) != len(args.sizes):
        print(f"note: the bound differed between reps: {sorted(bounds)}")
    print()
    print(
        f"{args.reps} reps per size and method, interleaved, each in a fresh process; seed {args.seed}; "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; Python "
        f"{platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}, "
        f"scipy {__import__('scipy').__version__}; {time.perf_counter() - start:.0f} s in all"
    )
    print(
        f"limits: budget {BUDGET_PER_CUSTOMER} per customer, capacity "
        + ", ".join(f"{k} {s:.0%}" for k, s in CAPACITY_SHARE.items())
        + " of the customers, one action per customer"
    )
    print()
    print(table(results))
    print()
    caps = {n: " / ".join(f"{v:,}" for v in limits(n).capacity.values()) for n in args.sizes}
    print(f"sends per channel: `*` at capacity ({', '.join(f'{v} at {n:,}' for n, v in caps.items())})")
    for n in args.sizes:
        alloc = [r for r in results if r["method"] == "allocate" and r["customers"] == n]
        tight = sorted({t for r in alloc for t in r["tight"]})
        print(
            f"allocate at {n:,}: solver {', '.join(sorted({r['solver'] for r in alloc}))}; "
            f"binding limits it reports: {', '.join(tight) or 'none'}"
        )
    for n, lp in lps.items():
        alloc = [r for r in results if r["method"] == "allocate" and r["customers"] == n]
        bound = statistics.median(r["bound"] for r in alloc)
        objective = statistics.median(r["objective"] for r in alloc)
        print(
            f"LP relaxation at {n:,} customers (HiGHS, {lp['seconds']:.1f} s): optimum {lp['lp']:,.2f}; "
            f"allocate's bound is {(bound - lp['lp']) / lp['lp']:.4%} above it, "
            f"its list {(lp['lp'] - objective) / lp['lp']:.4%} below it"
        )
    for r in results:
        if "loop_seconds" in r:
            print(
                f"{r['method']} at {r['customers']:,}: {r['rounds']} rounds, {r['seconds']:.2f} s; the plain loop over "
                f"the sorted candidates chose the same rows in {r['loop_seconds']:.2f} s"
            )


if __name__ == "__main__":
    main()
