"""Store assembly: the validated sources, identity links and ingest counts become the store's tables.

Pure SQL over the ingest session's temporary tables (``_links``, ``_all_records``, each source's
accepted and quarantined rows): nothing here reads files or knows where the store is written.
Raw personal data goes in; only keyed hashes (HMAC, :mod:`omnicrm.identity.pseudonymise`) and the
canonical rows of the store contract (:mod:`omnicrm.schema`) come out.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import duckdb

from omnicrm import __version__, schema
from omnicrm.identity import normalise
from omnicrm.identity.pseudonymise import hash_sql, stored_key_sql
from omnicrm.ingest.config import IngestConfig
from omnicrm.ingest.mapping import TARGET_COLUMNS, SourceMapping
from omnicrm.ingest.report import SourceCounts
from omnicrm.ingest.validate import KEY, ROW, ROW_ID, ValidatedSource
from omnicrm.sql import ident, literal, stable_mode


def data_fingerprint(
    cfg: IngestConfig,
    validated: list[tuple[SourceMapping, ValidatedSource]],
    counts: list[SourceCounts],
    key_check: str,
) -> str:
    """One hash naming the inputs of a store: equal fingerprints, equal stores.

    SHA-256 over every raw file's (keyed) digest, every mapping, the linkage settings (not paths)
    and a keyed check value of the pseudonymisation key.
    The key changes every ``customer_id``: after a key rotation the same raw files make a store
    whose ids differ, so caches keyed by the fingerprint must not serve frames of the old ids.
    ``key_check`` is an HMAC of a constant: it tells keys apart without revealing them.
    """
    parts = [f"{c.source}:{c.digest}:{m.model_dump_json()}" for (m, _), c in zip(validated, counts, strict=True)]
    settings = cfg.model_dump_json(include={"identity", "extra_event_types", "extra_channels"})
    return hashlib.sha256("\n".join([*parts, settings, key_check]).encode()).hexdigest()


def _select_target(m: SourceMapping, v: ValidatedSource, target: str, products: str | None) -> str:
    """Canonical rows of one source for ``target``, with customer ids from the links."""
    cols = []
    with_products = target == "events" and products is not None and "product_id" in m.output
    for c in TARGET_COLUMNS[target]:
        if c == "category" and with_products:
            own = f"a.{ident(c)}" if c in m.output else "NULL"
            cols.append(f"coalesce({own}, p.category) AS category")
        elif c in m.output:
            cols.append(f"a.{ident(c)}")
        else:
            cols.append(f"NULL AS {ident(c)}")
    join_p = f"LEFT JOIN {products} p ON p.product_id = a.product_id" if with_products else ""
    return (
        f"SELECT {literal(m.source + ':')} || {row_id_sql(m, 'a.' + ROW_ID)} AS event_id, l.customer_id, "
        f"{', '.join(cols)} "
        f"FROM {v.accepted} a JOIN _links l ON l.source = {literal(m.source)} AND l.source_record_id = a.{KEY} "
        f"{join_p}"
    )


def row_id_sql(m: SourceMapping, col: str) -> str:
    """A source row's id as stored: its keyed hash where a row-id column is personal data (a card)."""
    return hash_sql(col, "key") if set(m.row_id) & set(m.pii.values()) else col


def _empty(columns: dict[str, str]) -> str:
    """A typed, empty result with ``columns`` (name -> DuckDB type)."""
    return "SELECT " + ", ".join(f"CAST(NULL AS {t}) AS {ident(c)}" for c, t in columns.items()) + " WHERE FALSE"


def _empty_target(target: str) -> str:
    """A typed, empty result with the columns a target's union would have."""
    table = schema.CUSTOMERS if target == "profiles" else target
    return _empty(
        {"event_id": "VARCHAR", "customer_id": "VARCHAR"} | {c: schema.TABLES[table][c] for c in TARGET_COLUMNS[target]}
    )


