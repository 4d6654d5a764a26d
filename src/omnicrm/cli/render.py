"""What the commands print: the consoles, step progress and the summary tables.

Two layouts, chosen at each print by whether the output is a terminal:

* on a terminal, rich as usual: a live progress bar, tables fitted to the window, titles centred;
* anywhere else (``omnicrm demo > demo.log 2>&1``, a scheduler, a pipe) the output is a log that
  is read later: tables keep every cell complete whatever their width (rich would give a file 80
  columns and squeeze cells to "…"), titles and captions are lines of their own (a title centred
  over a narrow table wraps), and instead of a bar, which a file only receives when it ends, each
  step prints one line when it starts, with the time since the command started::

      [   0.0s] generate: people
      [  12.3s] churn: training frame
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from omnicrm import interrupts

if TYPE_CHECKING:
    import pandas as pd

#: console width when the output is not a terminal: wider than any table omnicrm prints, so rich
#: never squeezes a cell (tables keep their natural width; nothing is padded to this width)
LOG_WIDTH = 10_000


class _Console(Console):
    """A rich console that is :data:`LOG_WIDTH` wide whenever its output is not a terminal.

    Decided at each print rather than once at import, so that output redirected later (a test
    runner replacing ``sys.stdout``) gets the log layout too.
    """

    @property
    def size(self) -> ConsoleDimensions:
        """The terminal's size, or :data:`LOG_WIDTH` columns when the output is not a terminal."""
        size = Console.size.fget(self)  # type: ignore[attr-defined]
        return size if self.is_terminal else ConsoleDimensions(LOG_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


#: standard output: progress, tables and summaries
console = _Console()
#: standard error: the error handler's one line and ``warning:`` lines
err_console = _Console(stderr=True)


def say(markup: str) -> None:
    """Print one line of rich markup on standard error, never wrapped.

    Parameters
    ----------
    markup : str
        The line; values in it must be escaped with :func:`rich.markup.escape`.
    """
    err_console.print(markup, highlight=False, soft_wrap=True)


def show(table: Table) -> None:
    """Print a table: as rich draws it on a terminal, every cell complete in a log.

    Parameters
    ----------
    table : rich.table.Table
        The table; in a log its title is printed on the line before it and its caption after it.
    """
    if console.is_terminal:
        console.print(table)
        return
    title, caption = table.title, table.caption
    table.title = table.caption = None
    for column in table.columns:
        column.overflow = "fold"  # a cell longer than LOG_WIDTH still prints in full
    if title:
        console.print(title, highlight=False, soft_wrap=True)
    console.print(table)
    if caption:
        console.print(caption, highlight=False, soft_wrap=True)


@contextmanager
def reporting() -> Iterator[Callable[[str, float], None]]:
    """Give the callback the pipeline reports its steps to, ``progress(step, fraction)``.

    On a terminal it drives a rich progress bar, removed on an error or interrupt so that the
    handler's one line is all that is shown. Elsewhere it prints one line per step (see the module
    docstring) and a last ``done`` line.

    Yields
    ------
    callable
        ``progress(step, fraction)``.
    """
    if not console.is_terminal:
        steps = _StepLines()
        yield steps
        interrupts.check()
        steps("done", 1.0)
        return
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
        interrupts.check()
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


class _StepLines:
    """``progress(step, fraction)`` for a log: a line when the step changes, with the time elapsed."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._step: str | None = None
        self._lock = threading.Lock()  # a step may report from a worker thread

    def __call__(self, step: str, fraction: float) -> None:  # noqa: ARG002 - a log shows steps, not fractions
        interrupts.check()
        with self._lock:
            if step == self._step:
                return
            self._step = step
            elapsed = time.monotonic() - self._started
            console.print(f"[{elapsed:7.1f}s] {step}", markup=False, highlight=False, soft_wrap=True)


# --- tables and summaries, in data-flow order ---


def print_world(summary: Any) -> None:
    """Print the files of a generated world and their row counts (a ``WorldSummary``)."""
    t = Table(title=f"synthetic world: {summary.people:,} people ({summary.elapsed_seconds:.1f} s)")
    t.add_column("file")
    t.add_column("rows", justify="right")
    for name, n in summary.rows.items():
        t.add_row(name, f"{n:,}")
    show(t)


def print_ingest(result: Any) -> None:
    """Print rows accepted and quarantined per source, the top quarantine reasons and the store's tables.

    Parameters
    ----------
    result : omnicrm.pipeline.ingest.IngestResult
        What the ingest did.
    """
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
    show(t)
    reasons = sorted(((n, c.source, r) for c in result.sources for r, n in c.reasons.items()), reverse=True)
    if reasons:
        q = Table(title="quarantine reasons (top 12; all rows are in the store's quarantine table)")
        q.add_column("source")
        q.add_column("reason")
        q.add_column("rows", justify="right")
        for n, src, r in reasons[:12]:
            q.add_row(src, r, f"{n:,}")
        show(q)
    r = result.resolution
    rules = ", ".join(f"{k}: {v:,}" for k, v in sorted(r.edges_by_rule.items()))
    console.print(
        f"customers: {r.customers:,} from {r.records:,} source records (links by rule: {rules}; "
        f"{r.guarded_records} records re-clustered by the giant-component guard)"
    )
    console.print("store tables: " + ", ".join(f"{k} {v:,}" for k, v in result.tables.items()))


def print_identity(m: Any) -> None:
    """Print pairwise precision, recall and F1 of identity resolution against the truth (``PairwiseMetrics``)."""
    console.print(
        f"identity vs truth: precision {m.precision:.4f}  recall {m.recall:.4f}  F1 {m.f1:.4f}  "
        f"({m.records:,} records, {m.true_pairs:,} true pairs, {m.predicted_pairs:,} predicted)"
    )


def print_task_table(frame: pd.DataFrame, title: str) -> None:
    """Print each trained target's model next to its best baseline on the evaluation cutoff.

    Parameters
    ----------
    frame : pandas.DataFrame
        ``summary_table`` of the training results.
    title : str
        The table's title.
    """
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
    show(t)


def print_task_metrics(results: list[Any]) -> None:
    """Print, per trained target, the model and every baseline with every metric on the evaluation cutoff.

    Parameters
    ----------
    results : list of TargetResult
        The training results (``metrics_table`` of each).
    """
    from omnicrm.tasks.train import metrics_table

    for r in results:
        frame = metrics_table(r)
        versions = f"model v{r.version}, baseline {r.best_baseline[0]} v{r.baseline_version}" if r.version else ""
        cutoff = r.model.meta.get("evaluation_cutoff", "")
        t = Table(title=f"{r.registered_name} ({versions}): every score on {cutoff}" if versions else r.registered_name)
        metrics = [c for c in frame.columns if c != "score"]
        t.add_column("score")
        for m in metrics:
            t.add_column(f"{m} *" if m == r.primary else m, justify="right")
        best = frame[r.primary].max()
        for row in frame.itertuples(index=False):
            values = [getattr(row, m) for m in metrics]
            cells = [_metric_cell(m, v) for m, v in zip(metrics, values, strict=True)]
            name = row.score
            if getattr(row, r.primary) == best:
                name = f"[bold]{name}[/]"
            t.add_row(name, *cells)
        t.caption = _model_note(r)
        show(t)


def _model_note(r: Any) -> str:
    """Under a task's table: the features used, those left out as constant in training, and a blend."""
    enc = r.model.encoding
    dropped = getattr(enc, "dropped", ())
    note = f"model: {len(enc.features)} features"
    if dropped:
        note += f"; {len(dropped)} constant in training, left out: {', '.join(dropped)}"
    blend = getattr(r.model, "blend", None)
    if blend is not None:
        note += f"; blended with baseline {blend.name} (model weight {blend.weight:g}, chosen on validation)"
    return note


def _metric_cell(metric: str, value: float) -> str:
    """A metric as printed: counts as integers, NaN as ``-``, the rest to four decimals."""
    if value != value:  # NaN: a metric that does not apply
        return "-"
    return f"{value:,.0f}" if metric in ("n", "positives", "n_observed") else f"{value:.4f}"


def print_promotion(r: Any) -> None:
    """Print what ``promote`` did: which version is champion now, why, and every version's figure.

    Parameters
    ----------
    r : PromoteResult
    """
    if r.promoted:
        who = f"baseline {r.baseline_name}" if r.champion_after == r.baseline else "candidate"
        head = f"[bold green]promoted v{r.champion_after} ({who}) to champion[/]"
    else:
        head = f"unchanged: champion v{r.champion_after or r.champion_before}"
    console.print(f"{r.name}: {head}: {r.note}", highlight=False)
    if r.figures():
        console.print(f"  {r.figures()}", highlight=False)


def print_recommend_eval(result: Any) -> None:
    """Print ranking metrics of every recommender on the test window (a ``RecommendEvalResult``)."""
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
    show(t)


def print_uplift(result: Any) -> None:
    """Print held-out Qini and uplift AUC per learner, policy values and the verdicts (an ``UpliftResult``)."""
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
    show(t)
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
    show(p)
    for outcome, by_learner in result.verdicts.items():
        for learner, text in by_learner.items():
            console.print(f"{outcome} / {learner}: {text}", soft_wrap=True)


def print_nba_eval(result: Any) -> None:
    """Print every policy's value per budget with intervals, and the verdicts (an ``NbaEvalResult``)."""
    unit = result.unit
    t = Table(
        title=(
            f"nba-eval: incremental {unit} per eligible row ({result.rows:,} randomised rows of "
            f"{result.customers:,} customers; {result.excluded_rows:,} rows no action may reach left out); "
            "95% bootstrap intervals over customers"
        )
    )
    for col in ("budget", "policy"):
        t.add_column(col)
    cols = ["contacted", "cost/row"] + (["true"] if result.truth else []) + ["IPW [95% interval]", "DR [95% interval]"]
    for col in cols:
        t.add_column(col, justify="right")
    for r in result.table.to_dict("records"):
        cells = [f"{r['budget']:.0%}", str(r["policy"]), f"{r['contacted']:.1%}", f"{r['cost']:.4f}"]
        if result.truth:
            cells.append(f"{r['true']:+.4f}")
        for e in ("ipw", "dr"):
            cells.append(f"{r[e]:+.4f} [{r[e + '_lo']:+.4f}, {r[e + '_hi']:+.4f}]")
        t.add_row(*cells)
    show(t)
    console.print(f"at a budget of {result.headline:.0%} of eligible rows (doubly robust, paired):", soft_wrap=True)
    for line in result.verdicts:
        console.print(f"  {line}", soft_wrap=True, highlight=False)
    for line in result.notes:
        console.print(f"note: {line}", soft_wrap=True, highlight=False)


def print_frequency(result: Any) -> None:
    """Print a frequency run: the policies judged (true and off-policy), the class confusion and counts."""
    ev = result.evaluation
    truth = "true_value" in ev.columns
    t = Table(
        title=(
            f"frequency: value per member of each cadence policy on the experiment's {result.members:,} members "
            f"(start {result.start:%Y-%m-%d}, held out by customer); off-policy against the current cadence, "
            "95% bootstrap intervals over customers"
        )
    )
    t.add_column("policy")
    if truth:
        t.add_column("true value", justify="right")
        t.add_column("true gain vs current", justify="right")
    t.add_column("IPW [95% interval]", justify="right")
    t.add_column("DR [95% interval]", justify="right")
    for r in ev.to_dict("records"):
        cells = [str(r["policy"])]
        if truth:
            cells += [f"{r['true_value']:,.3f}", f"{r['true_gain_vs_current']:+,.3f}"]
        for e in ("ipw", "dr"):
            cells.append(f"{r[e]:+,.3f} [{r[e + '_lo']:+,.3f}, {r[e + '_hi']:+,.3f}]")
        t.add_row(*cells)
    show(t)
    moved = ev[(ev["dr_hi"] - ev["dr_lo"]) > 0]  # the current cadence (and a static one equal to it) has none
    if len(moved):
        width = float(((moved["dr_hi"] - moved["dr_lo"]) / 2).median())
        console.print(
            f"off-policy intervals are about ±{width:,.1f} per member: the experiment cannot tell apart policies "
            "whose values differ by less (docs/frequency.md, 'The evaluation')",
            soft_wrap=True,
            highlight=False,
        )
    titles = {
        "confusion": "true best cadence",
        "decision_confusion": "true best cadence, moving only for a true gain above min_gain, as the learned policy",
    }
    for attr, what in titles.items():
        table = getattr(result, attr, None)
        if table is None:
            continue
        c = Table(title=f"classes at the experiment's start: true (rows: {what}) against learned (columns)")
        c.add_column("true \\ learned")
        for col in table.columns:
            c.add_column(str(col), justify="right")
        for name, row in table.iterrows():
            c.add_row(str(name), *[f"{int(v):,}" for v in row])
        show(c)
    if result.class_shares is not None:
        c = Table(title="share of members per class, learned and true; last row: share of members classed as the truth")
        for col in result.class_shares.columns:
            c.add_column(str(col), justify="left" if col == "class" else "right")
        for r in result.class_shares.to_dict("records"):
            c.add_row(str(r["class"]), *["" if math.isnan(v) else f"{v:.1%}" for k, v in r.items() if k != "class"])
        show(c)
    counts = ", ".join(f"{k} {v:,}" for k, v in result.classes.items())
    console.print(f"classes at as-of: {counts}", soft_wrap=True, highlight=False)
    # the headline metrics (headline.<measure>.learned_minus_...), said with the static cap each measure finds best
    ev = result.evaluation.set_index("policy")
    statics = [p for p in ev.index if p.startswith("static_")]
    labels = {"true_value": "true value", "dr": "off-policy DR", "ipw": "off-policy IPW"}
    lines = []
    for measure, label in labels.items():
        if measure in ev.columns and statics:
            best = ev.loc[statics, measure].idxmax()
            vs_best = ev.loc["learned", measure] - ev.loc[best, measure]
            vs_now = ev.loc["learned", measure] - ev.loc["current", measure]
            lines.append(
                f"  {label}: {vs_best:+,.3f} against {best} (its best static cap), {vs_now:+,.3f} against current"
            )
    if lines:
        console.print("learned cadences per member:", soft_wrap=True, highlight=False)
        for line in lines:
            console.print(line, soft_wrap=True, highlight=False)
    cost = (
        f"{result.share:.1%} of the customer's CLV"
        if result.cost_basis == "clv"
        else "the margin the customer's opens would bring over the CLV horizon"
    )
    console.print(
        f"margin per extra open {result.beta:,.3f} (95% interval over members {result.beta_interval[0]:,.2f} to "
        f"{result.beta_interval[1]:,.2f}); an unsubscribe costs {cost}, on average {result.mean_cost:,.2f} for a "
        "customer with consent\n"
        f"table -> {result.out}\nfeatures -> {result.features_out}",
        soft_wrap=True,
        highlight=False,
    )


#: the readout's figures; every other column of its table is a key (campaign, action, outcome, segment)
_READOUT_FIGURES = frozenset(
    {"n_t", "n_c", "mean_t", "mean_c", "ate", "se", "ci_low", "ci_high", "p_value", "mde", "relative_lift"}
)


def print_readout(frame: pd.DataFrame, title: str) -> None:
    """Print a campaign readout: each action's effect against control, its interval, p-value and MDE.

    Parameters
    ----------
    frame : pandas.DataFrame
        The readout table (key columns, then the figures of :data:`_READOUT_FIGURES`).
    title : str
        The table's title.
    """
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
    show(t)


def print_demo(result: Any) -> None:
    """Print everything ``omnicrm demo`` did, in the order it did it (a ``DemoResult``)."""
    print_world(result.world)
    print_ingest(result.ingest)
    if result.identity:
        print_identity(result.identity)
    f = result.features
    console.print(
        f"features: {f.rows:,} rows x {f.columns} columns ({len(f.cutoffs)} monthly cutoffs "
        f"{f.cutoffs[0]} .. {f.cutoffs[-1]}) -> {f.out}"
    )
    for t in result.tuning:
        console.print(
            f"tuning {t.target}: {t.trials_total} trials ({t.pruned} pruned), best validation {t.best_value:.4f}"
        )
    if result.tasks:
        from omnicrm.tasks.train import summary_table

        print_task_table(summary_table(result.tasks), "prediction tasks on their evaluation cutoffs (MLflow: mlruns/)")
    for p in result.promotions:
        console.print(f"champion {p.name}: v{p.version} ({p.note})")
    if result.recommend_eval is not None:
        print_recommend_eval(result.recommend_eval)
    if result.recommendations is not None:
        r = result.recommendations
        console.print(f"recommendations ({r.method}): {r.rows:,} rows for {r.customers:,} customers -> {r.out}")
    if result.uplift is not None:
        print_uplift(result.uplift)
    if result.effects is not None:
        e = result.effects
        console.print(
            f"effects ({e.model}): {e.customers:,} customers x {len(e.actions)} actions "
            f"({', '.join(e.actions)}) -> {e.out}"
        )
    if result.readout is not None:
        table = result.readout.table
        first = table["outcome"].iloc[0] if "outcome" in table.columns and len(table) else None
        shown = table[table["outcome"] == first] if first is not None else table
        print_readout(
            shown, f"campaign readout on {first} (vs control, Welch 95% CI; every outcome: omnicrm readout CONFIG)"
        )
    if getattr(result, "nba", None) is not None:
        print_nba(result.nba, result.nba_seconds)
    if getattr(result, "nba_eval", None) is not None:
        print_nba_eval_headline(result.nba_eval, result.nba_eval_seconds)
    _print_demo_report(result)
    if getattr(result, "frequency", None) is not None:
        print_frequency_headline(result.frequency)


def print_frequency_headline(result: Any) -> None:
    """The demo's lines on learned contact cadences: the class counts and learned vs static vs current."""
    counts = ", ".join(f"{k} {v:,}" for k, v in result.classes.items())
    console.print(f"contact frequency ({result.out}): {counts}", soft_wrap=True, highlight=False)
    ev = result.evaluation.set_index("policy")
    statics = [p for p in ev.index if p.startswith("static_")]
    if "true_value" in ev.columns:
        best = ev.loc[statics, "true_value"].idxmax()
        console.print(
            f"  true value per member: learned {ev.loc['learned', 'true_value']:,.3f}, best static cap ({best}) "
            f"{ev.loc[best, 'true_value']:,.3f}, current {ev.loc['current', 'true_value']:,.3f}",
            soft_wrap=True,
            highlight=False,
        )
    r = ev.loc["learned"]
    console.print(
        f"  off-policy (DR) learned vs current {r['dr']:+,.3f} [{r['dr_lo']:+,.3f}, {r['dr_hi']:+,.3f}] per member "
        f"on {result.members:,} members of the cadence experiment",
        soft_wrap=True,
        highlight=False,
    )


def print_nba(result: Any, seconds: float | None = None) -> None:
    """The demo's next-best-action table (per action and channel: customers, expected incremental margin, cost).

    Parameters
    ----------
    result : omnicrm.pipeline.nba.NbaResult
        The list's result (its ``table`` and constraint ``summary``).
    seconds : float, optional
        The step's wall time.
    """
    s = result.summary
    t = Table(title=f"next-best actions ({result.out}): per action and channel")
    for col, justify in (("action", "left"), ("channel", "left"), ("customers", "right")):
        t.add_column(col, justify=justify)
    t.add_column("expected incremental margin", justify="right")
    t.add_column("cost", justify="right")
    for r in result.table.to_dict("records"):
        t.add_row(r["action"], r["channel"], f"{r['customers']:,}", f"{r['expected_value']:,.2f}", f"{r['cost']:,.2f}")
    t.add_row(
        "all",
        "",
        f"{int(s['customers_sent']):,}",
        f"{s['expected_incremental_value']:,.2f}",
        f"{s['cost']:,.2f}",
    )
    show(t)
    budget = f" of budget {s['budget']:,.0f}" if "budget" in s else ""
    took = f"; step {seconds:.1f} s" if seconds is not None else ""
    console.print(
        f"nba: {int(s['customers_sent']):,} of {result.customers:,} customers sent an action, cost "
        f"{s['cost']:,.2f}{budget}; solver {result.method}, gap {s['solver_gap']:.2%}; constraint violations "
        f"(consent, caps with history, quiet, suppression, budget, capacity, volumes): {int(s['violations'])}{took}"
    )


def print_nba_eval_headline(result: Any, seconds: float | None = None) -> None:
    """The demo's lines of the off-policy judgement: every policy at the headline budget, and the verdicts.

    Parameters
    ----------
    result : omnicrm.pipeline.nba_eval.NbaEvalResult
    seconds : float, optional
        The step's wall time.
    """
    head = result.table[(result.table["budget"] - result.headline).abs() < 1e-9]
    t = Table(
        title=(
            f"nba-eval: incremental {result.unit} per eligible row at a budget of {result.headline:.0%} "
            f"({result.rows:,} randomised rows of {result.customers:,} customers, models cross-fitted by customer)"
        )
    )
    t.add_column("policy")
    if result.truth:
        t.add_column("true", justify="right")
    t.add_column("DR estimate [95% interval]", justify="right")
    for r in head.to_dict("records"):
        cells = [str(r["policy"])]
        if result.truth:
            cells.append(f"{r['true']:+.3f}")
        cells.append(f"{r['dr']:+.3f} [{r['dr_lo']:+.3f}, {r['dr_hi']:+.3f}]")
        t.add_row(*cells)
    show(t)
    for line in result.verdicts:
        console.print(f"  {line}", soft_wrap=True, highlight=False)
    took = f" ({seconds:.1f} s)" if seconds is not None else ""
    console.print(f"nba-eval: all budgets and the value-vs-budget plot in MLflow run {result.run_id}{took}")


def _print_demo_report(result: Any) -> None:
    """The demo's line about the marketing report: a few figures and the page's path."""
    if result.report is not None:
        r, k = result.report, result.report.report.kpis
        empty = [sec.title for sec in r.report.sections if sec.empty]
        console.print(
            f"marketing report {r.report.start:%Y-%m-%d} to {r.report.end:%Y-%m-%d}: {k.get('customers', 0):,.0f} "
            f"buying customers, revenue {k.get('revenue', 0):,.0f}"
            + (f", NPS {k['nps']:.1f}" if "nps" in k else "")
            + (f", campaign ROI {k['campaign_roi']:.2f}" if "campaign_roi" in k else "")
            + (f" (no data: {', '.join(empty)})" if empty else "")
            + f" -> {r.out}"
        )


#: headline figures ``omnicrm report`` prints: (KPI key, label, format)
_REPORT_KPIS = (
    ("customers", "buying customers", ",.0f"),
    ("orders", "orders", ",.0f"),
    ("revenue", "revenue", ",.0f"),
    ("aov", "average order value", ",.2f"),
    ("repurchase_rate", "repurchase rate", ".1%"),
    ("clv_mean", "mean CLV", ",.1f"),
    ("omni_spend_ratio_vs_online", "spend, omni-channel vs online only", ".2f"),
    ("nps", "NPS", ".1f"),
    ("campaign_roi", "campaign ROI", ".2f"),
    ("attribution_over_last_touch", "last-touch credit / incremental orders", ".2f"),
    ("attribution_over_markov", "Markov credit / incremental orders", ".2f"),
)


def print_report(result: Any) -> None:
    """Print what ``omnicrm report`` wrote: the page, its sections (and why any is empty), headline KPIs.

    Parameters
    ----------
    result : omnicrm.pipeline.report.ReportResult
        The written report.
    """
    report = result.report
    t = Table(title=f"marketing report {report.name}: {report.start:%Y-%m-%d} to {report.end:%Y-%m-%d} (end excluded)")
    t.add_column("section")
    t.add_column("content")
    for s in report.sections:
        t.add_row(s.title, f"no data: {s.empty}" if s.empty else "; ".join(b.title for b in s.blocks))
    show(t)
    k = Table(title="headline KPIs (logged as MLflow metrics)")
    k.add_column("KPI")
    k.add_column("value", justify="right")
    for key, label, fmt in _REPORT_KPIS:
        if key in report.kpis:
            k.add_row(label, format(report.kpis[key], fmt))
    show(k)
    console.print(f"report -> {result.out}" + (f" (MLflow run {result.run_id})" if result.run_id else ""))
