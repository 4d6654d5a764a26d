"""Serving recommenders from item state: a model without customers, given the customers' purchases,
recommends exactly what the fitted model recommends; nothing per customer is kept; BPR says why not."""

from __future__ import annotations

import pickle
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from omnicrm.recommend import ALS, METHODS, NotServableError, ServedRecommender, history_in
from omnicrm.recommend.collaborative import bm25_item_norm, weighted_matrix
from omnicrm.recommend.config import load_recommend_config

from ..conftest import ROOT
from .test_recommend import CUTOFF, block_world, make

SERVABLE = sorted(k for k, cls in METHODS.items() if cls.servable is True)


@pytest.fixture(scope="module")
def world() -> pd.DataFrame:
    return block_world()


@pytest.fixture(scope="module")
def fitted(world: pd.DataFrame) -> dict:
    return {kind: make(kind).fit(world, CUTOFF) for kind in SERVABLE}


def test_every_method_but_bpr_is_servable() -> None:
    assert SERVABLE == ["als", "hybrid", "item_knn", "popularity", "recent_popularity", "repurchase"]
    assert "SGD" in str(METHODS["bpr"].servable)


@pytest.mark.contract
@pytest.mark.parametrize("kind", SERVABLE)
@pytest.mark.parametrize("exclude", [False, True])
def test_served_model_recommends_what_the_fitted_model_recommends(
    kind: str, exclude: bool, world: pd.DataFrame, fitted: dict
) -> None:
    model = fitted[kind]
    served = ServedRecommender.from_fitted(model, kind, k=4, exclude_purchased=exclude)
    assert served.model.history_.n_users == 0 and len(served.model.history_.pairs) == 0
    # the purchases handed over at scoring time are the fitted ones (plus later lines, which are ignored)
    later = world.assign(ts=world["ts"] + timedelta(days=400))
    got = served.predict_frame(pd.concat([world, later], ignore_index=True), as_of=CUTOFF)
    want = model.recommend(model.history_.users, 4, exclude_purchased=exclude)
    pd.testing.assert_frame_equal(got.drop(columns="score"), want.drop(columns="score"))
    np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), rtol=0, atol=1e-12)
    # the model it was built from is untouched
    pd.testing.assert_frame_equal(model.recommend(model.history_.users, 4, exclude_purchased=exclude), want)


@pytest.mark.parametrize("kind", SERVABLE)
def test_a_model_without_customers_holds_no_customer_id(kind: str, world: pd.DataFrame, fitted: dict) -> None:
    blob = pickle.dumps(ServedRecommender.from_fitted(fitted[kind], kind, 4, False))
    customers = world["customer_id"].unique()
    assert len(customers) == 100
    leaks = [c for c in customers if c.encode() in blob]
    assert not leaks, leaks


@pytest.mark.parametrize("weighting", ["bm25", "log", "count", "binary"])
def test_als_fold_in_replays_the_fitted_user_factors(weighting: str, world: pd.DataFrame) -> None:
    """implicit's CG user steps are warm started, so only a replay of every iteration gets them back."""
    model = ALS(factors=8, iterations=5, weighting=weighting).fit(world, CUTOFF)
    fitted_factors = np.asarray(model.model_.user_factors)
    assert np.array_equal(model.fold_in(model.user_items_), fitted_factors)
    # what implicit's recalculate_user gives (least squares on the final item factors) is another thing
    solved = model.model_.recalculate_user(np.arange(model.history_.n_users), model.user_items_)
    assert np.abs(solved - fitted_factors).max() > 1e-3


def test_bm25_rows_with_fitted_norms_equal_implicits_weights(world: pd.DataFrame) -> None:
    model = ALS(factors=8, iterations=3, weighting="bm25").fit(world, CUTOFF)
    h = model.history_
    ours = weighted_matrix(h, "bm25", bm25_norm=bm25_item_norm(h))
    theirs = weighted_matrix(h, "bm25")
    assert ours.dtype == theirs.dtype == np.float32
    assert (ours != theirs).nnz == 0 and np.array_equal(ours.indptr, theirs.indptr)
    # one customer's row alone gets the weights it has in the whole matrix
    one = history_in(world[world["customer_id"] == "a07"], CUTOFF, h.items, h.item_info)
    row = weighted_matrix(one, "bm25", bm25_norm=model.bm25_norm_)
    assert (row != theirs[h.users.get_loc("a07")]).nnz == 0
    assert sp.issparse(row)


