"""Tracking: the one module that imports mlflow (a test enforces it).

Modelling code returns results; this layer logs them with consistent run names and tags so runs
compare cleanly in the MLflow UI, and registers models. Where the runs go:

* ``MLFLOW_TRACKING_URI`` set: there (a team's server, another database);
* otherwise a SQLite-backed store in ``$OMNICRM_MLRUNS`` (default ``./mlruns``): the database is
  ``mlruns/mlflow.db`` and artifacts live under ``mlruns/artifacts/``, so the model registry works
  with no server.

Models are logged as MLflow *pyfunc* models wrapping any object with ``predict_frame(df) ->
DataFrame`` (the modelling code's own class, pickled): ``models:/omnicrm-churn@candidate`` loads
with plain ``mlflow.pyfunc.load_model`` and predicts the same scores as the in-process model.
"""

from __future__ import annotations

import errno
import functools
import http.client
import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import pandas as pd
import yaml

from omnicrm import interrupts
from omnicrm.errors import ConfigError
from omnicrm.store.staging import signals_deferred

P = ParamSpec("P")
T = TypeVar("T")

if TYPE_CHECKING:
    from types import ModuleType

    from mlflow.tracking import MlflowClient

_PARAM_MAX = 6000  # mlflow's limit on a param value


def _mlflow() -> ModuleType:
    """mlflow, imported at first use: 2 s of start-up that ``--help``, the data steps and the
    scoring path up to the registry do not pay."""
    import mlflow

    return mlflow


def _client() -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient()


# mlflow's notices (its INFO logs, the CloudPickle warning, SQLAlchemy's and pandas' deprecations)
# are switched off by omnicrm.quiet.apply(), which the command line and the tests call: importing
# this module changes no warning filter, logger or environment variable.


def mlruns_dir() -> Path:
    """The local tracking folder (``$OMNICRM_MLRUNS`` or ``./mlruns``), used when no URI is set."""
    return Path(os.environ.get("OMNICRM_MLRUNS", "mlruns")).resolve()


def _local_uri() -> str:
    return f"sqlite:///{mlruns_dir() / 'mlflow.db'}"


