"""Registered recommenders and effect models on the small world (1,200 people, 540 days, ends 2024-06-23).

The demo's model wiring registers and promotes both; ``--model champion`` then scores without
fitting anything and writes what the refit wrote; the MLflow pyfunc predicts what the in-process
model predicts; the recommender's artifacts hold no customer id; promotion compares both versions on
data neither has seen, or refuses and says why.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from omnicrm import tracking
from omnicrm.cli import app
from omnicrm.pipeline.promote import PromotionRefused
from omnicrm.pipeline.promote_models import DataFingerprintWarning, handles, promote_model

pytestmark = pytest.mark.integration

K = 5
AS_OF = date(2024, 6, 24)  # the day after the small world's last event: every campaign window closed
REC_NAME = "omnicrm-small-recommend"
UPLIFT_NAME = "omnicrm-small-uplift-purchase"


def _store(small_store: Path) -> str:
    return yaml.safe_load(small_store.read_text())["store"]


def rec_config(store: str, serve: str = "hybrid") -> dict:
    """Test window [2024-05-27, 2024-06-24); small models."""
    return {
        "store": store,
        "dataset": "small",
        "test_cutoff": "2024-05-27",
        "test_days": 28,
        "validation_days": 28,
        "k": K,
        "seed": 3,
        "serve": serve,
        "methods": [
            {"name": "popularity", "kind": "popularity"},
            {"name": "als", "kind": "als", "params": {"factors": 8, "iterations": 5}},
            {"name": "item_knn", "kind": "item_knn", "params": {"K": 20}},
            *([{"name": "bpr", "kind": "bpr", "params": {"factors": 8, "iterations": 10}}] if serve == "bpr" else []),
            {
                "name": "hybrid",
                "kind": "hybrid",
                "inherit": {"als": "als", "knn": "item_knn"},
                "params": {
                    "label_days": 28,
                    "n_candidates": 15,
                    "max_own": 20,
                    "negatives": 15,
                    "n_estimators": 30,
                    "min_child_samples": 10,
                    "num_leaves": 7,
                    "als": {"factors": 8, "iterations": 5},
                    "knn": {"K": 20},
                },
            },
        ],
    }


def uplift_config(store: str, world: Path, learner: str = "DR") -> dict:
    return {
        "name": "small",
        "source": {
            "kind": "store",
            "store": store,
            "features": {},
            "window_days": 14,
            "outcomes": ["purchase", "spend"],
        },
        "learners": {"names": ["DR"], "model": {"n_estimators": 20, "min_child_samples": 20}},
        "evaluation": {"outcomes": ["purchase"], "seeds": 1, "folds": 2},
        "readout": {"by": ["campaign_id"]},
        "effects": {"learner": learner, "outcome": "purchase"},
        "truth": {
            "effects": str(world / "truth/treatment_effects.parquet"),
            "record_owner": str(world / "truth/record_owner.parquet"),
        },
    }


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@dataclass
class Registered:
    mlruns: Path
    folder: Path
    rec: Path
    uplift: Path
    result: object  # the demo's DemoResult


@pytest.fixture(scope="module")
def registered(small_store: Path, small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Registered:
    """The demo's model wiring (recommenders, uplift, readout, effect model) on the small world, once."""
    from omnicrm.pipeline.demo import DemoConfig, DemoResult, _run_models

    folder = tmp_path_factory.mktemp("registered")
    store = _store(small_store)
    rec = _write(folder / "recommend.yaml", rec_config(store))
    upl = _write(folder / "uplift.yaml", uplift_config(store, small_world))
    cfg = DemoConfig.model_validate(
        {
            "generate": "unused.yaml",
            "ingest": "unused.yaml",
            "features": "unused.yaml",
            "cutoffs": {"start": "2024-01-01", "end": "2024-02-01", "every": "month"},
            "features_out": "unused.parquet",
            "recommend": {"config": "recommend.yaml", "as_of": str(AS_OF), "out": str(folder / "recs.parquet")},
            "uplift": "uplift.yaml",
            "effects": {"as_of": str(AS_OF), "out": str(folder / "effects.parquet")},
        }
    )
    mlruns = folder / "mlruns"
    # a module fixture is set up before the function-scoped autouse ones: clear what earlier tests set
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("OMNICRM_MLRUNS", str(mlruns))
        result = DemoResult(None, None, None, None)
        _run_models(cfg, folder, result, lambda *_: None)
    return Registered(mlruns, folder, rec, upl, result)


