"""Commands of next-best-action lists: ``nba`` and ``nba-eval``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from omnicrm.cli.app import ConfigArg, app
from omnicrm.cli.checks import check_as_of
from omnicrm.cli.render import console, print_nba_eval, reporting


@app.command()
def nba(
    config: ConfigArg,
    as_of: Annotated[
        datetime,
        typer.Option("--as-of", help="Decision date; features and history read only ts < as-of.", formats=["%Y-%m-%d"]),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Output list (.parquet or .csv); the excluded table is written beside it.")
    ],
    model: Annotated[
        str, typer.Option("--model", help="Effect models' version: champion, candidate or a version number.")
    ] = "champion",
) -> None:
    """Next-best-action list: the action, channel and product per customer under consent, caps and budget."""
    from omnicrm.store.outputs import CSV, PARQUET, check_output_path

    check_output_path(out, PARQUET + CSV)
    from omnicrm.pipeline.nba import excluded_path, run_nba

    check_output_path(excluded_path(out), PARQUET + CSV)
    from omnicrm.nba.catalogue import load_catalogue

    check_as_of(load_catalogue(config).require_store(str(config)), as_of)
    with reporting() as progress:
        result = run_nba(config, as_of, out, progress=progress, model=model)
    s = result.summary
    budget = f", budget used {s['budget_used']:.1%}" if "budget_used" in s else ""
    console.print(
        f"nba: {result.rows:,} sends to {int(s['customers_sent']):,} of {result.customers:,} customers, expected "
        f"incremental value {s['expected_incremental_value']:,.2f} at cost {s['cost']:,.2f}{budget}; "
        f"solver {result.method}, gap to the LP bound {s['solver_gap']:.2%}\n"
        f"list -> {result.out}\nexcluded -> {result.excluded}\n"
        f"models: {', '.join(f'{k} v{v}' for k, v in sorted(result.models.items()))}"
    )
    if result.long_term is not None:
        console.print(long_term_line(result.long_term, s))
    if s.get("drivers_rows", 0) > 0:
        console.print(
            f"drivers: the effect's largest contributions for the {int(s['drivers_rows']):,} sent rows in "
            f"{s.get('seconds.drivers', 0.0):.2f} s (effects for every customer: {s.get('seconds.effects', 0.0):.2f} s)"
        )
    if len(result.table):
        console.print(result.table.to_string(index=False, float_format=lambda x: f"{x:,.2f}"))


def long_term_line(lt: dict, summary: dict[str, float]) -> str:
    """The run summary's line about the long-term weight: its formula's settings and the weights sent."""
    ref = f"the population's {lt['reference']} of {lt['column']}" if lt["reference"] != "fixed" else "fixed"
    line = (
        f"long-term weight: clip(1 + {lt['weight']:g} × ({lt['column']} / {lt['reference_value']:,.4g} − 1), "
        f"{lt['min']:g}, {lt['max']:g}) multiplies the value ({lt['reference_value']:,.4g}: {ref}; "
        f"{lt['missing']:,} customers without {lt['column']} weigh 1)"
    )
    if "long_term.sent_mean" in summary:
        line += (
            f"; on the sent rows mean {summary['long_term.sent_mean']:.3f}, "
            f"range {summary['long_term.sent_min']:.3f}..{summary['long_term.sent_max']:.3f}"
        )
    return line


@app.command("nba-eval")
def nba_eval(config: ConfigArg) -> None:
    """Judge the catalogue off-policy: next-best action vs propensity-ranked, single action, random, none."""
    from omnicrm.pipeline.nba_eval import run_nba_eval

    with reporting() as progress:
        result = run_nba_eval(config, progress=progress)
    print_nba_eval(result)
    console.print(f"run {result.run_id} (plot: plots/value_vs_budget.png)", highlight=False)
