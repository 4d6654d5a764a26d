"""Small helpers for building DuckDB SQL safely (identifier and literal quoting)."""

from __future__ import annotations

from collections.abc import Iterable


def ident(name: str) -> str:
    """Quote an identifier: ``a b`` -> ``"a b"``."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """Quote a string literal: ``it's`` -> ``'it''s'``."""
    return "'" + value.replace("'", "''") + "'"


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
