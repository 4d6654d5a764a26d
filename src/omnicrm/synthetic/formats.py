"""Vectorised rendering of values as the text that source systems write.

Identifiers, money, timestamps (UTC and Europe/London local time), phone numbers, loyalty cards
and postcodes. Everything works on whole arrays with Arrow compute kernels (C++), because the
raw files hold millions of rows and Python-level string formatting would dominate the run time.
Timestamps are int64 seconds since the Unix epoch (UTC) throughout the generator.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_HOUR = 3600


def epoch_seconds(day: date) -> int:
    """Seconds since the Unix epoch of midnight UTC at the start of ``day``."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def london_offset(ts: np.ndarray) -> np.ndarray:
    """UTC offset of Europe/London (0 or 3600 seconds) at UTC instants ``ts``.

    British Summer Time runs from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last
    Sunday of October (The Summer Time Order 2002). Computing the rule directly keeps the generator
    independent of the tz database installed on the machine.

    Parameters
    ----------
    ts
        Seconds since the epoch (UTC), any shape.

    Returns
    -------
    numpy.ndarray
        int64 offsets in seconds, same shape as ``ts``.
    """
    ts = np.asarray(ts, dtype=np.int64)
    months = ts.astype("datetime64[s]").astype("datetime64[Y]").astype("datetime64[M]")
    bst_start = _last_sunday(months + 2) * 86400 + _HOUR  # March
    bst_end = _last_sunday(months + 9) * 86400 + _HOUR  # October
    return np.where((ts >= bst_start) & (ts < bst_end), _HOUR, 0).astype(np.int64)


