"""``omnicrm ui`` stops everything it started: Ctrl-C or SIGTERM leaves no server process and a free port.

Each test runs :func:`omnicrm.tracking.serve_ui` in a separate Python process (it installs signal
handlers and blocks), records the server's process group while it serves, signals the omnicrm
process and checks that none of the recorded processes is left. The fast tests use a stand-in
server whose worker outlives its parent like uvicorn's does; one test runs the real ``mlflow server``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from omnicrm import tracking

# As in a terminal: SIGINT raises KeyboardInterrupt even when pytest itself was started from a
# non-interactive shell's background job (which starts children with SIGINT ignored).
DRIVER = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from omnicrm import tracking
{patch}
tracking.serve_ui(int(sys.argv[1]))
"""

# A stand-in for `mlflow server`: answers /health, and starts a worker that would outlive it (as
# uvicorn's does); with IGNORE_TERM the worker ignores SIGTERM, so only SIGKILL stops it.
FAKE_SERVER = """
import http.server, signal, subprocess, sys
worker = "import signal, time\\n" + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n" if {ignore_term} else "")
subprocess.Popen([sys.executable, "-c", worker + "time.sleep(600)"])

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.read().strip() == b"OK"
    except OSError:
        return False


def _running(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            continue
    return alive


def _serve_then_stop(tmp_path: Path, signum: int, patch: str, start_timeout: float, stop_timeout: float) -> str:
    """Run serve_ui in a child process until /health answers, signal it, check nothing is left.

    Returns the omnicrm process's output.
    """
    port = _free_port()
    log = tmp_path / "ui.log"
    script = DRIVER.format(patch=patch)
    group: list[psutil.Process] = []
    with log.open("w") as out:
        ui = subprocess.Popen([sys.executable, "-c", script, str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout
        while not (_healthy(port) and f"http://127.0.0.1:{port}" in log.read_text()):
            assert ui.poll() is None, f"omnicrm ui exited early with {ui.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no /health after {start_timeout} s:\n{log.read_text()}"
            time.sleep(0.5)
        group = psutil.Process(ui.pid).children(recursive=True)
        assert len(group) >= 2, group  # the server and its worker
        assert all(os.getpgid(p.pid) != os.getpgid(ui.pid) for p in group)  # a group of their own

        started = time.monotonic()
        ui.send_signal(signum)
        assert ui.wait(timeout=stop_timeout) == 0, log.read_text()
        assert _running(group) == [], f"left running after {time.monotonic() - started:.1f} s: {_running(group)}"
        assert not _healthy(port)
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        assert tracking.port_problem(port) is None
        output = log.read_text()
        assert output.rstrip().endswith("MLflow UI stopped"), output
        return output
    finally:  # a failing test must not leave servers behind
        if ui.poll() is None:
            ui.kill()
            ui.wait()
        for p in _running(group):
            p.kill()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_ui_stops_the_whole_server_group(tmp_path: Path, signum: int) -> None:
    fake = tmp_path / "fake_server.py"
    fake.write_text(textwrap.dedent(FAKE_SERVER).replace("{ignore_term}", "False"))
    patch = f"tracking.ui_command = lambda port: [sys.executable, {str(fake)!r}, str(port)]"
    _serve_then_stop(tmp_path, signum, patch, start_timeout=60, stop_timeout=15)


def test_a_worker_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    fake = tmp_path / "fake_server.py"
    fake.write_text(textwrap.dedent(FAKE_SERVER).replace("{ignore_term}", "True"))
    patch = f"tracking.ui_command = lambda port: [sys.executable, {str(fake)!r}, str(port)]\ntracking._STOP_GRACE = 1.0"
    _serve_then_stop(tmp_path, signal.SIGINT, patch, start_timeout=60, stop_timeout=15)


def test_ctrl_c_stops_the_real_mlflow_server_and_its_workers(tmp_path: Path) -> None:
    output = _serve_then_stop(tmp_path, signal.SIGINT, patch="", start_timeout=90, stop_timeout=20)
    assert "Uvicorn running" in output  # it was the real server
