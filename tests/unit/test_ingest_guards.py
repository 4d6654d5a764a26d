"""Ingest guards: mapping SQL cannot touch files or the key, bad numbers are quarantined, and a
source that yields nothing (or mostly rejects) stops the run before the store is replaced."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from omnicrm.errors import ConfigError, InputError
from omnicrm.ingest import load_mapping
from omnicrm.pipeline.ingest import run_ingest


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


def _published(tiny_sources: Path) -> tuple[Path, bytes]:
    """Ingest once; the store file and its bytes (to check a failed run leaves it as it was)."""
    store = run_ingest(tiny_sources).store
    return store, store.read_bytes()


@pytest.mark.parametrize(
    "expr",
    [
        "(SELECT content FROM read_text('/etc/hostname'))",
        "(SELECT count(*) FROM read_csv('/etc/passwd'))::VARCHAR",
        "(SELECT string_agg(column0, ',') FROM read_csv_auto('/etc/hostname', header=false))",
    ],
)
def test_mapping_expression_cannot_read_files(tiny_sources: Path, expr: str) -> None:
    store, before = _published(tiny_sources)
    mapping = tiny_sources.parent / "maps/shop.yaml"
    _edit(mapping, "order_id: order_id", f'order_id: "{expr}"')
    with pytest.raises(ConfigError, match=r"shop\.yaml: key 'output\.order_id': .*reads or writes files") as err:
        run_ingest(tiny_sources)
    assert "file access switched off" in str(err.value)
    assert store.read_bytes() == before


def test_mapping_rule_cannot_write_files(tiny_sources: Path, tmp_path: Path) -> None:
    target = tmp_path / "leak.csv"
    mapping = tiny_sources.parent / "maps/pos.yaml"
    _edit(
        mapping, '{check: "unit_price >= 0"', f"{{check: \"(SELECT count(*) FROM (COPY (SELECT 1) TO '{target}')) > 0\""
    )
    with pytest.raises(ConfigError, match=r"pos\.yaml"):
        run_ingest(tiny_sources)
    assert not target.exists()


def test_a_second_statement_is_rejected_when_the_mapping_loads(tiny_sources: Path, tmp_path: Path) -> None:
    mapping = tiny_sources.parent / "maps/shop.yaml"
    _edit(mapping, "order_id: order_id", f"order_id: \"order_id); COPY (SELECT 1) TO '{tmp_path}/x.csv'; SELECT (1\"")
    with pytest.raises(
        ConfigError, match=r"shop\.yaml: key 'output\.order_id': .*must be one SQL expression, got 3 statements"
    ):
        load_mapping(mapping)
    assert not (tmp_path / "x.csv").exists()


def test_mapping_expressions_never_see_the_key(tiny_sources: Path) -> None:
    mapping = tiny_sources.parent / "maps/shop.yaml"
    _edit(mapping, "order_id: order_id", "order_id: \"CAST(getvariable('omnicrm_hmac_ipad') AS VARCHAR)\"")
    con = duckdb.connect(str(run_ingest(tiny_sources).store), read_only=True)
    assert con.sql("SELECT order_id FROM events WHERE event_id LIKE 'shop:%'").fetchall() == [(None,)]


def test_non_finite_and_absurd_numbers_are_quarantined(tiny_sources: Path) -> None:
    raw = tiny_sources.parent / "raw/pos.csv"
    raw.write_text(
        raw.read_text()
        + "R8,1,06/03/2023 09:00:00,111122223333,SALE,P1,1,NaN\n"
        + "R8,2,06/03/2023 09:00:00,111122223333,SALE,P1,1,inf\n"
        + "R8,3,06/03/2023 09:00:00,111122223333,SALE,P1,-Infinity,5\n"
        + "R8,4,06/03/2023 09:00:00,111122223333,SALE,P1,1,1e308\n"
        + "R8,5,06/03/2023 09:00:00,111122223333,SALE,P1,1e200,1e200\n"
    )
    result = run_ingest(tiny_sources)
    con = duckdb.connect(str(result.store), read_only=True)
    reasons = dict(con.sql("SELECT source_row_id, reason FROM quarantine WHERE source = 'pos'").fetchall())
    assert reasons["R8|1"] == "non-finite unit_price: expected a finite number"
    assert reasons["R8|2"] == "non-finite unit_price: expected a finite number"
    assert reasons["R8|3"] == "non-finite qty: expected a finite number"
    assert reasons["R8|4"].startswith("absurd unit_price: magnitude above 1e+12")
    assert reasons["R8|5"].startswith("absurd qty")
    assert con.sql("SELECT count(*) FROM events WHERE NOT isfinite(amount)").fetchall() == [(0,)]


def test_field_bounds_and_non_finite_results_of_a_mapping(tiny_sources: Path) -> None:
    mapping = tiny_sources.parent / "maps/pos.yaml"
    _edit(mapping, "qty: {type: double, nullable: false}", "qty: {type: double, nullable: false, min: 1, max: 1}")
    _edit(
        mapping,
        "amount: qty * unit_price",
        'amount: "CASE WHEN unit_price = 50 THEN 1e308 * 10 ELSE qty * unit_price END"',
    )
    result = run_ingest(tiny_sources)
    con = duckdb.connect(str(result.store), read_only=True)
    reasons = dict(con.sql("SELECT source_row_id, reason FROM quarantine WHERE source = 'pos'").fetchall())
    assert reasons["R1|2"] == "qty above its maximum 1"  # two books
    assert reasons["R1|1"] == "non-finite amount after mapping"
    assert load_mapping(mapping).fields["qty"].max == 1


def test_bounds_on_a_text_field_are_a_config_error(tiny_sources: Path) -> None:
    mapping = tiny_sources.parent / "maps/pos.yaml"
    _edit(mapping, "sku: {type: string, nullable: false}", "sku: {type: string, nullable: false, min: 0}")
    with pytest.raises(ConfigError, match=r"pos\.yaml: key 'fields\.sku': .*'min' / 'max' apply to integer and double"):
        load_mapping(mapping)


def test_a_header_only_source_stops_the_ingest(tiny_sources: Path) -> None:
    store, before = _published(tiny_sources)
    shop = tiny_sources.parent / "raw/shop.csv"
    shop.write_text(shop.read_text().splitlines()[0] + "\n")
    with pytest.raises(InputError, match=r"source 'shop' \(raw/shop\.csv\): 0 of 0 rows accepted .*allow_empty"):
        run_ingest(tiny_sources)
    assert store.read_bytes() == before
    # allowed explicitly: the run goes through and the report says so
    _edit(tiny_sources.parent / "maps/shop.yaml", "target: events", "target: events\nallow_empty: true")
    con = duckdb.connect(str(run_ingest(tiny_sources).store), read_only=True)
    assert con.sql("SELECT rows_in, status FROM ingest_report WHERE source = 'shop'").fetchall() == [
        (0, "empty (allow_empty)")
    ]


def test_a_mostly_quarantined_source_stops_the_ingest(tiny_sources: Path) -> None:
    store, before = _published(tiny_sources)
    # a changed date format: every till row fails to parse
    _edit(tiny_sources.parent / "maps/pos.yaml", 'format: "%d/%m/%Y %H:%M:%S"', 'format: "%Y-%m-%d %H:%M:%S"')
    with pytest.raises(
        InputError, match=r"source 'pos' .*0 of 9 rows accepted \(top reasons: unparseable till_time"
    ) as e:
        run_ingest(tiny_sources)
    # rows that all fail want a fixed file or mapping; allow_empty (an empty store part) would be the wrong advice
    assert "fix the file or the mapping" in str(e.value) and "allow_empty" not in str(e.value)
    assert store.read_bytes() == before


def test_the_quarantine_limit_is_per_source(tiny_sources: Path) -> None:
    store, before = _published(tiny_sources)  # pos quarantines 6 of 9 rows, its mapping allows 90%
    _edit(tiny_sources.parent / "maps/pos.yaml", "max_quarantine_share: 0.9", "max_quarantine_share: 0.5")
    with pytest.raises(InputError, match=r"source 'pos' .*66\.7% of 9 rows quarantined, above its limit of 50%"):
        run_ingest(tiny_sources)
    assert store.read_bytes() == before
    con = duckdb.connect(str(store), read_only=True)
    assert con.sql(
        "SELECT quarantine_share, max_quarantine_share, status FROM ingest_report WHERE source = 'pos'"
    ).fetchall() == [(6 / 9, 0.9, "ok")]


def test_a_new_key_changes_every_customer_id_and_the_fingerprint(
    tiny_sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def ids_and_fingerprint() -> tuple[set[str], str]:
        con = duckdb.connect(str(run_ingest(tiny_sources).store), read_only=True)
        ids = {r[0] for r in con.sql("SELECT customer_id FROM customers").fetchall()}
        meta = dict(con.sql("SELECT key, value FROM store_meta").fetchall())
        con.close()
        return ids, meta["data_fingerprint"]

    ids, fingerprint = ids_and_fingerprint()
    assert ids_and_fingerprint() == (ids, fingerprint)  # same data, same key: same ids
    monkeypatch.setenv("OMNICRM_SALT", "rotated-key")
    new_ids, new_fingerprint = ids_and_fingerprint()
    assert len(new_ids) == len(ids) and not new_ids & ids
    assert new_fingerprint != fingerprint  # feature caches keyed by it do not serve the old ids


# --- found by an attacker's review (issue 9) ---


def test_a_mapping_file_outside_raw_dir_is_refused(tiny_sources: Path) -> None:
    root = tiny_sources.parent
    (root / "configs/local").mkdir(parents=True)
    (root / "configs/local/salt.txt").write_text("my-very-secret-key\n")
    mapping = root / "maps/shop.yaml"
    _edit(mapping, "file: shop.csv", "file: ../configs/local/salt.txt")
    with pytest.raises(ConfigError, match=r"shop\.yaml: key '<top level>'.*must be a path inside") as err:
        run_ingest(tiny_sources)
    assert "my-very-secret-key" not in str(err.value)
    # a symbolic link inside raw_dir that points out of it is refused too
    _edit(mapping, "file: ../configs/local/salt.txt", "file: link.csv")
    (root / "raw/link.csv").symlink_to(root / "configs/local/salt.txt")
    with pytest.raises(ConfigError, match=r"key 'file': 'link\.csv' resolves outside raw_dir") as err:
        run_ingest(tiny_sources)
    assert "my-very-secret-key" not in str(err.value)


def test_a_file_without_its_header_is_not_quoted_in_the_error(tiny_sources: Path) -> None:
    shop = tiny_sources.parent / "raw/shop.csv"
    shop.write_text("\n".join(shop.read_text().splitlines()[1:]) + "\n")  # the header line lost
    with pytest.raises(InputError, match=r"shop\.csv: missing required column") as err:
        run_ingest(tiny_sources)
    assert "ANA@x.com" not in str(err.value) and "withheld" in str(err.value)


def test_an_expression_failing_on_the_data_is_named_without_quoting_the_data(tiny_sources: Path) -> None:
    _edit(
        tiny_sources.parent / "maps/crm.yaml",
        "output: {first_seen: joined_on",
        "rules: [{check: \"CAST(regexp_replace(card_no, ' ', '', 'g') AS BIGINT) > 0\", reason: r}]\n"
        "output: {first_seen: joined_on",
    )
    with pytest.raises(ConfigError, match=r"crm\.yaml: key 'rules\[0\]\.check': .* fails on the data") as err:
        run_ingest(tiny_sources)
    assert "4444" not in str(err.value) and "'…'" in str(err.value)


def test_infinite_and_implausible_times_are_quarantined(tiny_sources: Path) -> None:
    shop = tiny_sources.parent / "raw/shop.csv"
    shop.write_text(
        shop.read_text()
        + "O2,1,A1,ANA@x.com,infinity,Web,P2,1,10.00\n"
        + "O3,1,A1,ANA@x.com,-infinity,Web,P2,1,10.00\n"
        + "O4,1,A1,ANA@x.com,294247-01-01T00:00:00,Web,P2,1,10.00\n"
    )
    _edit(tiny_sources.parent / "maps/shop.yaml", "target: events", "target: events\nmax_quarantine_share: 1")
    con = duckdb.connect(str(run_ingest(tiny_sources).store), read_only=True)
    reasons = dict(con.sql("SELECT source_row_id, reason FROM quarantine WHERE source = 'shop'").fetchall())
    assert {reasons[f"O{i}|1"] for i in (2, 3, 4)} == {"unparseable event_time: expected timestamp (iso8601)"}
    assert con.sql("SELECT count(*) FROM events WHERE NOT isfinite(ts)").fetchall() == [(0,)]
    assert con.sql("SELECT count(*) FROM customers WHERE NOT isfinite(first_seen)").fetchall() == [(0,)]


@pytest.mark.parametrize(
    ("key", "expr", "reason"),
    [
        ("ts", "'infinity'::TIMESTAMP", "implausible ts after mapping: expected a time in 1900..2200"),
        # a NaN made by the expression itself is quarantined
        ("amount", "CASE WHEN random() < 2 THEN 'nan'::DOUBLE ELSE 1.0 END", "non-finite amount after mapping"),
        (
            "amount",
            "CASE WHEN (SELECT count(*) FROM duckdb_tables() WHERE table_name = '_accepted_shop') > 0 "
            "THEN 'inf'::DOUBLE ELSE 1.0 END",
            None,  # computed before that table exists: 1.0, and finite
        ),
    ],
)
def test_outputs_are_checked_on_the_values_that_are_stored(
    tiny_sources: Path, key: str, expr: str, reason: str | None
) -> None:
    mapping = tiny_sources.parent / "maps/shop.yaml"
    _edit(mapping, {"ts": "ts: event_time", "amount": "amount: qty * unit_price"}[key], f'{key}: "{expr}"')
    _edit(mapping, "target: events", "target: events\nallow_empty: true")
    con = duckdb.connect(str(run_ingest(tiny_sources).store), read_only=True)
    assert con.sql("SELECT count(*) FROM events WHERE NOT isfinite(amount) OR NOT isfinite(ts)").fetchall() == [(0,)]
    reasons = [r[0] for r in con.sql("SELECT reason FROM quarantine WHERE source = 'shop'").fetchall()]
    assert reasons == ([reason] if reason else [])


def test_raw_columns_may_not_take_omnicrm_reserved_names(tiny_sources: Path) -> None:
    mapping = tiny_sources.parent / "maps/pos.yaml"
    _edit(mapping, "kind: {type: category", "_reason: {type: category")
    with pytest.raises(ConfigError, match=r"pos\.yaml.*'_reason': names starting with '_' are reserved"):
        load_mapping(mapping)


def test_raw_file_digests_in_the_store_are_keyed(tiny_sources: Path) -> None:
    import hashlib

    con = duckdb.connect(str(run_ingest(tiny_sources).store), read_only=True)
    meta = dict(con.sql("SELECT key, value FROM store_meta").fetchall())
    plain = hashlib.sha256((tiny_sources.parent / "raw/shop.csv").read_bytes()).hexdigest()
    assert not [k for k in meta if k.startswith("sha256:")]
    assert len(meta["hmac_sha256:shop"]) == 64 and plain not in meta.values()


def test_an_overlong_expression_is_refused_when_the_mapping_loads(tiny_sources: Path) -> None:
    mapping = tiny_sources.parent / "maps/shop.yaml"
    _edit(mapping, "amount: qty * unit_price", "amount: qty * unit_price" + " + 0" * 5000)
    with pytest.raises(ConfigError, match=r"key 'output\.amount': .*at most 10,000 characters, got 20,016"):
        load_mapping(mapping)
