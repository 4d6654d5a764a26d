"""No raw personal data reaches the store, the features or what the CLI prints."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from omnicrm.cli import app
from omnicrm.ingest import load_mapping

from ..conftest import SHIPPED_MAPPINGS

pytestmark = pytest.mark.integration


def _pii_tokens(raw_dir: Path) -> set[str]:
    """Every personal value of the raw files, as written and normalised (lower-case, digits only)."""
    tokens: set[str] = set()
    for mpath in SHIPPED_MAPPINGS:
        m = load_mapping(mpath)
        if not m.pii:
            continue
        raw = pd.read_csv(raw_dir / m.file, dtype=str, keep_default_na=False)
        for kind, col in m.pii.items():
            for v in raw[col].unique():
                v = v.strip()
                if len(v) < 4:
                    continue
                tokens |= {v, v.lower(), v.upper(), re.sub(r"\s+", "", v).lower()}
                digits = re.sub(r"\D", "", v)
                if kind in ("phone", "card") and len(digits) >= 8:
                    tokens |= {digits, digits[-10:], "+44" + digits[-10:]}
                if kind in ("first_name", "last_name", "full_name"):
                    tokens |= {w.lower() for w in re.split(r"[\s,]+", v) if len(w) >= 4}
    return tokens


def _scan_frame(frame: pd.DataFrame, tokens: set[str], where: str) -> list[str]:
    found = []
    for col in frame.columns:
        if frame[col].dtype.kind in "OSU" or str(frame[col].dtype) in ("str", "string"):
            values = frame[col].dropna().astype(str)
            hits = values[values.str.lower().isin(tokens) | values.isin(tokens) | values.str.contains("@")]
            found += [f"{where}.{col}: {h!r}" for h in hits.unique()[:3]]
    return found


def test_no_raw_personal_data_in_outputs(small_world: Path, small_store: Path, tmp_path: Path) -> None:
    tokens = _pii_tokens(small_world / "raw")
    assert len(tokens) > 1000  # the scan has something to look for
    store_path = Path(yaml.safe_load(small_store.read_text())["store"])
    con = duckdb.connect(str(store_path), read_only=True)
    found: list[str] = []
    for (table,) in con.sql("SELECT table_name FROM information_schema.tables").fetchall():
        found += _scan_frame(con.sql(f'SELECT * FROM "{table}"').df(), tokens, table)
    con.close()

    # what `omnicrm ingest` prints (counts, reasons, warnings) is an output too
    cfg = yaml.safe_load(small_store.read_text())
    cfg["store"] = str(tmp_path / "cli-store.duckdb")
    (tmp_path / "ingest.yaml").write_text(yaml.safe_dump(cfg))
    ingest = CliRunner().invoke(
        app,
        ["ingest", str(tmp_path / "ingest.yaml"), "--truth", str(small_world / "truth")],
        env={"OMNICRM_SALT": "x"},
    )
    assert ingest.exit_code == 0, ingest.output
    assert "identity vs truth: precision" in ingest.output

    feats_cfg = tmp_path / "features.yaml"
    feats_cfg.write_text(yaml.safe_dump({"store": str(store_path), "features": {}}))
    result = CliRunner().invoke(
        app, ["features", str(feats_cfg), "--cutoff", "2023-09-01", "--out", str(tmp_path / "f.parquet")]
    )
    assert result.exit_code == 0, result.output
    found += _scan_frame(pd.read_parquet(tmp_path / "f.parquet"), tokens, "features")
    printed = set(re.split(r"[\s,;()|│]+", (ingest.output + result.output).lower()))
    found += [f"cli output: {t!r}" for t in printed & tokens]
    assert not found, "raw personal data found:\n" + "\n".join(found[:20])


def test_the_scan_would_catch_a_leak(small_world: Path) -> None:
    tokens = _pii_tokens(small_world / "raw")
    email = next(t for t in tokens if "@" in t)
    leaked = pd.DataFrame({"customer_id": ["C1"], "note": [email.upper()]})
    assert _scan_frame(leaked, tokens, "t")


# --- pseudonyms that cannot be reversed without the key (issue 9) ---

CARD_PREFIX = "99001234"  # 12-digit cards with a fixed prefix: a key space of 10^4 here (10^8 in reality)


def _card_world(root: Path, cards: list[str]) -> Path:
    """A store whose customer key is a loyalty card, like the synthetic campaign exposures."""
    (root / "raw").mkdir()
    pd.DataFrame(
        {
            "exposure_id": [f"X{i}" for i in range(2 * len(cards))],
            "card_no": [c[:4] + " " + c[4:8] + " " + c[8:] for c in cards] * 2,
            "campaign": "spring",
            "sent_at": "2024-03-01 10:00:00",
        }
    ).to_csv(root / "raw/exposures.csv", index=False)
    (root / "exposures.yaml").write_text(
        yaml.safe_dump(
            {
                "source": "campaign_exposures",
                "file": "exposures.csv",
                "target": "treatments",
                "row_id": ["exposure_id"],
                "customer_key": {"column": "card_no", "normalise": "digits"},
                "fields": {"sent_at": {"type": "timestamp", "format": "%Y-%m-%d %H:%M:%S"}, "campaign": {}},
                "pii": {"card": "card_no"},
                "output": {
                    "ts": "sent_at",
                    "campaign_id": "campaign",
                    "action": "'email_offer'",
                    "channel": "'email'",
                    "group": "'treatment'",
                },
            }
        )
    )
    cfg = root / "ingest.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "raw_dir": str(root / "raw"),
                "store": str(root / "store.duckdb"),
                "sources": ["exposures.yaml"],
                "identity": {"probabilistic": False},
            }
        )
    )
    return cfg


def _attack(store: Path, candidates_sql: str, secret: str | None) -> set[str]:
    """Every card of the key space whose digest, under some scheme, equals an id the store holds.

    Schemes without the key: md5 and sha256 of the card, of ``<source>:<card>`` and of the field
    prefixes omnicrm ever used, unsalted or with the public demo secret, full or truncated to the
    lengths the store's ids have. With ``secret``: omnicrm's own keyed hash of each candidate.
    """
    from omnicrm.identity.pseudonymise import DEFAULT_SALT, customer_id_sql, hash_sql, set_key
    from omnicrm.sql import literal

    con = duckdb.connect()
    con.execute(f"ATTACH {literal(str(store))} AS s (READ_ONLY)")
    con.execute(f"CREATE TABLE cand AS SELECT card FROM ({candidates_sql})")
    ids = []
    for (table,) in con.sql("SELECT table_name FROM duckdb_tables() WHERE database_name = 's'").fetchall():
        for (col,) in con.sql(
            f"SELECT column_name FROM duckdb_columns() WHERE database_name = 's' AND table_name = '{table}' "
            "AND data_type = 'VARCHAR'"
        ).fetchall():
            ids.append(f'SELECT DISTINCT "{col}" AS v FROM s."{table}"')
    # an id may carry a source prefix ("campaign_exposures:...") or a "C": try every tail after ':' too
    con.execute(
        "CREATE TABLE stored AS SELECT DISTINCT lower(x) AS v FROM ("
        + " UNION ALL ".join(ids)
        + ") t, unnest([v, split_part(v, ':', -1), substr(v, 2)]) u(x) WHERE x IS NOT NULL AND length(x) >= 12"
    )
    if secret is None:
        messages = ["card", "'campaign_exposures:' || card", "'key:' || card", "':key:' || card", "':card:' || card"]
        salts = ["''", literal(DEFAULT_SALT)]
        digests = [f"{h}({s} || {m})" for h in ("md5", "sha256") for s in salts for m in messages]
    else:
        set_key(con, secret)
        customer = customer_id_sql("'campaign_exposures:' || card")
        digests = [hash_sql("card", "key"), hash_sql("card", "card"), f"substr({customer}, 2)"]
    con.execute("CREATE TABLE dig AS " + " UNION ALL ".join(f"SELECT card, {d} AS d FROM cand" for d in digests))
    found = con.sql(
        "SELECT DISTINCT dig.card FROM dig JOIN stored ON substr(dig.d, 1, length(stored.v)) = stored.v "
        "AND length(stored.v) IN (12, 16, 32, 64)"
    ).fetchall()
    return {r[0] for r in found}


def test_pseudonyms_cannot_be_reversed_without_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    from omnicrm.pipeline.ingest import run_ingest

    rng = random.Random(9)
    cards = sorted({CARD_PREFIX + f"{rng.randrange(10_000):04d}" for _ in range(60)})
    cfg = _card_world(tmp_path, cards)
    monkeypatch.setenv("OMNICRM_SALT", "a-secret-the-attacker-does-not-have")
    run_ingest(cfg)
    store = tmp_path / "store.duckdb"
    space = f"SELECT '{CARD_PREFIX}' || lpad(CAST(range AS VARCHAR), 4, '0') AS card FROM range(10000)"
    # without the key: every unkeyed scheme over the whole key space matches nothing
    assert _attack(store, space, None) == set()
    # with the public demo secret: nothing either
    from omnicrm.identity.pseudonymise import DEFAULT_SALT

    assert _attack(store, space, DEFAULT_SALT) == set()
    # the same attack with the key recovers every card: the search itself works
    assert _attack(store, space, "a-secret-the-attacker-does-not-have") == set(cards)
    # and the old scheme ('C' + md5('<source>:<card>')[:12]) would have fallen to it
    con = duckdb.connect(str(store), read_only=True)
    ids = {r[0] for r in con.sql("SELECT customer_id FROM customers").fetchall()}
    con.close()
    import hashlib

    old = {"C" + hashlib.md5(f"campaign_exposures:{c}".encode()).hexdigest()[:12] for c in cards}
    assert not ids & old and len(ids) == len(cards)
