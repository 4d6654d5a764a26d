"""The recommender experiment config: shipped files load, mistakes are named before any data is read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from omnicrm.errors import ConfigError
from omnicrm.recommend.config import load_recommend_config

from ..conftest import ROOT

SHIPPED = sorted((ROOT / "configs/recommend").glob("*.yaml"))


@pytest.mark.contract
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    cfg = load_recommend_config(path)
    assert cfg.serve in {m.name for m in cfg.methods}
    assert cfg.validation_cutoff < cfg.test_cutoff < cfg.test_end
    assert {m.kind for m in cfg.methods} >= {
        "popularity",
        "recent_popularity",
        "repurchase",
        "als",
        "item_knn",
        "hybrid",
    }


def test_online_retail_windows() -> None:
    """Test = the last 30 days of the log (it ends 2011-12-09); validation = the 30 days before."""
    cfg = load_recommend_config(ROOT / "configs/recommend/online_retail.yaml")
    assert (str(cfg.validation_cutoff), str(cfg.test_cutoff), str(cfg.test_end)) == (
        "2011-10-11",
        "2011-11-10",
        "2011-12-10",
    )


def _write(tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load((ROOT / "configs/recommend/synthetic.yaml").read_text())
    data.update(changes)
    p = tmp_path / "rec.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_unknown_parameter_names_method_and_allowed_keys(tmp_path: Path) -> None:
    methods = [{"name": "als", "kind": "als", "params": {"factor": 8}}, {"name": "pop", "kind": "popularity"}]
    with pytest.raises(
        ConfigError,
        match=r"rec.yaml: method 'als' \(als\): unknown parameter\(s\) \['factor'\]; "
        r"allowed: factors, regularization",
    ):
        load_recommend_config(_write(tmp_path, methods=methods, serve="pop"))


def test_bad_grid_value_is_named(tmp_path: Path) -> None:
    methods = [{"name": "knn", "kind": "item_knn", "grid": {"K": [10, 0]}}]
    with pytest.raises(ConfigError, match=r"method 'knn'.*'K' parameter must be a int >= 1. Got 0"):
        load_recommend_config(_write(tmp_path, methods=methods, serve="knn"))


def test_serve_must_name_a_method_and_kinds_are_listed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'serve' must name one of the methods"):
        load_recommend_config(_write(tmp_path, serve="nope"))
    with pytest.raises(ConfigError, match=r"key 'methods.0.kind'.*'popularity'"):
        load_recommend_config(_write(tmp_path, methods=[{"name": "x", "kind": "svd"}], serve="x"))
    with pytest.raises(ConfigError, match=r"unknown key 'test_dayz' \(did you mean 'test_days'\?\)"):
        load_recommend_config(_write(tmp_path, test_dayz=3))


@pytest.mark.contract
@pytest.mark.parametrize("command", ["recommend", "recommend-eval"])
def test_recommend_commands_have_help(command: str) -> None:
    from typer.testing import CliRunner

    from omnicrm.cli import app

    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "CONFIG" in result.output.upper()


def test_config_digest_ignores_the_store_path_and_nothing_of_the_experiment(tmp_path: Path) -> None:
    """What recommend-eval chose is served for the same experiment on any machine, never for another one."""
    from omnicrm.pipeline.recommend import config_digest

    base = load_recommend_config(_write(tmp_path))
    moved = load_recommend_config(_write(tmp_path, store="/elsewhere/omnicrm.duckdb", experiment="other"))
    assert config_digest(moved) == config_digest(base)
    data = yaml.safe_load((ROOT / "configs/recommend/synthetic.yaml").read_text())
    data["methods"][3]["grid"] = {"regularization": [1, 10]}
    for changed in ({"k": 5}, {"test_cutoff": "2024-11-01"}, {"methods": data["methods"]}):
        assert config_digest(load_recommend_config(_write(tmp_path, **changed))) != config_digest(base), changed
