"""Pairwise precision, recall and F1 of a clustering against known truth.

A pair of records is a true positive when both the resolution and the truth put them together.
Counts come from group sizes (n·(n-1)/2 per group), so nothing is enumerated pair by pair.
"""

from __future__ import annotations

from dataclasses import dataclass

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
