"""Purchase history before a cutoff, indexed for recommenders.

Every recommender is fitted on a :class:`History` built by :func:`build_history`, which keeps only
purchase lines with ``ts < cutoff`` -- the point-in-time law is enforced here, once, whatever frame
the caller passes in (a test appends future purchases and checks that nothing changes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import duckdb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from omnicrm.errors import InputError

#: Columns of the purchase frame every recommender is fitted on (one row per purchase line).
PURCHASE_COLUMNS = ("customer_id", "product_id", "ts", "order_id", "quantity", "amount")
#: Columns of the optional item frame (products table): category and price level.
ITEM_COLUMNS = ("product_id", "category", "price")

DAY = np.timedelta64(1, "D")


def as_timestamp(value: date | datetime | pd.Timestamp) -> pd.Timestamp:
    """A naive UTC timestamp (the store's timestamps are UTC; DuckDB returns them naive)."""
    ts = pd.Timestamp(value)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def load_purchases(con: duckdb.DuckDBPyConnection, before: date | datetime | None = None) -> pd.DataFrame:
    """Purchase lines from the store (``ts < before`` when given), in :data:`PURCHASE_COLUMNS`."""
    where = "event_type = 'purchase' AND product_id IS NOT NULL AND customer_id IS NOT NULL"
    params: list = []
    if before is not None:
        where += " AND ts < ?"
        params.append(as_timestamp(before).to_pydatetime())
    frame = con.execute(
        f"""SELECT customer_id, product_id, ts, coalesce(order_id, event_id) AS order_id,
                   coalesce(quantity, 1.0) AS quantity, coalesce(amount, 0.0) AS amount
            FROM events WHERE {where}""",
        params,
    ).df()
    return frame


def load_items(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The products table's category and price (empty when the store has no product master)."""
    return con.execute("SELECT product_id, category, price FROM products").df()


@dataclass
class History:
    """Purchases before ``cutoff``, with integer ids for users and items.

    * ``users`` / ``items``: sorted customer and product ids; row ``u`` / column ``i`` of ``matrix``.
    * ``pairs``: one row per (u, i) bought: ``n_orders`` (distinct orders), ``quantity``,
      ``days_since_first`` / ``days_since_last`` (days before the cutoff).
    * ``lines``: one row per (u, i, order): ``u``, ``i``, ``age_days`` (days before the cutoff).
    * ``item_info``: per item ``category`` (NaN when unknown) and ``price`` (the products table's
      price, else the median unit price paid).
    * ``matrix``: users x items CSR of ``n_orders`` (float32), what implicit's models take.
    """

    cutoff: pd.Timestamp
    users: pd.Index
    items: pd.Index
    pairs: pd.DataFrame
    lines: pd.DataFrame
    item_info: pd.DataFrame
    matrix: sp.csr_matrix

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def pair_keys(self) -> np.ndarray:
        """``u * n_items + i`` for every bought pair (sorted; see :func:`in_sorted`)."""
        if getattr(self, "_pair_keys", None) is None:
            p = self.pairs
            self._pair_keys = np.sort(p["u"].to_numpy(np.int64) * self.n_items + p["i"].to_numpy(np.int64))
        return self._pair_keys


def in_sorted(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_keys)`` for an already sorted key array, by binary search (no re-sorting)."""
    if len(sorted_keys) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return sorted_keys[pos] == values


def _purchase_lines(
    purchases: pd.DataFrame, cutoff: date | datetime | pd.Timestamp
) -> tuple[pd.Timestamp, pd.DataFrame]:
    """The cutoff as a timestamp, and the purchase lines with ``ts < cutoff`` and both ids present."""
    missing = [c for c in PURCHASE_COLUMNS if c not in purchases.columns]
    if missing:
        raise InputError(f"purchase frame: missing column(s) {missing}; expected {list(PURCHASE_COLUMNS)}")
    t = as_timestamp(cutoff)
    ts = pd.to_datetime(purchases["ts"])
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    keep = (
        (ts < t).to_numpy() & purchases["customer_id"].notna().to_numpy() & purchases["product_id"].notna().to_numpy()
    )
    p = purchases.loc[keep, list(PURCHASE_COLUMNS)].assign(ts=ts[keep])
    if p.empty:
        raise InputError(f"no purchases before the cutoff {t:%Y-%m-%d}: nothing to fit a recommender on")
    return t, p


def _order_lines(t: pd.Timestamp, p: pd.DataFrame, users: pd.Index, item_ids: pd.Index) -> pd.DataFrame:
    """One line per (user, item, order) of the purchase lines ``p`` in the given id spaces."""
    u = users.get_indexer(p["customer_id"].astype(str))
    i = item_ids.get_indexer(p["product_id"].astype(str))
    order = pd.factorize(p["order_id"].astype(str))[0]
    age = (t - p["ts"]).to_numpy() / DAY

    raw = pd.DataFrame(
        {
            "u": u,
            "i": i,
            "order": order,
            "age_days": age,
            "quantity": p["quantity"].to_numpy(float),
            "amount": p["amount"].to_numpy(float),
        }
    )
    # one line per (user, item, order): a basket holding an item twice is one purchase of it
    return (
        raw.groupby(["u", "i", "order"], sort=True)
        .agg(age_days=("age_days", "min"), quantity=("quantity", "sum"), amount=("amount", "sum"))
        .reset_index()
    )


def build_history(
    purchases: pd.DataFrame, cutoff: date | datetime | pd.Timestamp, items: pd.DataFrame | None = None
) -> History:
    """Index the purchase lines with ``ts < cutoff`` (later rows are dropped here, never used)."""
    t, p = _purchase_lines(purchases, cutoff)
    users = pd.Index(np.sort(p["customer_id"].astype(str).unique()), name="customer_id")
    item_ids = pd.Index(np.sort(p["product_id"].astype(str).unique()), name="product_id")
    lines = _order_lines(t, p, users, item_ids)
    info = _item_info(item_ids, lines, items)
    return from_lines(t, users, item_ids, lines[["u", "i", "order", "age_days", "quantity"]], info)


def history_in(
    purchases: pd.DataFrame, cutoff: date | datetime | pd.Timestamp, items: pd.Index, item_info: pd.DataFrame
) -> History:
    """The purchase lines with ``ts < cutoff`` in a fixed product space: a fitted model's catalogue.

    What a registered recommender scores from (:meth:`Recommender.with_history
    <omnicrm.recommend.base.Recommender.with_history>`): products outside ``items`` are dropped (the
    model knows nothing of them), every customer with a purchase before ``cutoff`` is a user (one
    whose every product is new to the model has an empty row and gets the fallback ranking), and
    ``item_info`` is the model's own. On the purchases a model was fitted on, this is the history it
    was fitted on.

    Parameters
    ----------
    purchases
        Purchase lines with :data:`PURCHASE_COLUMNS`; rows at or after ``cutoff`` are ignored.
    cutoff
        Only purchases with ``ts < cutoff`` are read; ages are days before it.
    items, item_info
        The model's product ids (column order) and per-product category and price.

    Returns
    -------
    History
        The customers' history before ``cutoff`` in the model's product space.
    """
    t, p = _purchase_lines(purchases, cutoff)
    users = pd.Index(np.sort(p["customer_id"].astype(str).unique()), name="customer_id")
    known = items.get_indexer(p["product_id"].astype(str)) >= 0
    p = p[known]
    lines = _order_lines(t, p, users, items)
    return from_lines(t, users, items, lines[["u", "i", "order", "age_days", "quantity"]], item_info)


def empty_history(cutoff: pd.Timestamp, items: pd.Index, item_info: pd.DataFrame) -> History:
    """A history of no customers in the given product space (what a model without customers holds)."""
    lines = pd.DataFrame(
        {
            "u": np.array([], dtype=np.int64),
            "i": np.array([], dtype=np.int64),
            "order": np.array([], dtype=np.int64),
            "age_days": np.array([], dtype=float),
            "quantity": np.array([], dtype=float),
        }
    )
    return from_lines(cutoff, pd.Index([], dtype="str", name="customer_id"), items, lines, item_info)


def from_lines(
    cutoff: pd.Timestamp, users: pd.Index, items: pd.Index, lines: pd.DataFrame, item_info: pd.DataFrame
) -> History:
    """A :class:`History` from order lines (u, i, order, age_days, quantity) in a given id space."""
    pairs = (
        lines.groupby(["u", "i"], sort=True)
        .agg(
            n_orders=("order", "size"),
            quantity=("quantity", "sum"),
            days_since_first=("age_days", "max"),
            days_since_last=("age_days", "min"),
        )
        .reset_index()
    )
    matrix = sp.csr_matrix(
        (pairs["n_orders"].to_numpy(np.float32), (pairs["u"].to_numpy(), pairs["i"].to_numpy())),
        shape=(len(users), len(items)),
        dtype=np.float32,
    )
    matrix.sort_indices()
    return History(cutoff, users, items, pairs, lines.reset_index(drop=True), item_info, matrix)


def truncate(history: History, days: float) -> tuple[History, pd.DataFrame]:
    """The history as it stood ``days`` earlier (same id space), and the lines of those last ``days``.

    The hybrid trains its ranker on this split: candidates from the earlier history, labels from the
    lines after it -- all of them still before the real cutoff.
    """
    ln = history.lines
    recent = ln["age_days"].to_numpy() < days
    earlier = ln[~recent].assign(age_days=ln["age_days"].to_numpy()[~recent] - days)
    h = from_lines(history.cutoff - pd.Timedelta(days=days), history.users, history.items, earlier, history.item_info)
    later = ln[recent].assign(age_days=ln["age_days"].to_numpy()[recent] - days)  # negative: after the cutoff
    return h, later.reset_index(drop=True)


def _item_info(item_ids: pd.Index, lines: pd.DataFrame, items: pd.DataFrame | None) -> pd.DataFrame:
    """Category and price per item; the price falls back to the median unit price paid."""
    unit = lines["amount"] / lines["quantity"].where(lines["quantity"] > 0)
    paid = unit.groupby(lines["i"]).median().reindex(range(len(item_ids)))
    info = pd.DataFrame(
        {"category": pd.Series(np.nan, index=range(len(item_ids)), dtype="str"), "price": paid.to_numpy()}
    )
    if items is not None and len(items):
        master = items.assign(product_id=items["product_id"].astype(str)).drop_duplicates("product_id")
        master = master.set_index("product_id").reindex(item_ids)
        if "category" in master:
            info["category"] = master["category"].astype("str").to_numpy()
        if "price" in master:
            price = master["price"].to_numpy(float)
            info["price"] = np.where(np.isfinite(price), price, info["price"].to_numpy())
    return info
