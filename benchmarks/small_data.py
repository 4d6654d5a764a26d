"""Churn and CLV on the two shipped real logs: the model against every baseline, and what the gate ships.

For Online Retail (2010-12 .. 2011-12, ``configs/examples/online_retail/``) and Online Retail II
(2009-12 .. 2010-12, ``configs/examples/online_retail_ii/``): ingest the log when its store is
missing, train churn and CLV with the shipped example configs (exactly as ``omnicrm train`` does,
registering into a private tracking store), print the model and every baseline on the evaluation
cutoff (the primary metric and the main secondary ones), then run ``omnicrm promote`` on each
registered model and print which version it ships: the LightGBM candidate, or its best baseline
when the candidate does not beat it (the gate, docs/tasks.md).

Runs from the project root (the example configs' store paths are relative to it). The stores'
customer ids are keyed hashes, and the key orders the training rows, so the figures depend on it
in their last digits: the script uses ``$OMNICRM_SALT`` when set, else a fixed benchmark key (the
logs hold no personal data). The tracking store is a scratch folder (``--mlruns`` to keep it).

    python benchmarks/small_data.py                       # both logs, churn and clv, ~3 minutes
    python benchmarks/small_data.py --dataset online_retail_ii --task churn
    python benchmarks/small_data.py --markdown            # the tables as benchmarks/README.md shows them
    python benchmarks/small_data.py --seed 1              # another LightGBM seed: where the gate ships a baseline
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASETS = {"online_retail": "configs/examples/online_retail", "online_retail_ii": "configs/examples/online_retail_ii"}
TASKS = ("churn", "clv")
#: the metrics shown per problem: the primary one first, then the main secondary ones
METRICS = {
    "binary": ["roc_auc", "pr_auc", "log_loss", "brier", "lift_at_10", "base_rate"],
    "regression": ["normalised_gini", "top10_capture", "spearman", "total_ratio", "mae", "rmse"],
}
BENCHMARK_SALT = "omnicrm-small-data-benchmark"


def _ingest_if_missing(folder: str) -> None:
    import yaml

    from omnicrm.pipeline.ingest import run_ingest

    ingest = ROOT / folder / "ingest.yaml"
    store = ROOT / yaml.safe_load(ingest.read_text())["store"]
    if store.exists():
        print(f"{folder}: store {store.relative_to(ROOT)} exists, not re-ingested")
        return
    start = time.perf_counter()
    run_ingest(ingest)
    print(f"{folder}: ingested into {store.relative_to(ROOT)} in {time.perf_counter() - start:.1f} s")


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.4f}" if abs(value) < 100 else f"{value:,.1f}"


def _table(result, markdown: bool) -> list[str]:
    """Model and every baseline as rows, the shown metrics as columns; the best baseline marked ``*``."""
    metrics = [m for m in METRICS[result.problem] if m in result.model_metrics]
    best = result.best_baseline[0]
    rows = [("model (LightGBM)", result.model_metrics)]
    rows += [(f"{name}{' *' if name == best else ''}", m) for name, m in result.baseline_metrics.items()]
    if markdown:
        out = ["| score | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
        out += ["| " + name + " | " + " | ".join(_fmt(m.get(k)) for k in metrics) + " |" for name, m in rows]
        return out
    out = [f"  {'score':<20}" + "".join(f"{k:>17}" for k in metrics)]
    out += [f"  {name:<20}" + "".join(f"{_fmt(m.get(k)):>17}" for k in metrics) for name, m in rows]
    return out


def _blend_line(cfg, r) -> str:
    """What a blend with one baseline, chosen on validation, would score (`model.blend: auto`; off here)."""
    from omnicrm.pipeline.task_frames import load_frames
    from omnicrm.tasks.model import choose_blend

    frames = load_frames(cfg)  # the feature cache the training filled: quick
    target = next(t for t in cfg.task.targets_of(frames.train) if t.name == r.target)
    va, ev = target.rows(frames.validation), target.rows(frames.evaluation)

    def metric(y, score):
        return cfg.task.metrics(target, y, score)[r.primary]

    va_y = va[target.label].to_numpy()
    blend, info = choose_blend(r.model.predict_score(va), r.baselines, va, va_y, target.problem, metric)
    if blend is None:
        return "  blend with a baseline (chosen on validation): none beats the model on validation"
    score = blend.mix(r.model.predict_score(ev), ev, target.problem)
    return (
        f"  blend with a baseline (chosen on validation; model.blend: auto, off here): {info['blend']} -> "
        f"{r.primary} {metric(ev[target.label].to_numpy(), score):.4f} on the evaluation cutoff"
    )


def run(datasets: list[str], tasks: list[str], markdown: bool, seed: int | None = None) -> list[dict]:
    """Train every (dataset, task), print its table and the gate's choice; return one summary row each."""
    from omnicrm.pipeline.promote import promote
    from omnicrm.pipeline.train import train
    from omnicrm.tasks.config import load_task_config

    summary = []
    for ds in datasets:
        _ingest_if_missing(DATASETS[ds])
        for task in tasks:
            cfg = load_task_config(ROOT / DATASETS[ds] / f"{task}.yaml")
            if seed is not None:
                cfg.model.seed = seed
            start = time.perf_counter()
            results = train(cfg)
            seconds = time.perf_counter() - start
            for r in results:
                info, enc = r.info, r.model.encoding
                print(
                    f"\n{ds} · {task} ({r.target}) — evaluation cutoff {r.model.meta['evaluation_cutoff']}; "
                    f"train rows {info['train_rows']:,}, features {len(enc.features)}, "
                    f"best iteration {info['best_iteration']}, {seconds:.0f} s"
                )
                dropped = getattr(enc, "dropped", ())
                if dropped:
                    print(f"  {len(dropped)} constant in training, left out: {', '.join(dropped)}")
                print("\n".join(_table(r, markdown)))
                print(_blend_line(cfg, r))
                p = promote(r.registered_name)
                shipped = p.baseline_name if p.champion_after and p.champion_after == p.baseline else "LightGBM"
                print(f"  promote {r.registered_name}: ships {shipped} (v{p.champion_after}); {p.note}")
                best, value = r.best_baseline
                summary.append(
                    {
                        "dataset": ds,
                        "task": task,
                        "metric": r.primary,
                        "model": r.model_metrics[r.primary],
                        "best_baseline": best,
                        "baseline": value,
                        "ships": shipped,
                    }
                )
    print("\nsummary (primary metric on the evaluation cutoff)")
    for s in summary:
        print(
            f"  {s['dataset']:<17}{s['task']:<6}{s['metric']:<16} model {s['model']:.4f}  "
            f"best baseline {s['best_baseline']} {s['baseline']:.4f}  -> promote ships {s['ships']}"
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), action="append", help="default: both")
    parser.add_argument("--task", choices=TASKS, action="append", help="default: churn and clv")
    parser.add_argument("--mlruns", help="tracking folder to keep (default: a scratch folder, removed)")
    parser.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    parser.add_argument("--seed", type=int, help="LightGBM seed instead of the configs' (the spread between seeds)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT / "src"))
    os.environ.setdefault("OMNICRM_SALT", BENCHMARK_SALT)
    from omnicrm import quiet

    quiet.apply()  # the command line's quiet output (third-party notices nobody can act on)
    with tempfile.TemporaryDirectory(prefix="omnicrm-small-data-") as scratch:
        os.environ["OMNICRM_MLRUNS"] = args.mlruns or scratch
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        run(args.dataset or sorted(DATASETS), args.task or list(TASKS), args.markdown, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
