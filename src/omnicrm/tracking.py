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

import json
import logging
import math
import os
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from omnicrm.errors import ConfigError

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402  (environment defaults above must precede the import)
from mlflow.models import ModelSignature, infer_signature  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.types import ColSpec, Schema  # noqa: E402

_PARAM_MAX = 6000  # mlflow's limit on a param value

# Known noise, silenced where it starts: SQLAlchemy 2.1 deprecates a loader mlflow's store uses
# (library notes §2); mlflow logs every table creation at INFO; and it warns on every pyfunc log
# that the Python object is pickled, which is how omnicrm stores its models on purpose.
warnings.filterwarnings("ignore", message="The ``noload`` loader strategy is deprecated", category=DeprecationWarning)
warnings.filterwarnings("ignore", message="Operation with range is deprecated")  # mlflow's input-example check
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("mlflow.pyfunc").addFilter(lambda record: "CloudPickle" not in record.getMessage())


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
    """Point mlflow at :func:`tracking_uri` (idempotent); returns the URI."""
    uri = tracking_uri()
    if _is_local():
        (mlruns_dir() / "artifacts").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def _experiment_id(name: str) -> str:
    client = MlflowClient()
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
    """Open a run in ``experiment`` (created if missing); nested runs become children of the active one."""
    configure()
    exp_id = _experiment_id(experiment)
    all_tags = {**context_tags(), **{k: str(v) for k, v in (tags or {}).items()}}
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, nested=nested, tags=all_tags) as run:
        yield RunInfo(run.info.run_id, exp_id, experiment, run_name)


def active_run_id() -> str | None:
    run = mlflow.active_run()
    return run.info.run_id if run else None


def context_tags() -> dict[str, str]:
    """Tags every run carries: the git commit (and whether the tree had local changes)."""
    tags = {}
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
        tags["git_dirty"] = str(bool(_git("status", "--porcelain", "--untracked-files=no")))
    return tags


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=False)
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


def log_params(params: Mapping[str, Any]) -> None:
    """Flattened params, each value cut to mlflow's length limit."""
    flat = {k: ("" if v is None else str(v))[:_PARAM_MAX] for k, v in flatten(params).items()}
    items = list(flat.items())
    for i in range(0, len(items), 100):  # mlflow accepts at most 100 params per batch
        mlflow.log_params(dict(items[i : i + 100]))


def log_config(config: Mapping[str, Any], name: str = "config.yaml") -> None:
    """The resolved config as a YAML artifact and as flattened params."""
    mlflow.log_text(yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False), name)
    log_params(config)


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
        mlflow.log_metrics(clean, step=step)


