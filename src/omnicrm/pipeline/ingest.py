"""``omnicrm ingest CONFIG``: raw sources -> validated, pseudonymised, linked -> the store file.

Two in-memory DuckDB sessions do the work. The mapping's own SQL (output expressions, rules) runs
in a sandbox with file access off and no key (``ingest/sandbox.py``); its results move to the
work session, which holds the pseudonymisation key, links identities and writes the store. Raw
personal data exists only in memory and in a private spill folder removed at the end: the new
store file receives canonical rows, keyed hashes (HMAC) and customer ids, and is published
atomically, so a run that fails anywhere leaves the previous store untouched.

Nothing is lost silently: a source with no accepted row, or with more of its rows quarantined than
its mapping allows (``max_quarantine_share``), stops the run with the source and its top reasons
named, before anything is written.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from omnicrm import __version__, schema
from omnicrm.config import StrictModel, load_config
from omnicrm.errors import ConfigError, InputError
from omnicrm.identity import normalise
from omnicrm.identity.config import IdentityConfig, PrivacyConfig
from omnicrm.identity.evaluate import PairwiseMetrics, evaluate_store
from omnicrm.identity.pseudonymise import (
    DefaultSaltWarning,
    derive_key,
    hash_sql,
    hmac_hex,
    resolve_salt,
    set_key,
    stored_key_sql,
)
from omnicrm.identity.resolve import Resolution, resolve_identities
from omnicrm.ingest.mapping import TARGET_COLUMNS, SourceMapping, load_mapping
from omnicrm.ingest.read import read_source_table
from omnicrm.ingest.sandbox import move_table, open_sandbox
from omnicrm.ingest.validate import KEY, ROW, ROW_ID, ValidatedSource, Vocabulary, validate_source
from omnicrm.progress import Progress, silent
from omnicrm.sql import ident, literal, stable_mode
from omnicrm.store import StoreWriter
from omnicrm.store.staging import staging_dir, sweep_stale_dirs

#: name prefix of the private spill folders in the system temp folder
SPILL_PREFIX = "omnicrm-ingest-"


class IngestConfig(StrictModel):
    """An ingest run: where raw files are, which source mappings apply, where the store goes.

    ``raw_dir`` and ``store`` are relative to the working directory (the project root);
    ``sources`` are mapping files relative to this config file.
    """

    raw_dir: str
    store: str
    sources: list[str]
    privacy: PrivacyConfig = PrivacyConfig()
    identity: IdentityConfig = IdentityConfig()
    #: event types and channels accepted beyond the store contract's (e.g. ``sms_sent``, ``kiosk``)
    extra_event_types: list[str] = []
    extra_channels: list[str] = []


@dataclass
class SourceCounts:
    source: str
    file: str
    rows_in: int
    accepted: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)
    digest: str = ""  # keyed hash (HMAC-SHA-256) of the raw file's bytes: which input built the store
    max_quarantine_share: float = 1.0
    status: str = "ok"  # or why a source that breaks its limits was let through

    @property
    def quarantine_share(self) -> float:
        return self.quarantined / self.rows_in if self.rows_in else 0.0


@dataclass
class IngestResult:
    store: Path
    sources: list[SourceCounts]
    resolution: Resolution
    tables: dict[str, int]


def load_ingest(path: str | Path) -> tuple[IngestConfig, list[tuple[SourceMapping, str]]]:
    """Load an ingest config and all its source mappings; every error names its file."""
    path = Path(path)
    cfg = load_config(IngestConfig, path)
    mappings = []
    for rel in cfg.sources:
        mpath = path.parent / rel
        mappings.append((load_mapping(mpath), str(mpath)))
    names = [m.source for m, _ in mappings]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{path}: key 'sources': source name(s) {dup} appear more than once")
    if sum(m.target == "products" for m, _ in mappings) > 1:
        raise ConfigError(f"{path}: key 'sources': at most one source may have target 'products'")
    return cfg, mappings


def run_ingest(config_path: str | Path, progress: Progress = silent) -> IngestResult:
    """Run the whole ingest described by ``config_path`` and publish the store."""
    cfg, mappings = load_ingest(config_path)
    # no key is needed (nor asked for) when no mapping declares personal data
    secret = resolve_salt(cfg.privacy) if any(m.pii for m, _ in mappings) else ""
    # in-memory sessions spill to a private folder (it may hold personal data) removed at the end;
    # one left by a killed run is removed now
    sweep_stale_dirs(None, SPILL_PREFIX)
    spill = staging_dir(None, SPILL_PREFIX)
    con = box = None
    try:
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET temp_directory = {literal(str(spill / 'work'))}")
        box = open_sandbox(spill / "sandbox")
        n_steps = len(mappings) + 2
        validated, counts, products = _validate_sources(box, con, cfg, mappings, progress, n_steps, derive_key(secret))
        box.close()
        box = None
        check_losses(counts, config_path)
        progress("resolve identities", len(mappings) / n_steps)
        set_key(con, secret)
        rec_tables = [v.records for _, v in validated if v.records]
        if not rec_tables:
            raise ConfigError(f"{config_path}: no source has a customer_key, so there are no customers to build")
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _all_records AS "
            + " UNION ALL ".join(f"SELECT * FROM {t}" for t in rec_tables)
        )
        resolution = resolve_identities(con, "_all_records", cfg.identity)
        progress("write store", (len(mappings) + 1) / n_steps)
        fingerprint = data_fingerprint(cfg, validated, counts, hmac_hex(secret, "fingerprint", ""))
        tables = _write_store(
            con, Path(cfg.store), validated, products, counts, resolution, str(config_path), fingerprint
        )
    finally:
        for session in (box, con):
            if session is not None:
                session.close()
        shutil.rmtree(spill, ignore_errors=True)
    progress("done", 1.0)
    return IngestResult(Path(cfg.store), counts, resolution, tables)


def check_losses(counts: list[SourceCounts], config_path: str | Path) -> None:
    """Stop before writing when a source yields nothing or quarantines more than its mapping allows.

    A header-only export, a changed delimiter or date format would otherwise publish a store that
    silently lacks the source. Every offending source is named with its top reasons.
    """
    problems = []
    for c in counts:
        if c.status != "ok":
            continue  # the mapping allows it (status says how)
        top = "; ".join(f"{r}: {n:,}" for r, n in list(c.reasons.items())[:3]) or "no data rows"
        if c.accepted == 0:
            problems.append(
                f"source '{c.source}' ({c.file}): 0 of {c.rows_in:,} rows accepted (top reasons: {top}); "
                "set 'allow_empty: true' in its mapping if it may be empty"
            )
        elif c.quarantine_share > c.max_quarantine_share:
            problems.append(
                f"source '{c.source}' ({c.file}): {c.quarantine_share:.1%} of {c.rows_in:,} rows quarantined, "
                f"above its limit of {c.max_quarantine_share:.0%} (top reasons: {top}); fix the file or the "
                "mapping, or raise 'max_quarantine_share' in the mapping"
            )
    if problems:
        raise InputError(f"{config_path}: ingest stopped, nothing was written:\n  " + "\n  ".join(problems))


def _validate_sources(
    box: duckdb.DuckDBPyConnection,
    con: duckdb.DuckDBPyConnection,
    cfg: IngestConfig,
    mappings: list[tuple[SourceMapping, str]],
    progress: Progress,
    n_steps: int,
    file_key: bytes,
) -> tuple[list[tuple[SourceMapping, ValidatedSource]], list[SourceCounts], str | None]:
    """Read and validate every source in the sandbox ``box`` (the product catalogue first, so events
    can check ids); the results move to ``con``."""
    raw_dir = Path(cfg.raw_dir)
    vocabulary = Vocabulary(
        event_types=schema.EVENT_TYPES + tuple(cfg.extra_event_types),
        channels=schema.CHANNELS + tuple(cfg.extra_channels),
    )
    counts: list[SourceCounts] = []
    validated: list[tuple[SourceMapping, ValidatedSource]] = []
    products = None
    for i, (m, mpath) in enumerate(sorted(mappings, key=lambda mp: mp[0].target != "products")):
        progress(f"ingest {m.source}", i / n_steps)
        path = source_path(raw_dir, m, mpath)
        source = read_source_table(path, m.format, m.raw_columns(), m.delimiter, m.encoding)
        raw = f"_raw_{m.source}"
        box.register("_arrow_in", source.table)
        box.execute(f"CREATE OR REPLACE TEMP TABLE {raw} AS SELECT * FROM _arrow_in")
        box.unregister("_arrow_in")
        v = validate_source(box, m, raw, products, mpath, vocabulary)
        box.execute(f"DROP TABLE {raw}")
        if source.malformed:  # lines arrow could not split into fields: quarantined, not lost
            box.executemany(f"INSERT INTO {v.quarantine} VALUES (?, NULL, ?)", source.malformed)
        if m.target == "products":
            products = "_products"
            box.execute(
                f"CREATE OR REPLACE TEMP TABLE {products} AS SELECT product_id, category, price, "
                f"{'margin' if 'margin' in m.output else 'CAST(NULL AS DOUBLE) AS margin'} FROM {v.accepted}"
            )
        acc = box.sql(f"SELECT count(*) FROM {v.accepted}").fetchall()[0][0]
        reasons = dict(box.sql(f"SELECT _reason, count(*) FROM {v.quarantine} GROUP BY 1 ORDER BY 2 DESC").fetchall())
        quar = sum(reasons.values())
        if acc + quar != source.rows_in:  # the contract of validate_source; a bug if broken
            raise RuntimeError(f"{m.source}: {source.rows_in} rows in but {acc} accepted + {quar} quarantined")
        for table in (v.accepted, v.quarantine, v.records):
            if table:
                move_table(box, con, table)
        digest = file_digest(path, file_key)
        c = SourceCounts(m.source, str(path), source.rows_in, acc, quar, reasons, digest, m.max_quarantine_share)
        if acc == 0 and m.allow_empty:
            c.status = "empty (allow_empty)"
        counts.append(c)
        validated.append((m, v))
    if products:
        move_table(box, con, products)
    return validated, counts, products


def data_fingerprint(
    cfg: IngestConfig,
    validated: list[tuple[SourceMapping, ValidatedSource]],
    counts: list[SourceCounts],
    key_check: str,
) -> str:
    """SHA-256 over every raw file's bytes, every mapping, the linkage settings (not paths) and a
    keyed check value of the pseudonymisation key.

    The key changes every ``customer_id``: after a key rotation the same raw files make a store
    whose ids differ, so caches keyed by the fingerprint must not serve frames of the old ids.
    ``key_check`` is an HMAC of a constant: it tells keys apart without revealing them.
    """
    parts = [f"{c.source}:{c.digest}:{m.model_dump_json()}" for (m, _), c in zip(validated, counts, strict=True)]
    settings = cfg.model_dump_json(include={"identity", "extra_event_types", "extra_channels"})
    return hashlib.sha256("\n".join([*parts, settings, key_check]).encode()).hexdigest()


def file_digest(path: Path, key: bytes) -> str:
    """HMAC-SHA-256 of a file's bytes under ``key``, read in 8 MiB blocks."""
    h = hmac.new(key, digestmod=hashlib.sha256)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 23), b""):
            h.update(block)
    return h.hexdigest()


