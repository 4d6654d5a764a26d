"""Imports point down the layers of DESIGN.md: only the wiring and the command line import them.

``omnicrm.pipeline`` (wiring), ``omnicrm.cli`` (the command line) and ``omnicrm.tracking`` (the one
module that talks to MLflow) sit above the steps and the ground modules. A step that imported them
would see paths, run ids or MLflow, and a change to the wiring could break a model. So every module
outside ``omnicrm/pipeline/``, ``omnicrm/cli*`` and ``omnicrm/entry.py`` is parsed (``ast``; imports
inside functions and under ``TYPE_CHECKING`` count too) and must import none of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.contract

PACKAGE = ROOT / "src" / "omnicrm"
#: the layers above the steps
UPPER = ("omnicrm.pipeline", "omnicrm.cli", "omnicrm.tracking")


def may_import_upper(path: Path) -> bool:
    """The wiring (``pipeline/``), the command line (``cli*``) and the console script (``entry.py``)."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] == "pipeline" or rel.parts[0].startswith("cli") or rel.parts == ("entry.py",)


def module_name(path: Path) -> tuple[str, str]:
    """``(module, package)`` of a file under ``src/``: the package is what relative imports start from."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    if rel.name == "__init__":
        name = ".".join(rel.parts[:-1])
        return name, name
    name = ".".join(rel.parts)
    return name, name.rpartition(".")[0]


def imported_modules(source: str, package: str) -> set[str]:
    """Every module ``source`` imports anywhere, absolute; ``from a import b`` gives ``a`` and ``a.b``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: "from .x import y" starts at the package, each further dot one up
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def upper_imports(source: str, package: str) -> list[str]:
    """The upper-layer modules ``source`` imports, each reported once (by the shortest name)."""
    upper = sorted(
        m for m in imported_modules(source, package) if any(m == top or m.startswith(f"{top}.") for top in UPPER)
    )
    return [m for m in upper if not any(m.startswith(f"{other}.") for other in upper)]


def test_the_import_parser_sees_every_kind_of_import() -> None:
    source = (
        "from omnicrm import tracking\n"
        "from omnicrm.tasks import base\n"
        "def f():\n"
        "    import omnicrm.pipeline.train\n"
        "if TYPE_CHECKING:\n"
        "    from ..cli import app\n"
        "from . import labels\n"
    )
    found = imported_modules(source, "omnicrm.tasks")
    assert {"omnicrm.tracking", "omnicrm.pipeline.train", "omnicrm.cli.app", "omnicrm.tasks.labels"} <= found
    assert upper_imports(source, "omnicrm.tasks") == ["omnicrm.cli", "omnicrm.pipeline.train", "omnicrm.tracking"]
    assert upper_imports("import omnicrm.tasks.train\nfrom omnicrm.progress import silent\n", "omnicrm.x") == []


def test_only_the_wiring_and_the_command_line_import_the_upper_layers() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if may_import_upper(path):
            continue
        upper = upper_imports(path.read_text(encoding="utf-8"), module_name(path)[1])
        if upper:
            offenders.append(f"{path.relative_to(ROOT)}: {', '.join(upper)}")
    assert not offenders, "steps or ground modules import the wiring, the CLI or tracking:\n" + "\n".join(offenders)
