"""Normalising personal data (as DuckDB SQL expressions) before it is hashed and linked.

Normalisation makes equal things equal: ``" John.Smith@Gmail.COM "`` and ``john.smith@gmail.com``
are one e-mail, ``07700 900123`` and ``+44 7700 900123`` one phone. It runs in the engine on whole
columns. The results exist only in memory during ingest: the store receives salted hashes.
"""

from __future__ import annotations

from omnicrm.sql import literal

#: the personal-data fields a source record can carry once normalised
PII_FIELDS = ("email", "phone", "card", "first_name", "last_name", "postcode")


def email(col: str) -> str:
    """Lower-case, strip all whitespace; NULL unless it looks like ``local@domain.tld``."""
    e = f"lower(regexp_replace({col}, '\\s+', '', 'g'))"
    return f"CASE WHEN regexp_full_match({e}, '[^@]+@[^@]+\\.[^@]+') THEN {e} END"


def phone(col: str, country_code: str = "44") -> str:
    """Canonical E.164 (``+447700900123``) from national or international formats.

    Digits only; an international prefix (``00``) or the country code is dropped, as is the
    national trunk ``0``; what is left must be 9–10 digits (UK numbering), else NULL.
    """
    cc = literal(country_code)
    d = f"regexp_replace({col}, '[^0-9]', '', 'g')"
    nat = (
        f"CASE WHEN starts_with({d}, '00' || {cc}) THEN substr({d}, {len(country_code) + 3}) "
        f"WHEN starts_with({d}, {cc}) AND length({d}) > 10 THEN substr({d}, {len(country_code) + 1}) "
        f"WHEN starts_with({d}, '0') THEN substr({d}, 2) ELSE {d} END"
    )
    return f"CASE WHEN length({nat}) BETWEEN 9 AND 10 THEN '+' || {cc} || {nat} END"


def card(col: str) -> str:
    """Digits only; NULL if fewer than 8 digits remain."""
    d = f"regexp_replace({col}, '[^0-9]', '', 'g')"
    return f"CASE WHEN length({d}) >= 8 THEN {d} END"


def name(col: str) -> str:
    """Lower-case letters, apostrophes and hyphens; runs of spaces collapsed; NULL if empty."""
    n = f"trim(regexp_replace(regexp_replace(lower({col}), '[^a-z\\-'' ]', '', 'g'), '\\s+', ' ', 'g'))"
    return f"NULLIF({n}, '')"


def full_name_parts(col: str) -> tuple[str, str]:
    """(first, last) from ``"John Smith"`` or ``"SMITH, John"``: a comma means *last, first*."""
    c = f"trim({col})"
    first = f"CASE WHEN contains({c}, ',') THEN split_part({c}, ',', 2) ELSE regexp_extract({c}, '^\\s*(\\S+)', 1) END"
    last = f"CASE WHEN contains({c}, ',') THEN split_part({c}, ',', 1) ELSE regexp_extract({c}, '(\\S+)\\s*$', 1) END"
    first_n, last_n = name(first), name(last)
    # a single word is a last name only if there was a comma; otherwise we cannot tell: keep first
    last_n = f"CASE WHEN contains({c}, ',') OR regexp_matches({c}, '\\S\\s+\\S') THEN {last_n} END"
    return first_n, last_n


def postcode(col: str) -> str:
    """Upper-case, spaces removed, then ``OUTWARD INWARD`` (inward = last three characters)."""
    p = f"upper(regexp_replace({col}, '[^A-Za-z0-9]', '', 'g'))"
    return f"CASE WHEN length({p}) BETWEEN 5 AND 7 THEN substr({p}, 1, length({p}) - 3) || ' ' || right({p}, 3) END"


def region(postcode_expr: str) -> str:
    """Postcode area (the leading letters, e.g. ``SW``): coarse enough not to identify anyone."""
    return f"NULLIF(regexp_extract({postcode_expr}, '^[A-Z]+', 0), '')"


#: personal-data kind of a source mapping -> its normaliser (``full_name`` splits into two fields)
NORMALISERS = {
    "email": email,
    "phone": phone,
    "card": card,
    "first_name": name,
    "last_name": name,
    "postcode": postcode,
}
