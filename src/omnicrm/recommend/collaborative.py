"""Collaborative filtering for implicit feedback, from the ``implicit`` library (ALS, BPR, item-item kNN).

Nothing here factorises a matrix by hand: these classes adapt implicit's models to the omnicrm
contract (customer/product ids, cutoff, reasons). Determinism: a fixed ``random_state`` and
``num_threads`` (BPR's parallel SGD is order-dependent, so 1 thread by default). implicit warns when
OpenBLAS runs its own thread pool (it slows ALS badly); models are built, fitted and queried inside
``threadpool_limits(1, "blas")``, which both avoids the slowdown and the warning.

Serving from item state (:meth:`~omnicrm.recommend.base.Recommender.with_history`):

* item-kNN: the similarity is item-side; a customer's scores are their own log-weighted purchases
  times it.
* ALS: implicit's ALS solves user factors with three conjugate-gradient steps per iteration, warm
  started from the previous iteration's factors, against the previous iteration's item factors. So
  a user's final factors are not the least-squares solution against the final item factors
  (implicit's ``recalculate_user``): on the small test world such recomputed factors changed 85% of
  the top-10 lists. Instead the fit keeps the item factors of every iteration (item-side state:
  ``iterations`` x products x ``factors`` floats) and :meth:`ALS.fold_in` replays the user half of
  each iteration for any customer from their own confidence row: the seeded initial factors, then the
  same solver against the same item factors. On the fitted history this reproduces the fitted user
  factors exactly. BM25 weights need two item-side statistics of the fitted matrix (the number of
  products and each product's length norm), kept as ``bm25_norm_``.
* BPR: its SGD samples (customer, bought, not bought) triples across every customer in one random
  stream, so a customer's factors depend on everyone's purchases: not servable from item state.
"""

from __future__ import annotations

import copy
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


BM25_K1 = 100.0
BM25_B = 0.8


def weighted_matrix(
    history: History,
    weighting: str,
    alpha: float = 1.0,
    bm25_k1: float = BM25_K1,
    bm25_b: float = BM25_B,
    bm25_norm: np.ndarray | None = None,
) -> sp.csr_matrix:
    """The user x item confidence matrix: order counts weighted by ``count``, ``log``, ``binary`` or ``bm25``.

    ``bm25_norm`` (each product's BM25 length norm in a fitted matrix, :func:`bm25_item_norm`) weighs
    the rows of ``history`` as if they were rows of that fitted matrix (serving); without it the
    norms come from ``history`` itself (fitting).
    """
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
    elif bm25_norm is not None:
        w = bm25_rows(m, bm25_norm, bm25_k1)
    else:  # bm25 weights each item's column (rows of the transposed matrix), as implicit's examples do
        w = sp.csr_matrix(bm25_weight(m.T.tocsr(), K1=bm25_k1, B=bm25_b).T, dtype=np.float32)
    w = (w * np.float32(alpha)).tocsr().astype(np.float32)
    w.sort_indices()
    return w


def bm25_item_norm(history: History, bm25_b: float = BM25_B) -> np.ndarray:
    """Each product's BM25 length norm in ``history``'s matrix, as implicit's ``bm25_weight`` computes it
    on the transposed (product x customer) matrix: ``(1 - B) + B * row_sum / mean(row_sums)``."""
    x = sp.coo_matrix(history.matrix.astype(np.float32).T.tocsr())
    row_sums = np.ravel(x.sum(axis=1))
    average_length = row_sums.mean()
    return (1.0 - bm25_b) + bm25_b * row_sums / average_length


def bm25_rows(m: sp.csr_matrix, length_norm: np.ndarray, bm25_k1: float = BM25_K1) -> sp.csr_matrix:
    """BM25 weights of the customer rows ``m`` given the products' length norms of a fitted matrix.

    implicit's ``bm25_weight`` on the transposed matrix, term for term: a customer's idf is
    ``log(products) - log1p(products the customer bought)`` (their own row), a product's length norm
    comes from the fitted matrix. Same operations in the same dtypes, so the same float32 weights.
    """
    n_items = float(m.shape[1])
    idf = np.log(n_items) - np.log1p(np.diff(m.indptr).astype(np.int64))
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    data = m.data * (bm25_k1 + 1.0) / (bm25_k1 * length_norm[m.indices] + m.data) * idf[rows]
    return sp.csr_matrix((data.astype(np.float32), m.indices.copy(), m.indptr.copy()), shape=m.shape)


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


def initial_factors(model, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """The user and item factors implicit's ``fit`` starts from: its seeded generator's first two draws.

    Row ``u`` of the user draw does not depend on how many users are drawn (the generator fills rows
    in order), so any customer index gets the start its row would have had in the fit.
    """
    from implicit.utils import check_random_state

    rng = check_random_state(model.random_state)
    users = rng.random((n_users, model.factors), dtype=model.dtype) * 0.01
    items = rng.random((n_items, model.factors), dtype=model.dtype) * 0.01
    return users, items


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

    def _fit(self, history: History) -> None:
        """implicit's fit, keeping the item factors each iteration's user step solved against."""
        self.bm25_norm_ = bm25_item_norm(history) if self.weighting == "bm25" else None
        self.user_items_ = weighted_matrix(history, self.weighting, self.alpha)
        after: list[np.ndarray] = []
        with single_threaded_blas():
            self.model_ = self._make()
            # called after each iteration's user and item steps: the item factors the next user step uses
            self.model_.fit(
                self.user_items_,
                show_progress=False,
                callback=lambda *_: after.append(np.array(self.model_.item_factors, copy=True)),
            )
        _, start = initial_factors(self.model_, history.n_users, history.n_items)
        self.item_path_ = [start, *after[:-1]]

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        """User factors of the customers ``user_items`` (confidence rows, this model's products).

        Replays the user half of every fitted iteration: row ``u`` starts where implicit's fit started
        user ``u`` and takes the same conjugate-gradient steps against the same item factors. For the
        fitted matrix the result equals the fitted user factors bit for bit.
        """
        factors, _ = initial_factors(self.model_, user_items.shape[0], 0)
        with single_threaded_blas():
            for item_factors in self.item_path_:
                self.model_.solver(
                    user_items, factors, item_factors, self.model_.regularization, num_threads=self.num_threads
                )
        return factors

    def _users(self, history: History) -> None:
        super()._users(history)
        self.user_items_ = weighted_matrix(history, self.weighting, self.alpha, bm25_norm=self.bm25_norm_)
        model = copy.copy(self.model_)
        model.user_factors = self.fold_in(self.user_items_)
        model._user_norms = model._XtX = None  # caches of the fitted user factors
        self.model_ = model

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
    servable = (
        "its user factors are learned by SGD on (customer, bought, not bought) triples sampled across every "
        "customer's purchases in one random stream, so they cannot be rebuilt from item factors and one "
        "customer's purchases"
    )
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

    def _users(self, history: History) -> None:
        super()._users(history)
        self.user_items_ = weighted_matrix(history, "log")

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
