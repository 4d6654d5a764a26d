"""``omnicrm demo``: generate the synthetic world, ingest it, resolve identities, build features.

The demo is the one place that reads the synthetic ground truth: to *report* how well identity
resolution recovered the true people. The pipeline steps themselves never see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omnicrm.config import StrictModel, load_config
from omnicrm.errors import ConfigError
from omnicrm.identity.evaluate import PairwiseMetrics
from omnicrm.pipeline.features import CutoffSpec, FeaturesResult, run_features
from omnicrm.pipeline.ingest import IngestResult, evaluate_identity, load_ingest, run_ingest
from omnicrm.pipeline.progress import Progress, silent
from omnicrm.synthetic import WorldSummary


class DemoConfig(StrictModel):
    """Paths of the step configs (relative to this file) and the demo's cutoffs and outputs."""

    generate: str
    ingest: str
    features: str
    cutoffs: CutoffSpec
    features_out: str
    truth_dir: str | None = None


@dataclass
class DemoResult:
    world: WorldSummary
    ingest: IngestResult
    identity: PairwiseMetrics | None
    features: FeaturesResult


def run_demo(config_path: str | Path, progress: Progress = silent) -> DemoResult:
    """Run every step of the demo in order; see the module docstring."""
    from omnicrm.synthetic import WorldConfig, generate_world

    config_path = Path(config_path)
    cfg = load_config(DemoConfig, config_path)
    base = config_path.parent
    world_cfg = load_config(WorldConfig, base / cfg.generate)
    ingest_cfg, _ = load_ingest(base / cfg.ingest)
    expected_raw = Path(world_cfg.out_dir) / "raw"
    if Path(ingest_cfg.raw_dir) != expected_raw:
        raise ConfigError(
            f"{config_path}: the ingest config reads {ingest_cfg.raw_dir} but the world is written to "
            f"{expected_raw}; make them agree"
        )
    world = generate_world(world_cfg, Path(world_cfg.out_dir), progress=lambda s, f: progress(f"generate: {s}", f))
    ingested = run_ingest(base / cfg.ingest, progress=progress)
    metrics = evaluate_identity(base / cfg.ingest, cfg.truth_dir) if cfg.truth_dir else None
    feats = run_features(base / cfg.features, cfg.cutoffs.as_list(), Path(cfg.features_out), progress=progress)
    return DemoResult(world, ingested, metrics, feats)
