"""The NBA allocator: exact against brute force, the Lagrangian's bound honest, limits respected."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from omnicrm.errors import InputError
from omnicrm.nba.allocate import Limits, allocate


def random_candidates(
    rng: np.random.Generator, customers: int, actions=("a", "b"), channels=("e", "s")
) -> pd.DataFrame:
    rows = [(f"c{i}", a, k) for i in range(customers) for a in actions for k in channels if rng.random() < 0.7]
    frame = pd.DataFrame(rows, columns=["customer_id", "action", "channel"])
    frame["cost"] = rng.uniform(0.1, 2.0, len(frame)).round(2)
    frame["expected_value"] = rng.uniform(0.05, 3.0, len(frame)).round(2)
    return frame


def feasible(frame: pd.DataFrame, x: np.ndarray, slots: np.ndarray, limits: Limits) -> bool:
    sent = frame[x]
    limit = pd.Series(slots, index=frame["customer_id"].to_numpy()).groupby(level=0).first()
    per_customer = sent.groupby("customer_id").size()
    if (per_customer > limit.reindex(per_customer.index)).any():
        return False
    if sent.duplicated(["customer_id", "channel"]).any() or sent.duplicated(["customer_id", "action"]).any():
        return False
    if limits.budget is not None and sent["cost"].sum() > limits.budget + 1e-9:
        return False
    if any((sent["channel"] == k).sum() > cap for k, cap in limits.capacity.items()):
        return False
    if any((sent["action"] == a).sum() > m for a, m in limits.max_volume.items()):
        return False
    return not any((sent["action"] == a).sum() < m for a, m in limits.min_volume.items())


def brute_force(frame: pd.DataFrame, slots: np.ndarray, limits: Limits) -> float | None:
    best = None
    v = frame["expected_value"].to_numpy()
    for bits in itertools.product([False, True], repeat=len(frame)):
        x = np.array(bits, bool)
        if feasible(frame, x, slots, limits):
            total = float(v[x].sum())
            best = total if best is None or total > best else best
    return best


@pytest.mark.parametrize("seed", range(12))
def test_the_exact_allocator_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    frame = random_candidates(rng, customers=3)[:12].reset_index(drop=True)
    k = int(rng.integers(1, 3))
    slots = np.full(len(frame), k)
    limits = Limits(
        budget=float(rng.uniform(0.5, 5.0)),
        capacity={"e": int(rng.integers(1, 3))},
        min_volume={"a": int(rng.integers(0, 2))},
        max_volume={"b": int(rng.integers(0, 3))},
    )
    best = brute_force(frame, slots, limits)
    if best is None:
        with pytest.raises(InputError, match="minimum volumes"):
            allocate(frame, slots, limits)
        return
    got = allocate(frame, slots, limits)
    assert feasible(frame, got.chosen, slots, limits)
    assert got.objective == pytest.approx(best, abs=1e-6)
    assert got.bound >= best - 1e-6 and 0 <= got.gap <= 1


@pytest.mark.parametrize("seed", range(6))
def test_the_lagrangian_is_feasible_and_its_bound_is_above_the_optimum(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    frame = random_candidates(rng, customers=400, actions=("a", "b", "c"), channels=("e", "s", "p"))
    slots = np.ones(len(frame), int)
    limits = Limits(
        budget=float(frame["cost"].sum() / 20),
        capacity={"s": 60},
        min_volume={"c": 20},
        max_volume={"a": 80},
        exact_limit=0,
    )
    lag = allocate(frame, slots, limits)
    assert lag.method == "lagrangian"
    assert feasible(frame, lag.chosen, slots, limits)
    exact = allocate(frame, slots, Limits(**{**limits.__dict__, "exact_limit": 10**9}))
    assert exact.method == "exact"
    assert lag.objective <= exact.objective + 1e-6
    assert lag.bound >= exact.objective - 1e-6  # the dual value bounds the optimum from above
    assert lag.gap == pytest.approx((lag.bound - lag.objective) / lag.bound)
    assert lag.gap < 0.01  # measured: under 1% on these problems


def test_nothing_of_non_positive_value_reaches_the_allocator() -> None:
    frame = pd.DataFrame(
        {"customer_id": ["x"], "action": ["a"], "channel": ["e"], "cost": [1.0], "expected_value": [0.0]}
    )
    with pytest.raises(ValueError, match="positive expected value"):
        allocate(frame, np.ones(1, int), Limits())


def test_reasons_name_the_binding_constraint() -> None:
    from omnicrm.nba.lists import nba_rows, not_chosen

    frame = pd.DataFrame(
        {
            "customer_id": ["x", "x", "x", "y"],
            "action": ["big", "small", "tiny", "big"],
            "channel": ["e", "s", "p", "e"],
            "cost": [5.0, 1.0, 1.0, 5.0],
            "effect": [0.3, 0.1, 0.01, 0.3],
            "value": [8.0, 3.0, 1.5, 8.0],
            "expected_value": [3.0, 2.0, 0.5, 3.0],
            "product_id": None,
        }
    )
    got = allocate(frame, np.ones(4, int), Limits(budget=6.0))
    assert got.chosen.tolist() == [False, True, False, True] and got.tight == ["budget"]
    rows = nba_rows(frame, got, "margin", pd.Timestamp("2024-01-01")).set_index("customer_id")
    assert rows.loc["x", "reasons"] == (
        "effect +0.1000 on margin, value 3.0000, cost 1.0000, expected 2.0000; "
        "big on e (expected 3.0000) not sent: bound by budget"
    )
    assert rows.loc["y", "reasons"] == "effect +0.3000 on margin, value 8.0000, cost 5.0000, expected 3.0000"
    why = not_chosen(frame, got).set_index("action")["reason"]
    assert why["big"] == "not sent: bound by budget"
    assert why["tiny"] == "not sent: the customer got an action of higher value (per-customer limit)"
