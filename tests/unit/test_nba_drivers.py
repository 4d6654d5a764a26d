"""The effect's drivers in NBA reasons: the largest contributions, with sign, for the sent rows only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omnicrm.nba.allocate import Limits, allocate
from omnicrm.nba.drivers import effect_drivers
from omnicrm.nba.lists import nba_rows


class LinearEffect:
    """An effect model whose contributions are known: ``weights[f] * x[f]`` per feature, baseline 0.01.

    Records every frame it is asked to explain, so a test can see which customers were explained.
    """

    features = ["x", "y", "z"]

    def __init__(self, weights: dict[str, float]) -> None:
        self.weights = weights
        self.asked: list[list[str]] = []

    def effect_contributions(self, frame: pd.DataFrame, action: str) -> pd.DataFrame:
        assert action == "act"
        self.asked.append(frame["customer_id"].tolist())
        out = pd.DataFrame({f: self.weights[f] * frame[f].to_numpy(float) for f in self.features})
        out["baseline"] = 0.01
        return out


class Opaque:
    """An effect model that cannot decompose its effect (like an S-learner)."""

    def effect_contributions(self, frame: pd.DataFrame, action: str) -> pd.DataFrame:  # noqa: ARG002
        raise NotImplementedError("the S-learner's effects are not a sum of per-feature contributions")


FEATURES = pd.DataFrame(
    {"customer_id": ["c0", "c1", "c2", "c3"], "x": [1.0, 2.0, 0.0, 1.0], "y": [-3.0, 0.5, 1.0, 0.0], "z": [0.1] * 4}
)


def test_the_largest_contributions_with_sign_and_value_scaled_by_reach() -> None:
    model = LinearEffect({"x": 0.02, "y": 0.01, "z": 0.001})
    sent = pd.DataFrame({"customer_id": ["c0", "c1"], "action": "act", "channel": ["email", "sms"]}, index=[7, 3])
    d = effect_drivers(sent, FEATURES, {"act": (model, "act")}, {"email": 1.0, "sms": 0.5}, 2)
    assert d.rows == 2 and not d.unavailable
    # c0: y = -3 contributes -0.03, x = 1 +0.02 (z's 0.0001 is third); c1 on sms (reach 0.5): x +0.02, y +0.0025
    assert d.text[7] == "drivers: y=-3 -0.0300, x=1 +0.0200"
    assert d.text[3] == "drivers: x=2 +0.0200, y=0.5 +0.0025"
    assert model.asked == [["c0", "c1"]]
    assert effect_drivers(sent, FEATURES, {"act": (model, "act")}, {"email": 1, "sms": 1}, 0).rows == 0


def test_a_learner_without_contributions_leaves_its_rows_without_drivers() -> None:
    sent = pd.DataFrame({"customer_id": ["c0"], "action": "act", "channel": "email"})
    d = effect_drivers(sent, FEATURES, {"act": (Opaque(), "act")}, {"email": 1.0})
    assert d.rows == 0 and d.text.tolist() == [""] and "S-learner" in d.unavailable["act"]


def test_drivers_are_computed_for_the_sent_rows_only_and_shown_in_their_reasons() -> None:
    # four customers, one action on two channels each; the budget sends two of the eight candidates
    cands = pd.DataFrame(
        {
            "customer_id": np.repeat(FEATURES["customer_id"].to_numpy(), 2),
            "action": "act",
            "channel": ["email", "sms"] * 4,
            "product_id": pd.NA,
            "effect": 0.1,
            "value": [3.0, 2.0, 5.0, 4.0, 1.0, 0.5, 2.5, 2.4],
            "cost": 1.0,
        }
    )
    cands["expected_value"] = cands["value"]
    alloc = allocate(cands, np.ones(len(cands), dtype=np.int64), Limits(budget=2.0))
    sent = cands[alloc.chosen]
    assert sorted(sent["customer_id"]) == ["c0", "c1"]
    model = LinearEffect({"x": 0.02, "y": 0.01, "z": 0.001})
    d = effect_drivers(sent, FEATURES, {"act": (model, "act")}, {"email": 1.0, "sms": 1.0})
    assert [sorted(a) for a in model.asked] == [["c0", "c1"]], "only the sent rows are explained"
    nba = nba_rows(cands, alloc, "margin", pd.Timestamp("2024-01-01"), d.text)
    assert len(nba) == 2 and nba["reasons"].str.contains(r"on margin \(drivers: [xyz]=").all()
    # without drivers the reasons stay as they were
    plain = nba_rows(cands, alloc, "margin", pd.Timestamp("2024-01-01"))
    assert not plain["reasons"].str.contains("drivers").any()


def test_the_long_term_weight_is_named_in_the_reasons_when_it_is_not_one() -> None:
    cands = pd.DataFrame(
        {
            "customer_id": ["c0", "c1"],
            "action": "act",
            "channel": "email",
            "product_id": pd.NA,
            "effect": 0.1,
            "value": [3.0, 2.0],
            "cost": 1.0,
            "expected_value": [2.0, 1.0],
            "long_term": [1.25, 1.0],
        }
    )
    alloc = allocate(cands, np.ones(2, dtype=np.int64), Limits())
    nba = nba_rows(cands, alloc, "margin", pd.Timestamp("2024-01-01")).set_index("customer_id")
    assert "value 3.0000 (long-term weight ×1.250)" in nba.loc["c0", "reasons"]
    assert "long-term" not in nba.loc["c1", "reasons"]


@pytest.mark.parametrize("n", [1, 3])
def test_as_many_drivers_as_asked(n: int) -> None:
    model = LinearEffect({"x": 0.02, "y": 0.01, "z": 0.001})
    sent = pd.DataFrame({"customer_id": ["c1"], "action": "act", "channel": "email"})
    text = effect_drivers(sent, FEATURES, {"act": (model, "act")}, {"email": 1.0}, n).text.iloc[0]
    assert text.count("=") == n
