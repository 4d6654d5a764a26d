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

The business's own keys come first. With one source of customer ids, its column is named as in the
source (``CustomerID``: the mapping's ``customer_key.column``, recorded in ``store_meta`` at ingest);
with several, one ``<source>_key`` column per source (the documented join, docs/tasks.md "Scoring"),
as for a store ingested before the column was recorded, a pseudonymised key or a name taken by
another output column.

``--horizon H`` adds each score carried from the label window ``h`` to ``H`` days (``pred_spend_180d``:
:func:`omnicrm.tasks.predict.extend_horizon` with BG/NBD's per-customer ratio of expected purchases
over ``H`` and ``h``, fitted at ``as_of`` on the history before it); ``--btyd`` adds the classic
models' outputs over the horizon (BG/NBD, Pareto/NBD, Gamma-Gamma); ``--baselines`` every baseline's
score. Inputs outside the range each model saw in training are counted per feature
(:func:`omnicrm.score.drift.out_of_range`) and returned.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from omnicrm import tracking
from omnicrm.errors import ConfigError, InputError
from omnicrm.features.cutoffs import normalize_cutoff
from omnicrm.interrupts import block_signals
from omnicrm.pipeline.keys import key_column_names, source_keys, store_meta
from omnicrm.progress import Progress, silent
from omnicrm.store.outputs import write_frame
from omnicrm.tasks.config import TaskConfig, load_task_config
from omnicrm.tasks.predict import baseline_scores, extend_horizon, horizon_column, horizon_ratio, score_frame


@dataclass
class PredictResult:
    """What ``omnicrm predict`` wrote.

    Attributes
    ----------
    out : Path
    rows : int
    models : dict of str to str
        Registered name -> version scored with.
    columns : list of str
    horizon_days : int, optional
        ``--horizon``: the forecast horizon of the ``*_<H>d`` columns.
    out_of_range : dict of str to dict of str to int
        Per registered name, per feature: scored rows below the smallest or above the largest value
        the model saw in training (features with none are left out).
    notes : list of str
        What was not done and why (a model without stored baselines).
    """

    out: Path
    rows: int
    models: dict[str, str]  # registered name -> version
    columns: list[str]
    horizon_days: int | None = None
    out_of_range: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _check_horizon(cfg: TaskConfig, targets: list, horizon: int | None) -> None:
    """``--horizon`` applies to a task that says how its scores extend, without clashing with a column."""
    if horizon is None:
        return
    task = cfg.task
    if task.horizon_scaling is None:
        raise InputError(
            f"predict --horizon: task {task.kind!r} scores are not carried to another horizon (only clv and "
            f"next_purchase are); drop --horizon, or train with task.horizon_days: {horizon}"
        )
    for target in targets:
        wanted = horizon_column(target.score_column, horizon)
        if wanted in task.output_columns(target):
            raise InputError(
                f"predict --horizon {horizon}: the model already predicts a column {wanted!r} (its timing model's "
                f"window); use that column, or another horizon"
            )


@dataclass
class _Models:
    """The registered versions a run scores with, looked up once, and their loaded models."""

    versions: dict[str, str]  # registered name -> version
    models: dict[Any, Any]  # Target -> model
    skipped: list[str] = field(default_factory=list)  # optional targets without that version


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
    """Look every target's version up (once per run), check ``--reasons`` against it, load the models.

    An optional target (clv's margin) is scored when its registered model has the version asked
    for, and left out when it has none: it is trained only where the data allow (a note says so when
    it was trained but lacks that version).
    """
    infos, skipped = {}, []
    for target in targets:
        name = cfg.registered_name(target)
        if target.optional and tracking.find_version(name, ref) is None:
            if ref != "candidate" and tracking.find_version(name, "candidate") is not None:  # trained, not this ref
                skipped.append(f"{name} has no version '{ref}': {target.score_column} not scored")
            continue
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
    return _Models({i.name: i.version for i in infos.values()}, models, skipped)


def _in_background(fn: Callable[..., Any], *args: Any) -> Future:
    """``fn(*args)`` on a daemon thread, its result or error in the returned future.

    A daemon thread, not a ``ThreadPoolExecutor``: the executor's worker is joined when the
    interpreter exits, and a Ctrl-C that came while it was importing mlflow left a predict hanging
    at exit for good (the import lock it waited for never came back; seen once in 14 interrupts).
    Nothing of this thread's needs finishing: it only reads the registry.
    """
    future: Future = Future()

    def run() -> None:
        block_signals()  # Ctrl-C and SIGTERM are the main thread's (omnicrm.interrupts)
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(e)

    threading.Thread(target=run, name="omnicrm-registry", daemon=True).start()
    return future


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
    horizon: int | None = None,
    btyd: bool = False,
    baselines: bool = False,
) -> PredictResult:
    """Score the population at ``as_of`` (checked against the store's events first) and write ``out``.

    The registry is read on a second thread while the features are built: importing mlflow, looking
    the versions up and loading the models (3-5 s) overlap the feature query, which runs on one
    DuckDB thread. A missing version or a baseline asked for reasons interrupts the query at once,
    so such a run still ends with its error before the features are done.

    Parameters
    ----------
    horizon : int, optional
        Forecast horizon in days: adds each score carried to it (``<score>_<H>d``; clv and
        next_purchase). The label-window columns stay as they are (over ``task.horizon_days``).
    btyd : bool
        Add BG/NBD and Pareto/NBD expected purchases and P(alive), Gamma-Gamma spend per transaction
        and both models' CLV over the horizon (the label window without ``horizon``), fitted at
        ``as_of`` on the history before it.
    baselines : bool
        Add every baseline's score (``<score>_baseline_<name>``, and over the horizon).
    """
    from omnicrm.pipeline.task_frames import CacheWrites, feature_source
    from omnicrm.store import check_date, data_range, open_store
    from omnicrm.tasks import frames

    cfg = load_task_config(config_path)
    task = cfg.task
    ref = model or "champion"
    # an optional target (margin) is scored where it was trained: when its registered model has the version
    targets = task.declared_targets()
    _check_horizon(cfg, targets, horizon)
    con = open_store(cfg.dataset.store, deterministic=True)
    # the snapshot's cache file (read by a later run at the same date: another task's predict, the
    # report) is written while the models load and score (1 s at 261k customers)
    cache_writes = CacheWrites()
    try:
        check_date(as_of, data_range(con), "--as-of")
        loading = _in_background(_load_models, cfg, targets, ref, reasons)
        loading.add_done_callback(lambda f: _interrupt(con) if f.exception() is not None else None)
        progress(f"features at {as_of}", 0.1)
        try:
            frame = frames.build_frame(
                con, cfg, [as_of], with_labels=False, what="scoring", features=feature_source(cfg.dataset, cache_writes)
            )
            keys = source_keys(con, frame["customer_id"])
            meta = store_meta(con)
            classic = _classic(con, as_of, task.horizon_days, horizon, btyd) if (horizon or btyd) else None
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
        con.close()
    result = frame[["customer_id"]].copy()
    result.insert(1, "as_of", pd.Timestamp(normalize_cutoff(as_of)))
    progress("scoring " + ", ".join(f"{name} v{version}" for name, version in loaded.versions.items()), 0.5)
    scores = score_frame(task, frame, loaded.models, reasons=reasons)
    parts, notes = [result, scores.set_axis(result.index)], list(loaded.skipped)
    ratio = None
    if horizon is not None:
        assert classic is not None and task.horizon_scaling is not None
        ratio = _ratio(frame["customer_id"], classic, task.horizon_days, horizon)
        history = classic.attrs.get("history_days", float("inf"))
        if horizon > history:
            notes.append(
                f"--horizon {horizon} days is longer than the {history:,.0f} days of purchases before --as-of: "
                f"the *_{horizon}d columns extrapolate beyond anything observed"
            )
        parts.append(_extended(scores, [t.score_column for t in loaded.models], ratio, task.horizon_scaling, horizon))
    if baselines:
        base, without = baseline_scores(frame, loaded.models)
        notes += [f"{t}: the registered version carries no baselines (trained before they were kept)" for t in without]
        parts.append(base.set_axis(result.index))
        if ratio is not None:
            parts.append(_extended(base, list(base.columns), ratio, task.horizon_scaling, horizon))
    if btyd:
        assert classic is not None
        parts.append(_classic_columns(frame["customer_id"], classic, horizon or task.horizon_days))
    result = pd.concat([p.set_axis(result.index) for p in parts], axis=1)
    result["model_versions"] = ",".join(f"{k}:{v}" for k, v in loaded.versions.items())
    names = key_column_names(meta, [c.removesuffix("_key") for c in keys.columns if c != "customer_id"], set(result))
    keys = keys.rename(columns={f"{s}_key": n for s, n in names.items()})
    # the business's own ids first, then the pseudonymous customer_id, the date and the scores
    result = keys.merge(result, on="customer_id", how="right")[[*names.values(), *result.columns]]
    outside = _outside(frame, loaded)
    out = write_frame(result, out)
    cache_writes.finish()
    progress("scores written", 1.0)
    return PredictResult(out, len(result), loaded.versions, list(result.columns), horizon, outside, notes)


