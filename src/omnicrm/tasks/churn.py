"""Churn: an active customer buys nothing in ``[T, T+h)``.

Population: customers with a purchase in the ``active_days`` before ``T`` (the shared default).
Label ``y_churn`` = 1 when the customer makes no purchase in the horizon. One binary target,
registered as ``omnicrm-churn``, scored as ``p_churn``; judged by ROC-AUC next to a recency
baseline (days since the last purchase: the classic heuristic) and a logistic regression on all
numeric features.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd

from omnicrm.tasks.base import Target, Task
from omnicrm.tasks.labels import OUTCOME_COLUMNS, with_purchase_outcomes

if TYPE_CHECKING:
    import duckdb


class Churn(Task):
    """No purchase in the horizon (see the module docstring)."""

    name: ClassVar[str] = "churn"
    baselines: ClassVar[tuple[str, ...]] = ("recency", "logistic")

    @classmethod
    def score_column_for(cls, target: str) -> str:  # noqa: ARG003 - one target
        """``p_churn``."""
        return "p_churn"

    def declared_targets(self) -> list[Target]:
        """One binary target, ``churn`` (label ``y_churn``)."""
        return [Target("churn", "y_churn", "binary", self.score_column_for("churn"))]

    def add_labels(self, con: duckdb.DuckDBPyConnection, cutoff: datetime, frame: pd.DataFrame) -> pd.DataFrame:
        """``y_churn``: no purchase in ``[T, T+horizon)``."""
        frame = with_purchase_outcomes(con, cutoff, frame, self.horizon_days)
        frame["y_churn"] = (frame["purchases"].fillna(0) == 0).astype(np.int8)
        return frame.drop(columns=OUTCOME_COLUMNS)
