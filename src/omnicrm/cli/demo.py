"""``omnicrm demo``: every step, in data-flow order, on the synthetic world."""

from __future__ import annotations

from pathlib import Path

from omnicrm.cli.app import ConfigArg, app
from omnicrm.cli.render import print_demo, reporting


@app.command()
def demo(config: ConfigArg = Path("configs/demo.yaml")) -> None:
    """Run every step on the synthetic world, from generating it to the campaign readout.

    The steps the config lists: generate, ingest, features, train / tune / promote, recommend, uplift, readout.
    """
    from omnicrm.pipeline.demo import run_demo

    with reporting() as progress:
        result = run_demo(config, progress=progress)
    print_demo(result)
