"""``omnicrm score`` with ``engine: spark``: the scoring job's per-customer work on a Spark cluster.

The same job as :mod:`omnicrm.pipeline.score` (same checks, models, tables, manifest, accounting,
drift, lock and publication), with the work that grows with the base done by Spark:

* **executors**: the store tables (Parquet datasets at ``spark.input``, e.g. on object storage, or
  the DuckDB store copied in through the driver), the feature snapshot at ``as_of`` (the feature
  SQL transpiled to Spark SQL, :mod:`omnicrm.features.spark`), each task's population (its SQL
  likewise), the purchases the recommender reads, and the scoring itself: customers are hashed
  into ``ceil(customers / chunk_size)`` chunks and each chunk is scored by
  :func:`omnicrm.score.chunk.score_chunk` (the DuckDB engine's code) inside Spark's
  ``cogroup(...).applyInPandas`` (features and purchases of one chunk), with the models the driver
  loaded from the registry shipped to the executors in the function's closure; the rows are
  written by Spark as Parquet datasets (``scores.parquet/``, a folder of part files) and counted with
  Spark aggregations (every customer of every step scored or excluded, or the run fails);
* **driver**: the config, the registry look-ups and model loading, the store's fingerprint and
  date range, each task's extra inputs (clv's BG/NBD is one fit over the whole population, read
  from the DuckDB store), the next-best-action list (:func:`omnicrm.pipeline.nba.nba_list`: an
  allocation under a budget is one decision over the whole base, and the contact history and rules
  are read from the DuckDB store; the driver holds the feature snapshot for it), the drift
  profiles, the manifest, the MLflow run and the publication (:mod:`omnicrm.store.runs`: the output
  is a folder the driver and the executors share, renamed into place).

Spark does the distribution (partitioning, shuffles, retries, the Parquet commit protocol); nothing
here splits data by hand. See docs/score.md, "Spark".
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from omnicrm import schema
from omnicrm.errors import ConfigError
from omnicrm.progress import Progress
from omnicrm.score import drift as dr
from omnicrm.score.accounting import AccountingError, Ledger, StepCount, counted_step
from omnicrm.score.chunk import Model, score_chunk
from omnicrm.score.config import ScoreSetup, Spark
from omnicrm.score.manifest import StepClock, StepTime
from omnicrm.score.tables import NOT_YET_A_CUSTOMER, excluded_rows, nba_excluded
from omnicrm.store import runs

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["TABLE_COLUMNS", "run_score_spark"]

#: the columns (and DuckDB types) of each chunked output table as both engines write it: the
#: contract (:data:`omnicrm.schema.OUTPUTS`), then the extra columns the job adds
TABLE_COLUMNS: dict[str, dict[str, str]] = {
    schema.SCORES: {**schema.OUTPUTS[schema.SCORES], "output": "VARCHAR", "run_id": "VARCHAR"},
    schema.RECOMMENDATIONS: dict(schema.OUTPUTS[schema.RECOMMENDATIONS]),
    schema.EFFECTS: {**schema.OUTPUTS[schema.EFFECTS], "model": "VARCHAR", "version": "VARCHAR"},
    schema.EXCLUDED: dict(schema.OUTPUTS[schema.EXCLUDED]),
}
_CONSENT = ["consent_email", "consent_sms", "consent_push"]
_META = "_meta"  # the _table of the one row per chunk that carries its counts and timings
_ROWS = ".chunk-rows"  # in the staging folder: every chunk's rows, read by the writes and the accounting
_NBA_CHUNK = 1 << 62  # the excluded rows of the next-best-action step come after every chunk's


def _col(table: str, column: str) -> str:
    return f"{table}__{column}"


def union_schema() -> str:
    """Spark DDL of what a chunk returns: every table's rows in one frame, told apart by ``_table``."""
    from omnicrm.features.spark import spark_type

    cols = ["`_table` STRING", "`_chunk` BIGINT", "`_row` BIGINT", "`_meta` STRING"]
    for table, columns in TABLE_COLUMNS.items():
        cols += [f"`{_col(table, c)}` {spark_type(t)}" for c, t in columns.items()]
    return ", ".join(cols)


# --- on the executors: one chunk -------------------------------------------------------------------------


