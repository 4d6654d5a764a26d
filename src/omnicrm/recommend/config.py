"""The recommender experiment config (``configs/recommend/*.yaml``), validated strictly.

Hyper-parameters are checked when the config loads, by building each method with its ``params`` and
with every value of its ``grid``: a misspelt parameter or a bad value names the file, the method and
the allowed parameters, before any data is read.
"""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from omnicrm.config import StrictModel, load_config, validate_config
from omnicrm.errors import ConfigError

MethodKind = Literal["popularity", "recent_popularity", "repurchase", "als", "bpr", "item_knn", "hybrid"]


class MethodSpec(StrictModel):
    """One method of the experiment: its kind, fixed params, and a grid tuned on the validation window.

    ``inherit`` (hybrid): ``{param: "method"}`` takes that method's tuned params as a dict (e.g. the
    hybrid's ``als`` from the tuned ALS), ``{param: "method.param"}`` one tuned value.
    """

    name: str
    kind: MethodKind
    params: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    inherit: dict[str, str] = {}

    def combos(self) -> list[dict[str, Any]]:
        """Every point of the grid merged over ``params`` (one point when there is no grid)."""
        keys = list(self.grid)
        return [
            self.params | dict(zip(keys, values, strict=True))
            for values in itertools.product(*(self.grid[k] for k in keys))
        ] or [dict(self.params)]


class RecommendConfig(StrictModel):
    """Store, time split, k, methods and what ``omnicrm recommend`` serves."""

    store: str
    dataset: str
    test_cutoff: date
    test_days: int = Field(30, gt=0)
    validation_days: int = Field(30, gt=0)
    k: int = Field(10, gt=0)
    seed: int = 0
    select_by: Literal["ndcg", "map", "recall", "precision", "hit_rate"] = "ndcg"
    methods: list[MethodSpec]
    serve: str
    serve_exclude_purchased: bool = False
    experiment: str = "omnicrm-recommend"

    @model_validator(mode="after")
    def _check(self) -> RecommendConfig:
        names = [m.name for m in self.methods]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"method names must be unique; repeated: {dupes}")
        if self.serve not in names:
            raise ValueError(f"'serve' must name one of the methods {names}; got {self.serve!r}")
        for i, m in enumerate(self.methods):
            for param, ref in m.inherit.items():
                if ref.split(".")[0] not in names[:i]:
                    raise ValueError(f"method '{m.name}': inherit '{param}: {ref}' must name a method listed before it")
        return self

    @property
    def validation_cutoff(self) -> date:
        return self.test_cutoff - timedelta(days=self.validation_days)

    @property
    def test_end(self) -> date:
        return self.test_cutoff + timedelta(days=self.test_days)

    def registered_name(self) -> str:
        """The registry name of the recommender ``omnicrm recommend`` fits: ``omnicrm-<dataset>-recommend``."""
        return f"omnicrm-{self.dataset}-recommend"

    @property
    def serve_spec(self) -> MethodSpec:
        """The method ``omnicrm recommend`` fits and serves."""
        return next(m for m in self.methods if m.name == self.serve)


def build_method(spec: MethodSpec, params: dict[str, Any], seed: int, source: str = "config") -> Any:
    """An unfitted recommender of ``spec.kind`` with ``params`` (``random_state`` defaults to ``seed``)."""
    from omnicrm.recommend import METHODS

    cls = METHODS[spec.kind]
    import inspect

    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{source}: method '{spec.name}' ({spec.kind}): unknown parameter(s) {unknown}; "
            f"allowed: {', '.join(allowed) or '(none)'}"
        )
    if "random_state" in allowed and "random_state" not in params:
        params = params | {"random_state": seed}
    model = cls(**params)
    try:
        model._validate_params()
    except ConfigError as exc:
        raise ConfigError(f"{source}: method '{spec.name}': {exc}") from None
    return model


def load_recommend_config(path: str | Path) -> RecommendConfig:
    """Load and validate the config, including every method's params and grid values."""
    cfg = load_config(RecommendConfig, path)
    _check_methods(cfg, str(path))
    return cfg


def recommend_config_from_dict(data: dict[str, Any], source: str) -> RecommendConfig:
    """Validate a config given as a dict (e.g. the one a run logged); ``source`` names it in errors."""
    cfg = validate_config(RecommendConfig, data, source)
    _check_methods(cfg, source)
    return cfg


def _check_methods(cfg: RecommendConfig, source: str) -> None:
    for spec in cfg.methods:
        if spec.inherit and spec.kind != "hybrid":
            raise ConfigError(f"{source}: method '{spec.name}': 'inherit' is only for the hybrid")
        for combo in spec.combos():
            build_method(spec, combo, cfg.seed, source)
