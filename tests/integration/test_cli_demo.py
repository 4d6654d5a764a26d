"""`omnicrm demo` wires every step and prints the summary a user reads (on a small world)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from omnicrm.cli import app

from ..conftest import SHIPPED_MAPPINGS

pytestmark = pytest.mark.integration


def _demo_configs(tmp_path: Path, raw_dir: str = "world/raw") -> Path:
    (tmp_path / "generate.yaml").write_text(yaml.safe_dump({"n_people": 400, "days": 400, "out_dir": "world"}))
    (tmp_path / "ingest.yaml").write_text(
        yaml.safe_dump(
            {
                "raw_dir": raw_dir,
                "store": "store/omnicrm.duckdb",
                "sources": [str(p) for p in SHIPPED_MAPPINGS],
                "privacy": {"allow_default_salt": True},
            }
        )
    )
    (tmp_path / "features.yaml").write_text(yaml.safe_dump({"store": "store/omnicrm.duckdb", "features": {}}))
    demo = tmp_path / "demo.yaml"
    demo.write_text(
        yaml.safe_dump(
            {
                "generate": "generate.yaml",
                "ingest": "ingest.yaml",
                "features": "features.yaml",
                "cutoffs": {"start": "2023-03-01", "end": "2023-12-31", "every": "month"},
                "features_out": "features/demo.parquet",
                "truth_dir": "world/truth",
            }
        )
    )
    return demo


def test_demo_prints_counts_identity_metrics_and_feature_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OMNICRM_SALT", raising=False)
    result = CliRunner().invoke(app, ["demo", str(_demo_configs(tmp_path))], terminal_width=200)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "using the public demo secret" in out  # the demo warns about its default key
    assert re.search(r"pos_sales\s+│\s+[\d,]+\s+│\s+[\d,]+\s+│\s+[\d,]+", out)
    m = re.search(r"identity vs truth: precision ([\d.]+)\s+recall ([\d.]+)\s+F1 ([\d.]+)", out)
    assert m and float(m.group(1)) > 0.95 and float(m.group(2)) > 0.9
    assert re.search(r"features: [\d,]+ rows x \d+ columns \(10 monthly cutoffs 2023-03-01 \.\. 2023-12-01\)", out)
    assert (tmp_path / "features/demo.parquet").is_file()
    # the runner's output is not a terminal: a log, with one line per step and every cell complete
    steps = re.findall(r"^\[ *\d+\.\d+s\] (.+)$", out, re.MULTILINE)
    assert steps[0] == "generate: people" and steps[-1] == "done", steps
    assert {"ingest pos_sales", "resolve identities", "features at 2023-12-01", "features written"} <= set(steps)
    assert "…" not in out


def test_demo_refuses_configs_that_disagree_on_the_raw_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["demo", str(_demo_configs(tmp_path, raw_dir="elsewhere/raw"))])
    assert result.exit_code == 2
    assert "the ingest config reads elsewhere/raw but the world is written to world/raw" in result.output