class _FrameReader:
    """A chunk's populations, extra inputs and purchases, from the frames Spark hands the chunk."""

    def __init__(self, wide: pd.DataFrame, purchases: pd.DataFrame, inputs: list[list[str]]) -> None:
        self.wide, self.purchase_lines, self.input_columns = wide, purchases, inputs

    def population(self, i: int) -> pd.DataFrame:
        flag = self.wide[f"_pop{i}"].fillna(False).to_numpy(dtype=bool)
        return self.wide.loc[flag, ["customer_id"]].reset_index(drop=True)

    def inputs(self, i: int) -> pd.DataFrame:
        flag = self.wide[f"_pop{i}"].fillna(False).to_numpy(dtype=bool)
        cols = self.input_columns[i]
        frame = self.wide.loc[flag, ["customer_id", *[f"_in{i}__{c}" for c in cols]]]
        return frame.rename(columns={f"_in{i}__{c}": c for c in cols}).reset_index(drop=True)

    def purchases(self, ids: np.ndarray) -> pd.DataFrame:
        lines = self.purchase_lines.drop(columns=["_chunk"])
        lines["ts"] = lines["ts"].astype("datetime64[us]")
        lines["quantity"] = lines["quantity"].astype("float64")
        lines["amount"] = lines["amount"].astype("float64")
        # Spark hands the lines in no particular order: sorted, every run and engine reads them alike
        return lines.sort_values(["customer_id", "ts", "order_id", "product_id"], kind="stable").reset_index(drop=True)


def _union_rows(k: int, parts: list[tuple[str, pd.DataFrame]], meta: dict[str, Any]) -> pd.DataFrame:
    """The chunk's rows of every table (prefixed columns, ``_table``, ``_row``) and its meta row."""
    frames = []
    for table in TABLE_COLUMNS:
        mine = [f for t, f in parts if t == table]
        if not mine:
            continue
        frame = pd.concat(mine, ignore_index=True)
        want = list(TABLE_COLUMNS[table])
        if list(frame.columns) != want:  # the engines must write the same columns
            raise RuntimeError(f"spark engine: table {table} has columns {list(frame.columns)}, expected {want}")
        frame = frame.rename(columns={c: _col(table, c) for c in want})
        frame.insert(0, "_table", table)
        frame.insert(1, "_row", np.arange(len(frame), dtype="int64"))
        frames.append(frame)
    frames.append(pd.DataFrame({"_table": [_META], "_row": [0], "_meta": [json.dumps(meta)]}))
    out = pd.concat(frames, ignore_index=True)
    out["_chunk"] = k
    columns = ["_table", "_chunk", "_row", "_meta"]
    types = {"_table": "VARCHAR", "_chunk": "BIGINT", "_row": "BIGINT", "_meta": "VARCHAR"}
    for table, cols in TABLE_COLUMNS.items():
        for c, t in cols.items():
            columns.append(_col(table, c))
            types[_col(table, c)] = t
    out = out.reindex(columns=columns)
    for c, t in types.items():
        if t == "VARCHAR":
            out[c] = out[c].astype(object).where(out[c].notna(), None)
        elif t == "BIGINT":
            out[c] = out[c].astype("Int64")
        elif t == "DOUBLE":
            out[c] = out[c].astype("float64")
        elif t == "TIMESTAMP":
            out[c] = out[c].astype("datetime64[us]")
    return out


def _chunk_function(setup: ScoreSetup, as_of: datetime, models: list[Model], inputs: list[list[str]]) -> Any:  # noqa: ANN401 - a function for cogroup().applyInPandas
    """The function Spark runs once per chunk (its closure carries the config and the loaded models)."""

    def run(key: tuple, wide: pd.DataFrame, purchases: pd.DataFrame) -> pd.DataFrame:
        from omnicrm.features.snapshot import feature_dtypes
        from omnicrm.store.outputs import conform

        k = int(key[0])
        wide = wide.sort_values("customer_id", kind="stable").reset_index(drop=True)
        dtypes = feature_dtypes(setup.features)
        known = wide["_known"].fillna(False).to_numpy(dtype=bool)
        feats = wide.loc[known, [f"f__{c}" for c in dtypes]].rename(columns={f"f__{c}": c for c in dtypes})
        feats = feats.reset_index(drop=True).astype(dtypes)
        ids_frame = wide[["customer_id", "first_seen"]]
        consent = wide[["customer_id", *_CONSENT]]
        parts: list[tuple[str, pd.DataFrame]] = []
        rows_in: Counter = Counter()

        def write(table: str, frame: pd.DataFrame, n_in: int) -> None:
            parts.append((table, conform(frame, table)))
            rows_in[table] += n_in

        ledger, clock = Ledger(), StepClock()
        outside: dict[tuple[str, str], list[int]] = {}
        score_chunk(
            setup,
            as_of,
            models,
            ids_frame,
            feats,
            consent,
            _FrameReader(wide, purchases, inputs),
            write=write,
            ledger=ledger,
            step=clock.step,
            outside=outside,
        )
        meta = {
            "customers": len(wide),
            "rows_in": dict(rows_in),
            "steps": clock.as_dict(),
            "ledger": ledger.as_dict(),
            "outside": [[m, f, v[0], v[1]] for (m, f), v in outside.items()],
        }
        return _union_rows(k, parts, meta)

    return run


