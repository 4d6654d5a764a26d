"""``omnicrm predict``'s pure parts: the forecast horizon, every baseline's score, the key columns' names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omnicrm.pipeline.keys import key_column_names
from omnicrm.tasks.base import Target
from omnicrm.tasks.baselines import Baseline
from omnicrm.tasks.btyd import bgnbd_expected_purchases
from omnicrm.tasks.model import BaselineModel, Encoding
from omnicrm.tasks.predict import baseline_scores, extend_horizon, horizon_column, horizon_ratio


def test_horizon_ratio_is_the_classic_models_and_falls_back_to_a_constant_rate() -> None:
    params = (0.24, 4.4, 0.79, 2.4)  # CDNOW's BG/NBD, weeks
    x, t_x, T = np.array([0.0, 2.0, 2.0, 10.0]), np.array([0.0, 30.0, 5.0, 38.0]), np.array([39.0, 39.0, 39.0, 39.0])
    at_h = bgnbd_expected_purchases(params, 90 / 7, x, t_x, T)
    at_H = bgnbd_expected_purchases(params, 180 / 7, x, t_x, T)
    ratio = horizon_ratio(at_H, at_h, 180, 90)
    np.testing.assert_allclose(ratio, at_H / at_h)
    # P(alive) cancels (a customer gone buys nothing over either horizon; the model's h-day forecast
    # already carries that): the last purchase's date does not move the ratio ...
    assert ratio[2] == pytest.approx(ratio[1], rel=1e-12)
    # ... the chance of dropping out *during* the horizon does: below H / h = 2, and lower for a heavy
    # buyer (BG/NBD customers may leave after each purchase, so more purchases mean more chances)
    assert (ratio > 1).all() and (ratio < 2).all() and ratio[3] < ratio[1] < ratio[0]
    # no classic forecast (not in the summary, or zero over the label window): H / h
    np.testing.assert_array_equal(horizon_ratio([np.nan, 3.0, 1.0], [np.nan, 0.0, 0.5], 180, 90), [2.0, 2.0, 2.0])


def test_extend_horizon_scales_amounts_and_the_cumulative_hazard_of_probabilities() -> None:
    ratio = np.array([1.0, 2.0, 2.0, 2.0, 0.5])
    amounts = np.array([10.0, 10.0, 0.0, 3.0, 8.0])
    np.testing.assert_allclose(extend_horizon(amounts, ratio, "amount"), [10, 20, 0, 6, 4])
    p = np.array([0.3, 0.3, 0.0, 1.0, 0.75])
    got = extend_horizon(p, ratio, "probability")
    # ratio 1 keeps p; ratio 2 is two independent windows, 1 - (1 - p)^2; 0 and 1 stay; ratio 1/2 halves the hazard
    np.testing.assert_allclose(got, [0.3, 1 - 0.7**2, 0.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="unknown horizon scaling"):
        extend_horizon(p, ratio, "count")
    assert horizon_column("pred_spend", 180) == "pred_spend_180d"


def _fitted_baselines(frame: pd.DataFrame, y: np.ndarray) -> dict[str, Baseline]:
    return {
        "run_rate": Baseline("run_rate", ["spend_365d", "recency_days"], horizon_days=90).fit(frame, y, "regression"),
        "linear": Baseline("linear", ["spend_365d", "recency_days"], horizon_days=90).fit(frame, y, "regression"),
    }


def test_every_baseline_is_scored_from_the_model_or_the_registered_baseline() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"spend_365d": rng.gamma(2, 50, 200), "recency_days": rng.integers(0, 300, 200)})
    y = frame["spend_365d"].to_numpy() / 4 + rng.normal(0, 5, 200)
    fitted = _fitted_baselines(frame, y)
    spend = Target("spend", "y_spend", "regression", "pred_spend")
    margin = Target("margin", "y_margin", "regression", "pred_margin")

    class WithBaselines:
        baselines = fitted

    class Old:  # a model registered before its baselines were kept
        baselines: dict = {}  # noqa: RUF012

    scores, without = baseline_scores(frame, {spend: WithBaselines(), margin: Old()})
    assert list(scores.columns) == ["pred_spend_baseline_run_rate", "pred_spend_baseline_linear"]
    np.testing.assert_allclose(scores["pred_spend_baseline_run_rate"], frame["spend_365d"] * 90 / 365)
    np.testing.assert_allclose(scores["pred_spend_baseline_linear"], fitted["linear"].predict(frame, "regression"))
    assert without == ["margin"]

    # a registered baseline (the gate shipped it) is its own one baseline
    enc = Encoding.learn(frame, list(frame.columns))
    shipped = BaselineModel("clv", "spend", "regression", "pred_spend", fitted["linear"], enc)
    scores, without = baseline_scores(frame, {spend: shipped})
    assert list(scores.columns) == ["pred_spend_baseline_linear"] and without == []
    np.testing.assert_allclose(scores["pred_spend_baseline_linear"], shipped.predict_score(frame))


@pytest.mark.parametrize(
    ("meta", "sources", "taken", "expected"),
    [
        # one source: the business's own id column, named as in its system
        ({"customer_key_columns": '{"retail": "CustomerID"}'}, ["retail"], set(), {"retail": "CustomerID"}),
        # several sources: one <source>_key column each (the documented join)
        (
            {"customer_key_columns": '{"crm": "member_no", "shop": "account"}'},
            ["crm", "shop"],
            set(),
            {"crm": "crm_key", "shop": "shop_key"},
        ),
        # a store ingested before the column was recorded
        ({}, ["online_retail"], set(), {"online_retail": "online_retail_key"}),
        # a pseudonymised key is not the business's id
        (
            {"customer_key_columns": '{"cards": "card_no"}', "pseudonymised_key_sources": "cards"},
            ["cards"],
            set(),
            {"cards": "cards_key"},
        ),
        # a name another output column has (the source calls its id customer_id)
        ({"customer_key_columns": '{"shop": "customer_id"}'}, ["shop"], {"customer_id", "as_of"}, {"shop": "shop_key"}),
        # two key sources in the store, the scored customers in one of them: still the join of several
        ({"customer_key_columns": '{"crm": "member_no", "shop": "account"}'}, ["crm"], set(), {"crm": "crm_key"}),
    ],
)
def test_key_column_names(meta: dict, sources: list[str], taken: set[str], expected: dict[str, str]) -> None:
    assert key_column_names(meta, sources, taken) == expected
