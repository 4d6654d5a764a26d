"""Product recommendations per customer: baselines, implicit-feedback CF and a learned hybrid.

Every method follows one contract (:class:`~omnicrm.recommend.base.Recommender`): fit on the purchase
history before a cutoff, then ``recommend(customers, k, exclude_purchased=...)`` returns
(customer_id, rank, product_id, score, reason). :data:`METHODS` maps a config's ``kind`` to its class.
:class:`~omnicrm.recommend.serve.ServedRecommender` is the registrable form: item-side state only,
scoring any customers' purchase history without a refit.
"""

from omnicrm.recommend.base import OUTPUT_COLUMNS, NotServableError, Recommender
from omnicrm.recommend.baselines import Popularity, RecentPopularity, Repurchase
from omnicrm.recommend.collaborative import ALS, BPR, ItemKNN
from omnicrm.recommend.history import History, build_history, history_in, load_items, load_purchases
from omnicrm.recommend.hybrid import Hybrid
from omnicrm.recommend.metrics import ranking_metrics
from omnicrm.recommend.serve import ServedRecommender

METHODS: dict[str, type[Recommender]] = {
    cls.kind: cls for cls in (Popularity, RecentPopularity, Repurchase, ALS, BPR, ItemKNN, Hybrid)
}

__all__ = [
    "ALS",
    "BPR",
    "METHODS",
    "OUTPUT_COLUMNS",
    "History",
    "Hybrid",
    "ItemKNN",
    "NotServableError",
    "Popularity",
    "RecentPopularity",
    "Recommender",
    "Repurchase",
    "ServedRecommender",
    "build_history",
    "history_in",
    "load_items",
    "load_purchases",
    "ranking_metrics",
]
