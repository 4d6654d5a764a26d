"""Names once: the tables and columns of the unified store and of the scoring outputs.

Other modules refer to these constants instead of spelling table or column names again. Types are
DuckDB SQL types; all timestamps are UTC (``TIMESTAMP`` holding UTC wall time), amounts are in one
currency.
"""

from __future__ import annotations

from typing import Final

# --- canonical vocabularies -------------------------------------------------------------------
EVENT_TYPES: Final = (
    "purchase",
    "return",
    "visit",
    "email_sent",
    "email_open",
    "email_click",
    "email_unsubscribe",
    "push_sent",
    "push_open",
    "push_optout",
    "service_contact",
)
#: Channels an event can happen on. Purchases happen in ``store`` (offline) or ``web``/``app`` (online).
CHANNELS: Final = ("store", "web", "app", "email", "push", "sms", "phone", "chat")
ONLINE_CHANNELS: Final = ("web", "app")
OFFLINE_CHANNELS: Final = ("store",)
TREATMENT_GROUPS: Final = ("treatment", "control")

# --- store tables: name -> {column: DuckDB type} ------------------------------------------------
CUSTOMERS: Final = "customers"
IDENTITY_LINKS: Final = "identity_links"
SOURCE_RECORDS: Final = "source_records"
EVENTS: Final = "events"
PRODUCTS: Final = "products"
TREATMENTS: Final = "treatments"
SURVEYS: Final = "surveys"
QUARANTINE: Final = "quarantine"
INGEST_REPORT: Final = "ingest_report"
STORE_META: Final = "store_meta"
#: ``store_meta`` key recording the order the events table was written in (``omnicrm ingest`` writes
#: :data:`EVENTS_ORDER`); a store without it is read as unordered.
EVENTS_ORDER_KEY: Final = "events_order"
EVENTS_ORDER: Final = "customer_id, ts, event_id"

TABLES: Final[dict[str, dict[str, str]]] = {
    CUSTOMERS: {
        "customer_id": "VARCHAR",
        "first_seen": "TIMESTAMP",
        "region": "VARCHAR",
        "signup_channel": "VARCHAR",
        "consent_email": "BOOLEAN",
        "consent_sms": "BOOLEAN",
        "consent_push": "BOOLEAN",
        "n_source_records": "INTEGER",
    },
    # one row per source record (a source's own customer key); the rule that put it in its cluster
    IDENTITY_LINKS: {
        "source": "VARCHAR",
        "source_record_id": "VARCHAR",
        "customer_id": "VARCHAR",
        "rule": "VARCHAR",
        "score": "DOUBLE",
    },
    # pseudonymised identity keys of each source record (salted SHA-256; never raw personal data)
    SOURCE_RECORDS: {
        "source": "VARCHAR",
        "source_record_id": "VARCHAR",
        "email_hash": "VARCHAR",
        "phone_hash": "VARCHAR",
        "card_hash": "VARCHAR",
        "name_hash": "VARCHAR",
        "postcode_hash": "VARCHAR",
        "region": "VARCHAR",
    },
    EVENTS: {
        "event_id": "VARCHAR",
        "customer_id": "VARCHAR",
        "ts": "TIMESTAMP",
        "channel": "VARCHAR",
        "event_type": "VARCHAR",
        "order_id": "VARCHAR",
        "product_id": "VARCHAR",
        "category": "VARCHAR",
        "quantity": "DOUBLE",
        "amount": "DOUBLE",
    },
    PRODUCTS: {
        "product_id": "VARCHAR",
        "category": "VARCHAR",
        "price": "DOUBLE",
        "margin": "DOUBLE",
    },
    TREATMENTS: {
        "customer_id": "VARCHAR",
        "ts": "TIMESTAMP",
        "campaign_id": "VARCHAR",
        "action": "VARCHAR",
        "channel": "VARCHAR",
        "group": "VARCHAR",
        "cost": "DOUBLE",
    },
    SURVEYS: {
        "customer_id": "VARCHAR",
        "ts": "TIMESTAMP",
        "score": "INTEGER",
    },
    QUARANTINE: {
        "source": "VARCHAR",
        "file": "VARCHAR",
        "row_number": "BIGINT",
        "source_row_id": "VARCHAR",
        "reason": "VARCHAR",
    },
    INGEST_REPORT: {
        "source": "VARCHAR",
        "file": "VARCHAR",
        "rows_in": "BIGINT",
        "accepted": "BIGINT",
        "quarantined": "BIGINT",
        "quarantine_share": "DOUBLE",
        "max_quarantine_share": "DOUBLE",
        "status": "VARCHAR",  # ok, or why a source beyond its limits was let through
    },
    STORE_META: {
        "key": "VARCHAR",
        "value": "VARCHAR",
    },
}


