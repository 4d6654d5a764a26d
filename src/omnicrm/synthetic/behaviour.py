"""Week-by-week simulation of what people do: buy, return, browse, read e-mail, call, churn.

The loop runs over weeks; within a week every person is handled at once with numpy. Each week:

1. **Churn.** A person who is not yet gone leaves with weekly hazard
   ``h = base_hazard * exp(neglect_sensitivity * min(neglect, 52) / 13 - 0.3 * satisfaction)
   * (1 + 1.5 * unresolved)``, where ``neglect`` is the number of weeks since their last purchase and
   ``unresolved`` an exponentially decaying count of unresolved service contacts. Churned people
   stop buying, browsing, calling and answering surveys; they still get newsletters (opening few).
2. **Campaigns** sent this week randomise their audience (:mod:`omnicrm.synthetic.campaigns`);
   treated people's true effect is added to their weekly purchase probability in the send week
   and the next. Messages go out early on the first day of the week and no exposed person's order
   of that week precedes their message, so the effect window is ``[sent_at, sent_at + 14 days)``.
3. **Purchases.** ``p = 1 - exp(-purchase_rate * season) + effect``; a buyer places
   ``1 + Poisson(lambda / 2)`` orders, each in store, on the web or in the app by their channel
   preference. A newly acquired person buys on their signup day through their signup channel.
4. **Browsing** (Poisson visits), **newsletter** (weekly, opens by responsiveness and fatigue; an
   opened newsletter raises the next week's purchase probability), **push** (app users who allow
   it), **service contacts** (more after online orders; a quarter unresolved) and **NPS** answers
   (score by satisfaction, lower after unresolved contacts).

Contact fatigue (every marketing e-mail and push lowers the next one's open chance and effect and
raises the chance to unsubscribe or switch push off, by each person's tolerance) and the randomised
cadence experiment of the newsletter are described in :mod:`omnicrm.synthetic.fatigue`; their draws
come from the ``fatigue`` stream.

Order lines, returns (3-30 days later) and sessions around online orders are drawn after the loop
for all orders at once. All times are epoch seconds (UTC); activities follow local (UK) hours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from omnicrm.synthetic.campaigns import CHANNEL_REACH, CONTROL, EFFECT_WEEKS, CampaignPlan, assign_arms
from omnicrm.synthetic.catalogue import Catalogue, pick_products
from omnicrm.synthetic.config import WorldConfig
from omnicrm.synthetic.fatigue import (
    CHURNED_UNSUB,
    LOAD_DECAY,
    PUSH_U0,
    CadencePlan,
    email_effect,
    open_multiplier,
    sends_in_week,
    unsubscribe_probability,
)
from omnicrm.synthetic.formats import epoch_seconds, utc_from_local
from omnicrm.synthetic.people import APP, STORE, WEB, Population, Stores
from omnicrm.synthetic.vocabulary import SERVICE_REASONS

DAY = 86400
HOUR = 3600
# Share of online shopping and browsing by local hour of day (evening peak, quiet nights).
_ONLINE_HOURS = np.array([2, 1, 1, 1, 1, 1, 2, 4, 5, 5, 5, 6, 7, 6, 5, 5, 5, 6, 8, 10, 11, 10, 7, 4], dtype=float)
_LINES_PER_ORDER = (np.array([1, 2, 3, 4]), np.array([0.45, 0.30, 0.15, 0.10]))
_MARKDOWN_SHARE = 0.15  # lines sold below list price (sales, clearance)
_RETURN_SCALE = 1.05  # scales category return rates to ~8% of lines overall


@dataclass(frozen=True)
class Simulation:
    """What happened, as tidy frames of integers (decoded to source text by ``sources``).

    Attributes
    ----------
    orders
        ``person, ts, channel`` (0 store, 1 web, 2 app), ``store``, ``discount`` (a treated 10% discount
        applied), sorted by ``ts``.
    lines
        ``order`` (row of ``orders``), ``line_no`` (1-based), ``product``, ``qty``, ``unit_pence``,
        ``return_ts`` (-1 if kept).
    sessions
        ``person, ts, platform`` (1 web, 2 app), ``page_views``, ``order`` (-1 or the order placed).
    emails
        ``person, ts, event`` (0 sent, 1 open, 2 click, 3 unsubscribe), ``campaign`` (-1 newsletter),
        ``newsletter_day`` (day of the newsletter, -1 for campaigns), ``cadence`` (the cadence arm of
        an experiment newsletter, 0 otherwise); an unsubscribe carries the mailing that caused it.
    pushes
        ``person, ts, event`` (0 sent, 1 open, 2 opt-out), ``campaign`` (-1 marketing push).
    contacts
        ``person, ts, chat`` (bool), ``reason`` (index into ``SERVICE_REASONS``), ``resolved``.
    nps
        ``person, ts, score``.
    exposures
        ``person, campaign, arm`` (-1 control, else action index), ``ts``.
    effects
        Truth per exposure: ``person, campaign, arm, baseline_p`` and one ``effect_<action>`` column
        per action (after channel reach).
    churn_day
        Day (from ``start_date``) each person churned, -1 if still a customer at the end.
    subscribed_end, push_end
        Whether each person is still subscribed to e-mail / push at the end.
    cadence_who, cadence_arm, cadence_load
        The cadence experiment's members, their arm and their e-mail load at its start (empty without
        an experiment).
    email_load_end, push_load_end
        Each person's e-mail and push load at the end of the period (:mod:`omnicrm.synthetic.fatigue`).
    """

    orders: pd.DataFrame
    lines: pd.DataFrame
    sessions: pd.DataFrame
    emails: pd.DataFrame
    pushes: pd.DataFrame
    contacts: pd.DataFrame
    nps: pd.DataFrame
    exposures: pd.DataFrame
    effects: pd.DataFrame
    churn_day: np.ndarray
    subscribed_end: np.ndarray
    push_end: np.ndarray
    cadence_who: np.ndarray
    cadence_arm: np.ndarray
    cadence_load: np.ndarray
    email_load_end: np.ndarray
    push_load_end: np.ndarray


def seasonality(start_ts: int, n_weeks: int) -> np.ndarray:
    """Multiplier of purchase rates per week: a Christmas peak, January sales, a summer lull."""
    mid = start_ts + (7 * np.arange(n_weeks) + 3.5) * DAY
    stamp = mid.astype("datetime64[s]")
    doy = (stamp - stamp.astype("datetime64[Y]")) / np.timedelta64(1, "D")
    christmas = 0.9 * np.exp(-0.5 * ((doy - 350) / 12) ** 2)
    black_friday = 0.6 * np.exp(-0.5 * ((doy - 330) / 3) ** 2)
    january = 0.3 * np.exp(-0.5 * ((doy - 5) / 6) ** 2)
    summer = -0.15 * np.exp(-0.5 * ((doy - 220) / 25) ** 2)
    return 1.0 + christmas + black_friday + january + summer


def _flat_cumsum(matrix: np.ndarray) -> tuple[np.ndarray, int]:
    """Flattened cumulative sum of a row-stochastic matrix (row ``i`` then covers ``(i, i + 1]``)."""
    rows = matrix / matrix.sum(axis=1, keepdims=True)
    return np.cumsum(rows.ravel()), matrix.shape[1]


def _sample_rows(cum: tuple[np.ndarray, int], who: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw a column for each row index in ``who`` from the row's probabilities.

    One binary search over the flattened cumulative sums (see :func:`_flat_cumsum`) for
    ``i + u`` lands in row ``i`` at the drawn column: a categorical draw per row without a loop or
    a per-row copy of the matrix.
    """
    flat, k = cum
    idx = np.searchsorted(flat, who + rng.random(who.size), side="right")
    # rounding in the running sum can push a draw one slot over a row boundary; clip it back
    return np.clip(idx - who * k, 0, k - 1)


