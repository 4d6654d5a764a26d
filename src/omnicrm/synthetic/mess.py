"""Realistic mess in personal data and rows, all vectorised.

Personal data: keyboard typos (swapped, dropped, doubled or neighbouring letters; misspelt e-mail
domains), case and whitespace variants, and the choice of at most one *damage* (a typo or a missing
value) per record, so every record keeps enough signal to be linked to its owner.

Rows: malformed rows (unparseable timestamp, negative price on a sale, unknown category value,
empty record id, out-of-range score) and exact duplicate rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from omnicrm.synthetic.vocabulary import BAD_TIMESTAMPS, EMAIL_DOMAINS, UNKNOWN_VALUES

# Keys next to each letter on a UK QWERTY keyboard (the slip a fast typist makes).
_NEIGHBOURS = {
    "a": "qsz",
    "b": "vgn",
    "c": "xdv",
    "d": "sfe",
    "e": "wrd",
    "f": "dgr",
    "g": "fht",
    "h": "gjy",
    "i": "uok",
    "j": "hku",
    "k": "jli",
    "l": "kop",
    "m": "nkj",
    "n": "bmh",
    "o": "ipl",
    "p": "ol0",
    "q": "wa1",
    "r": "etf",
    "s": "adw",
    "t": "ryg",
    "u": "yij",
    "v": "cbf",
    "w": "qes",
    "x": "zcs",
    "y": "tuh",
    "z": "xas",
}
_NEIGHBOUR_TABLE = np.arange(128, dtype=np.uint32)[:, None].repeat(3, axis=1)
for _letter, _keys in _NEIGHBOURS.items():
    _NEIGHBOUR_TABLE[ord(_letter)] = [ord(k) for k in _keys]
    _NEIGHBOUR_TABLE[ord(_letter.upper())] = [ord(k.upper()) for k in _keys]

_DOMAIN_TYPOS = {domain: typos for domain, _, typos in EMAIL_DOMAINS}


def typo(
    values: np.ndarray, rng: np.random.Generator, start: np.ndarray | None = None, stop: np.ndarray | None = None
) -> np.ndarray:
    """Put one keyboard slip in each value, inside the character range ``[start, stop)``.

    The slip is a swap of two adjacent characters, a dropped character, a doubled character or a
    neighbouring key, chosen at random. Values with fewer than two characters in range are
    returned unchanged.

    Parameters
    ----------
    values
        Strings to corrupt.
    rng
        Random generator.
    start, stop
        Per-value character range the slip may touch (default: the whole string).

    Returns
    -------
    numpy.ndarray
        The corrupted strings (``str`` dtype).
    """
    v = np.ascontiguousarray(np.asarray(values, dtype=str))
    n = v.shape[0]
    if n == 0:
        return v.copy()
    width = max(v.dtype.itemsize // 4, 1)
    span_width = width + 1  # room for a doubled character
    chars = np.zeros((n, span_width), dtype="U1")
    chars[:, :width] = v.astype(f"U{width}").view("U1").reshape(n, width)
    length = np.strings.str_len(v)
    lo = np.zeros(n, dtype=np.int64) if start is None else np.asarray(start, dtype=np.int64)
    hi = length if stop is None else np.minimum(np.asarray(stop, dtype=np.int64), length)
    ok = (hi - lo) >= 2
    pos = lo + np.floor(rng.random(n) * np.maximum(hi - lo - 1, 1)).astype(np.int64)
    pos = np.where(ok, pos, 0)
    kind = rng.integers(0, 4, n)
    rows = np.arange(n)[:, None]
    cols = np.arange(span_width)[None, :]
    p = pos[:, None]

    swap_idx = np.where(cols == p, p + 1, np.where(cols == p + 1, p, cols))
    drop_idx = np.minimum(cols + (cols >= p), span_width - 1)
    double_idx = cols - (cols > p)
    idx = np.select(
        [kind[:, None] == 0, kind[:, None] == 1, kind[:, None] == 2], [swap_idx, drop_idx, double_idx], cols
    )
    out = chars[rows, idx]
    # neighbouring key: replace the character at pos by one of its keyboard neighbours
    nb = (kind == 3) & ok
    if nb.any():
        r = np.flatnonzero(nb)
        code = out[r, pos[r]].view(np.uint32).copy()
        ascii_ = code < 128
        pick = rng.integers(0, 3, r.size)
        code[ascii_] = _NEIGHBOUR_TABLE[code[ascii_], pick[ascii_]]
        out[r, pos[r]] = code.view("U1")
    out = np.where(ok[:, None], out, chars)
    return np.ascontiguousarray(out).view(f"U{span_width}").reshape(n)


def email_typo(emails: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Misspell e-mail addresses: a known domain slip (``gmial.com``) or a slip in the local part."""
    e = np.asarray(emails, dtype=str)
    at = np.strings.find(e, "@")
    out = typo(e, rng, start=np.zeros_like(at), stop=at)
    domain = np.strings.slice(e, at + 1, None)
    use_domain = rng.random(e.size) < 0.4
    for name, typos in _DOMAIN_TYPOS.items():
        hit = np.flatnonzero(use_domain & (domain == name))
        if hit.size:
            bad = np.asarray(typos)[rng.integers(0, len(typos), hit.size)]
            out[hit] = np.strings.add(np.strings.slice(e[hit], 0, at[hit] + 1), bad)
    return out


