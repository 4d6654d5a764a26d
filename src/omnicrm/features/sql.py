"""Building blocks of the generated feature SQL: the cutoff, requested aggregates, output columns.

The SQL is written in a portable subset (DuckDB dialect that ``sqlglot`` transpiles to Spark SQL):
plain ``SELECT``/``GROUP BY``/``LEFT JOIN``, aggregate ``FILTER (WHERE …)`` clauses, ``max_by``,
``LAG``, ``RANK`` and ``ROW_NUMBER`` windows, ``date_diff``, ``ln``, ``greatest``,
``NULLIF``/``COALESCE`` and timestamp literals (``tests/unit/test_features.py`` transpiles every
group's SQL with ``unsupported_level=RAISE``, and ``tests/spark`` runs it on Spark and checks the
answers equal DuckDB's; see :mod:`omnicrm.features.spark`). Window bounds are computed here in Python and
written as literals, so the SQL needs no interval arithmetic (whose syntax differs between engines)
and DuckDB can prune row groups on ``ts``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from omnicrm.sql import ts_literal

#: pandas dtype of an output column. ``int`` columns are never NULL (counts are coalesced to 0);
#: every numeric column that can be missing is ``float`` so a frame's dtypes never depend on
#: whether the data happened to contain a NULL.
Kind = Literal["int", "float", "str"]
PANDAS_DTYPES: dict[str, str] = {"int": "int64", "float": "float64", "str": "str"}
_SQL_TYPES: dict[str, str] = {"int": "BIGINT", "float": "DOUBLE", "str": "VARCHAR"}

_US_PER_DAY = 86_400_000_000


@dataclass(frozen=True)
class Cutoff:
    """The cutoff ``T`` of one snapshot; every query reads only rows with ``ts < T``."""

    at: datetime

    @property
    def lit(self) -> str:
        """``T`` as a SQL literal."""
        return ts_literal(self.at)

    def ago(self, days: int) -> str:
        """``T - days`` as a SQL literal: the inclusive start of the window ``[T - days, T)``."""
        return ts_literal(self.at - timedelta(days=days))

    def days_since(self, column: str) -> str:
        """Fractional days from ``column`` to ``T`` (exact to the microsecond).

        The count is cast to DOUBLE before dividing: ``86400000000.0`` is a DECIMAL literal in both
        engines, and BIGINT / DECIMAL is a DOUBLE in DuckDB but a DECIMAL rounded to 13 places in
        Spark (1 µs came out as 1.16e-11 days instead of 1.1574e-11). DOUBLE / integer is a
        DOUBLE in both.
        """
        return f"CAST(date_diff('microsecond', {column}, {self.lit}) AS DOUBLE) / {_US_PER_DAY}"


def ratio(numerator: str, denominator: str) -> str:
    """``numerator / denominator`` as a double, NULL when the denominator is 0 or NULL."""
    return f"CAST({numerator} AS DOUBLE) / NULLIF({denominator}, 0)"


@dataclass(frozen=True)
class Agg:
    """One aggregate a group asks a source to compute, e.g. ``orders_30d``.

    Parameters
    ----------
    alias
        Column name in the source CTE. Two groups asking for the same alias must ask for the same
        expression (checked when the query is assembled).
    expr
        Aggregate expression over the source's input rows.
    event_types, days
        For the event source only: which event types the aggregate reads and how far back
        (``None`` = all history), so the scan can skip everything else.
    line_expr
        For the orders source only: the aggregate's value for an order of one line, written over
        that line's columns (``channel`` for ``min(channel)``). Lines without an ``order_id`` are
        orders of their own and skip the grouping, so each orders aggregate needs one.
    """

    alias: str
    expr: str
    event_types: tuple[str, ...] = ()
    days: int | None = None
    line_expr: str | None = None


@dataclass(frozen=True)
class Column:
    """One output column: name, SQL expression over the joined sources, and its kind."""

    name: str
    expr: str
    kind: Kind

    def select_sql(self) -> str:
        return f"CAST({self.expr} AS {_SQL_TYPES[self.kind]}) AS {self.name}"


@dataclass
class GroupSql:
    """What one feature group contributes to a snapshot query.

    ``needs`` maps a source name (see :mod:`omnicrm.features.sources`) to the aggregates the group
    wants from it (an empty list just asks for the source to be joined); ``columns`` are the
    output columns, written over the source aliases.
    """

    needs: dict[str, list[Agg]] = field(default_factory=dict)
    columns: list[Column] = field(default_factory=list)

    def need(self, source: str, *aggs: Agg) -> None:
        self.needs.setdefault(source, []).extend(aggs)

    def column(self, name: str, expr: str, kind: Kind) -> None:
        self.columns.append(Column(name, expr, kind))
