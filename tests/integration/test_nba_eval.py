"""``omnicrm nba-eval`` end to end: a Hillstrom sample (a feature table) and a small synthetic world with truth."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from omnicrm import tracking
from omnicrm.cli import app
from omnicrm.errors import ConfigError, InputError
from omnicrm.nba.evaluate import NBA, POLICIES
from omnicrm.pipeline.nba_eval import run_nba_eval

from ..conftest import ROOT, small_uplift_config

pytestmark = pytest.mark.integration

DATA = ROOT / "../shared/data/hillstrom/hillstrom.csv"
needs_data = pytest.mark.skipif(not DATA.is_file(), reason="Hillstrom data not present under ../shared/data")


@pytest.fixture(scope="module")
def hillstrom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped Hillstrom catalogue over a 9,000-row sample, with small models and few resamples."""
    folder = tmp_path_factory.mktemp("hillstrom-nba")
    pd.read_csv(DATA).sample(9000, random_state=3).to_csv(folder / "sample.csv", index=False)
    uplift = yaml.safe_load((ROOT / "configs/uplift/hillstrom.yaml").read_text())
    uplift["source"]["path"] = str(folder / "sample.csv")
    uplift["learners"]["model"] = {"n_estimators": 30, "min_child_samples": 50}
    (folder / "uplift.yaml").write_text(yaml.safe_dump(uplift))
    cat = yaml.safe_load((ROOT / "configs/nba/hillstrom.yaml").read_text())
    cat["evaluation"].update(uplift="uplift.yaml", folds=2, bootstrap=100, curve=[0.1, 0.5, 1.0])
    (folder / "nba.yaml").write_text(yaml.safe_dump(cat))
    return folder / "nba.yaml"


@needs_data
def test_hillstrom_judged_at_every_budget_with_intervals_and_a_logged_plot(hillstrom: Path) -> None:
    res = CliRunner().invoke(app, ["nba-eval", str(hillstrom)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "next-best action" in res.output and "propensity-ranked" in res.output and "DR [95% interval]" in res.output
    assert "at a budget of 30% of eligible rows" in res.output
    result = run_nba_eval(hillstrom)
    t = result.table
    assert sorted(t["budget"].unique()) == [0.1, 0.3, 0.5]
    assert set(t["policy"]) == set(POLICIES)
    assert (t["contacted"] <= t["budget"] + 1e-9).all()
    assert (t["dr_lo"] <= t["dr"]).all() and (t["dr"] <= t["dr_hi"]).all()
    assert t["true"].isna().all() and not result.truth  # a real experiment has no truth
    assert result.rows == 9000 and result.excluded_rows == 0
    assert len(result.verdicts) == len(POLICIES) - 1
    # the demo's headline: every policy at the headline budget and the verdicts
    from omnicrm.cli.render import console, print_nba_eval_headline

    with console.capture() as cap:
        print_nba_eval_headline(result, 1.5)
    text = cap.get()
    head = t[t["budget"] == 0.3].set_index("policy")
    for policy in POLICIES:
        line = next(ln for ln in text.splitlines() if f" {policy} " in ln)
        r = head.loc[policy]
        assert f"{r['dr']:+.3f} [{r['dr_lo']:+.3f}, {r['dr_hi']:+.3f}]" in line
    assert all(v in text for v in result.verdicts) and "(1.5 s)" in text
    run = tracking.run_metrics(result.run_id)
    assert f"{NBA.replace(' ', '_').replace('-', '_')}.dr" in run
    art = Path(tracking.mlruns_dir()).rglob("value_vs_budget.png")
    assert any(result.run_id in str(p) for p in art)


@needs_data
def test_catalogue_errors_name_the_key(hillstrom: Path, tmp_path: Path) -> None:
    cat = yaml.safe_load(hillstrom.read_text())
    folder = hillstrom.parent

    def write(c: dict) -> Path:
        p = folder / "bad.yaml"
        p.write_text(yaml.safe_dump(c))
        return p

    no_eval = {k: v for k, v in cat.items() if k != "evaluation"}
    with pytest.raises(ConfigError, match="no 'evaluation' block"):
        run_nba_eval(write(no_eval))
    rule = {**cat, "rules": {"eligibility": {"recent": "recency_weeks < 6"}}}
    with pytest.raises(ConfigError, match=r"rule rules.eligibility.recent: unknown column 'recency_weeks'"):
        run_nba_eval(write(rule))
    other = {**cat, "actions": {**cat["actions"], "sms_coupon": {"channels": ["email"]}}}
    with pytest.raises(InputError, match=r"\['sms_coupon'\] have no randomised history"):
        run_nba_eval(write(other))
    chan = {**cat, "evaluation": {**cat["evaluation"], "channel": "sms"}}
    with pytest.raises(ConfigError, match=r"channel\(s\) \['sms'\] are not in the catalogue's 'channels'"):
        run_nba_eval(write(chan))
    # a catalogue without a store can be judged but not listed
    args = ["nba", str(hillstrom), "--as-of", "2024-01-01", "--out", str(tmp_path / "l.parquet")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "has no 'store'" in res.output


def test_small_synthetic_world_reports_true_values_beside_the_estimates(
    small_store: Path, small_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = yaml.safe_load(small_store.read_text())["store"]
    uplift = small_uplift_config(store) | {
        "truth": {
            "effects": str(small_world / "truth/treatment_effects.parquet"),
            "record_owner": str(small_world / "truth/record_owner.parquet"),
            "outcome": "purchase",
        },
    }
    (tmp_path / "uplift.yaml").write_text(yaml.safe_dump(uplift))
    cat = yaml.safe_load((ROOT / "configs/nba/synthetic.yaml").read_text())
    cat.update(store=store, features={})
    # the task configs its scores come from, by absolute path (the catalogue is copied elsewhere)
    cat["scores"] = [str(ROOT / "configs/nba" / e) for e in cat["scores"]]
    cat["evaluation"].update(uplift="uplift.yaml", bootstrap=100, curve=[0.2, 0.6])
    (tmp_path / "nba.yaml").write_text(yaml.safe_dump(cat))
    monkeypatch.chdir(ROOT)
    result = run_nba_eval(tmp_path / "nba.yaml")
    assert result.truth
    t = result.table.set_index(["budget", "policy"])
    assert t["true"].notna().all()
    assert t.loc[(0.3, "no action"), "true"] == 0.0
    # the rules of the shipped catalogue drop churned and just-bought rows before any policy decides
    assert result.excluded_rows > 0
    # the catalogue's churn rule and long-term weight read task scores that would leak on the history
    assert any("p_churn" in n and "pred_margin" in n for n in result.notes)
    d = result.differences
    assert set(d["policy"]) == set(POLICIES) - {NBA}
    assert d["true"].notna().all()