def assemble_store(
    con: duckdb.DuckDBPyConnection,
    validated: list[tuple[SourceMapping, ValidatedSource]],
    products: str | None,
    counts: list[SourceCounts],
    config_path: str,
    fingerprint: str,
) -> dict[str, str]:
    """Stage the store's tables in ``con`` and return, per store table, the SQL that fills it.

    Each source's accepted rows get their ``customer_id`` from the identity links (``_links``);
    personal data of ``_all_records`` becomes keyed hashes; the customers table, the quarantine,
    the ingest report and ``store_meta`` (with the data fingerprint) are assembled in SQL. The
    caller writes the returned queries with :class:`omnicrm.store.StoreWriter` and publishes.
    """

    def union(target: str) -> str | None:
        parts = [_select_target(m, v, target, products) for m, v in validated if m.target == target]
        return " UNION ALL ".join(f"({p})" for p in parts) if parts else None

    for target in ("events", "surveys", "treatments", "profiles"):
        con.execute(f"CREATE OR REPLACE TEMP TABLE _t_{target} AS {union(target) or _empty_target(target)}")

    full_name = "nullif(concat_ws(' ', first_name, last_name), '')"
    hashes = ", ".join(
        [
            f"{hash_sql('email', 'email')} AS email_hash",
            f"{hash_sql('phone', 'phone')} AS phone_hash",
            f"{hash_sql('card', 'card')} AS card_hash",
            f"{hash_sql(full_name, 'name')} AS name_hash",
            f"{hash_sql('postcode', 'postcode')} AS postcode_hash",
            f"{normalise.region('postcode')} AS region",
        ]
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _source_records AS SELECT source, source_record_id, {hashes} FROM _all_records"
    )
    # source keys that are personal data themselves (a card number) are stored hashed
    pii_keys = [m.source for m, _ in validated if m.customer_key and m.customer_key.column in m.pii.values()]
    stored_id = stored_key_sql("source_record_id", "source", pii_keys)
    customers_sql = f"""
        WITH firsts AS (
            SELECT customer_id, min(ts) AS ts FROM (
                SELECT customer_id, ts FROM _t_events UNION ALL
                SELECT customer_id, ts FROM _t_surveys UNION ALL
                SELECT customer_id, ts FROM _t_treatments UNION ALL
                SELECT customer_id, first_seen FROM _t_profiles) GROUP BY customer_id
        ),
        prof AS (
            SELECT customer_id,
                   -- earliest record's signup channel; latest record's consent (a tie: no consent)
                   arg_min(signup_channel, row(first_seen, signup_channel)) AS signup_channel,
                   arg_max(consent_email, row(first_seen, NOT consent_email)) AS consent_email,
                   arg_max(consent_sms, row(first_seen, NOT consent_sms)) AS consent_sms,
                   arg_max(consent_push, row(first_seen, NOT consent_push)) AS consent_push
            FROM _t_profiles GROUP BY customer_id
        ),
        first_channel AS (
            SELECT customer_id, arg_min(channel, row(ts, channel)) AS channel
            FROM _t_events WHERE event_type IN ('purchase', 'visit') GROUP BY customer_id
        ),
        reg AS (
            SELECT l.customer_id, {stable_mode("s.region")} AS region, count(*) AS n
            FROM _links l JOIN _source_records s USING (source, source_record_id)
            GROUP BY l.customer_id
        )
        SELECT reg.customer_id, firsts.ts AS first_seen, reg.region,
               coalesce(prof.signup_channel, first_channel.channel) AS signup_channel,
               coalesce(prof.consent_email, FALSE) AS consent_email,
               coalesce(prof.consent_sms, FALSE) AS consent_sms,
               coalesce(prof.consent_push, FALSE) AS consent_push,
               reg.n AS n_source_records
        FROM reg LEFT JOIN firsts USING (customer_id) LEFT JOIN prof USING (customer_id)
        LEFT JOIN first_channel USING (customer_id)
    """
    report_rows = " UNION ALL ".join(
        f"SELECT {literal(c.source)} AS source, {literal(c.file)} AS file, {c.rows_in} AS rows_in, "
        f"{c.accepted} AS accepted, {c.quarantined} AS quarantined, {c.quarantine_share!r} AS quarantine_share, "
        f"{c.max_quarantine_share!r} AS max_quarantine_share, {literal(c.status)} AS status"
        for c in counts
    )
    quarantine_sql = " UNION ALL ".join(
        f"SELECT {literal(m.source)} AS source, {literal(str(c.file))} AS file, {ROW} AS row_number, "
        f"{row_id_sql(m, ROW_ID)} AS source_row_id, "
        f"_reason AS reason FROM {v.quarantine}"
        for (m, v), c in zip(validated, counts, strict=True)
    )
    meta = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "omnicrm_version": __version__,
        "ingest_config": config_path,
        "sources": ",".join(m.source for m, _ in validated),
        # sources whose source_record_id is stored as hash_sql(key, 'key') (HMAC): see stored_key_sql
        "pseudonymised_key_sources": ",".join(pii_keys),
        # each source's own customer-id column (JSON): `omnicrm predict` names its key columns after them
        # the order the events table is written in (below): a query over a range of customers reads
        # only that range's row groups, so features may be computed a range at a time
        # (omnicrm.features.snapshot.customer_ranges)
        schema.EVENTS_ORDER_KEY: schema.EVENTS_ORDER,
        "customer_key_columns": json.dumps(
            {m.source: m.customer_key.column for m, _ in validated if m.customer_key}, sort_keys=True
        ),
        # one hash over inputs, mappings and linkage settings: equal fingerprints, equal stores
        "data_fingerprint": fingerprint,
        # keyed: a plain SHA-256 of a small file would let anyone test a guessed file (and the
        # personal data in it) against the store without the key
        **{f"hmac_sha256:{c.source}": c.digest for c in counts},
    }
    meta_sql = " UNION ALL ".join(f"SELECT {literal(k)} AS key, {literal(v)} AS value" for k, v in meta.items())
    tables = {
        schema.EVENTS: f"SELECT * FROM _t_events ORDER BY {schema.EVENTS_ORDER}",
        schema.SURVEYS: "SELECT * FROM _t_surveys ORDER BY customer_id, ts",
        schema.TREATMENTS: "SELECT * FROM _t_treatments ORDER BY customer_id, ts",
        schema.CUSTOMERS: customers_sql + " ORDER BY customer_id",
        schema.PRODUCTS: f"SELECT * FROM {products}" if products else _empty(schema.TABLES[schema.PRODUCTS]),
        schema.IDENTITY_LINKS: f"SELECT * REPLACE ({stored_id} AS source_record_id) FROM _links "
        "ORDER BY customer_id, source, source_record_id",
        schema.SOURCE_RECORDS: f"SELECT * REPLACE ({stored_id} AS source_record_id) FROM _source_records "
        "ORDER BY source, source_record_id",
        schema.QUARANTINE: quarantine_sql,
        schema.INGEST_REPORT: report_rows,
        schema.STORE_META: meta_sql,
    }
    return tables
