"""The marketing report command: ``report``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from omnicrm.cli.app import ConfigArg, app
from omnicrm.cli.render import print_report, reporting


@app.command()
def report(
    config: ConfigArg,
    start: Annotated[
        datetime, typer.Option("--from", help="First day of the period (included).", formats=["%Y-%m-%d"])
    ],
    end: Annotated[
        datetime,
        typer.Option(
            "--to", help="End of the period (excluded); figures read only events before it.", formats=["%Y-%m-%d"]
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output HTML file (one self-contained page).")],
) -> None:
    """Marketing report: KPIs, cohorts, lifecycle flows, value, NPS, campaign ROI and attribution as one HTML page."""
    from omnicrm.errors import ConfigError
    from omnicrm.pipeline.report import HTML
    from omnicrm.store.outputs import check_output_path

    check_output_path(out, HTML)
    if end <= start:
        raise ConfigError(f"--to {end:%Y-%m-%d} must be after --from {start:%Y-%m-%d}")
    from omnicrm.pipeline.report import run_report

    # run_report checks --from and --to against the store's events before it computes anything
    with reporting() as progress:
        result = run_report(config, start, end, out, progress=progress)
    print_report(result)
