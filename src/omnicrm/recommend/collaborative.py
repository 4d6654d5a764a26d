"""Collaborative filtering for implicit feedback, from the ``implicit`` library (ALS, BPR, item-item kNN).

Nothing here factorises a matrix by hand: these classes adapt implicit's models to the omnicrm
contract (customer/product ids, cutoff, reasons). Determinism: a fixed ``random_state`` and
``num_threads`` (BPR's parallel SGD is order-dependent, so 1 thread by default). implicit warns when
OpenBLAS runs its own thread pool (it slows ALS badly); models are built, fitted and queried inside
``threadpool_limits(1, "blas")``, which both avoids the slowdown and the warning.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from omnicrm.recommend.base import Recommender
from omnicrm.recommend.history import History


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def weighted_matrix(
    history: History, weighting: str, alpha: float = 1.0, bm25_k1: float = 100.0, bm25_b: float = 0.8
) -> sp.csr_matrix:
    """The user x item confidence matrix: order counts weighted by ``count``, ``log`` or ``bm25``."""
    from implicit.nearest_neighbours import bm25_weight

    m = history.matrix.astype(np.float32)
    if weighting == "count":
        w = m.copy()
    elif weighting == "log":
        w = m.copy()
        w.data = np.log1p(w.data)
    elif weighting == "binary":
        w = m.copy()
        w.data = np.ones_like(w.data)
    else:  # bm25 weights each item's column (rows of the transposed matrix), as implicit's examples do
        w = sp.csr_matrix(bm25_weight(m.T.tocsr(), K1=bm25_k1, B=bm25_b).T, dtype=np.float32)
    w = (w * np.float32(alpha)).tocsr().astype(np.float32)
    w.sort_indices()
    return w


def _implicit_top(model, user_items: sp.csr_matrix, users: np.ndarray, k: int, exclude: bool) -> pd.DataFrame:  # noqa: ANN001
    """Batched ``model.recommend`` -> (row, i, score); padded or filtered slots dropped."""
    if len(users) == 0:
        return pd.DataFrame({"row": [], "i": [], "score": []}).astype({"row": "int64", "i": "int64"})
    n = min(k, user_items.shape[1])
    with single_threaded_blas():
        ids, scores = model.recommend(users, user_items[users], N=n, filter_already_liked_items=exclude)
    ids, scores = np.atleast_2d(ids), np.atleast_2d(scores)
    row = np.repeat(np.arange(len(users)), ids.shape[1])
    ids, scores = ids.ravel(), scores.ravel().astype(float)
    ok = (ids >= 0) & np.isfinite(scores)
    return pd.DataFrame({"row": row[ok], "i": ids[ok].astype(np.int64), "score": scores[ok]})


def anchors_by_similarity(
    history: History, users: np.ndarray, items: np.ndarray, item_sim: sp.csr_matrix
) -> np.ndarray:
    """For each (user, item): the user's bought item with the largest ``item_sim[j, item]`` (-1: none)."""
    if len(users) == 0:
        return np.array([], dtype=np.int64)
    n = history.n_items
    bought = history.matrix[users]
    rows = np.repeat(np.arange(len(users)), np.diff(bought.indptr))
    cols = bought.indices.astype(np.int64)
    sim = item_sim.tocoo()
    # look the (bought j, recommended i) similarities up by key: no dense or fancy-indexed matrices
    at = pd.Index(sim.row.astype(np.int64) * n + sim.col).get_indexer(cols * n + items[rows])
    sims = np.where(at >= 0, sim.data[np.maximum(at, 0)], 0.0).astype(np.float32)
    sims[(sims <= 0) | (cols == items[rows])] = -np.inf
    return _segment_argmax(rows, cols, sims, len(users))


