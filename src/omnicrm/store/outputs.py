"""Output files written whole or not at all.

Every command that writes a table (features, scores, recommendations, effects, the feature cache)
writes a temporary file beside the target and moves it into place with ``os.replace``, so a
failed run leaves the previous output intact and a reader never sees half a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` to ``path`` (``.csv``, else Parquet) atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # the pid: concurrent writers never share one
    try:
        if path.suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
