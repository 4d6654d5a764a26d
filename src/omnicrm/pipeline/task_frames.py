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
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from omnicrm.features import build_features, feature_sql
from omnicrm.features.cutoffs import normalize_cutoff
from omnicrm.features.snapshot import query_ranges
from omnicrm.interrupts import worker_pool
from omnicrm.progress import Progress, silent
from omnicrm.store.outputs import write_frame
from omnicrm.tasks.config import DatasetConfig, TaskConfig
from omnicrm.tasks.frames import build_frame, feature_config, store_fingerprint
from omnicrm.tasks.train import Frames, holdout_split


class CacheWrites:
    """New feature-cache files written on a thread of their own while the caller goes on.

    :meth:`finish` waits for them and raises the first failure, as an inline write would have.
    """

    def __init__(self) -> None:
        self._pool = worker_pool(1, "omnicrm-cache")
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


class CachedFeatures:
    """The dataset's feature snapshots (a :data:`FeatureSource`), from the cache when the same data and SQL made them.

    A cache file is keyed by the store's data fingerprint and the exact feature SQL (and the customer
    ranges a large base is computed in, :func:`omnicrm.features.snapshot.query_ranges`), so a change
    of data, feature definitions or feature code never reads a stale file. :meth:`prefetch` builds the
    snapshots of many cutoffs in one call, which on a single-threaded (deterministic) store runs
    them in parallel, one per core (:func:`omnicrm.features.build_features`), with the bits each
    would have alone.
    """

    def __init__(self, ds: DatasetConfig, writer: CacheWrites | None = None) -> None:
        self._config = feature_config(ds)
        self._folder = Path(ds.feature_cache) if ds.feature_cache else None
        self._name = ds.name
        self._writer = writer
        self._ready: dict[datetime, pd.DataFrame] = {}

    def _path(self, con: duckdb.DuckDBPyConnection, cutoff: datetime) -> Path | None:
        if self._folder is None:
            return None
        sql = feature_sql(cutoff, self._config)
        ranges = query_ranges(con, cutoff)  # a snapshot computed by customer range may differ in last bits
        plan = "" if ranges == [None] else f"\n{ranges!r}"
        key = hashlib.sha256(f"{store_fingerprint(con)}\n{sql}{plan}".encode()).hexdigest()[:24]
        return self._folder / f"{self._name}-{cutoff:%Y%m%d}-{key}.parquet"

    def _keep(self, frame: pd.DataFrame, path: Path | None) -> None:
        if path is None:
            return
        if self._writer is None:
            write_frame(frame, path)
        else:
            self._writer.submit(frame, path)

    def prefetch(self, con: duckdb.DuckDBPyConnection, cutoffs: list[datetime]) -> None:
        """Build the snapshots of ``cutoffs`` not in the cache in one call; each is served once."""
        missing = {}
        for cutoff in sorted({normalize_cutoff(c) for c in cutoffs}):
            path = self._path(con, cutoff)
            if path is None or not path.is_file():
                missing[cutoff] = path
        if len(missing) < 2:
            return
        frame = build_features(con, list(missing), self._config)
        for cutoff, path in missing.items():
            part = frame[frame["cutoff"] == cutoff].reset_index(drop=True)
            self._keep(part, path)
            self._ready[cutoff] = part

    def __call__(self, con: duckdb.DuckDBPyConnection, cutoff: datetime) -> pd.DataFrame:
        """The snapshot at ``cutoff``: prefetched, cached, or built now (and cached)."""
        ready = self._ready.pop(cutoff, None)
        if ready is not None:
            return ready
        path = self._path(con, cutoff)
        if path is not None and path.is_file():
            return pd.read_parquet(path)
        frame = build_features(con, [cutoff], self._config)
        self._keep(frame, path)
        return frame


def feature_source(ds: DatasetConfig, writer: CacheWrites | None = None) -> CachedFeatures:
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
    CachedFeatures
    """
    return CachedFeatures(ds, writer)


def load_frames(cfg: TaskConfig, progress: Progress = silent) -> Frames:
    """The training, validation and evaluation frames of ``cfg`` from its store (one DuckDB thread).

    With ``validation: holdout`` the validation frame is the held-out customers' rows of the
    training cutoffs (:func:`omnicrm.tasks.train.holdout_split`), left out of the training frame.

    The snapshots missing from the cache are built first, in one call (:meth:`CachedFeatures.prefetch`):
    on the single-threaded store that runs them a core each, with the bits each has alone.

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
        cutoffs = [*cfg.train_cutoffs(), *([] if cfg.cutoffs.holdout else cfg.cutoffs.validation_dates())]
        progress(f"{cfg.name}: feature snapshots", 0.02)
        features.prefetch(con, [*cutoffs, cfg.cutoffs.evaluation])
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
