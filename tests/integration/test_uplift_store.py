"""Uplift from the store: features at send time read only ts < send, outcomes read [send, send + window)."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from omnicrm.features import FeatureConfig, build_features
from omnicrm.pipeline.uplift import load_uplift_config, run_readout, run_uplift, write_effects
from omnicrm.store import open_store
from omnicrm.uplift.data import StoreSource, store_data

pytestmark = pytest.mark.integration


def _store_path(small_store: Path) -> Path:
    return Path(yaml.safe_load(small_store.read_text())["store"])


def load_store(src: StoreSource, feats: FeatureConfig):  # noqa: ANN201 - UpliftData
    """The rows of a store source, read the way the pipeline reads them (one thread: reproducible sums)."""
    con = open_store(src.store, deterministic=True)
    try:
        return store_data(con, src, feats)
    finally:
        con.close()


def _config(tmp_path: Path, store: Path, world: Path, **extra) -> Path:  # noqa: ANN003
    cfg = {
        "name": "small",
        "source": {
            "kind": "store",
            "store": str(store),
            "features": {},
            "window_days": 14,
            "outcomes": ["purchase", "spend", "margin"],
            "segment": "lifecycle_stage",
        },
        "learners": {"names": ["DR"], "model": {"n_estimators": 20, "min_child_samples": 20}},
        "evaluation": {"outcomes": ["purchase"], "seeds": 1, "folds": 2},
        "readout": {"by": ["campaign_id"]},
        "effects": {"learner": "T", "outcome": "purchase"},
        "truth": {
            "effects": str(world / "truth/treatment_effects.parquet"),
            "record_owner": str(world / "truth/record_owner.parquet"),
        },
        **extra,
    }
    path = tmp_path / "uplift.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_rows_have_point_in_time_features_and_window_outcomes(small_store: Path) -> None:
    store = _store_path(small_store)
    data = load_store(StoreSource(kind="store", store=str(store), outcomes=["purchase", "spend"]), FeatureConfig())
    frame = data.frame
    con = open_store(store)
    try:
        sends = con.execute("select campaign_id, min(ts) as send from treatments group by 1").df()
        events = con.execute("select customer_id, ts, event_type, amount from events").df()
        n_exposures = con.execute("select count(*) from treatments").fetchall()[0][0]
        first = sends.sort_values("send").iloc[0]
        expected = build_features(con, [first["send"].to_pydatetime()], FeatureConfig())
    finally:
        con.close()
    assert len(frame) == n_exposures
    assert set(frame["arm"]) == {"control", "discount_10pct", "free_shipping", "new_arrivals"}
    # cutoff = the campaign's send time; features are the feature builder's at that cutoff
    assert dict(zip(frame["campaign_id"], frame["cutoff"], strict=True)) == dict(
        zip(sends["campaign_id"], sends["send"], strict=True)
    )
    part = frame[frame["campaign_id"] == first["campaign_id"]].set_index("customer_id")
    exp = expected.set_index("customer_id").loc[part.index]
    pd.testing.assert_series_equal(part["orders_total"], exp["orders_total"], check_names=False)
    pd.testing.assert_series_equal(part["spend_365d"], exp["spend_365d"], check_names=False)
    # a purchase before the cutoff is strictly earlier: recency is positive
    assert (frame["recency_days"].dropna() > 0).all()
    # outcomes: an independent pandas reading of [send, send + 14 days)
    ev = events.merge(frame[["customer_id", "campaign_id", "cutoff"]], on="customer_id")
    inside = ev[(ev["ts"] >= ev["cutoff"]) & (ev["ts"] < ev["cutoff"] + timedelta(days=14))]
    buys = inside[inside["event_type"] == "purchase"].groupby(["customer_id", "campaign_id"])["amount"].sum()
    got = frame.set_index(["customer_id", "campaign_id"])
    spend = buys.reindex(got.index, fill_value=0.0)
    np.testing.assert_allclose(got["spend"].to_numpy(), spend.to_numpy(), atol=1e-9)
    np.testing.assert_array_equal(got["purchase"].to_numpy(), (spend.to_numpy() > 0).astype(float))


def test_an_event_at_send_time_is_an_outcome_not_a_feature(small_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store.duckdb"
    shutil.copy(_store_path(small_store), store)
    src = StoreSource(kind="store", store=str(store), outcomes=["purchase", "spend"])
    before = load_store(src, FeatureConfig())
    row = before.frame[before.frame["purchase"] == 0].iloc[0]
    con = duckdb.connect(str(store))
    con.execute(
        "insert into events (event_id, customer_id, ts, channel, event_type, order_id, product_id, category, "
        "quantity, amount) select 'E-TEST', ?, ?, 'web', 'purchase', 'O-TEST', product_id, category, 1, 999.0 "
        "from products limit 1",
        [row["customer_id"], row["cutoff"].to_pydatetime()],
    )
    con.close()
    after = load_store(src, FeatureConfig()).frame
    key = (after["customer_id"] == row["customer_id"]) & (after["campaign_id"] == row["campaign_id"])
    changed = after[key].iloc[0]
    assert changed["purchase"] == 1 and changed["spend"] == pytest.approx(999.0)
    for col in ("orders_total", "spend_total", "recency_days"):  # the feature side did not see it
        assert changed[col] == row[col] or (pd.isna(changed[col]) and pd.isna(row[col]))


def test_pipeline_uplift_readout_and_effects_on_the_store(small_store: Path, small_world: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, _store_path(small_store), small_world)
    result = run_uplift(config)
    tab = result.table
    assert set(tab["learner"]) == {"DR"}
    assert set(tab["action"]) == {"discount_10pct", "free_shipping", "new_arrivals"}
    assert np.isfinite(tab["qini"]).all() and "spearman_truth" in tab.columns
    assert set(result.verdicts["purchase"]) == {"DR"}

    ro = run_readout(config)
    assert {"campaign_id", "action", "outcome", "ate", "ci_low", "ci_high", "mde"} <= set(ro.table.columns)
    assert set(ro.table["outcome"]) == {"purchase", "spend", "margin"}
    assert ro.segments is not None and "lifecycle_stage" in ro.segments.columns

    cfg, feats = load_uplift_config(config)
    con = open_store(cfg.source.store)
    try:
        last_send = con.execute("select max(ts) from treatments").fetchall()[0][0]
        as_of = (last_send + timedelta(days=20)).replace(hour=0, minute=0, second=0, microsecond=0)
        population = build_features(con, [as_of], feats)
    finally:
        con.close()
    out = tmp_path / "effects.parquet"
    res = write_effects(config, as_of, out)
    effects = pd.read_parquet(out)
    assert list(effects.columns) == ["customer_id", "action", "outcome", "effect"]
    assert res.customers == len(population) and len(effects) == 3 * len(population)
    assert set(effects["customer_id"]) == set(population["customer_id"])
    assert not list(tmp_path.glob(".*.tmp"))


def test_effects_refuse_a_date_before_any_outcome_window_closed(
    small_store: Path, small_world: Path, tmp_path: Path
) -> None:
    from omnicrm.cli import app

    config = _config(tmp_path, _store_path(small_store), small_world)
    res = CliRunner().invoke(app, ["effects", str(config), "--as-of", "2000-01-01", "--out", str(tmp_path / "e.pq")])
    assert res.exit_code == 2
    assert "no campaign's outcome window closed" in res.output


@pytest.mark.slow  # a second MLflow store and training run (~9 s); the pipeline test covers run_uplift
def test_cli_uplift_prints_metrics_policy_and_verdict(small_store: Path, small_world: Path, tmp_path: Path) -> None:
    from omnicrm.cli import app

    config = _config(tmp_path, _store_path(small_store), small_world)
    cfg = yaml.safe_load(config.read_text())
    cfg["learners"]["names"] = ["S"]
    config.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["uplift", str(config)], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "Spearman vs truth" in res.output and "best action (effect > 0)" in res.output
    assert "personalisation" in res.output