def source_path(raw_dir: Path, m: SourceMapping, mapping_path: str) -> Path:
    """The raw file of a mapping, refused unless it lies inside ``raw_dir`` (symbolic links resolved).

    A mapping is a config a data team edits: its ``file`` must not reach the key file or any other
    file of the machine (an error message quoting a file's first line would show it).
    """
    path = raw_dir / m.file
    if not path.resolve().is_relative_to(raw_dir.resolve()):
        raise ConfigError(f"{mapping_path}: key 'file': {m.file!r} resolves outside raw_dir ({raw_dir})")
    return path


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


def _write_store(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    validated: list[tuple[SourceMapping, ValidatedSource]],
    products: str | None,
    counts: list[SourceCounts],
    resolution: Resolution,
    config_path: str,
    fingerprint: str,
) -> dict[str, int]:
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
        # one hash over inputs, mappings and linkage settings: equal fingerprints, equal stores
        "data_fingerprint": fingerprint,
        # keyed: a plain SHA-256 of a small file would let anyone test a guessed file (and the
        # personal data in it) against the store without the key
        **{f"hmac_sha256:{c.source}": c.digest for c in counts},
    }
    meta_sql = " UNION ALL ".join(f"SELECT {literal(k)} AS key, {literal(v)} AS value" for k, v in meta.items())
    tables = {
        schema.EVENTS: "SELECT * FROM _t_events ORDER BY customer_id, ts, event_id",
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
    written = {}
    with StoreWriter(con, path) as writer:
        for table, sql in tables.items():
            written[table] = writer.write_table(table, sql)
        writer.commit()
    return written


def evaluate_identity(config_path: str | Path, truth_dir: str | Path) -> PairwiseMetrics:
    """Score the store an ingest config published against a synthetic world's ground truth.

    Evaluation only: the ingest itself never reads truth. The key is the ingest's own (source keys
    that are personal data are stored hashed, so the truth's keys are hashed alike).
    """
    cfg, _ = load_ingest(config_path)
    with warnings.catch_warnings():  # the ingest already warned about a demo secret
        warnings.simplefilter("ignore", DefaultSaltWarning)
        salt = resolve_salt(cfg.privacy)
    return evaluate_store(cfg.store, Path(truth_dir) / "record_owner.parquet", salt)
