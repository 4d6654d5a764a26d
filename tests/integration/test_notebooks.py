"""Every notebook's code cells run top to bottom against the current package (no Jupyter needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.integration

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("OMNICRM_SALT", "notebook-test-salt")
    namespace: dict[str, object] = {"__name__": "__notebook__"}
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert cells
    for i, cell in enumerate(cells):
        code = compile("".join(cell["source"]), f"{path.name}[cell {i}]", "exec")
        exec(code, namespace)  # noqa: S102 - running our own notebook is the point
