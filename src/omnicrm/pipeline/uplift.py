"""``omnicrm uplift | effects | readout CONFIG``: train, evaluate, serve and read out uplift from a config.

Wiring only: reads the config (:mod:`omnicrm.uplift.config`) and the data (a feature table file or
the store, opened read-only and single-threaded), calls the pure steps of :mod:`omnicrm.uplift`, logs
to MLflow through :mod:`omnicrm.tracking` (experiment ``omnicrm-uplift``) and writes outputs
atomically. The synthetic ground truth (optional ``truth`` block) is read only to *report* how well
the estimated effects track the true ones (:mod:`omnicrm.uplift.truth`).

``omnicrm effects`` either refits the configured learner and registers it as the ``candidate`` of
``omnicrm-<name>-uplift-<outcome>`` (an :class:`~omnicrm.uplift.model.EffectModel`), or, with
``model`` (``champion``, ``candidate`` or a version number), loads that registered version and scores
with it without fitting anything.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omnicrm.errors import ConfigError, InputError
from omnicrm.features.cutoffs import normalize_cutoff
from omnicrm.progress import Progress, silent
from omnicrm.score.tables import effects_long
from omnicrm.store.outputs import write_frame
from omnicrm.uplift.config import UpliftConfig, learner_factory, load_uplift_config
from omnicrm.uplift.data import (
    ARM,
    UNIT,
    StoreSource,
    UpliftData,
    closed_before,
    population_features,
    store_data,
    table_data,
)

__all__ = [
    "EffectsResult",
    "HeldOutQini",
    "ReadoutResult",
    "UpliftResult",
    "load_data",
    "load_uplift_config",
    "run_readout",
    "run_uplift",
    "write_effects",
]

#: the MLflow model kind tag of registered effect models (promotion dispatches on it)
MODEL_KIND = "uplift"


# --- reading -----------------------------------------------------------------------------------------
def read_table(path: str | Path) -> pd.DataFrame:
    """A feature table (Parquet by suffix, else CSV); :class:`InputError` naming the file when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: feature table not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        raise InputError(f"{path}: cannot read feature table ({exc})") from exc


def load_data(cfg: UpliftConfig, feats: Any) -> UpliftData:
    """The experiment's rows: from the store (opened ``deterministic``, like the tasks) or the feature table."""
    if isinstance(cfg.source, StoreSource):
        from omnicrm.store import open_store

        con = open_store(cfg.source.store, deterministic=True)
        try:
            return store_data(con, cfg.source, feats)
        finally:
            con.close()
    return table_data(read_table(cfg.source.path), cfg.source)


