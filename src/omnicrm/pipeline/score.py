"""``omnicrm score CONFIG --as-of DATE``: the scheduled batch scoring job (DuckDB engine).

Wiring only. In order:

1. the config and every config it names are read and checked (:mod:`omnicrm.score.config`), the date
   against the store, the output folder for writing; the output's lock is taken
   (:class:`omnicrm.store.runs.RunLock`: a live holder stops the run, a stale one is explained and
   taken over), folders killed runs left are swept, and a published run of the same ``as_of`` stops
   the run unless ``replace``;
2. every model is looked up in the registry (alias or pinned version) and loaded *before* any data
   is read, so a missing champion costs nothing;
3. in the store (read-only, one thread: sums of doubles add up the same way every run), the
   feature snapshot at ``as_of`` is built **once**, into a DuckDB temporary table, for every customer;
   each task's population and its extra inputs (clv's BG/NBD, fitted on the whole population, so
   once) likewise;
4. customers are numbered by id and scored in chunks of ``chunk_size``: each chunk's features are read
   from the temporary table and shared by every task model, the recommender and the effect models;
   each output table is appended to a Parquet file in the staging folder, so memory is that of a
   chunk, not of the base; every chunk of every step is accounted for
   (:class:`omnicrm.score.accounting.Ledger`: in = scored + excluded with a reason, or the run fails);
5. the next-best-action step (:func:`omnicrm.pipeline.nba.nba_list`) reads the same feature snapshot
   and uses the models loaded in step 2 (the allocation under a budget is a decision over the whole
   base, so it is not chunked); its list and per-candidate drops go to the staging folder, its
   constraint summary to the manifest and this run's metrics (``nba.*``), and its customers are
   accounted for too;
6. drift against the run ``latest`` points to (:mod:`omnicrm.score.drift`), the manifest, and an
   MLflow run in ``omnicrm-score`` with the manifest, the drift table and a plot;
7. the staging folder is published by rename, then the ``as_of=`` pointer and ``latest`` move
   (:func:`omnicrm.store.runs.publish`). With ``fail_on_drift`` a breach stops the run before
   publication: nothing moves.

A failure or interrupt at any point removes the staging folder; a ``SIGKILL`` leaves it to the next
run's sweep. The previous publication is never touched before step 7.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omnicrm import schema
from omnicrm.errors import ConfigError
from omnicrm.features.cutoffs import normalize_cutoff
from omnicrm.progress import Progress, silent
from omnicrm.score import drift as dr
from omnicrm.score.accounting import AccountingError, Ledger
from omnicrm.score.chunk import Model, score_chunk
from omnicrm.score.config import ScoreSetup, load_score_config
from omnicrm.score.manifest import StepClock, build_manifest
from omnicrm.score.tables import NOT_YET_A_CUSTOMER, excluded_rows, nba_excluded
from omnicrm.store import runs
from omnicrm.store.staging import StaleFileWarning

__all__ = ["DriftBreach", "ScoreResult", "run_score"]

NBA_DROPPED = "nba_dropped.parquet"  # the next-best-action step's per-candidate drops, kept beside the tables


class DriftBreach(Exception):  # noqa: N818 - a result the command line turns into exit status 3, not an error
    """Raised with ``fail_on_drift`` when a drift check breaches its threshold; carries the result."""

    def __init__(self, result: ScoreResult) -> None:
        super().__init__(f"{result.breaches} drift check(s) above their thresholds; nothing was published")
        self.result = result


@dataclass
class ScoreResult:
    """What a scoring run wrote (or, on a drift breach with ``fail_on_drift``, would have)."""

    folder: Path | None  # the published run; None when not published
    manifest: dict[str, Any]
    drift: pd.DataFrame
    breaches: int
    published: bool
    mlflow_run_id: str | None


# --- 1, 2: checks and models ----------------------------------------------------------------------------


def _check(setup: ScoreSetup, as_of: datetime) -> Path:
    from omnicrm.store import check_date, store_data_range

    check_date(as_of, store_data_range(setup.config.store), "--as-of")
    return runs.check_output_folder(Path(setup.config.output))


def _load_models(setup: ScoreSetup, progress: Progress) -> list[Model]:
    """Every model of the config, resolved in the registry and loaded (a missing one is a ConfigError)."""
    from omnicrm import tracking
    from omnicrm.pipeline.promote_models import load_registered

    cfg = setup.config
    models: list[Model] = []
    for ref_cfg, tcfg in zip(cfg.tasks, setup.tasks, strict=True):
        for target in tcfg.task.declared_targets():
            name = tcfg.registered_name(target)
            info = tracking.find_version(name, ref_cfg.model)
            if info is None:
                if target.optional:  # trained only where the data carries its label (clv's margin)
                    continue
                hint = " (promote one with `omnicrm promote`)" if ref_cfg.model == "champion" else ""
                raise ConfigError(
                    f"{setup.path}: task {tcfg.name}: registered model '{name}' has no version '{ref_cfg.model}'{hint}"
                )
            progress(f"score: loading {name} v{info.version}", 0.02)
            obj = tracking.load_model(tracking.model_uri(name, info.version))
            models.append(Model("task", name, info.version, info.run_id, ref_cfg.model, obj, tcfg.name, target))
    if cfg.recommender is not None:
        progress(f"score: loading {cfg.recommender.full_name}", 0.03)
        info, obj = load_registered(cfg.recommender.full_name, cfg.recommender.model, "recommend")
        models.append(Model("recommender", info.name, info.version, info.run_id, cfg.recommender.model, obj))
    for ref in cfg.effects:
        progress(f"score: loading {ref.full_name}", 0.04)
        info, obj = load_registered(ref.full_name, ref.model, "effects")
        models.append(Model("effects", info.name, info.version, info.run_id, ref.model, obj))
    ignore = set(cfg.drift.out_of_range_ignore)
    for m in models:
        if m.kind != "recommender":
            m.ranges = {f: r for f, r in dr.training_ranges(m.obj).items() if f not in ignore}
    return models


def _check_fingerprints(models: list[Model], fingerprint: str, store: str) -> None:
    from omnicrm import tracking
    from omnicrm.pipeline.promote_models import check_fingerprint

    for m in models:
        if m.kind in ("recommender", "effects"):
            check_fingerprint(tracking.get_version(m.name, m.version), fingerprint, f"store {store}")


# --- 3, 4: features once, chunks -----------------------------------------------------------------------


def _sql_text(value: str) -> str:
    from omnicrm.sql import literal

    return literal(value)


@dataclass
class _Chunking:
    customers: int
    known: int
    chunks: int


def _prepare(con, setup: ScoreSetup, as_of: datetime, clock: StepClock, progress: Progress) -> _Chunking:  # noqa: ANN001
    """Temporary tables: customers numbered into chunks, the feature snapshot, populations and inputs."""
    import pyarrow as pa

    from omnicrm.features import feature_batches, feature_schema

    chunk = setup.config.chunk_size
    with clock.step("features") as st:
        progress(f"score: features at {as_of:%Y-%m-%d} (once, for every customer)", 0.05)
        # every temporary table carries the chunk number and is stored in chunk order, so reading one
        # chunk touches only its own row groups (DuckDB skips the others by their min/max): a join
        # to the customers per chunk would read the whole base once per chunk
        con.execute(
            "CREATE TEMP TABLE score_customers AS SELECT customer_id, first_seen, consent_email, consent_sms, "
            f"consent_push, (row_number() OVER (ORDER BY customer_id) - 1) // {int(chunk)} AS chunk FROM customers "
            "ORDER BY customer_id"
        )
        # the snapshot as build_features computes it for training and predict on this single-threaded
        # connection (the same bits): on a large base a range of customers per query
        # (omnicrm.features.snapshot.customer_ranges), so each query's hash tables and sort hold a range
        con.register("score_feature_batch", pa.Table.from_batches([], schema=feature_schema(setup.features)))
        con.execute(
            "CREATE TEMP TABLE score_features AS SELECT c.chunk, f.* FROM score_feature_batch f "
            "JOIN score_customers c USING (customer_id)"
        )
        # read on a cursor of its own: a snapshot of one query is streamed, and this connection
        # inserts each batch meanwhile (a connection runs one query at a time)
        with con.cursor() as reader:
            for batch in feature_batches(reader, [as_of], setup.features):  # in customer_id order: chunk order
                con.register("score_feature_batch", batch)
                con.execute(
                    "INSERT INTO score_features SELECT c.chunk, f.* FROM score_feature_batch f "
                    "JOIN score_customers c USING (customer_id) ORDER BY c.chunk, f.customer_id"
                )
        con.unregister("score_feature_batch")
        n = con.execute("SELECT count(*), coalesce(max(chunk) + 1, 0) FROM score_customers").fetchall()[0]
        known = con.execute("SELECT count(*) FROM score_features").fetchall()[0][0]
        st.rows = int(known)
    with clock.step("populations"):
        # tasks usually share their population rule (active in the last year): each distinct
        # population query runs once, later tasks read it through a view
        built: dict[str, int] = {}
        for i, tcfg in enumerate(setup.tasks):
            task = tcfg.task
            progress(f"score: population and inputs of {tcfg.name}", 0.08)
            sql = task.population_sql(as_of)
            if sql in built:
                con.execute(f"CREATE TEMP VIEW score_pop_{i} AS SELECT * FROM score_pop_{built[sql]}")
            else:
                con.execute(
                    f"CREATE TEMP TABLE score_pop_{i} AS SELECT DISTINCT c.chunk, p.customer_id "
                    f"FROM ({sql}) p JOIN score_customers c USING (customer_id) ORDER BY 1, 2"
                )
                built[sql] = i
            keys = con.execute(f"SELECT customer_id FROM score_pop_{i} ORDER BY customer_id").df()
            keys["cutoff"] = pd.Timestamp(as_of).as_unit("us")
            # extra inputs (clv: BG/NBD fitted on the whole population) once, not per chunk: a fit per
            # chunk would make the scores depend on the chunk size
            inputs = task.add_inputs(con, as_of, keys)
            extra = [c for c in inputs.columns if c not in keys.columns]
            if not extra:  # the task adds nothing to the features: no table to write and read back
                con.execute(f"CREATE TEMP VIEW score_inputs_{i} AS SELECT chunk, customer_id FROM score_pop_{i}")
                continue
            frame = inputs[["customer_id", *extra]]
            con.register("score_inputs_view", frame)
            con.execute(
                f"CREATE TEMP TABLE score_inputs_{i} AS SELECT c.chunk, x.* FROM score_inputs_view x "
                "JOIN score_customers c USING (customer_id) ORDER BY c.chunk, x.customer_id"
            )
            con.unregister("score_inputs_view")
            del keys, inputs, frame
    progress(f"score: {int(known):,} of {int(n[0]):,} customers have history before as_of; {int(n[1])} chunk(s)", 0.1)
    return _Chunking(int(n[0]), int(known), int(n[1]))


def _chunk_frames(con, setup: ScoreSetup, k: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:  # noqa: ANN001
    """Chunk ``k``: its customers (id, first seen), their features, their consent."""
    from omnicrm.features.snapshot import feature_dtypes

    ids = con.execute(
        "SELECT customer_id, first_seen FROM score_customers WHERE chunk = ? ORDER BY customer_id", [k]
    ).df()
    feats = con.execute("SELECT * EXCLUDE (chunk) FROM score_features WHERE chunk = ? ORDER BY customer_id", [k]).df()
    feats = feats.astype(feature_dtypes(setup.features))
    consent = con.execute(
        "SELECT customer_id, consent_email, consent_sms, consent_push FROM score_customers WHERE chunk = ?", [k]
    ).df()
    return ids, feats, consent


@dataclass
class _Writers:
    folder: Path
    open: dict[str, runs.TableWriter] = field(default_factory=dict)
    rows_in: dict[str, int] = field(default_factory=dict)

    def write(self, table: str, frame: pd.DataFrame, rows_in: int = 0) -> None:
        from omnicrm.store.outputs import conform

        if table not in self.open:
            self.open[table] = runs.TableWriter(self.folder / f"{table}.parquet", table)
            self.rows_in[table] = 0
        self.open[table].write(conform(frame, table))
        self.rows_in[table] += rows_in

    def close(self) -> dict[str, dict[str, int]]:
        for w in self.open.values():
            w.close()
        return {t: {"rows_in": self.rows_in[t], "rows_out": w.rows} for t, w in self.open.items()}


def _purchases(con, ids: np.ndarray, as_of: datetime) -> pd.DataFrame:  # noqa: ANN001
    """Purchase lines before ``as_of`` of a chunk's customers (the columns a recommender reads).

    A chunk is a range of customer ids (``ids``, sorted), so a range filter selects its lines: one
    scan of the events with a cheap filter, no join to the customers.
    """
    if not len(ids):
        return pd.DataFrame(columns=["customer_id", "product_id", "ts", "order_id", "quantity", "amount"])
    return con.execute(
        """SELECT customer_id, product_id, ts, coalesce(order_id, event_id) AS order_id,
                  coalesce(quantity, 1.0) AS quantity, coalesce(amount, 0.0) AS amount
           FROM events
           WHERE customer_id BETWEEN ? AND ? AND event_type = 'purchase' AND product_id IS NOT NULL AND ts < ?""",
        [str(ids[0]), str(ids[-1]), as_of],
    ).df()


class _DuckReader:
    """A chunk's populations, extra inputs and purchases, read from the run's temporary tables."""

    def __init__(self, con, as_of: datetime, k: int) -> None:  # noqa: ANN001
        self.con, self.as_of, self.k = con, as_of, k

    def population(self, i: int) -> pd.DataFrame:
        return self.con.execute(f"SELECT customer_id FROM score_pop_{i} WHERE chunk = ?", [self.k]).df()

    def inputs(self, i: int) -> pd.DataFrame:
        return self.con.execute(f"SELECT * EXCLUDE (chunk) FROM score_inputs_{i} WHERE chunk = ?", [self.k]).df()

    def purchases(self, ids: np.ndarray) -> pd.DataFrame:
        return _purchases(self.con, ids, self.as_of)


def _score_chunks(
    con,  # noqa: ANN001
    setup: ScoreSetup,
    as_of: datetime,
    models: list[Model],
    plan: _Chunking,
    writers: _Writers,
    ledger: Ledger,
    clock: StepClock,
    outside: dict[tuple[str, str], list[int]],
    progress: Progress,
) -> pd.Series | None:
    """Score every chunk with every model (:func:`omnicrm.score.chunk.score_chunk`); append the outputs.

    Returns each customer's first recommended product (``None`` without a recommender), which the
    next-best-action step reuses instead of running the recommender over the whole base again.
    """
    tops: list[pd.DataFrame] = []

    def write(table: str, frame: pd.DataFrame, rows_in: int = 0) -> None:
        if table == schema.RECOMMENDATIONS and len(frame):
            tops.append(frame.loc[frame["rank"] == 1, ["customer_id", "product_id"]])
        writers.write(table, frame, rows_in)

    for k in range(plan.chunks):
        written = sum(w.rows for w in writers.open.values())
        progress(
            f"score: chunk {k + 1}/{plan.chunks} ({written:,} rows written so far)", 0.1 + 0.6 * k / max(plan.chunks, 1)
        )
        with clock.step("read chunk") as st:
            ids_frame, feats, consent = _chunk_frames(con, setup, k)
            st.rows += len(ids_frame)
        score_chunk(
            setup,
            as_of,
            models,
            ids_frame,
            feats,
            consent,
            _DuckReader(con, as_of, k),
            write=write,
            ledger=ledger,
            step=clock.step,
            outside=outside,
        )
    if not any(m.kind == "recommender" for m in models):
        return None
    if not tops:
        return pd.Series(dtype=object)
    return pd.concat(tops, ignore_index=True).set_index("customer_id")["product_id"]


# --- 5: next-best actions --------------------------------------------------------------------------------


def _nba(
    con,  # noqa: ANN001
    setup: ScoreSetup,
    as_of: datetime,
    models: list[Model],
    fingerprint: str,
    staging: Path,
    writers: _Writers,
    ledger: Ledger,
    progress: Progress,
    top_products: pd.Series | None = None,
) -> dict[str, Any]:
    """The next-best-action list into the staging folder, its customers accounted for.

    The list is built from the feature snapshot this run built once (the catalogue must use the same
    feature settings: :func:`omnicrm.score.config.load_score_config` checks it) and with the models this
    run loaded, so its effects, products and task scores come from the versions the manifest names.
    """
    from omnicrm.features.snapshot import feature_dtypes
    from omnicrm.nba.catalogue import load_catalogue
    from omnicrm.pipeline.nba import nba_list
    from omnicrm.store.outputs import write_frame

    assert setup.catalogue is not None
    cat = load_catalogue(setup.catalogue)
    given = {(m.name, m.ref): (m.version, m.obj) for m in models if m.kind in ("task", "effects", "recommender")}
    refs = {m.ref for m in models if m.kind == "effects"}
    # one reference for every effect model of the catalogue (the config check makes them listed here);
    # several references: each model is still found under its own (name, reference) in `given`
    ref = refs.pop() if len(refs) == 1 else "champion"
    pop = con.execute("SELECT * EXCLUDE (chunk) FROM score_features ORDER BY customer_id").df()
    pop = pop.astype(feature_dtypes(setup.features))
    products = None
    rec = setup.config.recommender
    if top_products is not None and rec is not None and rec.exclude_purchased is None:
        # the recommendations step served the champion with its registered settings, as the list's
        # product-led actions do (the config check makes it the champion): its first product is theirs
        served = next(m for m in models if m.kind == "recommender")
        products = (top_products, {served.name: served.version})
    made = nba_list(
        cat,
        setup.catalogue,
        con,
        pop,
        as_of,
        fingerprint=fingerprint,
        model=ref,
        given=given,
        products=products,
        progress=progress,
    )
    del pop
    loaded = {m.name: m.version for m in models}
    moved = {k: v for k, v in made.models.items() if k in loaded and loaded[k] != v}
    if moved:  # a model the run did not load itself was looked up again and has moved since
        raise RuntimeError(
            f"nba: the registry moved while the run scored: the next-best actions used {moved}, the scores "
            f"{ {k: loaded[k] for k in moved} }; run again"
        )
    nba, dropped = made.nba, made.excluded
    # a decision over the whole base, so one write (not chunked); the per-candidate drops beside it
    write_frame(dropped, staging / NBA_DROPPED)
    write_frame(nba, staging / f"{schema.NBA}.parquet")
    everyone = con.execute(
        "SELECT customer_id, first_seen < ? AS known FROM score_customers ORDER BY customer_id", [as_of]
    ).df()
    ids = everyone["customer_id"].to_numpy(dtype=object)
    sent = nba["customer_id"].astype(object).unique()
    reasons = nba_excluded(dropped, sent)
    unknown = ids[~everyone["known"].to_numpy(dtype=bool)]
    excl = pd.concat(
        [
            excluded_rows(reasons["customer_id"], "nba", reasons["reason"]),
            excluded_rows(unknown, "nba", NOT_YET_A_CUSTOMER),
        ],
        ignore_index=True,
    ).sort_values("customer_id", kind="stable")
    ledger.add("nba", ids, sent, excl)
    writers.write(schema.EXCLUDED, excl, rows_in=len(excl))
    return {
        "rows": len(nba),
        "customers_sent": len(sent),
        "models": made.models,
        "method": made.method,
        "summary": made.summary,
    }


# --- 6: drift --------------------------------------------------------------------------------------------


def _profiles_and_psi(
    con,
    setup: ScoreSetup,
    staging: Path,
    previous: dict[str, Any] | None,  # noqa: ANN001
) -> tuple[dict[str, Any], dict[str, float], dict[str, float]]:
    """The run's profiles (features, scores, effects) and the PSI of each against the previous run's."""
    bins = setup.config.drift.bins
    prof: dict[str, Any] = {"features": {}, "scores": {}}
    f_psi: dict[str, float] = {}
    s_psi: dict[str, float] = {}
    skip = {"customer_id", "cutoff", "chunk"}
    columns = [c for c in con.execute("SELECT * FROM score_features LIMIT 0").df().columns if c not in skip]
    for c in columns:
        values = con.execute(f"SELECT {_ident(c)} FROM score_features").df()[c]
        prof["features"][c] = dr.profile(values, bins)
        old = (previous or {}).get("features", {}).get(c)
        if old is not None:
            v = dr.psi_against(old, values)
            if v is not None:
                f_psi[c] = v
    for table, key_sql, value in (
        (schema.SCORES, "task || ':' || target || ':' || output", "score"),
        (schema.EFFECTS, "'effect:' || model || ':' || action", "effect"),
    ):
        path = staging / f"{table}.parquet"
        if not path.exists():
            continue
        src = f"read_parquet({_sql_text(str(path))})"
        keys = [r[0] for r in con.execute(f"SELECT DISTINCT {key_sql} FROM {src} ORDER BY 1").fetchall()]
        for key in keys:
            values = con.execute(f"SELECT {value} FROM {src} WHERE {key_sql} = ?", [key]).df()[value]
            prof["scores"][key] = dr.profile(values, bins)
            old = (previous or {}).get("scores", {}).get(key)
            if old is not None:
                v = dr.psi_against(old, values)
                if v is not None:
                    s_psi[key] = v
    return prof, f_psi, s_psi


def _ident(name: str) -> str:
    from omnicrm.sql import ident

    return ident(name)


def _nba_change(previous_folder: Path | None, staging: Path) -> float | None:
    """Share of customers in both runs whose first next-best action changed (None: a run had no list)."""
    old, new = (previous_folder / "nba.parquet") if previous_folder else None, staging / "nba.parquet"
    if old is None or not old.exists() or not new.exists():
        return None

    def universe(folder: Path) -> set[str]:
        ex = pd.read_parquet(folder / "excluded.parquet", columns=["customer_id", "step", "reason"])
        ex = ex[(ex["step"] == "nba") & (ex["reason"] != NOT_YET_A_CUSTOMER)]
        return set(ex["customer_id"]) | set(
            pd.read_parquet(folder / "nba.parquet", columns=["customer_id"])["customer_id"]
        )

    both = sorted(universe(previous_folder) & universe(staging))
    cols = ["customer_id", "rank", "action", "channel", "product_id"]
    return dr.nba_changed(
        dr.first_actions(pd.read_parquet(old, columns=cols)), dr.first_actions(pd.read_parquet(new, columns=cols)), both
    )


# --- the run ---------------------------------------------------------------------------------------------


def run_score(
    config_path: str | Path,
    as_of: date | datetime,
    *,
    replace: bool = False,
    fail_on_drift: bool = False,
    progress: Progress = silent,
) -> ScoreResult:
    """Score the whole base at ``as_of`` and publish the run (see the module docstring).

    Parameters
    ----------
    config_path
        The scoring config (``configs/score/<dataset>.yaml``).
    as_of
        Score date: features, populations and histories read ``ts < as_of``.
    replace
        Publish even when a run of this ``as_of`` is published (it is replaced).
    fail_on_drift
        A drift breach stops the run before publication (:class:`DriftBreach`).
    progress
        Progress callback.

    Returns
    -------
    ScoreResult

    Raises
    ------
    ConfigError
        A bad config, date or output folder, a missing model, another live run holding the lock, or a
        published run of ``as_of`` without ``replace``.
    DriftBreach
        With ``fail_on_drift``, when a check breaches its threshold.
    AccountingError
        Customers of a step not exactly scored plus excluded (a bug: the run is not published).
    """
    from omnicrm.store import open_store
    from omnicrm.tasks.frames import store_fingerprint

    setup = load_score_config(config_path)
    cfg = setup.config
    as_of = normalize_cutoff(as_of)
    if cfg.engine == "spark":  # the same job with the per-customer work on Spark
        from omnicrm.pipeline.score_spark import run_score_spark

        return run_score_spark(setup, as_of, replace=replace, fail_on_drift=fail_on_drift, progress=progress)
    output = _check(setup, as_of)
    run_id = runs.new_run_id()
    clock = StepClock()
    with runs.RunLock(output, as_of, run_id):
        runs.sweep_orphans(output)
        previous = previous_run(output, as_of, replace)
        with clock.step("models"):
            models = _load_models(setup, progress)
        staging = runs.new_staging(output)
        try:
            con = open_store(cfg.store, deterministic=True)
            try:
                con.execute(f"SET temp_directory = {_sql_text(str(staging / '.duckdb-tmp'))}")
                con.execute(f"SET memory_limit = {_sql_text(cfg.memory_limit)}")
                fingerprint = store_fingerprint(con)
                _check_fingerprints(models, fingerprint, cfg.store)
                plan = _within_memory_limit(setup, lambda: _prepare(con, setup, as_of, clock, progress))
                writers = _Writers(staging)
                ledger = Ledger()
                outside: dict[tuple[str, str], list[int]] = {}
                tops = _score_chunks(con, setup, as_of, models, plan, writers, ledger, clock, outside, progress)
                nba_info = None
                if setup.catalogue is not None:
                    with clock.step("nba") as st:
                        progress("score: next-best actions", 0.75)
                        nba_info = _nba(
                            con, setup, as_of, models, fingerprint, staging, writers, ledger, progress, tops
                        )
                        st.rows = nba_info["rows"]
                with clock.step("write"):
                    tables = writers.close()
                    if nba_info is not None:
                        tables[schema.NBA] = {"rows_in": ledger.steps["nba"].customers_in, "rows_out": nba_info["rows"]}
                ledger.check_totals(plan.customers)
                with clock.step("drift"):
                    progress("score: drift against the previous run", 0.85)
                    profile, f_psi, s_psi = _profiles_and_psi(con, setup, staging, previous.profile)
            finally:
                con.close()
            shutil.rmtree(staging / ".duckdb-tmp", ignore_errors=True)
            result = publish_run(
                setup,
                output,
                as_of,
                run_id,
                previous,
                staging,
                ScoredRun(
                    fingerprint=fingerprint,
                    models=models,
                    tables=tables,
                    clock=clock,
                    customers=plan.customers,
                    known=plan.known,
                    ledger=ledger,
                    outside=outside,
                    nba_info=nba_info,
                    profile=profile,
                    feature_psi=f_psi,
                    score_psi=s_psi,
                    chunks=plan.chunks,
                    engine={"engine": cfg.engine},
                ),
                fail_on_drift=fail_on_drift,
                open_up=lambda folder: folder.chmod(0o777 & ~_umask()),  # mkdtemp made it private; others read it
                progress=progress,
            )
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):  # the staging parent, when no other run uses it
                staging.parent.rmdir()
    return result


@dataclass
class PreviousRun:
    """The published runs a new run is measured against.

    Attributes
    ----------
    existing
        The published run of the same ``as_of`` (replaced when ``--replace`` is given), if any.
    folder, manifest, profile
        The latest published run (``latest``): its folder, manifest and drift profile (``None`` when
        missing or unreadable, each said once as a warning).
    """

    existing: Path | None
    folder: Path | None
    manifest: dict[str, Any] | None
    profile: dict[str, Any] | None


def previous_run(output: Path, as_of: datetime, replace: bool) -> PreviousRun:
    """The runs a new run of ``as_of`` replaces and compares with (inside the run lock; both engines).

    Raises
    ------
    ConfigError
        A run of ``as_of`` is already published and ``replace`` is not set.
    """
    existing = runs.published(output, as_of)
    if existing is not None and not replace:
        raise ConfigError(
            f"output {output}: a run of as_of {as_of:%Y-%m-%d} is already published ({existing.name}); "
            "pass --replace to score it again and replace it"
        )
    previous_folder = runs.latest(output)
    pointer = Path(output) / runs.LATEST
    if previous_folder is None and (pointer.is_symlink() or pointer.exists()):
        warnings.warn(
            f"{pointer}: does not lead to a published run, so drift is checked against no previous run "
            "(population, PSI and changed actions are skipped); point it at one (ln -sfn runs/<run> latest) "
            "to restore the comparison",
            StaleFileWarning,
            stacklevel=3,
        )
    previous_manifest = _read_json(previous_folder / schema.MANIFEST) if previous_folder else None
    if previous_folder is not None and previous_manifest is None:
        warnings.warn(
            f"{previous_folder / schema.MANIFEST}: missing or unreadable, so the population change against that "
            "run is not checked",
            StaleFileWarning,
            stacklevel=3,
        )
    previous_profile = _read_json(previous_folder / "profile.json") if previous_folder else None
    return PreviousRun(existing, previous_folder, previous_manifest, previous_profile)


@dataclass
class ScoredRun:
    """What an engine's run produced, in the staging folder and in figures, before it is judged and published."""

    fingerprint: str
    models: list[Model]
    tables: dict[str, dict[str, int]]
    clock: StepClock
    customers: int
    known: int
    ledger: Ledger
    outside: dict[tuple[str, str], list[int]]
    nba_info: dict[str, Any] | None
    profile: dict[str, Any]
    feature_psi: Any
    score_psi: Any
    chunks: int
    engine: dict[str, Any]


