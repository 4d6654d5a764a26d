"""The registrable recommender: item-side state only, customers' purchases in, top-k lists out.

:class:`ServedRecommender` is what ``omnicrm recommend`` registers in MLflow (through
``omnicrm.tracking``, as ``omnicrm-<dataset>-recommend``) and what ``omnicrm recommend --model
champion`` loads. It wraps a fitted :class:`~omnicrm.recommend.base.Recommender` stripped of every
customer (:meth:`~omnicrm.recommend.base.Recommender.without_customers`): no customer id, purchase,
user factor or per-customer score is in it, only what the fit learned about products.

Its :meth:`ServedRecommender.predict_frame` follows the contract of every registered omnicrm model,
a frame in and a frame out: the purchase lines of the customers to score (the columns a fit reads,
:data:`~omnicrm.recommend.history.PURCHASE_COLUMNS`; lines at or after ``as_of`` are ignored), and
up to ``k`` rows ``(customer_id, rank, product_id, score, reason)`` per customer with a purchase
before ``as_of``. The customers' side of the model is derived from those purchases at scoring time;
on the purchases the model was fitted on, the lists equal those of the fitted model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from omnicrm.recommend.base import Recommender
from omnicrm.recommend.history import PURCHASE_COLUMNS, as_timestamp, history_in


@dataclass
class ServedRecommender:
    """A recommender without customers, with the serving defaults of its config.

    Attributes
    ----------
    model
        The fitted recommender, item-side state only.
    method
        The method's name in the config (e.g. ``hybrid``).
    k, exclude_purchased
        Defaults of :meth:`predict_frame`: list length and whether bought products are left out.
    meta
        Where the model came from (fit cutoff, data fingerprint, config).
    """

    model: Recommender
    method: str
    k: int
    exclude_purchased: bool
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_fitted(
        cls, model: Recommender, method: str, k: int, exclude_purchased: bool, meta: dict[str, Any] | None = None
    ) -> ServedRecommender:
        """Strip a fitted recommender of its customers (:class:`NotServableError` if its method cannot be)."""
        return cls(model.without_customers(), method, k, exclude_purchased, dict(meta or {}))

    @property
    def fit_cutoff(self) -> date:
        """The date the model was fitted at (its item-side state read purchases before it)."""
        return self.model.fit_cutoff.date()

    @property
    def products(self) -> pd.Index:
        """The products the model can recommend."""
        return self.model.history_.items

    def predict_frame(
        self,
        purchases: pd.DataFrame,
        as_of: str | date | datetime | None = None,
        k: int | None = None,
        exclude_purchased: bool | None = None,
    ) -> pd.DataFrame:
        """Top-``k`` rows for every customer with a purchase before ``as_of`` in ``purchases``.

        Parameters
        ----------
        purchases
            Purchase lines with :data:`~omnicrm.recommend.history.PURCHASE_COLUMNS`.
        as_of
            Scoring date: only lines with ``ts < as_of`` are read, and ages (recency, decay) are
            counted back from it. Default: the fit cutoff.
        k, exclude_purchased
            Default: the values the model was registered with.

        Returns
        -------
        pandas.DataFrame
            ``customer_id, rank, product_id, score, reason`` (customers sorted by id, ranks 1..k).
        """
        when = as_timestamp(self.model.fit_cutoff if as_of in (None, "") else as_of)
        history = history_in(purchases, when, self.products, self.model.history_.item_info)
        scored = self.model.with_history(history)
        k = self.k if k is None else int(k)
        exclude = self.exclude_purchased if exclude_purchased is None else bool(exclude_purchased)
        return scored.recommend(history.users, k, exclude_purchased=exclude)

    def example_purchases(self, customers: int = 2, lines: int = 3) -> pd.DataFrame:
        """A made-up purchase frame for the registry's input example.

        Invented customer ids, real product ids, dates before the fit cutoff: a real customer's
        purchases must not be logged.
        """
        n = min(lines, len(self.products))
        ids = np.repeat([f"example-customer-{c + 1}" for c in range(customers)], n)
        products = np.tile(np.asarray(self.products[:n], dtype=object), customers)
        days = np.tile(np.arange(1, n + 1), customers)
        ts = self.model.fit_cutoff - pd.to_timedelta(days * 7, unit="D")
        frame = pd.DataFrame(
            {
                "customer_id": ids.astype(object),
                "product_id": products,
                "ts": ts.astype("datetime64[us]"),
                "order_id": [f"example-order-{j}" for j in range(len(ids))],
                "quantity": np.ones(len(ids)),
                "amount": np.full(len(ids), 10.0),
            }
        )
        return frame[list(PURCHASE_COLUMNS)]

    def params(self) -> dict[str, Any]:
        """The inference parameters and their defaults (declared in the registered model's signature)."""
        return {
            "as_of": f"{self.fit_cutoff:%Y-%m-%d}",
            "k": int(self.k),
            "exclude_purchased": bool(self.exclude_purchased),
        }
