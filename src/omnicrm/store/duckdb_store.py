"""Atomic writes of the unified store, and read-only access to it.

A new store is built in a temporary file beside the target and moved over it with
:func:`os.replace` only after every table was written and the file closed. A run that fails at any
point therefore leaves the previous store exactly as it was (``os.replace`` is atomic on POSIX when
both paths are on one file system, which is why the temporary file lives in the same folder). The
temporary file of a killed run is removed by the next writer (:mod:`omnicrm.store.staging`).

Reading checks the file first: a file that is not a DuckDB database, was cut short, or lacks the
store's tables is reported as such (re-run ``omnicrm ingest``) instead of failing mid-query.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType

import duckdb

from omnicrm import schema
from omnicrm.errors import InputError
from omnicrm.sql import ident, literal
from omnicrm.store.staging import discard, staging_path, sweep_stale


class StoreWriter:
    """Write a complete store through a work connection, then publish it atomically.

    Use as a context manager around the work; call :meth:`write_table` for each store table and
    :meth:`commit` at the end. Leaving the block without ``commit`` (an exception or an interrupt)
    discards the temporary file and its write-ahead log.

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
        self.tmp = staging_path(self.path)
        self._committed = False

    def __enter__(self) -> StoreWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(self.path)
        try:
            self.con.execute(f"ATTACH {literal(str(self.tmp))} AS {self.ALIAS}")
        except BaseException:  # an interrupt inside ATTACH: __exit__ is not called when __enter__ fails
            self.__exit__(None, None, None)
            raise
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
            try:
                with contextlib.suppress(duckdb.Error):  # not attached if __enter__ failed half-way
                    self.con.execute(f"DETACH {self.ALIAS}")
            finally:  # even if a second interrupt lands in DETACH
                discard(self.tmp)


def open_store(path: str | Path, deterministic: bool = False) -> duckdb.DuckDBPyConnection:
    """Open a published store read-only (timestamps are UTC).

    ``deterministic`` runs queries on one thread. A parallel ``SUM`` of doubles adds in whatever
    order the threads finish, so spend features and BTYD inputs differed in their last bits from
    run to run (measured: 1 run in 3), and a model trained on them could differ too (Online
    Retail CLV: 140 vs 381 trees). Modelling code asks for this; exploration need not.

    Raises
    ------
    InputError
        The file is missing, is not a DuckDB database, is shorter than its own header says (cut
        short by a full disk or an interrupted copy), or lacks a table of the store contract.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: store not found; run `omnicrm ingest` first")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.InterruptException:
        raise
    except duckdb.Error as exc:
        raise _unreadable(path, _first_line(exc)) from None
    try:
        _check_store(con, path)
        con.execute("SET TimeZone = 'UTC'")
        if deterministic:
            con.execute("SET threads TO 1")
    except BaseException:
        con.close()
        raise
    return con


def _check_store(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    try:
        used, block_size = con.execute(
            "SELECT used_blocks, block_size FROM pragma_database_size() WHERE database_name = current_database()"
        ).fetchall()[0]
        tables = {
            r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()
        }
    except duckdb.InterruptException:
        raise
    except duckdb.Error as exc:
        raise _unreadable(path, _first_line(exc)) from None
    # A DuckDB file is a header and its blocks, so it is at least as long as its used blocks; a
    # shorter one lost its end (a full disk, an interrupted copy) and would fail mid-query. (Not
    # total_blocks: free blocks at the end are cut off the file, measured on DuckDB 2.0.)
    size = path.stat().st_size
    if size < used * block_size:
        raise _unreadable(path, f"the file is cut short: {size:,} bytes, but its blocks need {used * block_size:,}")
    missing = [t for t in schema.TABLES if t not in tables]
    if missing:
        raise _unreadable(path, f"missing table(s) {', '.join(missing)}")


def _unreadable(path: Path, detail: str) -> InputError:
    return InputError(f"{path}: not a readable omnicrm store ({detail}); re-run `omnicrm ingest`")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
