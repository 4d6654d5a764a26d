"""Commands of the prediction tasks: ``train``, ``tune``, ``promote``, ``predict``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from omnicrm.cli.app import ConfigArg, app
from omnicrm.cli.render import console, print_promotion, print_task_metrics, print_task_table, reporting


@app.command()
def train(
    config: ConfigArg,
    promote: Annotated[
        bool,
        typer.Option(
            "--promote", help="Then promote each trained model: the better of model and baseline, if not worse."
        ),
    ] = False,
) -> None:
    """Train a task's model(s) with baselines, evaluate on the later cutoff, refit on every labelled cutoff, register.

    The registered model and best baseline are refitted on training, validation and evaluation cutoffs
    (``model.refit: false`` registers the evaluated ones); the figures printed are the evaluation's.
    """
    from omnicrm.pipeline.train import train
    from omnicrm.tasks.train import summary_table

    with reporting() as progress:
        results = train(config, progress=progress)
    print_task_table(summary_table(results), f"{config}: evaluation cutoff")
    print_task_metrics(results)
    _print_refits(results)
    if promote:
        _promote_all([r.registered_name for r in results])


def _print_refits(results: list) -> None:
    """One line per registered refit: what was registered, and which run's figures judge it."""
    for r in results:
        if r.refit is not None and r.version:
            info = r.refit.info
            console.print(
                f"{r.registered_name} v{r.version} (baseline v{r.baseline_version}): refit on {info['refit_cutoffs']} "
                f"cutoffs ({info['refit_rows']:,} rows, {info['refit_trees']} trees); the figures above are its "
                f"evaluation run {r.run_id}'s",
                highlight=False,
            )


def _promote_all(names: list[str]) -> None:
    """Promote each registered model; a refusal is printed with its figures and ends with exit code 1."""
    from omnicrm.pipeline.promote import PromotionRefused
    from omnicrm.pipeline.promote import promote as promote_one

    refused = False
    for name in dict.fromkeys(names):
        try:
            with reporting() as progress:
                r = promote_one(name, progress=progress)
        except PromotionRefused as e:
            refused = True
            console.print(f"[bold red]{e}[/]", highlight=False)
            continue
        print_promotion(r)
    if refused:
        raise typer.Exit(1)


@app.command()
def tune(
    config: ConfigArg,
    trials: Annotated[
        int | None, typer.Option("--trials", help="Total trials wanted (default: search.n_trials).")
    ] = None,
) -> None:
    """Optuna study (resumable, pruned, nested MLflow runs), then train and register the best model."""
    from omnicrm.pipeline.tune import tune
    from omnicrm.tasks.train import summary_table

    with reporting() as progress:
        tuned, results = tune(config, progress=progress, n_trials=trials)
    for t in tuned:
        console.print(
            f"study {t.study}: {t.trials_total} trials ({t.trials_run} run now, {t.pruned} pruned); "
            f"best validation value {t.best_value:.4f} with {t.best_params}"
        )
    print_task_table(summary_table(results), f"{config}: tuned models on the evaluation cutoff")
    _print_refits(results)


@app.command()
def promote(
    task: Annotated[
        str,
        typer.Argument(
            help="churn, next_purchase, clv, clv-margin, propensity-<target>, <namespace>-churn, "
            "<dataset>-recommend, <dataset>-uplift-<outcome>."
        ),
    ],
    force: Annotated[
        bool,
        typer.Option("--force", help="Promote the candidate even if it is worse than its baseline or the champion."),
    ] = False,
) -> None:
    """Move the champion alias to the better of candidate and its baseline, if not worse than the champion.

    All three are compared on the candidate's evaluation cutoff: candidate and baseline by the figures
    their evaluation run measured there (the registered versions are refits that have seen its
    labels), the champion scored there if it has not seen them, else by its own evaluation figures
    on the same cutoff; the line printed names the version promoted, why, and all three figures.
    """
    from omnicrm.pipeline.promote import promote

    with reporting() as progress:
        r = promote(task, force=force, progress=progress)
    print_promotion(r)


@app.command()
def predict(
    config: ConfigArg,
    as_of: Annotated[
        datetime, typer.Option("--as-of", help="Score date: features read ts < as-of.", formats=["%Y-%m-%d"])
    ],
    out: Annotated[Path, typer.Option("--out", help="Output file (.parquet or .csv).")],
    model: Annotated[str | None, typer.Option("--model", help="Alias or version (default: champion).")] = None,
    reasons: Annotated[bool, typer.Option("--reasons", help="Add each customer's top 3 reasons.")] = False,
    horizon: Annotated[
        int | None,
        typer.Option(
            "--horizon",
            min=1,
            help="Forecast horizon in days (clv, next_purchase): adds each score carried to it, "
            "e.g. pred_spend_180d (docs/tasks.md, Forecast horizon).",
        ),
    ] = None,
    btyd: Annotated[
        bool,
        typer.Option(
            "--btyd",
            help="Add BG/NBD and Pareto/NBD expected purchases and P(alive), Gamma-Gamma spend per "
            "transaction and CLV over the horizon, fitted at --as-of.",
        ),
    ] = False,
    baselines: Annotated[
        bool, typer.Option("--baselines", help="Add every baseline's score (<score>_baseline_<name>).")
    ] = False,
) -> None:
    """Score every customer of the task's population at a date with a registered model."""
    from omnicrm.store.outputs import CSV, PARQUET, check_output_path

    check_output_path(out, PARQUET + CSV)
    from omnicrm.pipeline.predict import predict

    with reporting() as progress:
        r = predict(
            config,
            as_of.date(),
            out,
            model=model,
            reasons=reasons,
            progress=progress,
            horizon=horizon,
            btyd=btyd,
            baselines=baselines,
        )
    models = ", ".join(f"{k} v{v}" for k, v in r.models.items())
    console.print(f"scores: {r.rows:,} customers x {len(r.columns)} columns ({models}) -> {r.out}")
    for name, counts in r.out_of_range.items():
        top = ", ".join(f"{f} {n:,}" for f, n in list(counts.items())[:5])
        more = f" (+{len(counts) - 5} more features)" if len(counts) > 5 else ""
        console.print(
            f"[yellow]inputs outside {name}'s training range[/] (rows of {r.rows:,}): {top}{more}", highlight=False
        )
    for note in r.notes:
        console.print(f"[yellow]{note}[/]", highlight=False)
