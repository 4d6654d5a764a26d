"""The business's own customer keys beside omnicrm's pseudonymous ``customer_id``, for outputs.

``omnicrm predict`` and ``omnicrm features`` put them first so a business can join their rows back:
one ``<source>_key`` column per source of the customers' records (``identity_links``, several record
ids of a source joined by ``|``), or, with one source of customer ids, that source's own column name
as ingest recorded it in ``store_meta`` (``customer_key_columns``; not for pseudonymised keys).
"""

from __future__ import annotations

import json

import duckdb
import pandas as pd

from omnicrm.sql import ident, literal


def source_keys(con: duckdb.DuckDBPyConnection, customer_ids: pd.Series) -> pd.DataFrame:
    """One column ``<source>_key`` per source: the customer's record ids there, ``|``-joined.

    Built in DuckDB over the links of ``customer_ids`` only (conditional aggregation, one column per
    source those customers have records in, sorted by name): pivoting every identity link in pandas
    took 3.4 s at 261k customers. A customer without links in a source has a missing key there; one
    without any link is left out (the caller's left join gives it missing keys).
    """
    ids = pd.DataFrame({"customer_id": pd.Series(customer_ids, dtype=object).to_numpy()})
    con.register("_key_ids", ids)
    try:
        scoped = "FROM identity_links WHERE customer_id IN (SELECT customer_id FROM _key_ids)"
        sources = [r[0] for r in con.sql(f"SELECT DISTINCT source {scoped} ORDER BY source").fetchall()]
        columns = ", ".join(
            f"string_agg(source_record_id, '|' ORDER BY source_record_id) FILTER (WHERE source = {literal(s)}) "
            f"AS {ident(f'{s}_key')}"
            for s in sources
        )
        return con.sql(
            f"SELECT customer_id{', ' + columns if columns else ''} {scoped} GROUP BY customer_id ORDER BY customer_id"
        ).df()
    finally:
        con.unregister("_key_ids")


def key_column_names(meta: dict[str, str], sources: list[str], taken: set[str]) -> dict[str, str]:
    """The output name of each source's key column (``<source>_key`` as :func:`source_keys` names it).

    With one source of customer ids, its own column name (``store_meta``'s ``customer_key_columns``,
    written at ingest), unless that source's keys are stored pseudonymised (they are not the
    business's ids then) or the name is ``taken`` by another output column; otherwise, and with
    several sources, ``<source>_key``.
    """
    names = {s: f"{s}_key" for s in sources}
    own = json.loads(meta.get("customer_key_columns") or "{}")
    hashed = set(filter(None, meta.get("pseudonymised_key_sources", "").split(",")))
    key_sources = list(own) or sources
    if len(key_sources) == 1 and sources == key_sources:
        [source] = sources
        column = own.get(source)
        if column and source not in hashed and column not in taken:
            names[source] = column
    return names


def store_meta(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The store's ``store_meta`` as a dict (empty for a hand-built store without one)."""
    try:
        return dict(con.sql("SELECT key, value FROM store_meta").fetchall())
    except duckdb.CatalogException:
        return {}
