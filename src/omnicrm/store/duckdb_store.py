"""Atomic writes of the unified store, and read-only access to it.

A new store is built in a temporary file beside the target and moved over it with
:func:`os.replace` only after every table was written and the file closed. A run that fails at any
point therefore leaves the previous store exactly as it was (``os.replace`` is atomic on POSIX when
both paths are on one file system, which is why the temporary file lives in the same folder).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from types import TracebackType

import duckdb

from omnicrm import schema
from omnicrm.errors import InputError
from omnicrm.sql import ident, literal


class StoreWriter:
    """Write a complete store through a work connection, then publish it atomically.

    Use as a context manager around the work; call :meth:`write_table` for each store table and
    :meth:`commit` at the end. Leaving the block without ``commit`` (an exception) discards the
    temporary file.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        The connection where the data is prepared (typically in memory). The new store file is
        attached to it, so tables are copied engine-side without passing through Python.
    path : Path
        Where the store is published.
    """

    ALIAS = "_new_store"

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path) -> None:
        self.con = con
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        self._committed = False

    def __enter__(self) -> StoreWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con.execute(f"ATTACH {literal(str(self.tmp))} AS {self.ALIAS}")
        return self

    def write_table(self, table: str, select_sql: str) -> int:
        """Create ``table`` with its contract columns from ``select_sql``; return its row count.

        The SELECT must produce the contract's columns (by name); they are cast to contract types.
        """
        cols = schema.TABLES[table]
        casts = ", ".join(f"CAST({ident(c)} AS {t}) AS {ident(c)}" for c, t in cols.items())
        self.con.execute(f"CREATE TABLE {self.ALIAS}.{ident(table)} AS SELECT {casts} FROM ({select_sql})")
        return self.con.execute(f"SELECT count(*) FROM {self.ALIAS}.{ident(table)}").fetchall()[0][0]

    def commit(self) -> None:
        """Close the new file and move it over the published store."""
        self.con.execute(f"CHECKPOINT {self.ALIAS}")
        self.con.execute(f"DETACH {self.ALIAS}")
        os.replace(self.tmp, self.path)
        self._committed = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            with contextlib.suppress(duckdb.Error):  # not attached if __enter__ failed half-way
                self.con.execute(f"DETACH {self.ALIAS}")
            for p in (self.tmp, self.tmp.with_name(self.tmp.name + ".wal")):
                p.unlink(missing_ok=True)


def open_store(path: str | Path, deterministic: bool = False) -> duckdb.DuckDBPyConnection:
    """Open a published store read-only (timestamps are UTC).

    ``deterministic`` runs queries on one thread. A parallel ``SUM`` of doubles adds in whatever
    order the threads finish, so spend features and BTYD inputs differed in their last bits from
    run to run (measured: 1 run in 3), and a model trained on them could differ too (Online
    Retail CLV: 140 vs 381 trees). Modelling code asks for this; exploration need not.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: store not found; run `omnicrm ingest` first")
    con = duckdb.connect(str(path), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    if deterministic:
        con.execute("SET threads TO 1")
    return con