def _local_seconds(channel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Seconds after local midnight: stores trade 9:00-20:00, online follows ``_ONLINE_HOURS``."""
    n = channel.size
    store = (9 + 11 * rng.beta(2.0, 2.0, n)) * HOUR
    hours = rng.choice(24, size=n, p=_ONLINE_HOURS / _ONLINE_HOURS.sum())
    online = (hours + rng.random(n)) * HOUR
    return np.where(channel == STORE, store, online).astype(np.int64)


def _to_ts(start_ts: int, day: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """UTC instants of local wall-clock ``seconds`` on ``day`` (days from the start)."""
    return utc_from_local(start_ts + np.asarray(day, dtype=np.int64) * DAY + seconds)


class _Chunks:
    """Column-wise accumulation of per-week arrays (concatenated once at the end)."""

    def __init__(self, *names: str) -> None:
        self._cols: dict[str, list[np.ndarray]] = {name: [] for name in names}

    def add(self, **cols: np.ndarray) -> None:
        for name, values in cols.items():
            self._cols[name].append(np.asarray(values))

    def frame(self, dtypes: dict[str, str] | None = None) -> pd.DataFrame:
        data = {}
        for name, parts in self._cols.items():
            dtype = (dtypes or {}).get(name, "int64")
            data[name] = np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
        return pd.DataFrame(data)


def simulate(
    pop: Population,
    stores: Stores,
    catalogue: Catalogue,
    plan: CampaignPlan,
    effects: np.ndarray,
    config: WorldConfig,
    rng: np.random.Generator,
    progress: Callable[[float], None] | None = None,
    *,
    tol: np.ndarray | None = None,
    cadence: CadencePlan | None = None,
    frng: np.random.Generator | None = None,
) -> Simulation:
    """Simulate the period week by week.

    Parameters
    ----------
    pop, stores, catalogue
        The people, stores and products.
    plan
        Campaign schedule.
    effects
        True effect of each action for each person, ``(n_people, n_actions)``.
    config
        World configuration.
    rng
        Random generator of the ``behaviour`` stream.
    progress
        Called with the fraction of weeks done.
    tol
        Each person's tolerance of contacts (:func:`omnicrm.synthetic.fatigue.tolerance`); ``None``:
        everyone tolerates the weekly newsletter exactly.
    cadence
        The cadence experiment, or ``None``.
    frng
        Random generator of the ``fatigue`` stream (unsubscribes, opt-outs, cadence arms).

    Returns
    -------
    Simulation
    """
    n = pop.size
    days = config.days
    n_weeks = -(-days // 7)
    start_ts = epoch_seconds(config.start_date)
    end_ts = start_ts + days * DAY
    season = seasonality(start_ts, n_weeks)
    online = pop.online_share
    app_share = np.where(online > 0, pop.channel_pref[:, APP] / np.maximum(online, 1e-12), 0.0)
    channel_cum = _flat_cumsum(pop.channel_pref)
    people = np.arange(n)
    tol = np.full(n, 3.5) if tol is None else tol
    frng = np.random.default_rng(0) if frng is None else frng
    load = np.zeros(n)  # decaying count of marketing e-mails received (omnicrm.synthetic.fatigue)
    push_load = np.zeros(n)
    email_carry = np.zeros(n)  # purchase-probability effect of this week's opened newsletters, next week
    cad_arm = np.zeros(n, dtype=np.int64)
    cad_who = np.zeros(0, dtype=np.int64)
    cad_load = np.zeros(0)
    cad_arm_at_start = np.zeros(0, dtype=np.int64)

    churned = np.zeros(n, dtype=bool)
    churn_day = np.full(n, -1, dtype=np.int64)
    # weeks since the last purchase at the start: geometric waiting time of each person's rate
    p_week = -np.expm1(-pop.purchase_rate)
    neglect = np.minimum(rng.geometric(np.maximum(p_week, 1e-3)) - 1, 52).astype(float)
    unresolved = np.zeros(n)
    unsubscribed = np.zeros(n, dtype=bool)
    push_off = np.zeros(n, dtype=bool)
    online_recent = np.zeros(n, dtype=bool)
    # running campaign effects: (last week, who, effect, gets the discount)
    active: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    discount_arm = config.actions.index("discount_10pct") if "discount_10pct" in config.actions else -2

    orders = _Chunks("person", "day", "channel", "discount")
    visits = _Chunks("person", "day", "platform")
    emails = _Chunks("person", "ts", "event", "campaign", "newsletter_day", "cadence")
    pushes = _Chunks("person", "ts", "event", "campaign")
    contacts = _Chunks("person", "day", "chat", "reason", "resolved")
    nps = _Chunks("person", "day", "score")
    exposures = _Chunks("person", "campaign", "arm", "ts")
    truth = _Chunks("person", "campaign", "arm", "baseline_p", *(f"effect_{a}" for a in config.actions))

    def email_events(who: np.ndarray, sent: np.ndarray, campaign: int, nl_day: int) -> None:
        """Sends, opens, clicks and unsubscribes of one mailing to ``who`` (sent at ``sent``).

        Fatigue: the open chance and (for a newsletter) the effect on next week's purchase probability
        fall, and the unsubscribe chance rises, with the recipient's load over their tolerance.
        """
        before = load[who]
        resp = pop.email_responsiveness[who] * np.where(churned[who], 0.3, 1.0)
        opened = rng.random(who.size) < np.clip(resp * open_multiplier(before, tol[who]), 0.0, 0.95)
        open_ts = sent + np.minimum(rng.exponential(6 * HOUR, who.size), 7 * DAY).astype(np.int64) + 30
        clicked = opened & (rng.random(who.size) < 0.1 + 0.6 * pop.email_responsiveness[who])
        click_ts = open_ts + rng.integers(5, 1800, who.size)
        if campaign < 0:  # a campaign's effect is its action's (campaigns.py), not a newsletter's
            email_carry[who[opened]] += email_effect(before[opened], tol[who[opened]])
        p_unsub = unsubscribe_probability(before, tol[who]) + np.where(churned[who] & (campaign < 0), CHURNED_UNSUB, 0)
        unsub = frng.random(who.size) < p_unsub
        unsubscribed[who[unsub]] = True
        unsub_ts = sent + np.minimum(frng.exponential(12 * HOUR, who.size), 3 * DAY).astype(np.int64) + 60
        load[who] += 1.0
        arm = cad_arm[who] if campaign < 0 else np.zeros(who.size, dtype=np.int64)
        for event, mask, ts in ((0, None, sent), (1, opened, open_ts), (2, clicked, click_ts), (3, unsub, unsub_ts)):
            keep = (ts < end_ts) if mask is None else mask & (ts < end_ts)
            m = int(keep.sum())
            emails.add(
                person=who[keep],
                ts=ts[keep],
                event=np.full(m, event),
                campaign=np.full(m, campaign),
                newsletter_day=np.full(m, nl_day),
                cadence=arm[keep],
            )

    def push_events(who: np.ndarray, sent: np.ndarray, campaign: int) -> None:
        """Sends, opens and fatigue opt-outs of pushes to ``who``; churned people no longer open the app."""
        opened = ~churned[who] & (rng.random(who.size) < 0.05 + 0.35 * pop.email_responsiveness[who])
        open_ts = sent + rng.exponential(20 * 60, who.size).astype(np.int64) + 5
        optout = frng.random(who.size) < unsubscribe_probability(push_load[who], tol[who], PUSH_U0)
        push_off[who[optout]] = True
        optout_ts = sent + np.minimum(frng.exponential(6 * HOUR, who.size), 3 * DAY).astype(np.int64) + 60
        push_load[who] += 1.0
        for event, mask, ts in ((0, np.ones(who.size, bool), sent), (1, opened, open_ts), (2, optout, optout_ts)):
            keep = mask & (ts < end_ts)
            m = int(keep.sum())
            pushes.add(person=who[keep], ts=ts[keep], event=np.full(m, event), campaign=np.full(m, campaign))

    for week in range(n_weeks):
        d0, d1 = 7 * week, min(7 * week + 7, days)
        nd = d1 - d0
        signed = pop.signup_day < d1
        new = signed & (pop.signup_day >= d0)

        # 1. churn (the newly acquired are safe in their first week)
        at_risk = signed & ~new & ~churned
        hazard = (
            pop.base_hazard
            * np.exp(pop.neglect_sensitivity * np.minimum(neglect, 52) / 13 - 0.3 * pop.satisfaction)
            * (1 + 1.5 * unresolved)
            * nd
            / 7
        )
        leave = at_risk & (rng.random(n) < -np.expm1(-hazard))
        churn_day[leave] = d0 + rng.integers(0, nd, int(leave.sum()))
        churned |= leave
        alive = signed & ~churned
        subscribed = pop.email_consent & signed & ~unsubscribed
        push_on = pop.push_consent & signed & ~push_off
        load *= LOAD_DECAY ** (nd / 7)
        push_load *= LOAD_DECAY ** (nd / 7)
        if cadence is not None and week == cadence.start_week:
            # consenting members are randomised to a cadence of the newsletter (equal chances)
            cad_who = np.flatnonzero(pop.is_member & subscribed & (pop.signup_day < d0))
            cad_arm[cad_who] = cadence.arms[frng.integers(0, cadence.arms.size, cad_who.size)]
            cad_load = load[cad_who].copy()
            cad_arm_at_start = cad_arm[cad_who].copy()
        if cadence is not None and week == cadence.start_week + cadence.weeks:
            cad_arm[:] = 0  # back to the weekly newsletter

        # 2. campaigns sent this week
        for c in np.flatnonzero(plan.week == week):
            channel = str(plan.channel[c])
            consent = {"email": subscribed, "sms": pop.sms_consent, "push": push_on}[channel]
            who = np.flatnonzero(alive & pop.is_member & (pop.signup_day < d0) & consent)
            arm = assign_arms(who.size, len(config.actions), config.control_share, rng)
            sent = plan.send_ts[c] + rng.integers(0, 45 * 60, who.size)
            tau = effects[who] * CHANNEL_REACH[channel]
            baseline = -np.expm1(-pop.purchase_rate[who] * season[week])
            exposures.add(person=who, campaign=np.full(who.size, c), arm=arm, ts=sent)
            truth.add(
                person=who,
                campaign=np.full(who.size, c),
                arm=arm,
                baseline_p=baseline,
                **{f"effect_{a}": tau[:, j] for j, a in enumerate(config.actions)},
            )
            treated = arm != CONTROL
            active.append(
                (week + EFFECT_WEEKS - 1, who[treated], tau[treated, arm[treated]], arm[treated] == discount_arm)
            )
            if channel == "email":
                email_events(who[treated], sent[treated], int(c), -1)
            elif channel == "push":
                push_events(who[treated], sent[treated], int(c))
        uplift = email_carry.copy()  # last week's opened newsletters
        email_carry[:] = 0.0
        discount = np.zeros(n, dtype=bool)
        for _, who, tau, disc in active:
            uplift[who] += tau
            discount[who[disc]] = True
        active = [a for a in active if a[0] > week]

        # 3. purchases
        lam = pop.purchase_rate * season[week] * nd / 7
        p_buy = np.clip(-np.expm1(-lam) + uplift, 0.0, 1.0)
        buys = alive & ~new & (rng.random(n) < p_buy)
        count = np.where(buys, 1 + rng.poisson(lam / 2), 0)
        who = np.repeat(people, count)
        channel = _sample_rows(channel_cum, who, rng)
        first = np.flatnonzero(new)  # acquisition: first order on the signup day, signup channel
        orders.add(
            person=np.concatenate([who, first]),
            day=np.concatenate([d0 + rng.integers(0, nd, who.size), pop.signup_day[first]]),
            channel=np.concatenate([channel, pop.signup_channel[first]]),
            discount=np.concatenate([discount[who], discount[first]]),
        )
        bought = np.zeros(n, dtype=bool)
        bought[who] = True
        bought[first] = True
        neglect = np.where(bought, 0.0, neglect + nd / 7)
        online_now = np.zeros(n, dtype=bool)
        online_now[who[channel != STORE]] = True
        online_now[first[pop.signup_channel[first] != STORE]] = True

        # 4. browsing
        n_visits = np.where(alive, rng.poisson(pop.visit_rate * nd / 7), 0)
        vwho = np.repeat(people, n_visits)
        platform = np.where(pop.has_app[vwho] & (rng.random(vwho.size) < app_share[vwho]), APP, WEB)
        visits.add(person=vwho, day=d0 + rng.integers(0, nd, vwho.size), platform=platform)

        # 5. newsletter (Thursday-ish, 08:00 UTC, sent in batches over 90 minutes); members of the
        # cadence experiment get the number of e-mails their arm sends this week (a second one on Monday)
        n_mail = np.ones(n, dtype=np.int64)
        if cadence is not None and cadence.active(week):
            n_mail[cad_who] = sends_in_week(cad_arm[cad_who], np.full(cad_who.size, week - cadence.start_week))
        for extra, day_offset in ((True, 1), (False, 4)):
            nl_day = d0 + min(day_offset, nd - 1)
            readers = np.flatnonzero(subscribed & ~unsubscribed & (n_mail >= (2 if extra else 1)))
            if extra and readers.size == 0:
                continue
            sent = start_ts + nl_day * DAY + 8 * HOUR + rng.integers(0, 90 * 60, readers.size)
            email_events(readers, sent, -1, nl_day)

        # 6. marketing push to half the app users who allow it; churned people uninstall over time
        push_off |= push_on & churned & (rng.random(n) < 0.05)
        targets = np.flatnonzero(push_on & ~push_off & (rng.random(n) < 0.5))
        day = d0 + rng.integers(0, nd, targets.size)
        push_events(targets, _to_ts(start_ts, day, rng.integers(12 * HOUR, 19 * HOUR, targets.size)), -1)

        # 7. service contacts: more likely after online orders (deliveries go wrong)
        p_contact = 0.002 + 0.03 * online_recent
        contact = alive & (rng.random(n) < p_contact)
        cwho = np.flatnonzero(contact)
        chat = rng.random(cwho.size) < 0.2 + 0.5 * online[cwho]
        n_online_reasons = 4  # the first reasons in SERVICE_REASONS are about orders
        reason = np.where(
            online_recent[cwho] & (rng.random(cwho.size) < 0.8),
            rng.integers(0, n_online_reasons, cwho.size),
            rng.integers(0, len(SERVICE_REASONS), cwho.size),
        )
        resolved = rng.random(cwho.size) < np.where(chat, 0.8, 0.72)
        contacts.add(person=cwho, day=d0 + rng.integers(0, nd, cwho.size), chat=chat, reason=reason, resolved=resolved)
        unresolved *= 0.85 ** (nd / 7)
        unresolved[cwho[~resolved]] += 1.0
        online_recent = online_now

        # 8. NPS answers from subscribers still shopping
        respond = np.flatnonzero(alive & subscribed & (rng.random(n) < 0.002))
        score = np.clip(
            np.round(
                7.8 + 1.4 * pop.satisfaction[respond] - 2.5 * unresolved[respond] + rng.normal(0.0, 1.0, respond.size)
            ),
            0,
            10,
        )
        nps.add(person=respond, day=d0 + rng.integers(0, nd, respond.size), score=score)
        if progress is not None:
            progress((week + 1) / n_weeks)

    exposure_frame = exposures.frame()
    order_frame = _finish_orders(orders.frame(), pop, stores, start_ts, rng, exposure_frame, plan)
    lines = _order_lines(order_frame, pop, catalogue, start_ts, end_ts, rng)
    sessions = _sessions(visits.frame(), order_frame, start_ts, rng)
    contact_frame = contacts.frame({"chat": "bool", "resolved": "bool"})
    contact_frame.insert(
        1,
        "ts",
        _to_ts(start_ts, contact_frame.pop("day").to_numpy(), rng.integers(8 * HOUR, 20 * HOUR, len(contact_frame))),
    )
    nps_frame = nps.frame()
    nps_frame.insert(1, "ts", start_ts + nps_frame.pop("day").to_numpy() * DAY + rng.integers(0, DAY, len(nps_frame)))
    float_cols = {"baseline_p": "float64", **{f"effect_{a}": "float64" for a in config.actions}}
    return Simulation(
        orders=order_frame,
        lines=lines,
        sessions=sessions,
        emails=emails.frame().sort_values(["ts", "person"], kind="stable", ignore_index=True),
        pushes=pushes.frame().sort_values(["ts", "person"], kind="stable", ignore_index=True),
        contacts=contact_frame.sort_values(["ts", "person"], kind="stable", ignore_index=True),
        nps=nps_frame.sort_values(["ts", "person"], kind="stable", ignore_index=True),
        exposures=exposure_frame,
        effects=truth.frame(float_cols),
        churn_day=churn_day,
        subscribed_end=pop.email_consent & ~unsubscribed & (pop.signup_day < days),
        push_end=pop.push_consent & ~push_off & (pop.signup_day < days),
        cadence_who=cad_who,
        cadence_arm=np.asarray(cad_arm_at_start, dtype=np.int64),
        cadence_load=cad_load,
        email_load_end=load,
        push_load_end=push_load,
    )


def _finish_orders(
    orders: pd.DataFrame,
    pop: Population,
    stores: Stores,
    start_ts: int,
    rng: np.random.Generator,
    exposures: pd.DataFrame,
    plan: CampaignPlan,
) -> pd.DataFrame:
    """Give orders a time of day and (in store) a store; sort by time.

    A campaign goes out early on the first day of its week. An exposed person's order that would
    fall in that week before their message is moved one day later, so that nothing a campaign
    influences happens before it was sent (and control members are treated alike).
    """
    channel = orders["channel"].to_numpy()
    person = orders["person"].to_numpy()
    ts = _to_ts(start_ts, orders["day"].to_numpy(), _local_seconds(channel, rng))
    for c in range(plan.size):
        exposed = exposures[exposures["campaign"] == c]
        sent = np.full(pop.size, -1, dtype=np.int64)
        sent[exposed["person"].to_numpy()] = exposed["ts"].to_numpy()
        week_start = start_ts + 7 * int(plan.week[c]) * DAY
        early = (sent[person] >= 0) & (ts >= week_start) & (ts < sent[person])
        ts = np.where(early, ts + DAY, ts)
    # mostly the home store; sometimes another store of the region, now and then anywhere (travel)
    by_region = np.argsort(stores.region, kind="stable")
    first = np.searchsorted(stores.region[by_region], stores.region)
    count = np.bincount(stores.region)[stores.region]
    home = pop.home_store[person]
    nearby = by_region[first[home] + (rng.random(person.size) * count[home]).astype(np.int64)]
    anywhere = rng.integers(0, stores.code.size, person.size)
    roll = rng.random(person.size)
    store = np.where(roll < 0.8, home, np.where(roll < 0.95, nearby, anywhere))
    out = pd.DataFrame(
        {
            "person": person,
            "ts": ts,
            "channel": channel,
            "store": np.where(channel == STORE, store, -1),
            "discount": orders["discount"].to_numpy().astype(bool),
        }
    )
    return out.sort_values(["ts", "person"], kind="stable", ignore_index=True)


def _order_lines(
    orders: pd.DataFrame, pop: Population, catalogue: Catalogue, start_ts: int, end_ts: int, rng: np.random.Generator
) -> pd.DataFrame:
    """Lines of every order: products by category preference, quantities, prices paid, returns."""
    n_orders = len(orders)
    sizes, shares = _LINES_PER_ORDER
    n_lines = rng.choice(sizes, size=n_orders, p=shares)
    order = np.repeat(np.arange(n_orders), n_lines)
    line_no = np.arange(order.size) - np.repeat(np.cumsum(n_lines) - n_lines, n_lines) + 1
    person = orders["person"].to_numpy()[order]
    category = _sample_rows(_flat_cumsum(pop.category_pref), person, rng)
    product = pick_products(catalogue, category, rng)
    list_pence = catalogue.price_pence[product]
    qty = 1 + rng.poisson(np.where(list_pence < 1000, 0.5, 0.08))
    markdown = np.where(rng.random(order.size) < _MARKDOWN_SHARE, rng.choice([0.7, 0.8, 0.9], order.size), 1.0)
    discount = np.where(orders["discount"].to_numpy()[order], 0.9, 1.0)
    unit_pence = np.maximum(np.round(list_pence * markdown * discount), 1).astype(np.int64)
    # returns: a whole order's returned lines go back together, 3-30 days later
    channel = orders["channel"].to_numpy()
    order_day = (orders["ts"].to_numpy() - start_ts) // DAY
    return_day = order_day + rng.integers(3, 31, n_orders)
    return_ts = _to_ts(start_ts, return_day, _local_seconds(channel, rng))
    p_return = catalogue.return_rate[category] * _RETURN_SCALE
    returned = (rng.random(order.size) < p_return) & (return_ts[order] < end_ts)
    return pd.DataFrame(
        {
            "order": order,
            "line_no": line_no,
            "product": product,
            "qty": qty,
            "unit_pence": unit_pence,
            "return_ts": np.where(returned, return_ts[order], -1),
        }
    )


def _sessions(visits: pd.DataFrame, orders: pd.DataFrame, start_ts: int, rng: np.random.Generator) -> pd.DataFrame:
    """Browsing sessions plus the sessions around each online order (checkout and research)."""
    vwho = visits["person"].to_numpy()
    platform = visits["platform"].to_numpy()
    browse_ts = _to_ts(start_ts, visits["day"].to_numpy(), _local_seconds(np.full(vwho.size, WEB), rng))
    browse_views = rng.geometric(0.25, vwho.size)

    online = np.flatnonzero(orders["channel"].to_numpy() != STORE)
    o_person = orders["person"].to_numpy()[online]
    o_ts = orders["ts"].to_numpy()[online]
    o_platform = orders["channel"].to_numpy()[online]
    checkout_ts = o_ts - rng.integers(2 * 60, 40 * 60, online.size)
    checkout_views = 4 + rng.poisson(6, online.size)
    # research sessions in the three days before the order
    n_research = rng.poisson(0.6, online.size)
    r_idx = np.repeat(np.arange(online.size), n_research)
    research_ts = o_ts[r_idx] - rng.integers(HOUR, 72 * HOUR, r_idx.size)
    research_views = rng.geometric(0.2, r_idx.size)

    frame = pd.DataFrame(
        {
            "person": np.concatenate([vwho, o_person, o_person[r_idx]]),
            "ts": np.concatenate([browse_ts, checkout_ts, research_ts]),
            "platform": np.concatenate([platform, o_platform, o_platform[r_idx]]),
            "page_views": np.concatenate([browse_views, checkout_views, research_views]),
            "order": np.concatenate([np.full(vwho.size, -1), online, np.full(r_idx.size, -1)]),
        }
    )
    frame = frame[frame["ts"] >= start_ts]
    return frame.sort_values(["ts", "person"], kind="stable", ignore_index=True)