def publish_run(
    setup: ScoreSetup,
    output: Path,
    as_of: datetime,
    run_id: str,
    previous: PreviousRun,
    staging: Path,
    done: ScoredRun,
    *,
    fail_on_drift: bool,
    open_up: Any,
    progress: Progress,
) -> ScoreResult:
    """Drift against the previous run, the manifest and the MLflow run, then publish (both engines).

    ``open_up(staging)`` gives the staging folder the permissions of a published run. With
    ``fail_on_drift`` and a breach, nothing is published and :class:`DriftBreach` is raised.
    """
    from omnicrm import __version__, tracking

    cfg = setup.config
    population = (
        dr.population_change(done.customers, int(previous.manifest["customers"]))
        if previous.manifest and "customers" in previous.manifest
        else None
    )
    table = dr.drift_table(
        cfg.drift,
        feature_psi=done.feature_psi,
        score_psi=done.score_psi,
        population=population,
        nba=_nba_change(previous.folder, staging),
        outside={k: (v[0], v[1]) for k, v in done.outside.items()},
    )
    breaches = table[table["breach"]]
    tags = tracking.context_tags()
    code = {
        "omnicrm": __version__,
        "git_commit": tags.get("git_commit", ""),
        "git_dirty": tags.get("git_dirty", ""),
    }
    run_tags = {"task": "score", "dataset": cfg.name, "as_of": f"{as_of:%Y-%m-%d}", "score_run_id": run_id}
    with tracking.start_run(cfg.experiment, f"score · {cfg.name} · as of {as_of:%Y-%m-%d}", tags=run_tags) as run:
        manifest = build_manifest(
            as_of=f"{as_of:%Y-%m-%d}",
            run_id=run_id,
            code_version=code,
            config_hash=setup.config_hash,
            data_fingerprint=done.fingerprint,
            models=[m.entry() for m in done.models],
            tables=done.tables,
            steps=done.clock.as_dict(),
            customers=done.customers,
            customers_with_history=done.known,
            accounting=done.ledger.as_dict(),
            drift={
                "previous_run": (previous.manifest or {}).get("run_id"),
                "previous_as_of": (previous.manifest or {}).get("as_of"),
                "checks": len(table),
                "breaches": breaches.to_dict("records"),
                "training_ranges": "min/max per feature from the LightGBM boosters inside each model "
                "(feature_infos); the registry logs no ranges of its own",
            },
            nba=done.nba_info,
            **done.engine,
            chunk_size=cfg.chunk_size,
            chunks=done.chunks,
            config=str(setup.path),
            mlflow_run_id=run.run_id,
            replaced=previous.existing.name if previous.existing is not None else None,
            published=not (fail_on_drift and len(breaches)),
        )
        (staging / schema.MANIFEST).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
        (staging / "profile.json").write_text(json.dumps(done.profile, default=str), encoding="utf-8")
        table.to_csv(staging / "drift.csv", index=False)
        _log_run(tracking, cfg, manifest, table, done.ledger)
        result = ScoreResult(None, manifest, table, len(breaches), False, run.run_id)
        if fail_on_drift and len(breaches):
            tracking.set_tags({"published": "false", "drift_breaches": len(breaches)})
            raise DriftBreach(result)
        progress(f"score: publishing ({sum(t['rows_out'] for t in done.tables.values()):,} rows)", 0.98)
        open_up(staging)
        result.folder = runs.publish(output, staging, as_of, run_id)
        result.published = True
        tracking.set_tags({"published": "true", "drift_breaches": len(breaches), "folder": result.folder})
    return result


