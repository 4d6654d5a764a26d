"""Connected components over link edges, guarded against giant components.

A single wrong or over-shared key (a household landline, a shop's own phone typed in for walk-in
customers, a placeholder e-mail) can chain thousands of records into one "customer". After the
first pass, any component larger than ``max_component_size`` is clustered again from its strong
edges only (score >= ``strict_threshold``: exact e-mail/card links and near-certain Splink links);
if it is still too large, from exact e-mail/card links only. All of it is sparse-graph work in
SciPy, not a Python loop over records.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def _components(n: int, l: np.ndarray, r: np.ndarray) -> np.ndarray:
    g = coo_matrix((np.ones(len(l), dtype=np.int8), (l, r)), shape=(n, n))
    return connected_components(g, directed=False)[1]


def cluster(n: int, edges: pd.DataFrame, max_component_size: int, strict_threshold: float) -> pd.DataFrame:
    """Label each of ``n`` records (ids ``0..n-1``) with a component.

    Returns
    -------
    DataFrame with ``rid``, ``component`` (int), ``rule`` (the rule of the record's strongest kept
    edge, or ``"singleton"``), ``score`` and ``guarded`` (True where the giant-component guard
    re-clustered the record).
    """
    l = edges["l"].to_numpy(dtype=np.int64)
    r = edges["r"].to_numpy(dtype=np.int64)
    score = edges["score"].to_numpy(dtype=np.float64)
    rule = edges["rule"].to_numpy(dtype=object)
    keep = np.ones(len(edges), dtype=bool)
    labels = _components(n, l, r)
    guarded = np.zeros(n, dtype=bool)
    exact = np.isin(rule, ["email", "card"])
    for level in (score >= strict_threshold, exact):
        sizes = np.bincount(labels, minlength=n)
        big = sizes[labels] > max_component_size
        if not big.any():
            break
        guarded |= big
        # inside oversized components, keep only edges that pass this level
        in_big = big[l]
        keep &= ~in_big | level
        labels = _components(n, l[keep], r[keep])
    # strongest kept edge per record -> its rule and score
    kl, kr, ks, kru = l[keep], r[keep], score[keep], rule[keep]
    best = pd.DataFrame(
        {"rid": np.concatenate([kl, kr]), "score": np.concatenate([ks, ks]), "rule": np.concatenate([kru, kru])}
    )
    best = best.sort_values(["rid", "score"], ascending=[True, False]).drop_duplicates("rid")
    out = pd.DataFrame({"rid": np.arange(n), "component": labels, "guarded": guarded})
    out = out.merge(best, on="rid", how="left")
    out["rule"] = out["rule"].fillna("singleton")
    return out
