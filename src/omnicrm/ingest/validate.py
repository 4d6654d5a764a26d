"""Validating one source in the engine: parse, check, quarantine, map to canonical columns.

All of it is one SQL statement per source over the raw text table, so it runs at DuckDB speed on
whole columns. Each row gets at most one ``_reason`` (the first check it fails, in this order):

1. missing row id; 2. missing or unusable customer key; 3. a value that does not parse as its
declared type (a time outside the years 1900-2200, ``infinity`` included, does not parse), or is
not among a category's values; 4. a number that is not finite (NaN, inf) or outside its field's
bounds (absurd: beyond 1e12 where no bounds are set); 5. a missing value in a non-nullable field;
6. a mapping rule that is not true; 7. a canonical value outside the store's vocabulary (unknown
event type, channel, group; survey score outside 0-10), a non-finite amount, quantity, cost, price
or margin, or an implausible time, after mapping; 8. a product id not in the product catalogue;
9. a repeated row id (the first copy is kept).

Each output expression is computed once per row: the checks read that value and the accepted table
stores it, so what is checked is what is stored. Rows without a reason are accepted; so rows in =
accepted + quarantined, always. (Lines of a CSV file that do not even split into fields are
quarantined by the reader, see ``read.py``.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

from omnicrm import schema
from omnicrm.errors import ConfigError
from omnicrm.identity import normalise
from omnicrm.ingest.mapping import ABSURD, TARGET_REQUIRED, FieldSpec, SourceMapping
from omnicrm.ingest.read import ROW
from omnicrm.sql import ident, in_list, literal, stable_mode

KEY = "_key"
ROW_ID = "_row_id"
REASON = "_reason"


@dataclass(frozen=True)
class ValidatedSource:
    """Names of the engine tables holding one source's results."""

    source: str
    accepted: str  # _row, _row_id, _key, canonical output columns
    quarantine: str  # _row, _row_id, _reason
    records: str | None  # identity records: source_record_id + normalised personal data


def _parse_expr(col: str, spec: FieldSpec) -> str:
    raw = f"NULLIF(trim({ident(col)}), '')"
    t = spec.type
    if t == "string":
        return raw
    if t == "integer":
        return f"TRY_CAST({raw} AS BIGINT)"
    if t == "double":
        return f"TRY_CAST({raw} AS DOUBLE)"
    if t == "boolean":
        low = f"lower({raw})"
        return (
            f"CASE WHEN {low} IN {in_list(v.lower() for v in spec.true_values)} THEN TRUE "
            f"WHEN {low} IN {in_list(v.lower() for v in spec.false_values)} THEN FALSE END"
        )
    if t == "category":
        assert spec.values is not None
        whens = " ".join(f"WHEN {literal(k.strip().lower())} THEN {literal(v)}" for k, v in spec.values.items())
        return f"CASE lower({raw}) {whens} END"
    # timestamps and dates -> naive UTC timestamps
    tz = literal(spec.timezone)
    fmt = spec.format or ""
    if fmt == "iso8601":
        has_offset = f"regexp_matches({raw}, '(Z|[+-]\\d\\d:?\\d\\d)$')"
        ts = (
            f"CASE WHEN {has_offset} THEN timezone('UTC', TRY_CAST({raw} AS TIMESTAMPTZ)) "
            f"ELSE timezone('UTC', timezone({tz}, TRY_CAST({raw} AS TIMESTAMP))) END"
        )
    elif fmt == "epoch_s":
        secs = f"TRY_CAST({raw} AS DOUBLE)"
        # to_timestamp raises (not NULL) out of range: keep to years 1900..2200 so it parses or quarantines
        ts = f"CASE WHEN {secs} BETWEEN -2208988800 AND 7258118400 THEN timezone('UTC', to_timestamp({secs})) END"
    else:
        local = f"try_strptime({raw}, {literal(fmt)})"
        ts = local if spec.timezone == "UTC" else f"timezone('UTC', timezone({tz}, {local}))"
    # 'infinity' and year 294247 cast to timestamps: outside the plausible years a value does not parse
    ts = f"CASE WHEN {_plausible_time(ts)} THEN {ts} END"
    return f"CAST({ts} AS DATE)" if t == "date" else ts


