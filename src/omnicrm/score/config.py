"""The scoring config (``configs/score/<dataset>.yaml``): which models score whom, and where the run goes.

Paths of other configs (task configs, the feature config, the next-best-action catalogue) are
relative to the scoring config's folder; ``store`` and ``output`` are relative to where omnicrm runs
(the project root), like every store path. Every model is named by its registry entry and a
reference: an alias (``champion``, the default, or ``candidate``) or a pinned version number.

Features are built once at ``as_of`` and shared by every model, so every task config and the
catalogue must use the scoring config's feature settings and store; :func:`load_score_config`
refuses a config where they differ, naming the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from omnicrm.config import StrictModel, load_config
from omnicrm.errors import ConfigError
from omnicrm.features.config import FeatureConfig, resolve_feature_config

#: an alias (letters first) or a version number
_REF_PATTERN = r"^([A-Za-z][A-Za-z0-9_-]*|[0-9]+)$"


def _ref_text(value: Any) -> Any:
    """A version written as a YAML number (``model: 3``) is the version ``"3"``."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


#: an alias (``champion``) or a pinned version number (``3`` or ``"3"``)
ModelRef = Annotated[str, BeforeValidator(_ref_text), Field(pattern=_REF_PATTERN)]


class TaskModels(StrictModel):
    """A task config whose registered target models score the task's population."""

    config: str  # relative to the scoring config
    model: ModelRef = "champion"  # alias or version, for every target of the task


class RegisteredModel(StrictModel):
    """A registered model by name (``omnicrm-`` optional) and alias or version."""

    name: str = Field(min_length=1)
    model: ModelRef = "champion"

    @property
    def full_name(self) -> str:
        """The registry name: ``synthetic-recommend`` -> ``omnicrm-synthetic-recommend``."""
        return self.name if self.name.startswith("omnicrm-") else f"omnicrm-{self.name}"


class Recommender(RegisteredModel):
    """The registered recommender and its list settings (default: those it was registered with)."""

    k: int | None = Field(None, gt=0)
    exclude_purchased: bool | None = None


class Nba(StrictModel):
    """The next-best-action catalogue; its effect models and recommender must be among those scored."""

    catalogue: str  # relative to the scoring config


class Drift(StrictModel):
    """Thresholds of the checks against the previous run; a value above its threshold is a breach.

    ``feature_psi`` and ``score_psi``: the population stability index of a feature or score, with
    ``bins`` quantile bins of the previous run (plus one for missing values). 0.1 is commonly read
    as a moderate and 0.25 as a major shift (Siddiqi, *Credit Risk Scorecards*, 2006).
    ``population_change``: relative change of the customers in the store. ``nba_changed``: share of
    customers (in both runs) whose first next-best action (action, channel, product, or none)
    changed. ``out_of_range``: share of a model's scored rows with a feature outside the range the
    model saw in training (per model and feature; no previous run needed). ``out_of_range_ignore``
    names features not checked for that: those that grow with time by definition (days since the
    first purchase), whose every value at a later date lies past what an earlier training saw.
    """

    feature_psi: float = Field(0.25, gt=0)
    score_psi: float = Field(0.25, gt=0)
    population_change: float = Field(0.10, gt=0)
    nba_changed: float = Field(0.50, gt=0, le=1)
    out_of_range: float = Field(0.05, gt=0, le=1)
    out_of_range_ignore: list[str] = Field(default_factory=list)  # features whose range is not checked
    bins: int = Field(10, ge=2, le=100)


class Spark(StrictModel):
    """Where the Spark engine runs and what it reads (``engine: spark``; see docs/score.md, "Spark").

    ``master`` is a Spark master URL (``local[2]``, ``spark://host:7077``, ``yarn``, ``k8s://…``).
    ``input`` is a folder or URL holding one Parquet dataset per store table,
    ``<input>/<table>.parquet`` (a file or a folder of part files: what DuckDB's ``EXPORT DATABASE
    … (FORMAT parquet)`` or a Spark job writes), read by the executors; on object storage
    (``s3a://bucket/store/``) the cluster needs the ``hadoop-aws`` package and credentials in
    ``conf``. Without ``input`` the store's tables are copied into Spark through the driver (small
    stores and tests). ``conf`` holds any further Spark settings (``spark.executor.memory``, …).
    """

    master: str = Field("local[2]", min_length=1)
    input: str | None = Field(None, min_length=1)
    app_name: str = Field("omnicrm-score", min_length=1)
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("conf")
    @classmethod
    def _spark_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in value if not k.startswith(("spark.", "hadoop.", "fs."))]
        if bad:
            raise ValueError(f"Spark settings start with 'spark.' (or 'hadoop.'/'fs.'), got {bad}")
        if "spark.master" in value or "spark.app.name" in value:
            raise ValueError("set the master URL and the application name with 'master' and 'app_name'")
        return value


