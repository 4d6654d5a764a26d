"""Point-in-time feature snapshots: one row per (customer_id, cutoff), computed in DuckDB SQL.

The point-in-time law: the snapshot at cutoff ``T`` reads only store rows with ``ts < T``
(strict), and has one row for each customer with ``first_seen < T``. Every table read by the
generated SQL carries that predicate; ``tests/properties/test_feature_leakage.py`` checks that
appending any rows at or after ``T`` leaves the snapshot unchanged.

Many cutoffs are computed one query per cutoff. That was measured against one
query over a cutoffs table (measured on 10M events / 500k customers: 4.5× vs 7.5× the time of one snapshot for six
cutoffs, and 2.9 GB) and again in ``benchmarks/features.py``: per-cutoff queries keep each aggregate's hash
tables one snapshot large, and each query prunes the events table on its own window bounds. Each
cutoff's query is also exactly the single-snapshot query, so a frame of many cutoffs has the same
bits as the snapshots built one by one (spend sums are floating-point and depend on the order in
which a plan adds them). Sharing the event scans between cutoffs was measured again for issue 16
(``benchmarks/README.md``, "Six cutoffs sharing work"): slower on the perf reference, and not
bit-identical, because DuckDB's hash aggregate splits a group's rows into partial sums at points
that depend on the plan, not only on the order of the rows; ``tests/unit/test_features.py``
checks that every cutoff of a call keeps its single snapshot's bits. :func:`write_features` and
:func:`feature_batches` stream the cutoffs one after the other as Arrow batches, so their memory
is that of one snapshot however many cutoffs there are; :func:`build_features` returns the whole
frame, so its memory grows with the rows. On a connection that runs one DuckDB thread (how model
code reads the store, for bits that do not change run to run) the cutoffs of a call run in
parallel instead, one per core, each query still on one thread (:func:`_parallel_cutoffs`): six
cutoffs then take about half the time of six single snapshots, and memory is that of a snapshot
per core.

On that single-threaded connection, a store whose events are stored in customer order (as
``omnicrm ingest`` writes them and records in ``store_meta``, :func:`_by_customer`) computes a
snapshot of more than :data:`CUSTOMERS_PER_QUERY` customers a range of customers at a time
(:func:`customer_ranges`), the ranges of every cutoff in parallel: a range's query reads only its
customers' row groups and holds only their hash tables and sort, so one snapshot no longer needs
memory in proportion to the whole base, and a deterministic read uses every core. The ranges are
fixed by the data before the cutoff (not by the machine), so their bits are the same on every run
and machine; they may differ from the whole-base query's in the last bits of a sum. RFM scores rank
customers against the whole snapshot: the ranges carry their inputs and are scored together
(:func:`_combine`). Measured in ``benchmarks/README.md``, "Customer ranges".

``FeatureConfig.columns`` keeps only some columns; :func:`_read_by` then drops the sources and
aggregates no kept column reads, so the query does only their work.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from omnicrm.features import definitions, lifecycle
from omnicrm.features.config import FeatureConfig
from omnicrm.features.cutoffs import normalize_cutoff
from omnicrm.features.sources import ORDER_LINES, PURCHASE, SOURCES, Source, base_cte
from omnicrm.features.sql import PANDAS_DTYPES, Agg, Column, Cutoff
from omnicrm.interrupts import worker_pool
from omnicrm.schema import CUSTOMERS, EVENTS, EVENTS_ORDER_KEY, STORE_META, SURVEYS, TREATMENTS
from omnicrm.sql import ident, literal
from omnicrm.store.staging import staged

R = TypeVar("R")

#: Group name -> builder, in no particular order (output order is ``FEATURE_GROUPS``).
GROUP_BUILDERS = {**definitions.GROUPS, **lifecycle.GROUPS}
_SOURCES: dict[str, Source] = {**SOURCES, lifecycle.RFM_SOURCE.name: lifecycle.RFM_SOURCE}
#: CTE order: every source after the sources it depends on.
_SOURCE_ORDER = ("orders", "pa", "gs", "ca", "ea", "sv", "tr", "rs")
KEY_COLUMNS = ("customer_id", "cutoff")


def _plan(cutoff: Cutoff, config: FeatureConfig) -> tuple[dict[str, dict[str, Agg]], list[Column]]:
    """Collect the sources, aggregates and output columns of the enabled groups."""
    needs: dict[str, dict[str, Agg]] = {}
    columns: list[Column] = []
    for name in config.enabled():
        group = GROUP_BUILDERS[name](cutoff, config)
        for source, aggs in group.needs.items():
            have = needs.setdefault(source, {})
            for agg in aggs:
                if have.setdefault(agg.alias, agg) != agg:
                    raise AssertionError(  # a programming error in the definitions, not user input
                        f"two groups define aggregate {source}.{agg.alias} differently"
                    )
        columns.extend(group.columns)
    names = [c.name for c in columns]
    if len(set(names)) != len(names) or set(names) & set(KEY_COLUMNS):
        raise AssertionError(f"duplicate feature column names: {names}")
    if config.columns is not None:
        keep = set(config.columns)
        columns = [c for c in columns if c.name in keep]
        needs = _read_by(needs, columns, cutoff, config)
    # dependencies (e.g. rs -> pa -> orders) are added after the groups' own requests
    for source in reversed(_SOURCE_ORDER):
        if source in needs:
            for dep in _SOURCES[source].depends:
                needs.setdefault(dep, {})
    return needs, columns


def _read_by(
    needs: dict[str, dict[str, Agg]], columns: list[Column], cutoff: Cutoff, config: FeatureConfig
) -> dict[str, dict[str, Agg]]:
    """The sources and aggregates that ``columns`` read, directly or through a source that reads them.

    A joined source is kept when a column names it (``pa.``), with the aggregates the columns name
    (``pa.orders_30d``); a source that another kept source reads keeps what the reader's SQL names
    (``rs`` ranks ``pa.last_ts``…), and ``orders`` keeps the line aggregates its readers' expressions
    use (``channel``). The event scan's filter is built from the kept aggregates, so an event type
    nothing reads is not scanned. DuckDB would drop unread aggregates by itself, but not a scan's
    ``WHERE`` nor (on Spark) an unread join.
    """
    text = "\n".join(c.expr for c in columns)
    kept: dict[str, dict[str, Agg]] = {}
    for source, aggs in needs.items():
        if _SOURCES[source].joined and re.search(rf"\b{source}\.", text):
            kept[source] = {a: agg for a, agg in aggs.items() if re.search(rf"\b{source}\.{a}\b", text)}
    for source in reversed(_SOURCE_ORDER):
        if source not in kept:
            continue
        body = "\n".join(sql for _, sql in _SOURCES[source].build(cutoff, config, list(kept[source].values())))
        for dep in _SOURCES[source].depends:
            if _SOURCES[dep].joined:
                wanted = {a: agg for a, agg in needs.get(dep, {}).items() if re.search(rf"\b{dep}\.{a}\b", body)}
                kept[dep] = {**kept.get(dep, {}), **wanted}
    readers = "\n".join(agg.expr for source in ("pa", "gs") for agg in kept.get(source, {}).values())
    if "pa" in kept or "gs" in kept:
        kept["orders"] = {a: agg for a, agg in needs.get("orders", {}).items() if re.search(rf"\b{a}\b", readers)}
    return kept


def feature_sql(cutoff: datetime | date, config: FeatureConfig, *, order_ids: bool = True) -> str:
    """The SQL of one snapshot at ``cutoff``, for inspection or to run on another engine.

    Parameters
    ----------
    cutoff
        The cutoff ``T``: a ``datetime`` (naive = UTC) or a ``date`` (midnight UTC).
    config
        Which feature groups to compute and how.
    order_ids
        ``False`` only for a store whose events carry no ``order_id`` at all
        (:func:`has_order_ids`): purchase lines are then used as orders without grouping them. The
        result is the same either way; the default SQL is right for every store.

    Returns
    -------
    str
        One ``SELECT`` (DuckDB dialect, portable subset: ``sqlglot`` transpiles it to Spark SQL)
        returning ``customer_id``, ``cutoff`` and the feature columns, ordered by ``customer_id``.
    """
    return _query_sql(Cutoff(normalize_cutoff(cutoff)), config, order_ids)


def _query_sql(at: Cutoff, config: FeatureConfig, order_ids: bool, customers: CustomerRange | None = None) -> str:
    """:func:`feature_sql`, or with ``customers`` the snapshot's rows of those customers only.

    A range's query reads the store's tables through ``NOT MATERIALIZED`` CTEs of the same names
    restricted to the range (DuckDB pushes the filter into the scans: on a store sorted by
    customer, as ``omnicrm ingest`` writes it, a range reads only its own row groups). RFM scores
    rank a customer against every customer of the snapshot, so a range's query leaves them out and
    returns their inputs instead (:data:`_RFM_INPUTS`); :func:`_combine` scores the ranges together.
    """
    needs, columns = _plan(at, config)
    extra: list[str] = []
    if customers is not None and "rs" in needs:
        del needs["rs"]
        columns = [c for c in columns if not re.search(r"\brs\.", c.expr)]
        r, f, m = lifecycle.rfm_inputs(config)
        extra = [f"pa.customer_id IS NOT NULL AS {_RFM_INPUTS[0]}"] + [
            f"{v} AS {name}" for v, name in zip((r, f, m), _RFM_INPUTS[1:], strict=True)
        ]
    ctes = [base_cte(at)]
    joins = []
    for name in _SOURCE_ORDER:
        if name not in needs:
            continue
        source = ORDER_LINES if name == "orders" and not order_ids else _SOURCES[name]
        ctes.extend(source.build(at, config, list(needs[name].values())))
        if source.joined:
            joins.append(f"LEFT JOIN {name} ON {name}.customer_id = base.customer_id")
    scoped = []
    if customers is not None:  # each store table the query reads, through a CTE restricted to the range
        where, tables = _range_condition(customers), (CUSTOMERS, EVENTS, SURVEYS, TREATMENTS)
        read = [t for t in tables if any(re.search(rf"\bFROM {t}\b", body) for _, body in ctes)]
        scoped = [f"_range_{t} AS NOT MATERIALIZED (\n  SELECT * FROM {t} WHERE {where}\n)" for t in read]
        reads = re.compile(rf"\bFROM ({'|'.join(read)})\b")
        ctes = [(cte, reads.sub(r"FROM _range_\1", body)) for cte, body in ctes]
    with_sql = ",\n".join([*scoped, *(f"{cte} AS (\n  {body}\n)" for cte, body in ctes)])
    select = ",\n  ".join(["base.customer_id", f"{at.lit} AS cutoff", *(c.select_sql() for c in columns), *extra])
    return (
        f"WITH {with_sql}\n"
        f"SELECT\n  {select}\n"
        "FROM base\n" + "".join(j + "\n" for j in joins) + "ORDER BY base.customer_id"
    )


#: A range of customer ids ``[lo, hi)``; ``None`` leaves that end open.
CustomerRange = tuple[Any, Any]

#: What a range's query returns for the RFM scores: whether the customer is scored (a purchaser),
#: and the R, F and M values (:func:`omnicrm.features.lifecycle.rfm_inputs`).
_RFM_INPUTS = ("_rfm_scored", "_rfm_r", "_rfm_f", "_rfm_m")

#: Customers per query on a single-threaded connection (:func:`customer_ranges`). A fixed number,
#: not a range per core: where the ranges fall decides where DuckDB's hash aggregate cuts a
#: customer's floating-point sums, so ranges that depended on the machine would change the bits
#: from one machine to another. Stores of up to this many customers run one query per cutoff, as
#: before ranges existed.
CUSTOMERS_PER_QUERY = 131_072


def _id_literal(value: Any) -> str:
    return literal(value) if isinstance(value, str) else str(int(value))


def _range_condition(customers: CustomerRange) -> str:
    lo, hi = customers
    parts = ([] if lo is None else [f"customer_id >= {_id_literal(lo)}"]) + (
        [] if hi is None else [f"customer_id < {_id_literal(hi)}"]
    )
    return " AND ".join(parts) or "TRUE"


def customer_ranges(con: duckdb.DuckDBPyConnection, cutoff: datetime | date) -> list[CustomerRange | None]:
    """The customer ranges of a snapshot at ``cutoff`` on a single-threaded connection.

    Consecutive ranges of :data:`CUSTOMERS_PER_QUERY` of the customers known before ``cutoff``, in
    ``customer_id`` order: like the snapshot, they depend only on rows before the cutoff.

    Returns
    -------
    list
        ``[None]`` (one query, no range) when the customers fit one query; else ``(lo, hi)`` pairs,
        the first open below and the last open above, so that every customer falls in one.
    """
    at = Cutoff(normalize_cutoff(cutoff))
    starts = [
        r[0]
        for r in con.execute(
            "SELECT customer_id FROM (SELECT customer_id, row_number() OVER (ORDER BY customer_id) - 1 AS i"
            f" FROM {CUSTOMERS} WHERE first_seen < {at.lit} AND customer_id IS NOT NULL)"
            f" WHERE i % {int(CUSTOMERS_PER_QUERY)} = 0"
            " ORDER BY customer_id"
        ).fetchall()
    ]
    if len(starts) <= 1:
        return [None]
    null_id = con.execute(
        f"SELECT 1 FROM {CUSTOMERS} WHERE customer_id IS NULL AND first_seen < {at.lit} LIMIT 1"
    ).fetchall()
    if null_id:  # a NULL id falls in no range (the store contract has none; the whole query keeps it)
        return [None]
    return [(None if i == 0 else lo, starts[i + 1] if i + 1 < len(starts) else None) for i, lo in enumerate(starts)]


def query_ranges(con: duckdb.DuckDBPyConnection, cutoff: datetime | date) -> list[CustomerRange | None]:
    """The customer ranges a build on ``con`` computes the snapshot at ``cutoff`` in (``[None]``: one query).

    Ranges on a single-threaded connection to a store in customer order only. A cache of snapshots
    keys on them: the ranges may change the last bits of a sum.
    """
    return customer_ranges(con, cutoff) if _single_threaded(con) and _by_customer(con) else [None]


def _combine(con: duckdb.DuckDBPyConnection, at: Cutoff, config: FeatureConfig, parts: list[pa.Table]) -> pa.Table:
    """One snapshot from its ranges' results (in range order, so in ``customer_id`` order)."""
    table = pa.concat_tables(parts)
    if _RFM_INPUTS[0] not in table.column_names:
        return table
    # the RFM scores, ranking every customer of the snapshot as the whole snapshot's query does;
    # computed apart (a few columns) and put in their places, so the ranges' columns are not copied
    _, columns = _plan(at, config)
    scores = [c for c in columns if re.search(r"\brs\.", c.expr)]
    scored, r, f, m = _RFM_INPUTS
    name = f"omnicrm_ranges_{threading.get_ident()}"
    con.register(name, table)
    try:
        rfm = con.sql(
            f"WITH rs AS (SELECT customer_id, {lifecycle.rfm_scores(config, r, f, m)}\n"
            f"  FROM {name} WHERE {scored})\n"
            f"SELECT {', '.join(c.select_sql() for c in scores)}\n"
            f"FROM {name} t LEFT JOIN rs ON rs.customer_id = t.customer_id ORDER BY t.customer_id"
        ).to_arrow_table()
    finally:
        con.unregister(name)
    names = ["customer_id", "cutoff", *(c.name for c in columns)]
    return pa.table([rfm[n] if n in rfm.column_names else table[n] for n in names], names=names)


