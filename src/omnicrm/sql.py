"""Quoting for generated SQL, in one place: identifiers, string and timestamp literals, ``IN`` lists."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime


def ident(name: str) -> str:
    """Quote an identifier: ``a b`` -> ``"a b"``."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """Quote a string literal: ``it's`` -> ``'it''s'``."""
    return "'" + value.replace("'", "''") + "'"


def ts_literal(value: datetime) -> str:
    """A ``TIMESTAMP '…'`` literal, with microseconds only when there are any.

    Cutoffs are written as literals rather than parameters so that the same SQL text runs on
    DuckDB and, transpiled, on Spark, and so that DuckDB can prune row groups on ``ts``.
    """
    spec = "%Y-%m-%d %H:%M:%S.%f" if value.microsecond else "%Y-%m-%d %H:%M:%S"
    return f"TIMESTAMP {literal(value.strftime(spec))}"


def in_list(values: Iterable[str]) -> str:
    """``('a', 'b')`` for an ``IN`` clause."""
    return "(" + ", ".join(literal(v) for v in values) + ")"


def stable_mode(expr: str) -> str:
    """Aggregate: the most frequent non-NULL value of ``expr``, ties to the smallest.

    DuckDB's ``mode()`` breaks ties by whichever thread saw a value first, so the same input could
    give different identity records (and customers) from run to run; this one cannot.
    """
    entries = f"map_entries(histogram({expr}))"
    ranked = f"list_sort(list_transform({entries}, lambda e: {{'n': -CAST(e.value AS BIGINT), 'v': e.key}}))"
    return f"({ranked})[1].v"
