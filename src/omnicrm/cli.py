"""The ``omnicrm`` command line: a thin layer over ``omnicrm.pipeline``.

Commands print summaries with rich and show a progress bar for every step that takes more than a
moment. Every command runs inside one error handler (:func:`_handled`):

* a user error (:class:`~omnicrm.errors.OmnicrmError`) prints one ``error:`` line and exits 2, as
  click's own usage errors do;
* an interrupt (Ctrl-C, DuckDB's "Query interrupted") prints one ``interrupted:`` line and exits
  130; outputs are published atomically, so earlier ones are unchanged;
* anything else is a bug: its traceback goes to a log file (``$OMNICRM_LOG_DIR``, default
  ``logs/`` in the working folder), and one line names the exception and the log; exit 1.

``omnicrm --debug COMMAND`` (or ``OMNICRM_DEBUG=1``) prints the traceback as well. Warnings are
shown once each as ``warning:`` lines. Output paths and dates are checked before any work starts.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from omnicrm.errors import InputError, OmnicrmError

#: width of tables when output goes to a file or pipe (a scheduler's log): rich would use 80
#: columns there and squeeze cells to "..." (library-notes section 13)
PIPE_WIDTH = 200


def _console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=max(console.width, PIPE_WIDTH))


console = _console()
err_console = _console(stderr=True)


class _HandledGroup(TyperGroup):
    """The group of all commands: each runs inside :func:`_handled`, the one error handler."""

    def invoke(self, ctx: typer.Context) -> object:
        argv = [*getattr(ctx, "_protected_args", []), *ctx.args]  # read before the group consumes them
        with _handled(ctx, argv), _sigterm_interrupts():
            return super().invoke(ctx)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's timeout, ``kill``): handled like Ctrl-C, so temporary files are removed."""


_SIGTERM_SEEN = threading.Event()
#: set once a command's interrupt was reported (omnicrm.entry reports the others)
INTERRUPT_REPORTED = threading.Event()


def _raise_terminated(signum: int, frame: object) -> None:  # noqa: ARG001 - a signal handler's signature
    _SIGTERM_SEEN.set()
    raise Terminated()


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While a command runs, SIGTERM unwinds it like Ctrl-C (writers clean up, the store stays as it was)."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    _SIGTERM_SEEN.clear()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


app = typer.Typer(
    help="omnicrm: unified customer history, point-in-time features and models for omni-channel retail.",
    no_args_is_help=True,
    add_completion=False,
    cls=_HandledGroup,
)


@app.callback()
def _options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="OMNICRM_DEBUG",
            help="On an error, print the full traceback too (it is always written to the log file).",
        ),
    ] = False,
) -> None:
    # read by _handled from the group's parameters; nothing to do here
    pass


@contextmanager
def _progress() -> Iterator[Callable[[str, float], None]]:
    """A rich progress bar driven by the pipeline's ``progress(step, fraction)`` callback.

    On an error or interrupt the bar is removed, so the handler's one line is all that is shown.
    """
    bar = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task = bar.add_task("starting", total=1.0)

    def update(step: str, fraction: float) -> None:
        bar.update(task, description=step, completed=max(0.0, min(1.0, fraction)))

    bar.start()
    try:
        yield update
    except BaseException:
        bar.update(task, visible=False)
        bar.live.stop()  # not bar.stop(): that adds an empty line when the output is not a terminal
        raise
    bar.update(task, description="done", completed=1.0)
    bar.stop()


#: third-party deprecation notices a user cannot act on (mlflow's SQLAlchemy store, mlflow's
#: input-example check); everything else is shown once as a "warning:" line
_KNOWN_NOISE = ("The ``noload`` loader strategy is deprecated", "Operation with range is deprecated")


