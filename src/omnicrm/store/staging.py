"""Temporary files of atomic writers, and the sweep that removes those a killed run left behind.

Every writer of a published file (the store, output tables, the feature cache) writes a temporary
file beside its target and moves it into place with :func:`os.replace`. A run killed with
``SIGKILL`` (or by a scheduler's timeout) cannot remove its temporary file, and a store's is
tens of megabytes with a DuckDB ``.wal`` beside it. So temporary names carry the writer's process
id, ``.<name>.<pid>.<random>.tmp``, and before writing, a writer removes the temporary files of the
same target whose process is gone, with a warning naming each one.

A process id says nothing about other machines: two hosts writing one target on a shared file
system could remove each other's files. omnicrm runs on one machine per data folder.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: temporary files named before process ids were part of the name (``.<name>.<8 hex>.tmp``) cannot
#: say whether their writer still runs; they are removed once untouched for this long (seconds)
LEGACY_MIN_AGE = 3600.0


class StaleFileWarning(UserWarning):
    """A temporary file or folder left by a killed run was removed."""


def staging_path(target: Path) -> Path:
    """A fresh temporary path beside ``target``: ``.<name>.<pid>.<random>.tmp``.

    Beside the target, so :func:`os.replace` stays on one file system (atomic on POSIX).
    """
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def discard(tmp: Path) -> None:
    """Remove a temporary file and the DuckDB write-ahead log beside it, if they exist."""
    for p in (tmp, tmp.with_name(tmp.name + ".wal")):
        p.unlink(missing_ok=True)


@contextmanager
def staged(target: Path) -> Iterator[Path]:
    """Yield a temporary path for ``target``; move it over ``target`` when the block succeeds.

    Stale temporary files of ``target`` are swept first. The temporary file is removed whatever
    happens in the block, an interrupt (``KeyboardInterrupt``) included.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)
    tmp = staging_path(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        discard(tmp)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block ends (then they act as usual).

    For the few system calls that must happen together or not at all (moving several files of one
    output into place, recording what was registered), and for every MLflow store write: an
    interrupt inside one left its SQLite lock held. Signals are only deferred, never lost (the first
    one acts when the block ends); ``SIGKILL`` cannot be deferred.

    On the main thread the signals' handlers are swapped for a recorder while the block runs. Python
    runs every handler on the main thread, whichever thread the kernel delivered the signal to, so
    this holds however many threads the process has (blocking the signals on the main thread alone,
    as other threads are still eligible, does not). Elsewhere the signals are blocked on the thread.
    """
    import signal

    deferred = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in deferred}
    # off the main thread, or with a handler installed outside Python (getsignal gives None): blocked
    if threading.current_thread() is not threading.main_thread() or None in previous.values():
        old = signal.pthread_sigmask(signal.SIG_BLOCK, deferred)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return
    received: list[tuple[int, Any]] = []
    for s in deferred:
        signal.signal(s, lambda signum, frame: received.append((signum, frame)))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if received:
            signum, frame = received[0]
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


def sweep_stale(target: Path) -> list[Path]:
    """Remove temporary files of ``target`` whose writing process is no longer alive.

    Matches ``.<name>.<pid>.<random>.tmp`` and its ``.wal``, and the names of earlier omnicrm
    versions (``.<name>.<pid>.tmp``; ``.<name>.<8 hex>.tmp`` once older than
    :data:`LEGACY_MIN_AGE`). Warns once per removed file; returns the removed paths.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    name = re.escape(target.name)
    current = re.compile(rf"\.{name}\.(\d+)\.[0-9a-f]+\.tmp(\.wal)?")
    old_pid = re.compile(rf"\.{name}\.(\d+)\.tmp")
    old_uuid = re.compile(rf"\.{name}\.[0-9a-f]{{8}}\.tmp(\.wal)?")
    removed = []
    for p in sorted(target.parent.glob(f".{glob_escape(target.name)}.*")):
        m = current.fullmatch(p.name) or old_pid.fullmatch(p.name)
        if m:
            pid = int(m.group(1))
            if _alive(pid):
                continue
            owner = f"pid {pid}"
        elif old_uuid.fullmatch(p.name):
            if not _untouched_for(p, LEGACY_MIN_AGE):
                continue
            owner = "an earlier omnicrm version"
        else:
            continue
        if _remove(p):
            removed.append(p)
            warnings.warn(
                f"removed stale temporary file {p} left by a killed run ({owner})", StaleFileWarning, stacklevel=2
            )
    return removed


def staging_dir(parent: Path | None, prefix: str) -> Path:
    """Create a private folder ``<prefix><pid>-<random>`` in ``parent`` (default: the system temp folder)."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))


def sweep_stale_dirs(parent: Path | None, prefix: str) -> list[Path]:
    """Remove folders ``<prefix><pid>-<random>`` in ``parent`` whose process is no longer alive.

    ``parent`` defaults to the system temp folder (where :func:`staging_dir` puts them). Warns once
    per removed folder; returns the removed paths.
    """
    parent = Path(parent if parent is not None else tempfile.gettempdir())
    if not parent.is_dir():
        return []
    pattern = re.compile(rf"{re.escape(prefix)}(\d+)-[^/]+")
    removed = []
    for p in sorted(parent.glob(f"{glob_escape(prefix)}*")):
        m = pattern.fullmatch(p.name)
        if not m or not p.is_dir() or p.is_symlink() or _alive(int(m.group(1))):
            continue
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists():
            removed.append(p)
            warnings.warn(
                f"removed stale temporary folder {p} left by a killed run (pid {m.group(1)})",
                StaleFileWarning,
                stacklevel=2,
            )
    return removed


def glob_escape(name: str) -> str:
    """``name`` with the glob metacharacters ``*?[`` escaped (``glob.escape`` for a single name)."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (this process counts as alive)."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OverflowError:  # not a process id at all
        return False
    return True


def _untouched_for(p: Path, seconds: float) -> bool:
    try:
        return time.time() - p.stat().st_mtime > seconds
    except OSError:
        return False


def _remove(p: Path) -> bool:
    try:
        p.unlink()
    except OSError:  # gone already (another sweep was faster), a folder, or not ours to remove
        return False
    return True