# --- on the driver ---------------------------------------------------------------------------------------


def _to_pandas(frame: DataFrame) -> pd.DataFrame:
    """A (small) Spark result on the driver, through Arrow (pyspark's own pandas conversion warns on pandas 3)."""
    from omnicrm.features.spark import _to_pandas as via_arrow

    return via_arrow(frame)


def _from_pandas(spark: SparkSession, frame: pd.DataFrame, schema_: Any = None) -> DataFrame:  # noqa: ANN401
    """A driver frame into Spark through Arrow (pyspark >= 4 takes an Arrow table), else from pandas."""
    import pyarrow as pa
    import pyspark

    if int(pyspark.__version__.split(".")[0]) >= 4:
        return spark.createDataFrame(pa.Table.from_pandas(frame, preserve_index=False), schema=schema_)
    return spark.createDataFrame(frame, schema=schema_)  # pragma: no cover - pyspark 3.5


def _require_pyspark(path: Path) -> None:
    """``engine: spark`` without pyspark installed is a user error, found before any work."""
    import importlib.util

    if importlib.util.find_spec("pyspark") is None:
        raise ConfigError(f"{path}: key 'engine': spark needs pyspark and Java: pip install 'omnicrm[spark]'")


def _session(scfg: Spark, path: Path) -> tuple[SparkSession, bool]:
    """The session to run on: this process's active one (same master), else a new one (then stopped)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        master = active.sparkContext.master
        if master != scfg.master:
            raise ConfigError(
                f"{path}: key 'spark.master': this process already runs a Spark session on {master}, not {scfg.master}"
            )
        return active, False
    # the executors' Python: this interpreter (right for local mode and for a cluster whose nodes have
    # the same environment at the same path); a cluster's own setting (spark.pyspark.python) wins
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(scfg.master)
        .appName(scfg.app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.showConsoleProgress", "false")  # progress bars would garble a scheduler's log
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    for k, v in scfg.conf.items():
        builder = builder.config(k, str(v).lower() if isinstance(v, bool) else str(v))
    return builder.getOrCreate(), True


def _input_tables(spark: SparkSession, con, scfg: Spark, tag: str, where: Path) -> dict[str, str]:  # noqa: ANN001
    """Temp views of the store tables the job reads: from ``spark.input`` (checked against the store) or copied."""
    from pyspark.sql import functions as F  # noqa: N812

    from omnicrm.features.spark import FEATURE_TABLES, register_store_views, spark_type

    names = {t: f"omnicrm_{tag}_{t}" for t in FEATURE_TABLES}
    if scfg.input is None:
        register_store_views(spark, con, FEATURE_TABLES, prefix=f"omnicrm_{tag}_")
        return names
    base = scfg.input.rstrip("/")
    for t in FEATURE_TABLES:
        path = f"{base}/{t}.parquet"
        try:
            frame = spark.read.parquet(path)
        except Exception as e:  # noqa: BLE001 - Spark raises its own AnalysisException (path not found, ...)
            raise ConfigError(f"{where}: key 'spark.input': cannot read {path}: {str(e).splitlines()[0]}") from e
        missing = [c for c in schema.columns(t) if c not in frame.columns]
        if missing:
            raise ConfigError(f"{where}: key 'spark.input': {path} lacks the store column(s) {missing}")
        frame = frame.select([F.col(c).cast(spark_type(typ)).alias(c) for c, typ in schema.TABLES[t].items()])
        got = frame.count()
        want = con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0]
        if got != want:
            raise ConfigError(
                f"{where}: key 'spark.input': {path} has {got:,} rows, the store's {t} table {want:,}; the input "
                "must be an export of the store the config names (export it again)"
            )
        frame.createOrReplaceTempView(names[t])
    return names


def _prepared(
    spark: SparkSession,
    con,  # noqa: ANN001 - the store, read-only
    setup: ScoreSetup,
    as_of: datetime,
    names: dict[str, str],
    clock: StepClock,
    progress: Progress,
) -> dict[str, Any]:
    """The customers hashed into chunks, their features, populations, extra inputs and purchases (lazy frames)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F  # noqa: N812

    from omnicrm.features.spark import spark_feature_sql, to_spark_sql
    from omnicrm.sql import ts_literal

    cfg = setup.config
    with clock.step("features") as st:
        progress(f"score: features at {as_of:%Y-%m-%d} on Spark (once, for every customer)", 0.05)
        customers = spark.table(names[schema.CUSTOMERS]).select("customer_id", "first_seen", *_CONSENT)
        n = customers.count()
        n_chunks = max(1, math.ceil(n / cfg.chunk_size))
        # a chunk is a hash bucket of customer ids: Spark groups by it, no ordering of the whole base
        chunk_of = F.pmod(F.xxhash64("customer_id"), F.lit(n_chunks))
        customers = customers.withColumn("_chunk", chunk_of)
        customers = customers.persist(StorageLevel.MEMORY_AND_DISK)
        features = spark.sql(spark_feature_sql(as_of, setup.features, names)).persist(StorageLevel.MEMORY_AND_DISK)
        known = features.count()
        st.rows = int(known)
        wide = customers.join(
            features.select([F.col(c).alias(f"f__{c}") for c in features.columns]).withColumn("_known", F.lit(True)),
            F.col("customer_id") == F.col("f__customer_id"),
            "left",
        )
    input_columns: list[list[str]] = []
    cached = [customers, features]
    with clock.step("populations"):
        for i, tcfg in enumerate(setup.tasks):
            progress(f"score: population and inputs of {tcfg.name}", 0.08)
            pop = spark.sql(to_spark_sql(tcfg.task.population_sql(as_of), names)).select("customer_id").distinct()
            pop = pop.join(customers.select("customer_id"), "customer_id").persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(pop)
            wide = wide.join(pop.withColumn(f"_pop{i}", F.lit(True)), "customer_id", "left")
            # extra inputs (clv: BG/NBD on the whole population) on the driver from the store, once
            keys = _to_pandas(pop).sort_values("customer_id", kind="stable").reset_index(drop=True)
            keys["customer_id"] = keys["customer_id"].astype(object)
            keys["cutoff"] = pd.Timestamp(as_of).as_unit("us")
            inputs = tcfg.task.add_inputs(con, as_of, keys)
            extra = [c for c in inputs.columns if c not in keys.columns]
            input_columns.append(extra)
            if extra:
                frame = inputs[["customer_id", *extra]].rename(columns={c: f"_in{i}__{c}" for c in extra})
                wide = wide.join(_from_pandas(spark, frame), "customer_id", "left")
            del keys, inputs
    if cfg.recommender is not None:
        purchases_sql = f"""SELECT customer_id, product_id, ts, coalesce(order_id, event_id) AS order_id,
                   coalesce(quantity, 1.0) AS quantity, coalesce(amount, 0.0) AS amount
            FROM events WHERE event_type = 'purchase' AND product_id IS NOT NULL AND ts < {ts_literal(as_of)}"""
        purchases = spark.sql(to_spark_sql(purchases_sql, names))
    else:
        purchases = spark.createDataFrame(
            [],
            "customer_id STRING, product_id STRING, ts TIMESTAMP_NTZ, order_id STRING, quantity DOUBLE, amount DOUBLE",
        )
    purchases = purchases.withColumn("_chunk", chunk_of)  # the same hash: no join back to the customers
    progress(f"score: {int(known):,} of {n:,} customers have history before as_of; {n_chunks} chunk(s)", 0.1)
    return {
        "customers": customers,
        "features": features,
        "cached": cached,
        "wide": wide,
        "purchases": purchases,
        "inputs": input_columns,
        "n": n,
        "known": int(known),
        "chunks": n_chunks,
    }


