"""Time-split evaluation: tune every method on a validation window, then fit before the test cutoff and
score the next ``test_days``.

Windows (T = test cutoff, v = validation_days, d = test_days)::

    history ........ T-v ........ T ........ T+d
    validation: fit on ts < T-v, truth [T-v, T)    (hyper-parameters chosen here)
    test:       fit on ts < T,   truth [T, T+d)    (reported; never used for a choice)

Customers evaluated are those with purchases both before the cutoff and in the window. Two modes:
``all`` (truth = every product bought in the window; repeat purchases count) and ``new`` (products the
customer had never bought before the cutoff; bought ones are removed from both the truth and the
recommendations via ``exclude_purchased=True``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from omnicrm.progress import Progress, silent
from omnicrm.recommend.base import Recommender
from omnicrm.recommend.config import MethodSpec, RecommendConfig, build_method
from omnicrm.recommend.history import History, as_timestamp, build_history, in_sorted
from omnicrm.recommend.metrics import ranking_metrics

MODES = ("all", "new")


@dataclass
class Split:
    """History before ``cutoff`` and the truth in [cutoff, end) per mode."""

    name: str
    cutoff: pd.Timestamp
    end: pd.Timestamp
    history: History
    truth: dict[str, pd.DataFrame]

    def customers(self, mode: str) -> np.ndarray:
        return self.truth[mode]["customer_id"].unique()


def make_split(purchases: pd.DataFrame, items: pd.DataFrame | None, cutoff: Any, end: Any, name: str) -> Split:
    history = build_history(purchases, cutoff, items)
    t0, t1 = as_timestamp(cutoff), as_timestamp(end)
    ts = pd.to_datetime(purchases["ts"])
    win = purchases.loc[((ts >= t0) & (ts < t1)).to_numpy(), ["customer_id", "product_id"]].astype("str")
    win = win.drop_duplicates()
    win = win[win["customer_id"].isin(history.users)].reset_index(drop=True)
    u = history.users.get_indexer(win["customer_id"])
    i = history.items.get_indexer(win["product_id"])
    bought = (i >= 0) & in_sorted(u.astype(np.int64) * history.n_items + i, history.pair_keys())
    return Split(name, t0, t1, history, {"all": win, "new": win[~bought].reset_index(drop=True)})


def score(model: Recommender, split: Split, k: int) -> dict[str, dict[str, float]]:
    """Metrics per mode, with the time ``recommend`` took for that mode's customers."""
    out = {}
    for mode in MODES:
        customers = split.customers(mode)
        start = time.perf_counter()
        recs = model.recommend(customers, k, exclude_purchased=(mode == "new"))
        seconds = time.perf_counter() - start
        out[mode] = ranking_metrics(recs, split.truth[mode], k, split.history.n_items) | {"recommend_seconds": seconds}
    return out


def selection_value(metrics: dict[str, dict[str, float]], metric: str, k: int) -> float:
    """The tuning objective: the mean over both modes of ``metric`` at k."""
    return float(np.mean([metrics[m][f"{metric}_at_{k}"] for m in MODES]))


