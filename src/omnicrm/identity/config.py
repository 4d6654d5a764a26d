"""Typed settings of pseudonymisation and identity resolution."""

from __future__ import annotations

from pydantic import Field

from omnicrm.config import StrictModel


class PrivacyConfig(StrictModel):
    """Where the hashing salt comes from.

    The salt is read from the environment variable ``salt_env`` or else from ``salt_file`` (a
    git-ignored local file, e.g. ``configs/local/salt.txt``). Only a demo may fall back to the
    built-in salt (``allow_default_salt: true``), and it warns when it does: hashes made with a
    public salt can be reversed by anyone who hashes candidate e-mails.
    """

    salt_env: str = "OMNICRM_SALT"
    salt_file: str | None = "configs/local/salt.txt"
    allow_default_salt: bool = False


class IdentityConfig(StrictModel):
    """How source records are linked into customers.

    Deterministic rules link records sharing a normalised e-mail or card number, or a phone number
    *and* a similar first name (a household landline alone links nobody). Splink scores the
    remaining candidate pairs on fuzzy fields (names, postcode, e-mail typos). Components larger
    than ``max_component_size`` are split again using only edges at or above ``strict_threshold``.
    """

    deterministic: list[str] = Field(default_factory=lambda: ["email", "card", "phone_name"])
    first_name_min_similarity: float = Field(0.88, ge=0, le=1)
    probabilistic: bool = True
    match_threshold: float = Field(0.99, gt=0, lt=1)
    strict_threshold: float = Field(0.999, gt=0, lt=1)
    max_component_size: int = Field(60, ge=2)
    u_max_pairs: float = Field(2e6, gt=0)
    seed: int = 42
