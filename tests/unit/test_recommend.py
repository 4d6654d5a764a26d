"""Recommenders: one contract test over every method, known answers on a tiny block-structured world,
metrics against hand-computed values, and no purchase at or after the cutoff ever reaching a fit."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from omnicrm.errors import ConfigError, InputError
from omnicrm.recommend import METHODS, OUTPUT_COLUMNS, Hybrid, Popularity, Repurchase, build_history, ranking_metrics

CUTOFF = datetime(2024, 6, 1)

#: small, fast settings per method (the defaults are sized for real data)
FAST = {
    "recent_popularity": {"days": 30},
    "als": {"factors": 8, "iterations": 5},
    "bpr": {"factors": 8, "iterations": 300, "learning_rate": 0.05},
    "item_knn": {"K": 10},
    "hybrid": {
        "n_candidates": 8,
        "max_own": 10,
        "negatives": 10,
        "n_estimators": 20,
        "min_child_samples": 3,
        "num_leaves": 7,
        "als": {"factors": 8, "iterations": 5},
        "knn": {"K": 10},
    },
}


def make(kind: str, seed: int = 0):  # noqa: ANN201
    params = dict(FAST.get(kind, {}))
    if "random_state" in METHODS[kind]().get_params():
        params["random_state"] = seed
    return METHODS[kind](**params)


def block_world(seed: int = 0) -> pd.DataFrame:
    """Two taste blocks: 40 customers buy among items A0..A5, 60 among B0..B5 (so B is more popular).

    Everyone orders every few weeks over 200 days before the cutoff, favouring their own two
    "staples". A customer's unbought items of its own block are the right new recommendations.
    """
    rng = np.random.default_rng(seed)
    rows = []
    order = 0
    for block, n in (("A", 40), ("B", 60)):
        for c in range(n):
            cust = f"{block.lower()}{c:02d}"
            staples = rng.choice(6, size=2, replace=False)
            others = rng.choice([i for i in range(6) if i not in staples], size=2, replace=False)
            day = float(rng.uniform(0, 20))
            while day < 200:
                order += 1
                basket = (
                    list(staples)
                    + ([others[0]] if rng.random() < 0.5 else [])
                    + ([others[1]] if rng.random() < 0.3 else [])
                )
                ts = CUTOFF - timedelta(days=200 - day)
                for it in basket:
                    rows.append((cust, f"{block}{it}", ts, f"o{order}", 1.0, 10.0 + it))
                day += float(rng.uniform(10, 30))
    return pd.DataFrame(rows, columns=["customer_id", "product_id", "ts", "order_id", "quantity", "amount"])


@pytest.fixture(scope="module")
def world() -> pd.DataFrame:
    return block_world()


@pytest.fixture(scope="module")
def fitted(world: pd.DataFrame) -> dict:
    return {kind: make(kind).fit(world, CUTOFF) for kind in METHODS}


KINDS = sorted(METHODS)


@pytest.mark.contract
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("exclude", [False, True])
def test_recommender_contract(kind: str, exclude: bool, world: pd.DataFrame, fitted: dict) -> None:
    model = fitted[kind]
    customers = ["a00", "a01", "b05", "stranger"]  # "stranger" has no history: popularity fills
    k = 4
    recs = model.recommend(customers, k, exclude_purchased=exclude)
    assert tuple(recs.columns) == OUTPUT_COLUMNS
    assert recs["customer_id"].dtype == "str" and recs["product_id"].dtype == "str"
    assert recs["reason"].dtype == "str"
    assert recs["rank"].dtype == "int64" and recs["score"].dtype == "float64"
    # k rows per customer (12 items; a customer bought at most 4, so k new ones exist too), ranks 1..k
    assert recs.groupby("customer_id").size().to_dict() == dict.fromkeys(customers, k)
    assert (
        recs.groupby("customer_id")["rank"].apply(list)
        == pd.Series([list(range(1, k + 1))] * 4, index=sorted(customers))
    ).all()
    assert not recs.duplicated(["customer_id", "product_id"]).any()
    assert recs["reason"].str.len().gt(0).all() and recs["reason"].notna().all()
    assert np.isfinite(recs["score"]).all()
    bought = set(zip(world["customer_id"], world["product_id"], strict=True))
    pairs = set(zip(recs["customer_id"], recs["product_id"], strict=True))
    if exclude:
        assert not pairs & bought
    # deterministic with a seed: a second, independent fit gives the same frame
    again = make(kind).fit(world, CUTOFF).recommend(customers, k, exclude_purchased=exclude)
    pd.testing.assert_frame_equal(recs, again)


@pytest.mark.parametrize("kind", ["als", "bpr", "item_knn", "hybrid"])
def test_personalised_methods_recommend_the_customers_own_block(kind: str, fitted: dict) -> None:
    """New items for an A customer come from block A although block B is more popular."""
    model = fitted[kind]
    a_customers = [f"a{c:02d}" for c in range(40)]
    recs = model.recommend(a_customers, 1, exclude_purchased=True)
    share_a = recs["product_id"].str.startswith("A").mean()
    assert share_a >= 0.9, recs.head(20)


def test_baselines_known_answers(world: pd.DataFrame, fitted: dict) -> None:
    h = build_history(world, CUTOFF)
    buyers = world.drop_duplicates(["customer_id", "product_id"]).groupby("product_id").size()
    expected_top = sorted(buyers.index, key=lambda p: (-buyers[p], p))[:3]
    pop = fitted["popularity"].recommend(["a00", "stranger"], 3)
    assert pop[pop["customer_id"] == "stranger"]["product_id"].tolist() == expected_top
    assert pop["reason"].iloc[0] == f"popular with all customers ({buyers[expected_top[0]]} customers)"

    # repurchase: the customer's items by number of orders, the more recent first on ties, then the
    # more popular (customers who bought it), then product id
    lines = world.drop_duplicates(["customer_id", "product_id", "order_id"])
    own = lines[lines["customer_id"] == "a03"].groupby("product_id").agg(n=("order_id", "size"), last=("ts", "max"))
    own = own.assign(buyers=buyers.reindex(own.index), pid=own.index)
    expected = own.sort_values(["n", "last", "buyers", "pid"], ascending=[False, False, False, True]).index.tolist()
    rep = fitted["repurchase"].recommend(["a03"], len(expected))
    assert rep["product_id"].tolist() == expected
    n, last = own.loc[expected[0], "n"], own.loc[expected[0], "last"]
    days = int((CUTOFF - last).total_seconds() // 86400)
    assert rep["reason"].iloc[0] == f"bought {n} times, last {days} days ago"
    assert h.n_users == 100 and h.n_items == 12


@pytest.mark.parametrize("half_life_days", [None, 90])
def test_repurchase_breaks_ties_by_popularity_then_product_id(half_life_days: float | None) -> None:
    """Products bought together (equal scores) come in order of how many customers bought them, not by id.

    "me" bought A, B, C and D in one order: every score ties. B was bought by 3 others, C by 1, A and D by
    none: B, C, then A before D (equal popularity, product id). Ordered by id alone it would be A, B, C, D.
    """
    t = CUTOFF
    rows = [("me", p, t - timedelta(days=10), "o0", 1.0, 1.0) for p in ("A", "B", "C", "D")]
    rows += [(f"x{i}", "B", t - timedelta(days=40), f"b{i}", 1.0, 1.0) for i in range(3)]
    rows += [("y0", "C", t - timedelta(days=40), "c0", 1.0, 1.0)]
    frame = pd.DataFrame(rows, columns=["customer_id", "product_id", "ts", "order_id", "quantity", "amount"])
    model = Repurchase(half_life_days=half_life_days).fit(frame, t)
    recs = model.recommend(["me"], 4)
    assert recs["score"].nunique() == 1  # really a tie
    assert recs["product_id"].tolist() == ["B", "C", "A", "D"]
    # the tie-break is item-side: the registered (customer-free) model orders the same way
    from omnicrm.recommend import ServedRecommender

    served = ServedRecommender.from_fitted(model, "repurchase", 4, False)
    assert served.predict_frame(frame, as_of=t)["product_id"].head(4).tolist() == ["B", "C", "A", "D"]
    # other methods keep the product index as their tie-break
    assert Popularity().fit(frame, t)._tie_rank().tolist() == [0, 1, 2, 3]


def test_recent_popularity_reads_only_its_window() -> None:
    """X was bought by many long ago, Y by two customers last week: recent popularity ranks Y first."""
    t = CUTOFF
    rows = [(f"c{i}", "X", t - timedelta(days=100), f"o{i}", 1.0, 1.0) for i in range(5)]
    rows += [("c0", "Y", t - timedelta(days=3), "p0", 1.0, 1.0), ("c1", "Y", t - timedelta(days=5), "p1", 1.0, 1.0)]
    frame = pd.DataFrame(rows, columns=["customer_id", "product_id", "ts", "order_id", "quantity", "amount"])
    recent = METHODS["recent_popularity"](days=7).fit(frame, t).recommend(["new"], 2)
    assert recent["product_id"].tolist() == ["Y", "X"]
    assert recent["reason"].iloc[0] == "popular in the last 7 days (2 customers)"
    assert Popularity().fit(frame, t).recommend(["new"], 2)["product_id"].tolist() == ["X", "Y"]


@pytest.mark.parametrize("kind", KINDS)
def test_purchases_at_or_after_the_cutoff_never_reach_the_fit(kind: str, world: pd.DataFrame, fitted: dict) -> None:
    """Appending future purchases (new customers, new products, heavy buying) changes nothing."""
    rng = np.random.default_rng(1)
    n = 400
    future = pd.DataFrame(
        {
            "customer_id": rng.choice(["a00", "a01", "b05", "zz1", "zz2"], n),
            "product_id": rng.choice(["A0", "B1", "NEW1", "NEW2"], n),
            "ts": [CUTOFF + timedelta(hours=float(h)) for h in rng.integers(0, 24 * 60, n)],
            "order_id": [f"f{i}" for i in range(n)],
            "quantity": 1.0,
            "amount": 5.0,
        }
    )
    future.loc[0, "ts"] = CUTOFF  # exactly at the cutoff is the future too
    customers = ["a00", "a01", "b05", "zz1"]
    before = fitted[kind]
    after = make(kind).fit(pd.concat([world, future], ignore_index=True), CUTOFF)
    for exclude in (False, True):
        pd.testing.assert_frame_equal(
            before.recommend(customers, 4, exclude_purchased=exclude),
            after.recommend(customers, 4, exclude_purchased=exclude),
        )


@pytest.mark.contract
@pytest.mark.parametrize("kind", KINDS)
def test_item_state_holds_products_only(kind: str, world: pd.DataFrame) -> None:
    """What an artifact may hold: entries per product (or product x product), no customer id, no per-customer axis."""
    model = make(kind).fit(world.assign(customer_id="customer-" + world["customer_id"]), CUTOFF)
    h = model.history_
    assert h.n_users != h.n_items  # so a per-customer axis cannot pass for a per-product one
    state = model.item_state()
    assert state["items"].tolist() == h.items.tolist()
    assert state["method"]["kind"] == kind and state["method"]["cutoff"] == str(h.cutoff)
    text = []
    for name, value in state.items():
        if isinstance(value, np.ndarray):
            assert value.dtype != object and len(value) == h.n_items, name
            text += value.astype(str).tolist() if value.dtype.kind == "U" else []
        elif sp.issparse(value):
            assert value.shape == (h.n_items, h.n_items), name
        elif isinstance(value, pd.DataFrame):
            assert len(value) == h.n_items, name
            text.append(value.to_csv(index=False))
        else:
            assert isinstance(value, str | dict), name
            text.append(value if isinstance(value, str) else json.dumps(value))
    assert "customer-" not in "\n".join(text)


def test_ranking_metrics_match_hand_computed_values() -> None:
    recs = pd.DataFrame(
        {
            "customer_id": ["A"] * 3 + ["B"] * 3,
            "rank": [1, 2, 3] * 2,
            "product_id": ["x", "z", "y", "x", "z", "y"],
        }
    )
    truth = pd.DataFrame({"customer_id": ["A", "A", "B", "C"], "product_id": ["x", "y", "w", "v"]})
    m = ranking_metrics(recs, truth, k=3, catalogue_size=10)
    # A: hits at ranks 1 and 3 of 2 true items; B: none; C: no recommendations at all
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert m["customers"] == 3
    assert m["precision_at_3"] == pytest.approx((2 / 3) / 3)
    assert m["recall_at_3"] == pytest.approx(1 / 3)
    assert m["hit_rate_at_3"] == pytest.approx(1 / 3)
    assert m["ndcg_at_3"] == pytest.approx(dcg / idcg / 3)
    assert m["map_at_3"] == pytest.approx(((1 / 1 + 2 / 3) / 2) / 3)
    assert m["coverage_at_3"] == pytest.approx(3 / 10)
    # only ranks <= k count: at k = 1, A has a hit, its ideal is one item
    m1 = ranking_metrics(recs, truth, k=1, catalogue_size=10)
    assert m1["ndcg_at_1"] == pytest.approx(1 / 3) and m1["recall_at_1"] == pytest.approx(0.5 / 3)


def test_metrics_against_an_independent_loop() -> None:
    """Random lists scored by the vectorised code and by a plain per-customer loop agree."""
    rng = np.random.default_rng(3)
    items = [f"p{i}" for i in range(15)]
    rec_rows, truth_rows = [], []
    for c in range(30):
        for r, p in enumerate(rng.choice(items, 5, replace=False), start=1):
            rec_rows.append((f"c{c}", r, p))
        for p in rng.choice(items, int(rng.integers(1, 6)), replace=False):
            truth_rows.append((f"c{c}", p))
    recs = pd.DataFrame(rec_rows, columns=["customer_id", "rank", "product_id"])
    truth = pd.DataFrame(truth_rows, columns=["customer_id", "product_id"])
    k = 5
    got = ranking_metrics(recs, truth, k, len(items))
    ndcg, ap = [], []
    for c, t in truth.groupby("customer_id"):
        rel = set(t["product_id"])
        lst = recs[recs["customer_id"] == c].sort_values("rank")["product_id"].tolist()[:k]
        hits = [p in rel for p in lst]
        ndcg.append(
            sum(h / math.log2(i + 2) for i, h in enumerate(hits))
            / sum(1 / math.log2(i + 2) for i in range(min(len(rel), k)))
        )
        ap.append(sum(sum(hits[: i + 1]) / (i + 1) for i, h in enumerate(hits) if h) / min(len(rel), k))
    assert got["ndcg_at_5"] == pytest.approx(np.mean(ndcg))
    assert got["map_at_5"] == pytest.approx(np.mean(ap))


def test_bad_hyper_parameters_are_named() -> None:
    with pytest.raises(ConfigError, match=r"'factors' parameter must be a int >= 1. Got 0"):
        METHODS["als"](factors=0).fit(block_world(), CUTOFF)
    with pytest.raises(ConfigError, match=r"'weighting' parameter must be one of \['cosine', 'bm25'\]"):
        METHODS["item_knn"](weighting="jaccard").fit(block_world(), CUTOFF)


def test_missing_columns_and_empty_history_are_input_errors() -> None:
    frame = block_world()
    with pytest.raises(InputError, match="missing column"):
        Repurchase().fit(frame.drop(columns=["order_id"]), CUTOFF)
    with pytest.raises(InputError, match="no purchases before the cutoff 2020-01-01"):
        Repurchase().fit(frame, datetime(2020, 1, 1))
    with pytest.raises(InputError, match="too little history to train the ranker"):
        Hybrid(label_days=1, **{k: v for k, v in FAST["hybrid"].items()}).fit(frame, datetime(2023, 11, 16, 0, 0))
