"""The registrable effect model: a fitted uplift learner plus the feature encoding it was fitted with.

:class:`EffectModel` is what ``omnicrm effects`` registers in MLflow (through ``omnicrm.tracking``,
as ``omnicrm-<dataset>-uplift-<outcome>``) and what ``omnicrm effects --model champion`` loads. Its
:meth:`EffectModel.predict_frame` follows the contract every registered omnicrm model follows: a
frame in (here: the feature columns the learner was fitted on, one row per customer), a frame out
with one row per input row (here: one ``effect_<action>`` column per action, the estimated change
of the outcome if the customer got that action instead of nothing).

Scoring encodes the features exactly as training did (:func:`~omnicrm.uplift.data.to_model_frame`:
categoricals as pandas ``category``, the rest float; LightGBM maps categories by the names it saw in
training), so the registered model and the in-process learner give the same effects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from omnicrm.errors import InputError
from omnicrm.uplift.data import ARM, to_model_frame
from omnicrm.uplift.learners import UpliftLearner

EFFECT_PREFIX = "effect_"


@dataclass
class EffectModel:
    """A fitted uplift learner with its feature list (see the module docstring).

    Attributes
    ----------
    learner
        The fitted learner (``actions_`` set).
    learner_name
        ``S``, ``T``, ``X`` or ``DR``.
    outcome
        The outcome the effects are on (e.g. ``purchase``).
    features, categorical
        The feature columns the learner was fitted on, in order, and which of them are categorical.
    meta
        Where the model came from: as-of date, training rows and window, data fingerprint.
    """

    learner: UpliftLearner
    learner_name: str
    outcome: str
    features: list[str]
    categorical: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def actions(self) -> list[str]:
        """The actions, in the order of the effect columns."""
        return [str(a) for a in self.learner.actions_]

    @property
    def columns(self) -> list[str]:
        """The output columns: ``effect_<action>`` per action."""
        return [f"{EFFECT_PREFIX}{a}" for a in self.actions]

    def predict_effect(self, frame: pd.DataFrame) -> np.ndarray:
        """Estimated effects, shape ``(rows, actions)``; columns in :attr:`actions`."""
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise InputError(
                f"effect model ({self.learner_name}, {self.outcome}): the scoring frame lacks feature column(s) "
                f"{missing[:10]}{' ...' if len(missing) > 10 else ''} ({len(missing)} of {len(self.features)})"
            )
        return self.learner.predict_effect(to_model_frame(frame, self.features, self.categorical))

    def effect_contributions(self, frame: pd.DataFrame, action: str) -> pd.DataFrame:
        """Each feature's additive share of ``action``'s effect per row, plus ``baseline`` (rows sum to the effect).

        Exact tree contributions (LightGBM ``pred_contrib``) of the learner's final regressors; they
        cost far more than a prediction, so callers ask for the rows they explain only (the NBA list:
        the rows that are sent). Raises ``NotImplementedError`` for learners whose effect does not
        decompose (S; T on a binary outcome).
        """
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise InputError(f"effect model ({self.learner_name}, {self.outcome}): no feature column(s) {missing[:10]}")
        known = {str(a): a for a in self.learner.actions_}
        if action not in known:
            raise InputError(
                f"effect model ({self.learner_name}, {self.outcome}): no action {action!r}; it has {self.actions}"
            )
        X = to_model_frame(frame, self.features, self.categorical)
        contrib = self.learner.effect_contributions(X, known[action])
        return pd.DataFrame(contrib, columns=[*self.features, "baseline"], index=frame.index)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One ``effect_<action>`` column per action for each input row (the pyfunc output)."""
        effect = self.predict_effect(frame)
        return pd.DataFrame(effect, columns=self.columns)


def fit_effect_model(
    make: Callable[[int], UpliftLearner],
    learner_name: str,
    rows: pd.DataFrame,
    features: list[str],
    categorical: list[str],
    outcome: str,
    seed: int = 0,
) -> EffectModel:
    """Fit ``make(seed)`` on the training rows and wrap it with its features.

    Parameters
    ----------
    make
        Builds an unfitted learner from a seed (see :func:`omnicrm.uplift.config.learner_factory`).
    learner_name
        The learner's name, kept with the model.
    rows
        Training rows: the ``arm`` column, the ``outcome`` column and the feature columns.
    features, categorical
        Feature columns (and the categorical ones among them).
    outcome
        The outcome column.
    seed
        The learner's seed.

    Returns
    -------
    EffectModel
        The fitted model (``meta`` empty; the caller records where it came from).
    """
    y = rows[outcome].to_numpy(float)
    learner = make(seed).fit(to_model_frame(rows, features, categorical), rows[ARM].to_numpy(dtype=object), y)
    return EffectModel(learner, learner_name, outcome, list(features), list(categorical))