def _segment_argmax(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Per row, the ``cols`` entry with the largest finite value (-1 when a row has none; ties: first).

    ``rows`` must be non-decreasing (CSR order), so segments are contiguous: O(n), no sort.
    """
    best = np.full(n, -1, dtype=np.int64)
    if len(rows) == 0:
        return best
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    seg_max = np.maximum.reduceat(values, starts)
    at_max = np.flatnonzero(values == np.repeat(seg_max, np.diff(np.r_[starts, len(rows)])))
    first = at_max[np.r_[True, rows[at_max[1:]] != rows[at_max[:-1]]]]
    valid = np.isfinite(values[first])
    best[rows[first][valid]] = cols[first][valid]
    return best


def anchors_by_factors(
    history: History, users: np.ndarray, items: np.ndarray, factors: np.ndarray, chunk: int = 200_000
) -> np.ndarray:
    """For each (user, item): the user's bought item whose factor vector is closest (cosine) to the item's."""
    if len(users) == 0:
        return np.array([], dtype=np.int64)
    f = factors / np.maximum(np.linalg.norm(factors, axis=1, keepdims=True), 1e-12)
    bought = history.matrix[users]
    rows = np.repeat(np.arange(len(users)), np.diff(bought.indptr))
    cols = bought.indices.astype(np.int64)
    sims = np.empty(len(cols), dtype=np.float32)
    for s in range(0, len(cols), chunk):  # chunks bound the memory of the row-wise dot products
        r, c = rows[s : s + chunk], cols[s : s + chunk]
        sims[s : s + chunk] = np.einsum("ij,ij->i", f[c], f[items[r]])
    sims[cols == items[rows]] = -np.inf  # the item itself is no explanation
    return _segment_argmax(rows, cols, sims, len(users))


def anchor_reasons(history: History, anchors: np.ndarray, template: str, fallback: np.ndarray) -> np.ndarray:
    """``template`` with the anchor product id; ``fallback`` where there is no anchor."""
    out = np.asarray(fallback, dtype=object).copy()
    has = anchors >= 0
    names = history.items.to_numpy()[anchors[has]].astype(str)
    out[has] = np.char.replace(np.full(has.sum(), template), "{item}", names).astype(object) if has.any() else out[has]
    return out


def gather_scores(users: np.ndarray, items: np.ndarray, dense_rows, batch: int = 2048) -> np.ndarray:  # noqa: ANN001
    """Scores of (user, item) pairs from ``dense_rows(user_batch) -> users x items`` computed per batch
    of distinct users: dense blocks are far cheaper than one sparse row per pair."""
    inv, uniq = pd.factorize(users)
    out = np.zeros(len(users), dtype=np.float32)
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(0, len(uniq) + batch, batch))
    for b, start in enumerate(range(0, len(uniq), batch)):
        sel = order[bounds[b] : bounds[b + 1]]
        block = np.asarray(dense_rows(uniq[start : start + batch]))
        out[sel] = block[inv[sel] - start, items[sel]]
    return out


class _FactorModel(Recommender):
    """Shared fit/recommend/reason code of ALS and BPR."""

    def _make(self):  # noqa: ANN202
        raise NotImplementedError  # pragma: no cover

    def _fit(self, history: History) -> None:
        self.user_items_ = weighted_matrix(history, self.weighting, self.alpha)
        with single_threaded_blas():
            self.model_ = self._make()
            self.model_.fit(self.user_items_, show_progress=False)

    def _top_items(self, users: np.ndarray, k: int, exclude: bool) -> pd.DataFrame:
        return _implicit_top(self.model_, self.user_items_, users, k, exclude)

    def item_state(self) -> dict[str, Any]:
        """The base's state and the item factors (user factors are per customer: left out)."""
        return super().item_state() | {"item_factors": np.asarray(self.model_.item_factors)}

    def pair_scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The model's score of arbitrary (user, item) pairs (for the hybrid's features)."""
        uf, itf = np.asarray(self.model_.user_factors), np.asarray(self.model_.item_factors)
        return gather_scores(users, items, lambda b: uf[b] @ itf.T)

    def _reason(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        anchors = anchors_by_factors(self.history_, users, items, np.asarray(self.model_.item_factors))
        return anchor_reasons(self.history_, anchors, "like {item} you bought", super()._reason(users, items))


class ALS(_FactorModel):
    """Alternating least squares on implicit feedback (Hu, Koren & Volinsky), implicit's CPU model."""

    kind = "als"
    _constraints = {
        "factors": (int, 1),
        "regularization": ((int, float), 0),
        "iterations": (int, 1),
        "alpha": ((int, float), 0),
        "num_threads": (int, 0),
        "random_state": (int, 0),
    }
    _choices = {"weighting": ("bm25", "log", "count", "binary")}

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        iterations: int = 15,
        alpha: float = 1.0,
        weighting: str = "bm25",
        num_threads: int = 1,
        random_state: int = 0,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.alpha = alpha
        self.weighting = weighting
        self.num_threads = num_threads
        self.random_state = random_state

    def _make(self):  # noqa: ANN202
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=self.factors,
            regularization=float(self.regularization),
            alpha=1.0,
            iterations=self.iterations,
            calculate_training_loss=False,
            num_threads=self.num_threads,
            random_state=self.random_state,
        )


