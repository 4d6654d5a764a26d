"""The uplift config (``configs/uplift/*.yaml``), validated strictly, and the learners it describes.

One file drives ``omnicrm uplift`` (evaluation), ``omnicrm readout`` (campaign A/B readout) and
``omnicrm effects`` (per-customer effects at a date): the data source (a feature table or the store),
the learners and their LightGBM settings, the held-out evaluation, the readout's grouping, the
learner and outcome that ``effects`` serves, and optionally the synthetic ground truth, which is
only ever *reported* against. Outcome names are checked against the source's outcomes when the
config loads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from omnicrm.config import StrictModel, load_config
from omnicrm.uplift.data import Source, StoreSource
from omnicrm.uplift.learners import UpliftLearner

LearnerName = Literal["S", "T", "X", "DR"]


class LearnerSettings(StrictModel):
    """Which learners to compare and the LightGBM settings of their base models."""

    names: list[LearnerName] = Field(default=["S", "T", "X", "DR"], min_length=1)
    #: LightGBM parameters overriding ``omnicrm.uplift.learners.default_model``
    model: dict[str, Any] = {}
    dr_folds: int = Field(default=2, ge=2, le=10)

    @field_validator("model")
    @classmethod
    def _lightgbm_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        from omnicrm.lgbm_params import check_lgbm_params

        # the S-learner fits with the treatment as one more feature: positions differ between learners
        return check_lgbm_params(params, per_feature=False)


class EvaluationSettings(StrictModel):
    """Held-out evaluation: outcomes, split seeds, cross-fitting folds and the targeting share k."""

    outcomes: list[str] | None = None
    seeds: int = Field(default=5, ge=1, le=50)
    folds: int = Field(default=2, ge=2, le=10)
    top_k: float = Field(default=0.3, gt=0, lt=1)


class ReadoutSettings(StrictModel):
    """Campaign readout: outcomes and grouping columns (e.g. campaign_id); the segment comes from the source."""

    outcomes: list[str] | None = None
    by: list[str] = []


class EffectsSettings(StrictModel):
    """The learner and outcome of ``omnicrm effects`` (and of the effect model it registers)."""

    learner: LearnerName = "DR"
    outcome: str


class TruthSettings(StrictModel):
    """Synthetic ground truth: per-person true effects and the record -> person map."""

    effects: str
    record_owner: str
    outcome: str = "purchase"


class UpliftConfig(StrictModel):
    """An uplift config: source, learners, evaluation, readout, effects and optional truth."""

    name: str
    source: Source
    learners: LearnerSettings = LearnerSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    readout: ReadoutSettings = ReadoutSettings()
    effects: EffectsSettings
    truth: TruthSettings | None = None
    experiment: str = "omnicrm-uplift"

    @model_validator(mode="after")
    def _check_outcomes(self) -> UpliftConfig:
        known = list(self.source.outcomes)
        for key, values in (
            ("evaluation.outcomes", self.evaluation.outcomes or []),
            ("readout.outcomes", self.readout.outcomes or []),
            ("effects.outcome", [self.effects.outcome]),
        ):
            bad = [v for v in values if v not in known]
            if bad:
                raise ValueError(f"'{key}': {bad} not among the source's outcomes {known}")
        return self

    def registered_name(self) -> str:
        """The registry name of the effect model ``omnicrm effects`` fits: ``omnicrm-<name>-uplift-<outcome>``."""
        return f"omnicrm-{self.name}-uplift-{self.effects.outcome}"


def load_uplift_config(path: str | Path) -> tuple[UpliftConfig, Any]:
    """The config and, for a store source, its feature config.

    Parameters
    ----------
    path
        The uplift config file. A store source's ``features`` is a path relative to this file or an
        inline feature config.

    Returns
    -------
    tuple
        The :class:`UpliftConfig` and the :class:`~omnicrm.features.config.FeatureConfig` (``None``
        for a feature-table source).
    """
    path = Path(path)
    cfg = load_config(UpliftConfig, path)
    feats = None
    if isinstance(cfg.source, StoreSource):
        from omnicrm.features.config import resolve_feature_config

        feats = resolve_feature_config(cfg.source.features, path.parent, f"{path} (key 'source.features')")
    return cfg, feats


def learner_factory(cfg: UpliftConfig, name: str, control: str, y: np.ndarray) -> Callable[[int], UpliftLearner]:
    """A function ``seed -> fresh learner`` with the configured LightGBM base models.

    Parameters
    ----------
    cfg
        The uplift config (its ``learners.model`` and ``learners.dr_folds``).
    name
        Learner name (``S``, ``T``, ``X``, ``DR``).
    control
        The control arm's label.
    y
        The training outcome: binary (only 0 and 1) selects classifiers, anything else regressors.

    Returns
    -------
    Callable[[int], UpliftLearner]
        Each call builds an unfitted learner seeded with its argument.
    """
    from omnicrm.uplift.learners import default_model, make_learner

    binary = bool(np.isin(y, (0.0, 1.0)).all())

    def make(seed: int) -> UpliftLearner:
        base = default_model("classifier" if binary else "regressor", seed, **cfg.learners.model)
        eff = default_model("regressor", seed, **cfg.learners.model)
        return make_learner(
            name,
            control=control,
            outcome="binary" if binary else "continuous",
            base_model=base,
            effect_model=eff,
            random_state=seed,
            n_folds=cfg.learners.dr_folds,
        )

    return make