def _apply(values: np.ndarray, variant: np.ndarray, forms: Sequence) -> np.ndarray:
    """Replace each value whose ``variant`` is k (>= 0) by ``forms[k](value)``."""
    out = np.asarray(values, dtype=object).copy()
    for k, form in enumerate(forms):
        hit = np.flatnonzero(variant == k)
        if hit.size:
            out[hit] = form(np.asarray(values[hit], dtype=str))
    return out.astype(str)


def _variant(
    rng: np.random.Generator, n: int, rate: float, n_forms: int, weights: Sequence[float] | None = None
) -> np.ndarray:
    """-1 (canonical) or the index of a non-canonical form, drawn with probability ``rate``."""
    w = np.ones(n_forms) if weights is None else np.asarray(weights, dtype=float)
    form = rng.choice(n_forms, size=n, p=w / w.sum())
    return np.where(rng.random(n) < rate, form, -1)


def _pad(s: np.ndarray) -> np.ndarray:
    return np.strings.add(np.strings.add(" ", s), " ")


def name_case(values: np.ndarray, rng: np.random.Generator, rate: float) -> np.ndarray:
    """Case and whitespace variants of names: ``JOHN``, ``john``, ``John ``, `` John``."""
    forms = (np.strings.upper, np.strings.lower, lambda s: np.strings.add(s, " "), lambda s: np.strings.add(" ", s))
    return _apply(values, _variant(rng, len(values), rate, len(forms), (3, 3, 2, 1)), forms)


def email_case(values: np.ndarray, rng: np.random.Generator, rate: float) -> np.ndarray:
    """Case and whitespace variants of e-mails: `` John.Smith@Gmail.Com ``, ``JOHN.SMITH@GMAIL.COM``."""
    forms = (
        np.strings.title,
        np.strings.upper,
        np.strings.capitalize,
        _pad,
        lambda s: _pad(np.strings.title(s)),
        lambda s: np.strings.add(s, " "),
    )
    return _apply(values, _variant(rng, len(values), rate, len(forms), (3, 1, 2, 2, 1, 1)), forms)


def postcode_case(values: np.ndarray, rng: np.random.Generator, rate: float) -> np.ndarray:
    """Case and spacing variants of postcodes: ``sw1a1aa``, ``SW1A1AA``, ``sw1a 1aa``, ``SW1A  1AA``."""
    forms = (
        lambda s: np.strings.lower(np.strings.replace(s, " ", "")),
        lambda s: np.strings.replace(s, " ", ""),
        np.strings.lower,
        lambda s: np.strings.replace(s, " ", "  "),
        lambda s: np.strings.add(s, " "),
    )
    return _apply(values, _variant(rng, len(values), rate, len(forms), (3, 3, 2, 1, 1)), forms)


def full_name_variants(first: np.ndarray, last: np.ndarray, rng: np.random.Generator, rate: float) -> np.ndarray:
    """How a call-centre agent writes a caller's name.

    Canonical ``John Smith``; with probability ``rate`` one of ``SMITH, John``, ``Smith, John``,
    `` john  smith `` or ``JOHN SMITH``.
    """
    first = np.asarray(first, dtype=str)
    last = np.asarray(last, dtype=str)
    canonical = np.strings.add(np.strings.add(first, " "), last)
    variant = _variant(rng, first.size, rate, 4, (2, 1, 2, 1))
    out = canonical.astype(object)
    comma = np.strings.add(", ", first)
    forms = (
        np.strings.add(np.strings.upper(last), comma),
        np.strings.add(last, comma),
        _pad(np.strings.lower(np.strings.add(np.strings.add(first, "  "), last))),
        np.strings.upper(canonical),
    )
    for k, form in enumerate(forms):
        hit = variant == k
        out[hit] = form[hit]
    return out.astype(str)


def choose_damage(rng: np.random.Generator, n: int, rates: Sequence[float]) -> np.ndarray:
    """At most one damage per record: -1 (none) or the index of the damage that applies.

    Damage k would hit a record with probability ``rates[k]`` on its own; a record is damaged with
    probability ``1 - prod(1 - rates)`` and then gets exactly one damage, chosen in proportion to
    the rates. One damage per record keeps every record linkable by its other fields.
    """
    r = np.asarray(rates, dtype=float)
    if n == 0 or r.sum() <= 0:
        return np.full(n, -1, dtype=np.int64)
    damaged = rng.random(n) < 1.0 - np.prod(1.0 - r)
    which = rng.choice(r.size, size=n, p=r / r.sum())
    return np.where(damaged, which, -1)