def _spark_accounting(spark: SparkSession, result: DataFrame, customers: DataFrame, n: int, order: list[str]) -> Ledger:
    """Every chunked step's counts from Spark aggregations over the whole output (fails when they do not add up)."""
    result.createOrReplaceTempView("omnicrm_score_rows")
    customers.select("customer_id").createOrReplaceTempView("omnicrm_score_customers")
    s, r, e, x = schema.SCORES, schema.RECOMMENDATIONS, schema.EFFECTS, schema.EXCLUDED
    marks = f"""
        SELECT DISTINCT concat('scores:', {_col(s, "task")}) AS step, {_col(s, "customer_id")} AS customer_id,
               1 AS s, 0 AS e FROM omnicrm_score_rows WHERE _table = '{s}'
        UNION ALL
        SELECT DISTINCT 'recommendations', {_col(r, "customer_id")}, 1, 0 FROM omnicrm_score_rows WHERE _table = '{r}'
        UNION ALL
        SELECT DISTINCT concat('effects:', regexp_replace({_col(e, "model")}, '^omnicrm-', '')),
               {_col(e, "customer_id")}, 1, 0 FROM omnicrm_score_rows WHERE _table = '{e}'
        UNION ALL
        SELECT {_col(x, "step")}, {_col(x, "customer_id")}, 0, 1 FROM omnicrm_score_rows WHERE _table = '{x}'"""
    counts = spark.sql(
        f"""WITH per AS (SELECT step, customer_id, max(s) AS s, sum(e) AS e FROM ({marks}) GROUP BY step, customer_id)
        SELECT p.step, count(*) AS touched, sum(p.s) AS scored, sum(p.e) AS excluded,
               sum(CASE WHEN p.s = 1 AND p.e > 0 THEN 1 ELSE 0 END) AS both,
               sum(CASE WHEN p.e > 1 THEN 1 ELSE 0 END) AS twice,
               sum(CASE WHEN c.customer_id IS NULL THEN 1 ELSE 0 END) AS unknown
        FROM per p LEFT JOIN omnicrm_score_customers c ON p.customer_id = c.customer_id GROUP BY p.step"""
    ).collect()
    reasons = spark.sql(
        f"SELECT {_col(x, 'step')} AS step, {_col(x, 'reason')} AS reason, count(*) AS n "
        f"FROM omnicrm_score_rows WHERE _table = '{x}' GROUP BY 1, 2"
    ).collect()
    by_reason: dict[str, dict[str, int]] = {}
    for row in reasons:
        by_reason.setdefault(row["step"], {})[row["reason"]] = int(row["n"])
    found = {row["step"]: row for row in counts}
    ledger = Ledger()
    for step in order:
        row = found.get(step)
        if row is None:
            raise AccountingError(f"step {step}: no customer scored or excluded in the Spark output")
        ledger.steps[step] = counted_step(
            step,
            n,
            touched=int(row["touched"]),
            scored=int(row["scored"]),
            excluded=int(row["excluded"]),
            both=int(row["both"]),
            twice=int(row["twice"]),
            unknown=int(row["unknown"]),
            reasons=by_reason.get(step, {}),
        )
    extra = sorted(set(found) - set(order))
    if extra:
        raise AccountingError(f"steps in the Spark output that no chunk accounted for: {extra}")
    spark.catalog.dropTempView("omnicrm_score_rows")
    spark.catalog.dropTempView("omnicrm_score_customers")
    return ledger