def tracking_uri() -> str:
    """Where runs are logged: ``MLFLOW_TRACKING_URI`` or the local SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or _local_uri()


def _is_local() -> bool:
    # not "is MLFLOW_TRACKING_URI unset": mlflow.set_tracking_uri exports that variable itself
    return tracking_uri() == _local_uri()


def configure() -> str:
    """Point mlflow at :func:`tracking_uri` (idempotent); returns the URI.

    The local SQLite file, if it exists, must be a readable SQLite database: a damaged one is a
    :class:`ConfigError` naming the file, not a SQLAlchemy traceback from deep inside mlflow.
    """
    uri = tracking_uri()
    if _is_local():
        check_local_store()
        (mlruns_dir() / "artifacts").mkdir(parents=True, exist_ok=True)
    _mlflow().set_tracking_uri(uri)
    _mlflow().set_registry_uri(uri)
    return uri


_SQLITE_HEADER = b"SQLite format 3\x00"
_QUICK_CHECK_MAX_BYTES = 64 * 2**20  # PRAGMA quick_check reads the whole file: ~0.1 s at this size
_VERIFIED_STORES: set[Path] = set()  # local databases that passed the check in this process


def check_local_store(full: bool = False) -> None:
    """Raise :class:`ConfigError` if the local ``mlflow.db`` exists but is not a sound SQLite database.

    Runs once per process and path (a missing file is fine: mlflow creates it). The check reads the
    16-byte header, lists the tables, compares the file size with the page count the header
    declares (a truncated copy fails here) and, up to 64 MB or with ``full``, runs
    ``PRAGMA quick_check``. A database merely locked by another writer is not reported.
    """
    path = mlruns_dir() / "mlflow.db"
    if path in _VERIFIED_STORES and not full:
        return
    if not path.exists():
        return
    try:
        problem = _sqlite_problem(path, full)
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the MLflow tracking database ({exc.strerror or exc}); "
            "fix its permissions, or set MLFLOW_TRACKING_URI"
        ) from None
    if problem:
        _VERIFIED_STORES.discard(path)
        raise ConfigError(
            f"{path}: the MLflow tracking database is not a valid SQLite database ({problem}); "
            "move it away to start a new store, or set MLFLOW_TRACKING_URI"
        )
    _VERIFIED_STORES.add(path)


def _sqlite_problem(path: Path, full: bool) -> str | None:
    """What is wrong with the SQLite file at ``path`` (``None`` if nothing); OSError if unreadable."""
    if not path.is_file():
        return "it is not a regular file"
    size = path.stat().st_size
    if size == 0:
        return None  # SQLite treats an empty file as an empty database; mlflow creates its tables
    with path.open("rb") as f:
        header = f.read(100)
    if header[:16] != _SQLITE_HEADER:
        return f"it does not start with the SQLite header; {size}-byte file"
    if len(header) < 100:
        return f"it is only {size} bytes long"
    try:
        con = sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True, timeout=10)
    except sqlite3.Error as exc:
        return f"sqlite3: {exc}"
    try:
        con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        page_count = con.execute("PRAGMA page_count").fetchone()[0]
        if size < page_size * page_count:
            return f"truncated: {size} bytes where its header declares {page_count} pages of {page_size} bytes"
        if full or size <= _QUICK_CHECK_MAX_BYTES:
            found = [row[0] for row in con.execute("PRAGMA quick_check(3)")]
            if found != ["ok"]:
                return "sqlite3 quick_check: " + "; ".join(found)
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return None  # another process is writing: cannot check now, and that is no corruption
        return f"sqlite3: {exc}"
    except sqlite3.DatabaseError as exc:
        return f"sqlite3: {exc}"
    finally:
        con.close()
    return None


@contextmanager
def _store_errors() -> Iterator[None]:
    """Turn a database error of the local store into the :class:`ConfigError` of a damaged file.

    A SQLite file can pass the quick check at start-up and still fail later (a large file damaged
    beyond the pages checked, or damaged while running). On an error caused by the database
    (mlflow wraps some in ``MlflowException``) the file is checked in full, and only a confirmed
    problem is reported as such; anything else propagates unchanged.
    """
    try:
        yield
    except Exception as exc:
        if _is_local() and _database_error_in(exc):
            check_local_store(full=True)
        raise


def _database_error_in(exc: BaseException | None) -> bool:
    from sqlalchemy.exc import DatabaseError as SQLAlchemyDatabaseError

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, SQLAlchemyDatabaseError | sqlite3.DatabaseError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _experiment_id(name: str) -> str:
    client = _client()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = (mlruns_dir() / "artifacts" / name).as_uri() if _is_local() else None
    return client.create_experiment(name, artifact_location=location)


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    experiment: str
    run_name: str


@contextmanager
def start_run(
    experiment: str, run_name: str, tags: Mapping[str, Any] | None = None, nested: bool = False
) -> Iterator[RunInfo]:
    """Open a run in ``experiment`` (created if missing); nested runs become children of the active one.

    The run ends FINISHED, FAILED on an error, or KILLED on Ctrl-C or SIGTERM (what the MLflow UI
    shows a reviewer), with those signals deferred while its status is written: an interrupt there
    once left runs RUNNING. A process killed outright (SIGKILL, out of memory) cannot end its runs:
    they carry the process's host, pid and start time (:func:`process_tags`), and the next run in
    the experiment ends them KILLED (:func:`close_dead_runs`).
    """
    configure()
    all_tags = {**context_tags(), **process_tags(), **{k: str(v) for k, v in (tags or {}).items()}}
    with _store_errors(), signals_deferred():  # a store write: see _deferred
        exp_id = _experiment_id(experiment)
        if not nested:
            close_dead_runs(exp_id)
        run = _mlflow().start_run(experiment_id=exp_id, run_name=run_name, nested=nested, tags=all_tags)
    try:
        yield RunInfo(run.info.run_id, exp_id, experiment, run_name)
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        with signals_deferred(), suppress(Exception):  # the first error is the one to report
            _mlflow().end_run(status=status)
        raise
    with signals_deferred():
        _mlflow().end_run(status="FINISHED")


#: Tags naming the process a run belongs to (:func:`process_tags`).
HOST_TAG, PID_TAG, PID_STARTED_TAG = "omnicrm.host", "omnicrm.pid", "omnicrm.pid_started"
#: Tag of a run found dead, saying who ended it and why.
ENDED_TAG = "omnicrm.ended"


def process_tags() -> dict[str, str]:
    """The host, pid and pid start time of this process: what a later run needs to tell it has died.

    The start time (``/proc/<pid>/stat``; empty where there is no ``/proc``) tells this process from
    a later one that was given the same pid.
    """
    return {HOST_TAG: _machine(), PID_TAG: str(os.getpid()), PID_STARTED_TAG: _pid_started(os.getpid()) or ""}


def _machine() -> str:
    """This machine as runs name it: the host name and, where Linux gives one, this boot's id.

    The boot id keeps two machines that share a host name (containers, cloned VMs) logging to one
    tracking server from ending each other's runs: a pid is only looked up on the machine that
    started it.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()} boot {boot}".strip().replace("'", "")