def feature_dtypes(config: FeatureConfig) -> dict[str, str]:
    """Output columns of a snapshot and their pandas dtypes, in frame order (no data needed)."""
    _, columns = _plan(Cutoff(datetime(2000, 1, 1)), config)
    return {
        "customer_id": "str",
        "cutoff": "datetime64[us]",
        **{c.name: PANDAS_DTYPES[c.kind] for c in columns},
    }


def build_features(
    con: duckdb.DuckDBPyConnection,
    cutoffs: Sequence[datetime | date],
    config: FeatureConfig,
) -> pd.DataFrame:
    """Feature snapshots of every customer known before each cutoff.

    Parameters
    ----------
    con
        Connection to a unified store (tables ``customers``, ``events``, ``surveys``,
        ``treatments`` as in :mod:`omnicrm.schema`).
    cutoffs
        One or more cutoffs ``T`` (``datetime``, naive = UTC, or ``date`` = midnight UTC).
        Required: there is no default taken from the data. Duplicates are computed once.
    config
        Which feature groups to compute and how (:class:`FeatureConfig`).

    Returns
    -------
    pandas.DataFrame
        One row per ``(customer_id, cutoff)`` with ``first_seen < cutoff``; columns
        ``customer_id``, ``cutoff`` (``datetime64[us]``, UTC) then the features in the order of
        :func:`feature_dtypes`; rows ordered by ``(cutoff, customer_id)``. A snapshot at ``T``
        reads only rows with ``ts < T``.

    Notes
    -----
    On a connection running one DuckDB thread, several cutoffs run in parallel on cursors of
    ``con`` (:func:`_parallel_cutoffs`), which see committed rows only.
    """
    points = cutoff_points(cutoffs, config)
    frames = _per_cutoff(con, points, config, lambda rel: rel.df(), lambda table: table.to_pandas())
    return snapshot_frame(list(frames), config)


