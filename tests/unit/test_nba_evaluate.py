"""The policies nba-eval compares: budgets per campaign, no non-positive send, and the ranking they earn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omnicrm.errors import InputError
from omnicrm.nba.catalogue import Catalogue
from omnicrm.nba.evaluate import (
    NBA,
    NO_ACTION,
    POLICIES,
    PROPENSITY,
    RANDOM,
    SINGLE,
    decide,
    expected_values,
    judge,
    prepare_rows,
    true_values,
    verdicts,
)

ACTIONS = ["discount", "shipping"]


def _catalogue(**over: object) -> Catalogue:
    cfg = {
        "name": "t",
        "channels": {"email": {"cost": 0.05}, "sms": {"cost": 0.2, "reach": 0.8}},
        "actions": {
            "discount": {"channels": ["email", "sms"], "offer": {"share": 0.1}},
            "shipping": {"channels": ["email"], "offer": {"fixed": 0.3}},
        },
        "value": {"fallback": 20.0, "order_value_fallback": 40.0, "base_rate": 0.2},
    }
    cfg.update(over)
    return Catalogue.model_validate(cfg)


def _world(n: int = 6000, seed: int = 0):  # noqa: ANN202
    """Randomised rows on two campaigns (email, sms) with known effects; the outcome is a purchase."""
    rng = np.random.default_rng(seed)
    x = rng.random(n)
    campaign = np.where(np.arange(n) < n // 2, "C1", "C2")
    channel = np.where(campaign == "C1", "email", "sms")
    arm = rng.choice(["control", *ACTIONS], size=n, p=[0.4, 0.3, 0.3])
    # discount helps low x a lot and hurts high x; shipping helps a little everywhere
    tau = np.column_stack([np.zeros(n), 0.3 - 0.5 * x, np.full(n, 0.04)])
    base = 0.2
    code = pd.Series(arm).map({"control": 0, "discount": 1, "shipping": 2}).to_numpy()
    y = (rng.random(n) < base + tau[np.arange(n), code]).astype(float)
    units = pd.DataFrame(
        {"unit_value": np.full(n, 20.0), "order_value": np.full(n, 40.0), "base_rate": np.full(n, base)}
    )
    passed = pd.DataFrame({"row": np.repeat(np.arange(n), 2), "action": np.tile(ACTIONS, n)})
    rows = prepare_rows(arm, "control", y, channel, campaign, np.arange(n), passed, units, _catalogue())
    mu = base + tau
    return rows, tau, mu


def test_every_policy_respects_the_budget_in_every_campaign_and_nba_never_sends_a_loss() -> None:
    rows, tau, mu = _world()
    for budget in (0.1, 0.3, 0.7):
        chosen = decide(rows, tau, mu, budget, seed=1)
        assert set(chosen) == set(POLICIES)
        for policy, arms in chosen.items():
            assert rows.allowed[np.arange(arms.size), arms].all(), f"{policy} sends an arm not allowed"
            for g in ("C1", "C2"):
                on = rows.group == g
                assert (arms[on] > 0).sum() <= np.floor(budget * on.sum()), (policy, g, budget)
        ev = expected_values(rows, tau)
        sent = chosen[NBA] > 0
        ev_positive = ev[np.arange(ev.shape[0]), chosen[NBA]][sent]
        assert (ev_positive > 0).all()
        assert (chosen[NO_ACTION] == 0).all()
    # shipping is not allowed on SMS: no policy sends it there
    sms = rows.channel == "sms"
    for arms in decide(rows, tau, mu, 0.5, seed=1).values():
        assert not (arms[sms] == 2).any()


def test_with_perfect_estimates_nba_earns_the_most_true_value() -> None:
    rows, tau, mu = _world()
    n = rows.arm.size
    truth = true_values(rows, tau, np.clip(0.2 + tau, 0, 1))  # the world's own change and paid probability
    j = judge(rows, tau, mu, [0.3], truth=truth, n_boot=100)
    t = j.table.set_index("policy")["true"]
    assert t[NBA] >= max(t[PROPENSITY], t[SINGLE], t[RANDOM], t[NO_ACTION])
    assert t[NO_ACTION] == 0
    assert j.rows == n and j.customers == n
    said = verdicts(j, 0.3)
    assert len(said) == len(POLICIES) - 1 and all(s.startswith("next-best action") for s in said)


def test_an_action_without_history_is_refused_by_name() -> None:
    cat = _catalogue(
        actions={"discount": {"channels": ["email"]}, "birthday": {"channels": ["email"]}},
    )
    n = 10
    with pytest.raises(InputError, match=r"\['birthday'\] have no randomised history"):
        prepare_rows(
            np.array(["control", "discount"] * 5),
            "control",
            np.zeros(n),
            np.full(n, "email"),
            np.full(n, "C1"),
            np.arange(n),
            pd.DataFrame({"row": [], "action": []}),
            pd.DataFrame({"unit_value": np.ones(n), "order_value": np.ones(n), "base_rate": np.zeros(n)}),
            cat,
        )


def test_no_eligible_row_is_a_clear_error() -> None:
    rows, tau, mu = _world(n=200)
    none = rows.subset(np.zeros(rows.arm.size, dtype=bool))
    with pytest.raises(InputError, match="no eligible rows"):
        judge(none, tau[:0], mu[:0], [0.3])
