"""The one contract every recommender follows (in the spirit of implicit's ``RecommenderBase`` and
scikit-learn's estimators).

* ``__init__`` stores hyper-parameters as given; :meth:`Recommender.fit` validates them, builds the
  :class:`~omnicrm.recommend.history.History` (only purchases with ``ts < cutoff``) and sets the
  fitted state (attributes ending in ``_``).
* :meth:`Recommender.recommend` returns a frame with :data:`OUTPUT_COLUMNS`: up to ``k`` rows per
  requested customer, ranks ``1..k``, no duplicate products, a short human-readable ``reason``.
  With ``exclude_purchased=True`` no product the customer bought before the cutoff is returned.
* A subclass implements ``_fit(history)`` and ``_top_items(u, k, exclude)`` (its own ranked items per
  known user) and may override ``_reason``. Whatever it returns, the base class removes purchased
  items when asked to, and fills customers left with fewer than ``k`` items (unknown customers, short
  personal lists) from the method's fallback ranking -- global popularity unless the method is itself
  a popularity ranking -- so every customer gets ``k`` rows while the catalogue allows it.
* ``score`` is on the method's own scale; ``rank`` is the authoritative order.
* :meth:`Recommender.item_state` returns what the fitted model knows about *products* only (ids,
  rankings, item factors or similarities, a ranker's trees), for logging as an artifact. Nothing per
  customer is in it: customer ids, the customer x product matrix, user factors and per-customer
  scores are who-bought-what, and a refit at the same cutoff re-derives them. A subclass extends the
  base class's dict with its own item-side state.
* Serving without refitting: a fitted model splits into *item-side* state (learned from every
  customer's purchases, but about products: rankings, item factors, similarities, rankers) and
  *user-side* state (derived from one customer's own purchases: their rows of the history, their
  repurchase scores, their factors). :meth:`Recommender.with_history` returns a copy whose user side
  is derived from another history in the model's product space
  (:func:`~omnicrm.recommend.history.history_in`); :meth:`Recommender.without_customers` is that
  copy for a history of no customers, which is what a registered model holds. A subclass with
  user-side state extends :meth:`Recommender._users`; on the history it was fitted on, the derived
  user side equals the fitted one, so the copy recommends exactly what the fitted model does. A
  method whose user side cannot be derived that way sets ``servable`` to a reason (BPR).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from omnicrm import schema
from omnicrm.errors import ConfigError
from omnicrm.recommend.history import History, build_history, empty_history, in_sorted

OUTPUT_COLUMNS = tuple(schema.output_columns(schema.RECOMMENDATIONS))


def empty_output() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series([], dtype="str"),
            "rank": pd.Series([], dtype="int64"),
            "product_id": pd.Series([], dtype="str"),
            "score": pd.Series([], dtype="float64"),
            "reason": pd.Series([], dtype="str"),
        }
    )


class NotServableError(ConfigError):
    """A recommender whose user side cannot be derived from item state (see ``Recommender.servable``)."""


@dataclass(frozen=True)
class Ranking:
    """An item ranking shared by all users (popularity-type methods and the fallback)."""

    order: np.ndarray  # item indices, best first (every item exactly once)
    scores: np.ndarray  # score per item index
    reasons: np.ndarray  # reason text per item index


class Recommender:
    """Base class; see the module docstring for the contract."""

    #: name of the method in configs and tables
    kind: ClassVar[str] = "base"
    #: numeric hyper-parameters: {name: (allowed types, minimum or None)}
    _constraints: ClassVar[dict[str, tuple[Any, Any]]] = {}
    #: hyper-parameters with a fixed set of allowed values: {name: (value, ...)}
    _choices: ClassVar[dict[str, tuple[Any, ...]]] = {}
    #: ``True``, or why the method's user side cannot be derived from item state and a history
    servable: ClassVar[bool | str] = True

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}

    def _validate_params(self) -> None:
        """scikit-learn style checks: "The 'x' parameter must be ... Got ... instead."."""
        for name, (types, lo) in self._constraints.items():
            value = getattr(self, name)
            ok = isinstance(value, types) and not isinstance(value, bool)
            if ok and lo is not None and value is not None:
                ok = value >= lo
            if not ok:
                names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
                bound = f" >= {lo}" if lo is not None else ""
                raise ConfigError(
                    f"{type(self).__name__}: the '{name}' parameter must be a {names}{bound}. Got {value!r} instead."
                )
        for name, allowed in self._choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(
                    f"{type(self).__name__}: the '{name}' parameter must be one of {list(allowed)}. "
                    f"Got {value!r} instead."
                )

    # --- fitting ------------------------------------------------------------------------------
    def fit(
        self, purchases: pd.DataFrame, cutoff: date | datetime | pd.Timestamp, items: pd.DataFrame | None = None
    ) -> Recommender:
        """Fit on the purchase lines with ``ts < cutoff`` (any later row is ignored)."""
        self._validate_params()
        history = build_history(purchases, cutoff, items)
        self.fit_history(history)
        return self

    def fit_history(self, history: History) -> Recommender:
        """Fit on an already built history (lets the evaluation share one history between methods)."""
        self._validate_params()
        self.history_ = history
        self._pair_keys_ = history.pair_keys()
        self.fit_cutoff_ = history.cutoff
        buyers = np.bincount(history.pairs["i"].to_numpy(), minlength=history.n_items).astype(float)
        self.popular_ = popularity_ranking(buyers, "popular with all customers")
        self._fit(history)
        return self

    def _fit(self, history: History) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "history_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() first")

    # --- serving from item state ---------------------------------------------------------------
    def _users(self, history: History) -> None:
        """Set the user-side state for ``history`` (same product space); subclasses extend it.

        Only assigns attributes (never mutates objects shared with the model it was copied from).
        """
        self.history_ = history
        self._pair_keys_ = history.pair_keys()

    def _check_servable(self) -> None:
        if self.servable is not True:
            raise NotServableError(
                f"recommender '{self.kind}' cannot be served from item state: {self.servable}; "
                "register another method (popularity, recent_popularity, repurchase, als, item_knn, hybrid) "
                "or refit it where it is used"
            )

    def with_history(self, history: History) -> Recommender:
        """A copy that recommends to the customers of ``history`` with this model's item-side state.

        Parameters
        ----------
        history
            Purchases before some date in this model's product space (built by
            :func:`~omnicrm.recommend.history.history_in`).

        Returns
        -------
        Recommender
            A shallow copy sharing the item-side state; its user side is derived from ``history``.

        Raises
        ------
        NotServableError
            The method's user side cannot be derived from item state (``servable`` says why).
        """
        self._check_fitted()
        self._check_servable()
        if not history.items.equals(self.history_.items):
            raise ValueError("with_history: the history's products are not this model's (use history_in)")
        other = copy.copy(self)
        other._users(history)
        return other

    def without_customers(self) -> Recommender:
        """A copy holding item-side state only: no customer id, purchase or per-customer score."""
        h = self.history_
        return self.with_history(empty_history(h.cutoff, h.items, h.item_info))

    @property
    def fit_cutoff(self) -> pd.Timestamp:
        """The cutoff the model was fitted at: its item-side state read only purchases before it."""
        self._check_fitted()
        return self.fit_cutoff_

    # --- artifact -------------------------------------------------------------------------------
    def item_state(self) -> dict[str, Any]:
        """The fitted model's item-side state: nothing per customer (see the module docstring).

        Values are numpy arrays with one entry (or row) per product, in the order of ``items``,
        scipy sparse product x product matrices, DataFrames with one row per product, text, or a
        JSON-able dict (``method``: kind, params, cutoff and sizes).
        """
        self._check_fitted()
        h = self.history_
        return {
            "method": {
                "kind": self.kind,
                "params": self.get_params(),
                "cutoff": str(h.cutoff),
                "items": h.n_items,
                "customers": h.n_users,
                "customer_state": "not included: customer ids, purchases and user factors are re-derived by a refit",
            },
            "items": np.asarray(h.items, dtype=str),
            "popularity": self.popular_.scores,
        }

    # --- recommending ---------------------------------------------------------------------------
    def recommend(self, customers: Iterable[str], k: int = 10, exclude_purchased: bool = False) -> pd.DataFrame:
        """Top ``k`` products per customer as (customer_id, rank, product_id, score, reason)."""
        self._check_fitted()
        if not isinstance(k, int | np.integer) or k < 1:
            raise ConfigError(f"recommend: k must be a positive integer. Got {k!r} instead.")
        h = self.history_
        cust = pd.Index(pd.unique(pd.Series(list(customers), dtype="str")))
        if len(cust) == 0:
            return empty_output()
        slot_user = h.users.get_indexer(cust)  # -1: no history before the cutoff
        known = np.flatnonzero(slot_user >= 0)
        own = self._top_items(slot_user[known], k, exclude_purchased)
        own = own.assign(slot=known[own["row"].to_numpy()], fill=False)[["slot", "i", "score", "fill"]]
        own = own[np.isfinite(own["score"].to_numpy())]
        if exclude_purchased:
            own = own[~self._purchased(slot_user[own["slot"].to_numpy()], own["i"].to_numpy())]
        # equal scores are ordered by the method's tie-break rank (product index unless it says otherwise)
        own = own.assign(tie=self._tie_rank()[own["i"].to_numpy()])
        own = own.sort_values(["slot", "score", "tie"], ascending=[True, False, True], kind="stable")
        own = own.drop_duplicates(["slot", "i"])
        own = own[own.groupby("slot").cumcount().to_numpy() < k].drop(columns="tie")
        filled = self._fill(slot_user, own, k, exclude_purchased)
        out = pd.concat([own, filled], ignore_index=True).sort_values(["slot", "fill"], kind="stable")
        rank = out.groupby("slot").cumcount().to_numpy() + 1
        reasons = self._reasons(slot_user[out["slot"].to_numpy()], out["i"].to_numpy(), out["fill"].to_numpy())
        return pd.DataFrame(
            {
                "customer_id": pd.Series(cust[out["slot"].to_numpy()], dtype="str"),
                "rank": rank.astype("int64"),
                "product_id": pd.Series(h.items[out["i"].to_numpy()], dtype="str"),
                "score": out["score"].to_numpy(float),
                "reason": pd.Series(reasons, dtype="str"),
            }
        )

    def _top_items(self, users: np.ndarray, k: int, exclude: bool) -> pd.DataFrame:
        """The method's own ranked items: a frame (row = position in ``users``, i, score)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _tie_rank(self) -> np.ndarray:
        """Per product, its place among the method's own items of equal score (lower first): the product index."""
        return np.arange(self.history_.n_items)

    def _fallback(self) -> Ranking:
        """The ranking that fills short lists: global popularity."""
        return self.popular_

    def _purchased(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each (user, item) was bought before the cutoff (``user`` -1: never)."""
        keys = users.astype(np.int64) * self.history_.n_items + items.astype(np.int64)
        return (users >= 0) & in_sorted(keys, self._pair_keys_)

    def _fill(self, slot_user: np.ndarray, own: pd.DataFrame, k: int, exclude: bool) -> pd.DataFrame:
        """Top up every customer to ``k`` rows from the fallback ranking (vectorised, a few passes)."""
        n_items = self.history_.n_items
        ranking = self._fallback()
        have = np.bincount(own["slot"].to_numpy(), minlength=len(slot_user))
        own_keys = np.sort(own["slot"].to_numpy(np.int64) * n_items + own["i"].to_numpy(np.int64))
        parts = []
        need = np.maximum(k - have, 0)
        take = min(2 * k, n_items)
        while need.any():
            slots = np.flatnonzero(need)
            cand_i = np.tile(ranking.order[:take], len(slots))
            cand_s = np.repeat(slots, take)
            ok = ~in_sorted(cand_s.astype(np.int64) * n_items + cand_i, own_keys)
            if exclude:
                ok &= ~self._purchased(slot_user[cand_s], cand_i)
            cand_s, cand_i = cand_s[ok], cand_i[ok]
            pos = pd.Series(cand_s).groupby(cand_s).cumcount().to_numpy()
            keep = pos < need[cand_s]
            done = take >= n_items
            if not done:  # a customer still short gets a longer list next pass; rows are kept only when complete
                got = np.bincount(cand_s[keep], minlength=len(slot_user))
                short = (got < need) & (need > 0)
                keep &= ~short[cand_s]
                need = np.where(short, need, 0)
            else:
                need = np.zeros_like(need)
            parts.append(pd.DataFrame({"slot": cand_s[keep], "i": cand_i[keep]}))
            take = min(take * 4, n_items)
        if not parts:
            return pd.DataFrame({"slot": [], "i": [], "score": [], "fill": []}).astype(
                {"slot": "int64", "i": "int64", "score": "float64", "fill": "bool"}
            )
        f = pd.concat(parts, ignore_index=True)
        return f.assign(score=ranking.scores[f["i"].to_numpy()], fill=True)

    # --- reasons --------------------------------------------------------------------------------
    def _reasons(self, users: np.ndarray, items: np.ndarray, fill: np.ndarray) -> np.ndarray:
        """Bought-before items say so; fallback rows give the fallback's reason; others the method's."""
        out = np.empty(len(items), dtype=object)
        bought = self._purchased(users, items)
        out[bought] = repurchase_reasons(self.history_, users[bought], items[bought])
        fb = fill & ~bought
        out[fb] = self._fallback().reasons[items[fb]]
        rest = ~fill & ~bought
        if rest.any():
            out[rest] = self._reason(users[rest], items[rest])
        return out

    def _reason(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self._fallback().reasons[items]


def popularity_ranking(score: np.ndarray, label: str, unit: str = "customers") -> Ranking:
    """Items by ``score`` (descending, ties by item index) with "label (N customers)" reasons."""
    order = np.lexsort((np.arange(len(score)), -score))
    n = score.astype(np.int64).astype(str)
    reasons = np.char.add(np.char.add(f"{label} (", n), f" {unit})").astype(object)
    return Ranking(order, score.astype(float), reasons)


def repurchase_reasons(history: History, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """ "bought 3 times, last 20 days ago" for each bought (user, item)."""
    if len(users) == 0:
        return np.array([], dtype=object)
    p = history.pairs
    keys = p["u"].to_numpy(np.int64) * history.n_items + p["i"].to_numpy(np.int64)
    at = pd.Index(keys).get_indexer(users.astype(np.int64) * history.n_items + items.astype(np.int64))
    n = p["n_orders"].to_numpy()[at]
    days = np.floor(p["days_since_last"].to_numpy()[at]).astype(np.int64)
    times = np.where(n == 1, "once", np.char.add(n.astype(str), " times"))
    ago = np.where(
        days == 0, "less than a day ago", np.where(days == 1, "1 day ago", np.char.add(days.astype(str), " days ago"))
    )
    return np.char.add(np.char.add(np.char.add("bought ", times), ", last "), ago).astype(object)