def _within_memory_limit(setup: ScoreSetup, step: Any) -> Any:
    """Run ``step``; DuckDB running out of the config's ``memory_limit`` is a user error that says what to do.

    Not every operator of the feature query can spill to disk, so a limit far below what the base
    needs stops the query rather than slowing it.
    """
    import duckdb

    try:
        return step()
    except duckdb.OutOfMemoryException as exc:
        raise ConfigError(
            f"{setup.path}: key 'memory_limit': the whole-base SQL (feature snapshot, populations) needs more than "
            f"{setup.config.memory_limit} of DuckDB memory on this base ({str(exc).splitlines()[0]}); raise "
            "memory_limit (the machine's free memory permitting)"
        ) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _log_run(tracking, cfg, manifest: dict[str, Any], table: pd.DataFrame, ledger: Ledger) -> None:  # noqa: ANN001
    """Params, counts, the manifest, the drift table and its plot."""
    tracking.log_config(cfg.model_dump(mode="json"))
    metrics: dict[str, float] = {"customers": manifest["customers"], "drift_breaches": int(table["breach"].sum())}
    for step, c in ledger.steps.items():
        key = step.replace(":", ".")
        metrics[f"scored.{key}"] = c.scored
        metrics[f"excluded.{key}"] = c.excluded
    for t, counts in manifest["tables"].items():
        metrics[f"rows.{t}"] = counts["rows_out"]
    for check, group in table.groupby("check"):
        metrics[f"drift.max.{check}"] = float(group["value"].max())
    for step, t in manifest["steps"].items():
        metrics[f"seconds.{step.replace(':', '.')}"] = t["seconds"]
    for k, v in ((manifest.get("nba") or {}).get("summary") or {}).items():
        metrics[f"nba.{k}"] = v
    tracking.log_metrics(metrics)
    tracking.log_dict(manifest, schema.MANIFEST)
    tracking.log_table(table, "tables/drift.csv")
    if len(table):
        tracking.log_figure(dr.drift_figure(table), "plots/drift.png")


__all__ += ["AccountingError"]
