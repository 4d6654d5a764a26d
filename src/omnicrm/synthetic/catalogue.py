"""The product catalogue: SKUs with a category, a list price and a margin rate.

Prices follow the category (a log-normal around the category median, rounded to retail price
points such as 12.99 or 24.50); margins vary around the category's typical margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnicrm.synthetic.config import WorldConfig
from omnicrm.synthetic.formats import zero_pad
from omnicrm.synthetic.vocabulary import CATEGORIES


@dataclass(frozen=True)
class Catalogue:
    """Products ordered by category; within a category, by popularity (most popular first).

    Attributes
    ----------
    sku
        ``SKU-00001``-style codes.
    category
        Category index of each product (into ``CATEGORIES``).
    price_pence
        List price in pence.
    margin_pct
        Margin rate in hundredths (35 means 0.35).
    first, count
        Per category: index of its first product and number of products.
    return_rate
        Per category: probability that a sold line is returned.
    """

    sku: np.ndarray
    category: np.ndarray
    price_pence: np.ndarray
    margin_pct: np.ndarray
    first: np.ndarray
    count: np.ndarray
    return_rate: np.ndarray

    @property
    def category_names(self) -> np.ndarray:
        """Readable name of each category in use."""
        return np.asarray([c.name for c in CATEGORIES[: self.first.size]])


def make_catalogue(config: WorldConfig, rng: np.random.Generator) -> Catalogue:
    """Draw ``n_products`` products over the first ``n_categories`` categories.

    Every category gets at least one product; the rest are shared in proportion to popularity.
    """
    cats = CATEGORIES[: config.n_categories]
    k = len(cats)
    popularity = np.array([c.popularity for c in cats])
    extra = config.n_products - k
    count = 1 + np.floor(extra * popularity / popularity.sum()).astype(np.int64)
    count[np.argsort(-popularity, kind="stable")[: config.n_products - count.sum()]] += 1
    first = np.concatenate([[0], np.cumsum(count)[:-1]])
    category = np.repeat(np.arange(k), count)
    n = category.size

    median = np.array([c.median_price for c in cats])[category]
    spread = np.array([c.price_spread for c in cats])[category]
    price = median * rng.lognormal(0.0, spread, n)
    # retail price points: .99 below 20 pounds, .49/.99 up to 100, whole pounds above
    pence = np.where(
        price < 20,
        np.maximum(np.round(price) * 100 - 1, 49),
        np.where(price < 100, np.round(price * 2) * 50 - 1, np.round(price) * 100),
    ).astype(np.int64)
    margin = np.array([c.margin_rate for c in cats])[category] + rng.normal(0.0, 0.06, n)
    margin_pct = np.clip(np.round(margin * 100), 5, 80).astype(np.int64)
    sku = zero_pad(np.arange(n) + 1, 5, "SKU-")
    return_rate = np.array([c.return_rate for c in cats])
    return Catalogue(
        sku=sku,
        category=category,
        price_pence=pence,
        margin_pct=margin_pct,
        first=first,
        count=count,
        return_rate=return_rate,
    )


def pick_products(catalogue: Catalogue, category: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A product of each given category; popular products (low rank) are picked far more often."""
    rank = np.floor(catalogue.count[category] * rng.random(category.size) ** 2.5).astype(np.int64)
    return catalogue.first[category] + rank
