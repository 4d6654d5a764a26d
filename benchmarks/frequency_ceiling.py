"""How much of the cadence truth any estimator could learn from the data (issue 15, the class shares).

The learned cadence classes too few members "saturated" against the generator's truth. Is that the
estimator, or the data? This script fits regressions **to the truth's own values** (each cadence's true
value less the current cadence's, per member of the cadence experiment), cross-fitted over two folds
of customers, and classes members with the shipped policy's rule (move only for a gain above
``min_gain``). No experiment noise is left, so what these regressions miss, no estimator fitted on the
same inputs can find:

* ``features``: the experiment's features at its start, as the estimator sees them (the ceiling of
  any estimator on them);
* ``traits``: the generator's hidden traits that set a member's tolerance (e-mail responsiveness,
  purchase rate) and their e-mail load at the start (``truth/people.parquet``,
  ``truth/cadence.parquet``), for customers that are one person;
* ``traits + tolerance``: the same and the tolerance itself.

Each row gives the true gain per member of the classes it chose (against the current cadence), the
share classed saturated / on target / under-saturated and the share classed as the decision truth
(the truth judged by the same rule). Needs the demo world (``make demo``); about a minute.

    python benchmarks/frequency_ceiling.py
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from omnicrm.determinism import LIGHTGBM  # noqa: E402
from omnicrm.frequency.config import load_frequency_config  # noqa: E402
from omnicrm.frequency.data import experiment_rows  # noqa: E402
from omnicrm.frequency.evaluate import class_shares, confusion, folds_of, policies, true_values  # noqa: E402
from omnicrm.pipeline.frequency import _truth  # noqa: E402
from omnicrm.store import open_store  # noqa: E402
from omnicrm.uplift.data import to_model_frame  # noqa: E402
from omnicrm.uplift.truth import person_customers  # noqa: E402


def cross_fitted(X: pd.DataFrame, gains: np.ndarray, fold: np.ndarray, skip: int) -> np.ndarray:
    """Held-out predictions of each column of ``gains`` (the current cadence's column, ``skip``, stays 0)."""
    import lightgbm as lgb

    out = np.zeros_like(gains)
    params = LIGHTGBM | {"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 50}
    for k in np.unique(fold):
        for j in range(gains.shape[1]):
            if j == skip:
                continue
            model = lgb.LGBMRegressor(**params).fit(X[fold != k], gains[fold != k, j])
            out[fold == k, j] = model.predict(X[fold == k])
    return out


def judged(name: str, estimate: np.ndarray, truth: np.ndarray, arms: list[int], current: int, cfg) -> dict:  # noqa: ANN001
    """The policy the estimate gives, judged on the truth: true gain, class shares, agreement."""
    chosen = policies(estimate, arms, current, cfg.max_cadence[cfg.experiment.channel], cfg.estimator.min_gain)
    gain = true_values(truth, arms, chosen).set_index("policy").loc["learned", "true_gain_vs_current"]
    shares = class_shares({"decision": confusion(truth, chosen["learned"], arms, current, cfg.estimator.min_gain)})
    row = {"inputs": name, "members": len(truth), "true gain": float(gain)}
    for _, r in shares.iterrows():
        row[r["class"]] = r["decision"] if r["class"] == "agreement" else r["learned"]
    decision = shares.set_index("class")["decision"]
    return row, decision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs/frequency/synthetic.yaml"))
    parser.add_argument("--as-of", default="2024-12-31")
    args = parser.parse_args()
    cfg, feats = load_frequency_config(args.config)
    arms, current = sorted(cfg.experiment.arms), cfg.experiment.current
    con = open_store(cfg.store, deterministic=True)
    try:
        rows = experiment_rows(con, cfg.experiment, feats, datetime.fromisoformat(args.as_of))
        truth = _truth(cfg, con, rows.frame["customer_id"])
        links = con.execute("select source, source_record_id, customer_id from identity_links").df()
    finally:
        con.close()
    if truth is None:
        raise SystemExit(f"{args.config}: no 'truth' in the config: this script needs the synthetic world's truth")
    values = truth[[f"value_{a}" for a in arms]].to_numpy(float)
    frame = rows.frame
    # one person per customer, for the traits (a customer merging two people has no single tolerance)
    pairs = person_customers(pd.read_parquet(cfg.truth.record_owner), links)
    single = pairs.groupby("customer_id").filter(lambda g: len(g) == 1)
    people = pd.read_parquet(Path(cfg.truth.cadence).with_name("people.parquet"))
    cadence = pd.read_parquet(cfg.truth.cadence)[["person_id", "start_load", "tolerance"]]
    traits = (
        frame[["customer_id"]]
        .merge(single, on="customer_id", how="left")
        .merge(people[["person_id", "email_responsiveness", "purchase_rate"]], on="person_id", how="left")
        .merge(cadence, on="person_id", how="left")
    )
    keep = (
        np.isfinite(values).all(axis=1) & traits[["email_responsiveness", "start_load"]].notna().all(axis=1).to_numpy()
    )
    values, frame, traits = values[keep], frame[keep].reset_index(drop=True), traits[keep].reset_index(drop=True)
    j = arms.index(current)
    gains = values - values[:, [j]]
    fold = folds_of(frame["customer_id"].to_numpy(), 2, cfg.estimator.seed)
    inputs = {
        "features (the ceiling of any estimator on them)": to_model_frame(frame, rows.features, rows.categorical),
        "traits: responsiveness, purchase rate, start load": traits[
            ["email_responsiveness", "purchase_rate", "start_load"]
        ],
        "traits + tolerance": traits[["email_responsiveness", "purchase_rate", "start_load", "tolerance"]],
    }
    table, decision = [], None
    for name, X in inputs.items():
        print(f"fitting on {name} ...", flush=True)
        row, decision = judged(name, cross_fitted(X, gains, fold, j), values, arms, current, cfg)
        table.append(row)
    table.append(
        {"inputs": f"decision truth (gain > {cfg.estimator.min_gain:g})", "members": len(values)}
        | {c: decision[c] for c in ("saturated", "on_target", "under_saturated")}
    )
    print()
    print(f"{len(values):,} members of the cadence experiment with truth and a single person behind them")
    head = ["inputs of the regression on the truth's own values", "true gain", "saturated", "on target", "under"]
    print("| " + " | ".join([*head, "classed as the decision truth"]) + " |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in table:
        gain = f"{r['true gain']:+.3f}" if "true gain" in r else ""
        agree = f"{r['agreement']:.1%}" if "agreement" in r else ""
        shares = f"{r['saturated']:.1%} | {r['on_target']:.1%} | {r['under_saturated']:.1%}"
        print(f"| {r['inputs']} | {gain} | {shares} | {agree} |")


if __name__ == "__main__":
    main()