class BPR(_FactorModel):
    """Bayesian personalised ranking (SGD on sampled pairs), implicit's CPU model."""

    kind = "bpr"
    _constraints = {
        "factors": (int, 1),
        "learning_rate": ((int, float), 0),
        "regularization": ((int, float), 0),
        "iterations": (int, 1),
        "alpha": ((int, float), 0),
        "num_threads": (int, 0),
        "random_state": (int, 0),
    }
    _choices = {"weighting": ("bm25", "log", "count", "binary")}

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.01,
        regularization: float = 0.01,
        iterations: int = 100,
        alpha: float = 1.0,
        weighting: str = "binary",
        num_threads: int = 1,
        random_state: int = 0,
    ) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.alpha = alpha
        self.weighting = weighting
        self.num_threads = num_threads
        self.random_state = random_state

    def _make(self):  # noqa: ANN202
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=float(self.learning_rate),
            regularization=float(self.regularization),
            iterations=self.iterations,
            num_threads=self.num_threads,
            random_state=self.random_state,
        )


class ItemKNN(Recommender):
    """Item-item nearest neighbours: implicit's ``ItemItemRecommender`` on a weighted matrix.

    ``weighting`` ``cosine`` normalises each item's column (cosine similarity), ``bm25`` applies
    implicit's BM25 weights; ``K`` neighbours are kept per item.
    """

    kind = "item_knn"
    _constraints = {"K": (int, 1), "num_threads": (int, 0)}
    _choices = {"weighting": ("cosine", "bm25")}

    def __init__(self, K: int = 100, weighting: str = "cosine", num_threads: int = 1) -> None:  # noqa: N803
        self.K = K
        self.weighting = weighting
        self.num_threads = num_threads

    def _fit(self, history: History) -> None:
        from implicit.nearest_neighbours import ItemItemRecommender

        m = history.matrix.astype(np.float32)
        if self.weighting == "cosine":
            m = m.copy()
            m.data = np.log1p(m.data)
            norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=0)).ravel())
            weighted = sp.csr_matrix(m @ sp.diags(1.0 / np.maximum(norms, 1e-12)))
        else:
            weighted = weighted_matrix(history, "bm25")
        weighted = weighted.astype(np.float64)  # all_pairs_knn takes doubles
        weighted.sort_indices()
        # scoring reads the (log) counts the customer has, as implicit's own kNN classes do
        self.user_items_ = weighted_matrix(history, "log")
        with single_threaded_blas():
            self.model_ = ItemItemRecommender(K=self.K, num_threads=self.num_threads)
            self.model_.fit(weighted, show_progress=False)

    def _top_items(self, users: np.ndarray, k: int, exclude: bool, batch: int = 2048) -> pd.DataFrame:
        """What implicit's ``recommend`` computes (the user's weighted items times the learned
        similarity), in dense blocks of users: its own batch call loops over users in Python."""
        sim = self.model_.similarity
        n_items = sim.shape[1]
        kk = min(k, n_items)
        parts = []
        for start in range(0, len(users), batch):
            b = users[start : start + batch]
            block = (self.user_items_[b] @ sim).toarray()
            if exclude:
                liked = self.history_.matrix[b].tocoo()
                block[liked.row, liked.col] = -np.inf
            top = np.argpartition(-block, kk - 1, axis=1)[:, :kk]
            score = np.take_along_axis(block, top, axis=1)
            row = np.repeat(np.arange(start, start + len(b)), kk)
            parts.append(pd.DataFrame({"row": row, "i": top.ravel().astype(np.int64), "score": score.ravel()}))
        if not parts:
            return pd.DataFrame({"row": [], "i": [], "score": []}).astype({"row": "int64", "i": "int64"})
        out = pd.concat(parts, ignore_index=True)
        return out[out["score"].to_numpy() > 0]  # no similarity at all: leave the slot to the fallback

    def item_state(self) -> dict[str, Any]:
        """The base's state and the item x item similarity (``K`` neighbours per item)."""
        return super().item_state() | {"item_similarity": sp.csr_matrix(self.model_.similarity)}

    def pair_scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """sum_j w[u, j] * sim[j, i] for arbitrary pairs (what ``recommend`` ranks by)."""
        sim = self.model_.similarity
        return gather_scores(users, items, lambda b: (self.user_items_[b] @ sim).toarray())

    def _reason(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        anchors = anchors_by_similarity(self.history_, users, items, self.model_.similarity)
        return anchor_reasons(self.history_, anchors, "often bought with {item}", super()._reason(users, items))