def _key_expr(mapping: SourceMapping) -> str:
    assert mapping.customer_key is not None
    col = ident(mapping.customer_key.column)
    how = mapping.customer_key.normalise
    if how == "digits":
        e = f"regexp_replace({col}, '[^0-9]', '', 'g')"
    elif how == "integer":  # ids exported as floats ("17850.0") by tools that had NULLs
        e = f"CAST(TRY_CAST(TRY_CAST(trim({col}) AS DOUBLE) AS BIGINT) AS VARCHAR)"
    elif how == "lower":
        e = f"lower(trim({col}))"
    else:
        e = f"trim({col})"
    return f"NULLIF({e}, '')"


#: canonical numeric columns that must be finite numbers
_NUMERIC_OUTPUTS = ("quantity", "amount", "cost", "price", "margin")
#: canonical time columns, and the years a parsed or mapped time must fall in (as ``epoch_s``)
_TIME_OUTPUTS = ("ts", "first_seen")
_YEARS = (1900, 2201)


def _plausible_time(ts: str) -> str:
    """SQL: ``ts`` is a finite time in the years of ``_YEARS`` (not ``infinity``, not year 294247)."""
    return f"(isfinite({ts}) AND {ts} >= TIMESTAMP '{_YEARS[0]}-01-01' AND {ts} < TIMESTAMP '{_YEARS[1]}-01-01')"


def _number_checks(col: str, spec: FieldSpec) -> list[tuple[str, str]]:
    """(condition TRUE for a bad row, reason) for a parsed number: finite, and within bounds."""
    c = ident(col)
    checks = []
    if spec.type == "double":
        checks.append((f"{c} IS NOT NULL AND NOT isfinite({c})", f"non-finite {col}: expected a finite number"))
    if spec.min is not None:
        checks.append((f"{c} < {spec.min!r}", f"{col} below its minimum {spec.min:g}"))
    if spec.max is not None:
        checks.append((f"{c} > {spec.max!r}", f"{col} above its maximum {spec.max:g}"))
    if spec.type == "double" and spec.min is None and spec.max is None:
        checks.append(
            (f"abs({c}) > {ABSURD!r}", f"absurd {col}: magnitude above {ABSURD:g} (set fields.{col}.min / max)")
        )
    return checks


@dataclass(frozen=True)
class Vocabulary:
    """Canonical values the store accepts: the contract's, plus any a config adds."""

    event_types: tuple[str, ...] = schema.EVENT_TYPES
    channels: tuple[str, ...] = schema.CHANNELS


def _vocabulary_checks(mapping: SourceMapping, vocabulary: Vocabulary) -> list[tuple[str, str]]:
    """(condition that is TRUE for a bad row, reason) for canonical values outside the contract.

    The conditions read the outputs as computed once in the stage (:func:`output_column`), so a row
    is checked on exactly the values that are stored (an expression using ``random()`` or reading
    the session's tables cannot pass the checks with one value and be stored with another).
    """
    checks = []
    out = {col: output_column(col) for col in mapping.output}

    def vocab(col: str, allowed: tuple[str, ...]) -> None:
        if col in out:
            checks.append(
                (
                    f"{out[col]} IS NULL OR {out[col]} NOT IN {in_list(allowed)}",
                    f"unknown {col}: expected one of {', '.join(allowed)}",
                )
            )

    if mapping.target == "events":
        vocab("event_type", vocabulary.event_types)
        vocab("channel", vocabulary.channels)
    if mapping.target == "treatments":
        vocab("group", schema.TREATMENT_GROUPS)
        vocab("channel", vocabulary.channels)
    if mapping.target == "surveys":
        checks.append((f"NOT coalesce({out['score']} BETWEEN 0 AND 10, FALSE)", "score outside 0-10"))
    for col in _NUMERIC_OUTPUTS:  # finite inputs can still map to inf (1e200 * 1e200)
        if col in out:
            checks.append(
                (
                    f"{out[col]} IS NOT NULL AND NOT coalesce(isfinite(TRY_CAST({out[col]} AS DOUBLE)), FALSE)",
                    f"non-finite {col} after mapping",
                )
            )
    for col in _TIME_OUTPUTS:  # 'infinity'::TIMESTAMP, or a year 294247, is no time a customer acted
        if col in out:
            plausible = _plausible_time(f"TRY_CAST({out[col]} AS TIMESTAMP)")
            checks.append(
                (
                    f"{out[col]} IS NOT NULL AND NOT coalesce({plausible}, FALSE)",
                    f"implausible {col} after mapping: expected a time in {_YEARS[0]}..{_YEARS[1] - 1}",
                )
            )
    for col in TARGET_REQUIRED[mapping.target]:
        if col in out and col not in ("event_type", "channel", "group"):
            checks.append((f"{out[col]} IS NULL", f"missing {col} after mapping"))
    return checks


