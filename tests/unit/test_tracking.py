"""The tracking layer: the one module that imports mlflow, the local registry round trip."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd

from omnicrm import tracking

from ..conftest import ROOT


class _Doubler:
    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"score": frame["x"].to_numpy(dtype=float) * 2})


def test_only_the_tracking_module_imports_mlflow() -> None:
    offenders = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "mlflow" or n.startswith("mlflow.") for n in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert set(offenders) == {"src/omnicrm/tracking.py"}, offenders


def test_register_alias_and_load_round_trip(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": np.arange(10, dtype=float), "seg": list("ab" * 5)})
    with tracking.start_run("unit", "round-trip", tags={"task": "demo"}) as run:
        tracking.log_config({"model": {"leaves": 31, "cutoffs": ["2024-01-01"]}})
        tracking.log_metrics({"auc": 0.7, "bad": float("nan"), "nested": {"x": 1}})
        ref = tracking.log_model(_Doubler(), frame, registered_name="omnicrm-unit")
    assert ref.version == "1"
    loaded = tracking.load_pyfunc("models:/omnicrm-unit@candidate")
    np.testing.assert_allclose(loaded.predict(frame)["score"], frame["x"] * 2)
    assert isinstance(tracking.load_model(tracking.model_uri("omnicrm-unit", "1")), _Doubler)
    info = tracking.get_version("omnicrm-unit", "candidate")
    assert info.run_id == run.run_id and "candidate" in info.aliases
    metrics = tracking.run_metrics(run.run_id)
    assert metrics == {"auc": 0.7, "nested.x": 1.0}
    assert tracking.tracking_uri().endswith("mlflow.db")
    # artifacts (config, model) live beside the database, under <mlruns>/artifacts/<experiment>
    stored = {p.name for p in (tracking.mlruns_dir() / "artifacts" / "unit").rglob("*")}
    assert {"config.yaml", "MLmodel"} <= stored


def test_ui_serves_the_local_store_on_localhost_only() -> None:
    cmd = tracking.ui_command(5055)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--backend-store-uri") + 1] == tracking.tracking_uri()
    assert cmd[cmd.index("--port") + 1] == "5055"
    assert cmd[cmd.index("--default-artifact-root") + 1].endswith("/artifacts")