def _pid_started(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot: field 22 of ``/proc/<pid>/stat``); ``None`` if none runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # after the command name, field 3 is at index 0


def _process_alive(pid: int, started: str) -> bool:
    if started and Path("/proc/self/stat").exists():
        return _pid_started(pid) == started
    try:  # no /proc (macOS): the pid alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def close_dead_runs(experiment_id: str) -> list[str]:
    """End KILLED the runs of ``experiment_id`` left RUNNING by a process of this host that has died.

    SIGKILL, the out-of-memory killer or a power cut end a process without a word, and its runs stay
    RUNNING in the MLflow UI for good, where a reviewer reads them as still working. Each run
    carries its process's machine, pid and start time (:func:`process_tags`); a run of this machine
    whose process no longer runs is ended KILLED, tagged ``omnicrm.ended`` with why. Runs of other
    machines (whose processes cannot be seen from here), of live processes and without these tags
    (made by another tool, or by omnicrm before it tagged them) are left as they are.

    Returns
    -------
    list of str
        The run ids ended.
    """
    host = _machine()
    client = _client()
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
        max_results=1000,
    )
    ended = []
    for run in runs:
        tags = run.data.tags
        try:
            pid = int(tags.get(PID_TAG, ""))
        except ValueError:
            continue
        if _process_alive(pid, tags.get(PID_STARTED_TAG, "")):
            continue
        client.set_tag(
            run.info.run_id, ENDED_TAG, f"ended KILLED by a later run: process {pid} had ended without ending it"
        )
        client.set_terminated(run.info.run_id, status="KILLED")
        ended.append(run.info.run_id)
    return ended


def active_run_id() -> str | None:
    run = _mlflow().active_run()
    return run.info.run_id if run else None


def context_tags() -> dict[str, str]:
    """Tags every run carries: the git commit of omnicrm's code (and whether its tree had local changes).

    Asked of the repository the package's own files are in, not of the working directory: a job a
    scheduler starts elsewhere (or inside another repository) would otherwise record that folder's
    commit. An installed (non-editable) package is in no repository and gets no commit tag.
    """
    tags = {}
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
        tags["git_dirty"] = str(bool(_git("status", "--porcelain", "--untracked-files=no")))
    return tags


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, check=False, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become JSON text."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list | tuple):
            out[key] = json.dumps(v, default=str)
        else:
            out[key] = v
    return out


