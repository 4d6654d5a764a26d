"""``omnicrm nba`` on the small world (1,200 people, 540 days, ends 2024-06-23) with tiny registered models.

A DR effect model, a popularity recommender and a churn model are fitted, registered and made
champions; the list is then built at the day after the last event and checked against the store:
consent, caps counting the history, quiet periods, budget and capacity, and every customer of the
population either sent an action or listed in the excluded table with a reason. The MLflow run
carries the constraint summary. A rule over the churn score drops exactly the customers whose score
(``omnicrm predict``) breaks it; the long-term weight and the effect's drivers reach the reasons of
the sent rows only; the demo's NBA step prints its table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from omnicrm import schema, tracking
from omnicrm.cli import app

from ..conftest import small_recommend_config, small_uplift_config

pytestmark = pytest.mark.integration

AS_OF = date(2024, 6, 24)
UPLIFT = "omnicrm-small-uplift-purchase"
REC = "omnicrm-small-recommend"
CHURN = "omnicrm-small-churn"


@dataclass
class World:
    store: str
    mlruns: Path
    folder: Path


@pytest.fixture(scope="module")
def registered(small_store: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    """A tiny DR effect model and a popularity recommender, registered and promoted to champion."""
    from omnicrm.pipeline.recommend import write_recommendations
    from omnicrm.pipeline.uplift import write_effects

    folder = tmp_path_factory.mktemp("nba")
    store = yaml.safe_load(small_store.read_text())["store"]
    uplift = small_uplift_config(store)
    rec = small_recommend_config(store)
    churn = {
        "dataset": {
            "name": "small",
            "store": store,
            "features": {},
            "registry_namespace": "small",
            "feature_cache": str(folder / "cache"),
        },
        "model": {"params": {"n_estimators": 30, "min_child_samples": 20}},
        "task": {"kind": "churn", "horizon_days": 60},
        "cutoffs": {"train": {"dates": ["2023-10-01"]}, "validation": "2024-01-01", "evaluation": "2024-03-01"},
    }
    (folder / "uplift.yaml").write_text(yaml.safe_dump(uplift))
    (folder / "rec.yaml").write_text(yaml.safe_dump(rec))
    (folder / "churn.yaml").write_text(yaml.safe_dump(churn))
    mlruns = folder / "mlruns"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("OMNICRM_MLRUNS", str(mlruns))
        eff = write_effects(folder / "uplift.yaml", AS_OF, folder / "effects.parquet")
        tracking.set_alias(UPLIFT, "champion", eff.version)
        recs = write_recommendations(folder / "rec.yaml", AS_OF, folder / "recs.parquet")
        tracking.set_alias(REC, "champion", recs.version)
        from omnicrm.pipeline.train import train

        (trained,) = train(folder / "churn.yaml")
        tracking.set_alias(CHURN, "champion", trained.version)
    return World(store, mlruns, folder)


def catalogue(world: World, **over: object) -> Path:
    cfg = {
        "name": "small",
        "store": world.store,
        "features": {},
        "effect_model": "small-uplift-purchase",
        "recommender": "small-recommend",
        "channels": {
            "email": {"cost": 0.01},
            "sms": {"cost": 0.05, "reach": 0.8},
            "push": {"cost": 0.01, "reach": 0.9},
        },
        "actions": {
            "discount_10pct": {"channels": ["email", "sms", "push"], "offer": {"share": 0.1}},
            "free_shipping": {"channels": ["email", "sms", "push"], "offer": {"fixed": 0.25}},
            "new_arrivals": {"channels": ["email", "push"], "product": "recommended"},
        },
        "value": {"column": "aov_365d", "scale": 0.3, "fallback": 10, "order_value": "aov_365d", "base_rate": 0.21},
        "rules": {
            "eligibility": {"not_churned": "lifecycle_stage <> 'churned'"},
            "applicability": {"no_purchase_last_week": "recency_days IS NULL OR recency_days >= 7"},
        },
        "policy": {
            "caps": [{"channel": "email", "max": 1, "days": 7}, {"channel": "any", "max": 2, "days": 7}],
            "suppression": [{"channel": "email", "sends": 3, "days": 30, "suppress_days": 14}],
            "quiet_days_after_service": 7,
        },
        "allocation": {"per_customer": 1, "budget": 40, "capacity": {"sms": 30}},
    }
    cfg.update(over)
    path = world.folder / "nba.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def world(registered: World, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("OMNICRM_MLRUNS", str(registered.mlruns))
    return registered


def test_nba_writes_a_list_that_keeps_every_constraint(world: World, tmp_path: Path) -> None:
    out = tmp_path / "nba.parquet"
    res = CliRunner().invoke(app, ["nba", str(catalogue(world)), "--as-of", str(AS_OF), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "gap to the LP bound" in res.output and f"{UPLIFT} v1" in res.output
    nba = pd.read_parquet(out)
    excluded = pd.read_parquet(tmp_path / "nba.excluded.parquet")
    assert list(nba.columns[: len(schema.OUTPUTS[schema.NBA])]) == schema.output_columns(schema.NBA)
    assert list(excluded.columns[:3]) == schema.output_columns(schema.EXCLUDED)
    assert len(nba) > 0 and (nba["expected_value"] > 0).all() and (nba["effect"] > 0).all()
    assert nba["customer_id"].is_unique and (nba["rank"] == 1).all()
    assert nba["cost"].sum() <= 40 + 1e-9 and (nba["channel"] == "sms").sum() <= 30
    assert nba.loc[nba["action"] == "new_arrivals", "product_id"].notna().all()
    assert nba["reasons"].str.contains("effect ").all()

    con = duckdb.connect(world.store, read_only=True)
    try:
        population = set(
            con.execute("SELECT customer_id FROM customers WHERE first_seen < ?", [AS_OF]).df()["customer_id"]
        )
        consent = con.execute("SELECT customer_id, consent_email, consent_sms, consent_push FROM customers").df()
        sends = con.execute(
            "SELECT DISTINCT customer_id, channel, ts FROM (SELECT customer_id, channel, ts FROM treatments "
            "WHERE \"group\" = 'treatment' UNION ALL SELECT customer_id, CASE event_type WHEN 'email_sent' "
            "THEN 'email' ELSE 'push' END, ts FROM events WHERE event_type IN ('email_sent', 'push_sent')) "
            "WHERE ts < ? AND ts >= ?",
            [AS_OF, AS_OF - timedelta(days=7)],
        ).df()
        service = con.execute(
            "SELECT DISTINCT customer_id FROM events WHERE event_type = 'service_contact' AND ts < ? AND ts >= ?",
            [AS_OF, AS_OF - timedelta(days=7)],
        ).df()
    finally:
        con.close()
    # every customer of the population has a row or an excluded reason
    assert population == set(nba["customer_id"]) | set(excluded["customer_id"])
    merged = nba.merge(consent, on="customer_id")
    for ch in ("email", "sms", "push"):
        assert merged.loc[merged["channel"] == ch, f"consent_{ch}"].eq(True).all()
    emailed = set(sends.loc[sends["channel"] == "email", "customer_id"])
    assert not emailed & set(nba.loc[nba["channel"] == "email", "customer_id"])
    twice = sends.groupby("customer_id").size()
    assert not set(twice[twice >= 2].index) & set(nba["customer_id"])
    assert not set(service["customer_id"]) & set(nba["customer_id"])
    assert {"eligibility", "consent", "allocation"} <= set(excluded["step"])

    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri())
    (run,) = mlflow.search_runs(experiment_names=["omnicrm-nba"], output_format="list")
    metrics = run.data.metrics
    assert metrics["sends"] == len(nba) and metrics["solver_gap"] >= 0
    assert metrics["expected_incremental_value"] == pytest.approx(nba["expected_value"].sum())
    assert metrics["budget_used"] <= 1 and "customers_dropped.eligibility" in metrics
    assert metrics["violations"] == 0


def test_a_rule_naming_an_unknown_column_fails_before_any_work(world: World, tmp_path: Path) -> None:
    cfg = catalogue(world, rules={"eligibility": {"alive": "lifecycle_stag <> 'churned'"}})
    res = CliRunner().invoke(app, ["nba", str(cfg), "--as-of", str(AS_OF), "--out", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2
    assert f"{cfg}: rule rules.eligibility.alive: unknown column 'lifecycle_stag'" in res.output


def test_a_bad_out_is_refused_before_any_work(world: World, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["nba", str(catalogue(world)), "--as-of", str(AS_OF), "--out", str(tmp_path / "x.txt")]
    )
    assert res.exit_code == 2 and "--out" in res.output and not (tmp_path / "x.txt").exists()


def test_an_effect_model_version_that_does_not_exist_says_how_to_make_one(world: World, tmp_path: Path) -> None:
    argv = ["nba", str(catalogue(world)), "--as-of", str(AS_OF), "--out", str(tmp_path / "x.parquet"), "--model", "7"]
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2 and f"registered model '{UPLIFT}' has no version '7'" in res.output


def test_a_rule_over_a_task_score_drops_exactly_the_customers_whose_score_breaks_it(
    world: World, tmp_path: Path
) -> None:
    from omnicrm.pipeline.predict import predict

    cfg = catalogue(
        world,
        scores=["churn.yaml"],
        rules={"eligibility": {"not_lost": "p_churn IS NULL OR p_churn < 0.5"}},
        value={
            "column": "aov_365d",
            "scale": 0.3,
            "fallback": 10,
            "order_value": "aov_365d",
            "base_rate": 0.21,
            "long_term": {"column": "p_churn", "weight": -0.5, "reference": 0.4, "min": 0.5, "max": 1.5},
        },
        allocation={"budget": 40},
    )
    out = tmp_path / "nba.parquet"
    res = CliRunner().invoke(app, ["nba", str(cfg), "--as-of", str(AS_OF), "--out", str(out)], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert f"{CHURN} v1" in res.output
    assert "long-term weight: clip(1 + -0.5 × (p_churn / 0.4 − 1), 0.5, 1.5) multiplies the value" in res.output
    nba = pd.read_parquet(out)
    excluded = pd.read_parquet(tmp_path / "nba.excluded.parquet")
    # the churn champion's own scores at as-of (`omnicrm predict`), on the task's population
    scores = predict(world.folder / "churn.yaml", AS_OF, tmp_path / "churn.parquet").out
    p = pd.read_parquet(scores).set_index("customer_id")["p_churn"]
    dropped = set(excluded.loc[excluded["reason"].str.startswith("eligibility.not_lost"), "customer_id"])
    assert dropped and dropped == set(p[p >= 0.5].index)
    assert not dropped & set(nba["customer_id"])
    # the long-term weight: 1 - 0.5 (p / 0.4 - 1), clipped to [0.5, 1.5]; 1 without a score
    want = (1 - 0.5 * (p / 0.4 - 1)).clip(0.5, 1.5).reindex(nba["customer_id"]).fillna(1.0).to_numpy()
    assert nba["long_term"].to_numpy() == pytest.approx(want)
    weighted = nba[~np.isclose(nba["long_term"], 1.0)]
    assert len(weighted) and weighted["reasons"].str.contains("long-term weight ×").all()
    # the effect's drivers: in every sent row's reasons, computed for those rows only, never in excluded
    three = r" \(drivers: \w+=.+? [+-]\d\.\d{4}(?:, \w+=.+? [+-]\d\.\d{4}){2}\), value "
    assert nba["reasons"].str.contains(three).all(), nba["reasons"].head().tolist()
    assert not excluded["reason"].str.contains("drivers").any()

    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri())
    run = mlflow.search_runs(experiment_names=["omnicrm-nba"], output_format="list", max_results=1)[0]
    assert run.data.metrics["drivers_rows"] == len(nba)
    assert run.data.params["long_term.column"] == "p_churn" and run.data.params["value.long_term.weight"] == "-0.5"
    assert float(run.data.params["long_term.reference_value"]) == 0.4


def test_a_score_of_an_unlisted_or_unregistered_task_is_a_clear_error(world: World, tmp_path: Path) -> None:
    bad = catalogue(world, rules={"eligibility": {"not_lost": "p_churn < 0.5"}})
    res = CliRunner().invoke(app, ["nba", str(bad), "--as-of", str(AS_OF), "--out", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2
    assert f"{bad}: rule rules.eligibility.not_lost: unknown column 'p_churn'" in res.output
    assert "task config under 'scores'" in res.output
    cfg = catalogue(
        world,
        scores=[{"config": "churn.yaml", "model": "9"}],
        rules={"eligibility": {"not_lost": "p_churn IS NULL OR p_churn < 0.5"}},
    )
    res = CliRunner().invoke(app, ["nba", str(cfg), "--as-of", str(AS_OF), "--out", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2 and f"registered model '{CHURN}'" in res.output and "no version '9'" in res.output


def test_the_demo_step_builds_the_list_and_prints_its_table(world: World, tmp_path: Path) -> None:
    from omnicrm.cli.render import console, print_nba
    from omnicrm.pipeline.demo import DemoConfig, DemoResult, _run_models

    catalogue(world)
    out = tmp_path / "demo_nba.parquet"
    cfg = DemoConfig(
        generate="-",
        ingest="-",
        features="-",
        features_out="-",
        cutoffs={"dates": ["2024-01-01"]},
        nba={"config": "nba.yaml", "as_of": AS_OF, "out": str(out), "evaluate": False},  # judged in test_nba_eval
    )
    result = DemoResult(world=None, ingest=None, identity=None, features=None)
    _run_models(cfg, world.folder, result, lambda step, fraction: None)
    assert result.nba.out == out and out.is_file() and result.nba_seconds > 0
    with console.capture() as cap:
        print_nba(result.nba, result.nba_seconds)
    text = cap.get()
    nba = pd.read_parquet(out)
    for (action, channel), rows in nba.groupby(["action", "channel"]):
        line = next(ln for ln in text.splitlines() if f" {action} " in ln and f" {channel} " in ln)
        assert f" {len(rows):,} " in line and f"{rows['expected_value'].sum():,.2f}" in line
        assert f"{rows['cost'].sum():,.2f}" in line
    assert "expected incremental margin" in text
    assert re.search(r"constraint violations \(.*\): 0; step \d+\.\d s", text.replace("\n", " "))
