"""Propensity: whether an active customer does something (an event of given types, matching SQL) in ``[T, T+h)``.

Several binary targets per config, each its own registered model ``omnicrm-propensity-<target>``
scored as ``p_<target>``: e.g. ``buys_beauty`` (purchases with ``category = 'Beauty'``) or
``clicks_email`` (e-mail clicks, only among customers with e-mail consent). Label ``y_<target>`` = 1
when at least one matching event falls in the horizon. Judged by ROC-AUC next to a logistic
regression on all numeric features.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from omnicrm.config import StrictModel
from omnicrm.tasks.base import Target, Task
from omnicrm.tasks.labels import events_sql

if TYPE_CHECKING:
    import duckdb

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class PropensityTarget(StrictModel):
    """One propensity target: whether an event of these types (matching ``where``) happens in ``[T, T+h)``."""

    name: str
    event_types: list[str] = ["purchase"]
    where: str | None = None  # SQL condition on the events table, e.g. "category = 'Beauty'"
    consent: Literal["email", "sms", "push"] | None = None

    @model_validator(mode="after")
    def _check(self) -> PropensityTarget:
        if not _NAME.match(self.name):
            raise ValueError(f"target name {self.name!r} must be lower_snake_case (it names a registered model)")
        return self


class Propensity(Task):
    """One binary target per entry of ``targets`` (see the module docstring).

    Attributes
    ----------
    targets : list of PropensityTarget
        At least one; names unique.
    """

    name: ClassVar[str] = "propensity"
    baselines: ClassVar[tuple[str, ...]] = ("logistic",)
    multi_target: ClassVar[bool] = True

    targets: list[PropensityTarget] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_targets(self) -> Propensity:
        if not self.targets:
            raise ValueError("a propensity task needs at least one entry under 'targets'")
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"target names must be unique, got {names}")
        return self

    def declared_targets(self) -> list[Target]:
        """One binary target per configured one (label ``y_<name>``, its consent filter)."""
        return [
            Target(t.name, f"y_{t.name}", "binary", self.score_column_for(t.name), t.consent, t.name)
            for t in self.targets
        ]

    def add_labels(self, con: duckdb.DuckDBPyConnection, cutoff: datetime, frame: pd.DataFrame) -> pd.DataFrame:
        """``y_<target>`` per target: a matching event in ``[T, T+horizon)``."""
        for target in self.targets:
            hit = con.sql(events_sql(cutoff, self.horizon_days, target.event_types, target.where)).df()
            frame[f"y_{target.name}"] = frame["customer_id"].isin(hit["customer_id"]).astype(np.int8)
        return frame