def _deferred(fn: Callable[P, T]) -> Callable[P, T]:
    """A store write that Ctrl-C and SIGTERM wait for (:func:`omnicrm.store.staging.signals_deferred`).

    An interrupt raised inside SQLAlchemy's session once left the SQLite tracking store locked: the
    run's end (KILLED) then waited out the lock's timeout twice, 40 s, and the runs stayed RUNNING.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with signals_deferred():
            return fn(*args, **kwargs)

    return wrapper


@_deferred
def log_params(params: Mapping[str, Any]) -> None:
    """Flattened params, each value cut to mlflow's length limit."""
    flat = {k: ("" if v is None else str(v))[:_PARAM_MAX] for k, v in flatten(params).items()}
    items = list(flat.items())
    for i in range(0, len(items), 100):  # mlflow accepts at most 100 params per batch
        _mlflow().log_params(dict(items[i : i + 100]))


@_deferred
def log_config(config: Mapping[str, Any], name: str = "config.yaml") -> None:
    """The resolved config as a YAML artifact and as flattened params."""
    _mlflow().log_text(yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False), name)
    log_params(config)


@_deferred
def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Numeric metrics (non-finite values and non-numbers are skipped: mlflow charts choke on them)."""
    clean = {}
    for k, v in flatten(metrics).items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            clean[k] = f
    if clean:
        _mlflow().log_metrics(clean, step=step)


@_deferred
def set_tags(tags: Mapping[str, Any]) -> None:
    _mlflow().set_tags({k: str(v) for k, v in tags.items()})


@_deferred
def log_figure(fig: Any, path: str) -> None:
    """A matplotlib figure as a PNG artifact; the figure is closed afterwards."""
    import matplotlib.pyplot as plt

    _mlflow().log_figure(fig, path)
    plt.close(fig)


@_deferred
def log_dict(obj: Any, path: str) -> None:
    _mlflow().log_dict(json.loads(json.dumps(obj, default=str)), path)


@_deferred
def log_text(text: str, path: str) -> None:
    _mlflow().log_text(text, path)


@_deferred
def log_table(frame: pd.DataFrame, path: str) -> None:
    """A small table as a CSV artifact (readable in the UI's artifact view)."""
    _mlflow().log_text(frame.to_csv(index=False), path)


@_deferred
def log_artifact(local_path: str | Path, artifact_path: str | None = None) -> None:
    _mlflow().log_artifact(str(local_path), artifact_path)


def _adapters() -> tuple[type, type]:
    """The two pyfunc adapter classes, built on first use (they subclass mlflow's ``PythonModel``).

    Registered models pickle them by reference as ``omnicrm.tracking._FramePredictor`` and
    ``omnicrm.tracking._FrameParamsPredictor``; the module's ``__getattr__`` builds them when
    unpickling asks for those names, so models logged before mlflow became a lazy import load as
    they did.
    """
    cached = globals().get("_ADAPTERS")
    if cached is not None:
        return cached
    import mlflow.pyfunc

    class _FramePredictor(mlflow.pyfunc.PythonModel):
        """pyfunc adapter: delegates to the wrapped object's ``predict_frame(DataFrame) -> DataFrame``."""

        def __init__(self, model: Any) -> None:
            self.model = model

        def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:  # noqa: ARG002
            return self.model.predict_frame(pd.DataFrame(model_input))

    class _FrameParamsPredictor(_FramePredictor):
        """pyfunc adapter for ``predict_frame(DataFrame, **params)``: MLflow's inference params are passed on.

        A model logged with ``params`` (e.g. a recommender's ``as_of`` and ``k``) declares them in its
        signature with their defaults; ``pyfunc_model.predict(frame, params={...})`` reaches
        ``predict_frame`` as keyword arguments.
        """

        def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:  # noqa: ARG002
            return self.model.predict_frame(pd.DataFrame(model_input), **(params or {}))

    for cls in (_FramePredictor, _FrameParamsPredictor):
        # pickled by reference under these names (see the docstring)
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    globals()["_ADAPTERS"] = (_FramePredictor, _FrameParamsPredictor)
    return _FramePredictor, _FrameParamsPredictor


def __getattr__(name: str) -> Any:
    # the adapter classes, for pickle (module-level __getattr__, PEP 562)
    if name == "_FramePredictor":
        return _adapters()[0]
    if name == "_FrameParamsPredictor":
        return _adapters()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ModelRef:
    """A logged (and optionally registered) model."""

    model_uri: str
    name: str | None = None
    version: str | None = None

    @property
    def registry_uri(self) -> str | None:
        return f"models:/{self.name}/{self.version}" if self.name and self.version else None


def _requirements(extra: tuple[str, ...] = ()) -> list[str]:
    """Pinned requirements from what is installed (inference would run the model in a subprocess, 6-10 s).

    ``extra`` names packages a model needs beyond the common ones (e.g. ``implicit`` for recommenders).
    """
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("pandas", "numpy", "scikit-learn", "lightgbm", "scipy", "pyarrow", *extra):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            continue
    return reqs


#: what mlflow prints to stderr (not through a logger) on every registration; the commands say it themselves
_REGISTRY_CHATTER = ("Successfully registered model ", "Registered model ", "Created version ")


@contextmanager
def _registry_chatter_dropped() -> Iterator[None]:
    """Drop mlflow's registration lines from stderr, pass every other line on.

    ``mlflow`` prints "Successfully registered model …", "… already exists. Creating a new version …"
    and "Created version …" straight to stderr, between the command's own progress lines (a log
    showed them interleaved); the command prints the versions it registered in its summary.
    """
    import io
    import sys

    buffer = io.StringIO()
    real = sys.stderr
    sys.stderr = buffer
    try:
        yield
    finally:
        sys.stderr = real
        kept = [line for line in buffer.getvalue().splitlines(keepends=True) if not line.startswith(_REGISTRY_CHATTER)]
        if kept:
            real.write("".join(kept))
            real.flush()


#: versions registered inside :func:`staged_versions` (``None`` outside one): name, version, aliases
_STAGED: list[tuple[str, str, tuple[str, ...]]] | None = None


@contextmanager
def staged_versions() -> Iterator[None]:
    """Register versions all or nothing: their aliases move only when the block completes.

    Inside the block :func:`log_model` registers versions but defers their aliases. If the block
    ends by an exception (an error, Ctrl-C, SIGTERM), the versions it registered are deleted, so an
    interrupted ``train`` leaves neither a half-described version nor a ``candidate`` pointing at a
    failed run; aliases stay where they were. Blocks nest: the outermost one decides.
    """
    global _STAGED
    if _STAGED is not None:
        yield
        return
    _STAGED = staged = []
    try:
        yield
    except BaseException:
        _STAGED = None
        _delete_versions(staged)
        raise
    _STAGED = None
    # all aliases move, or (on an error) none is left half-moved: Ctrl-C waits until they have
    with _store_errors(), signals_deferred():
        try:
            # a Ctrl-C Python swallowed in the block (a gc callback's) still means "stop": not registered
            interrupts.check()
            client = _client()
            for name, version, aliases in staged:
                for alias in aliases:
                    client.set_registered_model_alias(name, alias, version)
        except BaseException:
            _delete_versions(staged)
            raise


def _delete_versions(staged: list[tuple[str, str, tuple[str, ...]]]) -> None:
    """Best effort: delete the versions a failed block registered (a failure here must not hide the first)."""
    if not staged:
        return
    with suppress(Exception), signals_deferred():  # a second Ctrl-C must not stop the clean-up half-way
        client = _client()
        for name, version, _ in staged:
            with suppress(Exception):
                client.delete_model_version(name, version)


def log_model(
    model: Any,
    input_example: pd.DataFrame,
    name: str = "model",
    registered_name: str | None = None,
    aliases: tuple[str, ...] = ("candidate",),
    tags: Mapping[str, Any] | None = None,
    signature_sample: pd.DataFrame | None = None,
    params: Mapping[str, Any] | None = None,
    extra_requirements: tuple[str, ...] = (),
) -> ModelRef:
    """Log ``model`` (an object with ``predict_frame``) with signature and input example.

    With ``registered_name`` the model becomes a new version of that registered model and gets
    ``aliases`` (``candidate`` by default; ``champion`` only moves via :func:`set_alias`), all or
    nothing (:func:`staged_versions`: a version whose tags or aliases were not all set is deleted).
    ``params`` (name -> default) are inference parameters passed to ``predict_frame`` as keyword
    arguments and declared in the signature; ``extra_requirements`` are packages pinned beside the
    common ones.
    """
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    # The schema is inferred from a larger sample than the example, so a column that happens to
    # be empty in the first rows still gets its type; every input column is then declared
    # optional, since any feature may be missing for some customer at scoring time.
    sample = (signature_sample if signature_sample is not None else input_example).reset_index(drop=True)
    example = input_example.head(5).reset_index(drop=True)
    with warnings.catch_warnings():
        # mlflow hints that an integer column "cannot hold missing values": handled by optional columns
        warnings.filterwarnings("ignore", message=".*integer column.*", category=UserWarning)
        inferred = infer_signature(sample, model.predict_frame(sample), params=dict(params) if params else None)
    inputs = Schema([ColSpec(c.type, c.name, required=False) for c in inferred.inputs.inputs])
    signature = ModelSignature(inputs=inputs, outputs=inferred.outputs, params=inferred.params)
    frame_predictor, frame_params_predictor = _adapters()
    adapter = frame_params_predictor(model) if params else frame_predictor(model)
    with staged_versions():
        # Ctrl-C waits while a version is registered and recorded for the rollback (about a second):
        # between the two it would leave a version nothing deletes
        with warnings.catch_warnings(), _registry_chatter_dropped(), signals_deferred():
            warnings.filterwarnings("ignore", message=".*integer column.*", category=UserWarning)
            info = _mlflow().pyfunc.log_model(
                name=name,
                python_model=adapter,
                signature=signature,
                input_example=example,
                pip_requirements=_requirements(extra_requirements),
                registered_model_name=registered_name,
            )
            version = None
            if registered_name:
                version = str(info.registered_model_version)
                assert _STAGED is not None  # inside staged_versions
                _STAGED.append((registered_name, version, tuple(aliases)))
        if registered_name:
            client = _client()
            for k, v in (tags or {}).items():
                client.set_model_version_tag(registered_name, version, k, str(v))
    return ModelRef(info.model_uri, registered_name, version)


def load_pyfunc(uri: str) -> Any:
    """An MLflow pyfunc model (``models:/name@alias``, ``models:/name/3``, ``runs:/…``)."""
    configure()
    import mlflow.pyfunc

    _adapters()  # unpickling looks the adapter class up by name
    with _store_errors():
        return mlflow.pyfunc.load_model(uri)


def load_model(uri: str) -> Any:
    """The wrapped modelling object behind a pyfunc model logged by :func:`log_model`."""
    return load_pyfunc(uri).unwrap_python_model().model


def model_uri(name: str, ref: str | None) -> str:
    """``models:/name@alias`` or ``models:/name/version`` from an alias or version (default: champion)."""
    ref = ref or "champion"
    return f"models:/{name}/{ref}" if ref.isdigit() else f"models:/{name}@{ref}"


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    run_id: str
    aliases: tuple[str, ...]
    tags: dict[str, str]


def get_version(name: str, ref: str) -> VersionInfo:
    """A registered version by alias or number; a clear error when it does not exist."""
    configure()
    client = _client()
    try:
        with _store_errors():
            mv = client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
    except _mlflow().exceptions.MlflowException as exc:
        raise MissingVersion(f"model registry: no version '{ref}' of registered model '{name}'") from exc
    return VersionInfo(name, str(mv.version), mv.run_id, tuple(mv.aliases or ()), dict(mv.tags or {}))


@_deferred
def set_alias(name: str, alias: str, version: str) -> None:
    configure()
    with _store_errors():
        _client().set_registered_model_alias(name, alias, version)


@_deferred
def describe(name: str, description: str, version: str | None = None, append: bool = False) -> None:
    """Set (or, with ``append``, extend) the markdown description of a registered model or one of its versions."""
    configure()
    with _store_errors():
        client = _client()
        if version is None:
            old = client.get_registered_model(name).description or "" if append else ""
            client.update_registered_model(name, description=f"{old}\n\n{description}".strip())
        else:
            old = client.get_model_version(name, version).description or "" if append else ""
            client.update_model_version(name, version, description=f"{old}\n\n{description}".strip())


@_deferred
def set_run_description(text: str) -> None:
    """The active run's markdown description (the MLflow UI's "Description" box: tag ``mlflow.note.content``)."""
    _mlflow().set_tag("mlflow.note.content", text)


def run_metrics(run_id: str) -> dict[str, float]:
    configure()
    with _store_errors():
        return dict(_client().get_run(run_id).data.metrics)


def list_registered_models() -> list[dict[str, Any]]:
    """Name, latest version and aliases of every registered model (for summaries and the docs)."""
    configure()
    with _store_errors():
        models = _client().search_registered_models()
    return [{"name": rm.name, "aliases": dict(rm.aliases or {})} for rm in models]


def load_run_text(run_id: str, path: str) -> str:
    """A text artifact of a run (e.g. the resolved ``config.yaml`` a training run logged)."""
    configure()
    with _store_errors():
        import mlflow.artifacts

        return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")


@dataclass(frozen=True)
class RunSummary:
    """A finished run found by :func:`latest_run`: its id, start (UTC, ISO) and tags."""

    run_id: str
    started: str
    tags: dict[str, str]


def latest_run(experiment: str, tags: Mapping[str, Any]) -> RunSummary | None:
    """The newest finished run of ``experiment`` carrying every one of ``tags`` (``None``: no such run)."""
    import datetime as dt

    configure()
    client = _client()
    with _store_errors():
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        # tag values are quoted for the filter language; the values omnicrm writes hold no quote
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"attributes.status = 'FINISHED' and {where}" if where else "attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    if not runs:
        return None
    run = runs[0]
    started = dt.datetime.fromtimestamp(run.info.start_time / 1000, tz=dt.UTC).isoformat(timespec="seconds")
    return RunSummary(run.info.run_id, started, dict(run.data.tags))


class MissingVersion(ConfigError):
    """The registry has no such version or alias (a damaged store is a plain ConfigError)."""


def find_version(name: str, ref: str) -> VersionInfo | None:
    """Like :func:`get_version`, but ``None`` when the alias or version does not exist.

    A damaged tracking database still raises: it must not read as "no model registered yet".
    """
    try:
        return get_version(name, ref)
    except MissingVersion:
        return None


def ui_command(port: int) -> list[str]:
    """The ``mlflow server`` command line that serves the local store on 127.0.0.1 (one worker)."""
    import sys

    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri(),
        "--default-artifact-root",
        (mlruns_dir() / "artifacts").as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]


