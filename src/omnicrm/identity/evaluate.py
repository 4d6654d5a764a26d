"""Pairwise precision, recall and F1 of a clustering against known truth.

A pair of records is a true positive when both the resolution and the truth put them together.
Counts come from group sizes (n·(n-1)/2 per group), so nothing is enumerated pair by pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb


@dataclass(frozen=True)
class PairwiseMetrics:
    """Pairwise linkage quality; ``records`` is how many records were scored against truth."""

    precision: float
    recall: float
    f1: float
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int
    records: int
    records_without_truth: int


def pairwise_metrics(con: duckdb.DuckDBPyConnection, links: str, truth: str) -> PairwiseMetrics:
    """Compare ``links(source, source_record_id, customer_id)`` with ``truth(source, record_key, person_id)``."""
    row = con.sql(
        f"""
        WITH j AS (
            SELECT l.customer_id AS c, t.person_id AS p
            FROM {links} l JOIN {truth} t
              ON l.source = t.source AND l.source_record_id = CAST(t.record_key AS VARCHAR)
        ),
        pred AS (SELECT count(*) AS n FROM j GROUP BY c),
        tru AS (SELECT count(*) AS n FROM j GROUP BY p),
        both_ AS (SELECT count(*) AS n FROM j GROUP BY c, p)
        SELECT
            (SELECT coalesce(sum(n * (n - 1) / 2), 0) FROM tru),
            (SELECT coalesce(sum(n * (n - 1) / 2), 0) FROM pred),
            (SELECT coalesce(sum(n * (n - 1) / 2), 0) FROM both_),
            (SELECT count(*) FROM j),
            (SELECT count(*) FROM {links}) - (SELECT count(*) FROM j)
        """
    ).fetchall()[0]
    true_pairs, pred_pairs, correct, n, missing = (int(x) for x in row)
    precision = correct / pred_pairs if pred_pairs else 1.0
    recall = correct / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PairwiseMetrics(precision, recall, f1, true_pairs, pred_pairs, correct, n, missing)


def evaluate_store(store_path: str | Path, record_owner: str | Path, salt: str) -> PairwiseMetrics:
    """Score a published store's ``identity_links`` against a ground-truth ``record_owner`` file.

    Sources whose keys are stored hashed (listed in ``store_meta``) get their truth keys hashed with
    the same key, so the two sides join. Only evaluation code reads truth; ingest never does.
    """
    from omnicrm.identity.pseudonymise import set_key, stored_key_sql
    from omnicrm.sql import literal

    con = duckdb.connect()
    try:
        set_key(con, salt)
        con.execute(f"ATTACH {literal(str(store_path))} AS s (READ_ONLY)")
        meta = dict(con.sql("SELECT key, value FROM s.store_meta").fetchall())
        pii_keys = [x for x in meta.get("pseudonymised_key_sources", "").split(",") if x]
        key = stored_key_sql("CAST(record_key AS VARCHAR)", "source", pii_keys)
        con.execute(
            f"CREATE TEMP VIEW truth AS SELECT source, {key} AS record_key, person_id "
            f"FROM read_parquet({literal(str(record_owner))})"
        )
        return pairwise_metrics(con, "s.identity_links", "truth")
    finally:
        con.close()