def _last_sunday(month: np.ndarray) -> np.ndarray:
    """Days since the epoch of the last Sunday of each ``datetime64[M]`` month."""
    last_day = ((month + 1).astype("datetime64[D]") - np.timedelta64(1, "D")).astype(np.int64)
    weekday = (last_day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0, Sunday = 6
    return last_day - (weekday - 6) % 7


def local_from_utc(ts: np.ndarray) -> np.ndarray:
    """Europe/London wall-clock seconds (as if UTC) of UTC instants ``ts``."""
    return np.asarray(ts, dtype=np.int64) + london_offset(ts)


def utc_from_local(local: np.ndarray) -> np.ndarray:
    """UTC instants of Europe/London wall-clock times ``local`` (seconds, as if UTC).

    The offset is taken at the wall-clock time read as UTC, which is exact except within the hour
    after each clock change; events are rare then and no output depends on that hour.
    """
    local = np.asarray(local, dtype=np.int64)
    return local - london_offset(local)


def _iso(ts: np.ndarray) -> pa.Array:
    """``YYYY-MM-DD HH:MM:SS`` of epoch seconds (Arrow's cast is ~30x faster than strftime)."""
    return pc.cast(pa.array(np.asarray(ts, dtype=np.int64).astype("datetime64[s]")), pa.string())


def _cut(s: pa.Array, start: int, stop: int) -> pa.Array:
    return pc.utf8_slice_codeunits(s, start, stop)


def timestamp_text(ts: np.ndarray, layout: str) -> pa.Array:
    """Render epoch seconds in one of the layouts the sources use.

    Parameters
    ----------
    ts
        Seconds since the epoch; already shifted to local wall-clock time if the source writes
        local time (see :func:`local_from_utc`).
    layout
        One of ``"ymd_hms"`` (``%Y-%m-%d %H:%M:%S``), ``"ymd_hm"`` (``%Y-%m-%d %H:%M``),
        ``"iso_t"`` (``%Y-%m-%dT%H:%M:%S``), ``"iso_z"`` (``%Y-%m-%dT%H:%M:%SZ``),
        ``"dmy_hms"`` (``%d/%m/%Y %H:%M:%S``) or ``"dmy"`` (``%d/%m/%Y``).

    Returns
    -------
    pyarrow.Array
        Strings, one per timestamp.
    """
    s = _iso(ts)
    if layout == "ymd_hms":
        return s
    if layout == "ymd_hm":
        return _cut(s, 0, 16)
    if layout in ("iso_t", "iso_z"):
        out = pc.binary_join_element_wise(_cut(s, 0, 10), _cut(s, 11, 19), "T")
        return pc.binary_join_element_wise(out, "Z", "") if layout == "iso_z" else out
    dmy = pc.binary_join_element_wise(_cut(s, 8, 10), _cut(s, 5, 7), _cut(s, 0, 4), "/")
    if layout == "dmy":
        return dmy
    if layout == "dmy_hms":
        return pc.binary_join_element_wise(dmy, _cut(s, 11, 19), " ")
    raise ValueError(
        f"The 'layout' parameter must be a str among {{'ymd_hms', 'ymd_hm', 'iso_t', "
        f"'iso_z', 'dmy_hms', 'dmy'}}. Got {layout!r} instead."
    )


def london_iso_with_offset(ts: np.ndarray, zulu: np.ndarray) -> pa.Array:
    """ISO 8601 in London local time with its UTC offset: ``2024-03-05T14:22:10+01:00``.

    In winter (offset 0) the suffix is ``Z`` where ``zulu`` is true and ``+00:00`` elsewhere,
    because shop platforms write both.
    """
    offset = london_offset(ts)
    body = timestamp_text(np.asarray(ts) + offset, "iso_t")
    suffix = np.where(offset > 0, "+01:00", np.where(zulu, "Z", "+00:00"))
    return pc.binary_join_element_wise(body, pa.array(suffix), "")


def id_text(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Identifiers like ``M0000001``: ``prefix`` then ``numbers`` zero-padded to ``width``."""
    digits = pc.utf8_lpad(int_text(numbers), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def zero_pad(numbers: np.ndarray, width: int, prefix: str = "") -> np.ndarray:
    """``prefix`` + ``numbers`` zero-padded to ``width`` digits, as a numpy ``str`` array.

    Unlike ``np.strings.zfill`` this also works for an empty array.
    """
    numbers = np.asarray(numbers, dtype=np.int64)
    if numbers.size == 0:
        return np.zeros(numbers.shape, dtype=str)
    return np.strings.add(prefix, np.strings.zfill(numbers.astype(str), width))


def int_text(values: np.ndarray) -> pa.Array:
    """Integers as decimal text."""
    return pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())


def decimal_text(hundredths: np.ndarray) -> pa.Array:
    """Fixed two-decimal text of integer hundredths: 2450 -> ``24.50``, -99 -> ``-0.99``."""
    hundredths = np.asarray(hundredths, dtype=np.int64)
    size = np.abs(hundredths)
    whole = pc.cast(pa.array(size // 100), pa.string())
    frac = pc.utf8_lpad(pc.cast(pa.array(size % 100), pa.string()), 2, "0")
    sign = pa.array(np.where(hundredths < 0, "-", ""))
    return pc.binary_join_element_wise(sign, pc.binary_join_element_wise(whole, frac, "."), "")


# --- phone numbers -------------------------------------------------------------------------------
#: Number of ways a phone number is written (see :func:`phone_variants`).
PHONE_STYLES = 5


def phone_variants(nsn: np.ndarray) -> np.ndarray:
    """All written forms of UK phone numbers given as 10-digit national significant numbers.

    Parameters
    ----------
    nsn
        Numbers without the trunk ``0`` or country code, e.g. ``"7700900123"`` (mobile) or
        ``"2079460123"`` (London landline).

    Returns
    -------
    numpy.ndarray
        Shape ``(len(nsn), PHONE_STYLES)`` of str: ``07700 900123``, ``+44 7700 900123``,
        ``(07700) 900-123``, ``447700900123``, ``07700900123`` (London numbers are grouped
        ``020 7946 0123`` as people write them).
    """
    n = pa.array(np.asarray(nsn, dtype=str))
    london = pc.starts_with(n, "20")
    # group boundaries: London 2+4+4, everything else 4+6 (brackets split the 6 as 3-3)
    area = pc.if_else(london, _cut(n, 0, 2), _cut(n, 0, 4))
    rest = pc.if_else(london, pc.binary_join_element_wise(_cut(n, 2, 6), _cut(n, 6, 10), " "), _cut(n, 4, 10))
    rest_dash = pc.if_else(
        london,
        pc.binary_join_element_wise(_cut(n, 2, 6), _cut(n, 6, 10), "-"),
        pc.binary_join_element_wise(_cut(n, 4, 7), _cut(n, 7, 10), "-"),
    )
    styles = [
        pc.binary_join_element_wise(pc.binary_join_element_wise("0", area, ""), rest, " "),
        pc.binary_join_element_wise("+44", area, rest, " "),
        pc.binary_join_element_wise(pc.binary_join_element_wise("(0", area, ")", ""), rest_dash, " "),
        pc.binary_join_element_wise("44", n, ""),
        pc.binary_join_element_wise("0", n, ""),
    ]
    return np.stack([s.to_numpy(zero_copy_only=False).astype(str) for s in styles], axis=1)


# --- loyalty cards -------------------------------------------------------------------------------
#: Number of ways a card number is written (see :func:`card_variants`).
CARD_STYLES = 3


def card_variants(digits: np.ndarray) -> np.ndarray:
    """Written forms of 12-digit card numbers: ``6337 1234 5678``, ``6337-1234-5678``, ``633712345678``.

    Returns an array of shape ``(len(digits), CARD_STYLES)``.
    """
    d = pa.array(np.asarray(digits, dtype=str))
    parts = (_cut(d, 0, 4), _cut(d, 4, 8), _cut(d, 8, 12))
    styles = [pc.binary_join_element_wise(*parts, " "), pc.binary_join_element_wise(*parts, "-"), d]
    return np.stack([s.to_numpy(zero_copy_only=False).astype(str) for s in styles], axis=1)
