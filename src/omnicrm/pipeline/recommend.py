"""``omnicrm recommend-eval CONFIG`` and ``omnicrm recommend CONFIG --as-of DATE --out FILE``.

* :func:`evaluate_recommenders`: the time-split experiment of :mod:`omnicrm.recommend.evaluate`,
  logged to MLflow (experiment ``omnicrm-recommend``): one parent run per experiment holding the
  results table, ``<method>.<mode>.<metric>`` metrics and the item-side state of the ``serve``
  method (``model/<method>/``, see :func:`write_item_state`), and one nested run per method with its
  tuned params, its test metrics as ``<mode>.<metric>`` (so the UI's compare view lines methods up),
  validation metrics and the tuning grid. No fitted model is pickled: it would carry every
  customer's purchases and id (251 MB per run on Online Retail), which a refit re-derives.
* The parent run also records what the tuning chose (``chosen_params.json``: every method's params)
  and is tagged with the config's digest (:func:`config_digest`), so ``omnicrm recommend`` can find
  it: see :func:`serve_params`.
* :func:`write_recommendations`: fits the config's ``serve`` method on everything before ``as_of``
  (with the params the newest ``recommend-eval`` run of the same config chose, else the config's)
  and writes top-k rows for every customer with a purchase before it (Parquet, written to a
  temporary file and moved into place, so a failed run leaves the previous output). The fitted model
  is logged (run ``recommend · <dataset> · as of <date>``) and registered as the ``candidate`` of
  ``omnicrm-<dataset>-recommend``: a :class:`~omnicrm.recommend.serve.ServedRecommender` holding
  item-side state only. With ``model`` (``champion``, ``candidate`` or a version number) nothing is
  fitted: that registered version scores the customers' purchases before ``as_of``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from omnicrm import schema
from omnicrm.progress import Progress, silent
from omnicrm.store.outputs import conform, write_frame

TASK = "recommend"


@dataclass
class RecommendEvalResult:
    """The experiment's tables and the MLflow runs that hold them."""

    table: pd.DataFrame  # method, mode, metrics at k, customers, fit_seconds, recommend_seconds
    params: dict[str, dict]  # tuned params per method
    validation: pd.DataFrame  # same layout as table, on the validation window
    run_id: str
    method_run_ids: dict[str, str]
    k: int
    serve: str = ""  # the config's serve method: `omnicrm recommend` refits it with params[serve]


#: the MLflow model kind tag of registered recommenders (promotion dispatches on it)
MODEL_KIND = "recommend"
#: the artifact of a recommend-eval parent run holding every method's chosen params
CHOSEN_FILE = "chosen_params.json"
#: the tag of a recommend-eval parent run holding the digest of its config (see :func:`config_digest`)
CHOSEN_TAG = "config_digest"