def _snapshot_sql(con: duckdb.DuckDBPyConnection, cutoff: datetime, config: FeatureConfig) -> str:
    return feature_sql(cutoff, config, order_ids=has_order_ids(con, cutoff))


def has_order_ids(con: duckdb.DuckDBPyConnection, cutoff: datetime | date) -> bool:
    """Whether a purchase line before ``cutoff`` has an ``order_id`` (a scan that stops at the first).

    Only rows before the cutoff are read, like everything else of a snapshot: rows appended later
    never change which form of the SQL a snapshot runs.

    Parameters
    ----------
    con
        Connection to a unified store.
    cutoff
        The snapshot's cutoff ``T``.

    Returns
    -------
    bool
        ``False`` when none has: every purchase line before ``T`` is then an order of its own, and
        :func:`feature_sql` can skip grouping lines into orders (``order_ids=False``).
    """
    at = Cutoff(normalize_cutoff(cutoff))
    rows = con.execute(
        f"SELECT 1 FROM {EVENTS} WHERE event_type = {literal(PURCHASE)} AND order_id IS NOT NULL"
        f" AND ts < {at.lit} LIMIT 1"
    ).fetchall()
    return bool(rows)


def feature_schema(config: FeatureConfig) -> pa.Schema:
    """The Arrow schema of a snapshot: the columns and types of :func:`feature_dtypes`.

    Parameters
    ----------
    config
        Which feature groups to compute and how.

    Returns
    -------
    pyarrow.Schema
    """
    types = {"str": pa.string(), "datetime64[us]": pa.timestamp("us"), "int64": pa.int64(), "float64": pa.float64()}
    return pa.schema([(name, types[dtype]) for name, dtype in feature_dtypes(config).items()])