@contextmanager
def _handled(ctx: typer.Context, argv: list[str]) -> Iterator[None]:
    """Turn whatever a command raises into one line and an exit status (see the module docstring)."""
    debug = bool(ctx.params.get("debug"))
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        for message in _KNOWN_NOISE:
            warnings.filterwarnings("ignore", message=message)
        warnings.showwarning = _show_warning  # type: ignore[assignment]
        try:
            yield
        except (typer.Exit, typer.Abort, typer.TyperException, SystemExit, GeneratorExit):
            raise  # the command line's own exits and usage errors (exit 2) stay as they are
        except BrokenPipeError:
            raise  # `omnicrm ... | head`: click exits quietly
        except BaseException as exc:  # noqa: BLE001 - the one place every failure is reported
            command = ctx.invoked_subcommand or "omnicrm"
            if _interrupted(exc):
                if debug:
                    _print_traceback(exc)
                how, status = ("terminated", 143) if _terminated(exc) else ("interrupted", 130)
                INTERRUPT_REPORTED.set()
                _say(f"[bold yellow]{how}:[/] {escape(command)} stopped; no output was left half-written")
                raise typer.Exit(status) from None
            if debug:
                _print_traceback(exc)
            if isinstance(exc, OmnicrmError):
                _say(f"[bold red]error:[/] {escape(str(exc))}")
                raise typer.Exit(2) from None
            log = _write_log(exc, ["omnicrm", *argv])
            where = f"details: {log}; " if log else ""
            _say(
                f"[bold red]error:[/] {escape(type(exc).__name__)}: {escape(_first_line(exc))} "
                f"({escape(where)}rerun with --debug for the traceback)"
            )
            raise typer.Exit(1) from None


def _interrupted(exc: BaseException) -> bool:
    """Ctrl-C, as Python or DuckDB report it, here or anywhere in the chain of causes."""
    duckdb = sys.modules.get("duckdb")  # not imported: cannot be DuckDB's
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt) or (duckdb is not None and isinstance(e, duckdb.InterruptException)):
            return True
        if isinstance(e, RuntimeError) and str(e).strip().startswith("Query interrupted"):
            return True
        e = e.__cause__ or e.__context__
    return False


def _terminated(exc: BaseException) -> bool:
    # DuckDB turns the handler's exception into its own InterruptException, so the signal is remembered
    return isinstance(exc, Terminated) or _SIGTERM_SEEN.is_set()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else "(no message)"
    return line if len(line) <= 300 else line[:297] + "..."


def _say(markup: str) -> None:
    err_console.print(markup, highlight=False, soft_wrap=True)


def _print_traceback(exc: BaseException) -> None:
    sys.stderr.write("".join(traceback.format_exception(exc)))
    sys.stderr.flush()


