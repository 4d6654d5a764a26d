"""Top-k ranking metrics with binary relevance, vectorised over customers.

For each evaluated customer (one with at least one true item), with ``hits`` the relevant items among
the top ``k`` recommendations and ``n`` the number of true items:

* precision@k = hits / k;  recall@k = hits / n;  hit rate@k = 1 if hits > 0;
* NDCG@k = sum over relevant ranks r of 1/log2(r + 1), divided by the same sum for an ideal list
  (ranks 1..min(n, k));
* MAP@k = (1 / min(n, k)) * sum over relevant ranks r of precision@r.

Customers without recommendations count as zeros. Coverage = distinct products recommended (top k, to
the evaluated customers) / catalogue size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("precision", "recall", "ndcg", "map", "hit_rate", "coverage")


def ranking_metrics(recs: pd.DataFrame, truth: pd.DataFrame, k: int, catalogue_size: int) -> dict[str, float]:
    """Mean metrics at ``k`` over the customers in ``truth`` (customer_id, product_id).

    ``recs`` has customer_id, rank, product_id; only ranks <= k are read.
    """
    truth = truth[["customer_id", "product_id"]].drop_duplicates()
    customers = pd.Index(truth["customer_id"].unique())
    n_cust = len(customers)
    if n_cust == 0:
        return {f"{m}_at_{k}": float("nan") for m in METRICS} | {"customers": 0}
    n_true = truth.groupby("customer_id").size().reindex(customers).to_numpy()

    top = recs.loc[recs["rank"] <= k, ["customer_id", "rank", "product_id"]]
    top = top[top["customer_id"].isin(customers)]
    hit = top.merge(truth.assign(_hit=True), on=["customer_id", "product_id"], how="left")["_hit"]
    top = top.assign(hit=hit.fillna(False).astype(bool).to_numpy()).sort_values(["customer_id", "rank"])
    pos = customers.get_indexer(top["customer_id"])
    h = top["hit"].to_numpy()
    rank = top["rank"].to_numpy(float)
    cum = pd.Series(h.astype(int)).groupby(pos).cumsum().to_numpy()

    hits = np.bincount(pos, weights=h, minlength=n_cust)
    dcg = np.bincount(pos, weights=h / np.log2(rank + 1), minlength=n_cust)
    ideal_cum = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(1, k + 1) + 1))])
    idcg = ideal_cum[np.minimum(n_true, k)]
    ap = np.bincount(pos, weights=np.where(h, cum / rank, 0.0), minlength=n_cust) / np.minimum(n_true, k)

    return {
        f"precision_at_{k}": float(np.mean(hits / k)),
        f"recall_at_{k}": float(np.mean(hits / n_true)),
        f"ndcg_at_{k}": float(np.mean(dcg / idcg)),
        f"map_at_{k}": float(np.mean(ap)),
        f"hit_rate_at_{k}": float(np.mean(hits > 0)),
        f"coverage_at_{k}": float(top["product_id"].nunique() / max(catalogue_size, 1)),
        "customers": n_cust,
    }
