"""Randomised campaigns: schedule, random assignment and true per-person effects.

A campaign is sent on one channel (e-mail, SMS or push) to the loyalty members who are alive and
consent to that channel. Each member is randomised into control (``control_share``) or one of the
actions. The *true effect* of an action for a person is an additive change of their weekly purchase
probability during the two weeks starting with the send week; it depends on the person's traits:

==================  =================================================================
action              effect grows with
==================  =================================================================
``discount_10pct``  how rarely a person buys (occasional shoppers wait for a deal),
                    amplified by price sensitivity (negative for frequent, price-
                    insensitive buyers: a discount cheapens the brand for them and
                    pulls nothing forward)
``new_arrivals``    e-mail responsiveness
``free_shipping``   preference for buying online
==================  =================================================================

Each has person-level noise, so some people respond negatively to every action. The channel scales
the effect (an SMS is read but carries less; see ``CHANNEL_REACH``). Treated people get the effect
in the simulation; control people do not.

Every effect is driven by a trait that leaves traces in a retailer's data (purchase frequency,
e-mail opens, the online share of orders), so a model can learn who responds: price sensitivity on
its own shows nowhere in behaviour and only amplifies the discount. Sizes: the average effect is
about +0.055 on the weekly purchase probability (standard deviation 0.06-0.075 across people, about a
quarter of people respond negatively), about +10 points on two-week purchase from a base of about
21%; relative lifts like the Hillstrom e-mails' on visits (+72% for the Mens e-mail). Smaller or
noisier effects could not be learnt per customer from eight campaigns of ~3,700 exposures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from omnicrm.synthetic.config import WorldConfig
from omnicrm.synthetic.formats import zero_pad
from omnicrm.synthetic.people import Population

#: Channels of campaigns in the order they take turns.
CHANNEL_ROTATION: Final = ("email", "sms", "email", "push")
#: How much of a person's effect a channel delivers.
CHANNEL_REACH: Final = {"email": 1.0, "sms": 0.8, "push": 0.9}
#: Cost per exposure in hundredths of the currency: the message itself ...
CHANNEL_COST: Final = {"email": 1, "sms": 5, "push": 1}
#: ... plus the expected cost of the offer.
ACTION_COST: Final = {"discount_10pct": 45, "free_shipping": 25, "new_arrivals": 0}
CONTROL = -1
#: Weeks (from the send week) during which an action changes purchase probability.
EFFECT_WEEKS: Final = 2


@dataclass(frozen=True)
class CampaignPlan:
    """When and on which channel each campaign is sent.

    Attributes
    ----------
    campaign_id
        ``CMP001``-style ids.
    week
        Week of the period (0-based) in which the campaign is sent.
    channel
        ``email``, ``sms`` or ``push``.
    send_ts
        Start of the send (epoch seconds, UTC): 07:00 on the first day of the send week; messages
        go out over the next 45 minutes.
    """

    campaign_id: np.ndarray
    week: np.ndarray
    channel: np.ndarray
    send_ts: np.ndarray

    @property
    def size(self) -> int:
        """Number of campaigns."""
        return int(self.week.size)


def plan_campaigns(config: WorldConfig, n_weeks: int, start_ts: int) -> CampaignPlan:
    """Spread ``n_campaigns`` evenly over the period, leaving room for the effect window at the end."""
    n = config.n_campaigns
    first = min(4, max(n_weeks // 4, 0))
    last = max(n_weeks - 1 - EFFECT_WEEKS, first)
    week = np.round(np.linspace(first, last, n)).astype(np.int64) if n else np.zeros(0, np.int64)
    channel = np.asarray([CHANNEL_ROTATION[i % len(CHANNEL_ROTATION)] for i in range(n)], dtype=str)
    # early on the first day of the send week (07:00 UTC), so the two-week effect window
    # starts with the message
    send_ts = start_ts + 7 * week * 86400 + 7 * 3600
    campaign_id = zero_pad(np.arange(n) + 1, 3, "CMP")
    return CampaignPlan(campaign_id=campaign_id, week=week, channel=channel, send_ts=send_ts)


def person_effects(pop: Population, actions: list[str], rng: np.random.Generator) -> np.ndarray:
    """True effect of each action on each person's weekly purchase probability (before channel reach).

    Returns
    -------
    numpy.ndarray
        Shape ``(n_people, len(actions))``.
    """
    n = pop.size
    # rarity in (0, 1]: 1 for someone who (almost) never buys, ~0.37 at the mean rate of 0.12 orders/week
    rarity = np.exp(-pop.purchase_rate / 0.12)
    formulas = {
        "discount_10pct": lambda z: 0.28 * rarity * (0.5 + pop.price_sensitivity) - 0.065 + 0.008 * z,
        "new_arrivals": lambda z: 0.50 * pop.email_responsiveness - 0.045 + 0.008 * z,
        "free_shipping": lambda z: 0.28 * pop.online_share - 0.075 + 0.008 * z,
    }
    # draw noise for every known action so that the effects do not depend on which are configured
    noise = {name: rng.normal(size=n) for name in formulas}
    return np.stack([formulas[a](noise[a]) for a in actions], axis=1)


def assign_arms(n: int, n_actions: int, control_share: float, rng: np.random.Generator) -> np.ndarray:
    """Randomise ``n`` people: ``CONTROL`` with probability ``control_share``, else an action index."""
    action = rng.integers(0, n_actions, n)
    return np.where(rng.random(n) < control_share, CONTROL, action)


def exposure_cost(channel: str, arm: np.ndarray, actions: list[str]) -> np.ndarray:
    """Cost of each exposure in hundredths; control members are not contacted and cost nothing."""
    per_action = np.array([ACTION_COST[a] for a in actions], dtype=np.int64) + CHANNEL_COST[channel]
    return np.where(arm == CONTROL, 0, per_action[np.maximum(arm, 0)])
