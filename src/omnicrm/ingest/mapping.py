"""Source mappings: one YAML per source maps its raw columns onto the canonical store columns.

A mapping says, for one raw file:

* which **target** table its rows feed (``events``, ``surveys``, ``treatments``, ``profiles`` for a
  CRM/loyalty master that describes customers, or ``products``);
* which columns form the row's own **row_id** (unique per row; repeats are quarantined as duplicates);
* which column is the source's own **customer key** (its identity record) and how to normalise it;
* how each raw column is **parsed** (type, timestamp format and time zone, allowed values);
* which raw columns carry **personal data** (pseudonymised at ingest, never stored raw);
* the canonical **output** columns as DuckDB SQL expressions over the parsed fields;
* **rules** every accepted row must satisfy, each with the reason written to quarantine;
* how much of the file may be quarantined before the run stops (``max_quarantine_share``,
  ``allow_empty``): a source that yields nothing, or mostly rejects, is a broken export, not data.

Output expressions and rules are evaluated in a sandboxed engine session (``sandbox.py``): they
can compute over the row's fields but cannot read or write files, and each must be one expression.

Every raw column that a mapping names is required: a file without it stops the run with an error
naming the file and the column.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from omnicrm import schema
from omnicrm.config import StrictModel, load_config

FieldType = Literal["string", "integer", "double", "boolean", "timestamp", "date", "category"]
PiiKind = Literal["email", "phone", "card", "first_name", "last_name", "full_name", "postcode"]
Target = Literal["events", "surveys", "treatments", "profiles", "products"]

#: canonical columns each target takes from ``output`` (customer_id and event_id are added by ingest)
TARGET_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": ("ts", "channel", "event_type", "order_id", "product_id", "category", "quantity", "amount"),
    "surveys": ("ts", "score"),
    "treatments": ("ts", "campaign_id", "action", "channel", "group", "cost"),
    "profiles": ("first_seen", "signup_channel", "consent_email", "consent_sms", "consent_push"),
    "products": ("product_id", "category", "price", "margin"),
}
#: output columns a target cannot do without
TARGET_REQUIRED: dict[str, tuple[str, ...]] = {
    "events": ("ts", "channel", "event_type"),
    "surveys": ("ts", "score"),
    "treatments": ("ts", "campaign_id", "action", "channel", "group"),
    "profiles": (),
    "products": ("product_id", "category", "price"),
}

#: share of a source's rows that may be quarantined before the ingest stops (see SourceMapping);
#: the shipped synthetic sources stay under 11% (anonymous till sales) and Online Retail needs 0.35
DEFAULT_MAX_QUARANTINE_SHARE = 0.2
#: longest mapping expression accepted (the shipped ones have under 100 characters)
MAX_EXPRESSION_CHARS = 10_000
#: magnitude above which an unbounded double is quarantined as absurd
ABSURD = 1e12


def _one_expression(expr: str) -> str:
    """Reject text that is not a single SQL expression (``1); COPY ... TO ...; SELECT (1``)."""
    import duckdb

    if len(expr) > MAX_EXPRESSION_CHARS:  # a 5 MB expression took 19 s just to be rejected
        raise ValueError(f"an expression may have at most {MAX_EXPRESSION_CHARS:,} characters, got {len(expr):,}")
    try:
        n = len(duckdb.extract_statements(f"SELECT ({expr})"))
    except duckdb.Error as exc:
        raise ValueError(f"not a valid SQL expression ({str(exc).splitlines()[0]})") from None
    if n != 1:
        raise ValueError(f"must be one SQL expression, got {n} statements")
    return expr


#: a DuckDB SQL expression written in a mapping (checked to be one expression when loaded)
SqlExpression = Annotated[str, AfterValidator(_one_expression)]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]*$")


class FieldSpec(StrictModel):
    """How one raw column is parsed. Raw values are read as text; empty text is missing.

    A value that is present but does not parse as ``type`` (or is not among ``values`` for a
    ``category``) sends the row to quarantine with a reason naming the column.
    """

    type: FieldType = "string"
    #: strptime format (e.g. ``"%d/%m/%Y %H:%M:%S"``), ``"iso8601"`` (offset honoured) or ``"epoch_s"``
    format: str | None = None
    #: IANA zone of timestamps written without an offset; stored timestamps are UTC
    timezone: str = "UTC"
    #: for ``category``: raw value (matched case- and whitespace-insensitively) -> canonical value
    values: dict[str, str] | None = None
    #: for ``boolean``: raw texts meaning true / false (case-insensitive)
    true_values: list[str] = Field(default_factory=lambda: ["y", "yes", "true", "1", "t"])
    false_values: list[str] = Field(default_factory=lambda: ["n", "no", "false", "0", "f"])
    #: a missing value sends the row to quarantine
    nullable: bool = True
    #: for ``integer`` / ``double``: values outside [min, max] are quarantined. Without bounds a
    #: double whose magnitude exceeds ``ABSURD`` is (1e308 as a price is a broken export). NaN and
    #: infinity are always quarantined.
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check(self) -> FieldSpec:
        if (self.min is not None or self.max is not None) and self.type not in ("integer", "double"):
            raise ValueError(f"'min' / 'max' apply to integer and double fields, not to '{self.type}'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"'min' ({self.min}) is above 'max' ({self.max})")
        if self.type == "category" and not self.values:
            raise ValueError("a 'category' field needs 'values' (raw value -> canonical value)")
        if self.type in ("timestamp", "date") and not self.format:
            raise ValueError(f"a '{self.type}' field needs 'format' (strptime format, 'iso8601' or 'epoch_s')")
        return self


class KeySpec(StrictModel):
    """The source's own customer key: the identity record its rows belong to."""

    column: str
    #: ``digits`` keeps digits only (card numbers), ``lower`` trims and lower-cases, ``trim`` trims,
    #: ``integer`` reads ``"17850.0"`` as ``17850`` (ids written as floats)
    normalise: Literal["trim", "digits", "lower", "integer"] = "trim"


