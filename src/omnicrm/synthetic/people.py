"""People of the synthetic world: households, personal data and latent traits.

Every person has a household (2-4 people share one in about half the cases: same postcode, often the
same surname, sometimes a shared landline), canonical personal data (names, one or two e-mail
addresses, a mobile, a postcode), the identities a retailer holds about them (loyalty membership and
card, consent, app), and latent traits that drive behaviour (purchase rate, churn hazard,
category and channel preferences, e-mail responsiveness, price sensitivity, satisfaction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from omnicrm.synthetic.config import WorldConfig
from omnicrm.synthetic.formats import zero_pad
from omnicrm.synthetic.vocabulary import (
    CATEGORIES,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    LAST_NAMES,
    NICKNAMES,
    POSTCODE_UNIT_LETTERS,
    REGIONS,
)

#: Channels of a purchase, in the column order of ``Population.channel_pref``.
CHANNELS = ("store", "web", "app")
STORE, WEB, APP = 0, 1, 2

# Household sizes, per household: half are single, so about 70% of people share a household with
# other customers (a retailer's customers cluster in households less than the population does).
_HOUSEHOLD_SIZES = np.array([1, 2, 3, 4])
_HOUSEHOLD_SHARES = np.array([0.50, 0.28, 0.13, 0.09])
_SHARED_SURNAME = 0.75  # chance a household member carries the head's surname
_PRE_EXISTING = 0.6  # share of people who were customers before start_date
_HISTORY_DAYS = 5 * 365  # how far back pre-existing customers signed up
_NON_MEMBER_STORE = 0.1  # store preference kept by people without a loyalty card
_MOVE_RATE = 0.04  # households that move house during the period (records keep the old postcode)


@dataclass(frozen=True)
class Stores:
    """Physical stores: code (``ST001``) and region index."""

    code: np.ndarray
    region: np.ndarray


@dataclass(frozen=True)
class Population:
    """One entry per person; the index is the person number (``person_id`` = ``P`` + 7 digits).

    Days are counted from ``start_date`` (negative: before the simulated period). Phone numbers are
    10-digit national significant numbers; ``""`` means "none".
    """

    household: np.ndarray
    region: np.ndarray
    postcode: np.ndarray
    new_postcode: np.ndarray
    move_day: np.ndarray
    first_name: np.ndarray
    nickname: np.ndarray
    last_name: np.ndarray
    email: np.ndarray
    email2: np.ndarray
    mobile: np.ndarray
    landline: np.ndarray
    home_store: np.ndarray
    signup_day: np.ndarray
    signup_channel: np.ndarray
    is_member: np.ndarray
    card: np.ndarray
    card2: np.ndarray
    card2_day: np.ndarray
    email_consent: np.ndarray
    sms_consent: np.ndarray
    push_consent: np.ndarray
    has_app: np.ndarray
    purchase_rate: np.ndarray
    base_hazard: np.ndarray
    neglect_sensitivity: np.ndarray
    price_sensitivity: np.ndarray
    email_responsiveness: np.ndarray
    satisfaction: np.ndarray
    visit_rate: np.ndarray
    channel_pref: np.ndarray
    category_pref: np.ndarray

    @property
    def size(self) -> int:
        """Number of people."""
        return int(self.household.size)

    def postcode_on(self, person: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Postcode of each ``person`` on ``day`` (households that move change it on ``move_day``)."""
        moved = np.asarray(day) >= self.move_day[person]
        return np.where(moved, self.new_postcode[person], self.postcode[person])

    def name_used(self, person: np.ndarray, rng: np.random.Generator, rate: float) -> np.ndarray:
        """First name given informally: the nickname (if any) with probability ``rate``."""
        nick = self.nickname[person]
        return np.where((nick != "") & (rng.random(nick.size) < rate), nick, self.first_name[person])

    @property
    def online_share(self) -> np.ndarray:
        """Preference for buying online (web + app) rather than in store."""
        return self.channel_pref[:, WEB] + self.channel_pref[:, APP]


def person_ids(index: np.ndarray) -> np.ndarray:
    """``P0000001``-style ids of person numbers."""
    return zero_pad(np.asarray(index) + 1, 7, "P")


