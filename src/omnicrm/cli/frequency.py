"""Command of learned contact cadences: ``frequency``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from omnicrm.cli.app import ConfigArg, app
from omnicrm.cli.checks import check_as_of
from omnicrm.cli.render import print_frequency, reporting


@app.command()
def frequency(
    config: ConfigArg,
    as_of: Annotated[
        datetime,
        typer.Option("--as-of", help="Decision date; features and history read only ts < as-of.", formats=["%Y-%m-%d"]),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Output Parquet file (contact_frequency); features are written beside it.")
    ],
) -> None:
    """Learned contact cadence per customer and channel from the cadence experiment, judged on it."""
    from omnicrm.store.outputs import PARQUET, check_output_path

    check_output_path(out, PARQUET)
    from omnicrm.frequency.config import load_frequency_config
    from omnicrm.pipeline.frequency import features_path

    check_output_path(features_path(out), PARQUET)
    check_as_of(load_frequency_config(config)[0].store, as_of)
    from omnicrm.pipeline.frequency import run_frequency

    with reporting() as progress:
        result = run_frequency(config, as_of, out, progress=progress)
    print_frequency(result)
