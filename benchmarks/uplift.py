"""Uplift benchmark: held-out Qini per learner over split seeds, policy values, and (synthetic) truth.

    .venv/bin/python benchmarks/uplift.py configs/uplift/hillstrom.yaml [more configs] [--bootstrap 200] > out.md

For each config, runs :func:`omnicrm.pipeline.uplift.run_uplift` (which also logs to MLflow) and prints
markdown tables ready for benchmarks/README.md: per outcome, action and learner the Qini coefficient,
uplift AUC and uplift at k (mean over the config's split seeds, held-out by cross-fitting), the
Spearman correlation with the true effects when the config has a ``truth`` block, and the policy
values against the best constant policy with the module's verdict.

Two spreads are reported for the Qini coefficient, because they answer different questions:

* **95% bootstrap interval over customers** (the honest one): the first seed's held-out effects are
  kept fixed and the customers are resampled with replacement (all rows of a drawn customer
  together), ``--bootstrap`` times; the interval is the 2.5 and 97.5 percentiles of the Qini
  coefficient. It measures how much the figure would move on another sample of customers.
* **seed std**: the standard deviation over split seeds. Cross-fitting scores *every* row in every
  seed, so the seeds share their test rows; this spread shows only how the fits vary with the split,
  and leaves out test-sample variance. It used to be printed as the only "±" (issue 11).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

#: bootstrap resamples per (outcome, learner, action) unless --bootstrap says otherwise
BOOTSTRAP = 200


def _pm(row: pd.Series, col: str, fmt: str = ".4f") -> str:
    std = row.get(f"{col}_std", float("nan"))
    return f"{row[col]:{fmt}} ± {std:{fmt}}" if pd.notna(std) else f"{row[col]:{fmt}}"


def bootstrap_qini(
    effect: np.ndarray,
    actions: list,
    arm: np.ndarray,
    y: np.ndarray,
    units: np.ndarray,
    control: object,
    reps: int,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95% percentile interval of each action's Qini coefficient, customers resampled with replacement.

    ``effect`` (rows x actions) stays fixed: the interval is the test-sample variance of the figure
    for these held-out effects. A drawn customer brings all their rows (a cluster bootstrap: one
    customer's exposures are not independent).
    """
    from omnicrm.uplift import metrics as M

    arm = np.asarray(arm, dtype=object)
    codes, uniq = pd.factorize(pd.Series(units), sort=True)
    rng = np.random.default_rng(seed)
    rows = np.arange(len(arm))
    values: dict[str, list[float]] = {str(a): [] for a in actions}
    for _ in range(reps):
        drawn = np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq))
        idx = np.repeat(rows, drawn[codes])
        for j, a in enumerate(actions):
            sel = idx[(arm[idx] == a) | (arm[idx] == control)]
            values[str(a)].append(M.qini_coefficient(y[sel], effect[sel, j], arm[sel] == a))
    return {a: (float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))) for a, v in values.items()}


def report(config: str, reps: int = BOOTSTRAP) -> str:
    from omnicrm.pipeline.uplift import load_data, load_uplift_config, run_uplift
    from omnicrm.uplift.data import UNIT

    cfg, feats = load_uplift_config(config)
    t0 = time.perf_counter()
    result = run_uplift(config)
    secs = time.perf_counter() - t0
    # the rows the evaluation scored (same loader, same order), for resampling customers
    data = load_data(cfg, feats)
    arm, units = data.arms, data.frame[UNIT].to_numpy()
    t1 = time.perf_counter()
    intervals = {
        (outcome, learner, str(a)): ci
        for outcome, ev in result.evaluations.items()
        for learner, (effect, actions) in ev.effects.items()
        for a, ci in bootstrap_qini(
            effect, actions, arm, data.frame[outcome].to_numpy(float), units, data.control, reps
        ).items()
    }
    boot_secs = time.perf_counter() - t1
    tab = result.table
    k_col = next(c for c in tab.columns if c.startswith("uplift_at_") and not c.endswith("_std"))
    truth = "spearman_truth" in tab.columns
    lines = [
        f"### `{config}` — {result.rows:,} rows, {cfg.evaluation.seeds} split seeds × {cfg.evaluation.folds}-fold "
        f"cross-fitting, {secs:.0f} s (MLflow run `{result.run_id}`); bootstrap {reps} resamples of customers, "
        f"{boot_secs:.0f} s",
        "",
        "Qini coefficient: mean over split seeds; 95% interval from resampling customers (first seed's held-out "
        "effects); seed std for comparison (it leaves out test-sample variance). Other metrics: mean ± seed std.",
        "",
        "| outcome | action | learner | Qini coef. | 95% interval (customers) | seed std | uplift AUC | "
        + k_col.replace("_", " ")
        + " | ATE (random) |"
        + (" Spearman vs truth | per campaign (min..max) |" if truth else ""),
        "|---|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|---|" if truth else ""),
    ]
    for _, r in tab.iterrows():
        lo, hi = intervals[(r["outcome"], r["learner"], str(r["action"]))]
        cells = [
            r["outcome"],
            r["action"],
            r["learner"],
            f"{r['qini']:.4f}",
            f"[{lo:.4f}, {hi:.4f}]",
            f"{r['qini_std']:.4f}" if pd.notna(r.get("qini_std")) else "",
            _pm(r, "uplift_auc"),
            _pm(r, k_col),
            f"{r['ate']:.4f}",
        ]
        if truth:
            per = [r[c] for c in tab.columns if c.startswith("spearman_truth.") and not c.endswith("_std")]
            cells += [_pm(r, "spearman_truth", ".3f"), f"{min(per):.3f} .. {max(per):.3f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [
        "",
        "Policy value per customer (IPW on held-out randomised rows, mean over seeds ± mean SE):",
        "",
        "| outcome | learner | policy | value | treated |",
        "|---|---|---|---:|---:|",
    ]
    for _, r in result.policy.iterrows():
        lines.append(
            f"| {r['outcome']} | {r['learner']} | {r['policy']} | {r['value']:.4f} ± {r['se']:.4f} | "
            f"{r['treated_share']:.0%} |"
        )
    lines += [""]
    for outcome, by in result.verdicts.items():
        for learner, text in by.items():
            lines.append(f"- {outcome} / {learner}: {text}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", default=["configs/uplift/hillstrom.yaml"])
    parser.add_argument("--bootstrap", type=int, default=BOOTSTRAP, help="customer resamples per Qini interval")
    args = parser.parse_args(argv)
    if args.bootstrap < 1:
        raise SystemExit("--bootstrap must be at least 1")
    for c in args.configs:
        if not Path(c).is_file():
            raise SystemExit(f"{c}: config not found")
        print(report(c, args.bootstrap), flush=True)


if __name__ == "__main__":
    main()
