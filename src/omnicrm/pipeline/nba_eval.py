"""Wiring of ``omnicrm nba-eval``: judge a catalogue's policy off-policy before its lists ship.

Reads the catalogue and its ``evaluation`` block, loads the randomised history through the named
uplift config (store campaigns or a feature table), applies the catalogue's rules to every row,
cross-fits the effect and outcome models by customer, and hands everything to the pure step
:mod:`omnicrm.nba.evaluate`. On a synthetic world whose uplift config has a ``truth`` block, the
generator's per-person effects are read *only* to report each policy's true value beside the
estimates (as identity metrics are), never to decide. One MLflow run per evaluation (the catalogue's
experiment, ``omnicrm-nba``) holds the tables, the verdicts and the value-vs-budget plot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from omnicrm.errors import ConfigError, InputError
from omnicrm.progress import Progress, silent

__all__ = ["NbaEvalResult", "run_nba_eval"]


@dataclass
class NbaEvalResult:
    """What ``omnicrm nba-eval`` prints.

    Attributes
    ----------
    table
        Every policy at every configured budget (:attr:`omnicrm.nba.evaluate.Judgement.table`).
    differences
        Next-best action minus each other policy, paired (per budget and estimator).
    curve
        The value-vs-budget curve's points (same columns as ``table``).
    verdicts
        Plain sentences at the headline budget.
    headline
        The headline budget.
    rows, customers, excluded_rows
        Eligible rows judged, their customers, and rows no catalogue action may reach.
    truth
        Whether true values are reported.
    outcome, unit
        The outcome valued and what its value is in (the catalogue's ``value.outcome``).
    notes
        What of the catalogue could not be judged, in plain words.
    run_id
        The MLflow run.
    """

    table: pd.DataFrame
    differences: pd.DataFrame
    curve: pd.DataFrame
    verdicts: list[str]
    headline: float
    rows: int
    customers: int
    excluded_rows: int
    truth: bool
    outcome: str
    unit: str
    run_id: str
    notes: list[str]


def _rules_passed(rows: pd.DataFrame, cat) -> pd.DataFrame:  # noqa: ANN001 - a Catalogue
    """``row, action``: the catalogue actions each row passes the rules of (rules run in DuckDB).

    ``rows`` has the row's position as its ``customer_id`` (the rules' key is one row, not a customer).
    """
    import duckdb

    from omnicrm.nba.policy import apply_rules

    con = duckdb.connect()
    try:
        kept = apply_rules(rows, cat, con).kept
    finally:
        con.close()
    return kept[["customer_id", "action"]].drop_duplicates().rename(columns={"customer_id": "row"})


def _truth(ucfg, data, arms: list[str], rows) -> np.ndarray:  # noqa: ANN001
    """True incremental value of each arm per row from the generator (NaN rows: no person maps)."""
    from omnicrm.nba.evaluate import true_values
    from omnicrm.pipeline.uplift import read_truth
    from omnicrm.uplift.truth import window_purchase_change

    if ucfg.source.window_days % 7:
        raise ConfigError(f"uplift config '{ucfg.name}': truth needs an outcome window of whole weeks")
    t = read_truth(ucfg, data, extra=("baseline_p",))
    missing = [a for a in arms[1:] if a not in t.columns]
    if missing:
        raise InputError(f"true effects table: no effect for action(s) {missing}")
    change = np.zeros((len(t), len(arms)))
    p_buy = np.zeros((len(t), len(arms)))
    change[:, 1:], p_buy[:, 1:] = window_purchase_change(
        t["baseline_p"].to_numpy(float), t[arms[1:]].to_numpy(float), ucfg.source.window_days // 7
    )
    return true_values(rows, change, p_buy)


def run_nba_eval(config_path: str | Path, progress: Progress = silent) -> NbaEvalResult:
    """Judge the catalogue at ``config_path`` on its evaluation history (see the module docstring)."""
    from omnicrm import tracking
    from omnicrm.config import read_yaml, validate_config
    from omnicrm.nba.catalogue import Catalogue, compile_catalogue, score_sources
    from omnicrm.nba.evaluate import cross_fit, judge, prepare_rows, verdicts
    from omnicrm.nba.plots import value_budget_figure
    from omnicrm.nba.value import unit_values
    from omnicrm.pipeline.uplift import data_fingerprint, load_data
    from omnicrm.uplift.config import learner_factory, load_uplift_config
    from omnicrm.uplift.data import UNIT, StoreSource
    from omnicrm.uplift.evaluate import unit_folds
    from omnicrm.uplift.learners import default_model

    where = str(config_path)
    cat = validate_config(Catalogue, read_yaml(config_path), where)
    ev = cat.evaluation
    if ev is None:
        raise ConfigError(f"{where}: no 'evaluation' block: nba-eval needs the randomised history to judge on")
    uplift_path = Path(config_path).parent / ev.uplift
    if not uplift_path.is_file():
        raise ConfigError(f"{where}: key 'evaluation.uplift': {uplift_path} not found")
    ucfg, feats = load_uplift_config(uplift_path)
    outcome = ev.outcome or ucfg.effects.outcome
    learner = ev.learner or ucfg.effects.learner
    progress(f"nba-eval: loading the randomised history of {uplift_path.name}", 0.0)
    data = load_data(ucfg, feats)
    frame = data.frame
    if outcome not in data.outcomes:
        raise ConfigError(f"{where}: key 'evaluation.outcome': '{outcome}' is not among the outcomes {data.outcomes}")
    # task scores are not point-in-time on the history: the registered task models were trained on
    # later cutoffs, so scoring them at a campaign's send time would leak what happened after it.
    # Rules naming a score see NULL and the long-term weight is 1: the policy judged is the catalogue
    # without its score-based rules and weight, and the output says so.
    scored = sorted({c for src in score_sources(cat, config_path) for c in src.columns} - set(frame.columns))
    frame = frame.assign(**dict.fromkeys(scored, np.nan))
    compile_catalogue(cat, set(frame.columns), where)
    unscored = sorted(cat.used_columns() & set(scored))
    notes = []
    if unscored:
        notes.append(
            f"task score(s) {', '.join(unscored)} are not judged: the registered task models were trained after "
            "the history's send dates (scoring them there would leak), so rules naming them see NULL and the "
            "long-term weight is 1"
        )
    # a constant channel wins: a feature table's 'channel' column may be something else (Hillstrom's
    # is the customer's purchase channel); store exposures carry the campaign's channel
    if ev.channel is not None:
        channel = np.full(len(frame), ev.channel, dtype=object)
    elif isinstance(ucfg.source, StoreSource):
        channel = frame["channel"].to_numpy(dtype=object)
    else:
        raise ConfigError(f"{where}: a feature-table history has no send channel; set 'evaluation.channel'")
    unknown = sorted(set(channel.tolist()) - set(cat.channels))
    if unknown:
        raise ConfigError(f"{where}: the history's channel(s) {unknown} are not in the catalogue's 'channels'")
    # budgets are shares of each campaign (a table experiment is one campaign)
    has_campaigns = "campaign_id" in frame.columns
    group = frame["campaign_id"].to_numpy(dtype=object) if has_campaigns else np.full(len(frame), "all", dtype=object)
    units = frame[UNIT].to_numpy(dtype=object)
    y = frame[outcome].to_numpy(float)
    # rules and values are per row: a row's position stands in for the customer id they key on
    by_row = frame.drop(columns=["customer_id"], errors="ignore").assign(customer_id=np.arange(len(frame)))
    passed = _rules_passed(by_row, cat)
    rows = prepare_rows(data.arms, data.control, y, channel, group, units, passed, unit_values(by_row, cat), cat)

    progress(f"nba-eval: cross-fitting {learner} effects and outcome models over {ev.folds} customer folds", 0.1)
    kind = "classifier" if rows.binary else "regressor"
    effect, mu = cross_fit(
        learner_factory(ucfg, learner, data.control, y),
        lambda seed: default_model(kind, seed, **ucfg.learners.model),
        data.X,
        data.arms,
        rows.arms,
        y,
        unit_folds(units, ev.folds, ev.seed),
        ev.seed,
    )
    truth = None
    if ucfg.truth is not None and outcome == ucfg.truth.outcome:
        progress("nba-eval: reading the generator's true effects (reported, never used to decide)", 0.6)
        truth = _truth(ucfg, data, rows.arms, rows)
    keep = rows.eligible
    rows_e, effect_e, mu_e = rows.subset(keep), effect[keep], mu[keep]
    truth_e = truth[keep] if truth is not None else None
    budgets = sorted({*ev.budgets, ev.headline})
    progress(f"nba-eval: policies at budgets {', '.join(f'{b:.0%}' for b in budgets)}", 0.7)
    main = judge(rows_e, effect_e, mu_e, budgets, truth_e, n_boot=ev.bootstrap, seed=ev.seed)
    progress("nba-eval: value-vs-budget curve", 0.85)
    curve = judge(rows_e, effect_e, mu_e, sorted(ev.curve), truth_e, n_boot=ev.bootstrap, seed=ev.seed)
    said = verdicts(main, ev.headline)
    unit = cat.value.outcome
    tags = {"task": "nba-eval", "dataset": cat.name, "history": ucfg.name, "outcome": outcome, "learner": learner}
    with tracking.start_run(cat.experiment, f"nba-eval · {cat.name} · {ucfg.name} history", tags=tags) as run:
        tracking.log_config(cat.model_dump(mode="json"))
        tracking.log_params(
            {
                "rows": main.rows,
                "customers": main.customers,
                "excluded_rows": int((~keep).sum()),
                "folds": ev.folds,
                "bootstrap": ev.bootstrap,
                "truth": truth is not None,
                "data_fingerprint": data_fingerprint(ucfg),
            }
        )
        head = main.table[np.isclose(main.table["budget"], ev.headline)]
        metrics = {}
        for r in head.itertuples(index=False):
            key = r.policy.replace(" ", "_").replace("-", "_")
            metrics[f"{key}.dr"] = r.dr
            metrics[f"{key}.ipw"] = r.ipw
            if truth is not None:
                metrics[f"{key}.true"] = r.true
        tracking.log_metrics(metrics)
        tracking.log_table(main.table, "tables/policy_values.csv")
        tracking.log_table(main.differences, "tables/nba_minus_policy.csv")
        tracking.log_table(curve.table, "tables/value_vs_budget.csv")
        tracking.log_dict({"headline": ev.headline, "verdicts": said, "notes": notes}, "verdicts.json")
        fig = value_budget_figure(curve.table, f"{cat.name}: value against budget ({ucfg.name} history)", unit)
        tracking.log_figure(fig, "plots/value_vs_budget.png")
        run_id = run.run_id
    progress("nba-eval: done", 1.0)
    return NbaEvalResult(
        table=main.table,
        differences=main.differences,
        curve=curve.table,
        verdicts=said,
        headline=ev.headline,
        rows=main.rows,
        customers=main.customers,
        excluded_rows=int((~keep).sum()),
        truth=truth is not None,
        outcome=outcome,
        unit=unit,
        run_id=run_id,
        notes=notes,
    )