def create_table_sql(table: str) -> str:
    """``CREATE TABLE`` statement for a store table, with columns in contract order."""
    cols = ", ".join(f'"{c}" {t}' for c, t in TABLES[table].items())
    return f'CREATE TABLE "{table}" ({cols})'


def columns(table: str) -> list[str]:
    """Column names of a store table in contract order."""
    return list(TABLES[table])


# --- outputs of scoring commands: name -> {column: DuckDB type} ---------------------------------------
# What a scoring run writes. Writers conform their frames with
# :func:`omnicrm.store.outputs.conform` (contract columns first, in this order; extra columns after).
SCORES: Final = "scores"
RECOMMENDATIONS: Final = "recommendations"
EFFECTS: Final = "effects"
NBA: Final = "nba"
CONTACT_FREQUENCY: Final = "contact_frequency"
EXCLUDED: Final = "excluded"
MANIFEST: Final = "manifest.json"

OUTPUTS: Final[dict[str, dict[str, str]]] = {
    # long form: one row per (customer, task, target); model = registered name, version its number
    SCORES: {
        "customer_id": "VARCHAR",
        "as_of": "TIMESTAMP",
        "task": "VARCHAR",
        "target": "VARCHAR",
        "score": "DOUBLE",
        "model": "VARCHAR",
        "version": "VARCHAR",
    },
    # ranks 1..k per customer; score on the method's own scale, rank is the authoritative order
    RECOMMENDATIONS: {
        "customer_id": "VARCHAR",
        "rank": "BIGINT",
        "product_id": "VARCHAR",
        "score": "DOUBLE",
        "reason": "VARCHAR",
    },
    # estimated effect of an action on an outcome against no action (control), per customer
    EFFECTS: {
        "customer_id": "VARCHAR",
        "action": "VARCHAR",
        "outcome": "VARCHAR",
        "effect": "DOUBLE",
    },
    NBA: {
        "customer_id": "VARCHAR",
        "rank": "BIGINT",
        "action": "VARCHAR",
        "channel": "VARCHAR",
        "product_id": "VARCHAR",
        "effect": "DOUBLE",
        "value": "DOUBLE",
        "cost": "DOUBLE",
        "expected_value": "DOUBLE",
        "reasons": "VARCHAR",
    },
    # per customer and channel: the learned cadence (contacts per four weeks, 0 without consent), its class
    # (saturated / on_target / under_saturated / no_consent) and the expected gain of moving there
    CONTACT_FREQUENCY: {
        "customer_id": "VARCHAR",
        "channel": "VARCHAR",
        "current_cadence": "DOUBLE",
        "recommended_cadence": "BIGINT",
        "class": "VARCHAR",
        "expected_gain": "DOUBLE",
    },
    # every customer of the store is scored or listed here with the step and the reason
    EXCLUDED: {
        "customer_id": "VARCHAR",
        "step": "VARCHAR",
        "reason": "VARCHAR",
    },
}

#: keys of a scoring run's ``manifest.json``: what ran, on which data, with which models
MANIFEST_KEYS: Final = (
    "as_of",
    "run_id",
    "code_version",
    "config_hash",
    "data_fingerprint",
    "models",  # [{name, version, run_id}]
    "tables",  # {table: {rows_in, rows_out}}
    "steps",  # {step: {seconds, peak_memory_bytes}}
)


def output_columns(table: str) -> list[str]:
    """Column names of an output table in contract order."""
    return list(OUTPUTS[table])
