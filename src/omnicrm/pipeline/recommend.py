"""``omnicrm recommend-eval CONFIG`` and ``omnicrm recommend CONFIG --as-of DATE --out FILE``.

* :func:`evaluate_recommenders`: the time-split experiment of :mod:`omnicrm.recommend.evaluate`,
  logged to MLflow (experiment ``omnicrm-recommend``): one parent run per experiment holding the
  results table, ``<method>.<mode>.<metric>`` metrics and the item-side state of the ``serve``
  method (``model/<method>/``, see :func:`write_item_state`), and one nested run per method with its
  tuned params, its test metrics as ``<mode>.<metric>`` (so the UI's compare view lines methods up),
  validation metrics and the tuning grid. No fitted model is pickled: it would carry every
  customer's purchases and id (251 MB per run on Online Retail), which a refit re-derives.
* :func:`write_recommendations`: fits the config's ``serve`` method on everything before ``as_of``
  and writes top-k rows for every customer with a purchase before it (Parquet, written to a
  temporary file and moved into place, so a failed run leaves the previous output).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from omnicrm.progress import Progress, silent
from omnicrm.store.outputs import write_frame

TASK = "recommend"


@dataclass
class RecommendEvalResult:
    table: pd.DataFrame  # method, mode, metrics at k, customers, fit_seconds, recommend_seconds
    params: dict[str, dict]  # tuned params per method
    validation: pd.DataFrame  # same layout as table, on the validation window
    run_id: str
    method_run_ids: dict[str, str]
    k: int


@dataclass
class WriteResult:
    out: Path
    rows: int
    customers: int
    method: str
    as_of: date


def _load(cfg, before: date):  # noqa: ANN001, ANN202 - (purchases, items)
    from omnicrm.recommend.history import load_items, load_purchases
    from omnicrm.store import open_store

    con = open_store(cfg.store, deterministic=True)
    try:
        return load_purchases(con, before), load_items(con)
    finally:
        con.close()


def evaluate_recommenders(config_path: str | Path, progress: Progress = silent) -> RecommendEvalResult:
    """Tune on the validation window, score the test window, log everything; returns the table."""
    from omnicrm import tracking
    from omnicrm.recommend.config import load_recommend_config
    from omnicrm.recommend.evaluate import MODES, run_experiment

    cfg = load_recommend_config(config_path)
    progress("loading purchases", 0.0)
    purchases, items = _load(cfg, cfg.test_end)
    result = run_experiment(cfg, purchases, items, lambda s, f: progress(s, 0.02 + 0.9 * f))
    table = result.table(cfg.k)
    val_rows = []
    for r in result.methods:
        for mode in MODES:
            val_rows.append({"method": r.name, "mode": mode} | {k: v for k, v in r.validation[mode].items()})
    validation = pd.DataFrame(val_rows)

    progress("logging to MLflow", 0.93)
    tags = {
        "task": TASK,
        "dataset": cfg.dataset,
        "test_cutoff": cfg.test_cutoff,
        "validation_cutoff": cfg.validation_cutoff,
        "test_days": cfg.test_days,
        "k": cfg.k,
    }
    child_ids = {}
    with tracking.start_run(
        cfg.experiment, f"recommend-eval · {cfg.dataset}", tags=tags | {"run_kind": "experiment"}
    ) as parent:
        tracking.log_config(cfg.model_dump(mode="json"))
        tracking.log_table(table, "tables/results.csv")
        tracking.log_text(markdown_table(table), "tables/results.md")
        tracking.log_table(validation, "tables/validation.csv")
        tracking.log_metrics(
            {
                f"{row.method}.{row.mode}.{col}": getattr(row, col)
                for row in table.itertuples()
                for col in table.columns
                if col not in ("method", "mode")
            }
        )
        served = next(r for r in result.methods if r.name == cfg.serve)
        with tempfile.TemporaryDirectory() as tmp:
            for path in write_item_state(served.model.item_state(), Path(tmp)):
                tracking.log_artifact(path, f"model/{served.name}")
        for r in result.methods:
            with tracking.start_run(
                cfg.experiment,
                r.name,
                tags=tags | {"run_kind": "method", "method": r.name, "model_family": r.kind},
                nested=True,
            ) as run:
                tracking.log_params({"method": r.name, "kind": r.kind, **r.params})
                tracking.log_metrics({mode: {k: v for k, v in r.test[mode].items()} for mode in MODES})
                tracking.log_metrics({"val": r.validation, "fit_seconds": r.fit_seconds})
                tracking.log_table(r.tuning, "tables/tuning.csv")
                child_ids[r.name] = run.run_id
    progress("done", 1.0)
    return RecommendEvalResult(
        table, {r.name: r.params for r in result.methods}, validation, parent.run_id, child_ids, cfg.k
    )


def write_item_state(state: dict[str, Any], folder: Path) -> list[Path]:
    """Write a recommender's :meth:`~omnicrm.recommend.base.Recommender.item_state` to ``folder``.

    One file per entry, in formats that load without omnicrm and without unpickling: arrays as
    ``.npy`` (no pickled objects), sparse matrices as ``.npz`` (uncompressed, like the rest, so the
    files can be searched as they are), tables as ``.csv``, text as ``.txt``, dicts as ``.json``.
    """
    paths = []
    for name, value in state.items():
        if isinstance(value, np.ndarray):
            path = folder / f"{name}.npy"
            np.save(path, value, allow_pickle=False)
        elif sp.issparse(value):
            path = folder / f"{name}.npz"
            sp.save_npz(path, sp.csr_matrix(value), compressed=False)
        elif isinstance(value, pd.DataFrame):
            path = folder / f"{name}.csv"
            value.to_csv(path, index=False)
        elif isinstance(value, str):
            path = folder / f"{name}.txt"
            path.write_text(value, encoding="utf-8")
        else:
            path = folder / f"{name}.json"
            path.write_text(json.dumps(value, indent=1, default=str), encoding="utf-8")
        paths.append(path)
    return paths


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub markdown table (floats to ``digits`` places; seconds to 2)."""

    def cell(col: str, v: object) -> str:
        if isinstance(v, float):
            return f"{v:.2f}" if col.endswith("seconds") else f"{v:.{digits}f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" if frame[c].dtype.kind not in "fi" else "---:" for c in frame.columns) + "|"
    body = [
        "| " + " | ".join(cell(c, v) for c, v in zip(frame.columns, row, strict=True)) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([head, rule, *body])


def write_recommendations(
    config_path: str | Path, as_of: date | datetime, out: str | Path, progress: Progress = silent
) -> WriteResult:
    """Top-k products for every customer with a purchase before ``as_of`` -> ``out`` (Parquet)."""
    from omnicrm.errors import InputError
    from omnicrm.recommend.config import build_method, load_recommend_config

    cfg = load_recommend_config(config_path)
    as_of_date = as_of.date() if isinstance(as_of, datetime) else as_of
    spec = next(m for m in cfg.methods if m.name == cfg.serve)
    progress("loading purchases", 0.0)
    purchases, items = _load(cfg, as_of_date)
    if purchases.empty:
        raise InputError(f"{cfg.store}: no purchases before {as_of_date}; nothing to recommend from")
    progress(f"fitting {spec.name}", 0.2)
    model = build_method(spec, dict(spec.params), cfg.seed, str(config_path)).fit(purchases, as_of_date, items)
    customers = model.history_.users
    progress(f"recommending for {len(customers):,} customers", 0.7)
    recs = model.recommend(customers, cfg.k, exclude_purchased=cfg.serve_exclude_purchased)
    out = write_frame(recs, out)
    progress("recommendations written", 1.0)
    return WriteResult(out, len(recs), int(recs["customer_id"].nunique()), spec.name, as_of_date)
