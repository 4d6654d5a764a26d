"""The progress callback every step reports to: ``progress(step, fraction_done)``.

A ground module (it imports nothing from omnicrm), so steps and the wiring layer can both take a
callback without a step importing :mod:`omnicrm.pipeline`. Steps never print; the CLI passes a
callback that drives a rich progress bar, tests and notebooks pass :func:`silent`.
"""

from __future__ import annotations

from collections.abc import Callable

#: ``progress(step, fraction)``: ``step`` says what runs now, ``fraction`` in ``[0, 1]`` how far it is
Progress = Callable[[str, float], None]


def silent(step: str, fraction: float) -> None:  # noqa: ARG001 - the do-nothing callback
    """Report nothing (tests, notebooks).

    Parameters
    ----------
    step : str
        What the step is doing (ignored).
    fraction : float
        How far it is, in ``[0, 1]`` (ignored).
    """
