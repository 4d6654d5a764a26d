"""The ``omnicrm`` command group and the one error handler every command runs inside.

Every command runs inside :func:`_handled`:

* a user error (:class:`~omnicrm.errors.OmnicrmError`) prints one ``error:`` line and exits 2, as
  click's own usage errors do;
* an interrupt (Ctrl-C, DuckDB's "Query interrupted") prints one ``interrupted:`` line and exits
  130, SIGTERM (a scheduler's timeout, ``kill``) one ``terminated:`` line and exits 143; outputs
  are published atomically, so earlier ones are unchanged;
* anything else is a bug: its traceback goes to a log file (``$OMNICRM_LOG_DIR``, default
  ``logs/`` in the working folder), and one line names the exception and the log; exit 1.

``omnicrm --debug COMMAND`` (or ``OMNICRM_DEBUG=1``) prints the traceback as well. The known
third-party notices of :mod:`omnicrm.quiet` are switched off; every other warning is shown once
as a ``warning:`` line.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from typer.core import TyperGroup

from omnicrm import interrupts, quiet
from omnicrm.cli.render import say
from omnicrm.errors import OmnicrmError


class _HandledGroup(TyperGroup):
    """The group of all commands: each runs inside :func:`_handled`, the one error handler."""

    def invoke(self, ctx: typer.Context) -> object:
        """Run the command line's command inside the error handler, SIGTERM handled like Ctrl-C."""
        argv = [*getattr(ctx, "_protected_args", []), *ctx.args]  # read before the group consumes them
        with _handled(ctx, argv), _sigterm_interrupts():
            return super().invoke(ctx)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's timeout, ``kill``): handled like Ctrl-C, so temporary files are removed."""


#: set once a command's interrupt was reported (omnicrm.entry reports the others)
INTERRUPT_REPORTED = threading.Event()


def _raise_terminated(signum: int, frame: object) -> None:  # noqa: ARG001 - a signal handler's signature
    interrupts.SIGTERM_SEEN.set()
    raise Terminated()


def _raise_interrupted(signum: int, frame: object) -> None:  # noqa: ARG001 - a signal handler's signature
    interrupts.SIGINT_SEEN.set()  # remembered: Python drops an interrupt raised inside a gc callback
    raise KeyboardInterrupt


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While a command runs, SIGTERM unwinds it like Ctrl-C (writers clean up, the store stays as it was).

    Both signals are also recorded (:mod:`omnicrm.interrupts`), so one Python swallowed still
    stops the command at its next progress report.
    """
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    interrupts.SIGTERM_SEEN.clear()
    interrupts.SIGINT_SEEN.clear()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    previous_int = signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        # the command is over: a library call after it (a notebook, a test) is not interrupted by them
        interrupts.SIGTERM_SEEN.clear()
        interrupts.SIGINT_SEEN.clear()


app = typer.Typer(
    help="omnicrm: unified customer history, point-in-time features and models for omni-channel retail.",
    no_args_is_help=True,
    add_completion=False,
    cls=_HandledGroup,
)

#: the config-file argument most commands take first
ConfigArg = Annotated[Path, typer.Argument(help="YAML config file.", show_default=False)]


@app.callback()
def _options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="OMNICRM_DEBUG",
            help="On an error, print the full traceback too (it is always written to the log file).",
        ),
    ] = False,
) -> None:
    # read by _handled from the group's parameters; nothing to do here
    pass


@contextmanager
def _handled(ctx: typer.Context, argv: list[str]) -> Iterator[None]:
    """Turn whatever a command raises into one line and an exit status (see the module docstring)."""
    debug = bool(ctx.params.get("debug"))
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # every warning once, as a "warning:" line ...
        quiet.apply()  # ... but the known third-party notices
        warnings.showwarning = _show_warning  # type: ignore[assignment]
        try:
            yield
        except (typer.Exit, typer.Abort, typer.TyperException, SystemExit, GeneratorExit):
            raise  # the command line's own exits and usage errors (exit 2) stay as they are
        except BrokenPipeError:
            raise  # `omnicrm ... | head`: click exits quietly
        except BaseException as exc:  # noqa: BLE001 - the one place every failure is reported
            command = ctx.invoked_subcommand or "omnicrm"
            if _interrupted(exc):
                if debug:
                    _print_traceback(exc)
                how, status = ("terminated", 143) if _terminated(exc) else ("interrupted", 130)
                INTERRUPT_REPORTED.set()
                say(f"[bold yellow]{how}:[/] {escape(command)} stopped; no output was left half-written")
                raise typer.Exit(status) from None
            if debug:
                _print_traceback(exc)
            if isinstance(exc, OmnicrmError):
                say(f"[bold red]error:[/] {escape(str(exc))}")
                raise typer.Exit(2) from None
            log = _write_log(exc, ["omnicrm", *argv])
            where = f"details: {log}; " if log else ""
            say(
                f"[bold red]error:[/] {escape(type(exc).__name__)}: {escape(_first_line(exc))} "
                f"({escape(where)}rerun with --debug for the traceback)"
            )
            raise typer.Exit(1) from None


def _interrupted(exc: BaseException) -> bool:
    """Ctrl-C, as Python or DuckDB report it, here or anywhere in the chain of causes."""
    duckdb = sys.modules.get("duckdb")  # not imported: cannot be DuckDB's
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt) or (duckdb is not None and isinstance(e, duckdb.InterruptException)):
            return True
        if isinstance(e, RuntimeError) and str(e).strip().startswith("Query interrupted"):
            return True
        e = e.__cause__ or e.__context__
    return False


def _terminated(exc: BaseException) -> bool:
    # DuckDB turns the handler's exception into its own InterruptException, so the signal is remembered
    return isinstance(exc, Terminated) or interrupts.SIGTERM_SEEN.is_set()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else "(no message)"
    return line if len(line) <= 300 else line[:297] + "..."


def _print_traceback(exc: BaseException) -> None:
    sys.stderr.write("".join(traceback.format_exception(exc)))
    sys.stderr.flush()


def _write_log(exc: BaseException, argv: list[str]) -> Path | None:
    """Write the traceback to ``omnicrm-<UTC time>-<pid>.log``; returns its path (None if nowhere was writable).

    The folder is ``$OMNICRM_LOG_DIR`` or ``logs/`` in the working folder (created with a
    ``.gitignore`` of ``*``: an error message can quote a data value, so logs stay out of git),
    falling back to the system temp folder. The file is readable by its owner only.
    """
    import tempfile

    from omnicrm import __version__

    now = datetime.now(UTC)
    name = f"omnicrm-{now:%Y%m%dT%H%M%SZ}-{os.getpid()}.log"
    text = (
        f"time: {now.isoformat(timespec='seconds')}\ncommand: {' '.join(argv)}\ncwd: {Path.cwd()}\n"
        f"omnicrm {__version__}, Python {sys.version.split()[0]}, {sys.platform}\n\n"
        + "".join(traceback.format_exception(exc))
    )
    configured = os.environ.get("OMNICRM_LOG_DIR")
    for folder in (Path(configured) if configured else Path("logs"), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not configured and folder == Path("logs") and not (folder / ".gitignore").exists():
                (folder / ".gitignore").write_text("*\n", encoding="utf-8")
            path = folder / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            return path
        except OSError:
            continue
    return None


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    say(f"[yellow]warning:[/] {escape(str(message))}")
