"""Where task frames come from: the store, with feature snapshots cached as Parquet files.

The pure frame builder (:func:`omnicrm.tasks.frames.build_frame`) takes a feature source; this
module gives it one that caches each snapshot under the dataset's ``feature_cache`` folder, keyed by
the store's data fingerprint and the exact feature SQL, so a change of data, feature definitions or
feature code never reads a stale file. :func:`load_frames` opens the store and builds the three
frames of a task config.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from omnicrm.features import build_features, feature_sql
from omnicrm.progress import Progress, silent
from omnicrm.store.outputs import write_frame
from omnicrm.tasks.config import DatasetConfig, TaskConfig
from omnicrm.tasks.frames import FeatureSource, build_frame, feature_config, snapshot_features, store_fingerprint
from omnicrm.tasks.train import Frames, holdout_split


class CacheWrites:
    """New feature-cache files written on a thread of their own while the caller goes on.

    :meth:`finish` waits for them and raises the first failure, as an inline write would have.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="omnicrm-cache")
        self._futures: list[Future[Path]] = []

    def submit(self, frame: pd.DataFrame, path: Path) -> None:
        """Write ``frame`` to ``path`` (atomically, :func:`~omnicrm.store.outputs.write_frame`)."""
        self._futures.append(self._pool.submit(write_frame, frame, path))

    def finish(self, check: bool = True) -> None:
        """Wait for every write; with ``check``, raise the first one's error."""
        self._pool.shutdown(wait=True)
        if check:
            for future in self._futures:
                future.result()


def feature_source(ds: DatasetConfig, writer: CacheWrites | None = None) -> FeatureSource:
    """The dataset's feature snapshots, from the cache when the same data and SQL made them before.

    Parameters
    ----------
    ds : DatasetConfig
        ``feature_cache`` is the folder (``None``: no cache, every snapshot is built).
    writer : CacheWrites, optional
        Write new cache files there instead of before returning the snapshot (the caller calls its
        :meth:`CacheWrites.finish`); the snapshot must then not be changed in place.

    Returns
    -------
    FeatureSource
    """
    fcfg = feature_config(ds)
    if not ds.feature_cache:
        return snapshot_features(fcfg)
    folder = Path(ds.feature_cache)

    def cached(con: duckdb.DuckDBPyConnection, cutoff: datetime) -> pd.DataFrame:
        sql = feature_sql(cutoff, fcfg)
        key = hashlib.sha256(f"{store_fingerprint(con)}\n{sql}".encode()).hexdigest()[:24]
        path = folder / f"{ds.name}-{cutoff:%Y%m%d}-{key}.parquet"
        if path.is_file():
            return pd.read_parquet(path)
        frame = build_features(con, [cutoff], fcfg)
        if writer is None:
            write_frame(frame, path)
        else:
            writer.submit(frame, path)
        return frame

    return cached


def load_frames(cfg: TaskConfig, progress: Progress = silent) -> Frames:
    """The training, validation and evaluation frames of ``cfg`` from its store (one DuckDB thread).

    With ``validation: holdout`` the validation frame is the held-out customers' rows of the
    training cutoffs (:func:`omnicrm.tasks.train.holdout_split`), left out of the training frame.

    The snapshots are built one after the other: two at a time (a worker cursor beside the main
    one) made the cold-cache frames slower on 2 cores in ``benchmarks/train.py`` (10.9-17.3 s
    against 7.4-10.9 s).

    Parameters
    ----------
    cfg : TaskConfig
    progress : Progress

    Returns
    -------
    Frames
    """
    from omnicrm.store import open_store

    start = time.perf_counter()
    features = feature_source(cfg.dataset)
    con = open_store(cfg.dataset.store, deterministic=True)
    try:
        progress(f"{cfg.name}: training frame", 0.05)
        tr = build_frame(con, cfg, cfg.train_cutoffs(), what="training", features=features)
        progress(f"{cfg.name}: validation and evaluation frames", 0.25)
        if cfg.cutoffs.holdout:
            tr, va = holdout_split(tr, cfg.cutoffs.holdout_share, cfg.model.seed)
        else:
            va = build_frame(con, cfg, cfg.cutoffs.validation_dates(), what="validation", features=features)
        ev = build_frame(con, cfg, [cfg.cutoffs.evaluation], what="evaluation", features=features)
        fp = store_fingerprint(con)
    finally:
        con.close()
    return Frames(tr, va, ev, fp, time.perf_counter() - start)