def _merge_meta(metas: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, StepTime], dict, dict[str, StepCount]]:
    """The chunks' rows in per table, step times (seconds summed, peak the largest), outside counts, ledgers."""
    rows_in: Counter = Counter()
    steps: dict[str, StepTime] = {}
    outside: dict[tuple[str, str], list[int]] = {}
    ledger: dict[str, StepCount] = {}
    for meta in metas:
        rows_in.update(meta["rows_in"])
        for name, t in meta["steps"].items():
            rec = steps.setdefault(name, StepTime())
            rec.seconds += t["seconds"]
            rec.peak_memory_bytes = max(rec.peak_memory_bytes, t["peak_memory_bytes"])
            rec.rows += t["rows"]
        for m, f, n_out, n_all in meta["outside"]:
            acc = outside.setdefault((m, f), [0, 0])
            acc[0] += n_out
            acc[1] += n_all
        for step, c in meta["ledger"].items():
            count = ledger.setdefault(step, StepCount())
            count.customers_in += c["customers_in"]
            count.scored += c["scored"]
            count.excluded += c["excluded"]
            count.reasons.update(c["excluded_by_reason"])
    return dict(rows_in), steps, outside, ledger


def _write_table(frame: DataFrame, table: str, path: Path) -> None:
    """One chunked table as a Parquet dataset (each chunk's rows together, in the chunk's order)."""
    from pyspark.sql import functions as F  # noqa: N812

    cols = [F.col(_col(table, c)).alias(c) for c in TABLE_COLUMNS[table]]
    frame.filter(F.col("_table") == table).select(cols).write.parquet(str(path))


