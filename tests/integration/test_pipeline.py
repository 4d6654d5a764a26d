"""Generate -> ingest -> resolve -> features on a small world, checked against its ground truth."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from omnicrm.identity.evaluate import evaluate_store

pytestmark = pytest.mark.integration


def _store_path(ingest_cfg: Path) -> Path:
    return Path(yaml.safe_load(ingest_cfg.read_text())["store"])


@pytest.fixture(scope="module")
def store(small_store: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(_store_path(small_store)), read_only=True)
    yield con
    con.close()


def test_every_row_is_accounted_for(store: duckdb.DuckDBPyConnection, small_world: Path) -> None:
    report = store.sql("SELECT source, rows_in, accepted, quarantined FROM ingest_report").df()
    assert (report.rows_in == report.accepted + report.quarantined).all()
    for row in report.itertuples():
        raw = pd.read_csv(small_world / "raw" / f"{row.source}.csv", dtype=str, keep_default_na=False)
        assert len(raw) == row.rows_in, row.source
    # the generator injects malformed rows: they are quarantined with a reason, not dropped
    reasons = store.sql("SELECT reason, count(*) FROM quarantine GROUP BY 1").df()
    assert reasons["reason"].str.startswith("unparseable").any()
    assert (reasons["reason"] == "duplicate row id").any()
    assert store.sql("SELECT count(*) FROM quarantine").fetchall()[0][0] == report.quarantined.sum()


def test_store_is_consistent(store: duckdb.DuckDBPyConnection) -> None:
    orphans = store.sql("SELECT count(*) FROM events e ANTI JOIN customers c USING (customer_id)").fetchall()[0][0]
    assert orphans == 0
    dup = store.sql("SELECT count(*) - count(DISTINCT event_id) FROM events").fetchall()[0][0]
    assert dup == 0
    types = {r[0] for r in store.sql("SELECT DISTINCT event_type FROM events").fetchall()}
    assert {"purchase", "return", "visit", "email_sent", "email_open", "service_contact"} <= types
    assert store.sql("SELECT count(*) FROM treatments WHERE \"group\" = 'control'").fetchall()[0][0] > 0


def test_identity_resolution_recovers_the_true_people(small_store: Path, small_world: Path) -> None:
    m = evaluate_store(_store_path(small_store), small_world / "truth/record_owner.parquet", "integration-test-salt")
    assert m.records_without_truth == 0
    assert m.precision >= 0.98, m
    assert m.recall >= 0.93, m


def test_features_one_row_per_customer_and_cutoff(small_store: Path, tmp_path: Path) -> None:
    from omnicrm.pipeline.features import run_features

    cfg = tmp_path / "features.yaml"
    cfg.write_text(yaml.safe_dump({"store": str(_store_path(small_store)), "features": {}}))
    cutoffs = [date(2023, 6, 1), date(2023, 9, 1), date(2023, 12, 1)]
    res = run_features(cfg, cutoffs, tmp_path / "f.parquet")
    frame = pd.read_parquet(res.out)
    assert not frame.duplicated(["customer_id", "cutoff"]).any()
    con = duckdb.connect(str(_store_path(small_store)), read_only=True)
    for c in cutoffs:
        known = con.execute("SELECT count(*) FROM customers WHERE first_seen < ?", [c]).fetchall()[0][0]
        assert (frame["cutoff"] == pd.Timestamp(c)).sum() == known
    # the business's keys come first (one column per source, as predict writes them), then the snapshot
    sources = [r[0] for r in con.execute("SELECT DISTINCT source FROM identity_links ORDER BY 1").fetchall()]
    keys = [f"{s}_key" for s in sources]
    assert list(frame.columns[: len(keys) + 2]) == [*keys, "customer_id", "cutoff"]
    assert res.columns == frame.shape[1] and res.rows == len(frame)
    links = con.execute(
        "SELECT customer_id, source, string_agg(source_record_id, '|' ORDER BY source_record_id) AS ids "
        "FROM identity_links GROUP BY 1, 2"
    ).df()
    con.close()
    sample = frame.drop_duplicates("customer_id").head(300).melt(["customer_id"], keys, "column", "ids").dropna()
    sample["source"] = sample["column"].str.removesuffix("_key")
    both = sample.merge(links, on=["customer_id", "source"], how="left", suffixes=("", "_store"))
    assert len(both) > 300 and (both["ids"] == both["ids_store"]).all()


def test_ingest_is_deterministic(small_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same raw files and salt give the same store, row for row (no thread-order tie-breaks)."""
    from omnicrm import schema
    from omnicrm.pipeline.ingest import run_ingest

    cfg = yaml.safe_load(small_store.read_text())
    cfg["store"] = str(tmp_path / "again.duckdb")
    (tmp_path / "ingest.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("OMNICRM_SALT", "integration-test-salt")
    run_ingest(tmp_path / "ingest.yaml")
    con = duckdb.connect()
    con.execute(f"ATTACH '{_store_path(small_store)}' AS a (READ_ONLY)")
    con.execute(f"ATTACH '{tmp_path / 'again.duckdb'}' AS b (READ_ONLY)")
    for table in schema.TABLES:
        if table == schema.STORE_META:  # holds the creation time and config path
            continue
        cols = ", ".join(f'"{c}"' for c in schema.TABLES[table])
        diff = con.sql(
            f"SELECT count(*) FROM ((SELECT {cols} FROM a.{table} EXCEPT ALL SELECT {cols} FROM b.{table}) "
            f"UNION ALL (SELECT {cols} FROM b.{table} EXCEPT ALL SELECT {cols} FROM a.{table}))"
        ).fetchall()[0][0]
        assert diff == 0, table


def test_a_store_cut_short_is_refused_before_any_query(small_store: Path, tmp_path: Path) -> None:
    from omnicrm.errors import InputError
    from omnicrm.store import open_store

    data = _store_path(small_store).read_bytes()
    for size in (len(data) // 2, len(data) - 300_000):
        cut = tmp_path / f"cut-{size}.duckdb"
        cut.write_bytes(data[:size])
        with pytest.raises(InputError, match=r"not a readable omnicrm store \((the file is cut short|IO Error)"):
            open_store(cut)


def test_features_refuse_cutoffs_the_store_cannot_support(small_store: Path, tmp_path: Path) -> None:
    from omnicrm.errors import ConfigError
    from omnicrm.pipeline.features import run_features
    from omnicrm.store import store_data_range
    from omnicrm.store.data_range import LateDateWarning

    cfg = tmp_path / "features.yaml"
    cfg.write_text(yaml.safe_dump({"store": str(_store_path(small_store)), "features": {}}))
    span = store_data_range(_store_path(small_store))
    out = tmp_path / "f.parquet"
    with pytest.raises(ConfigError, match=rf"--cutoff 1900-01-01 is before the store's first event .*{span}"):
        run_features(cfg, [date(2023, 6, 1), date(1900, 1, 1)], out)
    with pytest.raises(ConfigError, match="At most 31 days are allowed"):
        run_features(cfg, [span.last.date() + timedelta(days=32)], out)
    assert not out.exists()
    late = span.last.date() + timedelta(days=10)
    with pytest.warns(LateDateWarning, match=f"--cutoff {late} is 10 days after the store's last event"):
        run_features(cfg, [late], out)
    assert out.exists()