class ScoreConfig(StrictModel):
    """One scheduled scoring job (see the module docstring)."""

    name: str = Field(min_length=1)
    store: str
    features: str | dict[str, Any] = "../features/default.yaml"
    output: str  # a folder: runs/, one pointer per as-of date, latest
    engine: Literal["duckdb", "spark"] = "duckdb"
    spark: Spark | None = None  # engine: spark only
    chunk_size: int = Field(50_000, gt=0)
    # DuckDB's memory for the whole-base work (the feature snapshot, populations, BG/NBD inputs): past
    # it DuckDB spills to the staging folder, so the job's peak memory does not grow with the base
    memory_limit: str = Field("2GB", pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")
    tasks: list[TaskModels] = Field(default_factory=list)
    recommender: Recommender | None = None
    effects: list[RegisteredModel] = Field(default_factory=list)
    nba: Nba | None = None
    drift: Drift = Drift()
    experiment: str = "omnicrm-score"

    @field_validator("effects")
    @classmethod
    def _distinct_effects(cls, value: list[RegisteredModel]) -> list[RegisteredModel]:
        names = [m.full_name for m in value]
        if len(set(names)) != len(names):
            raise ValueError(f"an effect model is listed twice: {names}")
        return value


@dataclass
class ScoreSetup:
    """A scoring config with what it names loaded: task configs, feature config, catalogue path."""

    config: ScoreConfig
    path: Path
    features: FeatureConfig
    tasks: list[Any]  # TaskConfig, in config order
    catalogue: Path | None
    config_hash: str


def _same_path(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def load_score_config(path: str | Path) -> ScoreSetup:
    """Read and check a scoring config and the configs it names.

    Raises
    ------
    ConfigError
        An unknown key or bad value (naming the file and key), a ``spark`` block without
        ``engine: spark``, an output that is a URL with ``engine: spark``, a task config or
        catalogue that cannot be read, or one whose store or feature settings differ from the
        scoring config's (features are built once for all models).
    """
    from omnicrm.tasks.config import load_task_config
    from omnicrm.tasks.frames import feature_config

    path = Path(path)
    cfg = load_config(ScoreConfig, path)
    if cfg.spark is not None and cfg.engine != "spark":
        raise ConfigError(
            f"{path}: key 'spark': Spark settings are read with engine: spark only (engine is {cfg.engine})"
        )
    if cfg.engine == "spark" and "://" in cfg.output:
        raise ConfigError(
            f"{path}: key 'output': {cfg.output} is a URL; a run is published by renaming its staging folder and "
            "guarded by a lock file, which need a filesystem the driver and the executors share (a local folder, "
            "or a network mount on a cluster); the input may be on object storage (key 'spark.input')"
        )
    if not (cfg.tasks or cfg.recommender or cfg.effects or cfg.nba):
        raise ConfigError(f"{path}: nothing to score; list tasks, a recommender, effects or an nba catalogue")
    base = path.parent
    feats = resolve_feature_config(cfg.features, base, f"{path} (key 'features')")
    tasks = []
    for i, ref in enumerate(cfg.tasks):
        task_path = base / ref.config
        if not task_path.is_file():
            raise ConfigError(f"{path}: key 'tasks.{i}.config': {task_path} not found")
        tcfg = load_task_config(task_path)
        if not _same_path(tcfg.dataset.store, cfg.store):
            raise ConfigError(
                f"{path}: key 'tasks.{i}.config': {task_path} reads store {tcfg.dataset.store}, not {cfg.store}; "
                "one run scores one store"
            )
        if feature_config(tcfg.dataset) != feats:
            raise ConfigError(
                f"{path}: key 'tasks.{i}.config': {task_path} builds features with other settings than key "
                "'features'; features are built once and shared by every model, so they must be the same"
            )
        tasks.append(tcfg)
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: key 'tasks': a task config is listed twice ({names})")
    catalogue = None
    if cfg.nba is not None:
        catalogue = _check_catalogue(cfg, base / cfg.nba.catalogue, feats, path)
    digest = _config_hash(cfg, feats, tasks, catalogue)
    return ScoreSetup(cfg, path, feats, tasks, catalogue, digest)


def _check_catalogue(cfg: ScoreConfig, cat_path: Path, feats: FeatureConfig, path: Path) -> Path:
    """The catalogue must read the same store and features and use models this config scores."""
    from omnicrm.nba.catalogue import load_catalogue

    if not cat_path.is_file():
        raise ConfigError(f"{path}: key 'nba.catalogue': {cat_path} not found")
    cat = load_catalogue(cat_path)
    store = cat.require_store(str(cat_path))
    if not _same_path(store, cfg.store):
        raise ConfigError(f"{path}: key 'nba.catalogue': {cat_path} reads store {store}, not {cfg.store}")
    cat_feats = resolve_feature_config(cat.features, cat_path.parent, f"{cat_path} (key 'features')")
    if cat_feats != feats:
        raise ConfigError(
            f"{path}: key 'nba.catalogue': {cat_path} builds features with other settings than key 'features'"
        )
    scored = {m.full_name for m in cfg.effects}
    used = sorted({_full(cat.effect_source(a)[0]) for a in cat.actions})
    missing = [m for m in used if m not in scored]
    if missing:
        raise ConfigError(
            f"{path}: key 'effects': the catalogue {cat_path} uses effect model(s) {missing}; list them under "
            "'effects' so the run scores and records the versions its next-best actions use"
        )
    if any(s.product == "recommended" for s in cat.actions.values()):
        want = _full(cat.recommender or "")
        if cfg.recommender is None or cfg.recommender.full_name != want:
            raise ConfigError(
                f"{path}: key 'recommender': the catalogue {cat_path} recommends products with {want}; "
                "set recommender.name to it"
            )
        if cfg.recommender.model != "champion":
            raise ConfigError(
                f"{path}: key 'recommender.model': the catalogue's product-led actions use the champion "
                f"recommender, so with an nba catalogue the recommender must be 'champion' (got "
                f"{cfg.recommender.model!r})"
            )
    return cat_path


def _full(name: str) -> str:
    return name if name.startswith("omnicrm-") else f"omnicrm-{name}"


def _config_hash(cfg: ScoreConfig, feats: FeatureConfig, tasks: list[Any], catalogue: Path | None) -> str:
    """SHA-256 of everything that decides the outputs: this config, the feature, task and catalogue settings."""
    blob = {
        "score": cfg.model_dump(mode="json"),
        "features": feats.model_dump(mode="json"),
        "tasks": [t.model_dump(mode="json") for t in tasks],
        "catalogue": catalogue.read_text(encoding="utf-8") if catalogue else None,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()
