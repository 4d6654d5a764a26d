"""The tracking layer: the one module that imports mlflow, the local registry round trip."""

from __future__ import annotations

import ast
import contextlib
import os
import re
import socket
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omnicrm import tracking
from omnicrm.errors import ConfigError

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


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_registration_deletes_its_versions_and_leaves_the_aliases(
    failure: type[BaseException],
) -> None:
    frame = pd.DataFrame({"x": np.arange(10, dtype=float)})
    name = f"omnicrm-staged-{failure.__name__.lower()}"
    with tracking.start_run("unit", "earlier"):
        tracking.log_model(_Doubler(), frame, registered_name=name)
        tracking.log_model(_Doubler(), frame, name="baseline", registered_name=name, aliases=("baseline",))
    with pytest.raises(failure), tracking.start_run("unit", "interrupted"), tracking.staged_versions():
        tracking.log_model(_Doubler(), frame, registered_name=name, tags={"roc_auc": "0.9"})
        tracking.log_model(_Doubler(), frame, name="baseline", registered_name=name, aliases=("baseline",))
        raise failure("stopped between registering and describing")
    # versions 3 and 4 are gone; candidate and baseline still point at the complete earlier run's
    assert tracking.get_version(name, "candidate").version == "1"
    assert tracking.get_version(name, "baseline").version == "2"
    for gone in ("3", "4"):
        with pytest.raises(tracking.MissingVersion):
            tracking.get_version(name, gone)
    # and a completed block moves the aliases, only at its end
    with tracking.start_run("unit", "complete"), tracking.staged_versions():
        ref = tracking.log_model(_Doubler(), frame, registered_name=name)
        assert tracking.get_version(name, "candidate").version == "1"
    assert tracking.get_version(name, "candidate").version == ref.version == "5"


@pytest.mark.parametrize(
    ("failure", "status"), [(KeyboardInterrupt, "KILLED"), (RuntimeError, "FAILED"), (None, "FINISHED")]
)
def test_a_run_ends_killed_on_ctrl_c_failed_on_an_error_finished_otherwise(
    failure: type[BaseException] | None, status: str
) -> None:
    import mlflow

    with pytest.raises(failure) if failure else contextlib.nullcontext():  # noqa: SIM117
        with tracking.start_run("unit", f"ends {status}") as run:
            if failure:
                raise failure("stopped")
    assert mlflow.tracking.MlflowClient().get_run(run.run_id).info.status == status
    assert mlflow.active_run() is None