def set_tags(tags: Mapping[str, Any]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_figure(fig: Any, path: str) -> None:
    """A matplotlib figure as a PNG artifact; the figure is closed afterwards."""
    import matplotlib.pyplot as plt

    mlflow.log_figure(fig, path)
    plt.close(fig)


def log_dict(obj: Any, path: str) -> None:
    mlflow.log_dict(json.loads(json.dumps(obj, default=str)), path)


def log_text(text: str, path: str) -> None:
    mlflow.log_text(text, path)


def log_table(frame: pd.DataFrame, path: str) -> None:
    """A small table as a CSV artifact (readable in the UI's artifact view)."""
    mlflow.log_text(frame.to_csv(index=False), path)


def log_artifact(local_path: str | Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(local_path), artifact_path)


class _FramePredictor(mlflow.pyfunc.PythonModel):
    """pyfunc adapter: delegates to the wrapped object's ``predict_frame(DataFrame) -> DataFrame``."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:  # noqa: ARG002
        return self.model.predict_frame(pd.DataFrame(model_input))


@dataclass(frozen=True)
class ModelRef:
    """A logged (and optionally registered) model."""

    model_uri: str
    name: str | None = None
    version: str | None = None

    @property
    def registry_uri(self) -> str | None:
        return f"models:/{self.name}/{self.version}" if self.name and self.version else None


def _requirements() -> list[str]:
    """Pinned requirements from what is installed (inference would run the model in a subprocess, 6-10 s)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("pandas", "numpy", "scikit-learn", "lightgbm", "scipy", "pyarrow"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            continue
    return reqs


def log_model(
    model: Any,
    input_example: pd.DataFrame,
    name: str = "model",
    registered_name: str | None = None,
    aliases: tuple[str, ...] = ("candidate",),
    tags: Mapping[str, Any] | None = None,
    signature_sample: pd.DataFrame | None = None,
) -> ModelRef:
    """Log ``model`` (an object with ``predict_frame``) with signature and input example.

    With ``registered_name`` the model becomes a new version of that registered model and gets
    ``aliases`` (``candidate`` by default; ``champion`` only moves via :func:`set_alias`).
    """
    # The schema is inferred from a larger sample than the example, so a column that happens to
    # be empty in the first rows still gets its type; every input column is then declared
    # optional, since any feature may be missing for some customer at scoring time.
    sample = (signature_sample if signature_sample is not None else input_example).reset_index(drop=True)
    example = input_example.head(5).reset_index(drop=True)
    with warnings.catch_warnings():
        # mlflow hints that an integer column "cannot hold missing values": handled by optional columns
        warnings.filterwarnings("ignore", message=".*integer column.*", category=UserWarning)
        inferred = infer_signature(sample, model.predict_frame(sample))
    inputs = Schema([ColSpec(c.type, c.name, required=False) for c in inferred.inputs.inputs])
    signature = ModelSignature(inputs=inputs, outputs=inferred.outputs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*integer column.*", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=_FramePredictor(model),
            signature=signature,
            input_example=example,
            pip_requirements=_requirements(),
            registered_model_name=registered_name,
        )
    version = None
    if registered_name:
        version = str(info.registered_model_version)
        client = MlflowClient()
        for alias in aliases:
            client.set_registered_model_alias(registered_name, alias, version)
        for k, v in (tags or {}).items():
            client.set_model_version_tag(registered_name, version, k, str(v))
    return ModelRef(info.model_uri, registered_name, version)


def load_pyfunc(uri: str) -> Any:
    """An MLflow pyfunc model (``models:/name@alias``, ``models:/name/3``, ``runs:/…``)."""
    configure()
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
    client = MlflowClient()
    try:
        mv = client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
    except mlflow.exceptions.MlflowException as exc:
        raise ConfigError(f"model registry: no version '{ref}' of registered model '{name}'") from exc
    return VersionInfo(name, str(mv.version), mv.run_id, tuple(mv.aliases or ()), dict(mv.tags or {}))


def set_alias(name: str, alias: str, version: str) -> None:
    configure()
    MlflowClient().set_registered_model_alias(name, alias, version)


def run_metrics(run_id: str) -> dict[str, float]:
    configure()
    return dict(MlflowClient().get_run(run_id).data.metrics)


def list_registered_models() -> list[dict[str, Any]]:
    """Name, latest version and aliases of every registered model (for summaries and the docs)."""
    configure()
    out = []
    for rm in MlflowClient().search_registered_models():
        out.append({"name": rm.name, "aliases": dict(rm.aliases or {})})
    return out


def load_run_text(run_id: str, path: str) -> str:
    """A text artifact of a run (e.g. the resolved ``config.yaml`` a training run logged)."""
    configure()
    return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")


def find_version(name: str, ref: str) -> VersionInfo | None:
    """Like :func:`get_version`, but ``None`` when the alias or version does not exist."""
    try:
        return get_version(name, ref)
    except ConfigError:
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


def serve_ui(port: int, say: Any = print) -> None:
    """Run the MLflow UI against the local store until interrupted; prints its address first.

    The job runner of ``mlflow server`` is switched off: it starts ten processes and 1.8 GB of
    memory for features (scheduled jobs) omnicrm does not use (library notes §2).
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith(("http://", "https://")):
        say(f"MLflow UI: {uri} (MLFLOW_TRACKING_URI points at a server; nothing to start)")
        return
    configure()
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    say(f"MLflow UI: http://127.0.0.1:{port}  (store {tracking_uri()}; Ctrl-C stops it)")
    try:
        subprocess.run(ui_command(port), env=env, check=False)
    except KeyboardInterrupt:
        say("MLflow UI stopped")
