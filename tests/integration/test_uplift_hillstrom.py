"""The shipped Hillstrom config loads and its readout reproduces the published e-mail effects."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from omnicrm.cli import app
from omnicrm.errors import ConfigError, InputError
from omnicrm.pipeline.uplift import load_data, load_uplift_config, run_readout

from ..conftest import ROOT

pytestmark = pytest.mark.integration

CONFIG = ROOT / "configs/uplift/hillstrom.yaml"
DATA = ROOT / "../shared/data/hillstrom/hillstrom.csv"
needs_data = pytest.mark.skipif(not DATA.is_file(), reason="Hillstrom data not present under ../shared/data")


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs/uplift").glob("*.yaml")))
def test_shipped_uplift_configs_load(name: str) -> None:
    cfg, feats = load_uplift_config(ROOT / "configs/uplift" / name)
    assert cfg.experiment == "omnicrm-uplift"
    assert (feats is None) == (cfg.source.kind == "table")


@needs_data
def test_hillstrom_rows_and_arms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    cfg, feats = load_uplift_config(CONFIG)
    data = load_data(cfg, feats)
    assert len(data.frame) == 64_000
    counts = data.frame["arm"].value_counts().to_dict()
    assert counts == {"womens_email": 21_387, "mens_email": 21_307, "No E-Mail": 21_306}
    assert list(data.X.dtypes[["zip_code", "channel"]].astype(str)) == ["category", "category"]


@needs_data
def test_readout_reproduces_the_published_effects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    table = run_readout(CONFIG).table.set_index(["action", "outcome"])
    visit_m, visit_w = table.loc[("mens_email", "visit")], table.loc[("womens_email", "visit")]
    assert visit_m["mean_c"] == pytest.approx(0.106, abs=0.001)  # 10.6% visited without an e-mail
    assert visit_m["ate"] == pytest.approx(0.077, abs=0.001)  # Mens e-mail: +7.7 points
    assert visit_w["ate"] == pytest.approx(0.045, abs=0.001)  # Womens e-mail: +4.5 points
    assert visit_w["ci_low"] < 0.045 < visit_w["ci_high"] and visit_w["ci_low"] > 0
    res = CliRunner().invoke(app, ["readout", str(CONFIG)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "womens_email" in res.output and "95% CI" in res.output


def test_config_errors_name_the_key(tmp_path) -> None:  # noqa: ANN001
    bad = tmp_path / "u.yaml"
    bad.write_text(CONFIG.read_text().replace("outcome: visit", "outcome: clicks"))
    with pytest.raises(ConfigError, match="effects.outcome"):
        load_uplift_config(bad)
    missing = tmp_path / "m.yaml"
    missing.write_text(
        CONFIG.read_text().replace("[recency,", "[nope,").replace("../shared/data/hillstrom/hillstrom.csv", str(DATA))
    )
    cfg, feats = load_uplift_config(missing)
    if DATA.is_file():
        with pytest.raises(InputError, match=r"missing column\(s\) \['nope'\]"):
            load_data(cfg, feats)
