"""The NBA catalogue: strict keys, references checked, rules parsed safely and validated against columns."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from omnicrm.errors import ConfigError
from omnicrm.nba.catalogue import compile_rule, load_catalogue

from ..conftest import ROOT

COLUMNS = {"recency_days", "lifecycle_stage", "returns_share_365d", "aov_365d"}


def catalogue(**over: object) -> dict:
    cfg = {
        "name": "t",
        "store": "store.duckdb",
        "effect_model": "t-uplift-purchase",
        "channels": {"email": {"cost": 0.01}, "sms": {"cost": 0.05, "reach": 0.8}},
        "actions": {"discount": {"channels": ["email", "sms"], "offer": {"share": 0.1}}},
        "value": {"column": "aov_365d", "scale": 0.3, "fallback": 10},
        "rules": {"eligibility": {"not_churned": "lifecycle_stage <> 'churned'"}},
    }
    cfg.update(over)
    return cfg


def load(tmp_path: Path, cfg: dict):  # noqa: ANN201 - a Catalogue
    path = tmp_path / "nba.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_catalogue(path, COLUMNS), path


def test_the_shipped_catalogue_loads_against_the_feature_columns() -> None:
    cat = load_catalogue(ROOT / "configs/nba/synthetic.yaml")
    assert set(cat.actions) == {"discount_10pct", "free_shipping", "new_arrivals"}
    kinds = [r.kind for r in cat.compiled_rules("discount_10pct")]
    assert kinds == ["eligibility", "applicability", "suitability"]


def test_rules_compile_to_quoted_duckdb_sql(tmp_path: Path) -> None:
    cat, _ = load(tmp_path, catalogue())
    (rule,) = cat.compiled_rules("discount")
    assert rule.sql == "\"lifecycle_stage\" <> 'churned'"


def test_an_unknown_column_names_the_file_the_rule_and_the_column(tmp_path: Path) -> None:
    cfg = catalogue(rules={"applicability": {"recent": "recency_dayz >= 7"}})
    with pytest.raises(ConfigError) as err:
        load(tmp_path, cfg)
    msg = str(err.value)
    assert "nba.yaml: rule rules.applicability.recent: unknown column 'recency_dayz'" in msg


def test_an_action_rule_error_names_the_action(tmp_path: Path) -> None:
    actions = {"discount": {"channels": ["email"], "rules": {"suitability": {"few_returns": "returns_share < 0.3"}}}}
    with pytest.raises(
        ConfigError, match=r"rule actions\.discount\.rules\.suitability\.few_returns: unknown column 'returns_share'"
    ):
        load(tmp_path, catalogue(actions=actions))


def test_a_syntax_error_names_the_file_and_the_rule(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"nba\.yaml: rule rules\.eligibility\.broken: syntax error in 'recency_days >= AND'"
    ):
        load(tmp_path, catalogue(rules={"eligibility": {"broken": "recency_days >= AND"}}))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("read_csv('/etc/passwd') IS NOT NULL", "is not allowed in a rule"),
        ("recency_days IN (SELECT 1)", "is not allowed in a rule"),
        ("lower(lifecycle_stage) = 'new'", "is not allowed in a rule"),
        ("recency_days + 1", "is not a boolean expression"),
        ("t.recency_days > 1", "names a table"),
    ],
)
def test_only_columns_literals_and_operators_are_allowed(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compile_rule(text, COLUMNS, "f.yaml: rule r")


def test_references_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"channel\(s\) \['push'\] are not in 'channels'"):
        load(tmp_path, catalogue(actions={"a": {"channels": ["push"]}}))
    with pytest.raises(ConfigError, match="needs a 'recommender'"):
        load(tmp_path, catalogue(actions={"a": {"channels": ["email"], "product": "recommended"}}))
    with pytest.raises(ConfigError, match="key 'value.column': unknown feature or score column 'aov'"):
        load(tmp_path, catalogue(value={"column": "aov"}))
    with pytest.raises(ConfigError, match="budgett"):
        load(tmp_path, catalogue(allocation={"budgett": 3}))
