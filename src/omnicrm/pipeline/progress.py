"""The progress callback steps report to: ``progress(step, fraction_done)``.

Steps never print; the CLI passes a callback that drives a rich progress bar.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, float], None]


def silent(step: str, fraction: float) -> None:  # noqa: ARG001 - the do-nothing callback
    """A callback that reports nothing (tests, notebooks)."""