class Rule(StrictModel):
    """A condition (DuckDB SQL over parsed fields) an accepted row must satisfy."""

    check: SqlExpression
    reason: str


class SourceMapping(StrictModel):
    """One raw source file and how its rows become store rows. See the module docstring."""

    source: str
    file: str
    format: Literal["csv", "parquet"] = "csv"
    #: for CSV files: field delimiter and text encoding (e.g. ``";"`` and ``latin-1``)
    delimiter: str = Field(",", min_length=1, max_length=1)
    encoding: str = "utf-8"
    target: Target
    #: columns that identify a row; ``_row`` (the row number in the file) may be one of them (other
    #: names starting with ``_`` are reserved)
    row_id: list[str] = Field(min_length=1)
    customer_key: KeySpec | None = None
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    pii: dict[PiiKind, str] = Field(default_factory=dict)
    output: dict[str, SqlExpression]
    rules: list[Rule] = Field(default_factory=list)
    #: drop rows whose row_id repeats an earlier row (kept: the first); they are quarantined
    quarantine_duplicates: bool = True
    #: the ingest stops when a larger share of this file's rows is quarantined (a wrong delimiter,
    #: date format or column order rejects most rows); raise it where rejects are expected, e.g.
    #: guest sales without a customer key
    max_quarantine_share: float = Field(DEFAULT_MAX_QUARANTINE_SHARE, ge=0, le=1)
    #: a file with no accepted row stops the ingest unless this is true (a header-only export)
    allow_empty: bool = False

    @field_validator("source")
    @classmethod
    def _source_name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", v):
            raise ValueError("must be lower-case letters, digits and '_' (it names tables and ids)")
        return v

    @model_validator(mode="after")
    def _check(self) -> SourceMapping:
        allowed = TARGET_COLUMNS[self.target]
        unknown = sorted(set(self.output) - set(allowed))
        if unknown:
            raise ValueError(
                f"output column(s) {unknown} are not columns of target '{self.target}'; allowed: {', '.join(allowed)}"
            )
        missing = [c for c in TARGET_REQUIRED[self.target] if c not in self.output]
        if missing:
            raise ValueError(f"target '{self.target}' needs output column(s) {missing}")
        needs_key = self.target in ("events", "surveys", "treatments", "profiles")
        if needs_key and self.customer_key is None:
            raise ValueError(f"target '{self.target}' needs 'customer_key' (the source's own customer id)")
        for col in self.raw_columns():
            if not _IDENT.match(col):
                raise ValueError(f"column name {col!r} must be letters, digits, '_' or spaces")
            if col.startswith("_"):  # the validator's own columns (_row, _key, _reason, _raw_<field>…)
                raise ValueError(f"column name {col!r}: names starting with '_' are reserved for omnicrm")
        if Path(self.file).is_absolute() or ".." in Path(self.file).parts:
            raise ValueError(f"file {self.file!r} must be a path inside the ingest config's raw_dir")
        return self

    def expressions(self) -> list[tuple[str, str]]:
        """Every user-written SQL expression with the key that holds it (``output.amount``, ``rules[0].check``)."""
        return [(f"output.{c}", e) for c, e in self.output.items()] + [
            (f"rules[{i}].check", r.check) for i, r in enumerate(self.rules)
        ]

    def raw_columns(self) -> list[str]:
        """Every raw column the mapping names, in a stable order: all are required in the file."""
        cols: list[str] = [c for c in self.row_id if c != "_row"]
        if self.customer_key:
            cols.append(self.customer_key.column)
        cols += list(self.fields) + list(self.pii.values())
        return list(dict.fromkeys(cols))


def load_mapping(path: str | Path) -> SourceMapping:
    """Load and validate one source mapping YAML."""
    return load_config(SourceMapping, path)


# keep the contract honest: the targets' columns are store columns
for _target, _cols in TARGET_COLUMNS.items():
    _table = {"profiles": schema.CUSTOMERS}.get(_target, _target)
    assert set(_cols) <= set(schema.TABLES[_table]), (_target, _cols)
