"""Training, validation and evaluation frames: features at ``T`` joined to the population and labels.

One frame row is a (customer, cutoff) pair. Features come from the feature builder (``ts < T``),
optionally cached as Parquet keyed by the store's data fingerprint and the exact feature SQL, so a
change of data, feature definitions or feature code never reads a stale file. Labels come from
:mod:`omnicrm.tasks.labels` (``[T, T+h)``). A label window that runs past the last event in the
store is an error: its labels would be silently wrong (everyone "churned").
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from omnicrm.errors import ConfigError, InputError
from omnicrm.features import FeatureConfig, build_features, feature_sql
from omnicrm.store.outputs import write_frame
from omnicrm.tasks import labels
from omnicrm.tasks.config import DatasetConfig, TaskConfig, as_datetime

#: columns of a frame that are never model inputs
KEY_COLUMNS = ["customer_id", "cutoff"]
CONSENT_COLUMNS = ["consent_email", "consent_sms", "consent_push"]


def feature_config(ds: DatasetConfig) -> FeatureConfig:
    from omnicrm.config import validate_config

    feats = ds.features if isinstance(ds.features, dict) else {}
    return validate_config(FeatureConfig, feats, f"dataset {ds.name!r} (key 'features')")


def store_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    rows = con.sql("SELECT value FROM store_meta WHERE key = 'data_fingerprint'").fetchall()
    return rows[0][0] if rows else ""


def features_at(con: duckdb.DuckDBPyConnection, cutoff: datetime, ds: DatasetConfig) -> pd.DataFrame:
    """Feature snapshot at ``cutoff``, from the cache when the same data and SQL made it before."""
    fcfg = feature_config(ds)
    if not ds.feature_cache:
        return build_features(con, [cutoff], fcfg)
    sql = feature_sql(cutoff, fcfg)
    key = hashlib.sha256(f"{store_fingerprint(con)}\n{sql}".encode()).hexdigest()[:24]
    path = Path(ds.feature_cache) / f"{ds.name}-{cutoff:%Y%m%d}-{key}.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    frame = build_features(con, [cutoff], fcfg)
    write_frame(frame, path)
    return frame


def data_end(con: duckdb.DuckDBPyConnection) -> datetime:
    end = con.sql("SELECT max(ts) FROM events").fetchall()[0][0]
    if end is None:
        raise InputError("store: the events table is empty; nothing to train on")
    return end


def has_margin(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(con.sql(labels.has_margin_sql()).fetchall()[0][0])


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
) -> pd.DataFrame:
    """Population rows at each cutoff with features (and labels), stacked; errors if a cutoff is empty."""
    parts = []
    task = cfg.task
    margin = task.kind == "clv" and task.margin and has_margin(con)
    for d in sorted(set(cutoffs)):
        t = as_datetime(d)
        if with_labels:
            _check_window(con, t, task.label_days(), what)
        pop = con.sql(labels.population_sql(t, task.population)).df()
        if pop.empty:
            raise InputError(
                f"{what} cutoff {d}: the population is empty (no customer with {task.population.min_purchases}+ "
                f"purchase(s) in the {task.population.active_days} days before it); check the cutoffs against "
                "the store's dates"
            )
        feats = features_at(con, t, cfg.dataset)
        frame = feats.merge(pop, on="customer_id", how="inner")
        consent = con.sql(f"SELECT customer_id, {', '.join(CONSENT_COLUMNS)} FROM customers").df()
        frame = frame.merge(consent, on="customer_id", how="left")
        if task.kind == "clv" and task.btyd_features:
            frame = _with_btyd(con, t, frame, task.horizon_days)
        if with_labels:
            frame = _with_labels(con, t, frame, cfg, margin)
        parts.append(frame)
    out = pd.concat(parts, ignore_index=True)
    return out


def _with_btyd(con: duckdb.DuckDBPyConnection, t: datetime, frame: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """BG/NBD + Gamma-Gamma fitted on history before ``t`` only, offered as candidate features."""
    from omnicrm.tasks.btyd import BtydModel, rfm_summary

    summary = rfm_summary(con, t)
    model = BtydModel().fit(summary)
    pred = model.predict(summary, horizon)
    pred = pred.reset_index() if "customer_id" not in pred.columns else pred
    cols = ["customer_id", "btyd_expected_purchases", "btyd_p_alive", "btyd_expected_spend", "btyd_clv"]
    return frame.merge(pred[cols], on="customer_id", how="left")


def _with_labels(
    con: duckdb.DuckDBPyConnection, t: datetime, frame: pd.DataFrame, cfg: TaskConfig, margin: bool
) -> pd.DataFrame:
    task = cfg.task
    if task.kind == "propensity":
        for target in task.targets:
            hit = con.sql(labels.target_sql(t, task.horizon_days, target)).df()
            frame[f"y_{target.name}"] = frame["customer_id"].isin(hit["customer_id"]).astype(np.int8)
        return frame
    out = con.sql(labels.purchase_outcomes_sql(t, task.horizon_days, task.timing_max_days, margin)).df()
    frame = frame.merge(out, on="customer_id", how="left")
    purchases = frame["purchases"].fillna(0)
    if task.kind == "churn":
        frame["y_churn"] = (purchases == 0).astype(np.int8)
    elif task.kind == "next_purchase":
        frame["y_purchase"] = (purchases > 0).astype(np.int8)
        cap = float(task.timing_max_days or task.horizon_days)
        frame["event"] = frame["days_to_next"].notna().astype(np.int8)
        frame["duration"] = frame["days_to_next"].fillna(cap).clip(upper=cap)
    elif task.kind == "clv":
        frame["y_spend"] = frame["spend"].fillna(0.0)
        if margin:
            frame["y_margin"] = frame["margin"].fillna(0.0)
    return frame.drop(columns=["purchases", "spend", "margin", "days_to_next"])


def model_columns(frame: pd.DataFrame) -> list[str]:
    """Feature columns: everything but keys, labels and consent (current state, not point-in-time)."""
    skip = set(KEY_COLUMNS) | set(CONSENT_COLUMNS) | {"event", "duration"}
    return [c for c in frame.columns if c not in skip and not c.startswith("y_")]


def describe(frame: pd.DataFrame) -> dict[str, object]:
    per = frame.groupby("cutoff").size()
    return {"rows": len(frame), "cutoffs": json.dumps({str(k)[:10]: int(v) for k, v in per.items()})}
