"""``omnicrm predict --horizon`` on Online Retail: predicted total ÷ actual spend over longer horizons.

Not a timing benchmark. The CLV model is trained on the shipped Online Retail example
(``configs/examples/online_retail/clv.yaml``: same features, model settings, population and
objective) with a **60-day** label window and cutoffs chosen so that every label the model is fitted
on ends by the scoring date 2011-06-01: training cutoffs 2011-01-01 and 2011-02-01, validation
2011-04-02 (its window ends 2011-06-01; early stopping reads it), evaluation 2011-06-01 (its labels
only judge the model). With 90-day windows no such split exists: three disjoint label windows
ending by 2011-06-01 leave the training cutoffs no history (the log starts 2010-12-01), which is
why the shipped example evaluates at 2011-09-01.

Then, at 2011-06-01, ``predict --model candidate --horizon H --btyd --baselines`` for H = 60 days
(the label window itself: how well the totals are calibrated before any extrapolation), 120 days
(twice the label window) and 180 days (three times), and each score's total over the population is
compared with the customers' actual spend in ``[2011-06-01, 2011-06-01 + H)`` (the CLV label's own
definition, :func:`omnicrm.tasks.labels.with_purchase_outcomes`). Also the normalised Gini of each
score against that actual spend (ranking, :func:`omnicrm.tasks.metrics.clv_metrics`).

    python benchmarks/horizon.py            # ingests Online Retail first if the store is missing
    python benchmarks/horizon.py --no-train # score with the candidate registered by an earlier run

Configs, store and scores go under ``data/bench/horizon/`` (gitignored); models are registered as
``omnicrm-online_retail_horizon-clv`` in the local MLflow store.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STORE = ROOT / "data/store/online_retail.duckdb"
WORK = ROOT / "data/bench/horizon"
AS_OF = date(2011, 6, 1)
WINDOW = 60
HORIZONS = (60, 120, 180)


def _configs() -> Path:
    """The dataset and CLV task configs (the shipped example's parts, this benchmark's cutoffs)."""
    WORK.mkdir(parents=True, exist_ok=True)
    example = ROOT / "configs/examples/online_retail"
    dataset = yaml.safe_load((example / "dataset.yaml").read_text())
    dataset |= {
        "store": str(STORE),
        "features": str((example / dataset["features"]).resolve()),
        "feature_cache": str(WORK / "cache"),
        "registry_namespace": "online_retail_horizon",
    }
    (WORK / "dataset.yaml").write_text(yaml.safe_dump(dataset, sort_keys=False))
    clv = yaml.safe_load((example / "clv.yaml").read_text())
    clv |= {
        "dataset": "dataset.yaml",
        "model": str((example / clv["model"]).resolve()),
        "cutoffs": {
            "train": {"dates": ["2011-01-01", "2011-02-01"]},
            "validation": "2011-04-02",
            "evaluation": "2011-06-01",
        },
    }
    del clv["search"]
    clv["task"]["horizon_days"] = WINDOW
    path = WORK / "clv.yaml"
    path.write_text(yaml.safe_dump(clv, sort_keys=False))
    return path


def _actual(customers: pd.Series, horizon: int) -> pd.Series:
    """Each customer's spend in ``[AS_OF, AS_OF + horizon)``, as the CLV label counts it (0 without)."""
    from omnicrm.features.cutoffs import normalize_cutoff
    from omnicrm.store import open_store
    from omnicrm.tasks.labels import with_purchase_outcomes

    con = open_store(STORE, deterministic=True)
    try:
        frame = pd.DataFrame({"customer_id": customers.to_numpy()})
        out = with_purchase_outcomes(con, normalize_cutoff(AS_OF), frame, horizon)
    finally:
        con.close()
    return out["spend"].fillna(0.0).set_axis(customers.index)


def main() -> None:
    """Train, predict at 2011-06-01 with each horizon, print the table (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-train", action="store_true", help="score with the registered candidate as it is")
    args = parser.parse_args()
    # the store's pseudonyms need a key (it orders the training rows, so the figures' last digits
    # depend on it): $OMNICRM_SALT when set, else the key benchmarks/small_data.py uses for the same stores
    os.environ.setdefault("OMNICRM_SALT", "omnicrm-small-data-benchmark")
    if not STORE.exists():
        subprocess.run(
            [sys.executable, "-m", "omnicrm.cli", "ingest", "configs/examples/online_retail/ingest.yaml"],
            cwd=ROOT,
            check=True,
        )
    from omnicrm.pipeline.predict import predict
    from omnicrm.pipeline.train import train
    from omnicrm.tasks.metrics import clv_metrics

    config = _configs()
    if not args.no_train:
        [spend, *_] = train(config)
        print(
            f"trained {spend.registered_name} v{spend.version}: Gini {spend.model_metrics['normalised_gini']:.4f} "
            f"on 2011-06-01 (best baseline {spend.best_baseline[0]} {spend.best_baseline[1]:.4f})"
        )
    rows = []
    for h in HORIZONS:
        r = predict(
            config, AS_OF, WORK / f"scores_{h}d.parquet", model="candidate", horizon=h, btyd=True, baselines=True
        )
        scores = pd.read_parquet(r.out)
        actual = _actual(scores["customer_id"], h)
        top = ", ".join(f"{f} {n}" for f, n in list(next(iter(r.out_of_range.values()), {}).items())[:3])
        print(f"H={h}: {r.rows} customers, actual spend {actual.sum():,.0f}; outside the training range: {top}")
        candidates = {
            f"LightGBM, label window ({WINDOW} d, not extrapolated)": scores["pred_spend"],
            f"LightGBM × {h}/{WINDOW} (constant rate)": scores["pred_spend"] * h / WINDOW,
            "LightGBM × BG/NBD ratio (`pred_spend_Hd`)": scores[f"pred_spend_{h}d"],
            "BG/NBD + Gamma-Gamma (`btyd_clv_Hd`)": scores[f"btyd_clv_{h}d"].fillna(0.0),
            "Pareto/NBD + Gamma-Gamma (`pnbd_clv_Hd`)": scores[f"pnbd_clv_{h}d"].fillna(0.0),
            "run-rate baseline × BG/NBD ratio": scores[f"pred_spend_baseline_run_rate_{h}d"],
        }
        for name, pred in candidates.items():
            m = clv_metrics(actual.to_numpy(), pred.to_numpy(dtype=float))
            rows.append(
                {
                    "horizon": f"{h} d",
                    "score": name,
                    "predicted": pred.sum(),
                    "actual": actual.sum(),
                    "predicted ÷ actual": pred.sum() / actual.sum(),
                    "normalised Gini": m["normalised_gini"],
                }
            )
    table = pd.DataFrame(rows)
    table.to_csv(WORK / "table.csv", index=False)
    print(_markdown(table))


def _markdown(table: pd.DataFrame) -> str:
    """The table as markdown (amounts to the pound, the ratio to 3 digits, Gini to 4)."""
    fmt = {"predicted": "{:,.0f}", "actual": "{:,.0f}", "predicted ÷ actual": "{:.3f}", "normalised Gini": "{:.4f}"}
    lines = [
        "| " + " | ".join(table.columns) + " |",
        "|" + "|".join("---" if c in ("horizon", "score") else "---:" for c in table.columns) + "|",
    ]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(fmt.get(c, "{}").format(row[c]) for c in table.columns) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
