"""Training, validation and evaluation frames: features at ``T`` joined to the population and labels.

One frame row is a (customer, cutoff) pair. The task (:mod:`omnicrm.tasks.base`) says who is in
the population, adds its extra point-in-time inputs and its labels (``[T, T+h)``); features come
from a :data:`FeatureSource` (``ts < T``). The builder here computes them from the store; the
wiring layer passes one that caches them (:func:`omnicrm.pipeline.task_frames.feature_source`), so
this module never sees a file. A label window that runs past the last event in the store is an
error: its labels would be silently wrong (everyone "churned").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime, timedelta

import duckdb
import pandas as pd

from omnicrm.errors import ConfigError, InputError
from omnicrm.features import FeatureConfig, build_features
from omnicrm.features.config import resolve_feature_config
from omnicrm.features.cutoffs import normalize_cutoff
from omnicrm.tasks.config import DatasetConfig, TaskConfig

#: columns of a frame that are never model inputs
KEY_COLUMNS = ["customer_id", "cutoff"]
CONSENT_COLUMNS = ["consent_email", "consent_sms", "consent_push"]

#: the feature snapshot at a cutoff: ``source(con, cutoff) -> frame`` with one row per customer
FeatureSource = Callable[[duckdb.DuckDBPyConnection, datetime], pd.DataFrame]


def feature_config(ds: DatasetConfig) -> FeatureConfig:
    """The dataset's feature settings, validated (a path in ``features`` is resolved when loading)."""
    feats = ds.features if isinstance(ds.features, dict) else {}
    return resolve_feature_config(feats, ".", f"dataset {ds.name!r} (key 'features')")


def snapshot_features(fcfg: FeatureConfig) -> FeatureSource:
    """A :data:`FeatureSource` that builds each snapshot from the store (no cache).

    Parameters
    ----------
    fcfg : FeatureConfig

    Returns
    -------
    FeatureSource
    """

    def build(con: duckdb.DuckDBPyConnection, cutoff: datetime) -> pd.DataFrame:
        return build_features(con, [cutoff], fcfg)

    return build


def store_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """The store's data fingerprint (``store_meta``), or ``""`` for a store without one."""
    rows = con.sql("SELECT value FROM store_meta WHERE key = 'data_fingerprint'").fetchall()
    return rows[0][0] if rows else ""


def data_end(con: duckdb.DuckDBPyConnection) -> datetime:
    """The timestamp of the store's last event; an empty events table is an error."""
    end = con.sql("SELECT max(ts) FROM events").fetchall()[0][0]
    if end is None:
        raise InputError("store: the events table is empty; nothing to train on")
    return end


def _check_window(con: duckdb.DuckDBPyConnection, cutoff: datetime, days: int, what: str) -> None:
    end = data_end(con)
    if cutoff + timedelta(days=days) > end + timedelta(days=1):
        raise ConfigError(
            f"{what} cutoff {cutoff:%Y-%m-%d}: its {days}-day label window ends "
            f"{cutoff + timedelta(days=days):%Y-%m-%d}, after the last event in the store ({end:%Y-%m-%d}); "
            "labels there would be wrong. Choose an earlier cutoff."
        )


def build_frame(
    con: duckdb.DuckDBPyConnection,
    cfg: TaskConfig,
    cutoffs: list[date],
    with_labels: bool = True,
    what: str = "training",
    features: FeatureSource | None = None,
) -> pd.DataFrame:
    """Population rows at each cutoff with features (and labels), stacked; errors if a cutoff is empty.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        The store.
    cfg : TaskConfig
        The task (population, inputs, labels) and the dataset's feature settings.
    cutoffs : list of date
        Built in ascending order, each once.
    with_labels : bool
        Add the labels (training and evaluation); scoring frames have none.
    what : str
        Names the frame in error messages (``training``, ``evaluation``, ``scoring``).
    features : FeatureSource, optional
        Where feature snapshots come from (default: built from the store, :func:`snapshot_features`).

    Returns
    -------
    DataFrame
    """
    parts = []
    task = cfg.task
    features = features or snapshot_features(feature_config(cfg.dataset))
    for d in sorted(set(cutoffs)):
        t = normalize_cutoff(d)
        if with_labels:
            _check_window(con, t, task.label_days(), what)
        pop = con.sql(task.population_sql(t)).df()
        if pop.empty:
            raise InputError(
                f"{what} cutoff {d}: the population is empty (no customer with {task.population.min_purchases}+ "
                f"purchase(s) in the {task.population.active_days} days before it); check the cutoffs against "
                "the store's dates and the task's population (active_days, min_purchases)"
            )
        frame = features(con, t).merge(pop, on="customer_id", how="inner")
        consent = con.sql(f"SELECT customer_id, {', '.join(CONSENT_COLUMNS)} FROM customers").df()
        frame = frame.merge(consent, on="customer_id", how="left")
        frame = task.add_inputs(con, t, frame)
        if with_labels:
            frame = task.add_labels(con, t, frame)
        parts.append(frame)
    out = pd.concat(parts, ignore_index=True)
    return out


def model_columns(frame: pd.DataFrame, label_columns: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Feature columns, in frame order.

    Everything but keys, consent (current state, not point-in-time) and labels (``y_*`` and the
    task's other ``label_columns``).
    """
    skip = set(KEY_COLUMNS) | set(CONSENT_COLUMNS) | set(label_columns)
    return [c for c in frame.columns if c not in skip and not c.startswith("y_")]


def describe(frame: pd.DataFrame) -> dict[str, object]:
    """Rows and rows per cutoff of a frame (JSON), for logs."""
    per = frame.groupby("cutoff").size()
    return {"rows": len(frame), "cutoffs": json.dumps({str(k)[:10]: int(v) for k, v in per.items()})}
