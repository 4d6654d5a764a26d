"""``omnicrm frequency CONFIG --as-of DATE --out FILE``: learned contact cadences per customer, judged.

Wiring only: reads the config (:mod:`omnicrm.frequency.config`), opens the store read-only and
single-threaded, calls the pure steps of :mod:`omnicrm.frequency`, logs one MLflow run through
:mod:`omnicrm.tracking` (experiment ``omnicrm-frequency``) and writes the ``contact_frequency`` table
to ``--out`` and the per-customer features beside it (``<out stem>.features.parquet``). The synthetic
ground truth (optional ``truth`` block) is read only to *report* how the learned cadences do.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omnicrm import schema
from omnicrm.errors import InputError
from omnicrm.frequency.config import FrequencyConfig, load_frequency_config
from omnicrm.frequency.data import experiment_rows, population
from omnicrm.frequency.estimate import any_params, fit_cadence_model
from omnicrm.frequency.evaluate import (
    align_truth,
    class_shares,
    confusion,
    cross_fit,
    off_policy,
    policies,
    true_values,
    value_by_class,
)
from omnicrm.frequency.recommend import CLASSES, NO_CONSENT, contact_frequency, frequency_features
from omnicrm.progress import Progress, silent
from omnicrm.store.outputs import PARQUET, check_output_path, conform, write_frames

__all__ = ["FrequencyResult", "features_path", "run_frequency"]


@dataclass
class FrequencyResult:
    """What a frequency run produced.

    Attributes
    ----------
    table
        The ``contact_frequency`` rows written to ``out``.
    evaluation
        Per policy: ``true_value``, ``true_gain_vs_current`` (with truth), off-policy ``ipw``/``dr`` value
        against the current cadence with 95% intervals.
    confusion
        True class (rows) against learned class (columns), counts (with truth).
    decision_confusion
        The same against the truth judged by the learned policy's rule: a member moves only if another
        cadence truly gains more than ``estimator.min_gain`` (:func:`omnicrm.frequency.evaluate.true_best`).
    class_shares
        Share of members per class, learned and under both truths, and the agreement of each.
    by_class
        Value of each cadence per learned class, estimated and true.
    classes
        Count of each class in ``table``.
    """

    table: pd.DataFrame
    out: Path
    features_out: Path
    members: int
    start: datetime
    evaluation: pd.DataFrame
    confusion: pd.DataFrame | None
    by_class: pd.DataFrame
    classes: dict[str, int]
    share: float
    beta: float
    cost_basis: str = "clv"
    mean_cost: float = float("nan")
    beta_interval: tuple[float, float] = (float("nan"), float("nan"))
    decision_confusion: pd.DataFrame | None = None
    class_shares: pd.DataFrame | None = None
    run_id: str | None = None
    headline: dict[str, float] = field(default_factory=dict)


def features_path(out: Path) -> Path:
    """Where the per-customer features go: beside ``out``, ``<stem>.features.parquet``."""
    return out.with_name(f"{out.stem}.features.parquet")


def _truth(cfg: FrequencyConfig, con, customers: pd.Series) -> pd.DataFrame | None:  # noqa: ANN001
    from omnicrm.uplift.truth import person_customers

    if cfg.truth is None:
        return None
    paths = {"cadence truth": cfg.truth.cadence, "record owner table": cfg.truth.record_owner}
    frames = {}
    for what, path in paths.items():
        if not Path(path).is_file():
            raise InputError(f"{path}: {what} not found (config key 'truth')")
        frames[what] = pd.read_parquet(path)
    links = con.execute("select source, source_record_id, customer_id from identity_links").df()
    pairs = person_customers(frames["record owner table"], links)
    return align_truth(frames["cadence truth"], pairs, customers, cfg.experiment.arms)


def _evaluation_table(truth_table: pd.DataFrame | None, offpolicy: pd.DataFrame) -> pd.DataFrame:
    wide = offpolicy.pivot(index="policy", columns="estimator", values=["value", "lo", "hi"])
    wide.columns = [f"{est}_{stat}" if stat != "value" else est for stat, est in wide.columns]
    wide = wide.reset_index()
    if truth_table is not None:
        wide = truth_table.merge(wide, on="policy", how="right")
    order = {p: i for i, p in enumerate(offpolicy["policy"].drop_duplicates())}
    return wide.sort_values("policy", key=lambda s: s.map(order)).reset_index(drop=True)


def run_frequency(
    config_path: str | Path, as_of: datetime, out: str | Path, progress: Progress = silent
) -> FrequencyResult:
    """Learn the value of each cadence from the experiment, judge it, and write the cadence per customer."""
    from omnicrm import tracking
    from omnicrm.frequency.plots import value_by_class_figure
    from omnicrm.store import open_store

    out = check_output_path(out, PARQUET)
    cfg, feats = load_frequency_config(config_path)
    _check_columns(cfg, feats, config_path)
    exp = cfg.experiment
    arms = sorted(exp.arms)
    maximum = cfg.max_cadence[exp.channel]
    progress("frequency: experiment rows", 0.0)
    con = open_store(cfg.store, deterministic=True)
    try:
        rows = experiment_rows(con, exp, feats, as_of)
        progress("frequency: population at as-of", 0.2)
        pop = population(con, exp.channel, feats, as_of)
        truth = _truth(cfg, con, rows.frame["customer_id"])
    finally:
        con.close()
    frame = rows.frame
    if len(frame) < 10 * len(arms) * cfg.estimator.folds:
        raise InputError(f"frequency: only {len(frame)} experiment members; too few to learn {len(arms)} arms")

    progress("frequency: cross-fitted evaluation", 0.3)
    cf = cross_fit(
        frame, rows.features, rows.categorical, arms, exp.current, exp.window_days, cfg.estimator, cfg.unsubscribe_cost
    )
    chosen = policies(cf.values, arms, exp.current, maximum, cfg.estimator.min_gain)
    arm = frame["arm"].to_numpy(int)
    customers = frame["customer_id"].to_numpy()
    offp = off_policy(arm, cf.reward, cf.values, customers, arms, chosen, cfg.bootstrap, cfg.estimator.seed)
    truth_values = truth[[f"value_{a}" for a in arms]].to_numpy(float) if truth is not None else None
    tv = true_values(truth_values, arms, chosen) if truth_values is not None else None
    evaluation = _evaluation_table(tv, offp)
    conf = decision = shares = None
    if truth_values is not None:
        conf = confusion(truth_values, chosen["learned"], arms, exp.current)
        decision = confusion(truth_values, chosen["learned"], arms, exp.current, cfg.estimator.min_gain)
        shares = class_shares({"true": conf, f"true, gain > {cfg.estimator.min_gain:g}": decision})
    by_class = value_by_class(cf.values, truth_values, chosen["learned"], arms, exp.current)

    progress("frequency: fit on every member, recommend", 0.7)
    model = fit_cadence_model(
        frame,
        rows.features,
        rows.categorical,
        arms,
        exp.current,
        exp.window_days,
        cfg.estimator,
        cfg.unsubscribe_cost,
    )
    values, _ = model.values(pop)
    # what an unsubscribe costs the average customer with consent (the ones a cadence is set for)
    consenting = pop["consent"].to_numpy(bool)
    mean_cost = float(model.unsubscribe_cost(pop[consenting]).mean()) if consenting.any() else float("nan")
    table = conform(
        contact_frequency(pop, values, arms, exp.channel, maximum, cfg.estimator.min_gain),
        schema.CONTACT_FREQUENCY,
    )
    classes = {c: int((table["class"] == c).sum()) for c in (*CLASSES, NO_CONSENT)}
    headline = _headline(evaluation)

    progress("frequency: logging", 0.9)
    tags = {"task": "frequency", "dataset": cfg.name, "channel": exp.channel, "as_of": f"{as_of:%Y-%m-%d}"}
    with tracking.start_run(cfg.mlflow_experiment, f"frequency-{cfg.name}", tags=tags) as run:
        tracking.log_config(cfg.model_dump(mode="json"))
        tracking.log_params(
            {
                "members": len(frame),
                "experiment_start": f"{rows.start:%Y-%m-%d}",
                "customers": len(table),
                "arms": ",".join(map(str, arms)),
                "current": exp.current,
                "max_cadence": maximum,
                "n_features": len(rows.features),
                **any_params(cfg.estimator),
            }
        )
        metrics = {
            "beta_margin_per_open": model.beta,
            "beta_margin_per_open_lo": model.beta_interval[0],
            "beta_margin_per_open_hi": model.beta_interval[1],
            "unsubscribe_share_of_clv": model.share,
            "unsubscribe_cost_mean": mean_cost,
            **{f"class.{k}": v for k, v in classes.items()},
            **headline,
        }
        for r in evaluation.itertuples(index=False):
            for col in evaluation.columns:
                if col != "policy":
                    metrics[f"policy.{r.policy}.{col}"] = getattr(r, col)
        if tv is not None:
            metrics["truth.oracle_gain_vs_current"] = tv.attrs["oracle_gain_vs_current"]
            metrics["truth.members"] = tv.attrs["members_with_truth"]
        if shares is not None:
            # columns: class, learned, true, true with the decision rule (see FrequencyResult)
            for row in shares.itertuples(index=False):
                for key, value in zip(("learned", "true", "true_decision"), row[1:], strict=True):
                    metrics[f"class_share.{row[0]}.{key}"] = value
        tracking.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(float(v))})
        tracking.log_table(evaluation, "tables/policies.csv")
        tracking.log_table(by_class, "tables/value_by_class.csv")
        tracking.log_table(model.arm_means, "tables/arm_means.csv")
        if conf is not None:
            tracking.log_table(conf.reset_index(), "tables/class_confusion.csv")
            tracking.log_table(decision.reset_index(), "tables/class_confusion_decision.csv")
            tracking.log_table(shares, "tables/class_shares.csv")
        tracking.log_figure(value_by_class_figure(by_class, exp.current), "plots/value_by_class.png")
        run_id = run.run_id
        # inside the run: an interrupt while writing marks it failed; the table and its features file
        # are published together or not at all
        progress("frequency: writing", 0.95)
        _, feats_out = write_frames([(table, out), (frequency_features(table), features_path(out))])
        tracking.set_tags({"out": str(out)})
    progress("frequency: done", 1.0)
    return FrequencyResult(
        table=table,
        out=out,
        features_out=feats_out,
        members=len(frame),
        start=rows.start,
        evaluation=evaluation,
        confusion=conf,
        decision_confusion=decision,
        class_shares=shares,
        by_class=by_class,
        classes=classes,
        share=model.share,
        beta=model.beta,
        cost_basis=cfg.unsubscribe_cost.basis,
        mean_cost=mean_cost,
        beta_interval=model.beta_interval,
        run_id=run_id,
        headline=headline,
    )


def _check_columns(cfg: FrequencyConfig, feats: Any, config_path: str | Path) -> None:  # noqa: ANN401
    """The feature columns the config names exist in its feature set (before any work, naming the file)."""
    from omnicrm.features import feature_dtypes

    names = set(feature_dtypes(feats))
    wanted = {"estimator.scale_column": cfg.estimator.scale_column}
    if cfg.unsubscribe_cost.basis == "clv":
        wanted["unsubscribe_cost.column"] = cfg.unsubscribe_cost.column
    for key, column in wanted.items():
        if column is not None and column not in names:
            close = difflib.get_close_matches(column, sorted(names), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise InputError(f"{config_path}: {key} '{column}' is not a column of its feature set{hint}")


def _headline(evaluation: pd.DataFrame) -> dict[str, float]:
    """Learned vs the best static cap and vs the current cadence, on truth (if known) and off-policy (DR)."""
    ev = evaluation.set_index("policy")
    statics = [p for p in ev.index if p.startswith("static_")]
    out: dict[str, float] = {}
    for col in ("true_value", "dr", "ipw"):
        if col not in ev.columns:
            continue
        best = ev.loc[statics, col].idxmax()
        out[f"headline.{col}.learned_minus_best_static"] = float(ev.loc["learned", col] - ev.loc[best, col])
        out[f"headline.{col}.learned_minus_current"] = float(ev.loc["learned", col] - ev.loc["current", col])
    return out
