"""Real data nobody here made: UCI Online Retail through the shipped example mapping.

The counts are checked against an independent pandas reading of the same rules, and against the
figures documented in ``../shared/data/online_retail/README.md``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from omnicrm.errors import ConfigError
from omnicrm.pipeline.features import run_features
from omnicrm.pipeline.ingest import run_ingest

from ..conftest import ROOT, example_ingest_config

pytestmark = pytest.mark.integration

DATA = ROOT.parent / "shared/data/online_retail/online_retail.parquet"
EXAMPLE = ROOT / "configs/examples/online_retail"


@pytest.fixture(scope="module")
def retail(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    if not DATA.is_file():
        pytest.skip(f"{DATA} not present (it is part of ../shared on every omnicrm machine)")
    work = tmp_path_factory.mktemp("retail")
    example_ingest_config(EXAMPLE, DATA, work)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("OMNICRM_SALT", raising=False)
        mp.chdir(work)  # no configs/local/salt.txt here
        # a plain log declares no personal data, yet customer_id is a pseudonym: the key is required
        with pytest.raises(ConfigError, match="no secret key found"):
            run_ingest(work / "ingest.yaml")
        mp.setenv("OMNICRM_SALT", "test-salt")
        run_ingest(work / "ingest.yaml")
    return work, pd.read_parquet(DATA)


def test_customer_ids_of_a_plain_log_cannot_be_recomputed_without_the_key(retail: tuple[Path, pd.DataFrame]) -> None:
    """Every CustomerID tried under the unkeyed scheme (an empty or the public demo secret) matches no id."""
    from omnicrm.identity.pseudonymise import DEFAULT_SALT, hmac_hex

    work, df = retail
    with duckdb.connect(str(work / "store.duckdb"), read_only=True) as con:
        ids = {r[0] for r in con.sql("SELECT customer_id FROM customers").fetchall()}
    keys = {f"online_retail:{int(k)}" for k in df["CustomerID"].dropna().unique()}
    for secret in ("", DEFAULT_SALT):
        assert not ids & {"C" + hmac_hex(secret, "customer", k)[:16] for k in keys}, secret or "empty secret"
    assert {"C" + hmac_hex("test-salt", "customer", k)[:16] for k in keys} >= ids  # the search itself works


def _reference_accepted(df: pd.DataFrame) -> pd.Series:
    """The example mapping's rules, written independently in pandas."""
    cancel = df["InvoiceNo"].str.startswith("C")
    return (
        df["CustomerID"].notna()
        & df["StockCode"].str.match(r"^[0-9]{5}")
        & (df["UnitPrice"] > 0)
        & (df["Quantity"] != 0)
        & (cancel | (df["Quantity"] > 0))
        & (~cancel | (df["Quantity"] < 0))
    )


def test_counts_match_documented_figures_and_a_pandas_reference(retail: tuple[Path, pd.DataFrame]) -> None:
    work, df = retail
    ok = _reference_accepted(df)
    con = duckdb.connect(str(work / "store.duckdb"), read_only=True)
    rows_in, accepted, quarantined = con.sql("SELECT rows_in, accepted, quarantined FROM ingest_report").fetchall()[0]
    assert rows_in == 541_909  # README: all rows
    assert accepted == ok.sum() and quarantined == (~ok).sum()
    missing = con.sql("SELECT count(*) FROM quarantine WHERE reason = 'missing key: CustomerID'").fetchall()[0][0]
    assert missing == 135_080  # README: rows with missing CustomerID
    kept = df[ok]
    by_type = dict(con.sql("SELECT event_type, count(*) FROM events GROUP BY 1").fetchall())
    assert by_type["return"] == kept["InvoiceNo"].str.startswith("C").sum()
    spend = con.sql("SELECT sum(amount) FROM events WHERE event_type = 'purchase'").fetchall()[0][0]
    ref = (kept["Quantity"] * kept["UnitPrice"])[~kept["InvoiceNo"].str.startswith("C")].sum()
    assert spend == pytest.approx(ref, rel=1e-9)
    assert con.sql("SELECT count(*) FROM customers").fetchall()[0][0] == kept["CustomerID"].nunique()
    # the source's own id column is recorded: `omnicrm predict` writes it first, as `CustomerID`
    from omnicrm.pipeline.keys import key_column_names

    meta = dict(con.sql("SELECT key, value FROM store_meta").fetchall())
    assert key_column_names(meta, ["online_retail"], {"customer_id", "as_of"}) == {"online_retail": "CustomerID"}


def test_features_on_real_data_match_pandas(retail: tuple[Path, pd.DataFrame]) -> None:
    work, df = retail
    (work / "features.yaml").write_text(yaml.safe_dump({"store": str(work / "store.duckdb"), "features": {}}))
    cutoff = date(2011, 9, 1)
    res = run_features(work / "features.yaml", [cutoff], work / "f.parquet")
    f = pd.read_parquet(res.out).set_index("customer_id")
    kept = df[_reference_accepted(df)].copy()
    kept["ts"] = (
        pd.to_datetime(kept["InvoiceDate"]).dt.tz_localize("Europe/London").dt.tz_convert("UTC").dt.tz_localize(None)
    )
    buys = kept[~kept["InvoiceNo"].str.startswith("C") & (kept["ts"] < pd.Timestamp(cutoff))]
    buys = buys.assign(amount=buys["Quantity"] * buys["UnitPrice"])
    ref = buys.groupby(buys["CustomerID"].astype("int64").astype(str)).agg(
        orders=("InvoiceNo", "nunique"), spend=("amount", "sum")
    )
    con = duckdb.connect(str(work / "store.duckdb"), read_only=True)
    key_to_customer = dict(con.sql("SELECT source_record_id, customer_id FROM identity_links").fetchall())
    got = f.loc[[key_to_customer[k] for k in ref.index]]
    assert (got["orders_total"].to_numpy() == ref["orders"].to_numpy()).all()
    assert got["spend_total"].to_numpy() == pytest.approx(ref["spend"].to_numpy(), rel=1e-9)
