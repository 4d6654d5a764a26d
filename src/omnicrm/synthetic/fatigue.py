"""Contact fatigue and the randomised cadence experiment of the synthetic world.

Fatigue
-------
Every person carries a **load**: an exponentially decaying count of the marketing e-mails
(newsletters and campaign e-mails) they received, ``load <- LOAD_DECAY * load`` each week and ``+1``
per e-mail (about the number of e-mails of the last four weeks: a weekly newsletter keeps it near
``REFERENCE_LOAD`` = 3.5 when the next one arrives). Each person has a **tolerance** ``T`` (e-mails
per four weeks they welcome), drawn from traits a retailer sees in its data::

    T = TOLERANCE_MEDIAN * exp(0.9 * z_resp + 0.5 * z_rate + 0.3 * noise)

``z_resp`` is the standardised e-mail responsiveness (it shows in opens), ``z_rate`` the standardised
log purchase rate (it shows in orders). An e-mail received at load ``L``:

* is opened with probability ``clip(responsiveness * m, 0, 0.95)``, ``m = min(exp(-(L -
  REFERENCE_LOAD) / T), M_MAX)``: at the weekly newsletter's load the open rate is the person's
  responsiveness, as before fatigue was modelled; more e-mails than the person tolerates lower it;
* if opened, adds ``EMAIL_EFFECT * min(m, 1)`` to the person's purchase probability of the week it is
  sent (a tired reader is moved less);
* leads to an unsubscribe with probability ``min(U0 * exp(U1 * (L / T - 1)), U_MAX)`` (churned
  people also unsubscribe at ``CHURNED_UNSUB`` a week, as before). Unsubscribes are events of the ESP
  file (``unsubscribe``), a few hours after the e-mail.

Marketing pushes tire too: a push received at push load ``P`` (decaying like the e-mail load)
switches push off with probability ``min(PUSH_U0 * exp(U1 * (P / T - 1)), U_MAX)``; push opt-outs are
events of the push file (``optout``). Campaign effects (:mod:`omnicrm.synthetic.campaigns`) are not
changed by fatigue, so ``truth/treatment_effects.parquet`` stays exact.

The cadence experiment
----------------------
For ``CadenceConfig.weeks`` weeks from ``start_week``, every loyalty member subscribed to e-mail at
the start (signed up before it) is randomised, with equal chances (propensity ``1 / len(arms)``),
to one cadence of the newsletter: ``arms`` e-mails per four weeks (1: one every four weeks, 2: every
other week, 4: weekly, the usual cadence, 8: twice a week). Every arm gets its first e-mail in
the first week, coded ``NLC<arm>-<yyyymmdd>`` instead of ``NL-<yyyymmdd>``, so the retailer's data
holds each member's arm; everyone else stays on the weekly newsletter. After the experiment, members
return to the weekly newsletter.

Truth (``truth/cadence.parquet``, never read by the pipeline)
------------------------------------------------------------
One row per randomised member: ``person_id, arm`` (cadence assigned), ``tolerance``, ``start_load``
and, per cadence ``k`` of the arms, ``value_<k>``: the expected margin (currency units) the
newsletter brings the person over the experiment and ``follow_weeks`` after it, had they been
given cadence ``k`` (weekly after the experiment), plus the probability they are still subscribed
at the end times the value of a subscribed person over the next 52 weeks at the weekly cadence (the
lost future value of an unsubscribe). Expected values follow the formulas above deterministically
from the person's load at the start (no sampling); the margin of an order is the person's expected
basket margin by category preference. ``best`` is the cadence of highest value and ``truth_class``
``saturated`` (best below the weekly 4), ``on_target`` (4) or ``under_saturated`` (above 4). Second
order effects are left out of the truth: e-mail-driven orders also lower churn a little.

``truth/contact.parquet``: one row per person at the end of the period: ``tolerance``,
``email_load``, ``push_load`` (the loads then), ``subscribed`` (still subscribed to e-mail),
``order_margin`` (expected margin of one of their orders) and ``subscribed_value`` (the expected
margin 52 more weekly newsletters would bring from the weekly load: what an unsubscribe loses), so a
next-best-action list can be judged on what one more e-mail truly costs in unsubscribes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import pyarrow as pa

from omnicrm.synthetic.catalogue import Catalogue
from omnicrm.synthetic.config import CadenceConfig
from omnicrm.synthetic.people import Population, person_ids

LOAD_DECAY: Final = float(np.exp(-7 / 28))
#: load just before the next weekly newsletter at a steady weekly cadence: d / (1 - d)
REFERENCE_LOAD: Final = LOAD_DECAY / (1 - LOAD_DECAY)
WEEKLY: Final = 4  # the usual cadence, e-mails per four weeks
TOLERANCE_MEDIAN: Final = 4.5
M_MAX: Final = 1.5
EMAIL_EFFECT: Final = 0.10
U0: Final = 0.0015
U1: Final = 2.0
U_MAX: Final = 0.1
PUSH_U0: Final = 0.0005
CHURNED_UNSUB: Final = 0.0025
FUTURE_WEEKS: Final = 52
# log purchase rate of Gamma(1.2, 0.1): mean digamma(1.2) + log(0.1), sd sqrt(trigamma(1.2))
_LOG_RATE_MEAN, _LOG_RATE_SD = -2.5916, 1.1258
# e-mail responsiveness Beta(1.5, 6): mean 0.2, sd 0.138
_RESP_MEAN, _RESP_SD = 0.2, 0.138
_LINES_PER_ORDER = 1.9  # mean of the generator's lines per order
_MARKDOWN_LOSS = 0.03  # 15% of lines sold at 70-90% of list price: 3% of list price of margin lost


def tolerance(pop: Population, rng: np.random.Generator) -> np.ndarray:
    """Each person's tolerance (e-mails per four weeks) from responsiveness, purchase rate and noise."""
    z_resp = (pop.email_responsiveness - _RESP_MEAN) / _RESP_SD
    z_rate = (np.log(np.maximum(pop.purchase_rate, 1e-9)) - _LOG_RATE_MEAN) / _LOG_RATE_SD
    noise = rng.normal(size=pop.size)
    return TOLERANCE_MEDIAN * np.exp(0.9 * z_resp + 0.5 * z_rate + 0.3 * noise)


