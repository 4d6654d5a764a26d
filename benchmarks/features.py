"""Benchmark of the point-in-time feature snapshot against a hand-written query and pandas.

Generates a synthetic store (numpy straight into a DuckDB file, see ``synthetic_store.py``), then
runs each implementation in its own subprocess -- so that each one's peak memory (the worker's own
``ru_maxrss``) is its own -- and checks that they agree:

* ``build_features``: :func:`omnicrm.features.build_features` restricted to the groups the
  references implement (rfm, tenure, gaps, channels, engagement, returns: 34 columns);
* ``hand-written DuckDB``: one query written by hand for the same 34 columns;
* ``pandas``: a straightforward idiomatic pandas implementation of the same columns, on frames
  already loaded in memory (the load is timed separately);
* for information, ``build_features`` with every group (the full default snapshot);
* six monthly cutoffs: one ``build_features`` call; six hand-written queries in a loop; and one
  query that ``UNION ALL``\\ s the six generated snapshots (the one-query alternative).

Usage::

    python benchmarks/features.py                     # 10M events, 500k customers
    python benchmarks/features.py --events 200000 --customers 10000 --repeat 1   # quick check
    python benchmarks/features.py --reference ../shared/perf-reference --reps 3  # against the tuned reference

``--reference DIR`` is a second mode: omnicrm's feature definitions on the data of the perf reference
(``DIR``, read in place: its ``gen_data.py`` writes the Parquet events into a temporary folder, or into
``--perf-data``) next to the reference's own tuned DuckDB query, at 1M and 10M events, one cutoff
and six monthly cutoffs. Every run is a fresh process; the implementations alternate within each
rep (A, B, C, A, B, C, ...) so that load drift on a shared machine hits them alike, and the table
gives the medians of the per-rep ratios (see :func:`reference_main`).

Times are the best of ``--repeat`` runs (wall clock, including the conversion to pandas);
ratios are to the hand-written DuckDB query of the same number of cutoffs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from measure import peak_rss_mb

HERE = Path(__file__).resolve().parent
CUTOFF = datetime(2024, 7, 1)
CUTOFFS_6 = [datetime(2024, m, 1) for m in range(2, 8)]
#: The groups the references implement (the DESIGN.md snapshot: RFM windows, channel shares,
#: inter-purchase gaps, engagement rates, returns share, tenure).
GROUPS = ["rfm", "tenure", "gaps", "channels", "engagement", "returns"]
WINDOWS = (30, 90, 365)


# --- reference 1: hand-written DuckDB SQL ---------------------------------------------------------
def handwritten_sql(cutoff: datetime) -> str:
    """The same 34 columns, written by hand as one would for DuckDB alone."""
    t = f"TIMESTAMP '{cutoff:%Y-%m-%d %H:%M:%S}'"
    d30, d90, d365 = (f"{t} - INTERVAL {d} DAY" for d in WINDOWS)
    return f"""