def _write_frame(spark: SparkSession, frame: pd.DataFrame, path: Path) -> None:
    """A frame the driver made (the next-best-action list) as a Parquet dataset like the others."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import from_arrow_schema

    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    _from_pandas(spark, frame, from_arrow_schema(arrow.schema)).coalesce(1).write.parquet(str(path))


def _excluded_frame(spark: SparkSession, frame: pd.DataFrame) -> DataFrame:
    """Driver-made ``excluded`` rows in the chunks' union layout (after every chunk)."""
    x = schema.EXCLUDED
    out = pd.DataFrame({_col(x, c): frame[c].astype(object).to_numpy() for c in TABLE_COLUMNS[x]})
    out.insert(0, "_table", x)
    out.insert(1, "_chunk", _NBA_CHUNK)
    out.insert(2, "_row", np.arange(len(out), dtype="int64"))
    ddl = "`_table` STRING, `_chunk` BIGINT, `_row` BIGINT, " + ", ".join(
        f"`{_col(x, c)}` STRING" for c in TABLE_COLUMNS[x]
    )
    return _from_pandas(spark, out, ddl)


def _nba_spark(
    con,  # noqa: ANN001
    setup: ScoreSetup,
    as_of: datetime,
    models: list[Model],
    fingerprint: str,
    pop: pd.DataFrame,
    progress: Progress,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, StepCount, dict[str, Any]]:
    """The next-best-action list on the driver (a decision over the whole base), its drops, its excluded rows."""
    from omnicrm.nba.catalogue import load_catalogue
    from omnicrm.pipeline.nba import nba_list

    assert setup.catalogue is not None
    cat = load_catalogue(setup.catalogue)
    given = {(m.name, m.ref): (m.version, m.obj) for m in models if m.kind in ("task", "effects", "recommender")}
    refs = {m.ref for m in models if m.kind == "effects"}
    ref = refs.pop() if len(refs) == 1 else "champion"  # as the DuckDB engine (pipeline.score._nba)
    made = nba_list(
        cat, setup.catalogue, con, pop, as_of, fingerprint=fingerprint, model=ref, given=given, progress=progress
    )
    loaded = {m.name: m.version for m in models}
    moved = {k: v for k, v in made.models.items() if k in loaded and loaded[k] != v}
    if moved:
        raise RuntimeError(
            f"nba: the registry moved while the run scored: the next-best actions used {moved}, the scores "
            f"{ {k: loaded[k] for k in moved} }; run again"
        )
    everyone = con.execute(
        "SELECT customer_id, first_seen < ? AS known FROM customers ORDER BY customer_id", [as_of]
    ).df()
    ids = everyone["customer_id"].to_numpy(dtype=object)
    sent = made.nba["customer_id"].astype(object).unique()
    reasons = nba_excluded(made.excluded, sent)
    unknown = ids[~everyone["known"].to_numpy(dtype=bool)]
    excl = pd.concat(
        [
            excluded_rows(reasons["customer_id"], "nba", reasons["reason"]),
            excluded_rows(unknown, "nba", NOT_YET_A_CUSTOMER),
        ],
        ignore_index=True,
    ).sort_values("customer_id", kind="stable")
    ledger = Ledger()
    ledger.add("nba", ids, sent, excl)
    info = {
        "rows": len(made.nba),
        "customers_sent": len(sent),
        "models": made.models,
        "method": made.method,
        "summary": made.summary,
    }
    return made.nba, made.excluded, excl, ledger.steps["nba"], info


def _profiles(
    features: pd.DataFrame, staging: Path, bins: int, previous: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, float], dict[str, float]]:
    """As :func:`omnicrm.pipeline.score._profiles_and_psi`, from the driver's feature frame and the datasets."""
    import pyarrow.dataset as ds

    prof: dict[str, Any] = {"features": {}, "scores": {}}
    f_psi: dict[str, float] = {}
    s_psi: dict[str, float] = {}
    for c in [c for c in features.columns if c not in ("customer_id", "cutoff")]:
        prof["features"][c] = dr.profile(features[c], bins)
        old = (previous or {}).get("features", {}).get(c)
        if old is not None and (v := dr.psi_against(old, features[c])) is not None:
            f_psi[c] = v
    for table, key_cols, prefix, value in (
        (schema.SCORES, ["task", "target", "output"], "", "score"),
        (schema.EFFECTS, ["model", "action"], "effect:", "effect"),
    ):
        path = staging / f"{table}.parquet"
        if not path.exists():
            continue
        frame = ds.dataset(str(path), format="parquet").to_table(columns=[*key_cols, value]).to_pandas()
        key = prefix + frame[key_cols].astype(str).agg(":".join, axis=1)
        for k in sorted(key.unique()):
            values = frame.loc[key == k, value].reset_index(drop=True)
            prof["scores"][k] = dr.profile(values, bins)
            old = (previous or {}).get("scores", {}).get(k)
            if old is not None and (v := dr.psi_against(old, values)) is not None:
                s_psi[k] = v
    return prof, f_psi, s_psi


