"""The span of time a store covers, and the check of a user's date (a cutoff, an as-of) against it.

Cutoffs are never derived from the data (a leakage-prone default): the user gives them. But a date the data
cannot support gives a silently useless result: a cutoff on or before the first event reads no
events (a 0-row feature file), and an as-of long after the last event makes every customer look
lapsed (everyone "churned"), which is how a store that stopped being refreshed shows up. So a date
outside the store's range is an error naming the date and the range, and a date a little after
the last event is allowed with a warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb

from omnicrm import schema
from omnicrm.errors import ConfigError, InputError

#: How far past the last event a date may lie (days). Monthly cutoffs and scoring runs are the
#: slowest cadence omnicrm is configured for: a store refreshed every month is never more than one
#: month (31 days) behind its next run. A larger gap means a missed ingest, so scores would be
#: computed on an old history as if nothing had happened since.
MAX_DAYS_AFTER = 31


class LateDateWarning(UserWarning):
    """A date lies after the store's last event (within the allowed gap)."""


@dataclass(frozen=True)
class DataRange:
    """First and last event timestamps of a store (UTC)."""

    first: datetime
    last: datetime

    def __str__(self) -> str:
        return f"{self.first:%Y-%m-%d} .. {self.last:%Y-%m-%d}"


def data_range(con: duckdb.DuckDBPyConnection) -> DataRange:
    """The first and last ``ts`` of the store's ``events``; :class:`InputError` if it has none."""
    first, last = con.execute(f"SELECT min(ts), max(ts) FROM {schema.EVENTS}").fetchall()[0]
    if first is None:
        raise InputError("store: the events table is empty; re-run `omnicrm ingest` with sources that have events")
    return DataRange(first, last)


def store_data_range(store: str | Path) -> DataRange:
    """:func:`data_range` of the store file at ``store`` (opened read-only, then closed)."""
    from omnicrm.store.duckdb_store import open_store

    con = open_store(store)
    try:
        return data_range(con)
    finally:
        con.close()


def check_date(
    when: date | datetime,
    span: DataRange,
    what: str = "--cutoff",
    *,
    max_days_after: int = MAX_DAYS_AFTER,
    before_first: bool = False,
) -> None:
    """Refuse a date the store cannot support; warn about one a little after its last event.

    A date on or before the first event's day, or more than ``max_days_after`` days after the last
    event's day, raises :class:`ConfigError` naming the date (``what`` names the option, e.g.
    ``--as-of``) and the store's range. A date more than one day after the last event's day (the
    day after it reads everything) but within ``max_days_after`` warns (:class:`LateDateWarning`).
    ``before_first=True`` lets early dates through, for a command whose own message says what an
    early date leaves it without.
    """
    day = when.date() if isinstance(when, datetime) else when
    first, last = span.first.date(), span.last.date()
    covers = f"the store covers {span}"
    if day < first and not before_first:
        raise ConfigError(f"{what} {day} is before the store's first event ({first}); {covers}")
    if day == first and not before_first:
        raise ConfigError(f"{what} {day} is the day of the store's first event, so no event precedes it; {covers}")
    gap = (day - last).days
    if gap > max_days_after:
        raise ConfigError(
            f"{what} {day} is {gap} days after the store's last event ({last}); {covers}. "
            f"At most {max_days_after} days are allowed: ingest newer data or choose an earlier date"
        )
    if gap > 1:
        warnings.warn(
            f"{what} {day} is {gap} days after the store's last event ({last}): activity since then is not "
            "in the store, so recent customers look inactive",
            LateDateWarning,
            stacklevel=2,
        )
