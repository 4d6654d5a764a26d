"""``omnicrm predict CONFIG --as-of DATE --out FILE``: score every customer of the population at a date.

Features are built at ``as_of`` (``ts < as_of``); every customer of the task's population at that
date gets one row, keyed by ``customer_id`` and by the source systems' own keys (one column per
source from ``identity_links``, several keys joined by ``|``) so a business can join scores back.
Models come from the registry (``champion`` by default, or ``--model candidate`` / a version
number); a version may be a registered baseline (``model_family=baseline:<name>``, shipped by
``promote`` when it beats LightGBM), scored through the same ``predict_frame``. Top reasons
(``--reasons``) are exact per-customer contributions, computed only when asked for because they cost
about 400x a prediction; a baseline has none, which is said as soon as the registry answers (it is
read on a second thread while the features are built, and its error interrupts them). ``as_of``
must lie after the store's first event and at most a month past its last
(:func:`omnicrm.store.check_date`). The output is written to a temporary file and moved into place,
so a failed run leaves the previous file intact; in a ``.csv``, text that a spreadsheet would run as
a formula (an id starting with ``=``) gets a leading ``'``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from omnicrm import tracking
from omnicrm.errors import ConfigError, InputError
from omnicrm.features.cutoffs import normalize_cutoff
from omnicrm.progress import Progress, silent
from omnicrm.sql import ident, literal
from omnicrm.store.outputs import write_frame
from omnicrm.tasks.config import TaskConfig, load_task_config
from omnicrm.tasks.predict import score_frame


@dataclass
class PredictResult:
    """What ``omnicrm predict`` wrote."""

    out: Path
    rows: int
    models: dict[str, str]  # registered name -> version
    columns: list[str]


def source_keys(con: duckdb.DuckDBPyConnection, customer_ids: pd.Series) -> pd.DataFrame:
    """One column ``<source>_key`` per source: the customer's record ids there, ``|``-joined.

    Built in DuckDB over the links of ``customer_ids`` only (conditional aggregation, one column per
    source those customers have records in, sorted by name): pivoting every identity link in pandas
    took 3.4 s at 261k customers. A customer without links in a source has a missing key there; one
    without any link is left out (the caller's left join gives it missing keys).
    """
    ids = pd.DataFrame({"customer_id": pd.Series(customer_ids, dtype=object).to_numpy()})
    con.register("_predict_ids", ids)
    try:
        scoped = "FROM identity_links WHERE customer_id IN (SELECT customer_id FROM _predict_ids)"
        sources = [r[0] for r in con.sql(f"SELECT DISTINCT source {scoped} ORDER BY source").fetchall()]
        columns = ", ".join(
            f"string_agg(source_record_id, '|' ORDER BY source_record_id) FILTER (WHERE source = {literal(s)}) "
            f"AS {ident(f'{s}_key')}"
            for s in sources
        )
        return con.sql(
            f"SELECT customer_id{', ' + columns if columns else ''} {scoped} GROUP BY customer_id ORDER BY customer_id"
        ).df()
    finally:
        con.unregister("_predict_ids")


@dataclass
class _Models:
    """The registered versions a run scores with, looked up once, and their loaded models."""

    versions: dict[str, str]  # registered name -> version
    models: dict[Any, Any]  # Target -> model


def _version(name: str, ref: str) -> tracking.VersionInfo:
    """The registered version ``ref`` (alias or number) of ``name``; a clear error when there is none."""
    info = tracking.find_version(name, ref)
    if info is None:
        raise ConfigError(
            f"predict: registered model '{name}' has no version '{ref}'"
            + (" (promote one with `omnicrm promote`, or pass --model candidate)" if ref == "champion" else "")
        )
    return info


def _load_models(cfg: TaskConfig, targets: list, ref: str, reasons: bool) -> _Models:
    """Look every target's version up (once per run), check ``--reasons`` against it, load the models."""
    infos = {}
    for target in targets:
        info = _version(cfg.registered_name(target), ref)
        family = info.tags.get("model_family", "") if reasons else ""
        if family.startswith("baseline:"):
            raise InputError(
                f"predict --reasons: {info.name} v{info.version} ({ref}) is the baseline "
                f"{family.removeprefix('baseline:')!r}, which has no per-customer reasons; drop --reasons, "
                "or score with a LightGBM version (--model candidate)"
            )
        infos[target] = info
    # every version is checked before the first (slower) load
    models = {t: tracking.load_model(tracking.model_uri(i.name, i.version)) for t, i in infos.items()}
    return _Models({i.name: i.version for i in infos.values()}, models)


def _interrupt(con: duckdb.DuckDBPyConnection) -> None:
    """Stop the store's running query (the registry failed); a store closed already is left alone."""
    with suppress(duckdb.Error):
        con.interrupt()


def predict(
    config_path: str | Path,
    as_of: date,
    out: Path,
    model: str | None = None,
    reasons: bool = False,
    progress: Progress = silent,
) -> PredictResult:
    """Score the population at ``as_of`` (checked against the store's events first) and write ``out``.

    The registry is read on a second thread while the features are built: importing mlflow, looking
    the versions up and loading the models (3-5 s) overlap the feature query, which runs on one
    DuckDB thread. A missing version or a baseline asked for reasons interrupts the query at once,
    so such a run still ends with its error before the features are done.
    """
    from omnicrm.pipeline.task_frames import CacheWrites, feature_source
    from omnicrm.store import check_date, data_range, open_store
    from omnicrm.tasks import frames

    cfg = load_task_config(config_path)
    task = cfg.task
    ref = model or "champion"
    targets = task.targets_of()  # a scoring frame has no labels: every target but an optional one
    con = open_store(cfg.dataset.store, deterministic=True)
    registry = ThreadPoolExecutor(1, thread_name_prefix="omnicrm-registry")
    # the snapshot's cache file (read by a later run at the same date: another task's predict, the
    # report) is written while the models load and score (1 s at 261k customers)
    cache_writes = CacheWrites()
    try:
        check_date(as_of, data_range(con), "--as-of")
        loading = registry.submit(_load_models, cfg, targets, ref, reasons)
        loading.add_done_callback(lambda f: _interrupt(con) if f.exception() is not None else None)
        progress(f"features at {as_of}", 0.1)
        try:
            frame = frames.build_frame(
                con, cfg, [as_of], with_labels=False, what="scoring", features=feature_source(cfg.dataset, cache_writes)
            )
            keys = source_keys(con, frame["customer_id"])
        except duckdb.InterruptException:
            if not (loading.done() and loading.exception() is not None):
                raise  # Ctrl-C
            # the interrupt the registry's error caused: that error is raised below, outside this
            # handler, so it does not carry the interrupt as its context (which reads as Ctrl-C)
        if not loading.done():
            progress("loading models", 0.3)
        loaded = loading.result()
    except BaseException:
        cache_writes.finish(check=False)  # a cache file is written whole or not at all, either way
        raise
    finally:
        registry.shutdown(wait=False, cancel_futures=True)
        con.close()
    result = frame[["customer_id"]].copy()
    result.insert(0, "as_of", pd.Timestamp(normalize_cutoff(as_of)))
    progress("scoring " + ", ".join(f"{name} v{version}" for name, version in loaded.versions.items()), 0.5)
    scores = score_frame(task, frame, loaded.models, reasons=reasons)
    result = pd.concat([result, scores.set_axis(result.index)], axis=1)
    result["model_versions"] = ",".join(f"{k}:{v}" for k, v in loaded.versions.items())
    result = result.merge(keys, on="customer_id", how="left")
    out = write_frame(result, out)
    cache_writes.finish()
    progress("scores written", 1.0)
    return PredictResult(out, len(result), loaded.versions, list(result.columns))