def test_a_customer_is_scored_from_their_own_purchases_only(world: pd.DataFrame, fitted: dict) -> None:
    """Scoring a batch of customers, or each alone, gives each the same list: the user side is per customer."""
    served = ServedRecommender.from_fitted(fitted["hybrid"], "hybrid", 4, False)
    batch = served.predict_frame(world[world["customer_id"].isin(["a00", "b03", "b10"])], as_of=CUTOFF)
    alone = pd.concat(
        [served.predict_frame(world[world["customer_id"] == c], as_of=CUTOFF) for c in ["a00", "b03", "b10"]],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(batch, alone)


def test_new_customers_new_products_and_a_later_as_of(world: pd.DataFrame, fitted: dict) -> None:
    served = ServedRecommender.from_fitted(fitted["repurchase"], "repurchase", 3, False)
    extra = pd.DataFrame(
        {
            "customer_id": ["newbie", "newbie", "a00"],
            "product_id": ["Z9", "Z9", "A0"],  # Z9 is unknown to the model
            "ts": [CUTOFF + timedelta(days=3)] * 3,
            "order_id": ["n1", "n2", "n3"],
            "quantity": [1.0, 1.0, 1.0],
            "amount": [5.0, 5.0, 10.0],
        }
    )
    purchases = pd.concat([world, extra], ignore_index=True)
    recs = served.predict_frame(purchases, as_of=CUTOFF + timedelta(days=10))
    newbie = recs[recs["customer_id"] == "newbie"]
    # a customer whose only product is new to the model gets the fallback list, never the unknown product
    assert len(newbie) == 3 and "Z9" not in set(recs["product_id"])
    assert newbie["reason"].str.startswith("popular with all customers").all()
    # ages count back from as_of: a00's purchase 7 days before it is its most recent
    a00 = recs[recs["customer_id"] == "a00"]
    assert "last 7 days ago" in a00[a00["product_id"] == "A0"]["reason"].iloc[0]
    # the default as_of is the fit cutoff: the later lines are ignored then
    default = served.predict_frame(purchases)
    assert "newbie" not in set(default["customer_id"])


def test_bpr_cannot_be_served_and_says_why(world: pd.DataFrame) -> None:
    bpr = make("bpr").fit(world, CUTOFF)
    with pytest.raises(NotServableError, match=r"recommender 'bpr' cannot be served from item state: .*SGD"):
        bpr.without_customers()
    with pytest.raises(NotServableError, match="'bpr'"):
        ServedRecommender.from_fitted(bpr, "bpr", 4, False)


@pytest.mark.parametrize("config", ["synthetic.yaml", "online_retail.yaml"])
def test_the_shipped_configs_serve_a_servable_method(config: str) -> None:
    cfg = load_recommend_config(ROOT / "configs/recommend" / config)
    assert cfg.serve_spec.kind == "hybrid" and METHODS[cfg.serve_spec.kind].servable is True
    assert cfg.registered_name() == f"omnicrm-{cfg.dataset}-recommend"


def test_example_purchases_are_made_up(world: pd.DataFrame, fitted: dict) -> None:
    served = ServedRecommender.from_fitted(fitted["popularity"], "popularity", 4, False)
    example = served.example_purchases()
    assert example["customer_id"].str.startswith("example-customer-").all()
    assert set(example["product_id"]) <= set(served.products)
    assert (example["ts"] < pd.Timestamp(CUTOFF)).all()
    assert served.predict_frame(example).groupby("customer_id").size().tolist() == [4, 4]
    assert served.params() == {"as_of": f"{CUTOFF:%Y-%m-%d}", "k": 4, "exclude_purchased": False}