def feature_batches(
    con: duckdb.DuckDBPyConnection,
    cutoffs: Sequence[datetime | date],
    config: FeatureConfig,
    batch_rows: int = 65_536,
) -> Iterator[pa.RecordBatch]:
    """The snapshots of :func:`build_features` as Arrow record batches, one cutoff after the other.

    Nothing is held between cutoffs and no pandas frame is made, so memory stays that of one
    snapshot's query however many cutoffs there are; for frames that are only written or passed on.
    On a single-threaded connection with several queries (cutoffs, or customer ranges of a large
    base) they run in parallel and a cutoff's result is held whole before it is passed on.

    Parameters
    ----------
    con, cutoffs, config
        As for :func:`build_features`.
    batch_rows
        Rows per batch at most (a cutoff's rows may come in several batches).

    Yields
    ------
    pyarrow.RecordBatch
        Rows ordered by ``(cutoff, customer_id)``, columns and types of :func:`feature_schema`;
        the same values as :func:`build_features`.
    """
    points = cutoff_points(cutoffs, config)
    schema = feature_schema(config)
    # several queries on one DuckDB thread (cutoffs, customer ranges) run in parallel, a cutoff's
    # result held whole (_per_cutoff); otherwise each cutoff is streamed from its one query
    plan = _plan_queries(con, points) if _single_threaded(con) else None
    several = plan is not None and sum(len(qs) for _, qs in plan) > 1
    tables = _per_cutoff(con, points, config, _arrow_table, lambda t: t, plan) if several else None
    try:
        if tables is not None:
            batches = (b for table in tables for b in table.to_batches(batch_rows))
        else:  # streamed from DuckDB: not even one cutoff's result is held whole
            batches = (b for t in points for b in con.sql(_snapshot_sql(con, t, config)).to_arrow_reader(batch_rows))
        for batch in batches:
            # same names and order; the cast only changes a store's non-text customer ids to text
            yield batch.cast(schema) if batch.schema != schema else batch
    finally:
        if tables is not None:  # now, not when a traceback holding this frame is dropped: stops the workers
            tables.close()


