"""Typed configuration of the synthetic world (``configs/generate/*.yaml``).

Load a file with ``omnicrm.config.load_config(WorldConfig, path)``; unknown keys and bad values are
errors that name the file and the key.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Final

from pydantic import Field, field_validator, model_validator

from omnicrm.config import StrictModel
from omnicrm.synthetic.vocabulary import CATEGORIES

#: Actions the generator knows how to give a true effect to (see :mod:`omnicrm.synthetic.campaigns`).
KNOWN_ACTIONS: Final = ("discount_10pct", "free_shipping", "new_arrivals")


def _rate(default: float, high: float = 0.5) -> float:
    """A probability field; rates of damage are capped at 0.5 so the mess stays resolvable."""
    return Field(default=default, ge=0.0, le=high)


class MessConfig(StrictModel):
    """How messy personal data and rows are. Every rate is a probability per record (or row).

    Attributes
    ----------
    typo_rate
        Probability that a typo-prone field of a record (names, a hand-keyed e-mail) has a typo.
    missing_rate
        Probability that an optional contact field of a record (e-mail, phone, postcode) is empty.
    case_whitespace_rate
        Probability that a text value is written in a non-canonical case or with stray spaces.
    second_email_rate
        Share of people who have a second e-mail address (a second shop account, sometimes the
        address they subscribed with).
    household_phone_rate
        Share of multi-person households that share a landline given by their members.
    duplicate_member_rate
        Share of loyalty members with a second member record (new member id and card).
    duplicate_row_rate
        Share of rows of each event file repeated exactly (same record id).
    bad_row_rate
        Share of rows of each event file made malformed (bad timestamp, negative price, unknown
        category value, empty id, out-of-range score).
    """

    typo_rate: float = _rate(0.03)
    missing_rate: float = _rate(0.04)
    case_whitespace_rate: float = _rate(0.3, high=1.0)
    second_email_rate: float = _rate(0.08, high=1.0)
    household_phone_rate: float = _rate(0.15, high=1.0)
    duplicate_member_rate: float = _rate(0.02)
    duplicate_row_rate: float = _rate(0.002)
    bad_row_rate: float = _rate(0.002)


class CadenceConfig(StrictModel):
    """The randomised cadence experiment (see :mod:`omnicrm.synthetic.fatigue`).

    Attributes
    ----------
    enabled
        Whether the experiment runs (fatigue is always modelled).
    arms
        Cadences of the newsletter, in e-mails per four weeks (4 is the usual weekly newsletter).
    weeks
        Length of the experiment in weeks (a quarter).
    follow_weeks
        Weeks after the experiment over which its outcomes are counted (truth and pipeline).
    start_week
        First week of the experiment (0-based week of the period); by default it ends
        ``follow_weeks + 1`` weeks before the end of the period.
    """

    enabled: bool = True
    arms: list[int] = Field(default_factory=lambda: [1, 2, 4, 8], min_length=2)
    weeks: int = Field(default=13, ge=1, le=52)
    follow_weeks: int = Field(default=8, ge=0, le=52)
    start_week: int | None = Field(default=None, ge=1)

    @field_validator("arms")
    @classmethod
    def _arms(cls, value: list[int]) -> list[int]:
        if any(a < 1 or a > 16 for a in value) or len(set(value)) != len(value):
            raise ValueError(f"The 'arms' parameter must be distinct integers in [1, 16]. Got {value} instead.")
        return sorted(value)


class WorldConfig(StrictModel):
    """Size, time span, seed and messiness of one synthetic omni-channel retail world.

    Attributes
    ----------
    n_people
        Number of people (customers, including those acquired during the period).
    start_date, days
        The simulated period is ``[start_date, start_date + days)``; simulation runs week by week.
    seed
        Seed of every random stream: the same config gives byte-identical files.
    n_products, n_categories
        Catalogue size; categories are the first ``n_categories`` readable category names.
    n_stores
        Number of physical stores (spread over regions).
    n_campaigns
        Randomised campaigns spread over the period.
    actions
        Campaign actions (arms) besides control; each must be one of ``KNOWN_ACTIONS``.
    control_share
        Share of each campaign's eligible audience held out as control.
    mess
        Messiness of personal data and rows, see :class:`MessConfig`.
    cadence
        The randomised cadence experiment of the newsletter, see :class:`CadenceConfig`.
    out_dir
        Where the CLI writes the world (``raw/`` and ``truth/``), relative to the working directory.
    """

    n_people: int = Field(default=20000, gt=0, le=5_000_000)
    start_date: date = date(2023, 1, 1)
    days: int = Field(default=730, ge=28, le=3650)
    seed: int = Field(default=42, ge=0)
    n_products: int = Field(default=2000, gt=0)
    n_categories: int = Field(default=20, ge=1, le=len(CATEGORIES))
    n_stores: int = Field(default=40, ge=1, le=999)
    n_campaigns: int = Field(default=8, ge=0, le=200)
    actions: list[str] = Field(default_factory=lambda: list(KNOWN_ACTIONS), min_length=1)
    control_share: float = Field(default=0.25, gt=0.0, lt=1.0)
    mess: MessConfig = Field(default_factory=MessConfig)
    cadence: CadenceConfig = Field(default_factory=CadenceConfig)
    out_dir: Path = Path("data/world")

    @field_validator("actions")
    @classmethod
    def _known_actions(cls, value: list[str]) -> list[str]:
        unknown = [a for a in value if a not in KNOWN_ACTIONS]
        if unknown:
            raise ValueError(
                f"The 'actions' parameter must be a list of str among {set(KNOWN_ACTIONS)}. Got {unknown} instead."
            )
        if len(set(value)) != len(value):
            raise ValueError(f"The 'actions' parameter must not repeat an action. Got {value} instead.")
        return value

    @model_validator(mode="after")
    def _enough_products(self) -> WorldConfig:
        if self.n_products < self.n_categories:
            raise ValueError(
                f"n_products ({self.n_products}) must be at least n_categories ({self.n_categories}) "
                "so that every category has a product"
            )
        return self