def test_a_run_left_running_by_a_killed_process_is_ended_killed_by_the_next_run() -> None:
    """SIGKILL (or the out-of-memory killer) ends a process before it can end its run: the next run
    in the experiment ends it KILLED, and leaves alone the runs of live processes and other machines."""
    import subprocess

    from mlflow.tracking import MlflowClient

    code = (
        "import os, signal\n"
        "from omnicrm import tracking\n"
        "with tracking.start_run('unit-dead', 'killed') as run:\n"
        "    print(run.run_id, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == -9, proc.stderr
    dead = proc.stdout.split()[0]
    tracking.configure()  # this process's client on the same private store
    client = MlflowClient()
    assert client.get_run(dead).info.status == "RUNNING"
    exp = client.get_experiment(client.get_run(dead).info.experiment_id).experiment_id
    mine = tracking.process_tags()
    live = client.create_run(exp, tags=mine).info.run_id  # this process: alive
    elsewhere = client.create_run(
        exp, tags={**mine, tracking.HOST_TAG: "another-machine boot 1", tracking.PID_TAG: "1"}
    )
    untagged = client.create_run(exp).info.run_id  # another tool's run
    with tracking.start_run("unit-dead", "next"):
        pass
    ended = client.get_run(dead)
    assert ended.info.status == "KILLED" and "had ended without ending it" in ended.data.tags[tracking.ENDED_TAG]
    for run_id in (live, elsewhere.info.run_id, untagged):
        assert client.get_run(run_id).info.status == "RUNNING"


def test_ui_serves_the_local_store_on_localhost_only() -> None:
    cmd = tracking.ui_command(5055)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--backend-store-uri") + 1] == tracking.tracking_uri()
    assert cmd[cmd.index("--port") + 1] == "5055"
    assert cmd[cmd.index("--default-artifact-root") + 1].endswith("/artifacts")


# --- a damaged local store is one clear error, not a SQLAlchemy traceback ---------------------------


def test_a_garbage_store_file_is_a_config_error_naming_it() -> None:
    db = tracking.mlruns_dir() / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(b"hello")
    with pytest.raises(ConfigError, match="not a valid SQLite database") as err:
        tracking.configure()
    assert str(db) in str(err.value) and "MLFLOW_TRACKING_URI" in str(err.value)
    with pytest.raises(ConfigError, match=re.escape(str(db))), tracking.start_run("unit", "never"):
        pytest.fail("a run was opened on a garbage store")


def test_a_truncated_copy_of_a_real_store_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with tracking.start_run("unit", "real"):
        tracking.log_metrics({"auc": 0.5})
    data = (tracking.mlruns_dir() / "mlflow.db").read_bytes()
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "mlflow.db").write_bytes(data[: len(data) * 2 // 3])
    intact = os.environ["OMNICRM_MLRUNS"]
    _use_store(monkeypatch, copy)
    with pytest.raises(ConfigError, match=re.escape(str(copy / "mlflow.db"))):
        tracking.get_version("omnicrm-unit", "champion")
    # the intact store still works: the check names a damaged file, not every file
    _use_store(monkeypatch, Path(intact))
    with tracking.start_run("unit", "again"):
        pass


def _use_store(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    monkeypatch.setenv("OMNICRM_MLRUNS", str(folder))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri exported the last one


def test_an_empty_store_file_is_a_new_store() -> None:
    db = tracking.mlruns_dir() / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    db.touch()
    with tracking.start_run("unit", "fresh") as run:
        tracking.log_metrics({"fit_seconds": 1.5})
    assert tracking.run_metrics(run.run_id) == {"fit_seconds": 1.5}


def test_a_store_damaged_after_the_start_up_check_is_still_a_config_error() -> None:
    with tracking.start_run("unit", "before"):
        pass
    tracking.configure()  # the check passes and is cached for this process
    db = tracking.mlruns_dir() / "mlflow.db"
    db.write_bytes(b"hello" * 1000)
    with pytest.raises(ConfigError, match=re.escape(str(db))), tracking.start_run("unit", "after"):
        pytest.fail("a run was opened on a garbage store")


# --- omnicrm ui: checks before anything starts ----------------------------------------------------------


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(port: int) -> list[str]:
        pytest.fail(f"serve_ui tried to start a server on port {port}")

    monkeypatch.setattr(tracking, "ui_command", refuse)


@pytest.mark.usefixtures("no_server")
def test_ui_refuses_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is already in use; pass --port"):
            tracking.serve_ui(port, lambda line: pytest.fail(f"printed {line!r}"))


@pytest.mark.usefixtures("no_server")
@pytest.mark.parametrize("port", [0, -1, 65536, 70000, 99999])
def test_ui_refuses_a_port_number_out_of_range(port: int) -> None:
    with pytest.raises(ConfigError, match="between 1 and 65535"):
        tracking.serve_ui(port, lambda line: pytest.fail(f"printed {line!r}"))


@pytest.mark.usefixtures("no_server")
def test_ui_refuses_a_garbage_store_before_starting() -> None:
    db = tracking.mlruns_dir() / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(b"hello")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConfigError, match=re.escape(str(db))):
        tracking.serve_ui(port, lambda line: None)


def test_a_port_held_only_by_closed_connections_counts_as_free() -> None:
    # after `omnicrm ui` stops, the browser's old connections linger in TIME_WAIT on the port;
    # the server (SO_REUSEADDR) can listen there again, so the check must not call it "in use"
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end goes to TIME_WAIT
        client.recv(1)
        client.close()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what a naive check would have reported
    assert tracking.port_problem(port) is None


def test_ui_reports_a_server_that_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "ui_command", lambda port: [sys.executable, "-c", "import sys; sys.exit(3)"])
    lines: list[str] = []
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConfigError, match="exited with status 3 before it answered"):
        tracking.serve_ui(port, lines.append)
    assert not any("http://" in line for line in lines), lines  # no address for a server that never ran