def phone_style(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """Index into :func:`~omnicrm.synthetic.formats.phone_variants` for ``n`` written numbers.

    Most numbers are written nationally (``07700 900123`` or ``07700900123``); with probability
    ``rate`` one of the international or bracketed forms is used instead.
    """
    plain = np.where(rng.random(n) < 0.7, 0, 4)
    return np.where(rng.random(n) < rate, rng.integers(1, 4, n), plain)


# --- rows ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Defect:
    """A way of making a row malformed.

    Attributes
    ----------
    kind
        ``bad_timestamp``, ``negative_price``, ``unknown_value``, ``empty_key`` or ``bad_score``.
    column
        The column that is damaged.
    only_where
        Optional ``(column, value)``: the defect only applies to rows where ``column == value``
        (a negative price only on a sale).
    values
        Optional pool of replacement values (default: a pool for the kind).
    """

    kind: str
    column: str
    only_where: tuple[str, str] | None = None
    values: tuple[str, ...] | None = None


def _bad_values(defect: Defect, column_is_epoch: bool, rng: np.random.Generator, n: int) -> np.ndarray:
    kind = defect.kind
    if defect.values is not None:
        pool = defect.values
    elif kind == "bad_timestamp":
        pool = ("not a date", "17O0000000", "-", "NaN") if column_is_epoch else BAD_TIMESTAMPS
    elif kind == "unknown_value":
        pool = UNKNOWN_VALUES
    elif kind == "bad_score":
        pool = ("n/a", "11", "-1", "ten")
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(kind)
    return np.asarray(pool)[rng.integers(0, len(pool), n)]


def inject_bad_rows(
    columns: dict[str, pa.Array],
    defects: Sequence[Defect],
    rate: float,
    rng: np.random.Generator,
    epoch_columns: Sequence[str] = (),
) -> np.ndarray:
    """Make a share ``rate`` of rows malformed, in place in ``columns``.

    Parameters
    ----------
    columns
        Column name -> string array; damaged columns are replaced.
    defects
        The defects that make sense for this file; each bad row gets one, at random (a defect whose
        ``only_where`` does not hold for the row falls back to the first defect).
    rate
        Share of rows to damage (binomial); a file of at least 100 rows per defect kind gets every
        kind at least once.
    rng
        Random generator.
    epoch_columns
        Timestamp columns written as epoch seconds (they get non-numeric junk).

    Returns
    -------
    numpy.ndarray
        Per row: the defect kind, or ``""`` for a good row.
    """
    n = len(next(iter(columns.values())))
    label = np.full(n, "", dtype=object)
    if n == 0 or rate <= 0 or not defects:
        return label
    # Small files would often get no bad row at all; a file with a few hundred rows gets every
    # kind of defect at least once so that each quarantine path is exercised.
    n_bad = rng.binomial(n, rate)
    if n >= 100 * len(defects):
        n_bad = max(n_bad, len(defects))
    bad = np.sort(rng.choice(n, size=n_bad, replace=False))
    which = rng.integers(0, len(defects), bad.size)
    if bad.size >= len(defects):
        which[rng.choice(bad.size, size=len(defects), replace=False)] = np.arange(len(defects))
    for k, defect in enumerate(defects):
        rows = bad[which == k]
        if defect.only_where is not None and rows.size:
            col, value = defect.only_where
            holds = np.asarray(pc.equal(columns[col].take(pa.array(rows)), value).fill_null(False))
            which[np.isin(bad, rows[~holds])] = 0
    for k, defect in enumerate(defects):
        rows = bad[which == k]
        if rows.size == 0:
            continue
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        current = columns[defect.column]
        if defect.kind == "empty_key":
            new = pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), current)
        elif defect.kind == "negative_price":
            new = pc.if_else(pa.array(mask), pc.binary_join_element_wise("-", current, ""), current)
        else:
            values = np.full(n, "", dtype=object)
            values[rows] = _bad_values(defect, defect.column in epoch_columns, rng, rows.size)
            new = pc.if_else(pa.array(mask), pa.array(values, pa.string()), current)
        columns[defect.column] = new
        label[rows] = defect.kind
    return label


def duplicate_rows(n: int, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row order with a share ``rate`` of rows repeated right after themselves (re-delivered rows).

    Returns
    -------
    order : numpy.ndarray
        Indices into the original rows, to ``take`` every column with.
    is_copy : numpy.ndarray
        True for the repeated copies.
    """
    dup = np.flatnonzero(rng.random(n) < rate)
    order = np.concatenate([np.arange(n), dup])
    is_copy = np.concatenate([np.zeros(n, dtype=bool), np.ones(dup.size, dtype=bool)])
    sort = np.argsort(order, kind="stable")
    return order[sort], is_copy[sort]
