"""Ingest: every row accepted or quarantined with a reason; bad input stops with a clear message."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from omnicrm.errors import ConfigError, InputError
from omnicrm.pipeline.ingest import run_ingest


def _store(path: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(path), read_only=True)


def test_rows_in_equal_accepted_plus_quarantined_with_reasons(tiny_sources: Path) -> None:
    result = run_ingest(tiny_sources)
    pos = next(c for c in result.sources if c.source == "pos")
    assert (pos.rows_in, pos.accepted, pos.quarantined) == (9, 3, 6)
    for c in result.sources:
        assert c.rows_in == c.accepted + c.quarantined
    con = _store(result.store)
    reasons = dict(con.sql("SELECT row_number, reason FROM quarantine WHERE source = 'pos'").fetchall())
    assert reasons[4].startswith("unparseable till_time")
    assert reasons[5] == "missing key: card_no"
    assert reasons[6] == "negative price on a sale"
    assert reasons[7] == "unknown kind: expected one of RETURN, SALE"
    assert reasons[8] == "duplicate row id"
    assert reasons[9] == "unknown product_id: not in the product catalogue"
    report = con.sql("SELECT rows_in, accepted, quarantined FROM ingest_report WHERE source = 'pos'").fetchall()
    assert report == [(9, 3, 6)]


def test_local_times_become_utc_and_categories_are_canonical(tiny_sources: Path) -> None:
    con = _store(run_ingest(tiny_sources).store)
    rows = con.sql("SELECT event_id, ts, event_type, category, amount FROM events ORDER BY event_id").fetchall()
    by_id = {r[0]: r[1:] for r in rows}
    # 05/03/2023 10:00 London (GMT) = 10:00 UTC; 01/07/2023 12:30 London (BST) = 11:30 UTC
    assert str(by_id["pos:R1|1"][0]) == "2023-03-05 10:00:00"
    assert str(by_id["pos:R2|1"][0]) == "2023-07-01 11:30:00"
    assert by_id["pos:R2|1"][1] == "return"
    assert by_id["pos:R1|2"][2:] == ("Books", 20.0)  # category filled from the catalogue
    assert str(by_id["shop:O1|1"][0]) == "2023-04-01 09:00:00"  # +01:00 offset honoured


def test_identity_links_card_and_email_variants_into_one_customer(tiny_sources: Path) -> None:
    con = _store(run_ingest(tiny_sources).store)
    links = dict(con.sql("SELECT source || ':' || source_record_id, customer_id FROM identity_links").fetchall())
    # Ana: CRM record, her card at the till, her e-mail (other case) in the shop
    pos = [k for k in links if k.startswith("pos:")]
    assert len(pos) == 1  # Ben's till rows were all quarantined: only Ana's card is a record
    assert links["crm:M1"] == links[pos[0]] == links["shop:A1"]
    assert links["crm:M2"] != links["crm:M1"]
    # the card number is the till's customer key and personal data: stored only as a salted hash
    assert "111122223333" not in pos[0] and len(pos[0]) == len("pos:") + 64
    customers = con.sql("SELECT customer_id, consent_email, first_seen FROM customers ORDER BY first_seen").fetchall()
    assert len(customers) == 2
    assert customers[0][1] is True and str(customers[0][2]) == "2023-02-01 00:00:00"


def test_missing_required_column_names_file_and_column(tiny_sources: Path) -> None:
    pos = tiny_sources.parent / "raw/pos.csv"
    lines = pos.read_text().splitlines()
    pos.write_text("\n".join(l.rsplit(",", 1)[0] for l in lines) + "\n")  # drop unit_price
    with pytest.raises(InputError, match=r"pos\.csv: missing required column\(s\) 'unit_price'; found: receipt_no"):
        run_ingest(tiny_sources)


def test_unknown_config_key_names_file_key_and_allowed(tiny_sources: Path) -> None:
    m = tiny_sources.parent / "maps/pos.yaml"
    m.write_text(m.read_text().replace("rules:", "rule:"))
    with pytest.raises(
        ConfigError,
        match=r"pos\.yaml: key 'rule': unknown key 'rule' \(did you mean 'rules'\?\); allowed keys: .*customer_key",
    ):
        run_ingest(tiny_sources)


def test_mistyped_value_names_key_and_allowed_values(tiny_sources: Path) -> None:
    m = tiny_sources.parent / "maps/pos.yaml"
    m.write_text(m.read_text().replace("target: events", "target: event"))
    with pytest.raises(
        ConfigError, match=r"pos\.yaml: key 'target': .*'events', 'surveys', 'treatments', 'profiles' or 'products'"
    ):
        run_ingest(tiny_sources)


def test_unreadable_file_is_named(tiny_sources: Path) -> None:
    (tiny_sources.parent / "raw/pos.csv").write_bytes(b'receipt_no,line_no\n"unterminated,1\n\xff\xfe\x00')
    with pytest.raises(InputError, match=r"pos\.csv: cannot read as csv"):
        run_ingest(tiny_sources)


def test_missing_file_is_named(tiny_sources: Path) -> None:
    (tiny_sources.parent / "raw/shop.csv").unlink()
    with pytest.raises(InputError, match=r"shop\.csv: source file not found"):
        run_ingest(tiny_sources)


def test_failed_ingest_leaves_previous_store_untouched(tiny_sources: Path) -> None:
    first = run_ingest(tiny_sources).store
    before = first.read_bytes()
    (tiny_sources.parent / "raw/shop.csv").write_text("order_id\nO1\n")  # now lacks columns
    with pytest.raises(InputError):
        run_ingest(tiny_sources)
    assert first.read_bytes() == before
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]  # no temp files left


def test_missing_salt_is_an_error_unless_demo(tiny_sources: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMNICRM_SALT")
    with pytest.raises(ConfigError, match="no secret key found; set the environment variable OMNICRM_SALT"):
        run_ingest(tiny_sources)


def test_event_types_and_channels_extendable_by_config(tiny_sources: Path) -> None:
    shop = tiny_sources.parent / "maps/shop.yaml"
    shop.write_text(shop.read_text().replace("event_type: \"'purchase'\"", "event_type: \"'gift_card'\""))
    # every shop row is now rejected: the ingest stops and names the source and the reason
    with pytest.raises(InputError, match="source 'shop'.*0 of 1 rows accepted.*unknown event_type: expected one of "):
        run_ingest(tiny_sources)
    cfg = tiny_sources.read_text() + "extra_event_types: [gift_card]\n"
    tiny_sources.write_text(cfg)
    result = run_ingest(tiny_sources)
    assert next(c for c in result.sources if c.source == "shop").accepted == 1


def test_data_fingerprint_follows_the_inputs(tiny_sources: Path) -> None:
    def fingerprint() -> str:
        con = _store(run_ingest(tiny_sources).store)
        return dict(con.sql("SELECT key, value FROM store_meta").fetchall())["data_fingerprint"]

    first = fingerprint()
    assert fingerprint() == first
    shop = tiny_sources.parent / "raw/shop.csv"
    shop.write_text(shop.read_text().replace("10.00", "11.00"))
    assert fingerprint() != first


def test_semicolon_latin1_csv_with_leading_zero_ids(tiny_sources: Path) -> None:
    shop = tiny_sources.parent / "raw/shop.csv"
    shop.write_bytes(
        "order_id;line_no;account_id;email;event_time;device;sku;qty;unit_price\n"
        "O1;1;007;zoë@x.com;2023-04-01T10:00:00+01:00;web;P2;1;10.00\n".encode("latin-1")
    )
    m = tiny_sources.parent / "maps/shop.yaml"
    m.write_text(m.read_text().replace("target: events", "target: events\ndelimiter: ';'\nencoding: latin-1"))
    con = _store(run_ingest(tiny_sources).store)
    # read as text: the account id keeps its leading zeros
    assert con.sql("SELECT source_record_id FROM identity_links WHERE source = 'shop'").fetchall() == [("007",)]


def test_empty_file_is_named(tiny_sources: Path) -> None:
    (tiny_sources.parent / "raw/shop.csv").write_text("")
    with pytest.raises(InputError, match=r"shop\.csv: cannot read as csv: Empty CSV file"):
        run_ingest(tiny_sources)


def test_ragged_csv_lines_are_quarantined_not_fatal(tiny_sources: Path) -> None:
    pos = tiny_sources.parent / "raw/pos.csv"
    lines = pos.read_text().splitlines()
    # a line with a field too many (an unquoted comma in a value) after the first data row
    lines.insert(2, "R0,1,05/03/2023 10:00:00,111122223333,SALE,P1,1,50.00,Ana Silva")
    pos.write_text("\n".join(lines) + "\n")
    result = run_ingest(tiny_sources)
    counts = next(c for c in result.sources if c.source == "pos")
    assert (counts.rows_in, counts.accepted, counts.quarantined) == (10, 3, 7)
    con = _store(result.store)
    reasons = dict(con.sql("SELECT row_number, reason FROM quarantine WHERE source = 'pos'").fetchall())
    assert reasons[2] == "malformed CSV row: expected 8 fields, got 9"
    assert reasons[6] == "missing key: card_no"  # later rows keep their own data row numbers
    assert reasons[10] == "unknown product_id: not in the product catalogue"
    stored = con.sql("SELECT string_agg(reason, ' ') FROM quarantine").fetchall()[0][0]
    assert "Ana Silva" not in stored  # the line's text is never kept
