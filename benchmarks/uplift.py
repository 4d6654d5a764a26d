"""Uplift benchmark: held-out Qini per learner over split seeds, policy values, and (synthetic) truth.

    .venv/bin/python benchmarks/uplift.py configs/uplift/hillstrom.yaml [more configs] > out.md

For each config, runs :func:`omnicrm.pipeline.uplift.run_uplift` (which also logs to MLflow) and prints
markdown tables ready for benchmarks/README.md: per outcome, action and learner the Qini coefficient,
uplift AUC and uplift at k (mean +- std over the config's split seeds, held-out by cross-fitting),
the Spearman correlation with the true effects when the config has a ``truth`` block, and the policy
values against the best constant policy with the module's verdict.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd


def _pm(row: pd.Series, col: str, fmt: str = ".4f") -> str:
    std = row.get(f"{col}_std", float("nan"))
    return f"{row[col]:{fmt}} ± {std:{fmt}}" if pd.notna(std) else f"{row[col]:{fmt}}"


def report(config: str) -> str:
    from omnicrm.pipeline.uplift import load_uplift_config, run_uplift

    cfg, _ = load_uplift_config(config)
    t0 = time.perf_counter()
    result = run_uplift(config)
    secs = time.perf_counter() - t0
    tab = result.table
    k_col = next(c for c in tab.columns if c.startswith("uplift_at_") and not c.endswith("_std"))
    truth = "spearman_truth" in tab.columns
    lines = [
        f"### `{config}` — {result.rows:,} rows, {cfg.evaluation.seeds} split seeds × {cfg.evaluation.folds}-fold "
        f"cross-fitting, {secs:.0f} s (MLflow run `{result.run_id}`)",
        "",
        "| outcome | action | learner | Qini coef. | uplift AUC | "
        + k_col.replace("_", " ")
        + " | ATE (random) |"
        + (" Spearman vs truth | per campaign (min..max) |" if truth else ""),
        "|---|---|---|---:|---:|---:|---:|" + ("---:|---|" if truth else ""),
    ]
    for _, r in tab.iterrows():
        cells = [
            r["outcome"],
            r["action"],
            r["learner"],
            _pm(r, "qini"),
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


def main(argv: list[str]) -> None:
    configs = argv or ["configs/uplift/hillstrom.yaml"]
    for c in configs:
        if not Path(c).is_file():
            raise SystemExit(f"{c}: config not found")
        print(report(c), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
