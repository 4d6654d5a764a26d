"""Identity resolution: records -> edges -> guarded components -> one ``customer_id`` per person."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

from omnicrm.identity.cluster import cluster
from omnicrm.identity.config import IdentityConfig
from omnicrm.identity.link import EDGE_COLUMNS, deterministic_edges, probabilistic_edges
from omnicrm.identity.pseudonymise import customer_id_sql


@dataclass(frozen=True)
class Resolution:
    """Engine table of links plus counts for the report."""

    links: str  # source, source_record_id, customer_id, rule, score
    records: int
    customers: int
    edges_by_rule: dict[str, int]
    guarded_records: int


def resolve_identities(con: duckdb.DuckDBPyConnection, records: str, cfg: IdentityConfig) -> Resolution:
    """Link the identity records in ``records`` (normalised personal data, in memory).

    ``customer_id`` is the keyed hash (:func:`~omnicrm.identity.pseudonymise.customer_id_sql`) of
    the component's smallest ``source:source_record_id``: stable across re-runs on the same data
    and key, and not reversible without the key even where that record id is a card number. The
    key's HMAC pads must be set on ``con`` (:func:`~omnicrm.identity.pseudonymise.set_key`).
    """
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _rec AS SELECT "
        f"CAST(row_number() OVER (ORDER BY source, source_record_id) - 1 AS BIGINT) AS rid, * FROM {records}"
    )
    n = con.sql("SELECT count(*) FROM _rec").fetchall()[0][0]
    det = deterministic_edges(con, "_rec", cfg)
    parts = [det]
    if cfg.probabilistic:
        # deterministic clusters are the labels Splink's m-probabilities are estimated from
        det_labels = cluster(n, det, cfg.max_component_size, cfg.strict_threshold)["component"]
        parts.append(probabilistic_edges(con, "_rec", det_labels, cfg))
    parts = [p for p in parts if len(p)]
    edges = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=EDGE_COLUMNS)
    edges = edges.astype({"l": "int64", "r": "int64", "score": "float64"})
    labels = cluster(n, edges, cfg.max_component_size, cfg.strict_threshold)
    con.register("_labels", labels)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _links AS
        WITH j AS (
            SELECT r.source, r.source_record_id, l.component, l.rule, l.score
            FROM _rec r JOIN _labels l USING (rid)
        )
        SELECT source, source_record_id,
               {customer_id_sql("min(source || ':' || source_record_id) OVER (PARTITION BY component)")}
                   AS customer_id,
               rule, score
        FROM j
        """
    )
    con.unregister("_labels")
    customers = con.sql("SELECT count(DISTINCT customer_id) FROM _links").fetchall()[0][0]
    by_rule = edges.groupby("rule").size().to_dict() if len(edges) else {}
    return Resolution(
        "_links", int(n), int(customers), {k: int(v) for k, v in by_rule.items()}, int(labels["guarded"].sum())
    )
