"""Point-in-time feature snapshots on Spark: the same generated SQL, run by Spark SQL.

One definition, two engines. :func:`build_features_spark` takes
:func:`~omnicrm.features.snapshot.feature_sql` (DuckDB dialect), transpiles it with ``sqlglot`` to
Spark SQL and runs it on a ``SparkSession``; it returns the same frame as
:func:`~omnicrm.features.build_features` (columns, order, dtypes, values to float rounding).
Spark plans and distributes the query; nothing here splits the data.

Usage::

    from omnicrm.features import FeatureConfig
    from omnicrm.features.spark import build_features_spark, register_store_views

    register_store_views(spark, duckdb_con)   # small stores and tests: copy via Arrow
    frame = build_features_spark(spark, [datetime(2024, 7, 1)], FeatureConfig())

Time semantics: the store holds naive UTC timestamps and the SQL compares them with naive
literals (``TIMESTAMP_NTZ`` in Spark). Spark tables whose time columns are ``TIMESTAMP_NTZ`` (what
:func:`register_store_views` creates) give the same answers in any session time zone. Columns of
Spark's zoned ``TIMESTAMP`` type are compared after converting the literal in the *session* time
zone, which shifts every window (in ``America/New_York`` a purchase made exactly at the cutoff
was counted), so :func:`build_features_spark` runs its queries with
``spark.sql.session.timeZone=UTC`` and restores the previous setting afterwards.

pyspark is imported inside the functions only: the package imports without it (``spark`` extra).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlglot
from sqlglot import ErrorLevel, exp

from omnicrm import schema
from omnicrm.features.config import FeatureConfig
from omnicrm.features.snapshot import cutoff_points, feature_sql, snapshot_frame

if TYPE_CHECKING:  # pragma: no cover
    import duckdb
    from pyspark.sql import DataFrame, SparkSession

#: Store tables the feature SQL reads.
FEATURE_TABLES: tuple[str, ...] = (schema.CUSTOMERS, schema.EVENTS, schema.SURVEYS, schema.TREATMENTS)

#: DuckDB type of a store column (``omnicrm.schema``) -> Spark SQL type. ``TIMESTAMP`` holds naive
#: UTC wall time, which is Spark's ``TIMESTAMP_NTZ`` (not its session-zoned ``TIMESTAMP``).
_SPARK_TYPES: dict[str, str] = {
    "VARCHAR": "STRING",
    "TIMESTAMP": "TIMESTAMP_NTZ",
    "DOUBLE": "DOUBLE",
    "INTEGER": "INT",
    "BIGINT": "BIGINT",
    "BOOLEAN": "BOOLEAN",
}
_TZ_KEY = "spark.sql.session.timeZone"


def spark_type(duckdb_type: str) -> str:
    """The Spark SQL type of a store or output column's DuckDB type (``TIMESTAMP`` -> ``TIMESTAMP_NTZ``)."""
    return _SPARK_TYPES[duckdb_type]


def spark_schema(table: str) -> str:
    """Spark DDL schema of a store table, e.g. ``"`customer_id` STRING, `ts` TIMESTAMP_NTZ, …"``."""
    return ", ".join(f"`{col}` {_SPARK_TYPES[typ]}" for col, typ in schema.TABLES[table].items())


def spark_feature_sql(
    cutoff: datetime | date,
    config: FeatureConfig,
    tables: Mapping[str, str] | None = None,
) -> str:
    """:func:`~omnicrm.features.feature_sql` in the Spark SQL dialect.

    ``tables`` maps a store table name to the Spark table or view to read instead (e.g.
    ``{"events": "crm.events_2024"}``); the replacement keeps the store name as its alias.
    """
    return to_spark_sql(feature_sql(cutoff, config), tables)