def resolve_inherit(spec: MethodSpec, tuned: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The hybrid's inherited params from already tuned methods (see :class:`MethodSpec`)."""
    out = {}
    for param, ref in spec.inherit.items():
        name, _, key = ref.partition(".")
        source = {k: v for k, v in tuned[name].items() if k != "random_state"}
        out[param] = source.get(key) if key else source
    return out


@dataclass
class MethodResult:
    name: str
    kind: str
    params: dict[str, Any]
    model: Recommender
    test: dict[str, dict[str, float]]
    validation: dict[str, dict[str, float]]
    fit_seconds: float
    tuning: pd.DataFrame


@dataclass
class ExperimentResult:
    methods: list[MethodResult] = field(default_factory=list)

    def table(self, k: int) -> pd.DataFrame:
        """One row per (method, mode): test metrics at k, customers, fit and recommend seconds."""
        rows = []
        for r in self.methods:
            for mode in MODES:
                m = r.test[mode]
                rows.append(
                    {"method": r.name, "mode": mode}
                    | {
                        f"{x}_at_{k}": m[f"{x}_at_{k}"]
                        for x in ("precision", "recall", "ndcg", "map", "hit_rate", "coverage")
                    }
                    | {
                        "customers": int(m["customers"]),
                        "fit_seconds": r.fit_seconds,
                        "recommend_seconds": m["recommend_seconds"],
                    }
                )
        return pd.DataFrame(rows)


def tune(
    spec: MethodSpec, split: Split, cfg: RecommendConfig, inherited: dict[str, Any], progress: Progress = silent
) -> tuple[dict[str, Any], dict[str, dict[str, float]], pd.DataFrame]:
    """Grid search on the validation split; returns the best params, their metrics and the grid table.

    The hybrid's ranker parameters are varied on one fitted hybrid (``set_ranker_params``): the
    generators and candidates do not depend on them.
    """
    from omnicrm.recommend.hybrid import Hybrid

    # inherited values override fixed params; grid values override both
    combos = [c | inherited | {k: c[k] for k in spec.grid} for c in spec.combos()]
    fast = set(Hybrid.ranker_params) if spec.kind == "hybrid" else set()
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in combos:
        groups.setdefault(repr(sorted((k, repr(v)) for k, v in c.items() if k not in fast)), []).append(c)
    rows, best, best_value, best_metrics = [], None, -np.inf, None
    done = 0
    for group in groups.values():
        model = None
        for combo in group:
            progress(f"tuning {spec.name} ({done + 1}/{len(combos)})", done / max(len(combos), 1))
            if model is None:
                model = build_method(spec, combo, cfg.seed).fit_history(split.history)
            else:
                model.set_ranker_params(**{k: combo[k] for k in fast if k in combo})
            metrics = score(model, split, cfg.k)
            value = selection_value(metrics, cfg.select_by, cfg.k)
            rows.append(
                {"params": repr(combo), "value": value}
                | {f"{mode}.{cfg.select_by}_at_{cfg.k}": metrics[mode][f"{cfg.select_by}_at_{cfg.k}"] for mode in MODES}
            )
            if value > best_value:
                best, best_value, best_metrics = combo, value, metrics
            done += 1
    assert best is not None and best_metrics is not None
    return best, best_metrics, pd.DataFrame(rows)


def run_experiment(
    cfg: RecommendConfig, purchases: pd.DataFrame, items: pd.DataFrame | None, progress: Progress = silent
) -> ExperimentResult:
    """Tune each method on the validation window, refit before the test cutoff, score the test window."""
    progress("preparing validation and test windows", 0.0)
    val = make_split(purchases, items, cfg.validation_cutoff, cfg.test_cutoff, "validation")
    test = make_split(purchases, items, cfg.test_cutoff, cfg.test_end, "test")
    result = ExperimentResult()
    tuned: dict[str, dict[str, Any]] = {}
    n = len(cfg.methods)
    for j, spec in enumerate(cfg.methods):

        def sub(step: str, frac: float, j: int = j) -> None:
            progress(step, (j + frac * 0.8) / n)

        params, val_metrics, grid = tune(spec, val, cfg, resolve_inherit(spec, tuned), sub)
        tuned[spec.name] = params
        progress(f"fitting {spec.name} before the test cutoff", (j + 0.8) / n)
        model = build_method(spec, params, cfg.seed)
        start = time.perf_counter()
        model.fit(purchases, cfg.test_cutoff, items)
        fit_seconds = time.perf_counter() - start
        result.methods.append(
            MethodResult(
                spec.name,
                spec.kind,
                model.get_params(),
                model,
                score(model, test, cfg.k),
                val_metrics,
                fit_seconds,
                grid,
            )
        )
    progress("evaluation done", 1.0)
    return result
