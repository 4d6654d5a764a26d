"""Customer lifetime value: spend (and margin) of an active customer in ``[T, T+h)``.

Two regression targets, each its own registered model: ``spend`` (label ``y_spend``, score
``pred_spend``, registered as ``omnicrm-clv``) and, when the products carry a margin and
``margin: true``, ``margin`` (quantity x product margin; ``pred_margin``, ``omnicrm-clv-margin``).
The label is zero-inflated and heavy-tailed, so the default objective is Tweedie (compound
Poisson-gamma). Judged by the normalised Gini next to three baselines: run rate (last year's spend
scaled to the horizon), BG/NBD + Gamma-Gamma (:mod:`omnicrm.tasks.btyd`, fitted at each cutoff on
history before it) and ridge regression. The BG/NBD outputs are also offered to LightGBM as
point-in-time inputs (``btyd_features``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pandas as pd
from pydantic import Field

from omnicrm.errors import InputError
from omnicrm.tasks.base import Target, Task
from omnicrm.tasks.labels import OUTCOME_COLUMNS, has_margin, with_purchase_outcomes

if TYPE_CHECKING:
    import duckdb

    from omnicrm.tasks.baselines import Baseline

#: BG/NBD + Gamma-Gamma outputs joined to the frame (``btyd_clv`` is also the ``btyd`` baseline)
BTYD_COLUMNS = ["btyd_expected_purchases", "btyd_p_alive", "btyd_expected_spend", "btyd_clv"]


class Clv(Task):
    """Spend and margin in the horizon (see the module docstring).

    Attributes
    ----------
    clv_objective : {"tweedie", "regression", "two_part"}
        LightGBM objective: Tweedie, or L2 (``two_part`` is accepted and fitted as L2).
    tweedie_variance_power : float
        Tweedie's power, in ``(1, 2)``.
    btyd_features : bool
        Offer the BG/NBD + Gamma-Gamma outputs at ``T`` as model inputs (and the ``btyd`` baseline).
    margin : bool
        Also model margin when products carry one.
    """

    name: ClassVar[str] = "clv"
    baselines: ClassVar[tuple[str, ...]] = ("run_rate", "btyd", "linear")
    multi_target: ClassVar[bool] = True
    horizon_scaling: ClassVar[Literal["amount", "probability"] | None] = "amount"

    clv_objective: Literal["tweedie", "regression", "two_part"] = "tweedie"
    tweedie_variance_power: float = Field(1.3, gt=1.0, lt=2.0)
    btyd_features: bool = True
    margin: bool = True

    @classmethod
    def score_column_for(cls, target: str) -> str:
        """``pred_spend``, ``pred_margin``."""
        return f"pred_{target}"

    def declared_targets(self) -> list[Target]:
        """``spend`` (``omnicrm-clv``) and the optional ``margin`` (``omnicrm-clv-margin``)."""
        return [
            Target("spend", "y_spend", "regression", self.score_column_for("spend")),
            Target("margin", "y_margin", "regression", self.score_column_for("margin"), None, "margin", optional=True),
        ]

    def add_inputs(self, con: duckdb.DuckDBPyConnection, cutoff: datetime, frame: pd.DataFrame) -> pd.DataFrame:
        """BG/NBD + Gamma-Gamma fitted on history before ``cutoff`` only, offered as candidate features."""
        if not self.btyd_features:
            return frame
        from omnicrm.tasks.btyd import BtydModel, rfm_summary

        summary = rfm_summary(con, cutoff)
        try:
            model = BtydModel().fit(summary)
        except InputError as e:  # too little history before the cutoff: say which cutoff and what to do
            raise InputError(
                f"clv at {cutoff:%Y-%m-%d}: the BG/NBD inputs (btyd_features) cannot be fitted on the history "
                f"before it: {e}; use a later date, or set task.btyd_features: false"
            ) from None
        pred = model.predict(summary, self.horizon_days)
        pred = pred.reset_index() if "customer_id" not in pred.columns else pred
        return frame.merge(pred[["customer_id", *BTYD_COLUMNS]], on="customer_id", how="left")

    def add_labels(self, con: duckdb.DuckDBPyConnection, cutoff: datetime, frame: pd.DataFrame) -> pd.DataFrame:
        """``y_spend`` (and ``y_margin`` when products carry a margin) in ``[T, T+horizon)``."""
        margin = self.margin and has_margin(con)
        frame = with_purchase_outcomes(con, cutoff, frame, self.horizon_days, margin=margin)
        frame["y_spend"] = frame["spend"].fillna(0.0)
        if margin:
            frame["y_margin"] = frame["margin"].fillna(0.0)
        return frame.drop(columns=OUTCOME_COLUMNS)

    def objective_params(self, target: Target) -> dict[str, Any]:
        """Tweedie with the configured power, or L2."""
        if self.clv_objective == "tweedie":
            return {"objective": "tweedie", "tweedie_variance_power": self.tweedie_variance_power}
        return super().objective_params(target)

    def fit_baselines(
        self, target: Target, names: Sequence[str], features: list[str], tr: pd.DataFrame
    ) -> dict[str, Baseline]:
        """As the base class; ``btyd`` only with the BG/NBD inputs, spend heuristics turned into margin."""
        names = [n for n in names if n != "btyd" or "btyd_clv" in tr.columns]
        out = super().fit_baselines(target, names, features, tr)
        if target.name == "margin":
            # spend-based heuristics: turn spend into margin with the training frame's margin rate
            # (multiplied, then divided: the order the figures were first computed in)
            rate = (float(tr["y_margin"].sum()), float(max(tr["y_spend"].sum(), 1e-12)))
            for name in ("run_rate", "btyd"):
                if name in out:
                    out[name].scale = rate
        return out
