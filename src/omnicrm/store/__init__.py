"""The unified history store: a DuckDB file holding the tables of :mod:`omnicrm.schema`."""

from omnicrm.store.data_range import DataRange, check_date, data_range, store_data_range
from omnicrm.store.duckdb_store import StoreWriter, open_store

__all__ = ["DataRange", "StoreWriter", "check_date", "data_range", "open_store", "store_data_range"]
