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
