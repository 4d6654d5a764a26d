"""Does the refit (issue 11) score a later period at least as well as the model it refits? Online Retail.

The deployment question: a model trained up to mid-2011 is used on 2011-09-01 to predict the next
90 days. ``omnicrm train`` evaluates the configuration fitted on the training cutoffs, then
(``model.refit``, the default) refits it on every labelled cutoff, evaluation included, and registers
that refit. Both are scored here on a period neither has seen:

* configs: the shipped ``configs/examples/online_retail/{churn,clv}.yaml`` (read, not edited) with
  the cutoffs overridden so every label window ends by 2011-09-01: training cutoffs
  2011-01-01, 2011-02-01, 2011-03-01 (90-day windows end by 2011-05-30), ``validation: holdout``
  (early stopping and calibration on 20 % of the training cutoffs' customers: nine months of log
  cannot hold three disjoint 90-day label windows), evaluation 2011-06-01 (window ends 2011-08-30).
  The evaluated model has seen labels up to 2011-05-30, the refit up to 2011-08-30;
* scoring: the task's population at 2011-09-01 (features read events before it), outcome in
  [2011-09-01, 2011-11-30): churn ROC-AUC / PR-AUC / Brier, CLV normalised Gini / Spearman /
  predicted total ÷ actual total; the best baseline (fitted beside each) for reference; both tree
  rules of the refit (``model.refit_trees``: ``keep``, the default, and ``scale``), with a paired
  bootstrap interval (customers resampled) of the refit's gain on the primary metric.

Nothing is registered (``register=False``). Run from the project root; the store is ingested first
when missing (``omnicrm ingest configs/examples/online_retail/ingest.yaml``)::

    PYTHONPATH=src python benchmarks/refit.py
    PYTHONPATH=src python benchmarks/refit.py --seed 1     # another model seed (and hold-out split)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIGS = ROOT / "configs/examples/online_retail"
SCORE_AT = date(2011, 9, 1)
CUTOFFS = {
    "train": {"dates": ["2011-01-01", "2011-02-01", "2011-03-01"]},
    "validation": "holdout",
    "evaluation": "2011-06-01",
}
#: bootstrap resamples of the paired refit - model difference
BOOTSTRAP = 200
#: metrics in the table, per task
SHOWN = {"churn": ["roc_auc", "pr_auc", "brier"], "clv": ["normalised_gini", "spearman", "total_ratio"]}


def _config(name: str, seed: int | None):  # noqa: ANN202 - TaskConfig, imported late
    """The shipped config with the cutoffs above (validated again, so the time-split guard checks them)."""
    from omnicrm.tasks.config import load_task_config, task_config_from_dict

    data = load_task_config(CONFIGS / f"{name}.yaml").model_dump(mode="json")
    if seed is not None:
        data["model"]["seed"] = seed
    return task_config_from_dict(data | {"cutoffs": CUTOFFS}, f"{name}.yaml with benchmark cutoffs")


def _later_frame(cfg) -> pd.DataFrame:  # noqa: ANN001
    """The population at :data:`SCORE_AT` with features and the outcome of the next 90 days."""
    from omnicrm.pipeline.task_frames import feature_source
    from omnicrm.store import open_store
    from omnicrm.tasks.frames import build_frame

    con = open_store(cfg.dataset.store, deterministic=True)
    try:
        return build_frame(con, cfg, [SCORE_AT], what="later", features=feature_source(cfg.dataset))
    finally:
        con.close()


def _paired_interval(task, target, y: np.ndarray, a: np.ndarray, b: np.ndarray, metric: str) -> str:  # noqa: ANN001
    """95 % interval of ``metric(b) - metric(a)`` over customers resampled with replacement (paired)."""
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(y), len(y))
        diffs.append(task.metrics(target, y[i], b[i])[metric] - task.metrics(target, y[i], a[i])[metric])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return f"[{lo:+.4f}, {hi:+.4f}]"


def run(name: str, seed: int | None = None) -> list[dict]:
    """Train ``name`` (with refit), score the later period with both models, both tree rules, the best baseline."""
    from omnicrm.pipeline.task_frames import load_frames
    from omnicrm.pipeline.train import train
    from omnicrm.tasks.train import refit_target

    cfg = _config(name, seed)
    frames = load_frames(cfg)
    results = train(cfg, register=False, frames=frames)
    scale = cfg.model_copy(update={"model": cfg.model.model_copy(update={"refit_trees": "scale"})})
    later = _later_frame(cfg)
    rows = []
    for r in results:
        target = next(t for t in cfg.task.targets_of(later) if t.name == r.target)
        scaled = refit_target(scale, target, r, frames)
        ev = target.rows(later)
        y = ev[target.label].to_numpy()
        best = r.best_baseline[0]
        before = r.model.predict_score(ev)
        fits = {
            "model (training cutoffs)": (before, r.info["best_iteration"], r.info["train_rows"]),
            "refit, trees kept (default)": (r.refit.model.predict_score(ev), *_size(r.refit.info)),
            "refit, trees scaled": (scaled.model.predict_score(ev), *_size(scaled.info)),
            f"baseline {best}": (r.baselines[best].predict(ev, target.problem), None, r.info["train_rows"]),
            f"baseline {best}, refit": (
                r.refit.baselines[best].predict(ev, target.problem),
                None,
                r.refit.info["refit_rows"],
            ),
        }
        for label, (score, trees, n) in fits.items():
            m = cfg.task.metrics(target, y, score)
            row = {"task": name, "target": r.target, "score": label, **{k: m[k] for k in SHOWN[name]}}
            row |= {"trees": trees, "rows": n}
            if label.startswith("refit"):
                gain = _paired_interval(cfg.task, target, y, before, score, r.primary)
                row[f"refit - model {r.primary}, 95% CI"] = gain
            rows.append(row)
        print(
            f"{name}[{r.target}]: {len(ev):,} customers scored at {SCORE_AT}; on the evaluation cutoff 2011-06-01 "
            f"the model had {r.primary} {r.model_metrics[r.primary]:.4f}, its best baseline ({best}) "
            f"{r.best_baseline[1]:.4f}",
            flush=True,
        )
    return rows


def _size(info: dict) -> tuple[int, int]:
    return info["refit_trees"], info["refit_rows"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, help="model.seed (LightGBM's and the hold-out's; default: the config's)")
    args = parser.parse_args()
    # the store's pseudonyms need a key (it orders the training rows, so the figures' last digits
    # depend on it): $OMNICRM_SALT when set, else the key benchmarks/small_data.py uses for the same stores
    os.environ.setdefault("OMNICRM_SALT", "omnicrm-small-data-benchmark")
    if not (ROOT / "data/store/online_retail.duckdb").is_file():
        subprocess.run(
            [sys.executable, "-m", "omnicrm.cli", "ingest", str(CONFIGS / "ingest.yaml")], cwd=ROOT, check=True
        )
    rows = run("churn", args.seed) + run("clv", args.seed)
    table = pd.DataFrame(rows).astype({"trees": "Int64"})
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        for _, part in table.groupby("task", sort=False):
            print(part.dropna(axis=1, how="all").to_string(index=False))


if __name__ == "__main__":
    main()
