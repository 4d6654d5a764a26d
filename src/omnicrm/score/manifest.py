"""A scoring run's ``manifest.json`` and the clock that times each step and its peak memory.

The manifest holds the keys of :data:`omnicrm.schema.MANIFEST_KEYS` (as_of, run id, code version,
config hash, data fingerprint, models, rows in and out per table, seconds and peak memory per step)
and, beside them, the accounting per step, the drift checks and the run's settings.

Peak memory per step is the largest resident set size (RSS, DuckDB's memory included) sampled every
20 ms while the step runs, read from ``/proc/self/statm``; where that file does not exist (not
Linux) the process's lifetime peak (``getrusage``) is reported instead, which only grows.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnicrm import schema

_STATM = Path("/proc/self/statm")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """The process's resident set size now (Linux), else its lifetime peak."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@dataclass
class StepTime:
    """Seconds, peak memory and rows of one step (summed over its chunks; peak over them)."""

    seconds: float = 0.0
    peak_memory_bytes: int = 0
    rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {"seconds": round(self.seconds, 3), "peak_memory_bytes": self.peak_memory_bytes, "rows": self.rows}


@dataclass
class StepClock:
    """Times steps (a step may run once per chunk: its times add up, its peak is the largest)."""

    interval: float = 0.02
    steps: dict[str, StepTime] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[StepTime]:
        """Time the block as (part of) step ``name``; the yielded record takes the step's ``rows``."""
        record = self.steps.setdefault(name, StepTime())
        peak = [rss_bytes()]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(self.interval):
                peak[0] = max(peak[0], rss_bytes())

        sampler = threading.Thread(target=sample, name=f"rss-{name}", daemon=True)
        started = time.perf_counter()
        sampler.start()
        try:
            yield record
        finally:
            stop.set()
            sampler.join()
            record.seconds += time.perf_counter() - started
            record.peak_memory_bytes = max(record.peak_memory_bytes, peak[0], rss_bytes())

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Every step, in the order first run."""
        return {name: t.as_dict() for name, t in self.steps.items()}


def build_manifest(
    *,
    as_of: str,
    run_id: str,
    code_version: Mapping[str, str],
    config_hash: str,
    data_fingerprint: str,
    models: list[dict[str, Any]],
    tables: Mapping[str, Mapping[str, int]],
    steps: Mapping[str, Mapping[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """The manifest: the :data:`~omnicrm.schema.MANIFEST_KEYS` first, in order, then ``extra``.

    Raises
    ------
    ValueError
        A table without ``rows_in`` and ``rows_out``, or a step without seconds and peak memory.
    """
    for table, counts in tables.items():
        if not {"rows_in", "rows_out"} <= set(counts):
            raise ValueError(f"manifest: table {table} lacks rows_in/rows_out: {dict(counts)}")
    for step, t in steps.items():
        if not {"seconds", "peak_memory_bytes"} <= set(t):
            raise ValueError(f"manifest: step {step} lacks seconds/peak_memory_bytes: {dict(t)}")
    core = {
        "as_of": as_of,
        "run_id": run_id,
        "code_version": dict(code_version),
        "config_hash": config_hash,
        "data_fingerprint": data_fingerprint,
        "models": models,
        "tables": {k: dict(v) for k, v in tables.items()},
        "steps": {k: dict(v) for k, v in steps.items()},
    }
    assert tuple(core) == schema.MANIFEST_KEYS  # the contract's order
    return core | extra
