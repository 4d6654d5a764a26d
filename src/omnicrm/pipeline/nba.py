"""``omnicrm nba CONFIG --as-of DATE --out FILE``: a next-best-action list under the contact policy and limits.

Wiring only: loads the catalogue (:mod:`omnicrm.nba.catalogue`), opens the store read-only and
single-threaded, builds the population's features at ``as_of`` (``ts < as_of``), loads the registered
effect models (``champion`` by default, ``--model`` to choose) and, for product-led actions, the
registered recommender (its champion), calls the pure steps of :mod:`omnicrm.nba` (rules, contact
policy, value, allocation, reasons), writes the ``nba`` list to ``out`` and the ``excluded`` table
beside it (``<name>.excluded<suffix>``), and logs an MLflow run (experiment ``omnicrm-nba``): the
catalogue, the constraint summary (customers dropped per step, budget used, contacts per channel,
solver gap) and the expected incremental value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from omnicrm import schema
from omnicrm.errors import ConfigError, InputError
from omnicrm.features.cutoffs import normalize_cutoff
from omnicrm.progress import Progress, silent
from omnicrm.store.outputs import conform, write_frame

__all__ = ["NbaResult", "excluded_path", "run_nba"]


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


def excluded_path(out: str | Path) -> Path:
    """Where the ``excluded`` table of a list written to ``out`` goes: ``<name>.excluded<suffix>``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.excluded{out.suffix}")


def _effects(cat, pop: pd.DataFrame, ref: str, fingerprint: str) -> tuple[pd.DataFrame, dict[str, str]]:  # noqa: ANN001
    """``customer_id, action, effect`` per catalogue action from the registered effect models (``cat``'s)."""
    from omnicrm.pipeline.promote_models import check_fingerprint, full_name, load_registered

    by_model: dict[str, list[tuple[str, str]]] = {}
    for action in cat.actions:
        model, name = cat.effect_source(action)
        by_model.setdefault(full_name(model), []).append((action, name))
    parts, versions = [], {}
    for model, pairs in by_model.items():
        version, effect_model = load_registered(model, ref, "effects")
        check_fingerprint(version, fingerprint, f"store {cat.store}")
        versions[model] = version.version
        known = effect_model.actions
        missing = [n for _, n in pairs if n not in known]
        if missing:
            raise ConfigError(
                f"nba catalogue '{cat.name}': effect model {model} v{version.version} has no action(s) {missing}; "
                f"it estimates {known} (set effect_action on the action)"
            )
        tau = effect_model.predict_effect(pop)
        for action, name in pairs:
            parts.append(
                pd.DataFrame(
                    {
                        "customer_id": pop["customer_id"].to_numpy(),
                        "action": action,
                        "effect": tau[:, known.index(name)],
                    }
                )
            )
    return pd.concat(parts, ignore_index=True), versions


def _products(cat, con, as_of: datetime, customers: pd.Series) -> tuple[pd.Series, dict[str, str]]:  # noqa: ANN001
    """Each customer's top recommended product (customers without a recommendation are absent)."""
    from omnicrm.pipeline.promote_models import check_fingerprint, full_name, load_registered
    from omnicrm.recommend.history import load_purchases
    from omnicrm.tasks.frames import store_fingerprint

    name = full_name(cat.recommender)
    version, served = load_registered(name, "champion", "recommend")
    check_fingerprint(version, store_fingerprint(con), f"store {cat.store}")
    purchases = load_purchases(con, as_of)
    purchases = purchases[purchases["customer_id"].isin(set(customers))]
    if purchases.empty:
        return pd.Series(dtype=object), {name: version.version}
    recs = served.predict_frame(purchases, as_of=as_of, k=1)
    top = recs[recs["rank"] == 1].set_index("customer_id")["product_id"]
    return top, {name: version.version}


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
    from omnicrm.nba.allocate import Limits, allocate
    from omnicrm.nba.catalogue import load_catalogue
    from omnicrm.nba.check import violations
    from omnicrm.nba.lists import constraint_summary, nba_rows, not_chosen
    from omnicrm.nba.policy import Candidates, _excluded, apply_policy, apply_rules, contact_policy
    from omnicrm.nba.value import expected_values, unit_values
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
        progress(f"nba: rules and contact policy for {len(pop):,} customers", 0.2)
        cands = apply_rules(pop, cat, con)
        state = contact_policy(con, pop["customer_id"], cat, as_of)
        cands = apply_policy(cands, state)
        models: dict[str, str] = {}
        kept = cands.kept.assign(product_id=pd.Series(pd.NA, index=cands.kept.index, dtype=object))
        led = [a for a, s in cat.actions.items() if s.product == "recommended"]
        if led:
            progress("nba: recommended products", 0.35)
            top, used = _products(cat, con, as_of, pop["customer_id"])
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
    finally:
        con.close()
    progress("nba: effects from the registered effect models", 0.45)
    effects, used = _effects(cat, pop, model, fingerprint)
    models |= used
    cands = expected_values(cands, effects, unit_values(pop, cat), cat)
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
    nba = nba_rows(cands.kept, alloc, cat.value.outcome, as_of_ts)
    con = open_store(cat.store, deterministic=True)
    try:
        broken = violations(nba, con, cat, as_of)
    finally:
        con.close()
    if broken:  # the allocation promised every limit: a broken one is a bug, never a list to send
        raise RuntimeError(f"nba: the list breaks its constraints: {'; '.join(broken)}")
    excluded = pd.concat([cands.excluded, not_chosen(cands.kept, alloc)], ignore_index=True)
    excluded = conform(excluded, schema.EXCLUDED)
    summary = constraint_summary(excluded, nba, len(pop), alloc, cat.allocation.budget) | {"violations": 0.0}
    table = (
        nba.groupby(["action", "channel"], sort=True)
        .agg(customers=("customer_id", "nunique"), expected_value=("expected_value", "sum"), cost=("cost", "sum"))
        .reset_index()
    )
    tags = {"task": "nba", "dataset": cat.name, "as_of": f"{as_of:%Y-%m-%d}", "solver": alloc.method}
    with tracking.start_run(cat.experiment, f"nba · {cat.name} · as of {as_of:%Y-%m-%d}", tags=tags) as run:
        tracking.log_config(cat.model_dump(mode="json"))
        tracking.log_params(
            {
                "effect_model_ref": model,
                "models": ",".join(f"{k}:{v}" for k, v in sorted(models.items())),
                "levers": {a: s.lever for a, s in cat.actions.items()},
            }
        )
        tracking.log_metrics(summary)
        tracking.log_table(table, "tables/nba_by_action_channel.csv")
        tracking.log_dict({"tight": alloc.tight, "method": alloc.method}, "allocation.json")
        run_id = run.run_id
    # the excluded table first: a list on disk always has its excluded table beside it
    excluded_out = write_frame(excluded, excluded_path(out))
    written = write_frame(nba, out)
    progress("nba: written", 1.0)
    return NbaResult(written, excluded_out, len(pop), len(nba), summary, models, alloc.method, table, run_id)