def _arrow_table(rel: duckdb.DuckDBPyRelation) -> pa.Table:
    return rel.to_arrow_table()


def _single_threaded(con: duckdb.DuckDBPyConnection) -> bool:
    return con.execute("SELECT current_setting('threads')").fetchall()[0][0] == 1


def _by_customer(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the store's events are stored in customer order (``store_meta``, written by ``omnicrm ingest``).

    Only then does a query over a range of customers read just that range's row groups; on a store
    in time order every range would scan all the events (measured: six cutoffs in four ranges
    each took 1.8x the time of one query per cutoff).
    """
    try:
        rows = con.execute(f"SELECT value FROM {STORE_META} WHERE key = {literal(EVENTS_ORDER_KEY)}").fetchall()
    except duckdb.CatalogException:  # not a store written by omnicrm
        return False
    return bool(rows) and str(rows[0][0]).split(",")[0].strip() == "customer_id"


def _parallel_cutoffs(con: duckdb.DuckDBPyConnection, n: int) -> int:
    """How many of ``n`` queries to run at once: one per core when the connection runs one DuckDB thread.

    A connection on one thread (``open_store(..., deterministic=True)``, how model code reads the
    store) gives the same bits every run, but leaves the other cores idle. Each query (a cutoff, or
    a range of customers of one) then runs on a cursor of its own, still on one thread, so it keeps
    its bits while the cores work on different queries (``benchmarks/README.md``, "Cutoffs in
    parallel"). A multi-threaded connection already uses the cores within a query.
    Cursors see what is committed: a caller building features inside its own open transaction
    (uncommitted rows) must commit first, or use a connection with more than one thread.
    """
    if n < 2 or not _single_threaded(con):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(n, cores)


@dataclass(frozen=True)
class _Query:
    """One query of a build: a cutoff's snapshot, or the rows of a range of its customers."""

    cutoff: datetime
    customers: CustomerRange | None = None
    order_ids: bool = True


def _plan_queries(con: duckdb.DuckDBPyConnection, points: list[datetime]) -> list[tuple[datetime, list[_Query]]]:
    """The queries of each cutoff: the cutoff's snapshot, or a query per range of its customers."""
    plan = []
    for t in points:
        ranges = query_ranges(con, t)
        order_ids = has_order_ids(con, t) if ranges != [None] else True  # else _snapshot_sql checks
        plan.append((t, [_Query(t, r, order_ids) for r in ranges]))
    return plan


def _per_cutoff(
    con: duckdb.DuckDBPyConnection,
    points: list[datetime],
    config: FeatureConfig,
    fetch: Callable[[duckdb.DuckDBPyRelation], R],
    from_table: Callable[[pa.Table], R],
    plan: list[tuple[datetime, list[_Query]]] | None = None,
) -> Iterator[R]:
    """Each cutoff's snapshot, in cutoff order: ``fetch`` of its query, or ``from_table`` of its ranges'.

    On a single-threaded connection to a store in customer order (:func:`_by_customer`), a
    snapshot of more than :data:`CUSTOMERS_PER_QUERY` customers is computed a range of customers at
    a time (:func:`customer_ranges`): each query holds the hash tables and sort of its range only,
    and the queries of all cutoffs run one per core (:func:`_parallel_cutoffs`). At most as many
    queries as workers run ahead of the one being consumed, so memory is that of a few ranges and
    one cutoff's result, not of all. If the consumer stops (an error, Ctrl-C, a closed generator),
    the running queries are interrupted and waited for before this returns.
    """
    plan = _plan_queries(con, points) if plan is None else plan

    def run(cur: duckdb.DuckDBPyConnection, q: _Query) -> Any:
        if q.customers is None:
            return fetch(cur.sql(_snapshot_sql(cur, q.cutoff, config)))
        return cur.sql(_query_sql(Cutoff(q.cutoff), config, q.order_ids, q.customers)).to_arrow_table()

    results = _run_queries(con, [q for _, qs in plan for q in qs], run)
    try:
        for t, qs in plan:
            parts = [next(results) for _ in qs]
            yield parts[0] if qs[0].customers is None else from_table(_combine(con, Cutoff(t), config, parts))
    finally:
        results.close()


def _run_queries(
    con: duckdb.DuckDBPyConnection,
    queries: list[_Query],
    run: Callable[[duckdb.DuckDBPyConnection, _Query], Any],
) -> Iterator[Any]:
    """``run`` of each query, in order: inline, or on one cursor per worker (:func:`_parallel_cutoffs`)."""
    workers = _parallel_cutoffs(con, len(queries))
    if workers == 1:
        for q in queries:
            yield run(con, q)
        return
    local = threading.local()
    cursors: list[duckdb.DuckDBPyConnection] = []
    lock = threading.Lock()
    # a cursor starts in the default catalog: it must read the tables the connection reads (USE)
    use = "USE {}.{}".format(
        *(ident(v) for v in con.execute("SELECT current_database(), current_schema()").fetchall()[0])
    )

    def one(q: _Query) -> Any:
        cur = getattr(local, "cursor", None)
        if cur is None:  # one cursor per worker thread: a DuckDB connection runs one query at a time
            cur = local.cursor = con.cursor()
            with lock:
                cursors.append(cur)
            cur.execute(use)
        return run(cur, q)

    pool = worker_pool(workers, "omnicrm-features")
    pending: deque[Future[Any]] = deque()
    todo = iter(queries)
    try:
        for q in itertools.islice(todo, workers):
            pending.append(pool.submit(one, q))
        while pending:
            result = pending.popleft().result()
            for q in itertools.islice(todo, 1):
                pending.append(pool.submit(one, q))
            yield result
    finally:
        if pending:  # stopped early: stop the queries still running
            for f in pending:
                f.cancel()
            with lock:
                for cur in cursors:
                    cur.interrupt()
        pool.shutdown(wait=True)
        for cur in cursors:
            cur.close()


def write_features(
    con: duckdb.DuckDBPyConnection,
    cutoffs: Sequence[datetime | date],
    config: FeatureConfig,
    path: str | Path,
) -> int:
    """Write the snapshots of :func:`build_features` to one Parquet file, a cutoff at a time.

    Parameters
    ----------
    con, cutoffs, config
        As for :func:`build_features`.
    path
        The Parquet file to write (replaced when complete; a failed or interrupted call leaves what
        was there). ``pandas.read_parquet`` gives the frame :func:`build_features` returns.

    Returns
    -------
    int
        Rows written.
    """
    rows = 0
    batches = feature_batches(con, cutoffs, config)
    # written beside the file and moved into place when complete: an error or Ctrl-C leaves no
    # half-written file (and the previous one, if any)
    with staged(Path(path)) as tmp, pq.ParquetWriter(str(tmp), feature_schema(config)) as writer:
        try:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
        finally:
            batches.close()
    return rows


def cutoff_points(cutoffs: Sequence[datetime | date], config: FeatureConfig) -> list[datetime]:
    """Checked arguments of a build: the distinct cutoffs, normalised and sorted (every engine)."""
    if not isinstance(config, FeatureConfig):
        raise TypeError(f"config must be a FeatureConfig, got {type(config).__name__}")
    if isinstance(cutoffs, (str, date)):  # date also covers datetime
        raise TypeError("cutoffs must be a sequence of datetimes or dates, e.g. [cutoff]")
    points = sorted({normalize_cutoff(c) for c in cutoffs})
    if not points:
        raise ValueError("cutoffs is empty: give at least one cutoff")
    return points


def snapshot_frame(frames: list[pd.DataFrame], config: FeatureConfig) -> pd.DataFrame:
    """One frame from the per-cutoff results (in cutoff order), with the fixed dtypes."""
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    # fixed dtypes: an all-NULL or empty result must not change a column's dtype
    return frame.astype(feature_dtypes(config))
