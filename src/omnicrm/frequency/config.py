"""The contact-frequency config (``configs/frequency/*.yaml``), validated strictly.

One file drives ``omnicrm frequency``: the store and feature config, the randomised cadence
experiment (how its e-mails are coded, its arms and the current cadence, the outcome window), the
hard maximum cadence per channel, how an unsubscribe is priced (from CLV), the estimator and its
evaluation, and optionally the synthetic ground truth (only ever *reported* against).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from omnicrm.config import StrictModel, load_config


class ExperimentSettings(StrictModel):
    """The randomised cadence experiment as the store shows it.

    Attributes
    ----------
    channel
        The channel whose cadence was randomised (its sends are ``<channel>_sent`` events).
    code_prefix
        Sends of the experiment carry ``<code_prefix><arm>-...`` in ``order_id`` (the ESP's campaign
        code); a member's arm is the one of their first such send, the experiment's start the first send.
    arms
        The cadences of the arms (contacts per four weeks).
    current
        The usual cadence (the arm everybody outside the experiment gets): effects are against it.
    window_days
        Outcomes are counted in ``[start, start + window_days)`` (the experiment and the weeks after it).
    beta_days
        The margin of an extra open is measured over ``[start, start + beta_days)``: the weeks the arms
        differ. Opens differ between arms only while their cadences do, so the weeks after add noise
        to the margins and orders compared and no signal (default: ``window_days``).
    """

    # the channels whose sends, opens and opt-outs are store events (omnicrm.frequency.data.SEND_EVENT)
    channel: Literal["email", "push"] = "email"
    code_prefix: str = Field(default="NLC", min_length=1)
    arms: list[int] = Field(default_factory=lambda: [1, 2, 4, 8], min_length=2)
    current: int = 4
    window_days: int = Field(default=147, ge=7, le=730)
    beta_days: int | None = Field(default=None, ge=7, le=730)

    @model_validator(mode="after")
    def _current_is_an_arm(self) -> ExperimentSettings:
        if self.beta_days is not None and self.beta_days > self.window_days:
            raise ValueError(f"'beta_days' ({self.beta_days}) must not exceed 'window_days' ({self.window_days})")
        if self.current not in self.arms:
            raise ValueError(f"'current' ({self.current}) must be one of the arms {self.arms}")
        if len(set(self.arms)) != len(self.arms) or min(self.arms) < 1:
            raise ValueError(f"'arms' must be distinct positive integers. Got {self.arms} instead.")
        return self


class UnsubscribeCost(StrictModel):
    """What an unsubscribe costs: the lost future value of a contactable customer.

    ``basis: clv``: ``cost(i) = share * clv(i)``, ``clv(i) = margin_rate * column(i) * horizon_years``
    (the feature ``spend_365d``: a year's gross spend, so the CLV is the next ``horizon_years`` at last
    year's margin), ``fallback`` where the column is missing. ``share`` is the part of that value that
    rests on being contactable on the channel; ``estimated`` measures it on the experiment (the margin
    an extra open brings times the opens a year at the current cadence, over the margin a year): one
    share for everyone.

    ``basis: contact``: the part of the customer's future value that rests on contact, per customer:
    the margin of an extra open (scaled by the customer's order value, as the opens' value is) times
    the opens the customer is predicted to make over ``horizon_years`` at the current cadence. What a
    customer loses by unsubscribing depends on how much they respond to the channel, not only on how
    much they spend (on the default world the ``clv`` cost correlates 0.16 with the true loss, the
    ``contact`` cost about 0.6).
    """

    basis: Literal["clv", "contact"] = "clv"
    column: str = "spend_365d"
    margin_rate: float = Field(default=0.3, gt=0, le=1)
    horizon_years: float = Field(default=1.0, gt=0, le=10)
    share: Annotated[float, Field(ge=0, le=1)] | Literal["estimated"] = "estimated"
    fallback: float = Field(default=0.0, ge=0)


class EstimatorSettings(StrictModel):
    """The dose model over cadence arms.

    Attributes
    ----------
    learner
        ``dose``: one LightGBM model per outcome over the features and log2(cadence), monotone in the
        cadence (:class:`omnicrm.frequency.estimate.DoseLearner`); or an :mod:`omnicrm.uplift.learners`
        meta-learner (arms vs the current cadence) per outcome.
    mode
        ``mediated``: the margin effect of a cadence is the margin one more open brings (measured
        between the randomised arms) times the customer's predicted change of opens, scaled by the
        customer's order value (``scale_column`` over its mean); ``direct``: the learner's predicted
        change of margin (noisier: a quarter's margin varies far more than its opens).
    mediator
        How the margin of an extra open (``mediated`` mode) is measured between the arms: ``margin``, the
        slope of the arms' mean margin on their mean opens; ``orders``, the slope of their mean orders
        times the margin of an order in the experiment. An order's value varies a lot from basket to
        basket; counting orders leaves that noise out of the comparison between arms.
    model
        LightGBM parameters overriding ``omnicrm.uplift.learners.default_model``.
    outcome_models
        Per outcome (``opens``, ``unsubscribed``, ``margin``), parameters over ``model``: opens are
        plentiful and varied, unsubscribes rare, so the settings a cross-validated loss prefers differ.
    min_gain
        A customer moves off the current cadence only when another beats it by more than this (currency
        units over the outcome window): a gain within the estimate's noise is no reason to change.
    folds
        Cross-fitting folds of the evaluation (by customer).
    """

    learner: Literal["dose", "S", "T", "X", "DR"] = "dose"
    mode: Literal["mediated", "direct"] = "mediated"
    mediator: Literal["margin", "orders"] = "margin"
    scale_column: str | None = "aov_365d"
    model: dict[str, Any] = {}
    outcome_models: dict[Literal["opens", "unsubscribed", "margin"], dict[str, Any]] = {}
    min_gain: float = Field(default=0.0, ge=0)
    folds: int = Field(default=2, ge=2, le=10)
    seed: int = 0

    @model_validator(mode="after")
    def _lightgbm_params(self) -> EstimatorSettings:
        from omnicrm.lgbm_params import check_lgbm_params

        checks = {"'model'": self.model} | {
            f"'outcome_models.{outcome}'": {**self.model, **params} for outcome, params in self.outcome_models.items()
        }
        for where, params in checks.items():
            try:
                # the dose is one more feature (with its own monotone constraint): positions are not the config's
                check_lgbm_params(params, per_feature=False)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        return self


class TruthSettings(StrictModel):
    """Synthetic ground truth: per-person true value of each cadence, and the record -> person map."""

    cadence: str
    record_owner: str


class FrequencyConfig(StrictModel):
    """A contact-frequency config: store, features, experiment, limits, pricing, estimator, truth."""

    name: str
    store: str
    features: str | dict = "../features/default.yaml"
    experiment: ExperimentSettings = ExperimentSettings()
    #: the hard (legal / business) maximum cadence per channel, contacts per four weeks
    max_cadence: dict[Literal["email", "push", "sms"], int] = Field(default_factory=lambda: {"email": 8})
    unsubscribe_cost: UnsubscribeCost = UnsubscribeCost()
    estimator: EstimatorSettings = EstimatorSettings()
    bootstrap: int = Field(default=400, ge=50, le=5000)
    truth: TruthSettings | None = None
    mlflow_experiment: str = "omnicrm-frequency"

    @model_validator(mode="after")
    def _max_for_the_channel(self) -> FrequencyConfig:
        ch = self.experiment.channel
        if ch not in self.max_cadence:
            raise ValueError(f"'max_cadence' has no entry for the experiment's channel '{ch}'")
        if any(v < 0 for v in self.max_cadence.values()):
            raise ValueError(f"'max_cadence' values must be >= 0. Got {self.max_cadence} instead.")
        if self.max_cadence[ch] < min(self.experiment.arms):
            raise ValueError(
                f"'max_cadence.{ch}' is {self.max_cadence[ch]}, below every arm {sorted(self.experiment.arms)}: no "
                "cadence the experiment measured could be recommended (to stop contact on a channel, withdraw it "
                "from the next-best-action catalogue instead)"
            )
        return self


def load_frequency_config(path: str | Path) -> tuple[FrequencyConfig, Any]:
    """The config and its feature config (``features``: a path relative to the config file, or inline)."""
    from omnicrm.features.config import resolve_feature_config

    path = Path(path)
    cfg = load_config(FrequencyConfig, path)
    feats = resolve_feature_config(cfg.features, path.parent, f"{path} (key 'features')")
    return cfg, feats
