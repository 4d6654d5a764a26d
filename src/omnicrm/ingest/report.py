"""What ingest reports per source, and the rule that no source is lost silently.

:class:`SourceCounts` is one row of the ingest report (rows in, accepted, quarantined, top reasons);
:func:`check_losses` stops a run before anything is written when a source yields nothing or
quarantines more than its mapping allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omnicrm.errors import InputError


@dataclass
class SourceCounts:
    """Rows in, accepted and quarantined (with reasons) for one source file of an ingest run."""

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
        """Share of the rows read that were quarantined (0 for an empty file)."""
        return self.quarantined / self.rows_in if self.rows_in else 0.0


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
            # a file with rows that all fail says what was expected; allow_empty is for empty exports only
            fix = (
                "fix the file or the mapping (the reasons say what was expected)"
                if c.rows_in
                else "set 'allow_empty: true' in its mapping if it may be empty"
            )
            problems.append(
                f"source '{c.source}' ({c.file}): 0 of {c.rows_in:,} rows accepted (top reasons: {top}); {fix}"
            )
        elif c.quarantine_share > c.max_quarantine_share:
            problems.append(
                f"source '{c.source}' ({c.file}): {c.quarantine_share:.1%} of {c.rows_in:,} rows quarantined, "
                f"above its limit of {c.max_quarantine_share:.0%} (top reasons: {top}); fix the file or the "
                "mapping, or raise 'max_quarantine_share' in the mapping"
            )
    if problems:
        raise InputError(f"{config_path}: ingest stopped, nothing was written:\n  " + "\n  ".join(problems))
