"""Names once: the files, columns and record keys of a generated world.

The ingest source mappings (``configs/sources/synthetic/*.yaml``) are written against these names;
tests check every generated file against them.

Layout of a world directory::

    <out_dir>/raw/<source>.csv        the raw source files (header row, UTF-8)
    <out_dir>/truth/people.parquet    one row per person: household, traits, signup and churn dates
    <out_dir>/truth/record_owner.parquet
                                      (source, record_key, person_id) per distinct identity record
    <out_dir>/truth/treatment_effects.parquet
                                      one row per (person, campaign) exposure, wide format:
                                      group, action, baseline_p and effect_<action> per action
    <out_dir>/truth/cadence.parquet   one row per member of the cadence experiment: arm, tolerance,
                                      true value of every cadence, best cadence and class
                                      (omnicrm.synthetic.fatigue)
    <out_dir>/truth/contact.parquet   one row per person at the end: contact tolerance, e-mail and push
                                      load, the value of staying subscribed (omnicrm.synthetic.fatigue)
    <out_dir>/truth/row_defects.parquet
                                      (source, row_index, record_id, defect) per malformed or
                                      repeated row (row_index: 0-based data row of the CSV)
    <out_dir>/world.json              the config used and the row count of every file
"""

from __future__ import annotations

from typing import Final

RAW_DIR: Final = "raw"
TRUTH_DIR: Final = "truth"
WORLD_JSON: Final = "world.json"

#: Column names of every raw file, in file order. The first column(s) are the row's own id.
RAW_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "products": ("sku", "category", "list_price", "margin_rate"),
    "crm_members": (
        "member_id",
        "card_no",
        "first_name",
        "last_name",
        "email",
        "phone",
        "postcode",
        "joined_on",
        "signup_channel",
        "opt_in_email",
        "opt_in_sms",
        "opt_in_push",
    ),
    "ecom_orders": (
        "order_id",
        "line_no",
        "account_id",
        "email",
        "first_name",
        "last_name",
        "phone",
        "postcode",
        "event_time",
        "device",
        "line_type",
        "sku",
        "qty",
        "unit_price",
    ),
    "pos_sales": (
        "receipt_no",
        "line_no",
        "store_code",
        "till_time",
        "card_no",
        "kind",
        "sku",
        "qty",
        "unit_price",
    ),
    "web_sessions": ("session_id", "visitor_id", "login_email", "platform", "started_at", "page_views"),
    "esp_events": ("event_id", "subscriber_id", "email", "event_type", "campaign_code", "event_time"),
    "push_events": ("event_id", "app_user_id", "email", "phone", "event", "event_time"),
    "service_contacts": (
        "contact_id",
        "caller_name",
        "caller_phone",
        "postcode",
        "contact_time",
        "contact_channel",
        "reason",
        "resolved",
    ),
    "nps_responses": ("response_id", "email", "score", "submitted_at"),
    "campaign_exposures": (
        "exposure_id",
        "card_no",
        "email",
        "campaign_id",
        "action",
        "channel",
        "group",
        "cost",
        "sent_at",
    ),
}

#: Columns that identify a row of each file.
ROW_ID: Final[dict[str, tuple[str, ...]]] = {
    "products": ("sku",),
    "crm_members": ("member_id",),
    "ecom_orders": ("order_id", "line_no"),
    "pos_sales": ("receipt_no", "line_no"),
    "web_sessions": ("session_id",),
    "esp_events": ("event_id",),
    "push_events": ("event_id",),
    "service_contacts": ("contact_id",),
    "nps_responses": ("response_id",),
    "campaign_exposures": ("exposure_id",),
}

#: Each source's own customer key: the ``record_key`` of ``truth/record_owner.parquet``.
RECORD_KEY: Final[dict[str, str]] = {
    "crm_members": "member_id",
    "ecom_orders": "account_id",
    "pos_sales": "card_no",
    "web_sessions": "visitor_id",
    "esp_events": "subscriber_id",
    "push_events": "app_user_id",
    "service_contacts": "contact_id",
    "nps_responses": "response_id",
    "campaign_exposures": "card_no",
}

#: Sources whose record key is a card number: the key is its digits only (``6337 1234 5678`` ->
#: ``633712345678``).
DIGIT_KEYS: Final = frozenset({"pos_sales", "campaign_exposures"})

#: Files that receive malformed and duplicate rows (event files; the CRM gets duplicates only).
EVENT_SOURCES: Final = (
    "ecom_orders",
    "pos_sales",
    "web_sessions",
    "esp_events",
    "push_events",
    "service_contacts",
    "nps_responses",
    "campaign_exposures",
)
