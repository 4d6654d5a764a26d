"""Drift and sanity checks of a scoring run against the previous one, and against each model's training.

* **Profiles.** Each run stores, per feature and per score, the shares of its values in quantile bins
  (numeric: ``bins`` bins between the run's own quantiles, plus one for missing values; text: the
  share of each value, missing included). The next run bins its values on *those* edges.
* **PSI** (population stability index): ``sum((a - e) * ln(a / e))`` over the bins, ``e`` the
  previous shares and ``a`` the current ones, both floored at 1e-4 so an empty bin stays finite
  (Siddiqi, *Credit Risk Scorecards*, 2006; Yurdakul, "Statistical properties of the population
  stability index", 2018).
* **Population change**: ``|n - n_prev| / n_prev`` of the customers in the store.
* **Changed next-best actions**: among customers in both runs, the share whose first action
  (action, channel, product, or none) differs.
* **Inputs outside the training range**: per model and feature, the rows whose value lies below the
  smallest or above the largest value the model saw in training. The registered models do not log
  their training ranges; LightGBM keeps them in every booster it fits (``feature_infos``: the
  minimum and maximum of each numeric feature in the training data), so the ranges are read from the
  boosters inside each model (:func:`training_ranges`). Several boosters in one model (uplift
  meta-learners) give the widest range; a feature no booster saw is not checked.

:func:`drift_table` turns the measurements into one table (check, subject, value, threshold,
breach) from the thresholds of :class:`omnicrm.score.config.Drift`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

#: floor of a bin share in the PSI (an empty bin would make it infinite)
EPS = 1e-4
MISSING = "__missing__"


def _numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)


def profile(values: pd.Series, bins: int) -> dict[str, Any]:
    """The distribution of one column: numeric quantile bins (+ missing) or text value shares.

    Parameters
    ----------
    values : Series
        One feature or score over the customers of the run.
    bins : int
        Number of quantile bins of a numeric column (fewer when values repeat).

    Returns
    -------
    dict
        ``{"kind": "numeric", "edges": [...], "shares": [...]}`` (``len(edges) + 2`` shares: the bins,
        then missing) or ``{"kind": "text", "shares": {value: share}}``.
    """
    if _numeric(values):
        x = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
        finite = x[np.isfinite(x)]
        if len(finite):
            qs = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
            edges = np.unique(qs)
        else:
            edges = np.array([])
        return {"kind": "numeric", "edges": edges.tolist(), "shares": numeric_shares(x, edges).tolist()}
    return {"kind": "text", "shares": text_shares(values)}


def numeric_shares(x: np.ndarray, edges: Iterable[float]) -> np.ndarray:
    """Shares of ``x`` in the bins cut at ``edges`` (a value equal to an edge goes right), then missing."""
    edges = np.asarray(list(edges), dtype="float64")
    n = len(x)
    finite = np.isfinite(x)
    counts = np.bincount(np.searchsorted(edges, x[finite], side="right"), minlength=len(edges) + 1)
    out = np.append(counts, (~finite).sum()).astype("float64")
    return out / n if n else out


def text_shares(values: pd.Series) -> dict[str, float]:
    """Share of each value of a text column, missing as :data:`MISSING`."""
    if not len(values):
        return {}
    s = values.astype(object).where(values.notna(), MISSING).astype(str)
    shares = s.value_counts(normalize=True, sort=False)
    return {str(k): float(v) for k, v in sorted(shares.items())}


def psi(expected: Iterable[float], actual: Iterable[float]) -> float:
    """Population stability index of two share vectors over the same bins (see the module docstring)."""
    e = np.maximum(np.asarray(list(expected), dtype="float64"), EPS)
    a = np.maximum(np.asarray(list(actual), dtype="float64"), EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_against(previous: Mapping[str, Any], values: pd.Series) -> float | None:
    """PSI of ``values`` against a previous run's profile of the same column (``None``: kinds differ)."""
    if previous.get("kind") == "numeric":
        if not _numeric(values):
            return None
        x = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
        return psi(previous["shares"], numeric_shares(x, previous["edges"]))
    if _numeric(values):
        return None
    prev = dict(previous["shares"])
    cur = text_shares(values)
    keys = sorted(set(prev) | set(cur))
    return psi([prev.get(k, 0.0) for k in keys], [cur.get(k, 0.0) for k in keys])


def population_change(customers: int, previous: int) -> float:
    """Relative change of the number of customers, ``|n - n_prev| / n_prev``."""
    return abs(customers - previous) / previous if previous else float(customers > 0)


def first_actions(nba: pd.DataFrame) -> pd.Series:
    """Each customer's first next-best action as ``action|channel|product`` (index: customer_id)."""
    if nba.empty:
        return pd.Series(dtype=object)
    first = nba.sort_values(["customer_id", "rank"]).drop_duplicates("customer_id")
    key = (
        first["action"].astype(str)
        + "|"
        + first["channel"].astype(str)
        + "|"
        + first["product_id"].astype(object).where(first["product_id"].notna(), "").astype(str)
    )
    return pd.Series(key.to_numpy(), index=first["customer_id"].to_numpy())


def nba_changed(previous: pd.Series, current: pd.Series, customers: Iterable[str]) -> float:
    """Share of ``customers`` whose first action changed (no action counts as one value)."""
    ids = pd.Index(list(customers), dtype=object)
    if not len(ids):
        return 0.0
    before = previous.reindex(ids).fillna("none")
    now = current.reindex(ids).fillna("none")
    return float((before.to_numpy() != now.to_numpy()).mean())