def _read_parquet(path: str, what: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise InputError(f"{path}: {what} not found (config key 'truth')")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        raise InputError(f"{path}: cannot read {what} ({exc})") from exc


def read_truth(cfg: UpliftConfig, data: UpliftData, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """The synthetic truth files and the store's identity links, joined onto the rows (synthetic worlds only).

    ``extra`` names further truth columns to align (``baseline_p`` for next-best-action judging).
    """
    from omnicrm.store import open_store
    from omnicrm.uplift.truth import true_effects

    if cfg.truth is None or not isinstance(cfg.source, StoreSource):
        raise ConfigError(f"uplift config '{cfg.name}': a 'truth' block needs a store source")
    truth = _read_parquet(cfg.truth.effects, "true effects table")
    owner = _read_parquet(cfg.truth.record_owner, "record owner table")
    con = open_store(cfg.source.store, deterministic=True)
    try:
        links = con.execute("select source, source_record_id, customer_id from identity_links").df()
    finally:
        con.close()
    return true_effects(truth, owner, links, data.frame, extra)


def data_fingerprint(cfg: UpliftConfig) -> str:
    """What the data is: the store's ``data_fingerprint``, or the SHA-256 of the feature table file."""
    if isinstance(cfg.source, StoreSource):
        from omnicrm.store import open_store
        from omnicrm.tasks.frames import store_fingerprint

        con = open_store(cfg.source.store, deterministic=True)
        try:
            return store_fingerprint(con)
        finally:
            con.close()
    digest = hashlib.sha256()
    with Path(cfg.source.path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        truth = read_truth(cfg, data)
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
            learners = {n: learner_factory(cfg, n, data.control, y) for n in cfg.learners.names}
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


def _log_evaluation(tracking, ev) -> None:  # noqa: ANN001 - the tracking module and an Evaluation
    from omnicrm.uplift.plots import qini_figures

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
    for action, fig in qini_figures(ev).items():
        tracking.log_figure(fig, f"plots/qini_{_metric_key(ev.outcome)}_{_metric_key(str(action))}.png")


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
    """What ``omnicrm effects`` wrote, and with which model.

    ``training_rows`` is the number of exposures the model was fitted on (from its version tag when
    it was loaded); ``model`` describes the model used in one line (printed by the command line).
    """

    out: Path
    customers: int
    rows: int
    actions: list[str]
    training_rows: int
    registered_name: str | None = None
    version: str | None = None
    refitted: bool = True
    model: str = ""
    run_id: str | None = None


def training_rows(cfg: UpliftConfig, data: UpliftData, as_of: datetime) -> pd.DataFrame:
    """The rows a model fitted at ``as_of`` learns from.

    Store sources: the exposures whose outcome window closed by ``as_of``. Feature tables: every row
    (a table holds no time).
    """
    frame = data.frame
    if isinstance(cfg.source, StoreSource):
        frame = frame[closed_before(frame, cfg.source.window_days, as_of)]
        if frame.empty:
            raise InputError(f"effects: no campaign's outcome window closed before --as-of {as_of:%Y-%m-%d}")
    return frame


def scoring_population(cfg: UpliftConfig, feats: Any, data: UpliftData | None, as_of: datetime) -> pd.DataFrame:
    """Who is scored at ``as_of``, with their features and a ``customer_id`` column.

    Store sources: every customer of the store's population at ``as_of`` (features read ``ts < as_of``).
    Feature tables: every row (keyed by ``unit_id``).
    """
    if isinstance(cfg.source, StoreSource):
        from omnicrm.store import open_store

        con = open_store(cfg.source.store, deterministic=True)
        try:
            return population_features(con, feats, as_of)
        finally:
            con.close()
    assert data is not None
    return data.frame.assign(customer_id=data.frame[UNIT].to_numpy())


@dataclass(frozen=True)
class HeldOutQini:
    """Held-out Qini coefficients of one learner and outcome per action, and what they were computed on.

    ``rows`` is the number of rows of the evaluation (``omnicrm uplift`` cross-fits on every row);
    ``source`` says where the figures come from (logged with the registered version).
    """

    rows: int
    by_action: dict[str, float]
    source: str


def write_effects(
    config_path: str | Path,
    as_of: date | datetime,
    out: str | Path,
    progress: Progress = silent,
    model: str | None = None,
    qini: HeldOutQini | None = None,
) -> EffectsResult:
    """Write ``(customer_id, action, outcome, effect)`` for every customer at ``as_of``.

    Parameters
    ----------
    config_path
        The uplift config (source, ``effects.learner`` and ``effects.outcome``).
    as_of
        Score date. Store sources: features read ``ts < as_of``; a refit learns from the campaigns
        whose outcome window closed by ``as_of``. Feature tables hold no time: every row is scored
        and ``as_of`` only labels the model.
    out
        The Parquet file, replaced whole or not at all.
    progress
        Progress callback.
    model
        ``None``: refit the configured learner, log a run and register the fitted
        :class:`~omnicrm.uplift.model.EffectModel` as ``candidate``. An alias (``champion``,
        ``candidate``) or a version number: load that registered version and score with it; nothing
        is fitted.
    qini
        Held-out Qini coefficients of this learner and outcome, when known (the demo passes the
        figures of ``omnicrm uplift``): logged and tagged on the registered version when they were
        computed on as many rows as the model is fitted on (the same exposures), else left out.

    Returns
    -------
    EffectsResult
        Counts, the model used (registered name and version) and the output path.
    """
    as_of = normalize_cutoff(as_of)
    cfg, feats = load_uplift_config(config_path)
    if model is not None:
        return _score_registered(cfg, feats, as_of, out, model, progress)
    progress("effects: loading training data", 0.0)
    data = load_data(cfg, feats)
    rows = training_rows(cfg, data, as_of)
    learner = cfg.effects.learner
    window = (
        f"campaigns whose outcome window closed before {as_of:%Y-%m-%d}"
        if isinstance(cfg.source, StoreSource)
        else f"the rows of {cfg.source.path}"
    )
    progress(f"effects: refitting {learner} on {len(rows):,} exposures of {window}", 0.3)
    from omnicrm.uplift.model import fit_effect_model

    make = learner_factory(cfg, learner, data.control, rows[cfg.effects.outcome].to_numpy(float))
    effect_model = fit_effect_model(make, learner, rows, data.features, data.categorical, cfg.effects.outcome)
    progress("effects: scoring", 0.6)
    pop = scoring_population(cfg, feats, data, as_of)
    long = effects_long(
        pop["customer_id"].to_numpy(), effect_model.actions, cfg.effects.outcome, effect_model.predict_effect(pop)
    )
    progress("effects: logging and registering the model", 0.8)
    effect_model.meta = _training_meta(cfg, rows, as_of, window)
    known = qini if qini is not None and qini.rows == len(rows) else None
    run_id, version = _register(cfg, feats, effect_model, pop, known)
    written = write_frame(long, out)
    progress("effects: written", 1.0)
    name = cfg.registered_name()
    return EffectsResult(
        written,
        len(pop),
        len(long),
        effect_model.actions,
        len(rows),
        name,
        version,
        True,
        f"refitted {learner} on {len(rows):,} exposures of {window}; registered {name} v{version} (candidate)",
        run_id,
    )


def _training_meta(cfg: UpliftConfig, rows: pd.DataFrame, as_of: datetime, window: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "as_of": f"{as_of:%Y-%m-%d}",
        "training_rows": len(rows),
        "training_window": window,
        "learner": cfg.effects.learner,
        "outcome": cfg.effects.outcome,
        "data_fingerprint": data_fingerprint(cfg),
    }
    if isinstance(cfg.source, StoreSource):
        sends = rows.groupby("campaign_id", sort=True)["cutoff"].min()
        meta |= {
            "campaigns": ",".join(sends.index.astype(str)),
            "first_send": f"{sends.min():%Y-%m-%d}",
            "last_send": f"{sends.max():%Y-%m-%d}",
            "window_days": cfg.source.window_days,
        }
    return meta


def _register(
    cfg: UpliftConfig, feats: Any, model: Any, pop: pd.DataFrame, qini: HeldOutQini | None
) -> tuple[str, str | None]:
    """Log the effects run and register ``model`` as the candidate of ``cfg.registered_name()``."""
    from omnicrm import tracking

    meta = model.meta
    tags = {
        "task": "effects",
        "model_kind": MODEL_KIND,
        "dataset": cfg.name,
        "outcome": model.outcome,
        "learner": model.learner_name,
        "as_of": meta["as_of"],
        "data_fingerprint": meta["data_fingerprint"],
    }
    version_tags = {k: v for k, v in meta.items() if k != "training_window"} | {
        "model_kind": MODEL_KIND,
        "training_window": meta["training_window"],
        "primary_metric": "qini",
        "config": cfg.name,
    }
    if qini is not None:
        version_tags |= {"qini": f"{float(np.mean(list(qini.by_action.values()))):.6f}", "qini_source": qini.source}
        version_tags |= {f"qini.{a}": f"{v:.6f}" for a, v in qini.by_action.items()}
    # the columns as the feature builder types them (what a batch job passes), like the task models
    features = pop[model.features]
    with tracking.start_run(cfg.experiment, f"effects · {cfg.name} · as of {meta['as_of']}", tags=tags) as run:
        tracking.log_config(cfg.model_dump(mode="json"))
        if feats is not None:
            tracking.log_dict(feats.model_dump(mode="json"), "features.json")
        tracking.log_params({"training_rows": meta["training_rows"], "features": len(model.features)})
        if qini is not None:
            tracking.log_metrics({f"qini.{_metric_key(a)}": v for a, v in qini.by_action.items()})
        ref = tracking.log_model(
            model,
            features.head(5),
            signature_sample=features.sample(min(len(features), 2000), random_state=0),
            registered_name=cfg.registered_name(),
            tags=version_tags,
        )
        return run.run_id, ref.version


def _score_registered(
    cfg: UpliftConfig, feats: Any, as_of: datetime, out: str | Path, ref: str, progress: Progress
) -> EffectsResult:
    """``omnicrm effects --model REF``: the registered effect model scores the population; no fit."""
    from omnicrm.pipeline.promote_models import check_fingerprint, load_registered

    name = cfg.registered_name()
    progress(f"effects: loading {name} ({ref}) from the registry", 0.0)
    version, effect_model = load_registered(name, ref, "effects")
    check_fingerprint(version, data_fingerprint(cfg), "the uplift source")
    data = None if isinstance(cfg.source, StoreSource) else load_data(cfg, feats)
    progress("effects: scoring", 0.4)
    pop = scoring_population(cfg, feats, data, as_of)
    long = effects_long(
        pop["customer_id"].to_numpy(), effect_model.actions, cfg.effects.outcome, effect_model.predict_effect(pop)
    )
    written = write_frame(long, out)
    progress("effects: written", 1.0)
    aliases = f" ({', '.join(version.aliases)})" if version.aliases else ""
    fitted = version.tags.get("as_of", "?")
    trained = int(version.tags.get("training_rows", effect_model.meta.get("training_rows", 0)) or 0)
    return EffectsResult(
        written,
        len(pop),
        len(long),
        effect_model.actions,
        trained,
        name,
        version.version,
        False,
        f"{name} v{version.version}{aliases}: {effect_model.learner_name} fitted as of {fitted}, not refitted",
        version.run_id,
    )