_HEALTH_WAIT = 60.0  # seconds to wait for /health (the server took 10-40 s to start on a busy 2-core machine)
_STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL to the server's process group (it took 3-8 s)


def serve_ui(port: int, say: Callable[[str], Any] = print) -> None:
    """Run the MLflow UI on 127.0.0.1:``port`` against the local store until interrupted.

    Checks first (port number, port free, store readable), then starts ``mlflow server`` in its
    own session and prints the address once ``/health`` answers. Ctrl-C, SIGTERM or SIGHUP to
    this process, and any other way out of this function, stop the server's whole process group
    (SIGTERM, then SIGKILL after ``_STOP_GRACE`` seconds): ``mlflow server`` leaves its uvicorn
    workers running when only the parent is stopped (seen with mlflow 3.17). A server that exits on
    its own before answering, or with a non-zero status, is a :class:`ConfigError`.

    The job runner of ``mlflow server`` is switched off: it starts ten processes and 1.8 GB of
    memory (measured with mlflow 3.17) for features (scheduled jobs) omnicrm does not use.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"ui: --port must be a TCP port between 1 and 65535, got {port!r}")
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith(("http://", "https://")):
        say(f"MLflow UI: {uri} (MLFLOW_TRACKING_URI points at a server; nothing to start)")
        return
    problem = port_problem(port)
    if problem:
        raise ConfigError(f"ui: port {port} on 127.0.0.1 is {problem}; pass --port with a free port")
    configure()
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    url = f"http://127.0.0.1:{port}"
    say(f"MLflow UI: starting mlflow server on 127.0.0.1:{port} (store {tracking_uri()}) ...")
    healthy = False
    status: int | None = None
    proc = None
    with _signals_interrupt(signal.SIGTERM, signal.SIGHUP):
        try:
            proc = subprocess.Popen(ui_command(port), env=env, stdin=subprocess.DEVNULL, start_new_session=True)
            healthy = _wait_healthy(proc, url, _HEALTH_WAIT)
            if healthy:
                say(f"MLflow UI: {url}  (Ctrl-C stops it)")
            elif proc.poll() is None:
                waited = f"has not answered /health after {_HEALTH_WAIT:.0f} s"
                say(f"MLflow UI: {url} {waited}; it may still be starting (Ctrl-C stops it)")
            status = proc.wait()
        except KeyboardInterrupt:
            status = None  # asked to stop
        finally:
            if proc is not None:
                stop_process_group(proc)
    if status is not None and (status != 0 or not healthy):
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        when = "while serving" if healthy else "before it answered on " + url
        raise ConfigError(f"ui: mlflow server {how} {when}; its messages are printed above")
    say("MLflow UI stopped")


def port_problem(port: int) -> str | None:
    """Why a server could not listen on 127.0.0.1:``port`` (``None`` if it can), without starting one.

    A plain bind (no SO_REUSEADDR) also fails for a port whose only users are closed connections in
    TIME_WAIT; the server (uvicorn sets SO_REUSEADDR) can take those, so such a port counts as free
    when no one accepts connections on it.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
        return None
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return f"not available ({exc.strerror or exc})"
    if _accepts(port):
        return "already in use"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
    except OSError:
        return "already in use"
    return None


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _wait_healthy(proc: subprocess.Popen, url: str, seconds: float) -> bool:
    """Poll ``url/health`` until it answers OK (True), the process exits or time runs out (False)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP proxy
    deadline = time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with opener.open(f"{url}/health", timeout=2) as response:
                if response.status == 200 and response.read(64).strip() == b"OK":
                    return True
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.5)
    return False


@contextmanager
def _signals_interrupt(*signums: signal.Signals) -> Iterator[None]:
    """While inside, these signals raise KeyboardInterrupt like Ctrl-C does (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:  # noqa: ARG001
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stop_process_group(proc: subprocess.Popen, grace: float | None = None) -> None:
    """SIGTERM the process group led by ``proc`` (started with a new session), SIGKILL it after ``grace`` s.

    Returns once no process of the group is left (or 5 s after SIGKILL). A second Ctrl-C while
    waiting skips the rest of the grace period.
    """
    grace = _STOP_GRACE if grace is None else grace
    pgid = proc.pid
    if _signal_group(pgid, signal.SIGTERM):
        with suppress(KeyboardInterrupt):
            if _group_gone(proc, pgid, grace):
                return
        _signal_group(pgid, signal.SIGKILL)
    with suppress(KeyboardInterrupt):
        _group_gone(proc, pgid, 5.0)


def _signal_group(pgid: int, signum: int) -> bool:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


def _group_gone(proc: subprocess.Popen, pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        proc.poll()  # reap the leader, or it stays in the group as a zombie
        if not _group_alive(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs; zombies do not count.

    A worker orphaned by its parent is re-parented to PID 1, and where PID 1 does not reap
    (some container inits) it stays a zombie member of the group forever: ``killpg(pgid, 0)``
    alone would wait out the whole grace period. On Linux ``/proc`` tells zombies apart.
    """
    if not _signal_group(pgid, 0):
        return False
    proc_dir = Path("/proc")
    if not (proc_dir / "self" / "stat").exists():
        return True
    for stat in proc_dir.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False
