"""The engine session where a source mapping's SQL runs: no files, no secrets, no settings.

A mapping's ``output`` expressions and ``rules`` are DuckDB SQL written by whoever edits the YAML.
Evaluated in an ordinary session they could read or write any file the process can
(``read_text('/etc/hostname')``, ``COPY ... TO``, ``ATTACH``), or copy the pseudonymisation key
into a column. So they run only in a session that

* holds the raw tables handed over from Python (Arrow) and nothing else: no key, no store attached;
* has DuckDB's external access switched off (``enable_external_access = false``: every file,
  extension and network access fails with a permission error) and its configuration locked, so a
  statement cannot switch it back on (DuckDB refuses to re-enable external access in any case).

Results leave the sandbox as Arrow tables (:func:`move_table`). Spilling to the private temporary
folder still works with external access off (checked on DuckDB 2.0).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from omnicrm.sql import ident, literal


def open_sandbox(spill_dir: Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory session with file access off and configuration locked."""
    box = duckdb.connect()
    box.execute("SET TimeZone = 'UTC'")
    if spill_dir is not None:
        box.execute(f"SET temp_directory = {literal(str(spill_dir))}")
    box.execute("SET enable_external_access = false")
    box.execute("SET lock_configuration = true")
    return box


def move_table(box: duckdb.DuckDBPyConnection, con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Copy temp table ``table`` from the sandbox into ``con`` (same name) and drop it in the sandbox."""
    data = box.sql(f"SELECT * FROM {ident(table)}").to_arrow_table()
    con.register("_moved_in", data)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {ident(table)} AS SELECT * FROM _moved_in")
    finally:
        con.unregister("_moved_in")
    box.execute(f"DROP TABLE {ident(table)}")