def _write_log(exc: BaseException, argv: list[str]) -> Path | None:
    """Write the traceback to ``omnicrm-<UTC time>-<pid>.log``; returns its path (None if nowhere was writable).

    The folder is ``$OMNICRM_LOG_DIR`` or ``logs/`` in the working folder (created with a
    ``.gitignore`` of ``*``: an error message can quote a data value, so logs stay out of git),
    falling back to the system temp folder. The file is readable by its owner only.
    """
    import tempfile

    from omnicrm import __version__

    now = datetime.now(UTC)
    name = f"omnicrm-{now:%Y%m%dT%H%M%SZ}-{os.getpid()}.log"
    text = (
        f"time: {now.isoformat(timespec='seconds')}\ncommand: {' '.join(argv)}\ncwd: {Path.cwd()}\n"
        f"omnicrm {__version__}, Python {sys.version.split()[0]}, {sys.platform}\n\n"
        + "".join(traceback.format_exception(exc))
    )
    configured = os.environ.get("OMNICRM_LOG_DIR")
    for folder in (Path(configured) if configured else Path("logs"), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not configured and folder == Path("logs") and not (folder / ".gitignore").exists():
                (folder / ".gitignore").write_text("*\n", encoding="utf-8")
            path = folder / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            return path
        except OSError:
            continue
    return None


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    _say(f"[yellow]warning:[/] {escape(str(message))}")


ConfigArg = Annotated[Path, typer.Argument(help="YAML config file.", show_default=False)]


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
    with _progress() as progress:
        summary = generate_world(cfg, Path(cfg.out_dir), progress=progress)
    _print_world(summary)


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
        _check_truth(truth)
    cfg, _ = load_ingest(config)
    check_output_path(cfg.store, what=f"{config}: key 'store'")
    with _progress() as progress:
        result = run_ingest(config, progress=progress)
    _print_ingest(result)
    if truth is not None:
        _print_identity(evaluate_identity(config, truth))


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

    with _progress() as progress:
        result = run_features(config, [c.date() for c in cutoff], out, progress=progress)
    console.print(
        f"features: {result.rows:,} rows x {result.columns} columns for {len(result.cutoffs)} cutoff(s) -> {result.out}"
    )


def _check_truth(truth: Path) -> None:
    if not truth.is_dir():
        raise InputError(
            f"--truth {truth}: {'not a folder' if truth.exists() else 'no such folder'}; "
            "give a synthetic world's truth folder (e.g. data/world/truth)"
        )
    if not (truth / "record_owner.parquet").is_file():
        raise InputError(
            f"--truth {truth}: no record_owner.parquet in it; give a synthetic world's truth folder "
            "(e.g. data/world/truth)"
        )


# --- prediction tasks (issue 3) ---


@app.command()
def train(config: ConfigArg) -> None:
    """Train a task's model(s) with baselines, evaluate on the later cutoff, log and register in MLflow."""
    from omnicrm.tasks.train import summary_table, train

    with _progress() as progress:
        results = train(config, progress=progress)
    _print_task_table(summary_table(results), f"{config}: evaluation cutoff")


@app.command()
def tune(
    config: ConfigArg,
    trials: Annotated[
        int | None, typer.Option("--trials", help="Total trials wanted (default: search.n_trials).")
    ] = None,
) -> None:
    """Optuna study (resumable, pruned, nested MLflow runs), then train and register the best model."""
    from omnicrm.tasks.train import summary_table
    from omnicrm.tasks.tune import tune

    with _progress() as progress:
        tuned, results = tune(config, progress=progress, n_trials=trials)
    for t in tuned:
        console.print(
            f"study {t.study}: {t.trials_total} trials ({t.trials_run} run now, {t.pruned} pruned); "
            f"best validation value {t.best_value:.4f} with {t.best_params}"
        )
    _print_task_table(summary_table(results), f"{config}: tuned models on the evaluation cutoff")


@app.command()
def promote(
    task: Annotated[
        str, typer.Argument(help="churn, next_purchase, clv, clv-margin, propensity-<target>, <namespace>-churn.")
    ],
    force: Annotated[bool, typer.Option("--force", help="Promote even if the candidate is worse.")] = False,
) -> None:
    """Move the champion alias to the candidate after comparing both on the same evaluation cutoff."""
    from omnicrm.tasks.promote import promote

    with _progress() as progress:
        r = promote(task, force=force, progress=progress)
    detail = (
        f" ({r.metric} on {r.evaluation_cutoff}: candidate {r.candidate_value:.4f}, "
        f"champion v{r.champion_before} {r.champion_value:.4f})"
        if r.candidate_value is not None
        else ""
    )
    verb = "promoted" if r.promoted else "unchanged"
    console.print(f"{r.name}: {verb}: v{r.candidate} {r.note}{detail}")


@app.command()
def predict(
    config: ConfigArg,
    as_of: Annotated[
        datetime, typer.Option("--as-of", help="Score date: features read ts < as-of.", formats=["%Y-%m-%d"])
    ],
    out: Annotated[Path, typer.Option("--out", help="Output file (.parquet or .csv).")],
    model: Annotated[str | None, typer.Option("--model", help="Alias or version (default: champion).")] = None,
    reasons: Annotated[bool, typer.Option("--reasons", help="Add each customer's top 3 reasons.")] = False,
) -> None:
    """Score every customer of the task's population at a date with a registered model."""
    from omnicrm.store.outputs import CSV, PARQUET, check_output_path

    check_output_path(out, PARQUET + CSV)
    from omnicrm.tasks.predict import predict

    with _progress() as progress:
        r = predict(config, as_of.date(), out, model=model, reasons=reasons, progress=progress)
    models = ", ".join(f"{k} v{v}" for k, v in r.models.items())
    console.print(f"scores: {r.rows:,} customers x {len(r.columns)} columns ({models}) -> {r.out}")


@app.command()
def ui(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Start the MLflow UI on 127.0.0.1 against the local tracking store and print its address."""
    from omnicrm.tracking import serve_ui as serve

    serve(port, console.print)


def _print_task_table(frame, title: str) -> None:  # noqa: ANN001 - a DataFrame from summary_table
    t = Table(title=title)
    for col in ("task", "target", "metric", "model", "best baseline", "baseline", "registered"):
        t.add_column(col, justify="right" if col in ("model", "baseline") else "left")
    for row in frame.itertuples(index=False):
        style = "green" if row.model > row.baseline else "red"
        t.add_row(
            row.task,
            row.target,
            row.metric,
            f"[{style}]{row.model:.4f}[/]",
            row.best_baseline,
            f"{row.baseline:.4f}",
            f"v{row.version}" if row.version else "-",
        )
    console.print(t)


@app.command()
def demo(config: ConfigArg = Path("configs/demo.yaml")) -> None:
    """Generate the default world, ingest it, resolve identities and build monthly features."""
    from omnicrm.pipeline.demo import run_demo

    with _progress() as progress:
        result = run_demo(config, progress=progress)
    _print_world(result.world)
    _print_ingest(result.ingest)
    if result.identity:
        _print_identity(result.identity)
    f = result.features
    console.print(
        f"features: {f.rows:,} rows x {f.columns} columns ({len(f.cutoffs)} monthly cutoffs "
        f"{f.cutoffs[0]} .. {f.cutoffs[-1]}) -> {f.out}"
    )
    _print_demo_models(result)


def _print_demo_models(result) -> None:  # noqa: ANN001 - a DemoResult
    from omnicrm.tasks.train import summary_table

    for t in result.tuning:
        console.print(
            f"tuning {t.target}: {t.trials_total} trials ({t.pruned} pruned), best validation {t.best_value:.4f}"
        )
    if result.tasks:
        _print_task_table(summary_table(result.tasks), "prediction tasks on their evaluation cutoffs (MLflow: mlruns/)")
    for p in result.promotions:
        console.print(f"champion {p.name}: v{p.version} ({p.note})")
    if result.recommend_eval is not None:
        _print_recommend_eval(result.recommend_eval)
    if result.recommendations is not None:
        r = result.recommendations
        console.print(f"recommendations ({r.method}): {r.rows:,} rows for {r.customers:,} customers -> {r.out}")
    if result.uplift is not None:
        _print_uplift(result.uplift)
    if result.readout is not None:
        table = result.readout.table
        first = table["outcome"].iloc[0] if "outcome" in table.columns and len(table) else None
        shown = table[table["outcome"] == first] if first is not None else table
        _print_readout(
            shown, f"campaign readout on {first} (vs control, Welch 95% CI; every outcome: omnicrm readout CONFIG)"
        )


def _print_frame(frame, title: str, max_rows: int = 40) -> None:  # noqa: ANN001 - a DataFrame
    t = Table(title=title)
    for col in frame.columns:
        t.add_column(str(col), justify="right" if frame[col].dtype.kind in "fiu" else "left")
    for row in frame.head(max_rows).itertuples(index=False):
        t.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    console.print(t)
    if len(frame) > max_rows:
        console.print(f"... {len(frame) - max_rows} more rows")


def _print_identity(m) -> None:  # noqa: ANN001 - a PairwiseMetrics
    console.print(
        f"identity vs truth: precision {m.precision:.4f}  recall {m.recall:.4f}  F1 {m.f1:.4f}  "
        f"({m.records:,} records, {m.true_pairs:,} true pairs, {m.predicted_pairs:,} predicted)"
    )


def _print_world(summary) -> None:  # noqa: ANN001 - a WorldSummary
    t = Table(title=f"synthetic world: {summary.people:,} people ({summary.elapsed_seconds:.1f} s)")
    t.add_column("file")
    t.add_column("rows", justify="right")
    for name, n in summary.rows.items():
        t.add_row(name, f"{n:,}")
    console.print(t)


def _print_ingest(result) -> None:  # noqa: ANN001
    t = Table(title=f"ingest -> {result.store}")
    t.add_column("source")
    for col in ("rows in", "accepted", "quarantined", "%", "limit %"):
        t.add_column(col, justify="right")
    t.add_column("status")
    for c in result.sources:
        t.add_row(
            c.source,
            f"{c.rows_in:,}",
            f"{c.accepted:,}",
            f"{c.quarantined:,}",
            f"{100 * c.quarantine_share:.2f}",
            f"{100 * c.max_quarantine_share:.0f}",
            c.status if c.status == "ok" else f"[yellow]{escape(c.status)}[/]",
        )
    total_in = sum(c.rows_in for c in result.sources)
    total_q = sum(c.quarantined for c in result.sources)
    t.add_row(
        "all",
        f"{total_in:,}",
        f"{total_in - total_q:,}",
        f"{total_q:,}",
        f"{100 * total_q / max(total_in, 1):.2f}",
        "",
        "",
        style="bold",
    )
    console.print(t)
    reasons = sorted(((n, c.source, r) for c in result.sources for r, n in c.reasons.items()), reverse=True)
    if reasons:
        q = Table(title="quarantine reasons (top 12; all rows are in the store's quarantine table)")
        q.add_column("source")
        q.add_column("reason")
        q.add_column("rows", justify="right")
        for n, src, r in reasons[:12]:
            q.add_row(src, r, f"{n:,}")
        console.print(q)
    r = result.resolution
    rules = ", ".join(f"{k}: {v:,}" for k, v in sorted(r.edges_by_rule.items()))
    console.print(
        f"customers: {r.customers:,} from {r.records:,} source records (links by rule: {rules}; "
        f"{r.guarded_records} records re-clustered by the giant-component guard)"
    )
    console.print("store tables: " + ", ".join(f"{k} {v:,}" for k, v in result.tables.items()))


# --- uplift (issue 5) ---
@app.command()
def uplift(config: ConfigArg) -> None:
    """Train and evaluate uplift learners (Qini, uplift AUC, policy values over several split seeds)."""
    from omnicrm.pipeline.uplift import run_uplift

    with _progress() as progress:
        result = run_uplift(config, progress=progress)
    _print_uplift(result)


@app.command()
def effects(
    config: ConfigArg,
    as_of: Annotated[
        datetime, typer.Option("--as-of", help="Score date; features read only ts < as-of.", formats=["%Y-%m-%d"])
    ],
    out: Annotated[Path, typer.Option("--out", help="Output Parquet file (customer_id, action, effect).")],
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
        _check_as_of(source.store, as_of)

    with _progress() as progress:
        result = write_effects(config, as_of, out, progress=progress, model=model)
    console.print(
        f"effects: {result.customers:,} customers x {len(result.actions)} actions ({', '.join(result.actions)}) "
        f"from {result.training_rows:,} training rows -> {result.out}\nmodel: {result.model}"
    )


@app.command()
def readout(config: ConfigArg) -> None:
    """Campaign readout as A/B tests: each action's effect vs control with 95% intervals and MDE."""
    from omnicrm.pipeline.uplift import run_readout

    with _progress() as progress:
        result = run_readout(config, progress=progress)
    _print_readout(result.table, "campaign readout (difference in means vs control, Welch 95% CI)")
    if result.segments is not None:
        _print_readout(result.segments, "readout by segment")


def _print_uplift(result) -> None:  # noqa: ANN001 - an UpliftResult
    t = Table(title=f"uplift: held-out Qini etc., mean +- std over split seeds ({result.rows:,} rows)")
    for col in ("outcome", "learner", "action"):
        t.add_column(col)
    extra = [c for c in result.table.columns if c.startswith("uplift_at_") and not c.endswith("_std")]
    has_truth = "spearman_truth" in result.table.columns
    for col in ("qini", "uplift AUC", *(c.replace("_", " ") for c in extra), "ATE (random)"):
        t.add_column(col, justify="right")
    if has_truth:
        t.add_column("Spearman vs truth", justify="right")
    for r in result.table.to_dict("records"):
        cells = [
            str(r["outcome"]),
            str(r["learner"]),
            str(r["action"]),
            f"{r['qini']:.4f} +- {r.get('qini_std', float('nan')):.4f}",
            f"{r['uplift_auc']:.4f} +- {r.get('uplift_auc_std', float('nan')):.4f}",
            *(f"{r[c]:.4g}" for c in extra),
            f"{r['ate']:.4g}",
        ]
        if has_truth:
            cells.append(f"{r['spearman_truth']:.3f} +- {r.get('spearman_truth_std', float('nan')):.3f}")
        t.add_row(*cells)
    console.print(t)
    p = Table(title="policy value per customer (IPW on held-out randomised rows; mean over seeds)")
    for col in ("outcome", "learner", "policy"):
        p.add_column(col)
    for col in ("value", "+- se", "treated"):
        p.add_column(col, justify="right")
    for r in result.policy.to_dict("records"):
        p.add_row(
            str(r["outcome"]),
            str(r["learner"]),
            str(r["policy"]),
            f"{r['value']:.4g}",
            f"{r['se']:.2g}",
            f"{r['treated_share']:.0%}",
        )
    console.print(p)
    for outcome, by_learner in result.verdicts.items():
        for learner, text in by_learner.items():
            console.print(f"{outcome} / {learner}: {text}", soft_wrap=True)


def _print_readout(frame, title: str) -> None:  # noqa: ANN001 - a DataFrame
    t = Table(title=title)
    keys = [c for c in frame.columns if c not in _READOUT_FIGURES]
    for col in keys:
        t.add_column(col)
    for col in ("n treated", "n control", "control mean", "effect", "95% CI", "p", "MDE"):
        t.add_column(col, justify="right")
    for r in frame.to_dict("records"):
        t.add_row(
            *(str(r[c]) for c in keys),
            f"{r['n_t']:,}",
            f"{r['n_c']:,}",
            f"{r['mean_c']:.4g}",
            f"{r['ate']:+.4g}",
            f"[{r['ci_low']:+.4g}, {r['ci_high']:+.4g}]",
            f"{r['p_value']:.2g}",
            f"{r['mde']:.3g}",
        )
    console.print(t)


_READOUT_FIGURES = frozenset(
    {"n_t", "n_c", "mean_t", "mean_c", "ate", "se", "ci_low", "ci_high", "p_value", "mde", "relative_lift"}
)


# --- recommend (issue 4) ---
@app.command("recommend-eval")
def recommend_eval(config: ConfigArg) -> None:
    """Tune recommenders on a validation window, score them on the test window, log to MLflow."""
    from omnicrm.pipeline.recommend import evaluate_recommenders

    with _progress() as progress:
        result = evaluate_recommenders(config, progress=progress)
    _print_recommend_eval(result)


def _print_recommend_eval(result) -> None:  # noqa: ANN001 - a RecommendEvalResult
    from rich import box

    k, table = result.k, result.table
    cols = {
        "method": "method",
        "mode": "mode",
        f"ndcg_at_{k}": f"NDCG@{k}",
        f"map_at_{k}": f"MAP@{k}",
        f"precision_at_{k}": f"P@{k}",
        f"recall_at_{k}": f"R@{k}",
        f"hit_rate_at_{k}": f"HR@{k}",
        f"coverage_at_{k}": "cover",
        "fit_seconds": "fit s",
        "recommend_seconds": "rec s",
    }
    customers = ", ".join(f"{m} {n:,}" for m, n in table.groupby("mode", sort=False)["customers"].first().items())
    t = Table(
        title=f"recommenders, test window (run {result.run_id[:8]})",
        box=box.SIMPLE_HEAD,
        padding=(0, 0),
        pad_edge=False,
        caption=f"customers evaluated: {customers}",
    )
    for col, head in cols.items():
        t.add_column(
            head, justify="left" if col in ("method", "mode") else "right", no_wrap=True, min_width=max(len(head), 5)
        )
    for row in table[list(cols)].itertuples(index=False):
        t.add_row(
            *(
                f"{v:.1f}" if c.endswith("seconds") else f"{v:.3f}" if isinstance(v, float) else str(v)
                for c, v in zip(cols, row, strict=True)
            )
        )
    console.print(t)


@app.command()
def recommend(
    config: ConfigArg,
    as_of: Annotated[datetime, typer.Option("--as-of", help="Use purchases before this date.", formats=["%Y-%m-%d"])],
    out: Annotated[Path, typer.Option("--out", help="Output Parquet file.")],
    model: Annotated[
        str | None, typer.Option("--model", help="Score with a registered model (champion, candidate or a version).")
    ] = None,
) -> None:
    """Top-k products (with reasons) per customer with a purchase before --as-of: refit and register, or --model."""
    from omnicrm.store.outputs import PARQUET, check_output_path

    check_output_path(out, PARQUET)
    from omnicrm.pipeline.recommend import write_recommendations
    from omnicrm.recommend.config import load_recommend_config

    _check_as_of(load_recommend_config(config).store, as_of)

    with _progress() as progress:
        result = write_recommendations(config, as_of.date(), out, progress=progress, model=model)
    console.print(
        f"recommendations ({result.method}, as of {result.as_of}): {result.rows:,} rows for "
        f"{result.customers:,} customers -> {result.out}\nmodel: {result.model}"
    )


def _check_as_of(store: str, as_of: datetime) -> None:
    """The far side of :func:`omnicrm.store.check_date` for ``recommend`` and ``effects``.

    Their own messages already say what an early date leaves them without ("no purchases before
    ..."), so only a date long after the store's last event is refused (and a late one warned of).
    """
    from omnicrm.store import check_date, store_data_range

    check_date(as_of, store_data_range(store), "--as-of", before_first=True)


if __name__ == "__main__":  # pragma: no cover
    app()
