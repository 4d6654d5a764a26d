"""Render the simulated world as the raw files of ten source systems, with realistic mess.

Each source sees people through its own identifiers and personal data:

==================  ===================  ================================================
source              record key           personal data on the record
==================  ===================  ================================================
crm_members         member_id            card, names, e-mail, phone, postcode
ecom_orders         account_id           e-mail (login), ship-to names, phone, postcode
pos_sales           card_no              card only (10%+ anonymous: no card)
web_sessions        visitor_id           login e-mail (when logged in)
esp_events          subscriber_id        e-mail
push_events         app_user_id          e-mail, mobile
service_contacts    contact_id           caller name, phone, postcode
nps_responses       response_id          e-mail
campaign_exposures  card_no              card, e-mail (copied from the CRM record)
==================  ===================  ================================================

Where mess goes (rates from :class:`~omnicrm.synthetic.config.MessConfig`):

* **Typos** only where people or staff type: CRM names and e-mail (hand-keyed forms), ship-to
  names of shop accounts, caller names in service contacts. E-mails a system delivers to or logs
  in with (ESP, web login, NPS, push, shop account) never carry typos.
* **Missing values**: CRM e-mail/phone/postcode, shop phone/postcode, push e-mail or phone,
  service phone/postcode. At most one typo *or* missing value per record.
* **Formatting** everywhere: case and whitespace of names, e-mails and postcodes; phone number
  styles; card number styles; device case in shop orders.
* **Life**: households that move get a new postcode; records written after the move carry it
  (a shop account's ship-to postcode changes between rows), the CRM keeps the postcode given at
  joining. People with a nickname (Bob for Robert) give it on informal records (shop ship-to,
  service calls) about a third of the time; the CRM always has the full first name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from omnicrm.synthetic import mess
from omnicrm.synthetic.behaviour import DAY, Simulation
from omnicrm.synthetic.campaigns import CONTROL, CampaignPlan, exposure_cost
from omnicrm.synthetic.catalogue import Catalogue
from omnicrm.synthetic.config import WorldConfig
from omnicrm.synthetic.contract import DIGIT_KEYS, RAW_COLUMNS, RECORD_KEY, ROW_ID
from omnicrm.synthetic.formats import (
    CARD_STYLES,
    card_variants,
    decimal_text,
    epoch_seconds,
    id_text,
    int_text,
    local_from_utc,
    london_iso_with_offset,
    phone_variants,
    timestamp_text,
)
from omnicrm.synthetic.mess import Defect
from omnicrm.synthetic.people import APP, CHANNELS, STORE, Population, Stores, person_ids
from omnicrm.synthetic.streams import stream
from omnicrm.synthetic.vocabulary import SERVICE_REASONS


@dataclass
class RawTable:
    """One raw file before writing: text columns in contract order plus hidden truth per row.

    Attributes
    ----------
    name
        Source name (the file stem).
    columns
        Column name -> Arrow string array (nulls are written as empty fields).
    person
        Per row, the person who owns the row's record key (-1: no key, e.g. an anonymous sale).
    defects
        Per row, the defect made on purpose (``""`` for a clean row).
    """

    name: str
    columns: dict[str, pa.Array]
    person: np.ndarray
    defects: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return int(self.person.size)


@dataclass(frozen=True)
class _World:
    config: WorldConfig
    pop: Population
    stores: Stores
    catalogue: Catalogue
    plan: CampaignPlan
    sim: Simulation
    start_ts: int


#: Chance that a person with a nickname gives it on an informal record (checkout, phone call).
_NICKNAME_RATE = 0.3


# --- small helpers ---------------------------------------------------------------------------------
def _text(values: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    """Arrow strings of ``values``; ``missing`` rows become nulls (empty fields)."""
    values = np.asarray(values, dtype=str)
    if missing is None:
        return pa.array(values, pa.string())
    return pa.array(values, pa.string(), mask=np.asarray(missing, dtype=bool))


def _take(values: pa.Array, index: np.ndarray) -> pa.Array:
    return values.take(pa.array(np.asarray(index, dtype=np.int64)))


def _pool(values: tuple[str, ...] | list[str] | np.ndarray, index: np.ndarray) -> pa.Array:
    """Strings from a small vocabulary by index (Arrow take: no per-row Python objects)."""
    return _take(pa.array(np.asarray(values, dtype=str), pa.string()), index)


def _numbers_by_first_seen(keys: np.ndarray, ts: np.ndarray, n_keys: int) -> np.ndarray:
    """Number the distinct ``keys`` 0, 1, ... in order of their first ``ts`` (-1 for absent keys).

    Systems hand out ids in order of creation, so ids grow with the first time a key is seen.
    """
    out = np.full(n_keys, -1, dtype=np.int64)
    if keys.size == 0:
        return out
    order = np.argsort(ts, kind="stable")  # ties keep row order: deterministic
    uniq, first = np.unique(keys[order], return_index=True)
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(uniq.size)
    out[uniq] = rank
    return out


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """0-based position of each element within its run of equal, consecutive ``groups``."""
    if groups.size == 0:
        return groups.astype(np.int64)
    start = np.r_[True, groups[1:] != groups[:-1]]
    run_start = np.maximum.accumulate(np.where(start, np.arange(groups.size), 0))
    return np.arange(groups.size) - run_start


def _phones(nsn: np.ndarray, style: np.ndarray) -> np.ndarray:
    """Written phone numbers: the ``style`` form of each national significant number."""
    nsn = np.asarray(nsn, dtype=str)
    safe = np.where(nsn == "", "7000000000", nsn)  # placeholders are masked out by the caller
    return phone_variants(safe)[np.arange(nsn.size), style]


def _cards(digits: np.ndarray, style: np.ndarray) -> np.ndarray:
    digits = np.asarray(digits, dtype=str)
    safe = np.where(digits == "", "000000000000", digits)
    return card_variants(safe)[np.arange(digits.size), style]


def _yes_no(values: np.ndarray, missing: np.ndarray) -> pa.Array:
    return _text(np.where(values, "Y", "N"), missing)


def _case_variant(values: np.ndarray, rng: np.random.Generator, rate: float, variants: tuple[str, ...]) -> np.ndarray:
    """Canonical value, or with probability ``rate`` the same word in another case (``Web``, ``WEB``)."""
    messy = rng.random(values.size) < rate
    pick = rng.integers(0, len(variants), values.size)
    return np.where(messy, np.asarray(variants)[pick], values)


# --- identities shared by several sources -----------------------------------------------------------
@dataclass(frozen=True)
class _Identities:
    """Identity choices other sources depend on.

    Attributes
    ----------
    order_slot
        Per order: which shop account placed it (0 first, 1 second e-mail's account; -1 in store).
    second_account
        Per person: whether they have a shop account under their second e-mail.
    subscriber_email
        Per person: the canonical address they subscribed to newsletters with.
    crm_email, crm_email_missing
        Per person: the e-mail text of their (first) CRM record, as written there.
    """

    order_slot: np.ndarray
    second_account: np.ndarray
    subscriber_email: np.ndarray
    crm_email: np.ndarray
    crm_email_missing: np.ndarray


# --- sources -----------------------------------------------------------------------------------------
def _products(w: _World) -> RawTable:
    cat = w.catalogue
    cols = {
        "sku": _text(cat.sku),
        "category": _pool(cat.category_names, cat.category),
        "list_price": decimal_text(cat.price_pence),
        "margin_rate": decimal_text(cat.margin_pct),
    }
    return RawTable("products", cols, np.full(cat.sku.size, -1))


def _crm_members(w: _World, rng: np.random.Generator) -> tuple[RawTable, np.ndarray, np.ndarray]:
    pop, cfg = w.pop, w.config
    rate = cfg.mess
    members = np.flatnonzero(pop.is_member & (pop.signup_day < cfg.days))
    dups = np.flatnonzero((pop.card2 != "") & (pop.card2_day < cfg.days))
    person = np.concatenate([members, dups])
    is_dup = np.concatenate([np.zeros(members.size, bool), np.ones(dups.size, bool)])
    join_day = np.concatenate([pop.signup_day[members], pop.card2_day[dups]])
    card = np.concatenate([pop.card[members], pop.card2[dups]])
    order = np.lexsort((is_dup, person, join_day))
    person, is_dup, join_day, card = person[order], is_dup[order], join_day[order], card[order]
    m = person.size

    # A second record (lost card, re-registration) often gives the other phone or e-mail address.
    has_land = pop.landline[person] != ""
    nsn = np.where(has_land & (rng.random(m) < 0.5), pop.landline[person], pop.mobile[person])
    other_email = is_dup & (pop.email2[person] != "") & (rng.random(m) < 0.5)
    email = np.where(other_email, pop.email2[person], pop.email[person])
    signup_channel = np.where(
        is_dup, np.where(pop.has_app[person], rng.integers(0, 3, m), rng.integers(0, 2, m)), pop.signup_channel[person]
    )

    damage = mess.choose_damage(rng, m, [rate.typo_rate] * 3 + [rate.missing_rate] * 3)
    first = pop.first_name[person].astype("U40")
    last = pop.last_name[person].astype("U40")
    email = email.astype("U90")
    for k, values, corrupt in ((0, first, mess.typo), (1, last, mess.typo), (2, email, mess.email_typo)):
        hit = damage == k
        values[hit] = corrupt(values[hit], rng)
    email_text = mess.email_case(email, rng, rate.case_whitespace_rate)
    email_missing = damage == 3
    cols = {
        "member_id": id_text("M", np.arange(m) + 1, 7),
        "card_no": _text(_cards(card, rng.integers(0, CARD_STYLES, m))),
        "first_name": _text(mess.name_case(first, rng, rate.case_whitespace_rate)),
        "last_name": _text(mess.name_case(last, rng, rate.case_whitespace_rate)),
        "email": _text(email_text, email_missing),
        "phone": _text(_phones(nsn, mess.phone_style(rng, m, rate.case_whitespace_rate)), damage == 4),
        "postcode": _text(
            mess.postcode_case(pop.postcode_on(person, join_day), rng, rate.case_whitespace_rate), damage == 5
        ),
        "joined_on": timestamp_text(w.start_ts + join_day * DAY, "dmy"),
        "signup_channel": _pool(CHANNELS, signup_channel),
        # consent as exported at the end of the period; some forms left the box blank
        "opt_in_email": _yes_no(w.sim.subscribed_end[person], rng.random(m) < rate.missing_rate),
        "opt_in_sms": _yes_no(pop.sms_consent[person], rng.random(m) < rate.missing_rate),
        "opt_in_push": _yes_no(w.sim.push_end[person], rng.random(m) < rate.missing_rate),
    }
    # campaign exposures copy the e-mail of the member's first record
    primary = np.flatnonzero(~is_dup)
    crm_email = np.full(pop.size, "", dtype=object)
    crm_missing = np.ones(pop.size, dtype=bool)
    crm_email[person[primary]] = email_text[primary]
    crm_missing[person[primary]] = email_missing[primary]
    return RawTable("crm_members", cols, person), crm_email, crm_missing


def _ecom_orders(w: _World, rng: np.random.Generator) -> tuple[RawTable, np.ndarray, np.ndarray]:
    pop, sim, rate = w.pop, w.sim, w.config.mess
    orders, lines = sim.orders, sim.lines
    o_channel = orders["channel"].to_numpy()
    o_person = orders["person"].to_numpy()
    o_ts = orders["ts"].to_numpy()
    online = np.flatnonzero(o_channel != STORE)
    n_orders = len(orders)

    # People with a second address open a second account with their second online order and
    # use either account after that (orders are sorted by time, so a stable sort by person
    # gives each person's orders in time order).
    by_person = np.argsort(o_person[online], kind="stable")
    nth = np.empty(online.size, dtype=np.int64)
    nth[by_person] = _rank_within(o_person[online][by_person])
    uses_second = (nth == 1) | ((nth > 1) & (rng.random(online.size) < 0.5))
    second = (pop.email2[o_person[online]] != "") & uses_second
    slot = np.full(n_orders, -1, dtype=np.int64)
    slot[online] = second.astype(np.int64)
    account_key = o_person[online] * 2 + slot[online]
    account_of_key = _numbers_by_first_seen(account_key, o_ts[online], 2 * pop.size)
    keys = np.flatnonzero(account_of_key >= 0)
    key_by_account = np.empty(keys.size, dtype=np.int64)
    key_by_account[account_of_key[keys]] = keys
    a_person, a_slot = key_by_account // 2, key_by_account % 2
    second_account = np.zeros(pop.size, dtype=bool)
    second_account[a_person[a_slot == 1]] = True
    n_acc = keys.size

    # account details, typed once at registration: ship-to names may carry a typo
    has_land = pop.landline[a_person] != ""
    a_nsn = np.where(has_land & (rng.random(n_acc) < 0.25), pop.landline[a_person], pop.mobile[a_person])
    damage = mess.choose_damage(rng, n_acc, [rate.typo_rate] * 2 + [rate.missing_rate] * 2)
    a_first = pop.name_used(a_person, rng, _NICKNAME_RATE).astype("U40")
    a_last = pop.last_name[a_person].astype("U40")
    for k, values in ((0, a_first), (1, a_last)):
        values[damage == k] = mess.typo(values[damage == k], rng)
    a_email = np.where(a_slot == 1, pop.email2[a_person], pop.email[a_person])

    # rows: every line as a sale, returned lines again as returns with a new line number
    is_online_line = o_channel[lines["order"].to_numpy()] != STORE
    ol = lines[is_online_line]
    l_order = ol["order"].to_numpy()
    returned = ol["return_ts"].to_numpy() >= 0
    n_lines = np.bincount(l_order, minlength=n_orders)
    r_order = l_order[returned]
    r_line = n_lines[r_order] + 1 + _rank_within(r_order)
    row_order = np.concatenate([l_order, r_order])
    row_line = np.concatenate([ol["line_no"].to_numpy(), r_line])
    row_ts = np.concatenate([o_ts[l_order], ol["return_ts"].to_numpy()[returned]])
    row_return = np.concatenate([np.zeros(l_order.size, bool), np.ones(r_order.size, bool)])
    row_product = np.concatenate([ol["product"].to_numpy(), ol["product"].to_numpy()[returned]])
    row_qty = np.concatenate([ol["qty"].to_numpy(), ol["qty"].to_numpy()[returned]])
    row_price = np.concatenate([ol["unit_pence"].to_numpy(), ol["unit_pence"].to_numpy()[returned]])
    sort = np.lexsort((row_line, row_order, row_ts))
    row_order, row_line = row_order[sort], row_line[sort]
    row_ts, row_return = row_ts[sort], row_return[sort]
    row_product, row_qty, row_price = row_product[sort], row_qty[sort], row_price[sort]

    order_number = np.full(n_orders, -1, dtype=np.int64)
    order_number[online] = np.arange(online.size) + 1  # orders are sorted by time already
    # what the checkout form held for each order (case, spacing, phone style vary per order)
    cw = rate.case_whitespace_rate
    o_account = account_of_key[o_person[online] * 2 + slot[online]]
    o_day = (o_ts[online] - w.start_ts) // DAY
    platform = np.where(o_channel[online] == APP, "app", "web")
    device = np.where(
        platform == "app",
        _case_variant(platform, rng, cw, ("App", "APP")),
        _case_variant(platform, rng, cw, ("Web", "WEB")),
    )
    form = {
        "account_id": id_text("A", o_account + 1, 6),
        "email": _text(mess.email_case(a_email[o_account], rng, cw)),
        "first_name": _text(mess.name_case(a_first[o_account], rng, cw)),
        "last_name": _text(mess.name_case(a_last[o_account], rng, cw)),
        "phone": _text(_phones(a_nsn[o_account], mess.phone_style(rng, online.size, cw)), (damage == 2)[o_account]),
        "postcode": _text(
            mess.postcode_case(pop.postcode_on(a_person[o_account], o_day), rng, cw), (damage == 3)[o_account]
        ),
        "device": _text(device),
    }
    zulu = rng.random(online.size) < 0.5  # platforms write UTC as Z or +00:00
    position = np.full(n_orders, -1, dtype=np.int64)
    position[online] = np.arange(online.size)
    row_form = position[row_order]
    cols = {
        "order_id": id_text("O", order_number[row_order], 8),
        "line_no": int_text(row_line),
        **{name: _take(values, row_form) for name, values in form.items() if name != "device"},
        "event_time": london_iso_with_offset(row_ts, zulu[row_form]),
        "device": _take(form["device"], row_form),
        "line_type": _pool(("sale", "return"), row_return.astype(np.int64)),
        "sku": _take(_text(w.catalogue.sku), row_product),
        "qty": int_text(row_qty),
        "unit_price": decimal_text(row_price),
    }
    person = a_person[o_account][row_form]
    return RawTable("ecom_orders", cols, person), slot, second_account


def _pos_sales(w: _World, rng: np.random.Generator) -> RawTable:
    pop, sim = w.pop, w.sim
    orders, lines = sim.orders, sim.lines
    o_channel = orders["channel"].to_numpy()
    o_person = orders["person"].to_numpy()
    o_ts = orders["ts"].to_numpy()
    n_orders = len(orders)
    day = (o_ts - w.start_ts) // DAY

    # card presented: members mostly show it (the newer card once they have two); others cannot
    shows = pop.is_member[o_person] & (pop.signup_day[o_person] <= day) & (rng.random(n_orders) >= 0.04)
    newer = (pop.card2[o_person] != "") & (day >= pop.card2_day[o_person]) & (rng.random(n_orders) < 0.7)
    card = np.where(shows, np.where(newer, pop.card2[o_person], pop.card[o_person]), "")
    card_style = rng.integers(0, CARD_STYLES, n_orders)

    in_store = o_channel[lines["order"].to_numpy()] == STORE
    sl = lines[in_store]
    l_order = sl["order"].to_numpy()
    returned = sl["return_ts"].to_numpy() >= 0
    # receipts: one per store order, plus one per order with returns (brought back together)
    r_order = l_order[returned]
    receipt_key = np.concatenate([l_order * 2, r_order * 2 + 1])
    receipt_ts = np.concatenate([o_ts[l_order], sl["return_ts"].to_numpy()[returned]])
    receipt_number = _numbers_by_first_seen(receipt_key, receipt_ts, 2 * n_orders)
    row_receipt = receipt_number[receipt_key]
    row_order = receipt_key // 2
    row_return = (receipt_key % 2).astype(bool)
    row_line = np.concatenate([sl["line_no"].to_numpy(), 1 + _rank_within(r_order)])
    row_product = np.concatenate([sl["product"].to_numpy(), sl["product"].to_numpy()[returned]])
    row_qty = np.concatenate([sl["qty"].to_numpy(), sl["qty"].to_numpy()[returned]])
    row_price = np.concatenate([sl["unit_pence"].to_numpy(), sl["unit_pence"].to_numpy()[returned]])
    sort = np.lexsort((row_line, row_receipt))
    row_receipt, row_order, row_return = row_receipt[sort], row_order[sort], row_return[sort]
    row_ts, row_line, row_product = receipt_ts[sort], row_line[sort], row_product[sort]
    row_qty, row_price = row_qty[sort], row_price[sort]

    row_card = card[row_order]
    anonymous = row_card == ""
    cols = {
        "receipt_no": id_text("R", row_receipt + 1, 9),
        "line_no": int_text(row_line),
        "store_code": _take(_text(w.stores.code), orders["store"].to_numpy()[row_order]),
        "till_time": timestamp_text(local_from_utc(row_ts), "dmy_hms"),
        "card_no": _text(_cards(row_card, card_style[row_order]), anonymous),
        "kind": _pool(("SALE", "RETURN"), row_return.astype(np.int64)),
        "sku": _take(_text(w.catalogue.sku), row_product),
        "qty": int_text(row_qty),
        "unit_price": decimal_text(row_price),
    }
    return RawTable("pos_sales", cols, np.where(anonymous, -1, o_person[row_order]))


def _web_sessions(w: _World, ident: _Identities, rng: np.random.Generator) -> RawTable:
    pop, rate = w.pop, w.config.mess
    s = w.sim.sessions
    person = s["person"].to_numpy()
    ts = s["ts"].to_numpy()
    platform = s["platform"].to_numpy()
    order = s["order"].to_numpy()
    n = person.size
    visitor = _numbers_by_first_seen(person, ts, pop.size)
    # which account they log in with: the ordering account at checkout, else mostly the first
    slot = (ident.second_account[person] & (rng.random(n) < 0.3)).astype(np.int64)
    checkout = order >= 0
    slot[checkout] = ident.order_slot[order[checkout]]
    first_visit = np.zeros(n, dtype=bool)
    first_visit[np.unique(visitor[person], return_index=True)[1]] = True
    # the app and checkout need a login; on the web about half the visits are logged in
    logged_in = (order >= 0) | (platform == APP) | first_visit | (rng.random(n) < 0.5)
    email = np.where(slot == 1, pop.email2[person], pop.email[person])
    cols = {
        "session_id": id_text("WS", np.arange(n) + 1, 8),
        "visitor_id": id_text("V", visitor[person] + 1, 7),
        "login_email": _text(mess.email_case(email, rng, rate.case_whitespace_rate), ~logged_in),
        "platform": _pool(("web", "app"), (platform == APP).astype(np.int64)),
        "started_at": int_text(ts),
        "page_views": int_text(s["page_views"].to_numpy()),
    }
    return RawTable("web_sessions", cols, person)


def _esp_events(w: _World, ident: _Identities, rng: np.random.Generator) -> RawTable:
    pop, cfg = w.pop, w.config
    e = w.sim.emails
    person = e["person"].to_numpy()
    ts = e["ts"].to_numpy()
    n = person.size
    subscriber = _numbers_by_first_seen(person, ts, pop.size)
    # the address is the one the person subscribed with, written as they typed it
    sub_email = _text(mess.email_case(ident.subscriber_email, rng, cfg.mess.case_whitespace_rate))
    # newsletter codes: NL-<yyyymmdd> of the day it went out
    ymd = timestamp_text(w.start_ts + np.arange(cfg.days) * DAY, "ymd_hms")
    compact = pc.replace_substring(pc.utf8_slice_codeunits(ymd, 0, 10), "-", "")
    nl_codes = pc.binary_join_element_wise("NL-", compact, "")
    # the cadence experiment's newsletters: NLC<arm>-<yyyymmdd> (the arm is each member's, see fatigue.py)
    arms = [int(a) for a in w.config.cadence.arms]
    cadence_codes = [pc.binary_join_element_wise(f"NLC{a}-", compact, "") for a in arms]
    code_pool = pa.concat_arrays([_text(w.plan.campaign_id), nl_codes, *cadence_codes])
    campaign = e["campaign"].to_numpy()
    cadence = e["cadence"].to_numpy()
    arm_slot = np.searchsorted(np.asarray(arms), cadence)  # only read where cadence > 0
    newsletter = w.plan.size + np.where(cadence > 0, (1 + arm_slot) * cfg.days, 0) + e["newsletter_day"].to_numpy()
    code = np.where(campaign >= 0, campaign, newsletter)
    cols = {
        "event_id": id_text("E", np.arange(n) + 1, 9),
        "subscriber_id": id_text("S", subscriber[person] + 1, 7),
        "email": _take(sub_email, person),
        "event_type": _pool(("sent", "open", "click", "unsubscribe"), e["event"].to_numpy()),
        "campaign_code": _take(code_pool, code),
        "event_time": timestamp_text(ts, "ymd_hms"),
    }
    return RawTable("esp_events", cols, person)


def _push_events(w: _World, rng: np.random.Generator) -> RawTable:
    pop, rate = w.pop, w.config.mess
    p = w.sim.pushes
    person = p["person"].to_numpy()
    ts = p["ts"].to_numpy()
    n = person.size
    user = _numbers_by_first_seen(person, ts, pop.size)
    # the app profile: e-mail and mobile, one of them sometimes not given
    damage = mess.choose_damage(rng, pop.size, [rate.missing_rate] * 2)
    profile_email = _text(mess.email_case(pop.email, rng, rate.case_whitespace_rate), damage == 0)
    style = mess.phone_style(rng, pop.size, rate.case_whitespace_rate)
    profile_phone = _text(_phones(pop.mobile, style), damage == 1)
    cols = {
        "event_id": id_text("PE", np.arange(n) + 1, 8),
        "app_user_id": id_text("U", user[person] + 1, 6),
        "email": _take(profile_email, person),
        "phone": _take(profile_phone, person),
        "event": _pool(("sent", "open", "optout"), p["event"].to_numpy()),
        "event_time": timestamp_text(ts, "iso_z"),
    }
    return RawTable("push_events", cols, person)


def _service_contacts(w: _World, rng: np.random.Generator) -> RawTable:
    pop, rate = w.pop, w.config.mess
    c = w.sim.contacts
    person = c["person"].to_numpy()
    n = person.size
    cw = rate.case_whitespace_rate
    damage = mess.choose_damage(rng, n, [rate.typo_rate] * 2 + [rate.missing_rate] * 2)
    first = pop.name_used(person, rng, _NICKNAME_RATE).astype("U40")
    last = pop.last_name[person].astype("U40")
    for k, values in ((0, first), (1, last)):
        values[damage == k] = mess.typo(values[damage == k], rng)
    contact_ts = c["ts"].to_numpy()
    contact_day = (contact_ts - w.start_ts) // DAY
    # callers ring from home more often than they give it to a shop: the shared landline shows up
    has_land = pop.landline[person] != ""
    nsn = np.where(has_land & (rng.random(n) < 0.6), pop.landline[person], pop.mobile[person])
    cols = {
        "contact_id": id_text("C", np.arange(n) + 1, 7),
        "caller_name": _text(mess.full_name_variants(first, last, rng, cw)),
        "caller_phone": _text(_phones(nsn, mess.phone_style(rng, n, cw)), damage == 2),
        "postcode": _text(mess.postcode_case(pop.postcode_on(person, contact_day), rng, cw), damage == 3),
        "contact_time": timestamp_text(local_from_utc(contact_ts), "ymd_hm"),
        "contact_channel": _pool(("phone", "chat"), c["chat"].to_numpy().astype(np.int64)),
        "reason": _pool(SERVICE_REASONS, c["reason"].to_numpy()),
        "resolved": _yes_no(c["resolved"].to_numpy(), np.zeros(n, dtype=bool)),
    }
    return RawTable("service_contacts", cols, person)


def _nps_responses(w: _World, ident: _Identities, rng: np.random.Generator) -> RawTable:
    r = w.sim.nps
    person = r["person"].to_numpy()
    n = person.size
    email = mess.email_case(ident.subscriber_email[person], rng, w.config.mess.case_whitespace_rate)
    cols = {
        "response_id": id_text("N", np.arange(n) + 1, 7),
        "email": _text(email),
        "score": int_text(r["score"].to_numpy()),
        "submitted_at": timestamp_text(r["ts"].to_numpy(), "iso_z"),
    }
    return RawTable("nps_responses", cols, person)


def _campaign_exposures(w: _World, ident: _Identities, rng: np.random.Generator) -> RawTable:
    x = w.sim.exposures.sort_values(["ts", "person"], kind="stable", ignore_index=True)
    person = x["person"].to_numpy()
    campaign = x["campaign"].to_numpy()
    arm = x["arm"].to_numpy()
    n = person.size
    actions = list(w.config.actions)
    channel = w.plan.channel[campaign]
    cost = np.zeros(n, dtype=np.int64)
    for ch in np.unique(channel):
        hit = channel == ch
        cost[hit] = exposure_cost(str(ch), arm[hit], actions)
    cols = {
        "exposure_id": id_text("X", np.arange(n) + 1, 8),
        "card_no": _text(_cards(w.pop.card[person], rng.integers(0, CARD_STYLES, n))),
        "email": _text(ident.crm_email[person].astype(str), ident.crm_email_missing[person]),
        "campaign_id": _take(_text(w.plan.campaign_id), campaign),
        "action": _pool(actions + ["control"], np.where(arm == CONTROL, len(actions), arm)),
        "channel": _text(channel),
        "group": _pool(("treatment", "control"), (arm == CONTROL).astype(np.int64)),
        "cost": decimal_text(cost),
        "sent_at": timestamp_text(x["ts"].to_numpy(), "ymd_hms"),
    }
    return RawTable("campaign_exposures", cols, person)


# --- malformed and repeated rows ---------------------------------------------------------------------
_DEFECTS: dict[str, tuple[Defect, ...]] = {
    "ecom_orders": (
        Defect("bad_timestamp", "event_time"),
        Defect("negative_price", "unit_price", only_where=("line_type", "sale")),
        Defect("unknown_value", "device"),
        Defect("empty_key", "order_id"),
    ),
    "pos_sales": (
        Defect("bad_timestamp", "till_time"),
        Defect("negative_price", "unit_price", only_where=("kind", "SALE")),
        Defect("empty_key", "receipt_no"),
    ),
    "web_sessions": (
        Defect("bad_timestamp", "started_at"),
        Defect("unknown_value", "platform"),
        Defect("empty_key", "session_id"),
    ),
    "esp_events": (
        Defect("bad_timestamp", "event_time"),
        Defect("unknown_value", "event_type", values=("bounced", "deferred", "unknown")),
        Defect("empty_key", "event_id"),
    ),
    "push_events": (
        Defect("bad_timestamp", "event_time"),
        Defect("unknown_value", "event", values=("clicked", "dismissed")),
        Defect("empty_key", "event_id"),
    ),
    "service_contacts": (
        Defect("bad_timestamp", "contact_time"),
        Defect("unknown_value", "contact_channel"),
        Defect("empty_key", "contact_id"),
    ),
    "nps_responses": (
        Defect("bad_score", "score"),
        Defect("bad_timestamp", "submitted_at"),
        Defect("empty_key", "response_id"),
    ),
    "campaign_exposures": (
        Defect("bad_timestamp", "sent_at"),
        Defect("unknown_value", "channel"),
        Defect("empty_key", "exposure_id"),
    ),
}
_EPOCH_COLUMNS = ("started_at",)


def add_row_defects(table: RawTable, config: WorldConfig, rng: np.random.Generator) -> RawTable:
    """Make some rows malformed and repeat some rows exactly, recording which (``table.defects``)."""
    columns = dict(table.columns)
    labels = mess.inject_bad_rows(
        columns, _DEFECTS.get(table.name, ()), config.mess.bad_row_rate, rng, epoch_columns=_EPOCH_COLUMNS
    )
    dup_rate = config.mess.duplicate_row_rate if table.name != "products" else 0.0
    order, is_copy = mess.duplicate_rows(table.n_rows, dup_rate, rng)
    index = pa.array(order)
    columns = {name: col.take(index) for name, col in columns.items()}
    labels = np.where(is_copy, "duplicate", labels[order])
    return RawTable(table.name, columns, table.person[order], labels.astype(object))


# --- entry point -------------------------------------------------------------------------------------
def render_sources(
    config: WorldConfig,
    pop: Population,
    stores: Stores,
    catalogue: Catalogue,
    plan: CampaignPlan,
    sim: Simulation,
    progress: Callable[[float], None] | None = None,
) -> dict[str, RawTable]:
    """Render every raw source file (with mess) from the simulated world.

    Returns
    -------
    dict
        Source name -> :class:`RawTable`, in the order of ``contract.RAW_COLUMNS``.
    """
    w = _World(config, pop, stores, catalogue, plan, sim, epoch_seconds(config.start_date))
    rng = {name: stream(config.seed, f"sources/{name}") for name in RAW_COLUMNS}
    tables: dict[str, RawTable] = {"products": _products(w)}
    tables["crm_members"], crm_email, crm_missing = _crm_members(w, rng["crm_members"])
    tables["ecom_orders"], order_slot, second_account = _ecom_orders(w, rng["ecom_orders"])
    # newsletters go to the address given at subscription: the second one for some people with two
    ident_rng = stream(config.seed, "sources/identities")
    use_second = second_account & (ident_rng.random(pop.size) < 0.5)
    ident = _Identities(
        order_slot=order_slot,
        second_account=second_account,
        subscriber_email=np.where(use_second, pop.email2, pop.email),
        crm_email=crm_email,
        crm_email_missing=crm_missing,
    )
    tables["pos_sales"] = _pos_sales(w, rng["pos_sales"])
    tables["web_sessions"] = _web_sessions(w, ident, rng["web_sessions"])
    tables["esp_events"] = _esp_events(w, ident, rng["esp_events"])
    tables["push_events"] = _push_events(w, rng["push_events"])
    tables["service_contacts"] = _service_contacts(w, rng["service_contacts"])
    tables["nps_responses"] = _nps_responses(w, ident, rng["nps_responses"])
    tables["campaign_exposures"] = _campaign_exposures(w, ident, rng["campaign_exposures"])
    out = {}
    for i, name in enumerate(RAW_COLUMNS):
        table = tables[name]
        missing = set(RAW_COLUMNS[name]) ^ set(table.columns)
        if missing:  # a programming error, not a user error
            raise RuntimeError(f"{name}: columns differ from the contract: {sorted(missing)}")
        table.columns = {c: table.columns[c] for c in RAW_COLUMNS[name]}
        out[name] = add_row_defects(table, config, stream(config.seed, f"mess/{name}"))
        if progress is not None:
            progress((i + 1) / len(RAW_COLUMNS))
    return out


def record_owner(tables: dict[str, RawTable]) -> pa.Table:
    """Truth: the person behind every distinct record key in the raw files.

    Card keys (``pos_sales``, ``campaign_exposures``) are reduced to their digits; other keys are
    taken as written. Raises ``RuntimeError`` if a key would belong to two people (a generator bug).
    """
    parts = []
    for name, key_col in RECORD_KEY.items():
        t = tables[name]
        key = t.columns[key_col]
        if name in DIGIT_KEYS:
            key = pc.replace_substring_regex(key, r"\D", "")
        valid = np.asarray(pc.fill_null(pc.not_equal(key, ""), False)) & (t.person >= 0)
        encoded = key.filter(pa.array(valid)).dictionary_encode()
        index = encoded.indices.to_numpy()
        owners = t.person[valid]
        owner = np.full(len(encoded.dictionary), -1, dtype=np.int64)
        owner[index[::-1]] = owners[::-1]  # with repeated indices the last write wins: the first row
        if np.any(owner[index] != owners):
            raise RuntimeError(f"{name}: a record key belongs to more than one person")
        order = pc.sort_indices(encoded.dictionary).to_numpy()
        parts.append((name, encoded.dictionary.take(pa.array(order)), owner[order]))
    return pa.table(
        {
            "source": pa.array(np.concatenate([np.full(len(k), name) for name, k, _ in parts]), pa.string()),
            "record_key": pa.concat_arrays([k for _, k, _ in parts]),
            "person_id": pa.array(person_ids(np.concatenate([o for _, _, o in parts])), pa.string()),
        }
    )


def row_defects(tables: dict[str, RawTable]) -> pa.Table:
    """Truth: each row made malformed or repeated on purpose (source, row_index, record_id, defect)."""
    src, idx, rid, kind = [], [], [], []
    for name, t in tables.items():
        hit = np.flatnonzero(t.defects != "")
        id_cols = [t.columns[c].take(pa.array(hit)) for c in ROW_ID[name]]
        ids = id_cols[0] if len(id_cols) == 1 else pc.binary_join_element_wise(*id_cols, "/")
        src.append(np.full(hit.size, name))
        idx.append(hit)
        rid.append(np.asarray(ids.to_numpy(zero_copy_only=False), dtype=object))
        kind.append(t.defects[hit].astype(str))
    return pa.table(
        {
            "source": pa.array(np.concatenate(src), pa.string()),
            "row_index": pa.array(np.concatenate(idx), pa.int64()),
            "record_id": pa.array(np.concatenate(rid), pa.string()),
            "defect": pa.array(np.concatenate(kind), pa.string()),
        }
    )
