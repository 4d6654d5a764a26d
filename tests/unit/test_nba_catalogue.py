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
    assert kinds == ["eligibility", "applicability", "suitability", "suitability"]


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


def task_configs(folder: Path) -> None:
    """Churn and CLV task configs in ``folder`` (nothing trained: the catalogue reads their names only)."""
    cutoffs = {"train": {"dates": ["2024-01-01"]}, "validation": "2024-05-01", "evaluation": "2024-09-01"}
    dataset = {"name": "t", "store": "store.duckdb", "features": {}}
    for kind in ("churn", "clv"):
        cfg = {"dataset": dataset, "task": {"kind": kind, "horizon_days": 90}, "cutoffs": cutoffs}
        (folder / f"{kind}.yaml").write_text(yaml.safe_dump(cfg))


def test_rules_and_value_may_name_the_score_columns_of_listed_tasks(tmp_path: Path) -> None:
    from omnicrm.nba.catalogue import score_sources

    task_configs(tmp_path)
    cfg = catalogue(
        scores=["churn.yaml", {"config": "clv.yaml", "model": "3"}],
        rules={"eligibility": {"not_lost": "p_churn < 0.8"}},
        value={"column": "aov_365d", "scale": 0.3, "long_term": {"column": "pred_margin", "weight": 0.5}},
    )
    cat, path = load(tmp_path, cfg)
    (rule,) = cat.compiled_rules("discount")
    assert rule.sql == '"p_churn" < 0.8' and rule.columns == {"p_churn"}
    assert cat.used_columns() == {"aov_365d", "p_churn", "pred_margin"}
    sources = score_sources(cat, path)
    assert [s.ref for s in sources] == ["champion", "3"]
    assert sources[0].targets["omnicrm-churn"][1] == ["p_churn"]
    assert sources[1].columns == ["pred_spend", "pred_margin"]
    assert set(sources[1].targets) == {"omnicrm-clv", "omnicrm-clv-margin"}


def test_an_unknown_score_column_names_the_file_the_rule_and_the_column(tmp_path: Path) -> None:
    task_configs(tmp_path)
    with pytest.raises(ConfigError) as err:
        load(tmp_path, catalogue(scores=["churn.yaml"], rules={"eligibility": {"not_lost": "p_chrun < 0.8"}}))
    msg = str(err.value)
    assert "nba.yaml: rule rules.eligibility.not_lost: unknown column 'p_chrun' in 'p_chrun < 0.8'" in msg
    assert "did you mean 'p_churn'?" in msg
    # a score of a task the catalogue does not list is unknown too, with a hint where scores come from
    with pytest.raises(ConfigError, match=r"unknown column 'pred_margin'.*task config under 'scores'"):
        load(tmp_path, catalogue(scores=["churn.yaml"], rules={"eligibility": {"value": "pred_margin > 10"}}))
    with pytest.raises(ConfigError, match=r"key 'value.long_term.column': unknown feature or score column 'p_churn'"):
        load(tmp_path, catalogue(value={"column": "aov_365d", "long_term": {"column": "p_churn", "weight": -0.5}}))
    with pytest.raises(ConfigError, match=r"key 'scores\[0\]': task config .*nope.yaml does not exist"):
        load(tmp_path, catalogue(scores=["nope.yaml"]))
    with pytest.raises(ConfigError, match="min 3.0 > max 2.0"):
        load(
            tmp_path,
            catalogue(value={"column": "aov_365d", "long_term": {"column": "aov_365d", "weight": 1, "min": 3}}),
        )


def test_the_shipped_catalogue_reads_churn_and_clv_scores() -> None:
    cat = load_catalogue(ROOT / "configs/nba/synthetic.yaml")
    assert {"p_churn", "pred_margin"} <= cat.used_columns()
    assert cat.value.long_term is not None and cat.value.long_term.column == "pred_margin"
