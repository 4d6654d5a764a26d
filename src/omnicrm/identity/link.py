"""Candidate links between source records: deterministic rules in SQL, fuzzy scores from Splink.

Input is an engine table of identity records (``rid`` plus normalised ``email, phone, card,
first_name, last_name, postcode``). Output is an edge list ``(l, r, rule, score)`` with ``l < r``.
Deterministic rules produce *star* edges (every record to the smallest ``rid`` sharing its key),
which is enough for connected components and keeps a popular key from exploding into n² pairs.
"""

from __future__ import annotations

import logging

import duckdb
import pandas as pd

from omnicrm.identity.config import IdentityConfig

EDGE_COLUMNS = ["l", "r", "rule", "score"]


def deterministic_edges(con: duckdb.DuckDBPyConnection, records: str, cfg: IdentityConfig) -> pd.DataFrame:
    """Exact links on shared keys, as an edge frame."""
    parts = []
    for key in ("email", "card"):
        if key in cfg.deterministic:
            parts.append(
                f"SELECT min(rid) OVER (PARTITION BY {key}) AS l, rid AS r, '{key}' AS rule, 1.0 AS score "
                f"FROM {records} WHERE {key} IS NOT NULL"
            )
    if "phone_name" in cfg.deterministic:
        # a shared phone is evidence only together with the same person's first name (households
        # share landlines); last names must not contradict either
        parts.append(
            f"SELECT a.rid AS l, b.rid AS r, 'phone+first_name' AS rule, "
            f"jaro_winkler_similarity(a.first_name, b.first_name) AS score "
            f"FROM {records} a JOIN {records} b ON a.phone = b.phone AND a.rid < b.rid "
            f"WHERE jaro_winkler_similarity(a.first_name, b.first_name) >= {cfg.phone_name_min_similarity} "
            f"AND (a.last_name IS NULL OR b.last_name IS NULL "
            f"     OR jaro_winkler_similarity(a.last_name, b.last_name) >= 0.8)"
        )
    if not parts:
        return pd.DataFrame(columns=EDGE_COLUMNS)
    sql = " UNION ALL ".join(f"({p})" for p in parts)
    return con.sql(f"SELECT l, r, rule, score FROM ({sql}) WHERE l <> r").df()


def splink_settings(cfg: IdentityConfig):  # noqa: ANN201 - splink's SettingsCreator
    """The Splink model: fuzzy comparisons and the blocking rules that propose candidate pairs."""
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="rid",
        comparisons=[
            cl.NameComparison("first_name"),
            cl.NameComparison("last_name"),
            cl.EmailComparison("email"),
            cl.ExactMatch("phone"),
            cl.PostcodeComparison("postcode"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("postcode", "substr(last_name, 1, 1)"),
            block_on("first_name", "last_name"),
            block_on("split_part(email, '@', 1)"),
            block_on("phone", "substr(last_name, 1, 1)"),
        ],
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
    )


def probabilistic_edges(records: pd.DataFrame, cfg: IdentityConfig) -> pd.DataFrame:
    """Splink (Fellegi-Sunter, trained by random sampling for u and EM for m) on DuckDB."""
    from splink import Linker, block_on
    from splink.internals.duckdb.database_api import DuckDBAPI

    for name in ("splink", "splink.internals"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cols = ["rid", "email", "phone", "first_name", "last_name", "postcode"]
    data = records[cols]
    if len(data) < 2:
        return pd.DataFrame(columns=EDGE_COLUMNS)
    api = DuckDBAPI()
    linker = Linker(api.register(data), splink_settings(cfg), log_level=logging.WARNING)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("email"), block_on("phone", "first_name")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=cfg.u_max_pairs, seed=cfg.seed)
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("postcode"), estimate_without_term_frequencies=True
    )
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("first_name", "last_name"), estimate_without_term_frequencies=True
    )
    pred = linker.inference.predict(threshold_match_probability=cfg.match_threshold).as_pandas_dataframe()
    if pred.empty:
        return pd.DataFrame(columns=EDGE_COLUMNS)
    out = pd.DataFrame(
        {
            "l": pred[["rid_l", "rid_r"]].min(axis=1).astype("int64"),
            "r": pred[["rid_l", "rid_r"]].max(axis=1).astype("int64"),
            "rule": "splink",
            "score": pred["match_probability"].astype("float64"),
        }
    )
    return out