def output_column(col: str) -> str:
    """The stage's column holding canonical output ``col`` (raw names cannot start with ``_``)."""
    return ident(f"_out_{col}")


def validate_source(
    con: duckdb.DuckDBPyConnection,
    mapping: SourceMapping,
    raw_table: str,
    products_table: str | None,
    mapping_path: str,
    vocabulary: Vocabulary = Vocabulary(),
) -> ValidatedSource:
    """Validate ``raw_table`` (text columns + ``_row``) against ``mapping`` inside ``con``.

    Creates three temp tables named after the source and returns their names. Output expressions
    are the user's SQL, run in a sandboxed session (see ``sandbox.py``): if DuckDB rejects one,
    the error names the mapping file, the key that holds it and the expression.
    """
    src = mapping.source
    parsed_cols = [f"{_parse_expr(c, s)} AS {ident(c)}" for c, s in mapping.fields.items()]
    raw_cols = [f"r.{ident(c)} AS {ident('_raw_' + c)}" for c in mapping.fields]
    other = [c for c in mapping.raw_columns() if c not in mapping.fields]
    # ``_row`` (the file row number) may be part of a row id, for files whose rows have none
    id_cols = [f"CAST(r.{ROW} AS VARCHAR)" if c == ROW else f"r.{ident(c)}" for c in mapping.row_id]
    row_id = " || '|' || ".join(f"coalesce(trim({c}), '')" for c in id_cols)
    row_id_missing = " OR ".join(f"NULLIF(trim({c}), '') IS NULL" for c in id_cols)
    key = _key_expr(mapping) if mapping.customer_key else "NULL"

    checks: list[tuple[str, str]] = [("_row_id_missing", f"missing row id ({', '.join(mapping.row_id)})")]
    if mapping.customer_key:
        checks.append((f"{KEY} IS NULL", f"missing key: {mapping.customer_key.column}"))
    for c, s in mapping.fields.items():
        if s.type == "category":
            reason = f"unknown {c}: expected one of {', '.join(sorted(s.values or {}))}"
        else:
            reason = f"unparseable {c}: expected {s.type}" + (f" ({s.format})" if s.format else "")
        checks.append((f"NULLIF(trim({ident('_raw_' + c)}), '') IS NOT NULL AND {ident(c)} IS NULL", reason))
    for c, s in mapping.fields.items():
        if s.type in ("integer", "double"):
            checks += _number_checks(c, s)
    for c, s in mapping.fields.items():
        if not s.nullable:
            checks.append((f"{ident(c)} IS NULL", f"missing value in {c}"))
    for rule in mapping.rules:
        checks.append((f"NOT coalesce(({rule.check}), FALSE)", rule.reason))
    checks += _vocabulary_checks(mapping, vocabulary)
    if products_table and mapping.target == "events" and "product_id" in mapping.output:
        pid = output_column("product_id")
        checks.append(
            (
                f"{pid} IS NOT NULL AND {pid} NOT IN (SELECT product_id FROM {products_table})",
                "unknown product_id: not in the product catalogue",
            )
        )
    if mapping.quarantine_duplicates:
        checks.append((f"row_number() OVER (PARTITION BY {ROW_ID} ORDER BY {ROW}) > 1", "duplicate row id"))

    case = "CASE " + " ".join(f"WHEN {cond} THEN {literal(reason)}" for cond, reason in checks) + " END"
    # each output is computed once, in the stage; checks and the accepted table read that column
    computed = ", ".join(f"({expr}) AS {output_column(col)}" for col, expr in mapping.output.items())
    outputs = [f"{output_column(col)} AS {ident(col)}" for col in mapping.output]
    pii_cols = [f"{ident(c)}" for c in dict.fromkeys(mapping.pii.values())]
    stage = f"_stage_{src}"
    base = ", ".join(
        [f"r.{ROW}", f"{row_id} AS {ROW_ID}", f"({row_id_missing}) AS _row_id_missing", f"{key} AS {KEY}"]
        + [f"r.{ident(c)}" for c in other]
        + parsed_cols
        + raw_cols
    )
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {stage} AS "
            f"WITH p AS (SELECT {base} FROM {raw_table} r), o AS (SELECT *, {computed} FROM p) "
            f"SELECT {case} AS {REASON}, * FROM o"
        )
        acc = f"_accepted_{src}"
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {acc} AS SELECT {ROW}, {ROW_ID}, {KEY}, "
            f"{', '.join(outputs)}{''.join(', ' + c for c in pii_cols)} "
            f"FROM {stage} WHERE {REASON} IS NULL ORDER BY {ROW}"
        )
    except duckdb.Error as exc:
        raise _expression_error(con, mapping, f"SELECT {base} FROM {raw_table} r", mapping_path, exc) from None
    quar = f"_quarantine_{src}"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {quar} AS SELECT {ROW}, {ROW_ID}, {REASON} "
        f"FROM {stage} WHERE {REASON} IS NOT NULL ORDER BY {ROW}"
    )
    con.execute(f"DROP TABLE {stage}")
    records = _records(con, mapping, acc) if mapping.customer_key else None
    return ValidatedSource(src, acc, quar, records)


