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
