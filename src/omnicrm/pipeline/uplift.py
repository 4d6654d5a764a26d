"""``omnicrm uplift | effects | readout CONFIG``: train, evaluate and read out uplift from a config.

Wiring only: reads the config and the data (a feature table or the store), calls the pure steps of
:mod:`omnicrm.uplift`, logs to MLflow through :mod:`omnicrm.tracking` (experiment ``omnicrm-uplift``)
and writes outputs atomically. The synthetic ground truth (optional ``truth`` block) is read only to
*report* how well the estimated effects track the true ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from omnicrm.config import StrictModel, load_config, read_yaml, validate_config
from omnicrm.errors import ConfigError, InputError
from omnicrm.features.cutoffs import normalize_cutoff
from omnicrm.progress import Progress, silent
from omnicrm.store.outputs import write_frame
from omnicrm.uplift.data import ARM, UNIT, Source, StoreSource, UpliftData, load_store, load_table, to_model_frame

LearnerName = Literal["S", "T", "X", "DR"]


class LearnerSettings(StrictModel):
    """Which learners to compare and the LightGBM settings of their base models."""

    names: list[LearnerName] = Field(default=["S", "T", "X", "DR"], min_length=1)
    #: LightGBM parameters overriding ``omnicrm.uplift.learners.default_model``
    model: dict[str, Any] = {}
    dr_folds: int = Field(default=2, ge=2, le=10)


class EvaluationSettings(StrictModel):
    """Held-out evaluation: outcomes, split seeds, cross-fitting folds and the targeting share k."""

    outcomes: list[str] | None = None
    seeds: int = Field(default=5, ge=1, le=50)
    folds: int = Field(default=2, ge=2, le=10)
    top_k: float = Field(default=0.3, gt=0, lt=1)


class ReadoutSettings(StrictModel):
    """Campaign readout: outcomes and grouping columns (e.g. campaign_id); the segment comes from the source."""

    outcomes: list[str] | None = None
    by: list[str] = []


class EffectsSettings(StrictModel):
    """The learner and outcome of ``omnicrm effects``."""

    learner: LearnerName = "DR"
    outcome: str


class TruthSettings(StrictModel):
    """Synthetic ground truth: per-person true effects and the record -> person map."""

    effects: str
    record_owner: str
    outcome: str = "purchase"


class UpliftConfig(StrictModel):
    name: str
    source: Source
    learners: LearnerSettings = LearnerSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    readout: ReadoutSettings = ReadoutSettings()
    effects: EffectsSettings
    truth: TruthSettings | None = None
    experiment: str = "omnicrm-uplift"

    @model_validator(mode="after")
    def _check_outcomes(self) -> UpliftConfig:
        known = list(self.source.outcomes)
        for key, values in (
            ("evaluation.outcomes", self.evaluation.outcomes or []),
            ("readout.outcomes", self.readout.outcomes or []),
            ("effects.outcome", [self.effects.outcome]),
        ):
            bad = [v for v in values if v not in known]
            if bad:
                raise ValueError(f"'{key}': {bad} not among the source's outcomes {known}")
        return self


def load_uplift_config(path: str | Path) -> tuple[UpliftConfig, Any]:
    """The config and, for a store source, its feature config (a path relative to the config file)."""
    path = Path(path)
    cfg = load_config(UpliftConfig, path)
    feats = None
    if isinstance(cfg.source, StoreSource):
        from omnicrm.features.config import FeatureConfig

        if isinstance(cfg.source.features, str):
            fpath = path.parent / cfg.source.features
            feats = validate_config(FeatureConfig, read_yaml(fpath), str(fpath))
        else:
            feats = validate_config(FeatureConfig, cfg.source.features, f"{path} (key 'source.features')")
    return cfg, feats


def load_data(cfg: UpliftConfig, feats: Any) -> UpliftData:
    if isinstance(cfg.source, StoreSource):
        return load_store(cfg.source, feats)
    return load_table(cfg.source)


def learner_factory(cfg: UpliftConfig, name: str, control: str, outcome: str, y: np.ndarray):  # noqa: ANN201
    """A function seed -> fresh learner, with the configured LightGBM base models."""
    from omnicrm.uplift.learners import default_model, make_learner

    binary = bool(np.isin(y, (0.0, 1.0)).all())

    def make(seed: int):  # noqa: ANN202
        base = default_model("classifier" if binary else "regressor", seed, **cfg.learners.model)
        eff = default_model("regressor", seed, **cfg.learners.model)
        return make_learner(
            name,
            control=control,
            outcome="binary" if binary else "continuous",
            base_model=base,
            effect_model=eff,
            random_state=seed,
            n_folds=cfg.learners.dr_folds,
        )

    return make


# --- truth (synthetic worlds only) -------------------------------------------------------------------
def true_effects(cfg: UpliftConfig, data: UpliftData) -> pd.DataFrame:
    """True effect of each action aligned with the rows (NaN where a row's customer has no truth).

    The truth is per (person, campaign); people map to customers through the source records they own
    (``record_owner``) and the store's ``identity_links``. A customer formed from several people gets
    their mean effect.
    """
    from omnicrm.store import open_store

    assert cfg.truth is not None and isinstance(cfg.source, StoreSource)
    truth = pd.read_parquet(cfg.truth.effects)
    owner = pd.read_parquet(cfg.truth.record_owner)
    con = open_store(cfg.source.store, deterministic=True)
    try:
        con.register("__owner", owner)
        person_customer = con.execute(
            "select distinct o.person_id, l.customer_id from __owner o "
            "join identity_links l on l.source = o.source and l.source_record_id = o.record_key"
        ).df()
    finally:
        con.close()
    cols = [c for c in truth.columns if c.startswith("effect_")]
    merged = truth.merge(person_customer, on="person_id")
    per = merged.groupby(["customer_id", "campaign_id"], as_index=False)[cols].mean()
    rows = data.frame[["customer_id", "campaign_id"]].merge(per, on=["customer_id", "campaign_id"], how="left")
    return rows[cols].rename(columns=lambda c: c.removeprefix("effect_"))


# --- uplift: train and evaluate -------------------------------------------------------------------------
@dataclass
class UpliftResult:
    """``table``: one row per (outcome, learner, action) with mean and std over seeds of each metric."""

    table: pd.DataFrame
    policy: pd.DataFrame
    verdicts: dict[str, dict[str, str]]
    rows: int
    run_id: str | None = None
    evaluations: dict = field(default_factory=dict)


def _wide(summary: pd.DataFrame) -> pd.DataFrame:
    s = summary.copy()
    wide = s.pivot_table(index=["learner", "action"], columns="metric", values=["mean", "std"], sort=False)
    wide.columns = [f"{m}" if stat == "mean" else f"{m}_std" for stat, m in wide.columns]
    return wide.reset_index()


def run_uplift(config_path: str | Path, progress: Progress = silent) -> UpliftResult:
    """Cross-fitted effects of every configured learner and outcome, scored over several seeds, logged."""
    from omnicrm import tracking
    from omnicrm.uplift.evaluate import evaluate

    cfg, feats = load_uplift_config(config_path)
    progress("uplift: loading data", 0.0)
    data = load_data(cfg, feats)
    X, arm, units = data.X, data.arms, data.frame[UNIT].to_numpy()
    truth = truth_by = None
    if cfg.truth is not None:
        truth = true_effects(cfg, data)
        truth_by = data.frame["campaign_id"].to_numpy(dtype=object)
    outcomes = cfg.evaluation.outcomes or data.outcomes
    seeds = list(range(cfg.evaluation.seeds))
    parts, policies, verdicts, evals = [], [], {}, {}
    tags = {
        "task": "uplift",
        "dataset": cfg.name,
        "outcome": ",".join(outcomes),
        "learners": ",".join(cfg.learners.names),
        "model_family": "lightgbm meta-learners",
    }
    with tracking.start_run(cfg.experiment, f"uplift-{cfg.name}", tags=tags) as run:
        tracking.log_config(cfg.model_dump(mode="json"))
        tracking.log_params(
            {
                "rows": len(data.frame),
                "seeds": len(seeds),
                "folds": cfg.evaluation.folds,
                "top_k": cfg.evaluation.top_k,
                "features": len(data.features),
            }
        )
        for i, outcome in enumerate(outcomes):
            y = data.frame[outcome].to_numpy(float)
            use_truth = truth if (cfg.truth is not None and outcome == cfg.truth.outcome) else None
            learners = {n: learner_factory(cfg, n, data.control, outcome, y) for n in cfg.learners.names}
            ev = evaluate(
                learners,
                X,
                arm,
                y,
                units,
                data.control,
                outcome,
                seeds,
                cfg.evaluation.folds,
                cfg.evaluation.top_k,
                truth=use_truth,
                truth_by=truth_by if use_truth is not None else None,
                progress=lambda f, i=i, o=outcome: progress(f"uplift: {o}", (i + f) / len(outcomes)),
            )
            evals[outcome] = ev
            wide = _wide(ev.summary())
            wide.insert(0, "outcome", outcome)
            parts.append(wide)
            pol = ev.policy_summary()
            pol.insert(0, "outcome", outcome)
            policies.append(pol)
            verdicts[outcome] = ev.verdicts()
            _log_evaluation(tracking, ev)
        table = pd.concat(parts, ignore_index=True)
        policy = pd.concat(policies, ignore_index=True)
        tracking.log_table(table, "tables/uplift_metrics.csv")
        tracking.log_table(policy, "tables/policy_values.csv")
        tracking.log_dict(verdicts, "verdicts.json")
        run_id = run.run_id
    progress("uplift: done", 1.0)
    return UpliftResult(table, policy, verdicts, len(data.frame), run_id, evals)


def _metric_key(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-/ " else "_" for ch in name)


def _log_evaluation(tracking, ev) -> None:  # noqa: ANN001
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    summary = ev.summary()
    metrics = {}
    for r in summary.itertuples(index=False):
        base = _metric_key(f"{ev.outcome}.{r.learner}.{r.action}.{r.metric}")
        metrics[f"{base}.mean"] = r.mean
        if r.seeds > 1:
            metrics[f"{base}.std"] = r.std
    for r in ev.comparison.groupby("learner", sort=False)[["gain", "gain_se"]].mean().reset_index().itertuples():
        metrics[_metric_key(f"{ev.outcome}.{r.learner}.policy_gain_vs_best_constant")] = r.gain
        metrics[_metric_key(f"{ev.outcome}.{r.learner}.policy_gain_se")] = r.gain_se
    tracking.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
    for action in sorted({a for _, a in ev.curves}):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        end = None
        for (learner, a), (x, q) in ev.curves.items():
            if a == action:
                ax.plot(x, q, label=learner)
                end = q[-1]
        if end is not None:
            ax.plot([0, 1], [0, end], "k--", label="random")
        ax.set_xlabel("share targeted (by predicted effect)")
        ax.set_ylabel(f"incremental {ev.outcome} per row")
        ax.set_title(f"Qini: {action} on {ev.outcome} (held-out, seed 0)")
        ax.legend()
        tracking.log_figure(fig, f"plots/qini_{_metric_key(ev.outcome)}_{_metric_key(str(action))}.png")
        plt.close(fig)


# --- readout --------------------------------------------------------------------------------------------
@dataclass
class ReadoutResult:
    """``table``: per (by columns, action, outcome) A/B figures; ``segments``: the same per segment."""

    table: pd.DataFrame
    segments: pd.DataFrame | None
    run_id: str | None = None


def run_readout(config_path: str | Path, progress: Progress = silent) -> ReadoutResult:
    """Each action's average effect against control with 95% intervals and MDE, per campaign and segment."""
    from omnicrm import tracking
    from omnicrm.uplift.readout import readout

    cfg, feats = load_uplift_config(config_path)
    progress("readout: loading data", 0.0)
    data = load_data(cfg, feats)
    outcomes = cfg.readout.outcomes or data.outcomes
    missing = [c for c in cfg.readout.by if c not in data.frame.columns]
    if missing:
        raise ConfigError(f"{config_path}: readout.by column(s) {missing} are not in the data")
    table = readout(data.frame, ARM, data.control, outcomes, cfg.readout.by)
    segments = None
    if data.segment:
        seg = data.frame.assign(**{data.segment: data.frame[data.segment].astype(str)})
        segments = readout(seg, ARM, data.control, outcomes, [*cfg.readout.by, data.segment])
    tags = {"task": "readout", "dataset": cfg.name, "outcome": ",".join(outcomes)}
    with tracking.start_run(cfg.experiment, f"readout-{cfg.name}", tags=tags) as run:
        tracking.log_config(cfg.model_dump(mode="json"))
        tracking.log_table(table, "tables/readout.csv")
        if segments is not None:
            tracking.log_table(segments, "tables/readout_segments.csv")
        metrics = {}
        for r in table.to_dict("records"):
            key = ".".join(str(r[c]) for c in [*cfg.readout.by, "action", "outcome"])
            metrics[_metric_key(f"ate.{key}")] = r["ate"]
            metrics[_metric_key(f"ate_se.{key}")] = r["se"]
        tracking.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        run_id = run.run_id
    progress("readout: done", 1.0)
    return ReadoutResult(table, segments, run_id)


# --- effects: per-customer scores at a date -----------------------------------------------------------------
@dataclass
class EffectsResult:
    out: Path
    customers: int
    rows: int
    actions: list[str]
    training_rows: int


def write_effects(
    config_path: str | Path, as_of: date | datetime, out: str | Path, progress: Progress = silent
) -> EffectsResult:
    """Fit the configured learner and write ``(customer_id, action, effect)`` for every customer at ``as_of``.

    Store sources: training uses only campaigns whose outcome window closed before ``as_of``, and the
    scored features are built at ``as_of`` (reading ``ts < as_of``). Feature tables hold no time: every
    row is scored and ``as_of`` only labels the output.
    """
    from omnicrm.uplift.data import population_features

    as_of = normalize_cutoff(as_of)
    cfg, feats = load_uplift_config(config_path)
    progress("effects: loading training data", 0.0)
    data = load_data(cfg, feats)
    frame = data.frame
    if isinstance(cfg.source, StoreSource):
        closed = frame["cutoff"] + timedelta(days=cfg.source.window_days) <= pd.Timestamp(as_of)
        frame = frame[closed.to_numpy()]
        if frame.empty:
            raise InputError(f"effects: no campaign's outcome window closed before --as-of {as_of:%Y-%m-%d}")
    y = frame[cfg.effects.outcome].to_numpy(float)
    make = learner_factory(cfg, cfg.effects.learner, data.control, cfg.effects.outcome, y)
    progress("effects: fitting", 0.3)
    learner = make(0).fit(to_model_frame(frame, data.features, data.categorical), frame[ARM].to_numpy(dtype=object), y)
    progress("effects: scoring", 0.7)
    if isinstance(cfg.source, StoreSource):
        pop = population_features(cfg.source, feats, as_of)
        ids = pop["customer_id"].to_numpy()
    else:
        pop = data.frame
        ids = pop[UNIT].to_numpy()
    effect = learner.predict_effect(to_model_frame(pop, data.features, data.categorical))
    actions = list(learner.actions_)
    long = pd.DataFrame(
        {
            "customer_id": np.repeat(ids, len(actions)),
            "action": np.tile(np.asarray(actions, dtype=object), len(ids)),
            "effect": effect.reshape(-1),
        }
    )
    out = write_frame(long, out)
    progress("effects: written", 1.0)
    return EffectsResult(out, len(ids), len(long), actions, len(frame))
