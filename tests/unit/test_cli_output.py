"""What the commands print when their output is a log (a file or pipe) and when it is a terminal.

In a log every table cell is complete however wide the table, titles are lines of their own, and
each step prints one line with the time since the command started; on a terminal rich draws its
progress bar and fits tables to the window, as before.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from typer.testing import CliRunner

from omnicrm.cli import app

STEP = re.compile(r"^\[ *\d+\.\d+s\] (.+)$", re.MULTILINE)

#: a readout whose key cells are long: 235 columns wide, more than a terminal (or the 200 columns
#: that were given to a file before) holds without squeezing its cells
CAMPAIGNS = ["CMP001-spring-reactivation-email-wave-2-long-name", "CMP002-winback-push-notification-test-long-name"]
ACTIONS = ["discount_10pct_on_the_whole_basket_for_members", "free_shipping_on_any_order_above_twenty_euros"]
TITLE = "campaign readout (difference in means vs control, Welch 95% CI)"


def _readout(progress) -> SimpleNamespace:  # noqa: ANN001 - the pipeline's progress callback
    progress("readout: loading data", 0.0)
    progress("readout: loading data", 0.3)  # the same step again: no second line
    progress("readout: effects by campaign", 0.5)
    rows = [
        {
            "campaign_id": c,
            "action": a,
            "outcome": "purchase_within_fourteen_days_of_the_send",
            "n_t": 1234,
            "n_c": 1200,
            "mean_t": 0.2,
            "mean_c": 0.1523,
            "ate": 0.04771,
            "se": 0.01,
            "ci_low": 0.0281,
            "ci_high": 0.06732,
            "p_value": 0.0004,
            "mde": 0.031,
            "relative_lift": 0.31,
        }
        for c in CAMPAIGNS
        for a in ACTIONS
    ]
    progress("readout: done", 1.0)
    return SimpleNamespace(table=pd.DataFrame(rows), segments=None)


@pytest.fixture
def readout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``omnicrm readout`` on a wide table (the pipeline replaced); returns the command line."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "uplift.yaml").write_text("name: x\n")
    monkeypatch.setattr("omnicrm.pipeline.uplift.run_readout", lambda config, progress: _readout(progress))
    return ["readout", "uplift.yaml"]


def test_in_a_log_every_cell_is_complete_and_every_step_is_a_line(readout: list[str]) -> None:
    res = CliRunner().invoke(app, readout)  # the runner's output is not a terminal
    assert res.exit_code == 0, res.output
    out = res.output
    for text in [*CAMPAIGNS, *ACTIONS, "purchase_within_fourteen_days_of_the_send", "[+0.0281, +0.06732]"]:
        assert text in out
    assert "…" not in out
    widths = {len(line) for line in out.splitlines() if line.startswith(("┃", "│"))}
    assert len(widths) == 1 and widths.pop() > 200  # one table, drawn at its natural width
    assert TITLE in out.splitlines()  # a line of its own, not centred and wrapped over the table
    assert STEP.findall(out) == ["readout: loading data", "readout: effects by campaign", "readout: done", "done"]
    assert out.index("readout: done") < out.index(TITLE)


def test_on_a_terminal_the_progress_is_a_bar_and_not_step_lines(readout: list[str]) -> None:
    res = CliRunner().invoke(app, readout, env={"TTY_COMPATIBLE": "1", "COLUMNS": "120"})  # rich: a terminal
    assert res.exit_code == 0, res.output
    assert not STEP.findall(res.output)
    assert "━" in res.output  # the bar
    assert "…" in res.output  # rich fits the table to the 120-column window, as before


def test_a_step_that_fails_leaves_its_line_and_then_the_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omnicrm.errors import InputError

    def failing(config, progress):  # noqa: ANN001, ANN202
        progress("readout: loading data", 0.0)
        raise InputError("uplift.yaml: key 'source': no such store")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("omnicrm.pipeline.uplift.run_readout", failing)
    res = CliRunner().invoke(app, ["readout", "uplift.yaml"])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert STEP.fullmatch(lines[0]) and lines[0].endswith("] readout: loading data")
    assert lines[1:] == ["error: uplift.yaml: key 'source': no such store"]  # no "done" after a failure