WITH orders AS (
    SELECT customer_id, min(ts) AS ts, sum(amount) AS amount, min(channel) AS channel
    FROM events
    WHERE event_type = 'purchase' AND ts < {t}
    GROUP BY customer_id, coalesce(order_id, event_id)
), pa AS (
    SELECT customer_id, min(ts) AS first_ts, max(ts) AS last_ts,
        count(*) AS n, sum(amount) AS spend,
        count(*) FILTER (ts >= {d30}) AS n30, sum(amount) FILTER (ts >= {d30}) AS s30,
        count(*) FILTER (ts >= {d90}) AS n90, sum(amount) FILTER (ts >= {d90}) AS s90,
        count(*) FILTER (ts >= {d365}) AS n365, sum(amount) FILTER (ts >= {d365}) AS s365,
        count(*) FILTER (ts >= {d365} AND channel IN ('web', 'app')) AS online365,
        count(*) FILTER (ts >= {d365} AND channel = 'store') AS store365,
        count(*) FILTER (ts >= {d365} AND channel = 'web') AS web365,
        count(*) FILTER (ts >= {d365} AND channel = 'app') AS app365
    FROM orders GROUP BY ALL
), gaps AS (
    SELECT customer_id, count(*) AS days, avg(gap) AS gap_mean, stddev_samp(gap) AS gap_std,
        arg_max(gap, day) AS gap_last
    FROM (
        SELECT customer_id, day, day - lag(day) OVER (PARTITION BY customer_id ORDER BY day) AS gap
        FROM (SELECT DISTINCT customer_id, ts::DATE AS day FROM orders)
    ) GROUP BY ALL
), ev AS (
    SELECT customer_id,
        count(*) FILTER (event_type = 'email_sent' AND ts >= {d90}) AS sent,
        count(*) FILTER (event_type = 'email_open' AND ts >= {d90}) AS opens,
        count(*) FILTER (event_type = 'email_click' AND ts >= {d90}) AS clicks,
        count(*) FILTER (event_type = 'push_sent' AND ts >= {d90}) AS push_sent,
        count(*) FILTER (event_type = 'push_open' AND ts >= {d90}) AS push_opens,
        count(*) FILTER (event_type = 'visit' AND ts >= {d30}) AS visits30,
        count(*) FILTER (event_type = 'visit' AND ts >= {d90}) AS visits90,
        sum(amount) FILTER (event_type = 'return') AS refunds
    FROM events
    WHERE ts < {t} AND ts >= {d365} AND event_type <> 'purchase'
    GROUP BY ALL
)
SELECT c.customer_id, {t} AS cutoff,
    (epoch_us({t}) - epoch_us(pa.last_ts)) / 86400e6 AS recency_days,
    coalesce(pa.n, 0) AS orders_total, coalesce(pa.spend, 0) AS spend_total,
    coalesce(n30, 0) AS orders_30d, coalesce(s30, 0) AS spend_30d, s30 / nullif(n30, 0) AS aov_30d,
    coalesce(n90, 0) AS orders_90d, coalesce(s90, 0) AS spend_90d, s90 / nullif(n90, 0) AS aov_90d,
    coalesce(n365, 0) AS orders_365d, coalesce(s365, 0) AS spend_365d,
    s365 / nullif(n365, 0) AS aov_365d,
    (epoch_us({t}) - epoch_us(c.first_seen)) / 86400e6 AS tenure_days,
    (epoch_us({t}) - epoch_us(pa.first_ts)) / 86400e6 AS first_purchase_days,
    coalesce(gaps.days, 0) AS purchase_days, gap_mean AS gap_mean_days, gap_std AS gap_std_days,
    gap_last::DOUBLE AS gap_last_days,
    (epoch_us({t}) - epoch_us(pa.last_ts)) / 86400e6 / gap_mean AS gap_overdue_ratio,
    online365 / nullif(n365, 0) AS online_share_365d,
    store365 / nullif(n365, 0) AS channel_share_store_365d,
    web365 / nullif(n365, 0) AS channel_share_web_365d,
    app365 / nullif(n365, 0) AS channel_share_app_365d,
    coalesce(sent, 0) AS email_sent_90d, opens / nullif(sent, 0) AS email_open_rate_90d,
    clicks / nullif(sent, 0) AS email_click_rate_90d,
    coalesce(ev.push_sent, 0) AS push_sent_90d, push_opens / nullif(ev.push_sent, 0) AS push_open_rate_90d,
    coalesce(visits30, 0) AS visits_30d, coalesce(visits90, 0) AS visits_90d,
    coalesce(refunds, 0) AS return_amount_365d,
    coalesce(refunds, 0) / nullif(s365, 0) AS returns_share_365d
