"""``omnicrm predict`` at scale against a bare process doing the same work, start-up included.

A synthetic store of N customers is generated with numpy straight into DuckDB (``synthetic_store.py``,
20 events per customer, as ``benchmarks/score.py`` does), with identity links in four sources (one
to three records per customer), and scored at ``--as-of`` with the demo's churn champion (``make
demo`` first: the tracking database is copied, the model artifacts are read from ``mlruns/``):

* ``omnicrm predict``: the command, a fresh process, writing ``scores.parquet``; its feature cache
  is a new folder each time (the first scoring at a date writes the snapshot, as a real run does);
* bare: one process that imports DuckDB, pandas and the model's classes, unpickles the same model
  (exported from the registry once by the set-up), runs the feature and population SQL as one
  query on one DuckDB thread (model inputs must not change with the thread count), the source keys
  by ``PIVOT``, ``predict_frame`` (the booster and the calibrator) and writes Parquet with pyarrow.

Reps are interleaved and rotate which side goes first; the table gives medians and the median of the
per-rep ratios. The two outputs must hold the same customers, scores and keys (checked every rep),
and every omnicrm output must be byte-identical to the first (bit-identical from run to run).

    python benchmarks/predict.py --customers 500000 --reps 3
    python benchmarks/predict.py --customers 20000 --reps 1      # quick check
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from measure import run

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
AS_OF = "2024-07-01"
SOURCES = ("crm_members", "ecom_orders", "pos_sales", "web_sessions")


def _store(db: Path, customers: int) -> None:
    """The synthetic store (``score.py``'s generator) plus identity links in :data:`SOURCES`."""
    import duckdb

    sys.path.insert(0, str(HERE))
    from score import _generate

    _generate(db, customers, 20)
    with duckdb.connect(str(db)) as con:
        values = ", ".join(f"('{s}', {i})" for i, s in enumerate(SOURCES))
        con.execute(
            f"""
            INSERT INTO identity_links
            SELECT s.source, s.source || '-' || c.customer_id || '-' || r.k, c.customer_id, 'deterministic', 1.0
            FROM customers c
            CROSS JOIN (VALUES {values}) s(source, i)
            CROSS JOIN range(3) r(k)
            WHERE r.k < 1 + (hash(c.customer_id || s.source) % 3)
              AND hash(c.customer_id) % 4 != s.i  -- every customer lacks one source
            """
        )


def _config(folder: Path, db: Path, cache: Path | None) -> Path:
    import yaml

    raw = yaml.safe_load((ROOT / "configs/tasks/churn.yaml").read_text())
    feats = yaml.safe_load((ROOT / "configs/features/default.yaml").read_text())
    cache_dir = str(cache) if cache else None
    raw["dataset"] = {"name": "bench", "store": str(db), "features": feats, "feature_cache": cache_dir}
    for key in ("model", "search"):
        raw[key] = str((ROOT / "configs/tasks" / raw[key]).resolve())
    path = folder / f"churn-{cache.name if cache else 'nocache'}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _export_model(folder: Path) -> None:
    """The churn champion as a plain pickle for the bare process (which must not import mlflow)."""
    import pickle

    from omnicrm import quiet, tracking

    quiet.apply()
    info = tracking.get_version("omnicrm-churn", "champion")
    model = tracking.load_model(tracking.model_uri("omnicrm-churn", info.version))
    (folder / "model.pkl").write_bytes(pickle.dumps(model))
    (folder / "version.txt").write_text(info.version)


def bare(config: str, folder: str, out: str) -> None:
    """The bare pipeline (run by :func:`main` as ``--bare CONFIG FOLDER OUT``)."""
    import pickle
    from datetime import datetime

    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from omnicrm.features import feature_sql
    from omnicrm.features.snapshot import feature_dtypes
    from omnicrm.tasks.config import load_task_config
    from omnicrm.tasks.frames import feature_config

    cfg = load_task_config(config)
    model = pickle.loads((Path(folder) / "model.pkl").read_bytes())
    version = (Path(folder) / "version.txt").read_text()
    fcfg = feature_config(cfg.dataset)
    as_of = datetime.fromisoformat(AS_OF)
    con = duckdb.connect(cfg.dataset.store, read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET threads TO 1")
    frame = con.sql(
        f"SELECT f.*, c.consent_email, c.consent_sms, c.consent_push "
        f"FROM ({feature_sql(as_of, fcfg)}) f JOIN ({cfg.task.population_sql(as_of)}) p USING (customer_id) "
        "LEFT JOIN customers c USING (customer_id) ORDER BY customer_id"
    ).df()
    frame = frame.astype(feature_dtypes(fcfg))
    keys = con.sql(
        "PIVOT (SELECT customer_id, source || '_key' AS source, "
        "string_agg(source_record_id, '|' ORDER BY source_record_id) AS k FROM identity_links "
        "GROUP BY ALL) ON source USING first(k) GROUP BY customer_id"
    ).to_arrow_table()
    scores = model.predict_frame(frame)
    table = pa.table(
        {
            "as_of": pa.array([as_of] * len(frame), pa.timestamp("us")),
            "customer_id": frame["customer_id"].to_numpy(),
            "p_churn": scores["p_churn"].to_numpy(),
            "model_versions": pa.array([f"omnicrm-churn:{version}"] * len(frame)),
        }
    )
    con.register("scored", table)
    con.register("keys", keys)
    table = con.sql("SELECT * FROM scored LEFT JOIN keys USING (customer_id) ORDER BY customer_id").to_arrow_table()
    pq.write_table(table, out)


def _same(a_path: Path, b_path: Path) -> None:
    """Same customers, scores and keys (columns matched by name, rows by customer)."""
    import numpy as np
    import pandas as pd

    a = pd.read_parquet(a_path).sort_values("customer_id", ignore_index=True)
    b = pd.read_parquet(b_path).sort_values("customer_id", ignore_index=True)
    assert list(a["customer_id"]) == list(b["customer_id"]), "different customers"
    assert np.array_equal(a["p_churn"].to_numpy(), b["p_churn"].to_numpy()), "different scores"
    for c in (c for c in a.columns if c.endswith("_key")):
        assert a[c].fillna("").tolist() == b[c].fillna("").tolist(), f"different {c}"


def main() -> None:
    """Generate the store, run both pipelines interleaved, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=500_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one); the store is kept")
    parser.add_argument("--before", metavar="SRC", help="also run the command from this source tree")
    parser.add_argument("--bare", nargs=3, metavar=("CONFIG", "FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare(*args.bare)
        return
    if not (ROOT / "mlruns/mlflow.db").is_file():
        raise SystemExit("no mlruns/mlflow.db: run `make demo` first (the benchmark scores with its churn champion)")
    work = Path(args.work or tempfile.mkdtemp(prefix="omnicrm-bench-predict-"))
    (work / "mlruns").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "mlruns/mlflow.db", work / "mlruns/mlflow.db")
    env = os.environ | {"OMNICRM_MLRUNS": str(work / "mlruns"), "PYTHONPATH": str(ROOT / "src")}
    env.pop("MLFLOW_TRACKING_URI", None)
    os.environ.update({"OMNICRM_MLRUNS": str(work / "mlruns")})
    db = work / f"store-{args.customers}.duckdb"
    if not db.exists():
        t0 = time.monotonic()
        _store(db, args.customers)
        print(f"store of {args.customers:,} customers generated in {time.monotonic() - t0:.0f} s", flush=True)
    _export_model(work)
    omnicrm = [str(Path(sys.executable).parent / "omnicrm")]
    trees = {"omnicrm": ROOT / "src"} | ({"before": Path(args.before).resolve()} if args.before else {})
    sides = ["bare", *trees]
    rows: dict[str, list[dict[str, float]]] = {s: [] for s in sides}
    digests: set[str] = set()
    print(f"load before: {os.getloadavg()}", flush=True)
    for rep in range(args.reps):
        for side in sides[rep % len(sides) :] + sides[: rep % len(sides)]:
            out = work / f"{side}-{rep}.parquet"
            cache = work / f"cache-{side}-{rep}"
            shutil.rmtree(cache, ignore_errors=True)
            config = _config(work, db, cache)
            if side == "bare":
                cmd = [sys.executable, __file__, "--bare", str(config), str(work), str(out)]
                wall, cpu, _ = run(cmd, env)
            else:
                cmd = [*omnicrm, "predict", str(config), "--as-of", AS_OF, "--out", str(out)]
                wall, cpu, text = run(cmd, env | {"PYTHONPATH": str(trees[side])})
                if side == "omnicrm":
                    digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
            rows[side].append({"wall": wall, "cpu": cpu})
        _same(work / f"omnicrm-{rep}.parquet", work / f"bare-{rep}.parquet")
        print(json.dumps({k: v[-1] for k, v in rows.items()}), flush=True)
    print(f"load after: {os.getloadavg()}")
    import pandas as pd

    scored = len(pd.read_parquet(work / "omnicrm-0.parquet", columns=["customer_id"]))
    print(f"{scored:,} customers scored; omnicrm outputs byte-identical across reps: {len(digests) == 1}")
    if len(digests) != 1:
        raise SystemExit("omnicrm predict wrote different files from run to run")
    print("\n| process | wall s | CPU s | wall / bare (median of per-rep ratios) |\n|---|---:|---:|---:|")
    for side in sides:
        wall = statistics.median(r["wall"] for r in rows[side])
        cpu = statistics.median(r["cpu"] for r in rows[side])
        ratio = statistics.median(r["wall"] / b["wall"] for r, b in zip(rows[side], rows["bare"], strict=True))
        print(f"| {side} | {wall:.2f} | {cpu:.2f} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
