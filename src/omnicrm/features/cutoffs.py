"""Cutoffs: the time-split types every step shares.

A cutoff ``T`` splits time: features read only rows with ``ts < T``, labels only ``[T, T+h)``.
Two things live here, once:

* :func:`normalize_cutoff` turns a ``date`` (midnight UTC at the start of that day) or a
  ``datetime`` into the naive UTC ``datetime`` the store's timestamps are compared with. Every step
  that turns a date into a cutoff calls it (features, tasks, uplift effects).
* :class:`CutoffSpec` is the config form of a list of cutoffs: explicit dates, or the first day of
  every month in ``start..end``.

The module imports nothing from the wiring layer, so configs of any step can use it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Literal

from pydantic import model_validator

from omnicrm.config import StrictModel


def normalize_cutoff(cutoff: datetime | date) -> datetime:
    """A cutoff as a naive UTC ``datetime`` (the store holds naive UTC timestamps).

    Parameters
    ----------
    cutoff : datetime or date
        A ``date`` means midnight UTC at the start of that day; an aware ``datetime`` is converted
        to UTC; a naive ``datetime`` is taken to be UTC already. A ``pandas.Timestamp`` becomes a
        plain ``datetime``.

    Returns
    -------
    datetime
        Naive, in UTC.

    Raises
    ------
    ValueError
        For ``pandas.NaT``.
    TypeError
        For anything that is not a date or a datetime.
    """
    if isinstance(cutoff, datetime):
        if cutoff != cutoff:  # pandas.NaT is a datetime that is not equal to itself
            raise ValueError("a cutoff must be a real point in time, got NaT")
        if cutoff.tzinfo is not None:
            cutoff = cutoff.astimezone(UTC).replace(tzinfo=None)
        # pandas.Timestamp -> plain datetime, so literals and equality behave the same everywhere
        return datetime(
            cutoff.year,
            cutoff.month,
            cutoff.day,
            cutoff.hour,
            cutoff.minute,
            cutoff.second,
            cutoff.microsecond,
        )
    if isinstance(cutoff, date):
        return datetime.combine(cutoff, time())
    raise TypeError(f"a cutoff must be a datetime or a date, got {type(cutoff).__name__}: {cutoff!r}")


class CutoffSpec(StrictModel):
    """Cutoffs as an explicit list or a monthly range (first day of each month, ``start..end``).

    Attributes
    ----------
    dates : list of date, optional
        Explicit cutoffs (used as given, sorted and de-duplicated).
    start, end : date, optional
        A monthly range: the first day of every month from ``start`` (or the month after, when
        ``start`` is not a first) to ``end`` inclusive.
    every : {"month"}
        The step of the range.
    """

    dates: list[date] | None = None
    start: date | None = None
    end: date | None = None
    every: Literal["month"] = "month"

    @model_validator(mode="after")
    def _check(self) -> CutoffSpec:
        if self.dates is None and (self.start is None or self.end is None):
            raise ValueError("give either 'dates' (a list) or both 'start' and 'end'")
        if self.start and self.end and self.end < self.start:
            raise ValueError(f"'end' ({self.end}) is before 'start' ({self.start})")
        return self

    def as_list(self) -> list[date]:
        """The cutoff dates, sorted and unique.

        Returns
        -------
        list of date
        """
        if self.dates is not None:
            return sorted(set(self.dates))
        assert self.start and self.end
        out, y, m = [], self.start.year, self.start.month
        first = date(y, m, 1) if self.start.day == 1 else _next_month(date(y, m, 1))
        d = first
        while d <= self.end:
            out.append(d)
            d = _next_month(d)
        return out


def _next_month(d: date) -> date:
    return date(d.year + d.month // 12, d.month % 12 + 1, 1)
