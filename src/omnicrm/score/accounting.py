"""Every customer accounted for: per step, the customers in = scored + excluded with a reason.

A step's customers in are every customer of the store (the chunk being scored). Each is either
scored (has at least one output row) or has exactly one ``excluded`` row naming the step and the
reason, never both and never neither. :meth:`Ledger.add` checks one chunk of one step and raises
:class:`AccountingError` at once when the sets do not add up, so a run fails loudly instead of
publishing outputs with customers silently missing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


class AccountingError(RuntimeError):
    """Customers in a step are not exactly the scored plus the excluded ones (a bug, never a user error)."""


@dataclass
class StepCount:
    """The running counts of one step."""

    customers_in: int = 0
    scored: int = 0
    excluded: int = 0
    reasons: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counts, reasons sorted by count then text."""
        ordered = sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        return {
            "customers_in": self.customers_in,
            "scored": self.scored,
            "excluded": self.excluded,
            "excluded_by_reason": dict(ordered),
        }


@dataclass
class Ledger:
    """Counts per step over all chunks, checked as they are added."""

    steps: dict[str, StepCount] = field(default_factory=dict)

    def add(self, step: str, customers: np.ndarray, scored: np.ndarray, excluded: pd.DataFrame) -> None:
        """Check and count one chunk of ``step``.

        Parameters
        ----------
        step : str
            The step's name (as in the ``excluded`` table's ``step`` column).
        customers : ndarray
            The customers in (distinct ids).
        scored : ndarray
            The customers with output rows (repeats allowed: long tables).
        excluded : DataFrame
            The step's ``excluded`` rows for this chunk (``customer_id``, ``step``, ``reason``).

        Raises
        ------
        AccountingError
            A customer scored and excluded, excluded twice, in neither, or scored or excluded
            without being in; the message gives the counts and a few ids.
        """
        ids = pd.Index(np.asarray(customers, dtype=object), dtype=object)
        got = pd.Index(pd.unique(np.asarray(scored, dtype=object)), dtype=object)
        # object indexes: pandas 3 would make Arrow strings of them, whose isin and set operations were
        # 50x slower here (0.6 s per chunk of 50,000)
        out = excluded["customer_id"].astype(object)
        problems = []
        if not ids.is_unique:
            problems.append(f"{int(ids.duplicated().sum())} customer(s) in twice")
        if (excluded["step"] != step).any():
            problems.append(f"excluded rows of other steps: {sorted(set(excluded['step']) - {step})}")
        if excluded["reason"].isna().any() or (excluded["reason"].astype(str).str.strip() == "").any():
            problems.append("excluded row(s) without a reason")
        twice = out[out.duplicated()]
        if len(twice):
            problems.append(f"{len(twice)} customer(s) excluded twice, e.g. {list(twice[:3])}")
        both = got.intersection(pd.Index(out, dtype=object))
        if len(both):
            problems.append(f"{len(both)} customer(s) both scored and excluded, e.g. {list(both[:3])}")
        unknown = got.union(pd.Index(out, dtype=object)).difference(ids)
        if len(unknown):
            problems.append(f"{len(unknown)} customer(s) scored or excluded but not in, e.g. {list(unknown[:3])}")
        lost = ids.difference(got.union(pd.Index(out, dtype=object)))
        if len(lost):
            problems.append(f"{len(lost)} customer(s) neither scored nor excluded, e.g. {list(lost[:3])}")
        if problems:
            raise AccountingError(
                f"step {step}: {len(ids)} customers in, {len(got)} scored, {len(out)} excluded; " + "; ".join(problems)
            )
        count = self.steps.setdefault(step, StepCount())
        count.customers_in += len(ids)
        count.scored += len(got)
        count.excluded += len(out)
        count.reasons.update(excluded["reason"].astype(str).tolist())

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Every step's counts (JSON-ready), in the order the steps were first added."""
        return {step: count.as_dict() for step, count in self.steps.items()}

    def check_totals(self, customers: int) -> None:
        """Every step saw all ``customers`` of the store (a chunk skipped by a step is a bug)."""
        wrong = {s: c.customers_in for s, c in self.steps.items() if c.customers_in != customers}
        if wrong:
            raise AccountingError(f"steps did not see all {customers} customers of the store: {wrong}")


def counted_step(
    step: str,
    customers: int,
    *,
    touched: int,
    scored: int,
    excluded: int,
    both: int,
    twice: int,
    unknown: int,
    reasons: dict[str, int],
) -> StepCount:
    """One step's counts from aggregates over its whole output (an engine that counts with queries).

    Parameters
    ----------
    step : str
    customers : int
        The customers in (every customer of the store).
    touched : int
        Distinct customers with an output row or an ``excluded`` row of the step.
    scored, excluded : int
        Distinct customers with output rows; the step's ``excluded`` rows.
    both, twice, unknown : int
        Customers scored and excluded; excluded more than once; scored or excluded but not a
        customer of the store.
    reasons : dict
        ``excluded`` rows per reason.

    Raises
    ------
    AccountingError
        As :meth:`Ledger.add`: the counts do not add up.
    """
    problems = []
    if twice:
        problems.append(f"{twice} customer(s) excluded twice")
    if both:
        problems.append(f"{both} customer(s) both scored and excluded")
    if unknown:
        problems.append(f"{unknown} customer(s) scored or excluded but not in")
    lost = customers - (touched - unknown)
    if lost:
        problems.append(f"{lost} customer(s) neither scored nor excluded")
    if sum(reasons.values()) != excluded:
        problems.append(f"{excluded} excluded rows but {sum(reasons.values())} with a reason")
    if problems:
        raise AccountingError(
            f"step {step}: {customers} customers in, {scored} scored, {excluded} excluded; " + "; ".join(problems)
        )
    return StepCount(customers, scored, excluded, Counter(reasons))
