"""The hybrid's candidates and features: which (customer, product) pairs to score, and what is known
about each pair at the cutoff (everything read from the :class:`History`, i.e. ``ts < cutoff``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from omnicrm.recommend.baselines import repurchase_scores
from omnicrm.recommend.collaborative import ALS, ItemKNN
from omnicrm.recommend.history import History, in_sorted

FEATURES = (
    "ui_orders",
    "ui_quantity",
    "ui_days_since_last",
    "ui_days_since_first",
    "ui_gap_ratio",
    "ui_decay",
    "ui_share",
    "u_orders",
    "u_items",
    "u_days_since_last",
    "u_days_since_first",
    "i_buyers",
    "i_buyers_recent",
    "i_buyers_7",
    "i_trend",
    "i_repeat_rate",
    "i_age_days",
    "i_price",
    "price_ratio",
    "als_score",
    "knn_score",
    "als_rank",
    "knn_rank",
    "pop_rank",
    "recent_rank",
    "cat_share",
    "cat_is_top",
)


@dataclass
class Components:
    """The fitted generators the hybrid blends, plus per-user and per-item statistics."""

    history: History
    als: ALS
    knn: ItemKNN
    recent_days: int
    repurchase: pd.DataFrame  # (u, i, score) decayed repurchase scores
    users: pd.DataFrame  # per user index
    items: pd.DataFrame  # per item index
    user_top_category: np.ndarray  # per user: index into categories (-1: none)
    user_cat_share: pd.Series  # index u * n_cat + c -> share of the user's lines
    categories: pd.Index  # known categories (empty when the store has none)
    item_cat: np.ndarray  # per item: index into categories (-1: unknown)


def fit_components(
    history: History, als_params: dict, knn_params: dict, recent_days: int, half_life_days: float
) -> Components:
    """Fit the generators on ``history`` and compute its per-item and per-user statistics."""
    als = ALS(**als_params).fit_history(history)
    knn = ItemKNN(**knn_params).fit_history(history)
    items = item_statistics(history, recent_days)
    cat_codes, categories = pd.factorize(history.item_info["category"], use_na_sentinel=True)
    return user_components(history, als, knn, recent_days, half_life_days, items, pd.Index(categories), cat_codes)


def item_statistics(history: History, recent_days: int) -> pd.DataFrame:
    """Per item: buyers overall / recently / last week, trend, repeat rate, age, price and popularity ranks."""
    ln = history.lines
    age = ln["age_days"].to_numpy()
    price = history.item_info["price"].to_numpy(float)
    p = history.pairs
    items = pd.DataFrame(index=pd.RangeIndex(history.n_items))
    items["i_buyers"] = np.bincount(p["i"], minlength=history.n_items).astype(float)

    def buyers(lo: float, hi: float) -> np.ndarray:
        sel = ln[(age >= lo) & (age < hi)].drop_duplicates(["u", "i"])
        return np.bincount(sel["i"], minlength=history.n_items).astype(float)

    items["i_buyers_recent"] = buyers(0, recent_days)
    items["i_buyers_7"] = buyers(0, 7)
    items["i_trend"] = (items["i_buyers_recent"] + 1) / (buyers(recent_days, 2 * recent_days) + 1)
    items["i_repeat_rate"] = np.bincount(p["i"], weights=(p["n_orders"] > 1), minlength=history.n_items) / np.maximum(
        items["i_buyers"].to_numpy(), 1
    )
    items["i_age_days"] = ln.groupby("i")["age_days"].max().reindex(items.index).to_numpy()
    items["i_price"] = price
    items["pop_rank"] = _rank_desc(items["i_buyers"].to_numpy())
    items["recent_rank"] = _rank_desc(items["i_buyers_recent"].to_numpy() + items["i_buyers"].to_numpy() * 1e-6)
    return items


def user_components(
    history: History,
    als: ALS,
    knn: ItemKNN,
    recent_days: int,
    half_life_days: float,
    items: pd.DataFrame,
    categories: pd.Index,
    item_cat: np.ndarray,
) -> Components:
    """The :class:`Components` of the customers of ``history`` around given item-side state.

    ``als`` and ``knn`` must already hold ``history``'s user side; ``items``, ``categories`` and
    ``item_cat`` are item-side (from the fitted history). Everything computed here is per customer,
    from their own purchases, so a served hybrid derives it at scoring time.
    """
    ln = history.lines
    # users: distinct orders, distinct items, days since first/last purchase, median price paid
    uo = ln.drop_duplicates(["u", "order"])
    users = pd.DataFrame(index=pd.RangeIndex(history.n_users))
    users["u_orders"] = uo.groupby("u").size().reindex(users.index, fill_value=0).to_numpy(float)
    users["u_items"] = np.diff(history.matrix.indptr).astype(float)
    users["u_days_since_last"] = ln.groupby("u")["age_days"].min().reindex(users.index).to_numpy()
    users["u_days_since_first"] = ln.groupby("u")["age_days"].max().reindex(users.index).to_numpy()
    price = history.item_info["price"].to_numpy(float)
    users["u_price"] = (
        pd.Series(price[ln["i"].to_numpy()]).groupby(ln["u"].to_numpy()).median().reindex(users.index).to_numpy()
    )

    # categories: the user's share of lines per category, and their top category
    n_cat = max(len(categories), 1)
    line_cat = item_cat[ln["i"].to_numpy()]
    known = line_cat >= 0
    key = ln["u"].to_numpy()[known].astype(np.int64) * n_cat + line_cat[known]
    counts = pd.Series(key).value_counts()
    totals = np.bincount(ln["u"].to_numpy()[known], minlength=history.n_users)
    share = counts / totals[(counts.index.to_numpy() // n_cat)]
    top = np.full(history.n_users, -1, dtype=np.int64)
    if len(counts):
        c = pd.DataFrame(
            {"u": counts.index.to_numpy() // n_cat, "c": counts.index.to_numpy() % n_cat, "n": counts.to_numpy()}
        ).sort_values(["u", "n", "c"], ascending=[True, False, True])
        first = c.drop_duplicates("u")
        top[first["u"].to_numpy()] = first["c"].to_numpy()
    return Components(
        history,
        als,
        knn,
        recent_days,
        repurchase_scores(history, half_life_days),
        users,
        items,
        top,
        share,
        categories,
        item_cat,
    )


def _rank_desc(x: np.ndarray) -> np.ndarray:
    order = np.lexsort((np.arange(len(x)), -x))
    r = np.empty(len(x), dtype=float)
    r[order] = np.arange(1, len(x) + 1)
    return r


def cf_candidates(comps: Components, users: np.ndarray, n: int) -> pd.DataFrame:
    """ALS and item-kNN top ``n`` new items per user: (row, i)."""
    return pd.concat([m._top_items(users, n, exclude=True)[["row", "i"]] for m in (comps.als, comps.knn)])


def generate(
    comps: Components, users: np.ndarray, n: int, exclude: bool, max_own: int, cf: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Candidate (row, u, i) pairs: the user's own items (unless excluded), ALS and kNN top ``n``,
    recent and all-time popular top ``n`` and the top ``n`` of the user's favourite category.

    With ``exclude`` the candidates are exactly those without it minus the user's bought items.
    """
    h = comps.history
    parts = []
    rows = np.arange(len(users))
    if not exclude:
        s = comps.repurchase
        r = pd.Index(users).get_indexer(s["u"])
        own = pd.DataFrame({"row": r, "i": s["i"].to_numpy(), "score": s["score"].to_numpy()})[r >= 0]
        own = own.sort_values(["row", "score"], ascending=[True, False], kind="stable")
        parts.append(own[own.groupby("row").cumcount().to_numpy() < max_own][["row", "i"]])
    parts.append(cf_candidates(comps, users, n) if cf is None else cf)
    for col in ("pop_rank", "recent_rank"):
        best = np.argsort(comps.items[col].to_numpy(), kind="stable")[:n]
        parts.append(pd.DataFrame({"row": np.repeat(rows, len(best)), "i": np.tile(best, len(rows))}))
    if len(comps.categories):
        cat = comps.item_cat
        ranked = np.argsort(comps.items["pop_rank"].to_numpy(), kind="stable")
        per_cat = pd.DataFrame({"i": ranked, "c": cat[ranked]})
        per_cat = per_cat[(per_cat["c"] >= 0) & (per_cat.groupby("c").cumcount().to_numpy() < n)]
        ucat = comps.user_top_category[users]
        lhs = pd.DataFrame({"row": rows, "c": ucat})
        parts.append(lhs.merge(per_cat, on="c")[["row", "i"]])
    cand = pd.concat(parts, ignore_index=True).drop_duplicates()
    cand = cand.assign(u=users[cand["row"].to_numpy()])
    if exclude:  # remove the user's bought items (popular lists include them)
        keys = cand["u"].to_numpy(np.int64) * h.n_items + cand["i"].to_numpy(np.int64)
        cand = cand[~in_sorted(keys, h.pair_keys())]
    return cand.sort_values(["row", "i"], kind="stable").reset_index(drop=True)