def make_stores(config: WorldConfig, rng: np.random.Generator) -> Stores:
    """Spread ``n_stores`` over regions in proportion to population, at least one per region."""
    shares = np.array([r.share for r in REGIONS])
    n = config.n_stores
    if n >= len(REGIONS):
        per_region = 1 + np.floor((n - len(REGIONS)) * shares / shares.sum()).astype(int)
        # hand the rounding remainder to the largest regions
        short = n - per_region.sum()
        per_region[np.argsort(-shares, kind="stable")[:short]] += 1
        region = np.repeat(np.arange(len(REGIONS)), per_region)
    else:
        region = np.sort(rng.choice(len(REGIONS), size=n, replace=False, p=shares / shares.sum()))
    code = zero_pad(np.arange(n) + 1, 3, "ST")
    return Stores(code=code, region=region)


def _households(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Household number and rank within the household (0 = head) of each of ``n`` people."""
    sizes = rng.choice(_HOUSEHOLD_SIZES, size=n, p=_HOUSEHOLD_SHARES)  # at most n households
    ends = np.cumsum(sizes)
    n_households = int(np.searchsorted(ends, n)) + 1
    sizes = sizes[:n_households]
    sizes[-1] -= ends[n_households - 1] - n  # the last household is cut to fit
    household = np.repeat(np.arange(n_households), sizes)
    starts = np.cumsum(sizes) - sizes
    rank = np.arange(n) - np.repeat(starts, sizes)
    return household, rank


def _unique_digits(rng: np.random.Generator, n: int, prefix: str, n_digits: int) -> np.ndarray:
    """``n`` distinct strings: ``prefix`` followed by ``n_digits`` random digits."""
    numbers = rng.choice(10**n_digits, size=n, replace=False)
    return zero_pad(numbers, n_digits, prefix)


def _mobiles(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct 10-digit UK mobile numbers (07 ranges in use: 071-075, 077-079)."""
    prefixes = np.array(["71", "73", "74", "75", "77", "78", "79"])
    number = rng.choice(prefixes.size * 10**8, size=n, replace=False)
    return np.strings.add(prefixes[number // 10**8], zero_pad(number % 10**8, 8))


def _email_local(first: np.ndarray, last: np.ndarray, pattern: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """E-mail local parts in the patterns people use: ``john.smith``, ``jsmith84``, ``smith_john``."""
    f = np.strings.lower(np.strings.replace(first, "'", ""))
    lname = np.strings.lower(np.strings.replace(last, "'", ""))
    fi = np.strings.slice(f, 0, 1)
    li = np.strings.slice(lname, 0, 1)
    dot = lambda a, b, sep=".": np.strings.add(np.strings.add(a, sep), b)  # noqa: E731
    forms = [
        dot(f, lname),
        np.strings.add(f, lname),
        dot(fi, lname),
        dot(f, lname, "_"),
        dot(lname, f),
        np.strings.add(f, li),
        np.strings.add(fi, lname),
    ]
    local = np.choose(pattern, [x.astype("U64") for x in forms])
    # half the addresses carry a number (birth year or a favourite number)
    year = zero_pad(rng.integers(50, 106, local.size) % 100, 2)
    number = rng.integers(1, 1000, local.size).astype(str)
    suffix = np.where(rng.random(local.size) < 0.5, year, number)
    return np.where(rng.random(local.size) < 0.5, np.strings.add(local, suffix), local)


def _emails(
    first: np.ndarray,
    last: np.ndarray,
    rng: np.random.Generator,
    taken: np.ndarray | None = None,
    avoid_domain: np.ndarray | None = None,
) -> np.ndarray:
    """Distinct lower-case e-mail addresses for people named ``first last``."""
    n = first.size
    pattern = rng.integers(0, 7, n)
    local = _email_local(first, last, pattern, rng)
    shares = np.array([d[1] for d in EMAIL_DOMAINS])
    names = np.array([d[0] for d in EMAIL_DOMAINS])
    domain = names[rng.choice(names.size, size=n, p=shares / shares.sum())]
    if avoid_domain is not None:  # a second address is usually with another provider
        avoid = np.argmax(np.asarray(avoid_domain)[:, None] == names[None, :], axis=1)
        pick = rng.choice(names.size - 1, size=n, p=None)
        domain = names[np.where(pick >= avoid, pick + 1, pick)]
    email = np.strings.add(np.strings.add(local, "@"), domain).astype("U80")
    taken = np.asarray([] if taken is None else taken, dtype=str)
    # Collisions (two John Smiths at gmail) get another number, as the provider would demand.
    while True:
        seen = np.concatenate([taken, email])
        _, first_at = np.unique(seen, return_index=True)
        dup = np.ones(seen.size, dtype=bool)
        dup[first_at] = False  # ``taken`` comes first, so a clash with it counts as a duplicate
        dup = dup[taken.size :]
        if not dup.any():
            return email
        at = np.strings.find(email[dup], "@")
        extra = rng.integers(1, 10000, int(dup.sum())).astype(str)
        email[dup] = np.strings.add(
            np.strings.add(np.strings.slice(email[dup], 0, at), extra),
            np.strings.slice(email[dup], at, None),
        )


def _postcodes(region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Canonical UK-style postcodes (``SW12 3AB``) in each household's region."""
    n = region.size
    areas = [np.asarray(REGIONS[r].postcode_areas) for r in range(len(REGIONS))]
    n_areas = np.array([a.size for a in areas])
    all_areas = np.concatenate(areas)
    offset = np.concatenate([[0], np.cumsum(n_areas)[:-1]])
    area = all_areas[offset[region] + (rng.random(n) * n_areas[region]).astype(int)]
    district = rng.integers(1, 30, n).astype(str)
    letters = np.array(list(POSTCODE_UNIT_LETTERS))
    unit = np.strings.add(letters[rng.integers(0, letters.size, n)], letters[rng.integers(0, letters.size, n)])
    inward = np.strings.add(rng.integers(0, 10, n).astype(str), unit)
    return np.strings.add(np.strings.add(np.strings.add(area, district), " "), inward)


def _landlines(region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """10-digit landline numbers with an area code of the household's region."""
    codes = [np.asarray(REGIONS[r].landline_codes) for r in range(len(REGIONS))]
    n_codes = np.array([c.size for c in codes])
    offset = np.concatenate([[0], np.cumsum(n_codes)[:-1]])
    pick = (rng.random(region.size) * n_codes[region]).astype(int)
    code = np.concatenate(codes)[offset[region] + pick]
    rest_len = 10 - np.strings.str_len(code)
    rest = zero_pad(rng.integers(0, 10**8, region.size), 8)
    return np.strings.add(code, np.strings.slice(rest, 0, rest_len))


def make_population(config: WorldConfig, stores: Stores, rng: np.random.Generator) -> Population:
    """Draw the people of the world.

    Parameters
    ----------
    config
        World configuration (size, period, messiness rates used for second e-mails, shared
        landlines and duplicate member records).
    stores
        The stores; each person's home store is in their region.
    rng
        Random generator of the ``people`` stream.

    Returns
    -------
    Population
    """
    n = config.n_people
    mess = config.mess
    household, rank = _households(n, rng)
    n_hh = int(household.max()) + 1
    hh_size = np.bincount(household)

    # --- where they live -----------------------------------------------------------------------
    shares = np.array([r.share for r in REGIONS])
    hh_region = rng.choice(len(REGIONS), size=n_hh, p=shares / shares.sum())
    hh_postcode = _postcodes(hh_region, rng)
    hh_landline = np.where(
        (hh_size >= 2) & (rng.random(n_hh) < mess.household_phone_rate), _landlines(hh_region, rng), ""
    )
    region = hh_region[household]
    postcode = hh_postcode[household]
    landline = hh_landline[household]
    # home store: a store of the region (or any store if the region has none)
    order = np.argsort(stores.region, kind="stable")
    first_store = np.searchsorted(stores.region[order], np.arange(len(REGIONS)))
    n_in_region = np.bincount(stores.region, minlength=len(REGIONS))
    pick = (rng.random(n) * np.maximum(n_in_region[region], 1)).astype(int)
    local_store = order[np.minimum(first_store[region] + pick, stores.code.size - 1)]
    home_store = np.where(n_in_region[region] > 0, local_store, rng.integers(0, stores.code.size, n))

    # --- names: household members get distinct first names, most share the head's surname ------
    n_first = len(FIRST_NAMES)
    base = rng.integers(0, n_first, n_hh)[household]
    step = rng.integers(1, n_first // 4, n_hh)[household]
    first_index = (base + rank * step) % n_first
    first_name = np.asarray(FIRST_NAMES)[first_index]
    zipf = 1.0 / np.arange(1, len(LAST_NAMES) + 1) ** 0.7
    surname = rng.choice(len(LAST_NAMES), size=n, p=zipf / zipf.sum())
    own = (rank > 0) & (rng.random(n) > _SHARED_SURNAME)
    head_surname = surname[np.searchsorted(household, household)]  # the head is first in its household
    last_name = np.asarray(LAST_NAMES)[np.where(own, surname, head_surname)]

    # --- contact details ---------------------------------------------------------------------------
    email = _emails(first_name, last_name, rng)
    has_email2 = rng.random(n) < mess.second_email_rate
    email2 = np.full(n, "", dtype="U80")
    if has_email2.any():
        idx = np.flatnonzero(has_email2)
        domain1 = np.strings.slice(email[idx], np.strings.find(email[idx], "@") + 1, None)
        email2[idx] = _emails(first_name[idx], last_name[idx], rng, taken=email, avoid_domain=domain1)
    mobile = _mobiles(rng, n)

    # --- latent traits -----------------------------------------------------------------------------
    channel_pref = rng.dirichlet([2.0, 1.0, 0.8], size=n)
    has_app = rng.random(n) < np.clip(0.1 + 1.5 * channel_pref[:, APP], 0.0, 0.95)
    # people without the app buy online on the web instead
    channel_pref[~has_app, WEB] += channel_pref[~has_app, APP]
    channel_pref[~has_app, APP] = 0.0
    popularity = np.array([c.popularity for c in CATEGORIES[: config.n_categories]])
    category_pref = rng.dirichlet(4.0 * popularity / popularity.sum() * config.n_categories / 8, size=n)
    purchase_rate = rng.gamma(shape=1.2, scale=0.1, size=n)  # orders per week, mean 0.12
    base_hazard = rng.gamma(shape=2.0, scale=0.0012, size=n)  # weekly churn hazard when engaged
    neglect_sensitivity = rng.lognormal(mean=np.log(0.5), sigma=0.5, size=n)
    price_sensitivity = rng.beta(2.0, 3.0, size=n)
    email_responsiveness = rng.beta(1.5, 6.0, size=n)
    satisfaction = rng.normal(size=n)
    online = channel_pref[:, WEB] + channel_pref[:, APP]
    visit_rate = 0.5 * online * rng.gamma(shape=2.0, scale=0.5, size=n)  # browsing sessions per week

    # --- relationship with the retailer ------------------------------------------------------------
    pre_existing = rng.random(n) < _PRE_EXISTING
    # acquisition accelerates a little over the period (u ** 0.8 puts more mass late)
    acquired_day = np.floor(config.days * rng.random(n) ** 0.8).astype(np.int64)
    signup_day = np.where(pre_existing, -rng.integers(1, _HISTORY_DAYS, n), acquired_day)
    cum = np.cumsum(channel_pref, axis=1)
    signup_channel = (rng.random(n)[:, None] > cum[:, :-1]).sum(axis=1)
    # store-minded people join the loyalty scheme; online-minded people often do not, and those
    # who never joined rarely shop in store (a regular store shopper is offered a card at the till)
    is_member = rng.random(n) < np.clip(0.3 + 0.75 * channel_pref[:, STORE], 0.0, 0.97)
    channel_pref[~is_member, STORE] *= _NON_MEMBER_STORE
    channel_pref /= channel_pref.sum(axis=1, keepdims=True)
    card = np.full(n, "", dtype="U12")
    members = np.flatnonzero(is_member)
    has_dup = np.zeros(n, dtype=bool)
    has_dup[members] = rng.random(members.size) < mess.duplicate_member_rate
    dups = np.flatnonzero(has_dup)
    cards = _unique_digits(rng, members.size + dups.size, "6337", 8)
    card[members] = cards[: members.size]
    card2 = np.full(n, "", dtype="U12")
    card2[dups] = cards[members.size :]
    # a second member record is created later (lost card, re-registration online)
    far = np.iinfo(np.int64).max
    card2_day = np.full(n, far, dtype=np.int64)
    first_possible = np.maximum(signup_day[dups] + 30, 0)
    span = np.maximum(config.days - first_possible - 1, 1)
    card2_day[dups] = first_possible + (rng.random(dups.size) * span).astype(np.int64)
    email_consent = rng.random(n) < np.clip(0.4 + 1.0 * email_responsiveness, 0.0, 0.95)
    sms_consent = rng.random(n) < 0.35
    push_consent = has_app & (rng.random(n) < 0.6)

    # moving house: the whole household gets a new postcode (same region) on one day
    hh_moves = rng.random(n_hh) < _MOVE_RATE
    hh_move_day = np.where(hh_moves, rng.integers(30, max(config.days - 30, 31), n_hh), np.iinfo(np.int64).max)
    hh_new_postcode = np.where(hh_moves, _postcodes(hh_region, rng), "")
    nickname = np.asarray([NICKNAMES.get(name, "") for name in FIRST_NAMES])[first_index]

    return Population(
        household=household,
        region=region,
        postcode=postcode,
        new_postcode=hh_new_postcode[household],
        move_day=hh_move_day[household],
        first_name=first_name,
        nickname=nickname,
        last_name=last_name,
        email=email,
        email2=email2,
        mobile=mobile,
        landline=landline,
        home_store=home_store,
        signup_day=signup_day,
        signup_channel=signup_channel,
        is_member=is_member,
        card=card,
        card2=card2,
        card2_day=card2_day,
        email_consent=email_consent,
        sms_consent=sms_consent,
        push_consent=push_consent,
        has_app=has_app,
        purchase_rate=purchase_rate,
        base_hazard=base_hazard,
        neglect_sensitivity=neglect_sensitivity,
        price_sensitivity=price_sensitivity,
        email_responsiveness=email_responsiveness,
        satisfaction=satisfaction,
        visit_rate=visit_rate,
        channel_pref=channel_pref,
        category_pref=category_pref,
    )


def _dates(start: np.datetime64, day: np.ndarray, known: np.ndarray) -> pa.Array:
    """Midnight timestamps of ``day`` (days from ``start``); null where not ``known``."""
    stamps = (start + np.where(known, day, 0).astype("timedelta64[D]")).astype("datetime64[s]")
    return pa.array(stamps, mask=~np.asarray(known, dtype=bool))


def people_truth(pop: Population, config: WorldConfig, churn_day: np.ndarray) -> pa.Table:
    """Ground truth per person (``truth/people.parquet``).

    Parameters
    ----------
    pop
        The population.
    config
        World configuration (for dates and category names).
    churn_day
        Day (from ``start_date``) each person churned, -1 if alive at the end.

    Returns
    -------
    pyarrow.Table
        One row per person: ids, household, region, canonical personal data (``postcode`` before
        and ``new_postcode`` after a move on ``move_date``), signup and churn dates (midnight
        timestamps; ``churn_date`` null if still a customer at the end), identities held by the
        retailer and every latent trait. ``category_pref`` is a list
        of preferences aligned with ``category_names`` (stored in the table metadata).
    """
    start = np.datetime64(config.start_date, "D")
    k = config.n_categories
    cols = {
        "person_id": person_ids(np.arange(pop.size)),
        "household_id": zero_pad(pop.household + 1, 7, "H"),
        "region": np.asarray([r.name for r in REGIONS])[pop.region],
        "postcode": pop.postcode,
        "new_postcode": pop.new_postcode,
        "move_date": _dates(start, pop.move_day, pop.move_day < config.days),
        "first_name": pop.first_name,
        "nickname": pop.nickname,
        "last_name": pop.last_name,
        "email": pop.email,
        "email2": pop.email2,
        "mobile": pop.mobile,
        "landline": pop.landline,
        "signup_date": (start + pop.signup_day.astype("timedelta64[D]")).astype("datetime64[s]"),
        "signup_channel": np.asarray(CHANNELS)[pop.signup_channel],
        "churn_date": _dates(start, churn_day, churn_day >= 0),
        "is_member": pop.is_member,
        "card_no": pop.card,
        "card_no2": pop.card2,
        "email_consent": pop.email_consent,
        "sms_consent": pop.sms_consent,
        "push_consent": pop.push_consent,
        "has_app": pop.has_app,
        "purchase_rate": pop.purchase_rate,
        "base_hazard": pop.base_hazard,
        "neglect_sensitivity": pop.neglect_sensitivity,
        "price_sensitivity": pop.price_sensitivity,
        "email_responsiveness": pop.email_responsiveness,
        "satisfaction": pop.satisfaction,
        "visit_rate": pop.visit_rate,
        "pref_store": pop.channel_pref[:, STORE],
        "pref_web": pop.channel_pref[:, WEB],
        "pref_app": pop.channel_pref[:, APP],
        "category_pref": pa.FixedSizeListArray.from_arrays(pa.array(pop.category_pref.ravel()), k),
    }
    table = pa.table({name: (v if isinstance(v, pa.Array) else pa.array(v)) for name, v in cols.items()})
    names = ",".join(c.name for c in CATEGORIES[:k])
    return table.replace_schema_metadata({"category_names": names})
