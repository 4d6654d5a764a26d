"""``omnicrm features CONFIG --cutoff DATE ... --out FILE``: feature snapshots from the store.

The output is written to a temporary file beside ``--out`` and moved into place when complete,
so a failed run never leaves a half-written feature file (or destroys the previous one).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from omnicrm.config import StrictModel, load_config
from omnicrm.errors import ConfigError
from omnicrm.progress import Progress, silent
from omnicrm.store.outputs import write_frame


class FeaturesRunConfig(StrictModel):
    """Which store to read and which feature definitions to compute.

    ``features`` is a path to a feature config (relative to this file) or the settings inline.
    """

    store: str
    features: str | dict[str, Any] = {}


@dataclass
class FeaturesResult:
    out: Path
    rows: int
    columns: int
    cutoffs: list[date]
    customers_per_cutoff: dict[str, int]


def load_features_config(path: str | Path):  # noqa: ANN201 - returns (FeaturesRunConfig, FeatureConfig)
    from omnicrm.features.config import resolve_feature_config

    path = Path(path)
    run = load_config(FeaturesRunConfig, path)
    return run, resolve_feature_config(run.features, path.parent, f"{path} (key 'features')")


def run_features(
    config_path: str | Path, cutoffs: list[date] | list[datetime], out: Path, progress: Progress = silent
) -> FeaturesResult:
    """Build one row per (customer, cutoff) for every cutoff and write it to ``out`` (Parquet).

    Every cutoff is checked against the store's events first (:func:`omnicrm.store.check_date`):
    one on or before the first event, or far past the last, is an error before any work.
    """
    from omnicrm.features import build_features
    from omnicrm.store import check_date, data_range, open_store

    if not cutoffs:
        raise ConfigError("features: at least one --cutoff is required (cutoffs are never derived from the data)")
    run, feats = load_features_config(config_path)
    con = open_store(run.store)
    parts = []
    try:
        span = data_range(con)
        for cutoff in sorted(set(cutoffs)):
            check_date(cutoff, span, "--cutoff")
        # one snapshot at a time (what build_features does inside) so progress can be shown
        for i, cutoff in enumerate(sorted(set(cutoffs))):
            progress(f"features at {cutoff:%Y-%m-%d}", i / len(cutoffs))
            parts.append(build_features(con, [cutoff], feats))
    finally:
        con.close()
    frame = pd.concat(parts, ignore_index=True)
    out = write_frame(frame, out)
    progress("features written", 1.0)
    per = frame.groupby("cutoff").size()
    return FeaturesResult(
        out,
        len(frame),
        frame.shape[1],
        sorted({c for c in cutoffs}),
        {str(k.date() if hasattr(k, "date") else k): int(v) for k, v in per.items()},
    )