def open_multiplier(load: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """How much fatigue scales the open probability (1 at the weekly newsletter's load)."""
    return np.minimum(np.exp(-(load - REFERENCE_LOAD) / tol), M_MAX)


def open_probability(resp: np.ndarray, load: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Probability an e-mail received at ``load`` is opened."""
    return np.clip(resp * open_multiplier(load, tol), 0.0, 0.95)


def email_effect(load: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Purchase-probability effect of an opened e-mail in its week."""
    return EMAIL_EFFECT * np.minimum(open_multiplier(load, tol), 1.0)


def unsubscribe_probability(load: np.ndarray, tol: np.ndarray, base: float = U0) -> np.ndarray:
    """Probability an e-mail (or push, with ``base=PUSH_U0``) received at ``load`` makes the person opt out."""
    return np.minimum(base * np.exp(U1 * (load / tol - 1.0)), U_MAX)


def sends_in_week(arm: np.ndarray, week: np.ndarray) -> np.ndarray:
    """E-mails sent in week ``week`` (0-based within the experiment) to cadence ``arm`` (per four weeks).

    Cumulative sends by the end of week ``w`` are ``ceil((w + 1) * arm / 4)``: every arm mails in the
    first week, 8 mails twice a week, 1 every fourth week.
    """
    arm = np.asarray(arm, dtype=np.int64)
    week = np.asarray(week, dtype=np.int64)
    done = -(-(week + 1) * arm // 4)
    before = np.where(week > 0, -(-week * arm // 4), 0)
    return done - before


@dataclass(frozen=True)
class CadencePlan:
    """When the experiment runs and its arms.

    Attributes
    ----------
    arms
        Cadences (e-mails per four weeks).
    start_week, weeks, follow_weeks
        First week of the experiment (0-based week of the period), its length, and the weeks after it
        over which its value is counted.
    """

    arms: np.ndarray
    start_week: int
    weeks: int
    follow_weeks: int

    def active(self, week: int) -> bool:
        """Whether ``week`` of the period is inside the experiment."""
        return self.start_week <= week < self.start_week + self.weeks


def plan_cadence(config: CadenceConfig, n_weeks: int) -> CadencePlan | None:
    """The experiment's weeks: ``config.start_week`` or, by default, ending ``follow_weeks`` before the end."""
    if not config.enabled:
        return None
    start = config.start_week
    if start is None:
        start = n_weeks - config.weeks - config.follow_weeks - 1
    start = int(min(max(start, 1), max(n_weeks - config.weeks, 1)))
    return CadencePlan(np.asarray(config.arms, dtype=np.int64), start, config.weeks, config.follow_weeks)


def order_margin(pop: Population, catalogue: Catalogue) -> np.ndarray:
    """Expected margin (currency units) of one order of each person, by their category preference.

    A product's chance to be picked is that of :func:`omnicrm.synthetic.catalogue.pick_products`
    (rank ``floor(count * u ** 2.5)``); a line's margin is list price times (margin rate - markdown
    loss) times the expected quantity.
    """
    k = pop.category_pref.shape[1]
    rank = np.arange(catalogue.sku.size) - catalogue.first[catalogue.category]
    count = catalogue.count[catalogue.category]
    pick = ((rank + 1) / count) ** 0.4 - (rank / count) ** 0.4
    price = catalogue.price_pence / 100.0
    qty = 1.0 + np.where(catalogue.price_pence < 1000, 0.5, 0.08)
    line = price * (catalogue.margin_pct / 100.0 - _MARKDOWN_LOSS) * qty
    per_category = np.bincount(catalogue.category, weights=pick * line, minlength=k)[:k]
    return _LINES_PER_ORDER * pop.category_pref @ per_category


def cadence_values(
    pop: Population,
    tol: np.ndarray,
    start_load: np.ndarray,
    who: np.ndarray,
    plan: CadencePlan,
    margin: np.ndarray,
) -> np.ndarray:
    """True expected value of each cadence for the people ``who`` (``(len(who), len(arms))``).

    ``start_load`` is each of their e-mail loads at the start of the experiment (aligned with ``who``).

    Value = expected newsletter-driven margin over the experiment and its follow-up (weekly cadence after
    it) + probability still subscribed at the end * value of 52 more weekly newsletters from the steady
    weekly load. Deterministic: the expected load path given the sends (the load counts e-mails
    received, which stop when the person unsubscribes; the expectation conditions on staying subscribed
    and weights by the survival probability).
    """
    resp = pop.email_responsiveness[who]
    t = tol[who]
    # extra orders per extra buying week: 1 + Poisson(lambda / 2) orders, lambda ~ the weekly rate
    per_buy = (1.0 + pop.purchase_rate[who] / 2.0) * margin[who]
    # value of staying subscribed over FUTURE_WEEKS weekly newsletters, with their own unsubscribes
    future = subscribed_value(pop, tol, who, margin)
    out = np.zeros((who.size, plan.arms.size))
    for j, arm in enumerate(plan.arms):
        load = np.asarray(start_load, dtype=float).copy()
        alive = np.ones(who.size)
        value = np.zeros(who.size)
        for w in range(plan.weeks + plan.follow_weeks):
            n_send = int(sends_in_week(np.array([arm]), np.array([w]))[0]) if w < plan.weeks else 1
            for _ in range(n_send):
                value += alive * open_probability(resp, load, t) * email_effect(load, t) * per_buy
                alive = alive * (1.0 - unsubscribe_probability(load, t))
                load = load + 1.0
            load = load * LOAD_DECAY
        out[:, j] = value + alive * future
    return out


def subscribed_value(pop: Population, tol: np.ndarray, who: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """Expected margin of ``FUTURE_WEEKS`` weekly newsletters from the weekly load, with their own unsubscribes."""
    resp = pop.email_responsiveness[who]
    t = tol[who]
    per_buy = (1.0 + pop.purchase_rate[who] / 2.0) * margin[who]
    steady = np.full(who.size, REFERENCE_LOAD)
    weekly_value = open_probability(resp, steady, t) * email_effect(steady, t) * per_buy
    keep = (1.0 - unsubscribe_probability(steady, t)) ** np.arange(FUTURE_WEEKS)[:, None]
    return (keep * weekly_value).sum(axis=0)


def contact_truth(
    pop: Population,
    tol: np.ndarray,
    email_load: np.ndarray,
    push_load: np.ndarray,
    subscribed: np.ndarray,
    catalogue: Catalogue,
) -> pa.Table:
    """Truth per person at the end of the period (``truth/contact.parquet``), see the module docstring."""
    everyone = np.arange(pop.size)
    margin = order_margin(pop, catalogue)
    return pa.table(
        {
            "person_id": pa.array(person_ids(everyone)),
            "tolerance": pa.array(tol),
            "email_load": pa.array(np.asarray(email_load, dtype=float)),
            "push_load": pa.array(np.asarray(push_load, dtype=float)),
            "subscribed": pa.array(np.asarray(subscribed, dtype=bool)),
            "order_margin": pa.array(margin),
            "subscribed_value": pa.array(subscribed_value(pop, tol, everyone, margin)),
        }
    )


def cadence_truth(
    pop: Population,
    tol: np.ndarray,
    start_load: np.ndarray,
    who: np.ndarray,
    arm: np.ndarray,
    plan: CadencePlan,
    catalogue: Catalogue,
) -> pa.Table:
    """Truth per randomised member (``truth/cadence.parquet``), see the module docstring."""
    values = cadence_values(pop, tol, start_load, who, plan, order_margin(pop, catalogue))
    best = plan.arms[np.argmax(values, axis=1)] if who.size else np.zeros(0, np.int64)
    klass = np.where(best < WEEKLY, "saturated", np.where(best == WEEKLY, "on_target", "under_saturated"))
    cols: dict[str, pa.Array] = {
        "person_id": pa.array(person_ids(who)),
        "arm": pa.array(np.asarray(arm, dtype=np.int64)),
        "tolerance": pa.array(tol[who]),
        "start_load": pa.array(np.asarray(start_load, dtype=float)),
    }
    for j, k in enumerate(plan.arms):
        cols[f"value_{int(k)}"] = pa.array(values[:, j])
    cols["best"] = pa.array(best.astype(np.int64))
    cols["truth_class"] = pa.array(klass.astype(str))
    return pa.table(cols)
