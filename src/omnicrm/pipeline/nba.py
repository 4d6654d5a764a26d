"""``omnicrm nba CONFIG --as-of DATE --out FILE``: a next-best-action list under the contact policy and limits.

Wiring only: loads the catalogue (:mod:`omnicrm.nba.catalogue`), opens the store read-only and
single-threaded, builds the population's features at ``as_of`` (``ts < as_of``), scores the registered
task models the catalogue lists under ``scores`` on those features (each on its task's population at
``as_of``; the others get no score) and joins their columns on, loads the registered effect models
(``champion`` by default, ``--model`` to choose) and, for product-led actions, the registered
recommender (its champion), calls the pure steps of :mod:`omnicrm.nba` (rules, contact policy, value
with its long-term weight, allocation, the effect's drivers for the sent rows, reasons), writes the
``nba`` list to ``out`` and the ``excluded`` table beside it (``<name>.excluded<suffix>``), and logs
an MLflow run (experiment ``omnicrm-nba``): the catalogue, the levers and long-term weight, the
constraint summary (customers dropped per step, budget used, contacts per channel, solver gap) and
the expected incremental value.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omnicrm import schema
from omnicrm.errors import ConfigError, InputError
from omnicrm.features.cutoffs import normalize_cutoff
from omnicrm.progress import Progress, silent
from omnicrm.store.outputs import conform, write_frame

__all__ = ["NbaList", "NbaResult", "Preloaded", "excluded_path", "nba_list", "run_nba"]

#: Models a caller has already resolved and loaded: ``(registered name, reference) -> (version, model)``.
#: ``omnicrm score`` passes the models it scores with, so its list uses the very same objects and
#: versions; anything not in it is looked up in the registry here (``omnicrm nba``).
Preloaded = dict[tuple[str, str], tuple[str, Any]]


@dataclass
class NbaResult:
    """What ``omnicrm nba`` wrote and the run's constraint summary."""

    out: Path
    excluded: Path
    customers: int
    rows: int
    summary: dict[str, float]
    models: dict[str, str]  # registered name -> version
    method: str
    table: pd.DataFrame  # per action and channel: customers, expected value, cost
    run_id: str | None = None
    long_term: dict[str, float | str] | None = None  # the long-term weight's settings and resolved reference
    seconds: dict[str, float] | None = None  # time per stage (scores, effects, drivers, ...)