def _expression_error(
    con: duckdb.DuckDBPyConnection, mapping: SourceMapping, parsed_sql: str, mapping_path: str, exc: duckdb.Error
) -> ConfigError:
    """The error for a failed validation, naming the first expression that fails on its own."""
    for key, expr in mapping.expressions():
        try:
            con.execute(f"SELECT ({expr}) FROM ({parsed_sql}) LIMIT 0")
        except duckdb.PermissionException:
            return ConfigError(
                f"{mapping_path}: key '{key}': the expression {expr!r} reads or writes files, which mapping "
                "expressions may not do (they are evaluated with file access switched off)"
            )
        except duckdb.Error as one:
            return ConfigError(
                f"{mapping_path}: key '{key}': the expression {expr!r} is not valid SQL over the mapped "
                f"fields ({type(one).__name__}: {str(one).splitlines()[0]})"
            )
    # valid SQL that fails on some row's data (a CAST of a value that does not convert): find which
    # expression, and never quote DuckDB's message whole, since it quotes the value (personal data)
    for key, expr in mapping.expressions():
        try:
            con.execute(f"SELECT count(({expr})) FROM ({parsed_sql})").fetchall()
        except duckdb.Error as one:
            return ConfigError(
                f"{mapping_path}: key '{key}': the expression {expr!r} fails on the data "
                f"({type(one).__name__}: {_redacted(one)}); parse the field with a type in 'fields' "
                "(a value that does not parse is quarantined) or guard the expression with TRY_CAST"
            )
    return ConfigError(
        f"{mapping_path}: source '{mapping.source}': the mapping's SQL failed ({type(exc).__name__}: {_redacted(exc)})"
    )


def _redacted(exc: BaseException) -> str:
    """The first line of a DuckDB error with quoted values withheld (they may be personal data)."""
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"'[^']*'", "'…'", line)


def _records(con: duckdb.DuckDBPyConnection, mapping: SourceMapping, accepted: str) -> str:
    """One identity record per customer key: the most frequent normalised value of each PII field."""
    exprs: dict[str, str] = {}
    for kind, col in mapping.pii.items():
        if kind == "full_name":
            first, last = normalise.full_name_parts(ident(col))
            exprs.setdefault("first_name", first)
            exprs.setdefault("last_name", last)
        else:
            exprs[kind] = normalise.NORMALISERS[kind](ident(col))
    sel = ", ".join(
        f"{stable_mode(exprs[f])} AS {f}" if f in exprs else f"CAST(NULL AS VARCHAR) AS {f}"
        for f in normalise.PII_FIELDS
    )
    rec = f"_records_{mapping.source}"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {rec} AS SELECT {literal(mapping.source)} AS source, "
        f"{KEY} AS source_record_id, {sel} FROM {accepted} GROUP BY {KEY}"
    )
    return rec