FROM customers c
LEFT JOIN pa USING (customer_id)
LEFT JOIN gaps USING (customer_id)
LEFT JOIN ev USING (customer_id)
WHERE c.first_seen < {t}
ORDER BY c.customer_id
"""


# --- reference 2: idiomatic pandas -----------------------------------------------------------------
PANDAS_EVENT_COLUMNS = ["event_id", "customer_id", "ts", "channel", "event_type", "order_id", "amount"]


def pandas_features(events: pd.DataFrame, customers: pd.DataFrame, cutoff: datetime) -> pd.DataFrame:
    """The same 34 columns with pandas groupbys (no Python loop over rows)."""
    t = pd.Timestamp(cutoff)
    day = pd.Timedelta(days=1)
    ev = events[events["ts"] < t]
    base = customers.loc[customers["first_seen"] < t, ["customer_id", "first_seen"]]
    base = base.set_index("customer_id").sort_index()

    p = ev[ev["event_type"] == "purchase"]
    orders = (
        p.assign(order_key=p["order_id"].fillna(p["event_id"]))
        .groupby(["customer_id", "order_key"], sort=False)
        .agg(ts=("ts", "min"), amount=("amount", "sum"), channel=("channel", "min"))
        .reset_index()
    )
    g = orders.groupby("customer_id")
    out = pd.DataFrame(index=base.index)
    out["cutoff"] = t
    last_ts = g["ts"].max().reindex(base.index)
    out["recency_days"] = (t - last_ts) / day
    out["orders_total"] = g.size().reindex(base.index, fill_value=0)
    out["spend_total"] = g["amount"].sum().reindex(base.index, fill_value=0.0)
    counts, spends = {}, {}
    for w in WINDOWS:
        in_w = orders[orders["ts"] >= t - pd.Timedelta(days=w)].groupby("customer_id")
        counts[w] = in_w.size().reindex(base.index, fill_value=0)
        spends[w] = in_w["amount"].sum().reindex(base.index)
        out[f"orders_{w}d"] = counts[w]
        out[f"spend_{w}d"] = spends[w].fillna(0.0)
        out[f"aov_{w}d"] = spends[w] / counts[w].replace(0, np.nan)
    out["tenure_days"] = (t - base["first_seen"]) / day
    out["first_purchase_days"] = (t - g["ts"].min().reindex(base.index)) / day

    days = (
        orders.assign(day=orders["ts"].dt.floor("D"))[["customer_id", "day"]]
        .drop_duplicates()
        .sort_values(["customer_id", "day"])
    )
    days["gap"] = days.groupby("customer_id")["day"].diff() / day
    gd = days.groupby("customer_id")["gap"]
    out["purchase_days"] = days.groupby("customer_id").size().reindex(base.index, fill_value=0)
    out["gap_mean_days"] = gd.mean().reindex(base.index)
    out["gap_std_days"] = gd.std().reindex(base.index)
    out["gap_last_days"] = gd.last().reindex(base.index)
    out["gap_overdue_ratio"] = out["recency_days"] / out["gap_mean_days"]

    recent = orders[orders["ts"] >= t - pd.Timedelta(days=365)]
    by_channel = recent.groupby(["customer_id", "channel"]).size().unstack(fill_value=0)
    by_channel = by_channel.reindex(index=base.index, columns=["store", "web", "app"], fill_value=0)
    n365 = counts[365].replace(0, np.nan)
    out["online_share_365d"] = (by_channel["web"] + by_channel["app"]) / n365
    for ch in ("store", "web", "app"):
        out[f"channel_share_{ch}_365d"] = by_channel[ch] / n365

    other = ev[(ev["ts"] >= t - pd.Timedelta(days=365)) & (ev["event_type"] != "purchase")]
    in90 = other[other["ts"] >= t - pd.Timedelta(days=90)]
    n90 = in90.groupby(["customer_id", "event_type"]).size().unstack(fill_value=0)
    n90 = n90.reindex(index=base.index, fill_value=0)
    for col in ("email_sent", "email_open", "email_click", "push_sent", "push_open", "visit"):
        if col not in n90:
            n90[col] = 0
    sent, pushed = n90["email_sent"], n90["push_sent"]
    out["email_sent_90d"] = sent
    out["email_open_rate_90d"] = n90["email_open"] / sent.replace(0, np.nan)
    out["email_click_rate_90d"] = n90["email_click"] / sent.replace(0, np.nan)
    out["push_sent_90d"] = pushed
    out["push_open_rate_90d"] = n90["push_open"] / pushed.replace(0, np.nan)
    visits = other[other["event_type"] == "visit"]
    out["visits_30d"] = (
        visits[visits["ts"] >= t - pd.Timedelta(days=30)]
        .groupby("customer_id")
        .size()
        .reindex(base.index, fill_value=0)
    )
    out["visits_90d"] = n90["visit"]
    refunds = (
        other[other["event_type"] == "return"]
        .groupby("customer_id")["amount"]
        .sum()
        .reindex(base.index, fill_value=0.0)
    )
    out["return_amount_365d"] = refunds
    out["returns_share_365d"] = refunds / spends[365].replace(0, np.nan)
    return out.reset_index()


# --- workers (one implementation per subprocess) ----------------------------------------------------
def _feature_config(full: bool):
    from omnicrm.features import FeatureConfig

    return FeatureConfig() if full else FeatureConfig(groups=GROUPS)


def _worker(name: str, db: str, repeat: int, out: str) -> None:
    import duckdb

    from omnicrm.features import build_features, feature_sql

    con = duckdb.connect(db, read_only=True)
    loaded_s = None
    if name == "pandas":
        start = time.perf_counter()
        events = con.sql(f"SELECT {', '.join(PANDAS_EVENT_COLUMNS)} FROM events").df()
        customers = con.sql("SELECT customer_id, first_seen FROM customers").df()
        loaded_s = time.perf_counter() - start
    baseline_mb = peak_rss_mb()

    def run() -> pd.DataFrame:
        if name == "features":
            return build_features(con, [CUTOFF], _feature_config(full=False))
        if name == "features_full":
            return build_features(con, [CUTOFF], _feature_config(full=True))
        if name == "handwritten":
            return con.sql(handwritten_sql(CUTOFF)).df()
        if name == "pandas":
            return pandas_features(events, customers, CUTOFF)
        if name == "features_6":
            return build_features(con, CUTOFFS_6, _feature_config(full=False))
        if name == "handwritten_6":
            return pd.concat([con.sql(handwritten_sql(c)).df() for c in CUTOFFS_6], ignore_index=True)
        if name == "union_6":
            cfg = _feature_config(full=False)
            parts = [f"SELECT * FROM ({feature_sql(c, cfg)})" for c in CUTOFFS_6]
            return con.sql("\nUNION ALL\n".join(parts) + "\nORDER BY cutoff, customer_id").df()
        raise ValueError(f"unknown implementation {name!r}")

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        frame = run()
        times.append(time.perf_counter() - start)
    peak_mb = peak_rss_mb()
    frame.to_parquet(out)
    Path(out + ".json").write_text(
        json.dumps(
            {
                "best_s": min(times),
                "times_s": times,
                "peak_mb": peak_mb,
                "baseline_mb": baseline_mb,
                "load_s": loaded_s,
                "rows": len(frame),
                "columns": frame.shape[1],
            }
        )
    )


def _generate(db: str, n_events: int, n_customers: int, seed: int) -> None:
    import duckdb

    sys.path.insert(0, str(HERE))
    from synthetic_store import generate_store

    with duckdb.connect(db) as con:
        generate_store(con, n_events, n_customers, seed=seed)


def _run_worker(name: str, db: Path, repeat: int, tmp: Path) -> dict:
    out = tmp / f"{name}.parquet"
    cmd = [sys.executable, __file__, "--worker", name, "--db", str(db), "--repeat", str(repeat), "--out", str(out)]
    subprocess.run(cmd, check=True)
    result = json.loads(Path(str(out) + ".json").read_text())
    result["frame"] = pd.read_parquet(out)
    print(f"  {name:<14} best {result['best_s']:.2f} s  peak {result['peak_mb']:.0f} MB", flush=True)
    return result


def _agree(a: pd.DataFrame, b: pd.DataFrame, what: str) -> str:
    """Same keys, same columns, numbers equal to 1e-9 relative (sums differ in the last bits)."""
    keys = ["cutoff", "customer_id"]
    a = a.assign(cutoff=pd.to_datetime(a["cutoff"])).sort_values(keys, ignore_index=True)
    b = b.assign(cutoff=pd.to_datetime(b["cutoff"])).sort_values(keys, ignore_index=True)
    if list(a.columns) != list(b.columns):
        missing = set(a.columns) ^ set(b.columns)
        raise AssertionError(f"{what}: columns differ: {sorted(missing)} / order")
    if not a[keys].equals(b[keys]):
        raise AssertionError(f"{what}: rows differ")
    worst = 0.0
    for col in a.columns.drop(keys):
        x, y = a[col].to_numpy(dtype=float), b[col].to_numpy(dtype=float)
        if not np.array_equal(np.isnan(x), np.isnan(y)):
            raise AssertionError(f"{what}: missing values differ in {col}")
        ok = ~np.isnan(x)
        if not np.allclose(x[ok], y[ok], rtol=1e-9, atol=1e-9):
            raise AssertionError(f"{what}: values differ in {col}")
        if ok.any():
            worst = max(worst, float(np.max(np.abs(x[ok] - y[ok]) / np.maximum(1.0, np.abs(y[ok])))))
    return f"{what}: {len(a)} rows × {a.shape[1]} columns agree (max rel. diff {worst:.1e})"


# --- mode 2: omnicrm's definitions on the perf reference's data, next to its tuned query -----------
#: omnicrm groups that cover the reference's workload (recency, counts and amounts per window,
#: distinct categories, channel shares, purchase gaps, e-mail engagement, returns share, tenure).
#: They compute more than the reference (38 columns against 18 + label: AOV per window, gap std and
#: last gap, category entropy and top category, push and click rates), and no label.
REFERENCE_GROUPS = ["rfm", "tenure", "gaps", "categories", "channels", "engagement", "returns"]
#: The reference's feature set in omnicrm's definitions (``FeatureConfig.columns``): one column per
#: reference column but its label and e-mail channel share (omnicrm has no e-mail purchase channel),
#: 17 in all. Recency, counts, amounts, distinct categories, channel shares and tenure have the same
#: definition; the purchase gap is over distinct purchase days, the open rate is per e-mail sent, the
#: return share is over gross spend.
REFERENCE_COLUMNS = [
    "recency_days",
    "orders_total",
    "spend_total",
    "orders_30d",
    "spend_30d",
    "orders_90d",
    "spend_90d",
    "orders_365d",
    "spend_365d",
    "tenure_days",
    "gap_mean_days",
    "n_categories_365d",
    "channel_share_store_365d",
    "channel_share_web_365d",
    "channel_share_app_365d",
    "email_open_rate_90d",
    "returns_share_365d",
]
#: run order within one rep; each name is one fresh process
REFERENCE_IMPLS = [
    "ref",
    "omni_set",
    "omni",
    "omni_frame",
    "ref_loop6",
    "omni6",
    "omni6x1",
    "omni_1t",
    "omni6_1t",
    "omni6x1_1t",
]
REFERENCE_LABELS = {
    "ref": "reference: tuned DuckDB query → Parquet (1 cutoff)",
    "omni_set": "omnicrm `write_features`, the reference's feature set (17 columns) → Parquet (1 cutoff)",
    "omni": "omnicrm `write_features`, 7 groups (38 columns) → Parquet (1 cutoff)",
    "omni_frame": "omnicrm `build_features` → pandas frame (1 cutoff)",
    "ref_loop6": "reference: 6 tuned queries in a loop → Parquet (6 cutoffs)",
    "omni6": "omnicrm `write_features`, one call → Parquet (6 cutoffs)",
    "omni6x1": "omnicrm `write_features`, 6 single calls → Parquet (6 cutoffs)",
    "omni_1t": "omnicrm `write_features`, one DuckDB thread (1 cutoff)",
    "omni6_1t": "omnicrm `write_features`, one DuckDB thread, one call (6 cutoffs, in parallel)",
    "omni6x1_1t": "omnicrm `write_features`, one DuckDB thread, 6 single calls (6 cutoffs)",
}


def _reference_module(reference: str):
    """The reference's ``features.py`` (imported from its folder, never copied)."""
    import importlib.util

    sys.path.insert(0, str(Path(reference).resolve()))
    spec = importlib.util.spec_from_file_location("perf_reference_features", Path(reference) / "features.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _store_path(perf_data: Path, size: str, layout: str) -> Path:
    return perf_data / f"omnicrm-store-{size}{'' if layout == 'parquet' else '-ingest'}.duckdb"


def _reference_store(reference: str, perf_data: Path, size: str, layout: str = "parquet") -> Path:
    """A DuckDB file that presents the reference's Parquet events as an omnicrm store.

    ``events`` is a view over the Parquet file (read in place, like the reference reads it), with
    ``event_id`` = the row number in the file and no ``order_id`` (every purchase line is its own
    order, as in the reference); ``customers`` is a table (a store keeps it; the reference derives
    tenure from the events before ``T``, which gives the same value). Built once, outside the timing.

    ``layout="ingest"``: the same events as a table in the order ``omnicrm ingest`` writes a store
    (by customer, then time; recorded in ``store_meta``), in a file of its own under ``perf_data``.
    The reference still reads its Parquet file.
    """
    parquet = perf_data / f"events_{size}.parquet"
    if not parquet.is_file():
        env = {**os.environ, "PERF_DATA": str(perf_data)}
        subprocess.run([sys.executable, str(Path(reference) / "gen_data.py"), "--size", size], check=True, env=env)
    db = _store_path(perf_data, size, layout)
    if not db.is_file():
        import duckdb

        from omnicrm import schema

        tmp = db.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        with duckdb.connect(str(tmp)) as con:
            src = f"read_parquet('{parquet}', file_row_number = true)"
            events = (
                "SELECT CAST(file_row_number AS BIGINT) AS event_id, customer_id, ts, channel,"
                f" event_type, CAST(NULL AS BIGINT) AS order_id, category, amount FROM {src}"
            )
            if layout == "parquet":
                con.execute(f"CREATE VIEW events AS {events}")
            else:
                con.execute(f"CREATE TABLE events AS {events} ORDER BY {schema.EVENTS_ORDER}")
                con.execute(schema.create_table_sql(schema.STORE_META))
                con.execute(
                    f"INSERT INTO {schema.STORE_META} VALUES ('{schema.EVENTS_ORDER_KEY}', '{schema.EVENTS_ORDER}')"
                )
            con.execute(
                "CREATE TABLE customers AS SELECT customer_id, min(ts) AS first_seen"
                f" FROM read_parquet('{parquet}') GROUP BY customer_id ORDER BY customer_id"
            )
        tmp.rename(db)
    return db


def _reference_worker(name: str, reference: str, perf_data: str, size: str, out: str, layout: str) -> None:
    """One timed run in this (fresh) process; prints one JSON line."""
    import duckdb

    os.environ["PERF_DATA"] = perf_data
    ref = _reference_module(reference)
    cutoff, cutoffs = ref.T, list(ref.CUTOFFS)
    parquet = str(Path(perf_data) / f"events_{size}.parquet")
    if name.startswith("ref"):
        impl = {"ref": "duckdb", "ref_loop6": "duckdb_multi_loop"}[name]
        baseline_mb = peak_rss_mb()
        cpu0 = _cpu_s()
        _, run_s = ref.IMPLS[impl](parquet, out)
        cpu_s = _cpu_s() - cpu0
    else:
        from omnicrm import features

        cfg = features.FeatureConfig(groups=REFERENCE_GROUPS)
        if name == "omni_set":
            cfg = features.FeatureConfig(groups=REFERENCE_GROUPS, columns=REFERENCE_COLUMNS)
        con = duckdb.connect(str(_store_path(Path(perf_data), size, layout)), read_only=True)
        con.execute("SET TimeZone = 'UTC'")
        if name.endswith("_1t"):  # as model code reads the store (open_store(..., deterministic=True))
            con.execute("SET threads TO 1")
            name = name.removesuffix("_1t")
        write = getattr(features, "write_features", None)
        if write is None:  # before write_features existed: the frame, written by pandas

            def write(con, points, cfg, path):
                features.build_features(con, points, cfg).to_parquet(path)

        baseline_mb = peak_rss_mb()
        cpu0 = _cpu_s()
        start = time.perf_counter()
        if name in ("omni", "omni_set"):
            write(con, [cutoff], cfg, out)
        elif name == "omni_frame":
            frame = features.build_features(con, [cutoff], cfg)
        elif name == "omni6":
            write(con, cutoffs, cfg, out)
        elif name == "omni6x1":
            Path(out).mkdir(exist_ok=True)
            for c in cutoffs:
                write(con, [c], cfg, f"{out}/{c:%Y-%m-%d}.parquet")
        run_s = time.perf_counter() - start
        cpu_s = _cpu_s() - cpu0
        if name == "omni_frame":
            frame.to_parquet(out)  # for the agreement check, after the timing
    rec = {"run_s": run_s, "cpu_s": cpu_s, "peak_mb": peak_rss_mb(), "baseline_mb": baseline_mb}
    print(json.dumps(rec), flush=True)


def _cpu_s() -> float:
    """CPU seconds (user + system, all threads) of this process so far: less moved by other load than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _reference_agree(ref_out: Path, omni_out: Path) -> str:
    """The columns both compute with the same definition must be equal (to 1e-9 relative)."""
    ref = pd.read_parquet(ref_out).sort_values("customer_id", ignore_index=True)
    omni = pd.read_parquet(omni_out)
    omni = omni.assign(customer_id=omni["customer_id"].astype("int64")).sort_values("customer_id", ignore_index=True)
    pairs = {
        "days_since_last_purchase": "recency_days",
        "purchase_cnt_30": "orders_30d",
        "purchase_cnt_90": "orders_90d",
        "purchase_cnt_365": "orders_365d",
        "purchase_amt_30": "spend_30d",
        "purchase_amt_90": "spend_90d",
        "purchase_amt_365": "spend_365d",
        "purchase_cnt_total": "orders_total",
        "purchase_amt_total": "spend_total",
        "n_categories_365": "n_categories_365d",
        "share_web_365": "channel_share_web_365d",
        "share_app_365": "channel_share_app_365d",
        "share_store_365": "channel_share_store_365d",
        "tenure_days": "tenure_days",
    }
    if not np.array_equal(ref["customer_id"].to_numpy(), omni["customer_id"].to_numpy()):
        raise AssertionError("reference vs omnicrm: the customers differ")
    for a, b in pairs.items():
        x, y = ref[a].to_numpy(dtype=float), omni[b].to_numpy(dtype=float)
        if not np.array_equal(np.isnan(x), np.isnan(y)) or not np.allclose(
            x[~np.isnan(x)], y[~np.isnan(y)], rtol=1e-9, atol=1e-9
        ):
            raise AssertionError(f"reference {a} differs from omnicrm {b}")
    return f"{len(ref):,} customers; {len(pairs)} columns with the same definition agree to 1e-9"


def _reference_table(size: str, runs: dict[str, list[dict]], loads: list[float], out_dir: Path) -> None:
    """Print one size's table: medians of times and peaks, medians of the per-rep ratios."""
    import statistics

    pairs = {
        "omni": "ref",
        "omni_set": "ref",
        "omni_frame": "ref",
        "omni6": "ref_loop6",
        "omni6x1": "ref_loop6",
        "omni_1t": "ref",
        "omni6_1t": "ref_loop6",
        "omni6x1_1t": "ref_loop6",
    }

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    def ratio(a: str, b: str, key: str) -> float:
        return statistics.median(x[key] / y[key] for x, y in zip(runs[a], runs[b], strict=True))

    print()
    print(f"### {size} events — load average (1 min) before the reps: {', '.join(f'{x:.1f}' for x in loads)}")
    print()
    print("| work | time | time ratio | CPU time | CPU ratio | peak RSS | memory ratio | RSS before timing |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in runs:
        ref_name = pairs.get(name)
        tr, cr, mr = (
            f"{ratio(name, ref_name, key):.2f}× ref" if ref_name in runs else "1.00×"
            for key in ("run_s", "cpu_s", "peak_mb")
        )
        print(
            f"| {REFERENCE_LABELS[name]} | {med(name, 'run_s'):.2f} s | {tr} | {med(name, 'cpu_s'):.2f} s | {cr} | "
            f"{med(name, 'peak_mb') / 1024:.2f} GB | {mr} | {med(name, 'baseline_mb') / 1024:.2f} GB |"
        )
    if {"omni6", "omni6x1", "omni"} <= set(runs):
        print()
        print(
            f"six cutoffs in one call / six single calls: {ratio('omni6', 'omni6x1', 'run_s'):.2f}× time, "
            f"{ratio('omni6', 'omni6x1', 'cpu_s'):.2f}× CPU time; "
            f"peak RSS of the one call / one single snapshot: {ratio('omni6', 'omni', 'peak_mb'):.2f}×"
        )
    if {"omni6_1t", "omni6x1_1t", "omni_1t"} <= set(runs):
        print(
            f"one DuckDB thread: six cutoffs in one call / six single calls: "
            f"{ratio('omni6_1t', 'omni6x1_1t', 'run_s'):.2f}× time, "
            f"{ratio('omni6_1t', 'omni6x1_1t', 'cpu_s'):.2f}× CPU time; "
            f"peak RSS of the one call / one single snapshot: {ratio('omni6_1t', 'omni_1t', 'peak_mb'):.2f}×"
        )
    last = len(runs.get("ref", [])) - 1
    for name in ("omni", "omni_set"):
        if "ref" in runs and name in runs:
            ours = out_dir / f"{name}-{size}-{last}.parquet"
            print(f"agreement ({name}): " + _reference_agree(out_dir / f"ref-{size}-{last}.parquet", ours))


def reference_main(
    reference: str, sizes: list[str], reps: int, perf_data: str | None, impls: list[str], layout: str = "parquet"
) -> None:
    """Run the reference comparison and print a Markdown table per size.

    Per size and rep, every implementation in ``impls`` runs once, each in a fresh process, in that
    order. Times are the timed part (read + compute + write Parquet; the reference's own timer,
    and the same span for omnicrm), wall clock and CPU (user + system over all threads, which
    other load moves much less than wall time); peak RSS is the worker's ``VmHWM``. Ratios are taken within a
    rep, then their median over reps is reported; the 1-minute load average before each rep is
    printed, since the machine may be shared.
    """
    tmp_ctx = tempfile.TemporaryDirectory(prefix="omnicrm-perf-")
    folder = Path(perf_data) if perf_data else Path(tmp_ctx.name)
    folder.mkdir(parents=True, exist_ok=True)
    out_dir = Path(tmp_ctx.name) / "out"
    out_dir.mkdir()
    print(
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, duckdb {__import__('duckdb').__version__}, "
        f"pandas {pd.__version__}; {reps} reps, implementations alternating within each rep; omnicrm's store: "
        f"{'a view over the Parquet file' if layout == 'parquet' else 'a table in ingest order (customer, time)'}",
        flush=True,
    )
    try:
        for size in sizes:
            _reference_store(reference, folder, size, layout)
            runs: dict[str, list[dict]] = {n: [] for n in impls}
            loads = []
            for rep in range(reps):
                up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
                loads.append(os.getloadavg()[0])
                print(f"[{size} rep {rep + 1}/{reps}] {up}", flush=True)
                for name in impls:
                    suffix = "" if name in ("ref_loop6", "omni6x1", "omni6x1_1t") else ".parquet"
                    out = out_dir / f"{name}-{size}-{rep}{suffix}"
                    cmd = [
                        sys.executable,
                        __file__,
                        "--ref-worker",
                        name,
                        "--reference",
                        reference,
                        "--perf-data",
                        str(folder),
                        "--size",
                        size,
                        "--out",
                        str(out),
                        "--layout",
                        layout,
                    ]
                    line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()
                    rec = json.loads(line[-1])
                    runs[name].append(rec)
                    print(
                        f"  {name:<11} {rec['run_s']:7.2f} s  cpu {rec['cpu_s']:7.2f} s  peak {rec['peak_mb']:6.0f} MB",
                        flush=True,
                    )
                    if rep < reps - 1 and name in ("ref_loop6", "omni6x1", "omni6x1_1t"):
                        shutil.rmtree(out, ignore_errors=True)

            _reference_table(size, runs, loads, out_dir)
            print(flush=True)
    finally:
        tmp_ctx.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per implementation (best counts)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--reference", help="perf-reference folder: run the reference comparison instead")
    parser.add_argument("--sizes", nargs="+", default=["1m", "10m"], help="reference data sizes (1m, 10m)")
    parser.add_argument("--reps", type=int, default=3, help="reference mode: reps (fresh processes, alternating)")
    parser.add_argument("--perf-data", help="reference mode: folder for its Parquet events (kept; default: temporary)")
    parser.add_argument("--impls", nargs="+", default=REFERENCE_IMPLS, choices=REFERENCE_IMPLS)
    parser.add_argument(
        "--layout",
        choices=["parquet", "ingest"],
        default="parquet",
        help="reference mode: omnicrm's store is a view over the reference's Parquet file (time order), or a table"
        " in the order omnicrm ingest writes (customer, then time)",
    )
    parser.add_argument("--ref-worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ref_worker:
        _reference_worker(args.ref_worker, args.reference, args.perf_data, args.size, args.out, args.layout)
        return
    if args.reference:
        reference_main(args.reference, args.sizes, args.reps, args.perf_data, args.impls, args.layout)
        return
    if args.worker == "generate":
        _generate(args.db, args.events, args.customers, args.seed)
        return
    if args.worker:
        _worker(args.worker, args.db, args.repeat, args.out)
        return

    import duckdb

    with tempfile.TemporaryDirectory(prefix="omnicrm-bench-") as tmpdir:
        tmp = Path(tmpdir)
        db = tmp / "store.duckdb"
        start = time.perf_counter()
        # generated in a subprocess too, so this process stays small while it starts the workers
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                "generate",
                "--db",
                str(db),
                "--events",
                str(args.events),
                "--customers",
                str(args.customers),
                "--seed",
                str(args.seed),
            ],
            check=True,
        )
        with duckdb.connect(str(db), read_only=True) as con:
            n_events = con.sql("SELECT count(*) FROM events").fetchall()[0][0]
        print(
            f"store: {n_events:,} events, {args.customers:,} customers "
            f"({time.perf_counter() - start:.1f} s to generate)",
            flush=True,
        )

        names = ["handwritten", "features", "pandas", "features_full", "handwritten_6", "features_6", "union_6"]
        res = {n: _run_worker(n, db, args.repeat, tmp) for n in names}

    checks = [
        _agree(res["features"]["frame"], res["handwritten"]["frame"], "build_features vs hand-written"),
        _agree(res["pandas"]["frame"], res["handwritten"]["frame"], "pandas vs hand-written"),
        _agree(
            res["features_full"]["frame"][list(res["features"]["frame"].columns)],
            res["features"]["frame"],
            "full snapshot, its 34 shared columns vs build_features",
        ),
        _agree(res["features_6"]["frame"], res["handwritten_6"]["frame"], "6 cutoffs: build_features vs hand-written"),
        _agree(res["union_6"]["frame"], res["handwritten_6"]["frame"], "6 cutoffs: UNION ALL vs hand-written"),
    ]
    one, six = res["handwritten"]["best_s"], res["handwritten_6"]["best_s"]
    rows = [
        ("hand-written DuckDB SQL (1 cutoff)", "handwritten", one),
        ("`build_features`, same 34 columns (1 cutoff)", "features", one),
        ("idiomatic pandas, same 34 columns (1 cutoff)", "pandas", one),
        ("`build_features`, full default snapshot, 51 columns (1 cutoff)", "features_full", one),
        ("hand-written DuckDB SQL, 6 queries in a loop (6 cutoffs)", "handwritten_6", six),
        ("`build_features`, one call (6 cutoffs)", "features_6", six),
        ("one UNION ALL query of the 6 generated snapshots (6 cutoffs)", "union_6", six),
    ]
    print()
    print(
        f"{n_events:,} events, {args.customers:,} customers, best of {args.repeat}; "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"duckdb {__import__('duckdb').__version__}, pandas {pd.__version__}"
    )
    print()
    print("| implementation | wall time | vs hand-written | peak RSS | peak RSS before the timed runs |")
    print("|---|---:|---:|---:|---:|")
    for label, key, ref in rows:
        r = res[key]
        print(
            f"| {label} | {r['best_s']:.2f} s | {r['best_s'] / ref:.2f}× | "
            f"{r['peak_mb'] / 1024:.2f} GB | {r['baseline_mb'] / 1024:.2f} GB |"
        )
    print()
    print(
        f"pandas: loading the events and customers from DuckDB into pandas took "
        f"{res['pandas']['load_s']:.1f} s (not in its wall time; in its memory)."
    )
    print(f"build_features vs pandas: {res['pandas']['best_s'] / res['features']['best_s']:.1f}× faster")
    print(
        f"6 cutoffs / 1 cutoff: build_features {res['features_6']['best_s'] / res['features']['best_s']:.2f}×, "
        f"hand-written {six / one:.2f}×"
    )
    for line in checks:
        print(line)


if __name__ == "__main__":
    main()
