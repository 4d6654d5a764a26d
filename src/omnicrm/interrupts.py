"""Ctrl-C and SIGTERM: recorded so that one Python swallowed still stops the command, and kept off worker threads.

Python runs a signal's handler wherever the main thread is; when that is inside a garbage
collector's or a weak reference's callback, the ``KeyboardInterrupt`` it raises is printed as
"Exception ignored in ..." and dropped, and the command carried on as if never interrupted (seen in
``omnicrm train`` while it logged to MLflow). The command line's handlers (:mod:`omnicrm.cli.app`)
also record the signal here; every progress report (:func:`omnicrm.cli.render.reporting`) and the
moment registered versions get their aliases (:func:`omnicrm.tracking.staged_versions`) check it.

Worker threads (:func:`worker_pool`) block both signals. The kernel delivers a process's signal to
any thread that does not block it, and a worker that took it would let the main thread act on it
even inside :func:`omnicrm.store.staging.signals_deferred`, which blocks the signals on the main
thread only: an interrupt inside an MLflow store write once left its SQLite lock held, and the runs
RUNNING after a 40 s wait.
"""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

#: a command's SIGINT / SIGTERM was received (cleared when a command starts)
SIGINT_SEEN = threading.Event()
SIGTERM_SEEN = threading.Event()


def check() -> None:
    """Raise ``KeyboardInterrupt`` if an interrupt of this command was received.

    On the main thread only: a worker thread's progress report is no place to unwind the command.
    """
    if threading.current_thread() is threading.main_thread() and (SIGINT_SEEN.is_set() or SIGTERM_SEEN.is_set()):
        raise KeyboardInterrupt


def block_signals() -> None:
    """Block SIGINT and SIGTERM on the calling thread: the main thread alone receives them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def worker_pool(workers: int, name: str) -> ThreadPoolExecutor:
    """A thread pool whose threads leave Ctrl-C and SIGTERM to the main thread (see the module docstring)."""
    return ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=block_signals)
