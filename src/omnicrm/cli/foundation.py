"""Commands of the foundation: ``generate``, ``ingest``, ``features``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from omnicrm.cli.app import ConfigArg, app
from omnicrm.cli.checks import check_truth
from omnicrm.cli.render import console, print_identity, print_ingest, print_world, reporting


@app.command()
def generate(
    config: ConfigArg = Path("configs/generate/default.yaml"),
    people: Annotated[int | None, typer.Option("--people", help="Override n_people.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Override seed.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Override out_dir.")] = None,
) -> None:
    """Generate the synthetic omni-channel world (raw source files + ground truth)."""
    from omnicrm.config import load_config, validate_config
    from omnicrm.synthetic import WorldConfig, generate_world

    cfg = load_config(WorldConfig, config)
    overrides = {"n_people": people, "seed": seed, "out_dir": str(out) if out else None}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:  # re-validated, so an override gets the same checks as the file
        cfg = validate_config(WorldConfig, cfg.model_dump() | overrides, f"{config} (command-line overrides)")
    with reporting() as progress:
        summary = generate_world(cfg, Path(cfg.out_dir), progress=progress)
    print_world(summary)


@app.command()
def ingest(
    config: ConfigArg = Path("configs/ingest/synthetic.yaml"),
    truth: Annotated[
        Path | None,
        typer.Option("--truth", help="A synthetic world's truth folder: report identity precision / recall."),
    ] = None,
) -> None:
    """Validate, quarantine, pseudonymise and link every source; publish the store atomically."""
    from omnicrm.pipeline.ingest import evaluate_identity, load_ingest, run_ingest
    from omnicrm.store.outputs import check_output_path

    if truth is not None:  # checked before the store is replaced, not after
        check_truth(truth)
    cfg, _ = load_ingest(config)
    check_output_path(cfg.store, what=f"{config}: key 'store'")
    with reporting() as progress:
        result = run_ingest(config, progress=progress)
    print_ingest(result)
    if truth is not None:
        print_identity(evaluate_identity(config, truth))


@app.command()
def features(
    config: ConfigArg,
    cutoff: Annotated[
        list[datetime],
        typer.Option(
            "--cutoff", help="Cutoff date (repeatable); features read only ts < cutoff.", formats=["%Y-%m-%d"]
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output Parquet file.")],
) -> None:
    """Point-in-time feature snapshots: one row per (customer, cutoff)."""
    from omnicrm.store.outputs import PARQUET, check_output_path

    check_output_path(out, PARQUET)
    from omnicrm.pipeline.features import run_features

    with reporting() as progress:
        result = run_features(config, [c.date() for c in cutoff], out, progress=progress)
    console.print(
        f"features: {result.rows:,} rows x {result.columns} columns for {len(result.cutoffs)} cutoff(s) -> {result.out}"
    )