def _classic(
    con: duckdb.DuckDBPyConnection, as_of: date, window: int, horizon: int | None, pareto: bool
) -> pd.DataFrame:
    """BG/NBD (+ Pareto/NBD) + Gamma-Gamma fitted at ``as_of`` on the purchases before it, per customer.

    Columns: ``customer_id``, the model outputs over the horizon (the label window without one) and
    ``window_purchases``, BG/NBD's expected purchases over the label window (the ratio's denominator).
    """
    from omnicrm.tasks import btyd

    summary = rfm_summary_at(con, as_of)
    x, t_x, T = (summary[c].to_numpy(dtype=float) for c in (btyd.FREQUENCY, btyd.RECENCY, btyd.AGE))
    unit = 7.0  # rfm_summary's default unit: weeks, as in the papers
    try:
        if not pareto:  # --horizon alone: BG/NBD's expected purchases are all the ratio needs
            params, _ = btyd.fit_bgnbd(x, t_x, T)
            bgnbd = [params[k] for k in btyd.BGNBD_PARAMS]
            out = pd.DataFrame({"customer_id": summary["customer_id"].to_numpy()})
            out["btyd_expected_purchases"] = btyd.bgnbd_expected_purchases(bgnbd, (horizon or window) / unit, x, t_x, T)
            out["window_purchases"] = btyd.bgnbd_expected_purchases(bgnbd, window / unit, x, t_x, T)
            out.attrs["history_days"] = float(T.max() * unit)
            return out
        model = btyd.BtydModel(unit_days=unit, pareto=True).fit(summary)
    except InputError as e:
        raise InputError(f"predict at {as_of}: no classic model fits the purchases before it: {e}") from e
    out = model.predict(summary, horizon or window)
    out["window_purchases"] = model.predict(summary, window)["btyd_expected_purchases"].to_numpy()
    out.attrs["history_days"] = float(T.max() * unit)  # the longest customer age: the history behind as_of
    return out


