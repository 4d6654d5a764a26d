"""The ``omnicrm`` console script: the command line, with Ctrl-C handled from the first instant.

:mod:`omnicrm.cli` reports an interrupt of a running command itself. Two moments lie outside it:
importing the command line (typer, rich: a few hundred milliseconds in which Ctrl-C printed a
30-line traceback from the import machinery) and parsing the arguments (where typer ends with
status 130 and prints nothing). This module imports nothing heavy, so it can catch both and say
the same one line.

When the command has ended, the objects it leaves are moved out of the garbage collector's reach
(:func:`gc.freeze`) before the interpreter shuts down: the shutdown otherwise runs full collections
over everything the command imported and made (about 475,000 objects after ``omnicrm train``), which
took 0.6-0.8 s of a 14 s ``train`` after its last line was printed (``benchmarks/README.md``). The
command's files, runs and stores are closed by then; what a frozen object would still release at
exit (memory) the operating system takes back.
"""

from __future__ import annotations

import gc
import sys

_STOPPED = "interrupted: omnicrm stopped before any work; nothing was written\n"


def main() -> None:
    """Run the command line; exit 130 with one line when interrupted, at start-up included."""
    try:
        # inside the try: under load a Ctrl-C 0.1 s after start landed in this import (enum's
        # metaclass, imported by signal) and printed a traceback
        import signal

        from omnicrm import cli
    except KeyboardInterrupt:
        sys.stderr.write(_STOPPED)
        raise SystemExit(130) from None
    try:
        cli.app()
    except KeyboardInterrupt:
        sys.stderr.write(_STOPPED)
        raise SystemExit(130) from None
    except SystemExit as exc:
        if exc.code == 130 and not cli.INTERRUPT_REPORTED.is_set():
            sys.stderr.write(_STOPPED)
        raise
    finally:
        # the command has ended and said how; a Ctrl-C or a scheduler's SIGTERM while the interpreter
        # shuts down would only kill it without a word (a run that completed and registered its model
        # exited -15, seen in an adversarial sweep), and change the exit status of a finished run
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # after the command, not before: its own collections still free what it drops while it runs
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    main()