def run_score_spark(
    setup: ScoreSetup,
    as_of: datetime,
    *,
    replace: bool,
    fail_on_drift: bool,
    progress: Progress,
) -> Any:  # noqa: ANN401 - omnicrm.pipeline.score.ScoreResult
    """The scoring run of :func:`omnicrm.pipeline.score.run_score` with ``engine: spark`` (module docstring)."""
    from omnicrm.features.snapshot import feature_dtypes
    from omnicrm.features.spark import FEATURE_TABLES
    from omnicrm.pipeline.score import (
        NBA_DROPPED,
        ScoredRun,
        _check,
        _check_fingerprints,
        _load_models,
        previous_run,
        publish_run,
    )
    from omnicrm.store import open_store
    from omnicrm.tasks.frames import store_fingerprint

    cfg = setup.config
    scfg = cfg.spark or Spark()
    _require_pyspark(setup.path)
    output = _check(setup, as_of)
    run_id = runs.new_run_id()
    clock = StepClock()
    with runs.RunLock(output, as_of, run_id):
        runs.sweep_orphans(output)
        previous = previous_run(output, as_of, replace)
        with clock.step("models"):
            models = _load_models(setup, progress)
        with clock.step("spark session"):
            progress(f"score: Spark session on {scfg.master}", 0.04)
            spark, owned = _session(scfg, setup.path)
        staging = runs.new_staging(output)
        tag = uuid.uuid4().hex[:12]
        previous_tz = spark.conf.get("spark.sql.session.timeZone")
        spark.conf.set("spark.sql.session.timeZone", "UTC")  # naive UTC times, as build_features_spark
        try:
            con = open_store(cfg.store, deterministic=True)
            try:
                fingerprint = store_fingerprint(con)
                _check_fingerprints(models, fingerprint, cfg.store)
                names = _input_tables(spark, con, scfg, tag, setup.path)
                plan = _prepared(spark, con, setup, as_of, names, clock, progress)
                with clock.step("score chunks"):
                    progress(f"score: {plan['chunks']} chunk(s) on Spark ({scfg.master})", 0.15)
                    wide, purchases = plan["wide"], plan["purchases"]
                    scored = (
                        wide.groupBy("_chunk")
                        .cogroup(purchases.groupBy("_chunk"))
                        .applyInPandas(_chunk_function(setup, as_of, models, plan["inputs"]), union_schema())
                    )
                    # the chunks' rows are written once, as Parquet in the staging folder, and everything after
                    # reads them there: the models run exactly once per chunk (a cache could be evicted, and its
                    # rebuild would score again)
                    scored.write.partitionBy("_table").parquet(str(staging / _ROWS))
                    result = spark.read.parquet(str(staging / _ROWS))
                    metas = [
                        json.loads(r["_meta"]) for r in result.filter("_table = '_meta'").select("_meta").collect()
                    ]
                rows_in, executor_steps, outside, chunk_ledger = _merge_meta(metas)
                for name, t in executor_steps.items():  # the executors' time per step (summed over chunks)
                    clock.steps[name] = t
                if sum(m["customers"] for m in metas) != plan["n"]:
                    raise AccountingError(
                        f"the chunks held {sum(m['customers'] for m in metas)} customers, the store {plan['n']}"
                    )
                with clock.step("accounting"):
                    order = list(metas[0]["ledger"]) if metas else []
                    ledger = _spark_accounting(spark, result, plan["customers"], plan["n"], order)
                    rows_out = {r["_table"]: int(r["count"]) for r in result.groupBy("_table").count().collect()}
                    for step, c in ledger.steps.items():  # the chunks' own checks must agree with Spark's
                        if c.as_dict() != chunk_ledger[step].as_dict():
                            raise AccountingError(
                                f"step {step}: Spark counts {c.as_dict()}, the chunks {chunk_ledger[step].as_dict()}"
                            )
                nba_info = nba_excl = None
                with clock.step("collect features"):
                    # the driver holds the snapshot: the list's allocation and the drift profiles need it whole
                    pop = _to_pandas(plan["features"].orderBy("customer_id")).astype(feature_dtypes(setup.features))
                if setup.catalogue is not None:
                    with clock.step("nba") as st:
                        progress("score: next-best actions (driver)", 0.75)
                        nba, dropped, nba_excl, nba_count, nba_info = _nba_spark(
                            con, setup, as_of, models, fingerprint, pop, progress
                        )
                        ledger.steps["nba"] = nba_count
                        st.rows = nba_info["rows"]
                with clock.step("write") as st:
                    progress("score: writing the Parquet datasets", 0.8)
                    tables: dict[str, dict[str, int]] = {}
                    for table in (schema.SCORES, schema.RECOMMENDATIONS, schema.EFFECTS):
                        if table in rows_in:  # as the DuckDB engine: a table exists once a step wrote to it
                            _write_table(result, table, staging / f"{table}.parquet")
                            tables[table] = {"rows_in": rows_in[table], "rows_out": rows_out.get(table, 0)}
                    excluded = result
                    n_in = rows_in.get(schema.EXCLUDED, 0)
                    n_out = rows_out.get(schema.EXCLUDED, 0)
                    if nba_excl is not None:
                        part = _excluded_frame(spark, nba_excl)
                        excluded = result.filter("_table = 'excluded'").unionByName(part, allowMissingColumns=True)
                        n_in, n_out = n_in + len(nba_excl), n_out + len(nba_excl)
                    _write_table(excluded, schema.EXCLUDED, staging / f"{schema.EXCLUDED}.parquet")
                    tables[schema.EXCLUDED] = {"rows_in": n_in, "rows_out": n_out}
                    if nba_info is not None:
                        _write_frame(spark, dropped, staging / NBA_DROPPED)
                        _write_frame(spark, nba, staging / f"{schema.NBA}.parquet")
                        tables[schema.NBA] = {"rows_in": ledger.steps["nba"].customers_in, "rows_out": nba_info["rows"]}
                    st.rows = sum(t["rows_out"] for t in tables.values())
                ledger.check_totals(plan["n"])
                with clock.step("drift"):
                    progress("score: drift against the previous run", 0.85)
                    profile, f_psi, s_psi = _profiles(pop, staging, cfg.drift.bins, previous.profile)
                spark_info = {
                    "master": scfg.master,
                    "app_id": spark.sparkContext.applicationId,
                    "input": scfg.input or f"the store {cfg.store}, copied through the driver",
                    "executors": _executors(spark),
                }
                shutil.rmtree(staging / _ROWS)
                for frame in plan["cached"]:
                    frame.unpersist()
            finally:
                con.close()
                with contextlib.suppress(Exception):  # the views of this run only; the session may be shared
                    for table in FEATURE_TABLES:  # also those made before a failure (dropping none is no error)
                        spark.catalog.dropTempView(f"omnicrm_{tag}_{table}")
                spark.conf.set("spark.sql.session.timeZone", previous_tz)
                if owned:
                    spark.stop()
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
                    customers=plan["n"],
                    known=plan["known"],
                    ledger=ledger,
                    outside=outside,
                    nba_info=nba_info,
                    profile=profile,
                    feature_psi=f_psi,
                    score_psi=s_psi,
                    chunks=plan["chunks"],
                    engine={"engine": "spark", "spark": spark_info},
                ),
                fail_on_drift=fail_on_drift,
                open_up=_open_up,
                progress=progress,
            )
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                staging.parent.rmdir()
    return result


def _open_up(staging: Path) -> None:
    """A published run is read by others: the staging folder (made private) and what Spark wrote, by the umask."""
    from omnicrm.pipeline.score import _umask

    staging.chmod(0o777 & ~_umask())
    for path in staging.rglob("*"):
        if path.is_dir():
            path.chmod(0o777 & ~_umask())
        elif path.name.startswith(".") and path.name.endswith(".crc"):
            path.unlink()  # Hadoop's checksum files: noise beside the Parquet files


def _executors(spark: SparkSession) -> int:
    """Executors the application has now (the driver excluded; local mode: the driver runs the tasks, 0)."""
    sc = spark.sparkContext
    return max(int(sc._jsc.sc().getExecutorMemoryStatus().size()) - 1, 0)  # noqa: SLF001 - no public API for it