def rfm_summary_at(con: duckdb.DuckDBPyConnection, as_of: date) -> pd.DataFrame:
    """The BTYD summary of every customer with a purchase before ``as_of`` (weeks; a clear error if none)."""
    from omnicrm.tasks.btyd import rfm_summary

    summary = rfm_summary(con, normalize_cutoff(as_of))
    if summary.empty:
        raise InputError(f"predict at {as_of}: no purchase before it, so no classic model can be fitted")
    return summary


def _ratio(customer_ids: pd.Series, classic: pd.DataFrame, window: int, horizon: int) -> np.ndarray:
    """Per scored customer, BG/NBD's expected purchases over the horizon ÷ over the label window."""
    c = classic.set_index("customer_id").reindex(customer_ids.to_numpy())
    return horizon_ratio(c["btyd_expected_purchases"].to_numpy(), c["window_purchases"].to_numpy(), horizon, window)


def _extended(scores: pd.DataFrame, columns: list[str], ratio: np.ndarray, scaling: str, horizon: int) -> pd.DataFrame:
    """``columns`` of ``scores`` carried to the horizon, named ``<column>_<H>d``."""
    return pd.DataFrame(
        {horizon_column(c, horizon): extend_horizon(scores[c].to_numpy(), ratio, scaling) for c in columns},
        index=scores.index,
    )


#: the classic models' outputs, by output name (``{h}``: over the horizon)
_CLASSIC = {
    "btyd_expected_purchases_{h}d": "btyd_expected_purchases",
    "btyd_p_alive": "btyd_p_alive",
    "btyd_expected_spend": "btyd_expected_spend",
    "btyd_clv_{h}d": "btyd_clv",
    "pnbd_expected_purchases_{h}d": "pnbd_expected_purchases",
    "pnbd_p_alive": "pnbd_p_alive",
    "pnbd_clv_{h}d": "pnbd_clv",
}


def _classic_columns(customer_ids: pd.Series, classic: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """The ``--btyd`` columns for the scored customers, named with their horizon where they have one."""
    c = classic.set_index("customer_id").reindex(customer_ids.to_numpy())
    return pd.DataFrame({name.format(h=horizon): c[col].to_numpy() for name, col in _CLASSIC.items()})


def _outside(frame: pd.DataFrame, loaded: _Models) -> dict[str, dict[str, int]]:
    """Per registered model, per feature: the scored rows outside the range it saw in training (> 0 only)."""
    from omnicrm.score.drift import out_of_range, training_ranges

    names = dict(zip(loaded.models, loaded.versions, strict=True))
    found = {}
    for target, m in loaded.models.items():
        counts = {f: n for f, n in out_of_range(frame, training_ranges(m)).items() if n}
        if counts:
            found[names[target]] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return found
