"""No side effects at import, and the known third-party notices listed once (``omnicrm.quiet``).

Importing any omnicrm module changes no warning filter, logger or environment variable (the one
exception, ``OMP_WAIT_POLICY``, is documented in ``omnicrm/__init__.py``). The notices a user cannot
act on are switched off by :func:`omnicrm.quiet.apply`, which the command line and the test
configuration call; pytest's ``filterwarnings`` is derived from the same list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omnicrm import quiet
from omnicrm.cli import app

from ..conftest import ROOT

pytestmark = pytest.mark.contract

#: run in a fresh interpreter: the third-party imports that omnicrm's modules make at module level
#: first, then every omnicrm module one at a time, each followed by a snapshot of the process state
_IMPORT_EVERY_MODULE = r"""
import ast, importlib, json, logging, os, sys, warnings
from pathlib import Path

src = Path(sys.argv[1])
modules, third_party = [], []
for path in sorted(src.rglob("*.py")):
    rel = path.relative_to(src).with_suffix("")
    if rel.name == "__main__":
        continue  # running it is its purpose
    modules.append(".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts))
    for node in ast.parse(path.read_text(encoding="utf-8")).body:  # module level only
        if isinstance(node, ast.Import) and not any(a.name.split(".")[0] == "omnicrm" for a in node.names):
            third_party.append(ast.unparse(node))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] not in (
            "omnicrm", "__future__"
        ):
            third_party.append(ast.unparse(node))
for statement in dict.fromkeys(third_party):
    exec(statement, {})

def state():
    loggers = {"": logging.getLogger()} | {
        name: logger for name, logger in logging.Logger.manager.loggerDict.items() if isinstance(logger, logging.Logger)
    }
    return {
        "warning filters": [repr(f) for f in warnings.filters],
        "loggers": {
            name: [logger.level, logger.disabled, logger.propagate, len(logger.filters), len(logger.handlers)]
            for name, logger in loggers.items()
            # a logger that did not exist before and holds nothing is only a name
            if logger.level or logger.filters or logger.handlers or logger.disabled or not logger.propagate
        },
        "environment": dict(os.environ),
    }

steps = [["(third-party imports)", state()]]
for name in sorted(modules):
    loaded = set(sys.modules)
    importlib.import_module(name)
    new = sorted(m for m in set(sys.modules) - loaded if m.split(".")[0] == "omnicrm")
    steps.append([f"{name} (loading {', '.join(new)})" if new != [name] else name, state()])
print(json.dumps(steps))
"""


def test_importing_any_omnicrm_module_changes_no_warning_filter_logger_or_environment() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY" and k not in quiet.ENVIRONMENT}
    run = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERY_MODULE, str(ROOT / "src")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    steps = json.loads(run.stdout)
    assert len(steps) > 50, [name for name, _ in steps]  # every module of the package, cli and tracking included
    assert {"omnicrm.tracking", "omnicrm.cli", "omnicrm.quiet"} <= {name.split()[0] for name, _ in steps}
    changes = []
    for (_, before), (name, after) in zip(steps, steps[1:], strict=False):
        for key in ("warning filters", "loggers"):
            if after[key] != before[key]:
                changes.append(f"{name} changed the {key}")
        env_change = {k: v for k, v in after["environment"].items() if before["environment"].get(k) != v} | {
            k: None for k in before["environment"].keys() - after["environment"].keys()
        }
        if name.split()[0] == "omnicrm":  # the package: the measured exception, set before OpenMP loads
            assert env_change == {"OMP_WAIT_POLICY": "PASSIVE"}
        elif env_change:
            changes.append(f"{name} changed the environment: {env_change}")
    assert not changes


_AFTER_IMPORT = r"""
import json, logging, os, sys
from omnicrm import quiet

if sys.argv[1] == "before":
    quiet.apply()
    quiet.apply()  # idempotent
import mlflow.pyfunc, optuna
if sys.argv[1] == "after":
    quiet.apply()
    quiet.apply()
pyfunc = logging.getLogger("mlflow.pyfunc")
record = pyfunc.makeRecord("mlflow.pyfunc", logging.WARNING, "f", 1, "serialized using CloudPickle", (), None)
print(json.dumps({
    "mlflow": logging.getLogger("mlflow").level,
    "optuna": optuna.logging.get_verbosity(),
    "pyfunc filters": len(pyfunc.filters),
    "CloudPickle shown": pyfunc.filter(record),
    "telemetry": os.environ.get("MLFLOW_DISABLE_TELEMETRY"),
}))
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_apply_sets_the_loggers_whether_the_libraries_are_imported_before_or_after(when: str) -> None:
    """mlflow and optuna set their own logger levels when imported: apply() must win either way."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}
    run = subprocess.run(
        [sys.executable, "-c", _AFTER_IMPORT, when], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout) == {
        "mlflow": 30,  # logging.WARNING
        "optuna": 30,
        "pyfunc filters": 1,
        "CloudPickle shown": False,
        "telemetry": "true",
    }


def test_pytest_ignores_exactly_the_known_warnings(pytestconfig: pytest.Config) -> None:
    """pyproject.toml says ``error``; tests/conftest.py adds the list of omnicrm.quiet, nothing else does."""
    assert pytestconfig.getini("filterwarnings") == ["error", *quiet.pytest_filters()]
    for w in quiet.WARNINGS:
        assert ":" not in w.message and w.reason
        with warnings.catch_warnings():  # the pytest line and the warnings filter match the same text
            warnings.simplefilter("error")
            quiet.ignore_known_warnings([w])
            warnings.warn(w.message.removeprefix(".*") + " (sample)", w.category, stacklevel=1)


def test_the_cli_hides_the_known_notices_and_shows_any_other_warning_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def features_with_warnings(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        for _ in range(2):
            warnings.warn(
                "The ``noload`` loader strategy is deprecated and will be removed", DeprecationWarning, stacklevel=1
            )
            warnings.warn("something the user should see", UserWarning, stacklevel=1)
        raise KeyboardInterrupt  # the command ends there; the warnings were printed as they came

    monkeypatch.chdir(tmp_path)
    (tmp_path / "features.yaml").write_text("store: s.duckdb\nfeatures: {}\n")
    monkeypatch.setattr("omnicrm.pipeline.features.run_features", features_with_warnings)
    res = CliRunner().invoke(app, ["features", "features.yaml", "--cutoff", "2024-01-01", "--out", "f.parquet"])
    assert res.exit_code == 130, res.output
    assert res.output.count("warning: something the user should see") == 1
    assert "noload" not in res.output