def config_digest(cfg) -> str:  # noqa: ANN001 - a RecommendConfig
    """SHA-256 of the experiment a config defines: everything but ``store`` and ``experiment``.

    Two configs with the same digest tune the same methods on the same grids and windows, so what one
    ``recommend-eval`` run chose applies to the other. The store's path is left out (it is a path on
    one machine; the data's identity is the store's fingerprint, tagged on registered versions), and so
    is the experiment name (the run is looked up in it).
    """
    import hashlib

    data = cfg.model_dump(mode="json", exclude={"store", "experiment"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class ServeParams:
    """The params ``omnicrm recommend`` refits the ``serve`` method with, and where they came from.

    ``run_id`` is the recommend-eval run that chose them (``None``: the config's ``params``);
    ``source`` says so in one line (printed, and tagged on the registered version).
    """

    params: dict[str, Any]
    source: str
    run_id: str | None = None


def serve_params(cfg, config_source: str, use_chosen: bool = True) -> ServeParams:  # noqa: ANN001 - a RecommendConfig
    """The ``serve`` method's params: those the newest ``recommend-eval`` run of this config chose, else ``params``.

    The run is the newest finished parent run in the config's experiment tagged with this dataset and
    this config's :func:`config_digest`: a run of another grid, window, k or method list does not
    count (its choice answered another question). Its ``chosen_params.json`` gives the ``serve``
    method's params exactly as the evaluation fitted them before its test cutoff (the hybrid's with the
    tuned ALS and kNN inside). Without such a run, or with ``use_chosen=False``, the config's
    ``params`` are used and ``source`` says why.
    """
    from omnicrm import tracking
    from omnicrm.recommend.config import build_method

    spec = cfg.serve_spec
    config = ServeParams(dict(spec.params), f"the config's params ({config_source})")
    if not use_chosen:
        return config
    run = tracking.latest_run(
        cfg.experiment, {"task": TASK, "dataset": cfg.dataset, "run_kind": "experiment", CHOSEN_TAG: config_digest(cfg)}
    )
    if run is None:
        return ServeParams(
            config.params,
            f"the config's params: no recommend-eval run of this config in experiment '{cfg.experiment}' yet",
        )
    chosen = json.loads(tracking.load_run_text(run.run_id, CHOSEN_FILE))["methods"].get(spec.name)
    if chosen is None or chosen.get("kind") != spec.kind:  # cannot happen with equal digests; a hand-edited run
        return ServeParams(config.params, f"the config's params: recommend-eval run {run.run_id} chose none for it")
    source = f"recommend-eval run {run.run_id} ({run.started})"
    # a run logged by an older omnicrm may hold a parameter this one no longer takes: a clear error
    build_method(spec, dict(chosen["params"]), cfg.seed, f"{CHOSEN_FILE} of {source}")
    return ServeParams(dict(chosen["params"]), f"the params chosen by {source}", run.run_id)


@dataclass
class WriteResult:
    """What ``omnicrm recommend`` wrote, and with which model.

    ``model`` describes in one line where the lists came from (a refit and the version it was
    registered as, or the registered version used); the command line prints it.
    """

    out: Path
    rows: int
    customers: int
    method: str
    as_of: date
    registered_name: str | None = None
    version: str | None = None
    refitted: bool = True
    model: str = ""
    run_id: str | None = None
    params_source: str = ""


def load_store_purchases(cfg, before: date) -> tuple[pd.DataFrame, pd.DataFrame]:  # noqa: ANN001 - a RecommendConfig
    """The purchase lines before ``before`` and the products table of the config's store (read single-threaded)."""
    from omnicrm.recommend.history import load_items, load_purchases
    from omnicrm.store import open_store

    con = open_store(cfg.store, deterministic=True)
    try:
        return load_purchases(con, before), load_items(con)
    finally:
        con.close()


def evaluate_recommenders(config_path: str | Path, progress: Progress = silent) -> RecommendEvalResult:
    """Tune on the validation window, score the test window, log everything; returns the table."""
    from omnicrm import tracking
    from omnicrm.recommend.config import load_recommend_config
    from omnicrm.recommend.evaluate import MODES, run_experiment

    cfg = load_recommend_config(config_path)
    progress("loading purchases", 0.0)
    purchases, items = load_store_purchases(cfg, cfg.test_end)
    result = run_experiment(cfg, purchases, items, lambda s, f: progress(s, 0.02 + 0.9 * f))
    table = result.table(cfg.k)
    val_rows = []
    for r in result.methods:
        for mode in MODES:
            val_rows.append({"method": r.name, "mode": mode} | {k: v for k, v in r.validation[mode].items()})
    validation = pd.DataFrame(val_rows)

    progress("logging to MLflow", 0.93)
    tags = {
        "task": TASK,
        "dataset": cfg.dataset,
        "test_cutoff": cfg.test_cutoff,
        "validation_cutoff": cfg.validation_cutoff,
        "test_days": cfg.test_days,
        "k": cfg.k,
    }
    child_ids = {}
    digest = config_digest(cfg)
    with tracking.start_run(
        cfg.experiment,
        f"recommend-eval · {cfg.dataset}",
        tags=tags | {"run_kind": "experiment", CHOSEN_TAG: digest, "serve_method": cfg.serve},
    ) as parent:
        tracking.log_config(cfg.model_dump(mode="json"))
        # what `omnicrm recommend` refits with (serve_params): every method's chosen params, exactly typed
        tracking.log_dict(
            {
                "config_digest": digest,
                "methods": {r.name: {"kind": r.kind, "params": r.params} for r in result.methods},
            },
            CHOSEN_FILE,
        )
        tracking.log_table(table, "tables/results.csv")
        tracking.log_text(markdown_table(table), "tables/results.md")
        tracking.log_table(validation, "tables/validation.csv")
        tracking.log_metrics(
            {
                f"{row.method}.{row.mode}.{col}": getattr(row, col)
                for row in table.itertuples()
                for col in table.columns
                if col not in ("method", "mode")
            }
        )
        served = next(r for r in result.methods if r.name == cfg.serve)
        with tempfile.TemporaryDirectory() as tmp:
            for path in write_item_state(served.model.item_state(), Path(tmp)):
                tracking.log_artifact(path, f"model/{served.name}")
        for r in result.methods:
            with tracking.start_run(
                cfg.experiment,
                r.name,
                tags=tags | {"run_kind": "method", "method": r.name, "model_family": r.kind},
                nested=True,
            ) as run:
                tracking.log_params({"method": r.name, "kind": r.kind, **r.params})
                tracking.log_metrics({mode: {k: v for k, v in r.test[mode].items()} for mode in MODES})
                tracking.log_metrics({"val": r.validation, "fit_seconds": r.fit_seconds})
                tracking.log_table(r.tuning, "tables/tuning.csv")
                child_ids[r.name] = run.run_id
    progress("recommend-eval: done", 1.0)
    return RecommendEvalResult(
        table, {r.name: r.params for r in result.methods}, validation, parent.run_id, child_ids, cfg.k, cfg.serve
    )


def write_item_state(state: dict[str, Any], folder: Path) -> list[Path]:
    """Write a recommender's :meth:`~omnicrm.recommend.base.Recommender.item_state` to ``folder``.

    One file per entry, in formats that load without omnicrm and without unpickling: arrays as
    ``.npy`` (no pickled objects), sparse matrices as ``.npz`` (uncompressed, like the rest, so the
    files can be searched as they are), tables as ``.csv``, text as ``.txt``, dicts as ``.json``.
    """
    paths = []
    for name, value in state.items():
        if isinstance(value, np.ndarray):
            path = folder / f"{name}.npy"
            np.save(path, value, allow_pickle=False)
        elif sp.issparse(value):
            path = folder / f"{name}.npz"
            sp.save_npz(path, sp.csr_matrix(value), compressed=False)
        elif isinstance(value, pd.DataFrame):
            path = folder / f"{name}.csv"
            value.to_csv(path, index=False)
        elif isinstance(value, str):
            path = folder / f"{name}.txt"
            path.write_text(value, encoding="utf-8")
        else:
            path = folder / f"{name}.json"
            path.write_text(json.dumps(value, indent=1, default=str), encoding="utf-8")
        paths.append(path)
    return paths


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub markdown table (floats to ``digits`` places; seconds to 2)."""

    def cell(col: str, v: object) -> str:
        if isinstance(v, float):
            return f"{v:.2f}" if col.endswith("seconds") else f"{v:.{digits}f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" if frame[c].dtype.kind not in "fi" else "---:" for c in frame.columns) + "|"
    body = [
        "| " + " | ".join(cell(c, v) for c, v in zip(frame.columns, row, strict=True)) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([head, rule, *body])


def write_recommendations(
    config_path: str | Path,
    as_of: date | datetime,
    out: str | Path,
    progress: Progress = silent,
    model: str | None = None,
    chosen_params: bool = True,
) -> WriteResult:
    """Top-k products for every customer with a purchase before ``as_of`` -> ``out`` (Parquet).

    Parameters
    ----------
    config_path
        The recommender config (store, ``serve`` method, ``k``, ``serve_exclude_purchased``).
    as_of
        Only purchases before this date are read (fitted on, or scored from).
    out
        The Parquet file, replaced whole or not at all.
    progress
        Progress callback.
    model
        ``None``: refit the ``serve`` method, write its lists, log a run and register the model as
        ``candidate`` of ``omnicrm-<dataset>-recommend`` (a method that cannot be served from item
        state, BPR, is not registered and the result says why). An alias (``champion``,
        ``candidate``) or a version number: score with that registered version; nothing is fitted.
    chosen_params
        Refit with the params the newest ``recommend-eval`` run of this config chose
        (:func:`serve_params`); ``False``: with the config's ``params``.

    Returns
    -------
    WriteResult
        Counts, the method, the model used (registered name and version) and the output path.
    """
    from omnicrm.errors import InputError
    from omnicrm.recommend.config import build_method, load_recommend_config

    cfg = load_recommend_config(config_path)
    as_of_date = as_of.date() if isinstance(as_of, datetime) else as_of
    if model is not None:
        return _score_registered(cfg, as_of_date, out, model, progress)
    spec = cfg.serve_spec
    progress("loading purchases", 0.0)
    purchases, items = load_store_purchases(cfg, as_of_date)
    if purchases.empty:
        raise InputError(f"{cfg.store}: no purchases before {as_of_date}; nothing to recommend from")
    chosen = serve_params(cfg, str(config_path), chosen_params)
    progress(f"refitting {spec.name} on purchases before {as_of_date} with {chosen.source}", 0.2)
    fitted = build_method(spec, dict(chosen.params), cfg.seed, str(config_path)).fit(purchases, as_of_date, items)
    customers = fitted.history_.users
    progress(f"recommending for {len(customers):,} customers", 0.6)
    recs = fitted.recommend(customers, cfg.k, exclude_purchased=cfg.serve_exclude_purchased)
    progress("logging and registering the model", 0.8)
    run_id, version, note = _register(cfg, fitted, as_of_date, chosen)
    written = write_frame(conform(recs, schema.RECOMMENDATIONS), out)
    progress("recommendations written", 1.0)
    name = cfg.registered_name()
    described = f"refitted {spec.name} on purchases before {as_of_date} with {chosen.source}; " + (
        f"registered {name} v{version} (candidate)" if version else f"not registered: {note}"
    )
    return WriteResult(
        written,
        len(recs),
        int(recs["customer_id"].nunique()),
        spec.name,
        as_of_date,
        name if version else None,
        version,
        True,
        described,
        run_id,
        chosen.source,
    )


def store_fingerprint(store: str | Path) -> str:
    """The store's ``data_fingerprint`` (``store_meta``), read with the store opened read-only."""
    from omnicrm.store import open_store
    from omnicrm.tasks.frames import store_fingerprint as read

    con = open_store(store, deterministic=True)
    try:
        return read(con)
    finally:
        con.close()


def _register(cfg, fitted, as_of: date, chosen: ServeParams) -> tuple[str, str | None, str]:  # noqa: ANN001 - config, Recommender
    """Log the serving run and register the fitted model; (run id, version or None, why not registered)."""
    from omnicrm import tracking
    from omnicrm.recommend import NotServableError, ServedRecommender

    spec = cfg.serve_spec
    fingerprint = store_fingerprint(cfg.store)
    meta = {
        "as_of": f"{as_of:%Y-%m-%d}",
        "method": spec.name,
        "kind": spec.kind,
        "k": cfg.k,
        "exclude_purchased": cfg.serve_exclude_purchased,
        "products": fitted.history_.n_items,
        "customers_at_fit": fitted.history_.n_users,
        "data_fingerprint": fingerprint,
        "config": cfg.dataset,
        "params_source": chosen.source,
    } | ({"tuned_by": chosen.run_id} if chosen.run_id else {})
    tags = {
        "task": TASK,
        "run_kind": "serve",
        "model_kind": MODEL_KIND,
        "dataset": cfg.dataset,
        "method": spec.name,
        "model_family": spec.kind,
        "as_of": meta["as_of"],
        "data_fingerprint": fingerprint,
    }
    with tracking.start_run(cfg.experiment, f"recommend · {cfg.dataset} · as of {as_of}", tags=tags) as run:
        tracking.log_config(cfg.model_dump(mode="json"))
        tracking.log_params({"serve": {"method": spec.name, "kind": spec.kind, **fitted.get_params()}})
        try:
            served = ServedRecommender.from_fitted(fitted, spec.name, cfg.k, cfg.serve_exclude_purchased, meta)
        except NotServableError as exc:
            tracking.set_tags({"registered": "no"})
            return run.run_id, None, str(exc)
        example = served.example_purchases()
        ref = tracking.log_model(
            served,
            example,
            registered_name=cfg.registered_name(),
            tags={k: str(v) for k, v in meta.items()}
            | {"model_kind": MODEL_KIND, "primary_metric": f"ndcg_at_{cfg.k}"},
            params=served.params(),
            extra_requirements=("implicit", "threadpoolctl"),
        )
        return run.run_id, ref.version, ""


def _score_registered(cfg, as_of: date, out: str | Path, ref: str, progress: Progress) -> WriteResult:  # noqa: ANN001
    """``omnicrm recommend --model REF``: the registered recommender scores the purchases before ``as_of``."""
    from omnicrm.errors import InputError
    from omnicrm.pipeline.promote_models import check_fingerprint, load_registered

    name = cfg.registered_name()
    progress(f"loading {name} ({ref}) from the registry", 0.0)
    version, served = load_registered(name, ref, "recommend")
    check_fingerprint(version, store_fingerprint(cfg.store), f"store {cfg.store}")
    progress("loading purchases", 0.2)
    purchases, _ = load_store_purchases(cfg, as_of)
    if purchases.empty:
        raise InputError(f"{cfg.store}: no purchases before {as_of}; nothing to recommend from")
    progress(f"recommending with {name} v{version.version}", 0.5)
    recs = served.predict_frame(purchases, as_of=as_of, k=cfg.k, exclude_purchased=cfg.serve_exclude_purchased)
    written = write_frame(conform(recs, schema.RECOMMENDATIONS), out)
    progress("recommendations written", 1.0)
    aliases = f" ({', '.join(version.aliases)})" if version.aliases else ""
    described = (
        f"{name} v{version.version}{aliases}: {served.method} fitted on purchases before {served.fit_cutoff}, "
        "not refitted"
    )
    return WriteResult(
        written,
        len(recs),
        int(recs["customer_id"].nunique()),
        served.method,
        as_of,
        name,
        version.version,
        False,
        described,
        version.run_id,
    )
