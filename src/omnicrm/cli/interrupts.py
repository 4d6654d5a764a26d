"""A Ctrl-C or SIGTERM that Python swallowed still stops the command, at its next step.

Python runs a signal's handler wherever the main thread is; when that is inside a garbage
collector's or a weak reference's callback, the ``KeyboardInterrupt`` it raises is printed as
"Exception ignored in ..." and dropped, and the command carried on as if never interrupted (seen in
``omnicrm train`` while it logged to MLflow). The handlers (:mod:`omnicrm.cli.app`) also record the
signal here, and every progress report (:func:`omnicrm.cli.render.reporting`) checks it.
"""

from __future__ import annotations

import threading

#: a command's SIGINT / SIGTERM was received (cleared when a command starts)
SIGINT_SEEN = threading.Event()
SIGTERM_SEEN = threading.Event()


def check() -> None:
    """Raise ``KeyboardInterrupt`` if an interrupt of this command was received.

    On the main thread only: a worker thread's progress report is no place to unwind the command.
    """
    if threading.current_thread() is threading.main_thread() and (SIGINT_SEEN.is_set() or SIGTERM_SEEN.is_set()):
        raise KeyboardInterrupt
