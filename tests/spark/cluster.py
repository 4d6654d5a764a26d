"""A Spark standalone cluster on this machine: one master and two workers, started with pyspark's own launcher.

``spark-class org.apache.spark.deploy.master.Master`` and ``...worker.Worker spark://127.0.0.1:PORT``
from the pyspark package (its folder is a complete ``SPARK_HOME``), each a separate JVM process
bound to 127.0.0.1 on free ports, with small memory and one core per worker, logs and work folders
under a temporary folder. :func:`standalone_cluster` yields once both workers have registered with
the master and stops every process it started (each in its own process group, so the executors a
worker launched stop with it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Cluster:
    """A running standalone cluster."""

    master_url: str  # spark://127.0.0.1:PORT
    master_ui: str  # http://127.0.0.1:PORT (its JSON at /json)
    worker_uis: list[str]
    folder: Path
    env: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        """The master's JSON status (workers, running and completed applications)."""
        with urllib.request.urlopen(f"{self.master_ui}/json", timeout=5) as r:  # noqa: S310 - a local http URL
            return json.loads(r.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_home() -> Path:
    """The pyspark package folder: it carries ``bin/spark-class`` and the jars."""
    import pyspark

    return Path(pyspark.__file__).parent


def _wait(what: str, ready: Any, timeout: float, processes: list[subprocess.Popen], logs: Path) -> None:  # noqa: ANN401
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in processes:
            if p.poll() is not None:
                tail = "\n".join(f.read_text()[-2000:] for f in sorted(logs.glob("*.log")))
                raise RuntimeError(f"{what}: a cluster process exited with {p.returncode}\n{tail}")
        with contextlib.suppress(OSError, ValueError):
            if ready():
                return
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s (logs in {logs})")


@contextlib.contextmanager
def standalone_cluster(folder: Path, workers: int = 2, worker_memory: str = "1g") -> Iterator[Cluster]:
    """Start a master and ``workers`` workers (one core each); yield the cluster; stop them all."""
    home = spark_home()
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "PYSPARK_PYTHON": sys.executable,  # the executors' Python: this venv, where omnicrm is installed
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(folder / "logs"),
        "SPARK_NO_DAEMONIZE": "1",
    }
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    port, ui = _free_port(), _free_port()
    cluster = Cluster(f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}", [], folder, env)
    launcher = str(home / "bin" / "spark-class")

    def start(name: str, args: list[str]) -> None:
        with open(logs / f"{name}.log", "wb") as out:
            # own session: stopping the process group stops the JVM and any executor JVM it started
            p = subprocess.Popen(
                [launcher, *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        cluster.processes.append(p)

    try:
        start(
            "master",
            [
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(ui),
            ],
        )
        _wait("master", lambda: cluster.state()["status"] == "ALIVE", 120, cluster.processes, logs)
        for i in range(workers):
            wui = _free_port()
            cluster.worker_uis.append(f"http://127.0.0.1:{wui}")
            work = folder / f"worker-{i}"
            work.mkdir(exist_ok=True)
            start(
                f"worker-{i}",
                [
                    "org.apache.spark.deploy.worker.Worker",
                    "--host",
                    "127.0.0.1",
                    "--webui-port",
                    str(wui),
                    "--cores",
                    "1",
                    "--memory",
                    worker_memory,
                    "--work-dir",
                    str(work),
                    cluster.master_url,
                ],
            )

        def alive() -> bool:
            return sum(w["state"] == "ALIVE" for w in cluster.state()["workers"]) == workers

        _wait("workers", alive, 120, cluster.processes, logs)
        yield cluster
    finally:
        for p in reversed(cluster.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in cluster.processes:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


def event_log(folder: Path) -> list[dict[str, Any]]:
    """The events of the one application whose event log Spark wrote into ``folder``."""
    (path,) = [p for p in folder.iterdir() if not p.name.startswith(".")]
    # a rolling log (Spark 4's default) is a folder of events_<n>_<app> files; switch compression off to read them
    files = sorted(p for p in path.iterdir() if p.name.startswith("events_")) if path.is_dir() else [path]
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
