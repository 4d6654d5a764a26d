"""Salted hashing of personal data.

The salt never appears in SQL text (which can end up in error messages): it is handed to DuckDB
as a session variable and read with ``getvariable``. Each field kind is hashed with its own prefix
so an e-mail hash cannot be compared with a phone hash.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import duckdb

from omnicrm.errors import ConfigError
from omnicrm.identity.config import PrivacyConfig
from omnicrm.sql import literal

#: used only where a config says ``allow_default_salt: true`` (the demo); public, hence a warning
DEFAULT_SALT = "omnicrm-demo-salt-do-not-use-in-production"


class DefaultSaltWarning(UserWarning):
    """The built-in, public demo salt is in use."""


def resolve_salt(cfg: PrivacyConfig, root: Path | None = None) -> str:
    """The salt from ``cfg.salt_env`` or ``cfg.salt_file``; the demo salt only if allowed."""
    value = os.environ.get(cfg.salt_env, "").strip()
    if value:
        return value
    if cfg.salt_file:
        path = (root or Path.cwd()) / cfg.salt_file
        if path.is_file():
            value = path.read_text(encoding="utf-8").strip()
            if value:
                return value
    if cfg.allow_default_salt:
        warnings.warn(
            f"using the public demo salt: set {cfg.salt_env} or write a secret to "
            f"{cfg.salt_file} before ingesting real personal data",
            DefaultSaltWarning,
            stacklevel=2,
        )
        return DEFAULT_SALT
    raise ConfigError(
        f"privacy: no salt found; set the environment variable {cfg.salt_env} or write one to "
        f"{cfg.salt_file} (git-ignored); only demos may set allow_default_salt: true"
    )


def set_salt(con: duckdb.DuckDBPyConnection, salt: str) -> None:
    """Hand the salt to the engine session (never into SQL text)."""
    con.execute("SET VARIABLE omnicrm_salt = ?", [salt])


def hash_sql(col: str, field: str) -> str:
    """SQL for the salted SHA-256 of ``col`` (NULL stays NULL)."""
    salted = f"getvariable('omnicrm_salt') || {literal(':' + field + ':')} || {col}"
    return f"CASE WHEN {col} IS NOT NULL THEN sha256({salted}) END"


def stored_key_sql(key_col: str, source_col: str, pii_key_sources: list[str]) -> str:
    """The id under which a source record is stored: hashed where the source's key is personal data.

    A loyalty card or e-mail used as a source's customer key would otherwise reach the store raw.
    Within one salt the hash is stable, so ids still join across runs.
    """
    if not pii_key_sources:
        return key_col
    sources = ", ".join(literal(s) for s in pii_key_sources)
    return f"CASE WHEN {source_col} IN ({sources}) THEN {hash_sql(key_col, 'key')} ELSE {key_col} END"
