"""A command run as a scheduled job (``omnicrm ingest ... > ingest.log 2>&1``) writes a readable log.

The real console script in a child process, its output redirected to a file: every table cell is
complete, titles are lines of their own, each step is one line with the time since the start, and
warnings are ``warning:`` lines.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_ingest_redirected_to_a_file_logs_steps_and_full_tables(tiny_sources: Path) -> None:
    log = tiny_sources.parent / "ingest.log"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TTY_COMPATIBLE", "FORCE_COLOR")}
    with log.open("w") as f:
        run = subprocess.run(
            [sys.executable, "-m", "omnicrm.entry", "ingest", str(tiny_sources)],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=300,
            check=False,
        )
    text = log.read_text(encoding="utf-8")
    assert run.returncode == 0, text
    steps = re.findall(r"^\[ *(\d+\.\d+)s\] (.+)$", text, re.MULTILINE)
    assert [s for _, s in steps] == [
        "ingest products",
        "ingest crm",
        "ingest pos",
        "ingest shop",
        "resolve identities",
        "write store",
        "store published: store/omnicrm.duckdb",
        "done",
    ]
    seconds = [float(t) for t, _ in steps]
    assert seconds == sorted(seconds)
    lines = text.splitlines()
    assert "ingest -> store/omnicrm.duckdb" in lines
    assert "quarantine reasons (top 12; all rows are in the store's quarantine table)" in lines
    # the longest cells of the quarantine table, each on one line of the file
    for reason in (
        "unparseable till_time: expected timestamp (%d/%m/%Y %H:%M:%S)",
        "unknown kind: expected one of RETURN, SALE",
        "negative price on a sale",
    ):
        assert re.search(rf"│ pos +│ {re.escape(reason)} +│ +1 │", text), reason
    assert "…" not in text and "\x1b[" not in text  # nothing squeezed, no colour codes in a file
    assert text.index("] done") < text.index("ingest -> store/omnicrm.duckdb")
