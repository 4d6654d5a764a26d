"""Commands of uplift and campaign readouts: ``uplift``, ``effects``, ``readout``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from omnicrm.cli.app import ConfigArg, app
from omnicrm.cli.checks import check_as_of
from omnicrm.cli.render import console, print_readout, print_uplift, reporting


@app.command()
def uplift(config: ConfigArg) -> None:
    """Train and evaluate uplift learners (Qini, uplift AUC, policy values over several split seeds)."""
    from omnicrm.pipeline.uplift import run_uplift

    with reporting() as progress:
        result = run_uplift(config, progress=progress)
    print_uplift(result)


@app.command()
def effects(
    config: ConfigArg,
    as_of: Annotated[
        datetime, typer.Option("--as-of", help="Score date; features read only ts < as-of.", formats=["%Y-%m-%d"])
    ],
    out: Annotated[Path, typer.Option("--out", help="Output Parquet file (customer_id, action, outcome, effect).")],
    model: Annotated[
        str | None, typer.Option("--model", help="Score with a registered model (champion, candidate or a version).")
    ] = None,
) -> None:
    """Per-customer effect of every action for every customer at a date (refit and register, or --model)."""
    from omnicrm.store.outputs import PARQUET, check_output_path

    check_output_path(out, PARQUET)
    from omnicrm.pipeline.uplift import load_uplift_config, write_effects
    from omnicrm.uplift.data import StoreSource

    source = load_uplift_config(config)[0].source
    if isinstance(source, StoreSource):
        check_as_of(source.store, as_of)

    with reporting() as progress:
        result = write_effects(config, as_of, out, progress=progress, model=model)
    console.print(
        f"effects: {result.customers:,} customers x {len(result.actions)} actions ({', '.join(result.actions)}) "
        f"from {result.training_rows:,} training rows -> {result.out}\nmodel: {result.model}"
    )


@app.command()
def readout(config: ConfigArg) -> None:
    """Campaign readout as A/B tests: each action's effect vs control with 95% intervals and MDE."""
    from omnicrm.pipeline.uplift import run_readout

    with reporting() as progress:
        result = run_readout(config, progress=progress)
    print_readout(result.table, "campaign readout (difference in means vs control, Welch 95% CI)")
    if result.segments is not None:
        print_readout(result.segments, "readout by segment")
