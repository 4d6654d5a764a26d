"""Keyed pseudonyms: the engine's HMAC is RFC 2104 HMAC-SHA-256, keyed by the stretched secret."""

from __future__ import annotations

import hashlib
import hmac

import duckdb
import pytest

from omnicrm.identity.pseudonymise import (
    CUSTOMER_ID_HEX,
    customer_id_sql,
    derive_key,
    hash_sql,
    hmac_hex,
    set_key,
)

VALUES = ["111122223333", "ana@x.com", "zoë@exämple.org", "+447700900123", "", "a'b"]


def _hash_all(secret: str, field: str) -> list[str | None]:
    con = duckdb.connect()
    set_key(con, secret)
    con.execute("CREATE TABLE v AS SELECT unnest(?) AS x, generate_subscripts(?, 1) AS i", [VALUES, VALUES])
    con.execute("INSERT INTO v VALUES (NULL, 99)")
    return [r[0] for r in con.sql(f"SELECT {hash_sql('x', field)} FROM v ORDER BY i").fetchall()]


def test_engine_hmac_equals_python_hmac() -> None:
    got = _hash_all("s3cret", "card")
    key = hashlib.scrypt(b"s3cret", salt=b"omnicrm/pseudonym-key/v1", n=2**15, r=8, p=1, maxmem=64 << 20, dklen=32)
    assert derive_key("s3cret") == key
    expected = [hmac.new(key, f"card:{v}".encode(), hashlib.sha256).hexdigest() for v in VALUES]
    assert got[:-1] == expected
    assert got[:-1] == [hmac_hex("s3cret", "card", v) for v in VALUES]
    assert got[-1] is None  # NULL stays NULL


def test_key_and_field_change_every_pseudonym() -> None:
    base = _hash_all("one", "card")
    assert _hash_all("one", "card") == base  # stable: ids join across runs
    other_key = _hash_all("two", "card")
    other_field = _hash_all("one", "phone")
    for a, b, c in zip(base[:-1], other_key[:-1], other_field[:-1], strict=True):
        assert a != b and a != c


def test_customer_id_is_a_truncated_keyed_hash() -> None:
    con = duckdb.connect()
    set_key(con, "k")
    (cid,) = con.sql(f"SELECT {customer_id_sql(repr('pos:111122223333'))}").fetchall()[0]
    assert cid == "C" + hmac_hex("k", "customer", "pos:111122223333")[:CUSTOMER_ID_HEX]
    assert cid != "C" + hashlib.md5(b"pos:111122223333").hexdigest()[:12]


def test_hash_sql_without_a_key_is_not_silently_unkeyed() -> None:
    con = duckdb.connect()
    with pytest.raises(duckdb.Error):
        con.sql(f"SELECT {hash_sql(repr('x'), 'card')}").fetchall()
