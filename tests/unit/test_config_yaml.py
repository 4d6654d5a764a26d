"""Reading YAML configs: a key written twice is an error naming the file, the key and its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from omnicrm.config import StrictModel, load_config, parse_yaml, read_yaml
from omnicrm.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def test_a_duplicated_top_level_key_names_file_key_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        store: a.duckdb
        dataset: small
        k: 10
        store: b.duckdb
        """,
    )
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: duplicate key 'store' (line 4")
    assert "first on line 1" in msg and msg.endswith("each key may appear once")


def test_a_duplicated_nested_key_is_an_error_too(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        methods:
          - name: als
            params:
              factors: 8
              iterations: 5
              factors: 16
        """,
    )
    with pytest.raises(ConfigError, match=r"x\.yaml: duplicate key 'factors' \(line 6; first on line 4\)"):
        read_yaml(path)
    flow = _write(tmp_path, "model: {params: {n_estimators: 1, n_estimators: 2}}\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'n_estimators' \(line 1"):
        read_yaml(flow)


def test_the_same_key_in_sibling_mappings_and_merge_overrides_are_fine(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        base: &base {factors: 8, iterations: 5}
        als: {<<: *base, factors: 16}
        bpr: {<<: *base}
        list: [{name: a}, {name: b}]
        """,
    )
    data = read_yaml(path)
    assert data["als"] == {"factors": 16, "iterations": 5} and data["bpr"] == {"factors": 8, "iterations": 5}
    assert data["list"] == [{"name": "a"}, {"name": "b"}]


def test_load_config_refuses_duplicates_before_validation(tmp_path: Path) -> None:
    class Small(StrictModel):
        store: str

    path = _write(tmp_path, "store: a\nstore: b\n")
    with pytest.raises(ConfigError, match="duplicate key 'store' .line 2"):
        load_config(Small, path)
    assert load_config(Small, _write(tmp_path, "store: a\n")).store == "a"


def test_other_yaml_problems_still_name_the_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"x\.yaml: not valid YAML"):
        read_yaml(_write(tmp_path, "a: [1, 2\n"))
    with pytest.raises(ConfigError, match="expected a YAML mapping at the top level, got list"):
        read_yaml(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        read_yaml(tmp_path / "missing.yaml")
    assert read_yaml(_write(tmp_path, "")) == {}
    with pytest.raises(ConfigError, match="^config of run r1: duplicate key 'a'"):
        parse_yaml("a: 1\na: 2\n", "config of run r1")
