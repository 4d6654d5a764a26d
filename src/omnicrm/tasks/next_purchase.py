"""Next purchase: whether an active customer buys in ``[T, T+h)``, and how many days until they do.

Two models per config, one registered model (``omnicrm-next_purchase``):

* the binary target ``next_purchase`` (label ``y_purchase``, score ``p_purchase``), judged by ROC-AUC
  next to the recency and logistic baselines;
* a censoring-aware timing model fitted next to it on the same features (the *extra* model of the
  task contract): a discrete-time hazard model (:class:`omnicrm.tasks.model.HazardModel`) over the
  bins ``timing_bins`` up to ``timing_max_days`` (the horizon when unset). It predicts
  ``expected_days`` (restricted mean time to the next purchase), ``expected_days_if_purchase`` and
  ``p_purchase_<max>d``, and is judged by Harrell's concordance and the MAE on observed cases next
  to the gap baseline (mean inter-purchase gap minus days since the last purchase). See
  docs/tasks.md.

The timing labels (``event``, ``duration``) read up to ``timing_max_days`` after ``T``, so the label
window (:meth:`NextPurchase.label_days`) is the longer of the two.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from omnicrm.tasks import metrics as mt
from omnicrm.tasks.base import Target, Task
from omnicrm.tasks.baselines import gap_days
from omnicrm.tasks.labels import OUTCOME_COLUMNS, with_purchase_outcomes
from omnicrm.tasks.model import Encoding, HazardModel, TaskModel, fit_lgbm

if TYPE_CHECKING:
    import duckdb


class NextPurchase(Task):
    """A purchase in the horizon, and the expected days to it (see the module docstring).

    Attributes
    ----------
    timing_max_days : int, optional
        The timing model's window: times are censored here (default: ``horizon_days``).
    timing_bins : list of int
        Bin edges (days) of the hazard model; those at or past the window are dropped.
    """

    name: ClassVar[str] = "next_purchase"
    baselines: ClassVar[tuple[str, ...]] = ("recency", "logistic")
    label_columns: ClassVar[tuple[str, ...]] = ("event", "duration")
    horizon_scaling: ClassVar[Literal["amount", "probability"] | None] = "probability"

    timing_max_days: int | None = Field(None, gt=0)
    timing_bins: list[int] = [7, 14, 21, 30, 45, 60, 90, 120]

    @model_validator(mode="after")
    def _check_bins(self) -> NextPurchase:
        if self.timing_max_days and max(self.timing_bins) > self.timing_max_days:
            raise ValueError("timing_bins must not exceed timing_max_days")
        return self

    @classmethod
    def score_column_for(cls, target: str) -> str:  # noqa: ARG003 - one target
        """``p_purchase``."""
        return "p_purchase"

    def declared_targets(self) -> list[Target]:
        """One binary target, ``next_purchase`` (label ``y_purchase``)."""
        return [Target("next_purchase", "y_purchase", "binary", self.score_column_for("next_purchase"))]

    def label_days(self) -> int:
        """The longer of the horizon and the timing window."""
        return max(self.horizon_days, self.timing_max_days or 0)

    def _cap(self) -> float:
        return float(self.timing_max_days or self.horizon_days)

    def add_labels(self, con: duckdb.DuckDBPyConnection, cutoff: datetime, frame: pd.DataFrame) -> pd.DataFrame:
        """``y_purchase`` in the horizon; ``event`` / ``duration`` (days, censored at the window) for timing."""
        frame = with_purchase_outcomes(con, cutoff, frame, self.horizon_days, self.timing_max_days)
        frame["y_purchase"] = (frame["purchases"].fillna(0) > 0).astype(np.int8)
        cap = self._cap()
        frame["event"] = frame["days_to_next"].notna().astype(np.int8)
        frame["duration"] = frame["days_to_next"].fillna(cap).clip(upper=cap)
        return frame.drop(columns=OUTCOME_COLUMNS)

    def fit_extra(
        self,
        target: Target,  # noqa: ARG002 - one target
        encoding: Encoding,
        tr: pd.DataFrame,
        va: pd.DataFrame,
        params: dict[str, Any],
        early_stopping_rounds: int,
    ) -> tuple[HazardModel, dict[str, Any]]:
        """The discrete-time hazard model behind ``expected_days`` (see :mod:`omnicrm.tasks.model`)."""
        cap = self._cap()
        edges = [0.0, *[float(b) for b in self.timing_bins if b < cap], cap]
        hz = HazardModel(edges)
        Xp_tr, yp_tr = hz.person_period(
            encoding.transform(tr), tr["duration"].to_numpy(), tr["event"].to_numpy(), edges
        )
        Xp_va, yp_va = hz.person_period(
            encoding.transform(va), va["duration"].to_numpy(), va["event"].to_numpy(), edges
        )
        hz.estimator = fit_lgbm("binary", Xp_tr, yp_tr, Xp_va, yp_va, params, early_stopping_rounds)
        return hz, {"timing_person_period_rows": len(Xp_tr), "timing_best_iteration": int(hz.estimator.best_iteration_)}

    def extra_columns(self, target: Target) -> list[str]:  # noqa: ARG002 - one target
        """``expected_days``, ``expected_days_if_purchase``, ``p_purchase_<max>d``."""
        return list(HazardModel.columns(self._cap()))

    def extra_metrics(
        self, target: Target, model: TaskModel, ev: pd.DataFrame
    ) -> dict[str, dict[str, dict[str, float]]]:  # noqa: ARG002
        """Concordance and MAE of the timing model and of the gap baseline (group ``timing``)."""
        pred = model.predict_frame(ev)
        cap = model.extra.edges[-1]
        dur, event = ev["duration"].to_numpy(), ev["event"].to_numpy()
        m = mt.timing_metrics(dur, event, pred["expected_days"].to_numpy())
        # MAE on observed cases compares like with like: E[T | T < cap] against observed times
        m["mae_observed"] = mt.timing_metrics(dur, event, pred["expected_days_if_purchase"].to_numpy())["mae_observed"]
        g = gap_days(ev, cap)
        return {"timing": {"model": m, "baseline_gap": mt.timing_metrics(dur, event, g)}}

    def extra_summary(self, target: Target, extra: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:  # noqa: ARG002
        """One row: ``expected_days`` concordance against the gap baseline."""
        timing = extra["timing"]
        return [
            {
                "target": "expected_days",
                "metric": "concordance",
                "model": timing["model"]["concordance"],
                "best_baseline": "gap",
                "baseline": timing["baseline_gap"]["concordance"],
            }
        ]
