"""Benchmark: fit and top-k recommend time of every recommender on a real store (Online Retail).

For each method of the config (with its served ``params``, i.e. the values tuned on the validation
window), in one process and on the same data:

* ``fit``: ``model.fit(purchases, as_of, items)`` -- building the history included;
* ``recommend``: top-k for *every* customer with a purchase before ``as_of`` (repeat purchases allowed);
* ``recommend new``: the same with ``exclude_purchased=True``.

Times are the best of ``--repeat`` runs (wall clock); ``x popularity`` is the ratio of fit + recommend
to the popularity baseline measured in the same run (the reference).

Usage::

    python benchmarks/recommend.py                                   # configs/recommend/online_retail.yaml
    python benchmarks/recommend.py configs/recommend/synthetic.yaml --repeat 1
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import datetime
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def best_of(repeat: int, fn):  # noqa: ANN001, ANN201 - (seconds, last result)
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", nargs="?", default=str(ROOT / "configs/recommend/online_retail.yaml"))
    ap.add_argument("--as-of", default=None, help="fit on purchases before this date (default: the config's test end)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None, help="method names to run (default: all)")
    args = ap.parse_args()

    from omnicrm.recommend.config import build_method, load_recommend_config
    from omnicrm.recommend.history import load_items, load_purchases
    from omnicrm.store import open_store

    os.chdir(ROOT)  # store paths in configs are relative to the project root
    cfg = load_recommend_config(args.config)
    as_of = datetime.strptime(args.as_of, "%Y-%m-%d").date() if args.as_of else cfg.test_end
    con = open_store(cfg.store)
    load_s, (purchases, items) = best_of(1, lambda: (load_purchases(con, as_of), load_items(con)))
    con.close()
    customers = purchases["customer_id"].astype(str).unique()
    print(
        f"{cfg.dataset}: {len(purchases):,} purchase lines before {as_of}, {len(customers):,} customers, "
        f"{purchases['product_id'].nunique():,} products; load {load_s:.2f} s; k = {cfg.k}; "
        f"best of {args.repeat}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"load average {os.getloadavg()[0]:.1f}"
    )

    rows = []
    for spec in cfg.methods:
        if args.only and spec.name not in args.only:
            continue

        def fit(spec=spec):  # noqa: ANN202
            return build_method(spec, dict(spec.params), cfg.seed).fit(purchases, as_of, items)

        fit_s, model = best_of(args.repeat, fit)
        rec_s, recs = best_of(args.repeat, lambda m=model: m.recommend(customers, cfg.k))
        new_s, _ = best_of(args.repeat, lambda m=model: m.recommend(customers, cfg.k, exclude_purchased=True))
        rows.append(
            {
                "method": spec.name,
                "fit s": fit_s,
                "recommend s": rec_s,
                "recommend new s": new_s,
                "rows": len(recs),
                "customers": recs["customer_id"].nunique(),
            }
        )
        print(f"  {spec.name}: fit {fit_s:.2f} s, recommend {rec_s:.2f} s, recommend new {new_s:.2f} s", flush=True)
    table = pd.DataFrame(rows)
    if "popularity" in set(table["method"]):
        ref = table.set_index("method").loc["popularity"]
        table["x popularity"] = (table["fit s"] + table["recommend s"]) / (ref["fit s"] + ref["recommend s"])
    print()
    print(markdown(table))


def markdown(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" if c == "method" else "---:" for c in frame.columns) + "|"
    body = []
    for row in frame.itertuples(index=False):
        cells = [f"{v:.2f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v) for v in row]
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *body])


if __name__ == "__main__":
    main()