@pytest.fixture
def in_registry(registered: Registered, monkeypatch: pytest.MonkeyPatch) -> Registered:
    monkeypatch.setenv("OMNICRM_MLRUNS", str(registered.mlruns))
    return registered


def _no_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any recommender or uplift fit fails the test: scoring with a registered model must not fit."""
    from omnicrm.recommend.base import Recommender
    from omnicrm.uplift.learners import UpliftLearner

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was fitted")

    for cls, name in ((Recommender, "fit"), (Recommender, "fit_history"), (UpliftLearner, "fit")):
        monkeypatch.setattr(cls, name, refuse)


def test_demo_registers_and_promotes_a_recommender_and_an_effect_model(in_registry: Registered) -> None:
    result = in_registry.result
    promoted = {p.name: p for p in result.promotions}
    assert promoted[REC_NAME].version == "1" and promoted[UPLIFT_NAME].version == "1"
    assert promoted[REC_NAME].note == "no champion yet: candidate promoted"
    rec = tracking.get_version(REC_NAME, "champion")
    assert set(rec.aliases) == {"candidate", "champion"}
    assert rec.tags["model_kind"] == "recommend" and rec.tags["method"] == "hybrid" and rec.tags["as_of"] == str(AS_OF)
    assert len(rec.tags["data_fingerprint"]) == 64
    up = tracking.get_version(UPLIFT_NAME, "champion")
    assert up.tags["learner"] == "DR" and up.tags["outcome"] == "purchase" and up.tags["as_of"] == str(AS_OF)
    assert up.tags["data_fingerprint"] == rec.tags["data_fingerprint"]
    assert up.tags["campaigns"] == ",".join(f"CMP00{i}" for i in range(1, 9))
    # the effect model is fitted on every exposure, so the uplift evaluation's held-out Qini is its own
    assert int(up.tags["training_rows"]) == result.uplift.rows == result.effects.training_rows
    table = result.uplift.table.set_index(["learner", "action"])
    for action in result.effects.actions:
        assert float(up.tags[f"qini.{action}"]) == pytest.approx(table.loc[("DR", action), "qini"], abs=1e-6)


def test_recommend_with_the_champion_fits_nothing_and_writes_the_refit_lists(
    in_registry: Registered, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_fit(monkeypatch)
    out = tmp_path / "champion.parquet"
    argv = ["recommend", str(in_registry.rec), "--as-of", str(AS_OF), "--out", str(out), "--model", "champion"]
    res = CliRunner().invoke(app, argv, terminal_width=200)
    assert res.exit_code == 0, res.output
    assert f"model: {REC_NAME} v1 (candidate, champion): hybrid fitted on purchases before {AS_OF}, not refitted" in (
        res.output
    )
    refit = pd.read_parquet(in_registry.folder / "recs.parquet")
    got = pd.read_parquet(out)
    pd.testing.assert_frame_equal(got.drop(columns="score"), refit.drop(columns="score"))
    np.testing.assert_allclose(got["score"], refit["score"], rtol=0, atol=1e-12)


def test_effects_with_the_champion_fits_nothing_and_writes_the_refit_effects(
    in_registry: Registered, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_fit(monkeypatch)
    out = tmp_path / "champion.parquet"
    argv = ["effects", str(in_registry.uplift), "--as-of", str(AS_OF), "--out", str(out), "--model", "champion"]
    res = CliRunner().invoke(app, argv, terminal_width=200)
    assert res.exit_code == 0, res.output
    assert f"model: {UPLIFT_NAME} v1 (candidate, champion): DR fitted as of {AS_OF}, not refitted" in res.output
    refit = pd.read_parquet(in_registry.folder / "effects.parquet")
    got = pd.read_parquet(out)
    pd.testing.assert_frame_equal(got.drop(columns="effect"), refit.drop(columns="effect"))
    np.testing.assert_allclose(got["effect"], refit["effect"], rtol=0, atol=1e-12)


def test_the_registered_recommender_is_a_pyfunc_and_holds_no_customer_id(
    in_registry: Registered, small_store: Path, tmp_path: Path
) -> None:
    import mlflow

    from omnicrm.pipeline.recommend import load_store_purchases
    from omnicrm.recommend.config import load_recommend_config

    purchases, _ = load_store_purchases(load_recommend_config(in_registry.rec), AS_OF)
    pyfunc = tracking.load_pyfunc(f"models:/{REC_NAME}@champion")
    got = pyfunc.predict(purchases, params={"as_of": str(AS_OF), "k": K})
    refit = pd.read_parquet(in_registry.folder / "recs.parquet")
    pd.testing.assert_frame_equal(got.drop(columns="score"), refit.drop(columns="score"), check_dtype=False)
    np.testing.assert_allclose(got["score"], refit["score"], rtol=0, atol=1e-12)

    version = tracking.get_version(REC_NAME, "champion")
    tracking.configure()
    folders = [
        mlflow.artifacts.download_artifacts(run_id=version.run_id, dst_path=str(tmp_path / "run")),
        mlflow.artifacts.download_artifacts(f"models:/{REC_NAME}/{version.version}", dst_path=str(tmp_path / "model")),
    ]
    files = {p: p.read_bytes() for folder in folders for p in Path(folder).rglob("*") if p.is_file()}
    assert {"python_model.pkl", "input_example.json", "config.yaml"} <= {p.name for p in files}
    con = duckdb.connect(_store(small_store), read_only=True)
    customers = con.sql("SELECT DISTINCT customer_id FROM events WHERE customer_id IS NOT NULL").df()["customer_id"]
    con.close()
    assert len(customers) > 1000
    leaks = [(p.name, c) for p, blob in files.items() for c in customers if c.encode() in blob]
    assert not leaks, leaks[:5]
    # O(products), not O(customers): the served hybrid of 1,980 products is about 1.5 MB
    assert sum(len(b) for b in files.values()) < 5_000_000


def test_the_registered_effect_model_is_a_pyfunc(in_registry: Registered) -> None:
    from omnicrm.pipeline.uplift import scoring_population
    from omnicrm.uplift.config import load_uplift_config

    cfg, feats = load_uplift_config(in_registry.uplift)
    pop = scoring_population(cfg, feats, None, datetime(AS_OF.year, AS_OF.month, AS_OF.day))
    model = tracking.load_model(f"models:/{UPLIFT_NAME}@champion")
    pyfunc = tracking.load_pyfunc(f"models:/{UPLIFT_NAME}@champion")
    got = pyfunc.predict(pop[model.features])
    want = model.predict_frame(pop)
    assert list(got.columns) == [f"effect_{a}" for a in in_registry.result.effects.actions]
    np.testing.assert_allclose(got.to_numpy(float), want.to_numpy(float), rtol=0, atol=1e-12)
    written = pd.read_parquet(in_registry.folder / "effects.parquet")
    wide = written.pivot(index="customer_id", columns="action", values="effect").loc[pop["customer_id"]]
    np.testing.assert_allclose(wide.to_numpy(), want.to_numpy(float), rtol=0, atol=1e-12)


def test_a_champion_on_another_store_is_reported(in_registry: Registered, small_store: Path, tmp_path: Path) -> None:
    from omnicrm.pipeline.recommend import write_recommendations

    copy = tmp_path / "other.duckdb"
    shutil.copy(_store(small_store), copy)
    con = duckdb.connect(str(copy))
    con.execute("UPDATE store_meta SET value = 'another-store' WHERE key = 'data_fingerprint'")
    con.close()
    cfg = _write(tmp_path / "other.yaml", rec_config(str(copy)))
    with pytest.warns(DataFingerprintWarning, match=rf"{REC_NAME} v1 was fitted on data with fingerprint"):
        result = write_recommendations(cfg, AS_OF, tmp_path / "r.parquet", model="champion")
    assert not result.refitted and result.version == "1"


def test_without_a_registered_champion_the_command_says_what_to_do(small_store: Path, tmp_path: Path) -> None:
    cfg = _write(tmp_path / "rec.yaml", rec_config(_store(small_store)))
    argv = ["recommend", str(cfg), "--as-of", str(AS_OF), "--out", str(tmp_path / "r.parquet"), "--model", "champion"]
    res = CliRunner().invoke(app, argv, terminal_width=200)
    assert res.exit_code == 2
    assert f"registered model '{REC_NAME}' has no version 'champion'" in res.output
    assert not (tmp_path / "r.parquet").exists()


def test_recommender_promotion_compares_ndcg_on_the_test_window(small_store: Path, tmp_path: Path) -> None:
    from omnicrm.pipeline.recommend import load_store_purchases, write_recommendations
    from omnicrm.recommend import history_in
    from omnicrm.recommend.config import build_method, load_recommend_config
    from omnicrm.recommend.evaluate import make_split, score

    store = _store(small_store)
    hybrid = _write(tmp_path / "hybrid.yaml", rec_config(store))
    popular = _write(tmp_path / "popularity.yaml", rec_config(store, serve="popularity"))
    cut, earlier, late = date(2024, 5, 27), date(2024, 5, 13), date(2024, 6, 10)

    assert write_recommendations(hybrid, cut, tmp_path / "a.parquet").version == "1"
    first = promote_model("small-recommend")
    assert first.promoted and first.note == "no champion yet: candidate promoted"

    # a candidate fitted two weeks earlier: both scored on [2024-05-27, 2024-06-24) without refitting
    write_recommendations(hybrid, earlier, tmp_path / "b.parquet")
    try:
        r = promote_model("small-recommend")
    except PromotionRefused as refused:
        r = refused.result
    assert r.metric == f"ndcg_at_{K}" and r.evaluation_cutoff.startswith("the test window 2024-05-27..2024-06-24")
    cfg = load_recommend_config(hybrid)
    purchases, items = load_store_purchases(cfg, cfg.test_end)
    split = make_split(purchases, items, cfg.test_cutoff, cfg.test_end, "test")
    for version, fitted_at in ((r.candidate, earlier), (r.champion_before, cut)):
        model = build_method(cfg.serve_spec, dict(cfg.serve_spec.params), cfg.seed).fit(purchases, fitted_at, items)
        if fitted_at < cut:  # scored from the customers' purchases up to the test cutoff, as served
            h = model.history_
            model = model.with_history(history_in(purchases, cut, h.items, h.item_info))
        in_process = score(model, split, K)["all"][f"ndcg_at_{K}"]
        value = r.candidate_value if version == r.candidate else r.champion_value
        assert value == pytest.approx(in_process, abs=1e-12), version
    assert r.promoted == (r.candidate_value >= r.champion_value)
    champion = tracking.get_version("omnicrm-small-recommend", "champion").version

    # a worse candidate (popularity) is refused and the champion stays; --force promotes it
    write_recommendations(popular, cut, tmp_path / "c.parquet")
    with pytest.raises(PromotionRefused, match=r"candidate v3 ndcg_at_5 0\.\d+ is worse than champion") as refused:
        promote_model("small-recommend")
    assert refused.value.result.candidate_value < refused.value.result.champion_value
    assert tracking.get_version("omnicrm-small-recommend", "champion").version == champion
    forced = promote_model("small-recommend", force=True)
    assert forced.promoted and forced.note == "forced: candidate is worse"

    # a candidate fitted after the test cutoff has seen the window: no fair comparison
    write_recommendations(hybrid, late, tmp_path / "d.parquet")
    with pytest.raises(PromotionRefused, match="v4 as of 2024-06-10 fitted after the test cutoff 2024-05-27"):
        promote_model("omnicrm-small-recommend")
    assert tracking.get_version("omnicrm-small-recommend", "champion").version == "3"
    forced = promote_model("omnicrm-small-recommend", force=True)
    assert forced.promoted and forced.note.startswith("forced: not compared")
    assert promote_model("small-recommend").note == "candidate is already champion"
    # `omnicrm promote NAME` sends recommenders and effect models here, task models to the task promotion
    assert handles("small-recommend") and handles("omnicrm-other-uplift-visit") and not handles("churn")


def test_a_method_that_cannot_be_served_is_written_but_not_registered(small_store: Path, tmp_path: Path) -> None:
    from omnicrm.pipeline.recommend import write_recommendations

    cfg = _write(tmp_path / "bpr.yaml", rec_config(_store(small_store), serve="bpr"))
    result = write_recommendations(cfg, AS_OF, tmp_path / "bpr.parquet")
    assert result.version is None and result.rows == result.customers * K
    assert "not registered: recommender 'bpr' cannot be served from item state" in result.model
    assert tracking.find_version(REC_NAME, "candidate") is None


def test_effect_model_promotion_compares_qini_on_campaigns_neither_has_seen(
    small_store: Path, small_world: Path, tmp_path: Path
) -> None:
    from omnicrm.pipeline.uplift import load_data, training_rows, write_effects
    from omnicrm.uplift import metrics as M
    from omnicrm.uplift.config import learner_factory, load_uplift_config
    from omnicrm.uplift.model import fit_effect_model

    store = _store(small_store)
    t_cfg = _write(tmp_path / "t.yaml", uplift_config(store, small_world, learner="T"))
    s_cfg = _write(tmp_path / "s.yaml", uplift_config(store, small_world, learner="S"))
    mid = datetime(2024, 3, 15)  # CMP001..CMP006 closed; CMP007 (2024-03-31) and CMP008 (2024-06-09) unseen

    write_effects(t_cfg, mid, tmp_path / "t.parquet")
    assert promote_model("small-uplift-purchase").promoted
    write_effects(s_cfg, mid, tmp_path / "s.parquet")
    try:
        r = promote_model("small-uplift-purchase")
    except PromotionRefused as refused:
        r = refused.result
    assert r.metric == "qini" and r.evaluation_cutoff.startswith("campaigns CMP007, CMP008 (")
    # recomputed here: each learner refitted in process on the same rows, scored on the two later campaigns
    cfg, feats = load_uplift_config(t_cfg)
    data = load_data(cfg, feats)
    train = training_rows(cfg, data, mid)
    later = data.frame[data.frame["campaign_id"].isin(["CMP007", "CMP008"])]
    y, arm = later["purchase"].to_numpy(float), later["arm"].to_numpy(dtype=object)
    for learner, value in (("S", r.candidate_value), ("T", r.champion_value)):
        make = learner_factory(cfg, learner, data.control, train["purchase"].to_numpy(float))
        model = fit_effect_model(make, learner, train, data.features, data.categorical, "purchase")
        effect = model.predict_effect(later)
        qinis = []
        for j, action in enumerate(model.actions):
            sel = (arm == action) | (arm == "control")
            qinis.append(M.qini_coefficient(y[sel], effect[sel, j], arm[sel] == action))
        assert value == pytest.approx(float(np.mean(qinis)), abs=1e-12), learner
    assert r.promoted == (r.candidate_value >= r.champion_value)
    champion = tracking.get_version(UPLIFT_NAME, "champion").version

    # fitted after the last campaign: nothing is unseen by both, so no comparison and no promotion
    write_effects(t_cfg, AS_OF, tmp_path / "late.parquet")
    with pytest.raises(PromotionRefused, match="no campaign was sent on or after 2024-06-24"):
        promote_model("small-uplift-purchase")
    assert tracking.get_version(UPLIFT_NAME, "champion").version == champion
    assert promote_model("small-uplift-purchase", force=True).note.startswith("forced: not compared")


def test_recommend_serves_the_params_recommend_eval_chose(small_store: Path, tmp_path: Path) -> None:
    """After recommend-eval, the refit and the version it registers use the chosen params, not the config's.

    ALS's ``params`` say regularisation 0.05; its grid holds only 5.0, so the evaluation chooses 5.0.
    """
    from omnicrm.pipeline.recommend import evaluate_recommenders, load_store_purchases, write_recommendations
    from omnicrm.recommend.config import build_method, load_recommend_config

    store = _store(small_store)
    als = {"factors": 8, "iterations": 5, "regularization": 0.05}
    cfg = {
        **{k: v for k, v in rec_config(store).items() if k != "methods"},
        "dataset": "chosen",
        "serve": "als",
        "methods": [
            {"name": "popularity", "kind": "popularity"},
            {"name": "als", "kind": "als", "params": als, "grid": {"regularization": [5.0]}},
        ],
    }
    path = _write(tmp_path / "als.yaml", cfg)
    name = "omnicrm-chosen-recommend"

    def registered_regularization(version: str) -> float:
        return tracking.load_model(tracking.model_uri(name, version)).model.regularization

    # before any evaluation: the config's params, and the result says so
    first = write_recommendations(path, AS_OF, tmp_path / "config.parquet")
    assert "with the config's params: no recommend-eval run of this config" in first.model
    assert registered_regularization(first.version) == 0.05

    result = evaluate_recommenders(path)
    assert result.params["als"]["regularization"] == 5.0

    out = tmp_path / "chosen.parquet"
    res = CliRunner().invoke(
        app, ["recommend", str(path), "--as-of", str(AS_OF), "--out", str(out)], terminal_width=300
    )
    assert res.exit_code == 0, res.output
    assert f"with the params chosen by recommend-eval run {result.run_id}" in res.output
    version = tracking.get_version(name, "candidate")
    assert version.tags["tuned_by"] == result.run_id
    assert registered_regularization(version.version) == 5.0
    # the lists are those of ALS with the chosen params, and differ from the config's
    loaded = load_recommend_config(path)
    purchases, items = load_store_purchases(loaded, AS_OF)
    model = build_method(loaded.serve_spec, als | {"regularization": 5.0}, loaded.seed).fit(purchases, AS_OF, items)
    expected = model.recommend(model.history_.users, K)
    got = pd.read_parquet(out)
    pd.testing.assert_frame_equal(
        got.drop(columns="score").reset_index(drop=True), expected.drop(columns="score").reset_index(drop=True)
    )
    pairs = ["customer_id", "product_id"]
    assert not got[pairs].equals(pd.read_parquet(tmp_path / "config.parquet")[pairs])

    # --model serves that version: the chosen params
    res = CliRunner().invoke(
        app,
        ["recommend", str(path), "--as-of", str(AS_OF), "--out", str(tmp_path / "m.parquet"), "--model", "candidate"],
    )
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "m.parquet").drop(columns="score"), got.drop(columns="score")
    )

    # --config-params refits with the config's params
    forced = write_recommendations(path, AS_OF, tmp_path / "forced.parquet", chosen_params=False)
    assert "with the config's params (" in forced.model and registered_regularization(forced.version) == 0.05

    # another experiment (a changed grid) does not inherit that run's choice
    other = _write(tmp_path / "other.yaml", cfg | {"methods": [cfg["methods"][0], cfg["methods"][1] | {"grid": {}}]})
    again = write_recommendations(other, AS_OF, tmp_path / "other.parquet")
    assert "no recommend-eval run of this config" in again.model
    assert registered_regularization(again.version) == 0.05