# --- training ranges ----------------------------------------------------------------------------------


def training_ranges(model: Any, max_depth: int = 5) -> dict[str, tuple[float, float]]:
    """Per feature, the smallest and largest value the LightGBM boosters inside ``model`` were fitted on.

    Walks the model's attributes (objects, dicts, lists; ``max_depth`` levels) for LightGBM
    estimators and boosters and reads each booster's ``feature_infos`` (see the module docstring).
    Categorical features and features a booster never split on (``none``) have no range.

    Parameters
    ----------
    model : object
        A registered model object (a task model, an effect model).
    max_depth : int
        How deep to look.

    Returns
    -------
    dict of str to (float, float)
        The widest range over the boosters found; empty when there is no booster.
    """
    import lightgbm as lgb

    ranges: dict[str, tuple[float, float]] = {}
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        if depth > max_depth or id(obj) in seen or obj is None or isinstance(obj, str | bytes | int | float):
            return
        seen.add(id(obj))
        booster = None
        if isinstance(obj, lgb.Booster):
            booster = obj
        elif isinstance(obj, lgb.LGBMModel):
            booster = getattr(obj, "_Booster", None)
        if booster is not None:
            for name, info in booster.dump_model(num_iteration=0).get("feature_infos", {}).items():
                lo, hi = info.get("min_value"), info.get("max_value")
                if info.get("values") or lo is None or hi is None:
                    continue  # categorical: a list of values, no range
                old = ranges.get(name)
                ranges[name] = (float(lo), float(hi)) if old is None else (min(old[0], lo), max(old[1], hi))
            return
        if isinstance(obj, dict):
            children = list(obj.values())
        elif isinstance(obj, list | tuple):
            children = list(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, pd.DataFrame | pd.Series | np.ndarray | type):
            children = list(vars(obj).values())
        else:
            return
        for child in children:
            visit(child, depth + 1)

    visit(model, 0)
    return ranges


def out_of_range(frame: pd.DataFrame, ranges: Mapping[str, tuple[float, float]]) -> dict[str, int]:
    """Per feature of ``ranges`` present in ``frame``: rows below its minimum or above its maximum."""
    counts = {}
    for name, (lo, hi) in ranges.items():
        if name not in frame.columns or not _numeric(frame[name]):
            continue
        x = pd.to_numeric(frame[name], errors="coerce").astype("float64").to_numpy()
        with np.errstate(invalid="ignore"):
            counts[name] = int(((x < lo) | (x > hi)).sum())
    return counts


# --- the table of checks ------------------------------------------------------------------------------

COLUMNS = ["check", "subject", "value", "threshold", "breach"]


def drift_table(
    thresholds: Any,
    *,
    feature_psi: Mapping[str, float],
    score_psi: Mapping[str, float],
    population: float | None,
    nba: float | None,
    outside: Mapping[tuple[str, str], tuple[int, int]],
) -> pd.DataFrame:
    """One row per measurement: ``check, subject, value, threshold, breach`` (value above threshold).

    Parameters
    ----------
    thresholds : Drift
        The config's thresholds.
    feature_psi, score_psi : mapping of str to float
        PSI per feature and per score (empty without a previous run).
    population : float, optional
        Relative change of the customers in the store (``None`` without a previous run).
    nba : float, optional
        Share of customers whose first next-best action changed (``None``: no lists to compare).
    outside : mapping of (model, feature) to (rows outside, rows scored)
        Inputs outside the training range.

    Returns
    -------
    DataFrame
        Sorted by check, then by value (largest first).
    """
    rows: list[tuple[str, str, float, float]] = []
    rows += [("feature_psi", k, v, thresholds.feature_psi) for k, v in feature_psi.items()]
    rows += [("score_psi", k, v, thresholds.score_psi) for k, v in score_psi.items()]
    if population is not None:
        rows.append(("population_change", "customers", population, thresholds.population_change))
    if nba is not None:
        rows.append(("nba_changed", "first action", nba, thresholds.nba_changed))
    for (model, feature), (n_out, n) in outside.items():
        rows.append(("out_of_range", f"{model}:{feature}", n_out / n if n else 0.0, thresholds.out_of_range))
    table = pd.DataFrame(rows, columns=COLUMNS[:4])
    table["breach"] = table["value"] > table["threshold"]
    order = {
        c: i for i, c in enumerate(["population_change", "nba_changed", "feature_psi", "score_psi", "out_of_range"])
    }
    table = table.assign(_o=table["check"].map(order), _v=-table["value"])
    return table.sort_values(["_o", "_v", "subject"]).drop(columns=["_o", "_v"]).reset_index(drop=True)


def drift_figure(table: pd.DataFrame, top: int = 30) -> Any:
    """A bar chart of the largest value of each check relative to its threshold (1 = at the threshold).

    Parameters
    ----------
    table : DataFrame
        :func:`drift_table`'s result.
    top : int
        How many measurements to show (the largest ratios).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    t = table.assign(ratio=table["value"] / table["threshold"]).nlargest(top, "ratio").iloc[::-1]
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.28 * len(t) + 1)))
    colors = ["#c0392b" if b else "#2c7fb8" for b in t["breach"]]
    ax.barh([f"{c}: {s}" for c, s in zip(t["check"], t["subject"], strict=True)], t["ratio"], color=colors)
    ax.axvline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_xlabel("value / threshold (red: breach)")
    ax.set_title("drift against the previous run and the training ranges")
    fig.tight_layout()
    return fig