def add_ranks(f: pd.DataFrame, row: np.ndarray) -> None:
    """The CF scores' ranks within each user's candidates (set in place; depends on the candidate set)."""
    for col in ("als", "knn"):
        score = pd.Series(f[f"{col}_score"].to_numpy())
        f[f"{col}_rank"] = score.groupby(row).rank(ascending=False, method="first").to_numpy().astype("float32")


def features(comps: Components, cand: pd.DataFrame) -> pd.DataFrame:
    """One row of :data:`FEATURES` per candidate (row, u, i)."""
    h = comps.history
    u = cand["u"].to_numpy()
    i = cand["i"].to_numpy()
    keys = u.astype(np.int64) * h.n_items + i.astype(np.int64)
    p = h.pairs
    at = pd.Index(p["u"].to_numpy(np.int64) * h.n_items + p["i"].to_numpy(np.int64)).get_indexer(keys)
    bought = at >= 0
    f = pd.DataFrame(index=cand.index)

    def pair_col(values: np.ndarray, missing: float) -> np.ndarray:
        return np.where(bought, values[np.maximum(at, 0)], missing)

    f["ui_orders"] = pair_col(p["n_orders"].to_numpy(float), 0.0)
    f["ui_quantity"] = pair_col(p["quantity"].to_numpy(float), 0.0)
    f["ui_days_since_last"] = pair_col(p["days_since_last"].to_numpy(float), np.nan)
    f["ui_days_since_first"] = pair_col(p["days_since_first"].to_numpy(float), np.nan)
    span = f["ui_days_since_first"] - f["ui_days_since_last"]
    gap = span / (f["ui_orders"] - 1).where(f["ui_orders"] > 1)
    f["ui_gap_ratio"] = f["ui_days_since_last"] / gap.where(gap > 0)
    rep = comps.repurchase
    rat = pd.Index(rep["u"].to_numpy(np.int64) * h.n_items + rep["i"].to_numpy(np.int64)).get_indexer(keys)
    f["ui_decay"] = np.where(rat >= 0, rep["score"].to_numpy()[np.maximum(rat, 0)], 0.0)
    for col in ("u_orders", "u_items", "u_days_since_last", "u_days_since_first"):
        f[col] = comps.users[col].to_numpy()[u]
    f["ui_share"] = f["ui_orders"] / f["u_orders"].where(f["u_orders"] > 0)
    for col in (
        "i_buyers",
        "i_buyers_recent",
        "i_buyers_7",
        "i_trend",
        "i_repeat_rate",
        "i_age_days",
        "i_price",
        "pop_rank",
        "recent_rank",
    ):
        f[col] = comps.items[col].to_numpy()[i]
    f["price_ratio"] = f["i_price"] / comps.users["u_price"].to_numpy()[u]
    f["als_score"] = comps.als.pair_scores(u, i)
    f["knn_score"] = comps.knn.pair_scores(u, i)
    row = cand["row"].to_numpy()
    for col in ("als", "knn"):
        f[f"{col}_rank"] = (
            pd.Series(f[f"{col}_score"].to_numpy()).groupby(row).rank(ascending=False, method="first").to_numpy()
        )
    if len(comps.categories):
        n_cat = len(comps.categories)
        c = comps.item_cat[i]
        share = comps.user_cat_share.reindex(u.astype(np.int64) * n_cat + c).to_numpy()
        f["cat_share"] = np.where(c >= 0, np.nan_to_num(share, nan=0.0), np.nan)
        f["cat_is_top"] = np.where(c >= 0, (comps.user_top_category[u] == c).astype(float), np.nan)
    else:
        f["cat_share"] = np.nan
        f["cat_is_top"] = np.nan
    return f[list(FEATURES)].astype("float32")
