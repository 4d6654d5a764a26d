"""The unified history store: a DuckDB file holding the tables of DESIGN.md."""

from omnicrm.store.duckdb_store import StoreWriter, open_store

__all__ = ["StoreWriter", "open_store"]
