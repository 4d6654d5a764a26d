"""Commands of the recommenders: ``recommend-eval``, ``recommend``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from omnicrm.cli.app import ConfigArg, app
from omnicrm.cli.checks import check_as_of
from omnicrm.cli.render import console, print_recommend_eval, reporting


@app.command("recommend-eval")
def recommend_eval(config: ConfigArg) -> None:
    """Tune recommenders on a validation window, score them on the test window, log to MLflow."""
    from omnicrm.pipeline.recommend import evaluate_recommenders

    with reporting() as progress:
        result = evaluate_recommenders(config, progress=progress)
    print_recommend_eval(result)
    chosen = {k: v for k, v in result.params[result.serve].items() if not isinstance(v, dict)}
    console.print(
        f"`omnicrm recommend` on this config now refits {result.serve} with the params chosen here "
        f"(run {result.run_id[:8]}; --config-params for the config's): "
        + ", ".join(f"{k}={v}" for k, v in chosen.items())
    )


@app.command()
def recommend(
    config: ConfigArg,
    as_of: Annotated[datetime, typer.Option("--as-of", help="Use purchases before this date.", formats=["%Y-%m-%d"])],
    out: Annotated[Path, typer.Option("--out", help="Output Parquet file.")],
    model: Annotated[
        str | None, typer.Option("--model", help="Score with a registered model (champion, candidate or a version).")
    ] = None,
    config_params: Annotated[
        bool,
        typer.Option(
            "--config-params",
            help="Refit with the config's params, not those the newest recommend-eval run of this config chose.",
        ),
    ] = False,
) -> None:
    """Top-k products (with reasons) per customer with a purchase before --as-of: refit and register, or --model.

    The refit uses the params the newest ``recommend-eval`` run of the same config chose (else the
    config's), so what is served is what was evaluated.
    """
    from omnicrm.store.outputs import PARQUET, check_output_path

    check_output_path(out, PARQUET)
    from omnicrm.pipeline.recommend import write_recommendations
    from omnicrm.recommend.config import load_recommend_config

    check_as_of(load_recommend_config(config).store, as_of)

    with reporting() as progress:
        result = write_recommendations(
            config, as_of.date(), out, progress=progress, model=model, chosen_params=not config_params
        )
    console.print(
        f"recommendations ({result.method}, as of {result.as_of}): {result.rows:,} rows for "
        f"{result.customers:,} customers -> {result.out}\nmodel: {result.model}"
    )
