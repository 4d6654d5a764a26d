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
from dataclasses import dataclass
from pathlib import Path

import duckdb

from omnicrm import schema
from omnicrm.config import load_config
from omnicrm.errors import ConfigError
from omnicrm.identity.evaluate import PairwiseMetrics, evaluate_store
from omnicrm.identity.pseudonymise import DefaultSaltWarning, derive_key, hmac_hex, resolve_salt, set_key
from omnicrm.identity.resolve import Resolution, resolve_identities
from omnicrm.ingest.config import IngestConfig
from omnicrm.ingest.mapping import SourceMapping, load_mapping
from omnicrm.ingest.read import read_source_table
from omnicrm.ingest.report import SourceCounts, check_losses
from omnicrm.ingest.sandbox import move_table, open_sandbox
from omnicrm.ingest.validate import ValidatedSource, Vocabulary, validate_source
from omnicrm.progress import Progress, silent
from omnicrm.sql import literal
from omnicrm.store import StoreWriter
from omnicrm.store.assemble import assemble_store, data_fingerprint
from omnicrm.store.staging import staging_dir, sweep_stale_dirs

__all__ = ["IngestConfig", "IngestResult", "SourceCounts", "evaluate_identity", "load_ingest", "run_ingest"]

#: name prefix of the private spill folders in the system temp folder
SPILL_PREFIX = "omnicrm-ingest-"


@dataclass
class IngestResult:
    """What an ingest run published: the store path, per-source counts, the identity resolution, rows per table."""

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
    # the key is always needed: customer_id is a pseudonym of the person's source record id even when
    # no mapping declares personal data (a plain log's customer number), and an unkeyed pseudonym of
    # a small id space (Online Retail's 12346..18287) is reversed by trying every id
    secret = resolve_salt(cfg.privacy)
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
        tables = assemble_store(con, validated, products, counts, str(config_path), fingerprint)
        with StoreWriter(con, Path(cfg.store)) as writer:
            written = {table: writer.write_table(table, sql) for table, sql in tables.items()}
            writer.commit()
    finally:
        for session in (box, con):
            if session is not None:
                session.close()
        shutil.rmtree(spill, ignore_errors=True)
    progress(f"store published: {cfg.store}", 1.0)
    return IngestResult(Path(cfg.store), counts, resolution, written)


def _validate_sources(
    box: duckdb.DuckDBPyConnection,
    con: duckdb.DuckDBPyConnection,
    cfg: IngestConfig,
    mappings: list[tuple[SourceMapping, str]],
    progress: Progress,
    n_steps: int,
    file_key: bytes,
) -> tuple[list[tuple[SourceMapping, ValidatedSource]], list[SourceCounts], str | None]:
    """Read and validate every source in the sandbox ``box``; the results move to ``con``.

    The product catalogue goes first, so that events can check their product ids against it.
    """
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
