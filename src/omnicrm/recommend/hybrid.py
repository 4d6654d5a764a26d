"""The hybrid: candidates from every generator, ordered by a learned ranker (LightGBM lambdarank).

How it learns without touching the future: ``fit`` at cutoff T first rewinds the history to
T - ``label_days`` (:func:`~omnicrm.recommend.history.truncate`), fits the generators there, builds
candidates and features for customers who bought in [T - label_days, T), labels a candidate 1 when
it was bought in that window, and trains the ranker. Then it refits the generators on the whole
history before T for serving. Everything it reads is before T; the evaluation's test window (at or
after T) is never seen.

Two rankers are trained, one per evaluation mode: ``all`` ranks the user's own items together with
new ones (labels: any purchase in the window), ``new`` ranks only items the customer never bought
(labels: first purchases), which is what ``recommend(..., exclude_purchased=True)`` serves.

Served from item state (:meth:`~omnicrm.recommend.base.Recommender.with_history`), the hybrid keeps
its rankers, the item statistics and categories, the ALS item factors (with their per-iteration
path) and the kNN similarity, and derives every per-customer part (features, candidates, ALS user
factors, repurchase scores, category shares) from the customers' purchases at scoring time.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from omnicrm import determinism
from omnicrm.errors import InputError
from omnicrm.recommend.base import Recommender
from omnicrm.recommend.candidates import (
    FEATURES,
    Components,
    add_ranks,
    features,
    fit_components,
    generate,
    user_components,
)
from omnicrm.recommend.collaborative import anchor_reasons, anchors_by_similarity
from omnicrm.recommend.history import History, in_sorted, truncate

MODES = {"all": False, "new": True}


class Hybrid(Recommender):
    """Learned blend of repurchase, popularity, category, ALS and item-kNN signals (see module doc)."""

    kind = "hybrid"
    _constraints = {
        "label_days": (int, 1),
        "n_candidates": (int, 1),
        "max_own": (int, 1),
        "recent_days": (int, 1),
        "half_life_days": ((int, float), 0.001),
        "n_estimators": (int, 1),
        "learning_rate": ((int, float), 1e-6),
        "num_leaves": (int, 2),
        "min_child_samples": (int, 1),
        "subsample": ((int, float), 0.01),
        "colsample_bytree": ((int, float), 0.01),
        "n_jobs": (int, 1),
        "random_state": (int, 0),
        "negatives": (int, 1),
    }
    #: ranker hyper-parameters that :meth:`set_ranker_params` changes without refitting the generators
    ranker_params: ClassVar[tuple[str, ...]] = (
        "n_estimators",
        "learning_rate",
        "num_leaves",
        "min_child_samples",
        "subsample",
        "colsample_bytree",
    )

    def __init__(
        self,
        label_days: int = 30,
        n_candidates: int = 50,
        max_own: int = 100,
        recent_days: int = 30,
        half_life_days: float = 90.0,
        als: dict[str, Any] | None = None,
        knn: dict[str, Any] | None = None,
        n_estimators: int = 200,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 50,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        negatives: int = 50,
        n_jobs: int = 1,
        random_state: int = 0,
    ) -> None:
        self.label_days = label_days
        self.n_candidates = n_candidates
        self.max_own = max_own
        self.recent_days = recent_days
        self.half_life_days = half_life_days
        self.als = als
        self.knn = knn
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.negatives = negatives
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _components(self, history: History) -> Components:
        return fit_components(
            history, dict(self.als or {}), dict(self.knn or {}), self.recent_days, self.half_life_days
        )

    def _fit(self, history: History) -> None:
        earlier, later = truncate(history, self.label_days)
        comps = self._components(earlier)
        has_history = np.diff(earlier.matrix.indptr) > 0
        users = np.unique(later["u"].to_numpy())
        users = users[has_history[users]]
        label_keys = np.unique(later["u"].to_numpy(np.int64) * history.n_items + later["i"].to_numpy(np.int64))
        self._train: dict[str, tuple[pd.DataFrame, np.ndarray, np.ndarray]] = {}
        self.train_stats_: dict[str, float] = {}
        # one candidate set and feature frame; the "new" mode's is the same minus bought items
        cand_all = generate(comps, users, self.n_candidates, False, self.max_own)
        x_all = features(comps, cand_all)
        for mode, exclude in MODES.items():
            sel = (x_all["ui_orders"].to_numpy() == 0) if exclude else np.ones(len(cand_all), dtype=bool)
            cand, x = cand_all[sel].reset_index(drop=True), x_all[sel].reset_index(drop=True)
            if exclude:
                add_ranks(x, cand["row"].to_numpy())
            keys = cand["u"].to_numpy(np.int64) * history.n_items + cand["i"].to_numpy(np.int64)
            y = in_sorted(keys, label_keys).astype(np.int32)
            row = cand["row"].to_numpy()
            pos_rows = np.flatnonzero(np.bincount(row, weights=y, minlength=len(users)) > 0)
            # groups without a positive teach a ranker nothing; per group all positives and a seeded
            # sample of ``negatives`` negatives (lambdarank's cost grows with the group size)
            rng = np.random.default_rng(self.random_state)
            draw = rng.random(len(row))
            neg_rank = pd.Series(np.where(y == 1, np.inf, draw)).groupby(row).rank(method="first").to_numpy()
            keep = in_sorted(row, pos_rows) & ((y == 1) | (neg_rank <= self.negatives))
            if not keep.any():
                raise InputError(
                    f"hybrid: no customer bought a candidate product ({mode} mode) in the {self.label_days} days "
                    f"before {history.cutoff:%Y-%m-%d}; too little history to train the ranker (lower label_days?)"
                )
            groups = np.bincount(row[keep], minlength=len(users))
            self._train[mode] = (x[keep].reset_index(drop=True), y[keep], groups[groups > 0])
            # how many window purchases the candidates contain (the ranker cannot find the others)
            n_true = len(label_keys) if not exclude else int(np.sum(~in_sorted(label_keys, earlier.pair_keys())))
            self.train_stats_[f"{mode}.candidate_recall"] = float(y.sum() / max(n_true, 1))
            self.train_stats_[f"{mode}.train_rows"] = float(keep.sum())
        self.components_ = self._components(history)
        self._serve_cache: dict[tuple, tuple[pd.DataFrame, pd.DataFrame]] = {}
        self._fit_rankers()

    def _fit_rankers(self) -> None:
        from lightgbm import LGBMRanker

        self.rankers_ = {}
        for mode, (x, y, groups) in self._train.items():
            ranker = LGBMRanker(
                objective="lambdarank",
                n_estimators=self.n_estimators,
                learning_rate=float(self.learning_rate),
                num_leaves=self.num_leaves,
                min_child_samples=self.min_child_samples,
                subsample=float(self.subsample),
                subsample_freq=1,
                colsample_bytree=float(self.colsample_bytree),
                random_state=self.random_state,
                **(determinism.LIGHTGBM | {"n_jobs": self.n_jobs}),
            )
            ranker.fit(x, y, group=groups)
            self.rankers_[mode] = ranker

    def set_ranker_params(self, **params: Any) -> Hybrid:
        """Change ranker hyper-parameters and retrain only the rankers (tuning reuses the candidates)."""
        unknown = set(params) - set(self.ranker_params)
        if unknown:
            raise ValueError(f"not ranker parameters: {sorted(unknown)}")
        for k, v in params.items():
            setattr(self, k, v)
        self._validate_params()
        self._fit_rankers()
        return self

    def _users(self, history: History) -> None:
        """The generators' and the statistics' user side from ``history``; rankers and item statistics stay."""
        super()._users(history)
        c = self.components_
        als, knn = c.als.with_history(history), c.knn.with_history(history)
        self.components_ = user_components(
            history, als, knn, c.recent_days, self.half_life_days, c.items, c.categories, c.item_cat
        )
        self._serve_cache = {}
        self.__dict__.pop("_train", None)  # the ranker's training frames are per customer

    def item_state(self) -> dict[str, Any]:
        """The base's state, the generators' item side (item statistics and categories, ALS item
        factors, kNN similarity) and each mode's ranker as LightGBM model text. Per-customer features
        and the training frames stay out; the rankers hold split thresholds, not customers."""
        c = self.components_
        cats = c.categories.to_numpy(dtype=object)
        named = cats[np.maximum(c.item_cat, 0)] if len(cats) else np.full(len(c.item_cat), None, dtype=object)
        items = c.items.assign(category=np.where(c.item_cat >= 0, named, None))
        items.insert(0, "product_id", np.asarray(self.history_.items, dtype=str))
        state = super().item_state() | {
            "item_stats": items.reset_index(drop=True),
            "als_item_factors": np.asarray(c.als.model_.item_factors),
            "knn_item_similarity": sp.csr_matrix(c.knn.model_.similarity),
            "train_stats": dict(self.train_stats_),
        }
        for mode, ranker in self.rankers_.items():
            state[f"ranker_{mode}"] = ranker.booster_.model_to_string()
        return state

    def feature_importance(self) -> pd.DataFrame:
        """Gain importance of each feature in each mode's ranker."""
        return pd.DataFrame(
            {mode: r.booster_.feature_importance("gain") for mode, r in self.rankers_.items()}, index=list(FEATURES)
        )

    def _top_items(self, users: np.ndarray, k: int, exclude: bool) -> pd.DataFrame:
        key = (exclude, len(users), hash(users.tobytes()))
        if key not in self._serve_cache:  # the evaluation scores the same customers under many ranker settings
            cand = generate(self.components_, users, self.n_candidates, exclude, self.max_own)
            self._serve_cache = {kk: v for kk, v in self._serve_cache.items() if kk[0] != exclude}
            self._serve_cache[key] = (cand, features(self.components_, cand))
        cand, x = self._serve_cache[key]
        score = self.rankers_["new" if exclude else "all"].predict(x)
        out = pd.DataFrame({"row": cand["row"].to_numpy(), "i": cand["i"].to_numpy(), "score": score})
        out = out.sort_values(["row", "score", "i"], ascending=[True, False, True], kind="stable")
        return out[out.groupby("row").cumcount().to_numpy() < k]

    def _reason(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Co-purchase anchor, else the user's top category, else recent or all-time popularity."""
        c = self.components_
        out = np.asarray(self.popular_.reasons[items], dtype=object).copy()
        recent = c.items["recent_rank"].to_numpy()[items] <= 100
        n_recent = c.items["i_buyers_recent"].to_numpy()[items].astype(np.int64).astype(str)
        out[recent] = np.char.add(
            np.char.add(f"popular in the last {c.recent_days} days (", n_recent[recent]), " customers)"
        )
        if len(c.categories):
            ic = c.item_cat[items]
            top = (ic >= 0) & (c.user_top_category[users] == ic)
            names = c.categories.to_numpy()[np.maximum(ic, 0)].astype(str)
            out[top] = np.char.add(np.char.add("popular in your top category (", names[top]), ")")
        anchors = anchors_by_similarity(self.history_, users, items, c.knn.model_.similarity)
        return anchor_reasons(self.history_, anchors, "often bought with {item}", out)

    def __getstate__(self) -> dict[str, Any]:
        # training frames and the serving cache are large and only needed while tuning
        state = self.__dict__.copy()
        state.pop("_train", None)
        state["_serve_cache"] = {}
        return state
