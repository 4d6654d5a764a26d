"""Errors a user sees. Each message names the file, the column or key, and what was expected.

The command line prints an :class:`OmnicrmError` as one ``error:`` line and exits with status 2;
any other exception is treated as a bug (exit 1, traceback in a log file).
"""

from __future__ import annotations


class OmnicrmError(Exception):
    """Base class for errors that stop a run with a message meant for the user."""


class ConfigError(OmnicrmError):
    """A configuration file or command-line value is missing, unreadable or invalid.

    Examples: an unknown key, a bad value, an ``--out`` path that cannot be written, a date
    outside the store's data.
    """


class InputError(OmnicrmError):
    """An input data file (a raw source, the store, a truth folder) is unreadable or lacks what is required."""
