"""``omnicrm ui``: the MLflow UI over the runs and models the other commands logged."""

from __future__ import annotations

from typing import Annotated

import typer

from omnicrm.cli.app import app
from omnicrm.cli.render import console


@app.command()
def ui(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Start the MLflow UI on 127.0.0.1 against the local tracking store and print its address."""
    from omnicrm.tracking import serve_ui as serve

    serve(port, console.print)
