"""Commands import what they use: the command line and the scoring path start without the model libraries.

mlflow takes about 2 s to import, shap 1-3 s, LightGBM with scikit-learn about 1.8 s (measured on the
2-core machines). ``omnicrm --help`` and every command's argument checks must not pay for them, and
``omnicrm predict`` imports mlflow only when it reads the registry (on a second thread, while the
features are built) and shap never (its reasons are LightGBM's own contributions). Each check runs
in a fresh interpreter, so what an earlier test imported cannot hide a regression.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.contract

HEAVY = ("mlflow", "shap", "lightgbm", "sklearn", "matplotlib", "optuna")


def _imported_after(code: str) -> list[str]:
    """Which of :data:`HEAVY` a fresh interpreter has imported after running ``code``."""
    top = "{m.split('.')[0] for m in sys.modules}"
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({top} & set({HEAVY!r}))))"
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_the_command_line_imports_no_model_library() -> None:
    assert _imported_after("import omnicrm.cli") == []


def test_omnicrm_help_imports_no_model_library() -> None:
    code = (
        "import sys\nfrom omnicrm.entry import main\nsys.argv = ['omnicrm', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    assert _imported_after(code) == []


def test_the_scoring_path_imports_neither_mlflow_nor_shap_until_the_registry_is_read() -> None:
    # everything `omnicrm predict` imports before its registry thread starts; LightGBM scores, so it loads
    code = "import omnicrm.cli, omnicrm.pipeline.predict, omnicrm.pipeline.task_frames, omnicrm.tracking"
    assert _imported_after(code) == ["lightgbm", "sklearn"]


def test_training_imports_no_shap_before_it_logs() -> None:
    code = "import omnicrm.cli, omnicrm.pipeline.train, omnicrm.tasks.train"
    assert "shap" not in _imported_after(code) and "mlflow" not in _imported_after(code)


def test_a_model_pickled_before_mlflow_became_lazy_still_finds_its_adapter_class() -> None:
    # registered models name the adapter class as omnicrm.tracking._FramePredictor (pickled by reference)
    code = (
        "import pickle, sys\nimport omnicrm.tracking\nassert 'mlflow' not in sys.modules\n"
        "cls = pickle.loads(b'comnicrm.tracking\\n_FramePredictor\\n.')\n"
        "sub = pickle.loads(b'comnicrm.tracking\\n_FrameParamsPredictor\\n.')\n"
        "import mlflow.pyfunc\n"
        "assert cls.__module__ == 'omnicrm.tracking' and cls.__qualname__ == '_FramePredictor'\n"
        "assert issubclass(sub, cls) and issubclass(cls, mlflow.pyfunc.PythonModel)\n"
        "assert pickle.loads(pickle.dumps(cls)) is cls"
    )
    assert "mlflow" in _imported_after(code)


def test_a_signal_after_the_command_has_ended_does_not_change_its_exit_status() -> None:
    """A scheduler's SIGTERM or a Ctrl-C landing while the interpreter shuts down, after the command
    said how it ended: the process exits with the command's status, not a silent -15 or a traceback."""
    probe = (
        "import os, signal, sys\n"
        "from omnicrm.entry import main\n"
        "sys.argv = ['omnicrm', '--help']\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=120)
    assert run.returncode == 0, (run.returncode, run.stderr)
    assert "Usage" in run.stdout and "Traceback" not in run.stderr
