"""Errors a user sees. Each message names the file, the column or key, and what was expected."""

from __future__ import annotations


class OmnicrmError(Exception):
    """Base class for errors that stop a run with a message meant for the user."""


class ConfigError(OmnicrmError):
    """A configuration file is missing, unreadable or invalid (unknown key, bad value)."""


class InputError(OmnicrmError):
    """An input data file is unreadable or lacks what its mapping requires."""
