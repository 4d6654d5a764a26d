"""The batch scoring command: ``score``.

Made for schedulers: exit status 0 (published), 2 (a user error: config, date, output folder, a
missing model, the lock held by a live run, an as-of date already published without ``--replace``),
3 (a drift check above its threshold with ``--fail-on-drift``: nothing published), 1 (anything
else), 130/143 (interrupted/terminated). Whatever the outcome, the last line on standard output is
one JSON object: ``{"status": ..., "exit": ..., ...}``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from omnicrm.cli.app import Terminated, app
from omnicrm.cli.render import console, reporting, show

#: exit status of a drift breach with --fail-on-drift
DRIFT_EXIT = 3


def _summary_line(summary: dict[str, Any]) -> None:
    console.print(json.dumps(summary, sort_keys=False, default=str), markup=False, highlight=False, soft_wrap=True)


def _accounting_table(manifest: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title=f"score: customers per step (as of {manifest['as_of']}, run {manifest['run_id']})")
    for col in ("step", "customers in", "scored", "excluded", "main reasons"):
        t.add_column(col, justify="right" if col in ("customers in", "scored", "excluded") else "left")
    for step, c in manifest["accounting"].items():
        reasons = "; ".join(f"{r} ({n:,})" for r, n in list(c["excluded_by_reason"].items())[:3])
        t.add_row(step, f"{c['customers_in']:,}", f"{c['scored']:,}", f"{c['excluded']:,}", reasons)
    return t


def _as_of(value: str | None) -> datetime:
    """``--as-of`` parsed here, not by the option parser: a scheduler gets the JSON line for this error too."""
    from omnicrm.errors import ConfigError

    if value is None:
        raise ConfigError("missing option --as-of DATE (YYYY-MM-DD): the date to score at")
    try:
        return datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise ConfigError(f"--as-of {value!r}: expected a date as YYYY-MM-DD, e.g. 2024-12-01") from None


@app.command()
def score(
    config: Annotated[Path | None, typer.Argument(help="YAML config file.", show_default=False)] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="Score date (YYYY-MM-DD); features and histories read only ts < as-of.", show_default=False
        ),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Score an as-of date again and replace its published run.")
    ] = False,
    fail_on_drift: Annotated[
        bool,
        typer.Option("--fail-on-drift", help="Exit 3 and publish nothing when a drift check breaches its threshold."),
    ] = False,
) -> None:
    """Batch scoring: every customer scored by the registry's champions or excluded with a reason."""
    summary: dict[str, Any] = {"status": "error", "exit": 1, "as_of": as_of, "config": str(config) if config else None}
    try:
        from omnicrm.errors import ConfigError
        from omnicrm.pipeline.score import DriftBreach, run_score

        if config is None:
            raise ConfigError("missing argument CONFIG: the scoring config, e.g. configs/score/synthetic.yaml")
        date = _as_of(as_of)
        try:
            with reporting() as progress:
                result = run_score(config, date, replace=replace, fail_on_drift=fail_on_drift, progress=progress)
        except DriftBreach as breach:
            result = breach.result
        m = result.manifest
        show(_accounting_table(m))
        if len(result.drift):
            flagged = result.drift[result.drift["breach"]]
            console.print(
                f"drift: {len(result.drift)} checks against run {m['drift']['previous_run'] or '(none)'}, "
                f"{len(flagged)} above threshold",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            if len(flagged):
                console.print(flagged.to_string(index=False), markup=False, highlight=False, soft_wrap=True)
        models = ", ".join(f"{x['name']} v{x['version']}" for x in m["models"])
        where = result.folder if result.published else "not published (--fail-on-drift)"
        console.print(f"models: {models}\nrun -> {where}", markup=False, highlight=False, soft_wrap=True)
        status, code = ("ok", 0) if result.published else ("drift", DRIFT_EXIT)
        summary |= {
            "status": status,
            "exit": code,
            "run_id": m["run_id"],
            "published": result.published,
            "folder": str(result.folder) if result.folder else None,
            "customers": m["customers"],
            "scored": {s: c["scored"] for s, c in m["accounting"].items()},
            "excluded": {s: c["excluded"] for s, c in m["accounting"].items()},
            "drift_breaches": result.breaches,
            "seconds": round(sum(t["seconds"] for t in m["steps"].values()), 1),
            "mlflow_run_id": result.mlflow_run_id,
        }
        if code:
            raise typer.Exit(code)
    except typer.Exit:
        raise
    except BaseException as exc:
        from omnicrm.errors import OmnicrmError

        interrupted = isinstance(exc, KeyboardInterrupt)
        summary |= {
            "status": "interrupted" if interrupted else "error",
            "exit": (143 if isinstance(exc, Terminated) else 130)
            if interrupted
            else (2 if isinstance(exc, OmnicrmError) else 1),
            "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:500],
        }
        raise
    finally:
        _summary_line(summary)
