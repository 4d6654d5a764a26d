"""Helpers of the bad-input corpus (``test_bad_inputs.py``): cases, folder snapshots, outcome classes.

A case applies one bad input to a work folder holding a published store and a features file, runs
one ``omnicrm`` command in-process and is judged on its exit status, its message, tracebacks, and
whether every file that existed before the run is byte-identical afterwards with no new file left.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: outcome classes of the tally, in the order they are printed
CLEAR = "clear error"
SUCCESS = "documented success"
TRACEBACK = "traceback"
SILENT = "silent"
UNCLEAR = "unclear"  # exit 2 whose message does not name what is wrong, or an unexpected status
CLASSES = (CLEAR, SUCCESS, TRACEBACK, SILENT, UNCLEAR)


@dataclass
class Work:
    """A work folder: tiny raw sources and mappings, the ingest config, the published store and features."""

    root: Path
    ingest: Path  # the ingest config
    store: Path
    features_config: Path
    features: Path  # an earlier output of `omnicrm features`
    mlruns: Path  # OMNICRM_MLRUNS (absent until a case or a command creates it)
    extra: dict[str, Any] = field(default_factory=dict)  # what a setup hands to the command line (a port)

    def edit(self, rel: str, old: str, new: str) -> None:
        """Replace ``old`` by ``new`` in the text file ``rel`` (``old`` must be there)."""
        path = self.root / rel
        text = path.read_text(encoding="utf-8")
        assert old in text, (rel, old)
        path.write_text(text.replace(old, new, 1), encoding="utf-8")


Args = Sequence[str] | Callable[[Work], Sequence[str]]


@dataclass(frozen=True)
class Case:
    """One bad input: what to do to the work folder, which command to run, what must come out.

    ``status`` 2 is a user error; 0 a documented correct success, whose declared ``outputs``
    (paths relative to the work folder) may change and whose ``check`` must hold afterwards.
    ``setup`` may return an object to keep alive during the run (a listening socket).
    """

    name: str
    setup: Callable[[Work], Any] | None
    args: Args
    status: int
    message: str  # a regex searched in the combined output
    outputs: tuple[str, ...] = ()
    check: Callable[[Work], None] | None = None
    env: dict[str, str | None] = field(default_factory=dict)  # None unsets the variable

    def argv(self, work: Work) -> list[str]:
        return [str(a) for a in (self.args(work) if callable(self.args) else self.args)]


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: sha256 of a file's bytes, ``dir`` for a folder, ``-> target`` for a link."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = f"-> {p.readlink()}"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def compare(before: dict[str, str], after: dict[str, str], outputs: Sequence[str] = ()) -> list[str]:
    """Changed, removed and new entries, except the declared ``outputs`` (and folders above them)."""
    allowed = set(outputs) | {str(Path(o).parent.as_posix()) for o in outputs}
    problems = []
    for rel, digest in before.items():
        if rel in allowed:
            continue
        if rel not in after:
            problems.append(f"removed: {rel}")
        elif after[rel] != digest:
            problems.append(f"changed: {rel}")
    problems += [f"new: {rel}" for rel in after if rel not in before and rel not in allowed]
    return problems


@dataclass
class Outcome:
    """What a case produced and how it is judged."""

    case: str
    argv: list[str]
    exit_code: int
    output: str
    seconds: float
    exception: BaseException | None = None
    file_problems: list[str] = field(default_factory=list)
    check_problem: str | None = None
    log_text: str | None = None

    @property
    def traceback_seen(self) -> bool:
        crashed = self.exception is not None and not isinstance(self.exception, SystemExit)
        return crashed or "Traceback" in self.output or self.exit_code == 1

    def classify(self, expected_status: int, message: str) -> str:
        if self.traceback_seen:
            return TRACEBACK
        if self.file_problems or self.check_problem:
            return SILENT  # a loss (a changed or stray file, a wrong result), whatever the status
        if expected_status != 0 and self.exit_code == 0:
            return SILENT
        if self.exit_code != expected_status:
            return UNCLEAR
        if not re.search(message, self.output):
            return UNCLEAR
        return SUCCESS if expected_status == 0 else CLEAR

    def report(self) -> str:
        lines = [
            f"case {self.case}: omnicrm {' '.join(self.argv)}",
            f"exit status {self.exit_code} after {self.seconds:.1f} s",
            "output:",
            *("    " + line for line in self.output.rstrip().splitlines()[-25:]),
        ]
        if self.exception is not None and not isinstance(self.exception, SystemExit):
            lines.append(f"uncaught exception: {type(self.exception).__name__}: {self.exception}")
        if self.file_problems:
            lines.append("files: " + "; ".join(self.file_problems))
        if self.check_problem:
            lines.append(f"check: {self.check_problem}")
        if self.log_text:
            lines += ["log (last lines):", *("    " + line for line in self.log_text.rstrip().splitlines()[-8:])]
        return "\n".join(lines)


@dataclass
class Tally:
    """Outcome classes of every case run in this session, printed in pytest's terminal summary."""

    rows: dict[str, str] = field(default_factory=dict)  # case -> class

    def add(self, case: str, cls: str) -> None:
        self.rows[case] = cls

    def lines(self) -> list[str]:
        counts = {c: sum(v == c for v in self.rows.values()) for c in CLASSES}
        head = f"bad-input corpus: {len(self.rows)} cases tried: " + ", ".join(f"{counts[c]} {c}" for c in CLASSES)
        bad = [f"  {cls}: {case}" for case, cls in self.rows.items() if cls not in (CLEAR, SUCCESS)]
        return [head, *bad]

    # a pytest plugin hook: the fixture that owns the tally registers it with the plugin manager
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.rows:
            terminalreporter.section("bad-input corpus")
            for line in self.lines():
                terminalreporter.write_line(line)