def excluded_path(out: str | Path) -> Path:
    """Where the ``excluded`` table of a list written to ``out`` goes: ``<name>.excluded<suffix>``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.excluded{out.suffix}")


def _scores(cat, config_path: Path, con, pop: pd.DataFrame, as_of: datetime, fingerprint: str, given: Preloaded):  # noqa: ANN001, ANN202
    """``pop`` with the task score columns the catalogue's rules and value read, and the models used.

    Each task listed under ``scores`` is scored with the shared features (plus its own inputs, e.g.
    CLV's BG/NBD columns) on its own population at ``as_of``; customers outside it get no score
    (null: a rule over it is not true, a long-term weight is 1). Targets whose columns nothing reads
    are not scored.
    """
    from omnicrm import tracking
    from omnicrm.nba.catalogue import score_sources
    from omnicrm.pipeline.promote_models import check_fingerprint
    from omnicrm.tasks.predict import score_frame

    used = cat.used_columns()
    versions: dict[str, str] = {}
    for src in score_sources(cat, config_path):
        wanted = {name: tc for name, tc in src.targets.items() if set(tc[1]) & used}
        if not wanted:
            continue
        task = src.config.task
        members = set(con.sql(task.population_sql(as_of)).df()["customer_id"])
        frame = task.add_inputs(con, as_of, pop[pop["customer_id"].isin(members)].reset_index(drop=True))
        models = {}
        for name, (target, _) in wanted.items():
            if (name, src.ref) in given:
                version, model = given[name, src.ref]
            else:
                info = tracking.find_version(name, src.ref)
                if info is None:
                    raise ConfigError(
                        f"{config_path}: key 'scores': registered model '{name}' (task config {src.path}) has no "
                        f"version '{src.ref}'; train it with `omnicrm train {src.path}` and promote it"
                    )
                check_fingerprint(info, fingerprint, f"store {cat.store}")
                version, model = info.version, tracking.load_model(tracking.model_uri(name, info.version))
            missing = [c for c in model.encoding.features if c not in frame.columns]
            if missing:
                raise ConfigError(
                    f"{config_path}: key 'scores': {name} v{version} needs feature column(s) {missing[:10]} that "
                    f"the catalogue's features do not build (its task config {src.path} uses other features)"
                )
            models[target] = model
            versions[name] = version
        scored = score_frame(task, frame, models)
        cols = [c for _, tc in wanted.items() for c in tc[1]]
        scored.insert(0, "customer_id", frame["customer_id"].to_numpy())
        pop = pop.merge(scored[["customer_id", *cols]], on="customer_id", how="left")
    return pop, versions


def _effects(cat, pop: pd.DataFrame, ref: str, fingerprint: str, given: Preloaded):  # noqa: ANN001, ANN202
    """``customer_id, action, effect`` per catalogue action from the registered effect models (``cat``'s).

    Also returns the versions used and, per catalogue action, the loaded model and the action's name
    in it (for the drivers of the sent rows).
    """
    from omnicrm.pipeline.promote_models import check_fingerprint, full_name, load_registered

    by_model: dict[str, list[tuple[str, str]]] = {}
    for action in cat.actions:
        model, name = cat.effect_source(action)
        by_model.setdefault(full_name(model), []).append((action, name))
    parts, versions, loaded = [], {}, {}
    for model, pairs in by_model.items():
        if (model, ref) in given:
            number, effect_model = given[model, ref]
        else:
            version, effect_model = load_registered(model, ref, "effects")
            check_fingerprint(version, fingerprint, f"store {cat.store}")
            number = version.version
        versions[model] = number
        known = effect_model.actions
        missing = [n for _, n in pairs if n not in known]
        if missing:
            raise ConfigError(
                f"nba catalogue '{cat.name}': effect model {model} v{number} has no action(s) {missing}; "
                f"it estimates {known} (set effect_action on the action)"
            )
        tau = effect_model.predict_effect(pop)
        for action, name in pairs:
            loaded[action] = (effect_model, name)
            parts.append(
                pd.DataFrame(
                    {
                        "customer_id": pop["customer_id"].to_numpy(),
                        "action": action,
                        "effect": tau[:, known.index(name)],
                    }
                )
            )
    return pd.concat(parts, ignore_index=True), versions, loaded


def _products(  # noqa: ANN001
    cat, con, as_of: datetime, customers: pd.Series, fingerprint: str, given: Preloaded
) -> tuple[pd.Series, dict[str, str]]:
    """Each customer's top recommended product (customers without a recommendation are absent)."""
    from omnicrm.pipeline.promote_models import check_fingerprint, full_name, load_registered
    from omnicrm.recommend.history import load_purchases

    name = full_name(cat.recommender)
    if (name, "champion") in given:
        number, served = given[name, "champion"]
    else:
        version, served = load_registered(name, "champion", "recommend")
        check_fingerprint(version, fingerprint, f"store {cat.store}")
        number = version.version
    purchases = load_purchases(con, as_of)
    purchases = purchases[purchases["customer_id"].isin(set(customers))]
    if purchases.empty:
        return pd.Series(dtype=object), {name: number}
    recs = served.predict_frame(purchases, as_of=as_of, k=1)
    top = recs[recs["rank"] == 1].set_index("customer_id")["product_id"]
    return top, {name: number}


@dataclass
class NbaList:
    """A next-best-action list and what it took, before anything is written or logged."""

    nba: pd.DataFrame
    excluded: pd.DataFrame  # the ``excluded`` contract: customer, step, reason per dropped candidate
    customers: int  # the population the list chose from
    summary: dict[str, float]
    models: dict[str, str]  # registered name -> version
    method: str
    tight: list[str]
    table: pd.DataFrame  # per action and channel: customers, expected value, cost
    long_term: dict[str, float | str] | None
    drivers_unavailable: Any
    seconds: dict[str, float]


def nba_list(
    cat,  # noqa: ANN001 - a loaded Catalogue
    config_path: str | Path,
    con,  # noqa: ANN001 - the store, read-only and single-threaded
    pop: pd.DataFrame,
    as_of: datetime,
    *,
    fingerprint: str,
    model: str = "champion",
    given: Preloaded | None = None,
    products: tuple[pd.Series, dict[str, str]] | None = None,
    progress: Progress = silent,
) -> NbaList:
    """The list at ``as_of`` for the customers of ``pop`` (their features at ``as_of``), not yet written.

    ``omnicrm nba`` and ``omnicrm score`` both call this: the former with the features it builds and
    models from the registry, the latter with the features it built once for every model and the
    models it already loaded (``given``), so a scoring run's list uses the versions its manifest names.
    """
    from omnicrm.nba.allocate import Limits, allocate
    from omnicrm.nba.check import violations
    from omnicrm.nba.drivers import effect_drivers
    from omnicrm.nba.lists import constraint_summary, nba_rows, not_chosen
    from omnicrm.nba.policy import Candidates, _excluded, apply_policy, apply_rules, contact_policy
    from omnicrm.nba.value import expected_values, long_term_weights, unit_values

    given = given or {}
    models: dict[str, str] = {}
    seconds: dict[str, float] = {}
    if cat.scores:
        progress("nba: task scores from the registered task models", 0.1)
        t0 = time.perf_counter()
        pop, used = _scores(cat, Path(config_path), con, pop, as_of, fingerprint, given)
        models |= used
        seconds["scores"] = time.perf_counter() - t0
    progress(f"nba: rules and contact policy for {len(pop):,} customers", 0.2)
    cands = apply_rules(pop, cat, con)
    state = contact_policy(con, pop["customer_id"], cat, as_of)
    cands = apply_policy(cands, state)
    kept = cands.kept.assign(product_id=pd.Series(pd.NA, index=cands.kept.index, dtype=object))
    led = [a for a, s in cat.actions.items() if s.product == "recommended"]
    if led:
        progress("nba: recommended products", 0.35)
        top, used = products or _products(cat, con, as_of, pop["customer_id"], fingerprint, given)
        models |= used
        rows = kept["action"].isin(led).to_numpy()
        kept.loc[rows, "product_id"] = kept.loc[rows, "customer_id"].map(top).to_numpy()
        lost = rows & kept["product_id"].isna().to_numpy()
        cands = Candidates(
            kept[~lost].reset_index(drop=True),
            pd.concat(
                [cands.excluded, _excluded(kept[lost], "product", "no recommended product for this customer")],
                ignore_index=True,
            ),
        )
    else:
        cands = Candidates(kept, cands.excluded)
    progress("nba: effects from the registered effect models", 0.45)
    t0 = time.perf_counter()
    effects, used, effect_models = _effects(cat, pop, model, fingerprint, given)
    seconds["effects"] = time.perf_counter() - t0
    models |= used
    lt = long_term_weights(pop, cat.value.long_term) if cat.value.long_term is not None else None
    cands = expected_values(cands, effects, unit_values(pop, cat, lt), cat)
    progress(f"nba: allocating {len(cands.kept):,} candidates", 0.6)
    per = cat.allocation.per_customer
    slots = np.full(len(cands.kept), per, dtype=np.int64)
    if not state.slots.empty:
        left = cands.kept["customer_id"].map(state.slots).fillna(per).to_numpy()
        slots = np.minimum(slots, left.astype(np.int64))
    limits = Limits(
        budget=cat.allocation.budget,
        capacity=dict(cat.allocation.capacity),
        min_volume={a: s.min_volume for a, s in cat.actions.items() if s.min_volume},
        max_volume={a: s.max_volume for a, s in cat.actions.items() if s.max_volume is not None},
        exact_limit=cat.allocation.exact_limit,
        time_limit=cat.allocation.time_limit,
    )
    alloc = allocate(cands.kept, slots, limits)
    progress("nba: reasons, checks and outputs", 0.85)
    as_of_ts = pd.Timestamp(as_of)
    # the effect's drivers, for the sent rows only (exact contributions cost far more than the effect)
    t0 = time.perf_counter()
    reach = {c: s.reach for c, s in cat.channels.items()}
    drivers = effect_drivers(cands.kept[alloc.chosen], pop, effect_models, reach, cat.drivers)
    seconds["drivers"] = time.perf_counter() - t0
    nba = nba_rows(cands.kept, alloc, cat.value.outcome, as_of_ts, drivers.text)
    broken = violations(nba, con, cat, as_of)
    if broken:  # the allocation promised every limit: a broken one is a bug, never a list to send
        raise RuntimeError(f"nba: the list breaks its constraints: {'; '.join(broken)}")
    excluded = pd.concat([cands.excluded, not_chosen(cands.kept, alloc)], ignore_index=True)
    excluded = conform(excluded, schema.EXCLUDED)
    summary = constraint_summary(excluded, nba, len(pop), alloc, cat.allocation.budget) | {"violations": 0.0}
    summary |= {"drivers_rows": float(drivers.rows)} | {f"seconds.{k}": v for k, v in seconds.items()}
    long_term = None
    if lt is not None:
        spec = cat.value.long_term
        assert spec is not None
        long_term = {
            "column": spec.column,
            "weight": spec.weight,
            "reference": spec.reference if isinstance(spec.reference, str) else "fixed",
            "reference_value": lt.reference,
            "min": spec.min,
            "max": spec.max,
            "missing": lt.missing,
        }
        if len(nba):
            w = nba["long_term"].to_numpy(float)
            summary |= {"long_term.sent_mean": float(w.mean()), "long_term.sent_min": float(w.min())}
            summary |= {"long_term.sent_max": float(w.max())}
    table = (
        nba.groupby(["action", "channel"], sort=True)
        .agg(customers=("customer_id", "nunique"), expected_value=("expected_value", "sum"), cost=("cost", "sum"))
        .reset_index()
    )
    return NbaList(
        nba,
        excluded,
        len(pop),
        summary,
        models,
        alloc.method,
        alloc.tight,
        table,
        long_term,
        drivers.unavailable,
        seconds,
    )


def run_nba(
    config_path: str | Path,
    as_of: date | datetime,
    out: str | Path,
    progress: Progress = silent,
    model: str = "champion",
) -> NbaResult:
    """Build and write the next-best-action list at ``as_of`` (see the module docstring).

    Parameters
    ----------
    config_path
        The catalogue (``configs/nba/<dataset>.yaml``).
    as_of
        Decision date: features, history and recommendations read ``ts < as_of``.
    out
        The list (Parquet or CSV); the excluded table is written beside it.
    progress
        Progress callback.
    model
        The effect models' version: ``champion``, ``candidate`` or a version number.

    Returns
    -------
    NbaResult
        Paths, counts, the constraint summary and the models used.
    """
    from omnicrm import tracking
    from omnicrm.features.config import resolve_feature_config
    from omnicrm.nba.catalogue import load_catalogue
    from omnicrm.store import open_store
    from omnicrm.tasks.frames import store_fingerprint
    from omnicrm.uplift.data import population_features

    as_of = normalize_cutoff(as_of)
    cat = load_catalogue(config_path)
    cat.require_store(str(config_path))
    feats = resolve_feature_config(cat.features, Path(config_path).parent, f"{config_path}: key 'features'")
    progress("nba: features at as-of", 0.0)
    con = open_store(cat.store, deterministic=True)
    try:
        fingerprint = store_fingerprint(con)
        pop = population_features(con, feats, as_of)
        if pop.empty:
            raise InputError(f"{cat.store}: no customers before --as-of {as_of:%Y-%m-%d}")
        made = nba_list(cat, config_path, con, pop, as_of, fingerprint=fingerprint, model=model, progress=progress)
    finally:
        con.close()
    tags = {"task": "nba", "dataset": cat.name, "as_of": f"{as_of:%Y-%m-%d}", "solver": made.method}
    with tracking.start_run(cat.experiment, f"nba · {cat.name} · as of {as_of:%Y-%m-%d}", tags=tags) as run:
        tracking.log_config(cat.model_dump(mode="json"))
        tracking.log_params(
            {
                "effect_model_ref": model,
                "models": ",".join(f"{k}:{v}" for k, v in sorted(made.models.items())),
                "levers": {a: s.lever for a, s in cat.actions.items()},
                # the catalogue's value.long_term is in the config params; this adds the reference it resolved to
                "long_term": made.long_term or "none",
                "drivers_unavailable": made.drivers_unavailable or "none",
            }
        )
        tracking.log_metrics(made.summary)
        tracking.log_table(made.table, "tables/nba_by_action_channel.csv")
        tracking.log_dict({"tight": made.tight, "method": made.method}, "allocation.json")
        run_id = run.run_id
    # the excluded table first: a list on disk always has its excluded table beside it
    excluded_out = write_frame(made.excluded, excluded_path(out))
    written = write_frame(made.nba, out)
    progress("nba: written", 1.0)
    return NbaResult(
        written,
        excluded_out,
        made.customers,
        len(made.nba),
        made.summary,
        made.models,
        made.method,
        made.table,
        run_id,
        made.long_term,
        made.seconds,
    )
