"""Keyed pseudonyms: HMAC-SHA-256 of personal data and of ids derived from it.

Every value derived from personal data or from a personal key (e-mail, phone, loyalty card, name,
postcode, a card number used as a source's customer key, and ``customer_id`` itself) is
``HMAC-SHA-256(key, "<field>:" || value)`` (RFC 2104). An unkeyed hash of a small space is no
pseudonym: a 12-digit card with a fixed prefix has 10^8 candidates, which one DuckDB query hashes
in about a minute. Without the key, the HMAC of a candidate cannot be computed at all, so nothing
can be matched. ``docs/privacy.md`` says what is hashed, what an analyst can and cannot recover,
and how to rotate the key.

How the key is made and used:

* the secret (``OMNICRM_SALT`` or the git-ignored ``configs/local/salt.txt``; the name "salt" is
  kept for compatibility) is stretched once per run with scrypt into a 32-byte key, so a weak
  passphrase cannot be guessed from one known (value, pseudonym) pair at SHA-256 speed;
* the key never appears in SQL text (which can end up in error messages) nor in any connection
  that evaluates a user's mapping expressions: HMAC's inner and outer pads are handed to DuckDB as
  session variables, and the HMAC runs in the engine on whole columns
  (``sha256(opad || unhex(sha256(ipad || message)))``), checked against Python's ``hmac`` in the
  tests;
* each field kind has its own prefix, so an e-mail pseudonym cannot be compared with a phone one.
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from pathlib import Path

import duckdb

from omnicrm.errors import ConfigError
from omnicrm.identity.config import PrivacyConfig
from omnicrm.sql import literal

#: used only where a config says ``allow_default_salt: true`` (the demo); public, hence a warning
DEFAULT_SALT = "omnicrm-demo-salt-do-not-use-in-production"

#: scrypt's fixed salt: the secret itself is the unknown; this only separates omnicrm's keys from
#: other uses of the same secret. Changing it changes every pseudonym (like a key rotation).
_KDF_SALT = b"omnicrm/pseudonym-key/v1"
#: scrypt cost: 2^15 x 8 x 128 B = 32 MiB and about 0.1 s once per run; a guess of the secret
#: costs the same, against ~1 microsecond for a SHA-256
_KDF_N, _KDF_R, _KDF_P = 2**15, 8, 1
_BLOCK = 64  # SHA-256 block size in bytes (HMAC pads the key to it)

#: characters of the HMAC kept in ``customer_id`` ('C' + 16 hex = 64 bits; for 10 million customers
#: the chance of any collision is about 3e-6)
CUSTOMER_ID_HEX = 16


class DefaultSaltWarning(UserWarning):
    """The built-in, public demo secret is in use."""


def resolve_salt(cfg: PrivacyConfig, root: Path | None = None) -> str:
    """The secret from ``cfg.salt_env`` or ``cfg.salt_file``; the public demo secret only if allowed."""
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
            f"using the public demo secret: set {cfg.salt_env} or write a secret to "
            f"{cfg.salt_file} before ingesting real personal data",
            DefaultSaltWarning,
            stacklevel=2,
        )
        return DEFAULT_SALT
    raise ConfigError(
        f"privacy: no secret key found; set the environment variable {cfg.salt_env} or write one to "
        f"{cfg.salt_file} (git-ignored); only demos may set allow_default_salt: true"
    )


@functools.lru_cache(maxsize=4)
def derive_key(secret: str) -> bytes:
    """The 32-byte HMAC key: scrypt (RFC 7914) of the secret."""
    return hashlib.scrypt(
        secret.encode("utf-8"), salt=_KDF_SALT, n=_KDF_N, r=_KDF_R, p=_KDF_P, maxmem=64 << 20, dklen=32
    )


def set_key(con: duckdb.DuckDBPyConnection, secret: str) -> None:
    """Hand HMAC's pads for ``secret`` to the engine session (never into SQL text)."""
    key = derive_key(secret).ljust(_BLOCK, b"\0")
    con.execute("SET VARIABLE omnicrm_hmac_ipad = ?", [bytes(b ^ 0x36 for b in key)])
    con.execute("SET VARIABLE omnicrm_hmac_opad = ?", [bytes(b ^ 0x5C for b in key)])


def hmac_hex(secret: str, field: str, value: str) -> str:
    """Python's HMAC of one value, equal to :func:`hash_sql` in the engine (for tests and tools)."""
    import hmac

    return hmac.new(derive_key(secret), f"{field}:{value}".encode(), hashlib.sha256).hexdigest()


def hash_sql(col: str, field: str) -> str:
    """SQL for ``HMAC-SHA-256(key, field:col)`` as 64 hex characters (NULL stays NULL)."""
    message = f"encode({literal(field + ':')} || {col})"
    inner = f"unhex(sha256({_pad('ipad')} || {message}))"
    return f"CASE WHEN {col} IS NOT NULL THEN sha256({_pad('opad')} || {inner}) END"


def _pad(name: str) -> str:
    # a session without a key fails loudly rather than hashing to NULL
    return (
        f"coalesce(CAST(getvariable('omnicrm_hmac_{name}') AS BLOB), "
        "CAST(error('no pseudonymisation key: call set_key first') AS BLOB))"
    )


def customer_id_sql(representative: str) -> str:
    """SQL for a ``customer_id``: ``'C'`` + the first hex characters of the HMAC of a representative.

    The representative (the component's smallest ``source:source_record_id``) may be a raw card
    number; keyed, the id reveals nothing about it, and it is stable for the same data and key.
    """
    return f"'C' || substr({hash_sql(representative, 'customer')}, 1, {CUSTOMER_ID_HEX})"


def stored_key_sql(key_col: str, source_col: str, pii_key_sources: list[str]) -> str:
    """The id under which a source record is stored: pseudonymised where the source's key is personal data.

    A loyalty card or e-mail used as a source's customer key would otherwise reach the store raw.
    Within one key the pseudonym is stable, so ids still join across runs.
    """
    if not pii_key_sources:
        return key_col
    sources = ", ".join(literal(s) for s in pii_key_sources)
    return f"CASE WHEN {source_col} IN ({sources}) THEN {hash_sql(key_col, 'key')} ELSE {key_col} END"