def to_spark_sql(sql: str, tables: Mapping[str, str] | None = None) -> str:
    """A query over the store written for DuckDB, in the Spark SQL dialect (store tables renamed as
    :func:`spark_feature_sql` does); a construct Spark cannot express raises instead of changing meaning.
    """
    tree = sqlglot.parse_one(sql, read="duckdb")
    if tables:
        ctes = {cte.alias for cte in tree.find_all(exp.CTE)}

        def rename(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Table) and not node.args.get("db") and node.name in tables:
                if node.name in ctes:  # pragma: no cover - store names never clash with CTE names
                    raise AssertionError(f"CTE named like store table {node.name!r}")
                new = exp.to_table(tables[node.name], dialect="spark")
                new.set("alias", exp.TableAlias(this=exp.to_identifier(node.alias or node.name)))
                return new
            return node

        tree = tree.transform(rename)
    return tree.sql(dialect="spark", unsupported_level=ErrorLevel.RAISE)


def register_store_views(
    spark: SparkSession,
    con: duckdb.DuckDBPyConnection,
    tables: Iterable[str] = FEATURE_TABLES,
    prefix: str = "",
) -> dict[str, DataFrame]:
    """Copy DuckDB store tables into Spark temp views named ``prefix + table``.

    Each table goes through Arrow in the driver with the contract schema of
    :func:`spark_schema` (timestamps as ``TIMESTAMP_NTZ``), so it suits tests and stores that fit
    in the driver's memory; for a large store, write Parquet from DuckDB and read it with
    ``spark.read.parquet`` instead. Returns ``{table: DataFrame}``.
    """
    import pyspark

    arrow_input = int(pyspark.__version__.split(".")[0]) >= 4  # createDataFrame(pyarrow.Table)
    views: dict[str, DataFrame] = {}
    for table in tables:
        cols = ", ".join(f'"{c}"' for c in schema.columns(table))  # contract column order
        arrow = con.sql(f'SELECT {cols} FROM "{table}"').to_arrow_table()
        data = arrow if arrow_input else arrow.to_pandas()
        frame = spark.createDataFrame(data, schema=spark_schema(table))
        frame.createOrReplaceTempView(prefix + table)
        views[table] = frame
    return views


def build_features_spark(
    spark: SparkSession,
    cutoffs: Sequence[datetime | date],
    config: FeatureConfig,
    tables: Mapping[str, str | DataFrame] | None = None,
) -> pd.DataFrame:
    """:func:`~omnicrm.features.build_features` computed by Spark SQL.

    Parameters
    ----------
    spark
        The session to run on.
    cutoffs, config
        As for :func:`~omnicrm.features.build_features` (same checks, same errors).
    tables
        Where the store tables are: by default tables or temp views named ``customers``,
        ``events``, ``surveys`` and ``treatments`` in the session's current catalog. A mapping
        overrides any of them with another table/view name or a Spark ``DataFrame`` (registered
        as a uniquely named temp view for the duration of the call).

    Returns
    -------
    pandas.DataFrame
        The same columns, order, dtypes and rows as :func:`~omnicrm.features.build_features` on
        the same data.
    """
    points = cutoff_points(cutoffs, config)
    unknown = set(tables or {}) - set(FEATURE_TABLES)
    if unknown:
        raise ValueError(f"tables: unknown store table(s) {sorted(unknown)}; expected any of {list(FEATURE_TABLES)}")
    names: dict[str, str] = {}
    temp_views: list[str] = []
    for table, source in (tables or {}).items():
        if isinstance(source, str):
            names[table] = source
        else:
            view = f"omnicrm_{table}_{uuid.uuid4().hex}"
            source.createOrReplaceTempView(view)
            temp_views.append(view)
            names[table] = view
    previous_tz = spark.conf.get(_TZ_KEY)
    spark.conf.set(_TZ_KEY, "UTC")  # see the module docstring: zoned TIMESTAMP columns need it
    try:
        frames = [_to_pandas(spark.sql(spark_feature_sql(t, config, names))) for t in points]
    finally:
        spark.conf.set(_TZ_KEY, previous_tz)
        for view in temp_views:
            spark.catalog.dropTempView(view)
    return snapshot_frame(frames, config)


def _to_pandas(frame: Any) -> pd.DataFrame:
    """A Spark result as pandas via Arrow (pyspark >= 4.0), else ``toPandas``."""
    if hasattr(frame, "toArrow"):
        return frame.toArrow().to_pandas()
    return frame.toPandas()  # pragma: no cover - pyspark 3.5
