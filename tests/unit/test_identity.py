"""Normalisation, linking rules, the giant-component guard and pairwise metrics on tiny cases."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from omnicrm.identity import normalise
from omnicrm.identity.cluster import cluster
from omnicrm.identity.config import IdentityConfig
from omnicrm.identity.evaluate import pairwise_metrics
from omnicrm.identity.link import deterministic_edges
from omnicrm.identity.pseudonymise import set_key
from omnicrm.identity.resolve import resolve_identities


def _one(expr: str, value: str | None):  # noqa: ANN202
    con = duckdb.connect()
    return con.execute(f"SELECT {expr} FROM (SELECT ?::VARCHAR AS v)", [value]).fetchall()[0][0]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(" John.Smith@Gmail.COM ", "john.smith@gmail.com"), ("no-at-sign", None), ("a b@x.org", "ab@x.org"), (None, None)],
)
def test_email(raw: str | None, expected: str | None) -> None:
    assert _one(normalise.email("v"), raw) == expected


@pytest.mark.parametrize(
    "raw", ["07700 900123", "+44 7700 900123", "(07700) 900-123", "447700900123", "0044 7700 900123"]
)
def test_phone_variants_are_one_number(raw: str) -> None:
    assert _one(normalise.phone("v"), raw) == "+447700900123"


def test_phone_too_short_is_missing() -> None:
    assert _one(normalise.phone("v"), "12345") is None


@pytest.mark.parametrize(
    ("raw", "expected"), [("sw1a1aa", "SW1A 1AA"), (" SW1A 1AA ", "SW1A 1AA"), ("n19gu", "N1 9GU")]
)
def test_postcode(raw: str, expected: str) -> None:
    assert _one(normalise.postcode("v"), raw) == expected
    assert _one(normalise.region(normalise.postcode("v")), raw) == ("SW" if expected.startswith("SW") else "N")


@pytest.mark.parametrize(
    ("raw", "first", "last"),
    [
        ("John Smith", "john", "smith"),
        ("SMITH, John", "john", "smith"),
        (" john  smith ", "john", "smith"),
        ("Mary Ann O'Neil", "mary", "o'neil"),
    ],
)
def test_full_name(raw: str, first: str, last: str) -> None:
    f, l = normalise.full_name_parts("v")
    assert (_one(f, raw), _one(l, raw)) == (first, last)


def _records(rows: list[tuple]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    df = pd.DataFrame(
        rows, columns=["source", "source_record_id", "email", "phone", "card", "first_name", "last_name", "postcode"]
    )
    con.register("df", df)
    con.execute("CREATE TABLE recs AS SELECT * FROM df")
    set_key(con, "unit-test-secret")
    return con


def test_household_phone_does_not_merge_different_people() -> None:
    con = _records(
        [
            ("crm", "1", "ann@x.org", "+441234567890", None, "ann", "lee", "AB1 2CD"),
            ("crm", "2", "bob@x.org", "+441234567890", None, "bob", "lee", "AB1 2CD"),
            ("svc", "9", None, "+441234567890", None, "anne", "lee", "AB1 2CD"),
        ]
    )
    res = resolve_identities(con, "recs", IdentityConfig(probabilistic=False))
    links = dict(con.sql(f"SELECT source || source_record_id, customer_id FROM {res.links}").fetchall())
    assert links["crm1"] == links["svc9"] != links["crm2"]
    assert res.customers == 2


def test_deterministic_email_and_card_links() -> None:
    con = _records(
        [
            ("a", "1", "x@y.org", None, "123456789012", None, None, None),
            ("b", "2", "x@y.org", None, None, None, None, None),
            ("c", "3", None, None, "123456789012", None, None, None),
        ]
    )
    con.execute("CREATE TABLE r2 AS SELECT row_number() OVER () - 1 AS rid, * FROM recs")
    edges = deterministic_edges(con, "r2", IdentityConfig())
    assert set(edges["rule"]) == {"email", "card"}
    labels = cluster(3, edges, max_component_size=10, strict_threshold=0.999)
    assert labels["component"].nunique() == 1


def test_giant_component_guard_keeps_only_strong_links() -> None:
    # a chain of 6 records: two people joined by one weak link between them
    edges = pd.DataFrame(
        {
            "l": [0, 1, 2, 3, 4],
            "r": [1, 2, 3, 4, 5],
            "rule": ["email", "email", "splink", "card", "card"],
            "score": [1.0, 1.0, 0.991, 1.0, 1.0],
        }
    )
    unguarded = cluster(6, edges, max_component_size=10, strict_threshold=0.999)
    assert unguarded["component"].nunique() == 1
    guarded = cluster(6, edges, max_component_size=4, strict_threshold=0.999)
    assert guarded["component"].nunique() == 2
    assert guarded["guarded"].all()
    assert guarded.set_index("rid").loc[0, "rule"] == "email"


def test_pairwise_metrics_by_hand() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE links AS SELECT * FROM (VALUES ('s','1','A'),('s','2','A'),('s','3','A'),('s','4','B')) "
        "t(source, source_record_id, customer_id)"
    )
    con.execute(
        "CREATE TABLE truth AS SELECT * FROM (VALUES ('s','1','p'),('s','2','p'),('s','3','q'),('s','4','q')) "
        "t(source, record_key, person_id)"
    )
    m = pairwise_metrics(con, "links", "truth")
    # predicted pairs: 12 13 23 (3); true pairs: 12 34 (2); correct: 12 (1)
    assert (m.predicted_pairs, m.true_pairs, m.correct_pairs) == (3, 2, 1)
    assert m.precision == pytest.approx(1 / 3)
    assert m.recall == pytest.approx(1 / 2)
