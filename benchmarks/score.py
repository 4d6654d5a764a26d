"""Batch scoring at scale: ``omnicrm score`` against a minimal hand-written pipeline doing the same work.

For each base size, a synthetic store is generated with numpy straight into DuckDB
(``synthetic_store.py``; the tables it does not fill are created empty). Both pipelines score it at
``--as-of`` with the demo's registered models (``make demo`` first; they are read from the project's
``mlruns/`` and nothing is registered): the four task configs (churn, next_purchase, clv with its
margin model, three propensity targets) and the effect model. The recommender and the next-best
actions are left out of both: the minimal pipeline would have to re-implement them.

* ``omnicrm score``: the command in a subprocess, chunked (``--chunk``), with its lock, staging,
  accounting, drift profiles, manifest and MLflow run (into a private copy of the tracking database).
* minimal: one process that loads the same models, runs one feature query for the whole base, each
  task's population query and extra inputs, ``predict_frame`` per model (the LightGBM boosters) and
  writes one Parquet file per model: no chunks, no accounting, no drift, no manifest.

Wall time and the peak resident memory (Linux ``VmHWM`` of the process, polled until it exits) are
measured for each; start-up (interpreter and imports, before any work) is measured apart by importing
what each pipeline imports, and the model loading is the manifest's ``models`` step.

    python benchmarks/score.py --customers 100000 500000 1000000 --chunk 50000
    python benchmarks/score.py --customers 20000 --chunk 5000        # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from measure import run_with_peak

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
AS_OF = "2024-07-01"
TASKS = ("churn", "next_purchase", "clv", "propensity")
EFFECT_MODEL = "synthetic-uplift-purchase"


def _generate(db: Path, customers: int, events_per_customer: int) -> None:
    import duckdb

    sys.path.insert(0, str(HERE))
    from omnicrm import schema
    from synthetic_store import generate_store

    with duckdb.connect(str(db)) as con:
        generate_store(con, customers * events_per_customer, customers, seed=0)
        have = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        for table in schema.TABLES:
            if table not in have:
                con.execute(schema.create_table_sql(table))
        con.execute("INSERT INTO store_meta VALUES ('data_fingerprint', 'benchmark')")


def _configs(folder: Path, db: Path, chunk: int, memory_limit: str) -> Path:
    """Task configs of the demo with the benchmark store, and the scoring config; returns the latter."""
    import yaml

    feats = yaml.safe_load((ROOT / "configs/features/default.yaml").read_text())
    dataset = {"name": "synthetic", "store": str(db), "features": feats, "feature_cache": None}
    for task in TASKS:
        raw = yaml.safe_load((ROOT / f"configs/tasks/{task}.yaml").read_text())
        raw["dataset"] = dataset
        for key in ("model", "search"):
            raw[key] = str((ROOT / "configs/tasks" / raw[key]).resolve())
        (folder / f"{task}.yaml").write_text(yaml.safe_dump(raw))
    cfg = {
        "name": "bench",
        "store": str(db),
        "features": feats,
        "output": str(folder / "out"),
        "chunk_size": chunk,
        "memory_limit": memory_limit,
        "tasks": [{"config": f"{t}.yaml"} for t in TASKS],
        "effects": [{"name": EFFECT_MODEL}],
    }
    path = folder / "score.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def minimal(config: str, out: str) -> None:
    """The minimal pipeline (run in its own process by :func:`main`)."""
    from datetime import datetime

    import pandas as pd

    from omnicrm import quiet, tracking
    from omnicrm.features import feature_sql
    from omnicrm.features.snapshot import feature_dtypes
    from omnicrm.score.config import load_score_config
    from omnicrm.store import open_store

    quiet.apply()
    setup = load_score_config(config)
    as_of = datetime.fromisoformat(AS_OF)
    models = []
    for tcfg in setup.tasks:
        for target in tcfg.task.declared_targets():
            name = tcfg.registered_name(target)
            info = tracking.find_version(name, "champion")
            if info is not None:
                models.append((tcfg, name, tracking.load_model(tracking.model_uri(name, info.version))))
    effect = tracking.load_model(tracking.model_uri(f"omnicrm-{EFFECT_MODEL}", "champion"))
    con = open_store(setup.config.store, deterministic=True)
    feats = con.sql(feature_sql(as_of, setup.features)).df().astype(feature_dtypes(setup.features))
    consent = con.sql("SELECT customer_id, consent_email, consent_sms, consent_push FROM customers").df()
    frames, pops = {}, {}
    for tcfg in setup.tasks:
        sql = tcfg.task.population_sql(as_of)
        pop = pops[sql] if sql in pops else pops.setdefault(sql, con.sql(sql).df())  # a shared rule runs once
        frame = feats.merge(pop, on="customer_id").merge(consent, on="customer_id", how="left")
        frames[tcfg.name] = tcfg.task.add_inputs(con, as_of, frame)
    con.close()
    Path(out).mkdir(parents=True, exist_ok=True)
    for tcfg, name, model in models:
        frame = frames[tcfg.name]
        pred = model.predict_frame(frame)
        pred.insert(0, "customer_id", frame["customer_id"].to_numpy())
        pred.to_parquet(Path(out) / f"{name}.parquet", index=False)
    tau = effect.predict_effect(feats)
    pd.DataFrame(tau, columns=effect.actions).assign(customer_id=feats["customer_id"].to_numpy()).to_parquet(
        Path(out) / "effects.parquet", index=False
    )


def main() -> None:
    """Generate each store, run both pipelines, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 500_000, 1_000_000])
    parser.add_argument("--events-per-customer", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument(
        "--memory-limit", default="2GB", help="the scoring config's memory_limit (DuckDB's, for the whole-base SQL)"
    )
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--minimal", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.minimal:
        minimal(*args.minimal)
        return
    if not (ROOT / "mlruns/mlflow.db").is_file():
        raise SystemExit("no mlruns/mlflow.db: run `make demo` first (the benchmark scores with its champions)")
    work = Path(args.work or tempfile.mkdtemp(prefix="omnicrm-bench-score-"))
    mlruns = work / "mlruns"
    mlruns.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "mlruns/mlflow.db", mlruns / "mlflow.db")  # scoring runs go to the copy
    env = os.environ | {"OMNICRM_MLRUNS": str(mlruns), "PYTHONPATH": str(ROOT / "src")}
    env.pop("MLFLOW_TRACKING_URI", None)
    omnicrm = [str(Path(sys.executable).parent / "omnicrm")]
    rows = []
    # what a score run imports before its first step: the command line, the wiring, mlflow, LightGBM
    start_cmd = [
        sys.executable,
        "-c",
        "import omnicrm.cli, omnicrm.pipeline.score, omnicrm.tracking, omnicrm.pipeline.promote_models, "
        "omnicrm.pipeline.uplift, omnicrm.tasks.model, sys; print('shap' in sys.modules)",
    ]
    startup, startup_mem, shap = run_with_peak(start_cmd, env)
    min_start_cmd = [sys.executable, "-c", "import omnicrm.tracking, omnicrm.features, lightgbm, pandas"]
    min_startup, _, _ = run_with_peak(min_start_cmd, env)
    help_s, _, _ = run_with_peak([*omnicrm, "--help"], env)
    for n in args.customers:
        folder = work / f"n{n}"
        folder.mkdir(exist_ok=True)
        db = folder / "store.duckdb"
        if not db.exists():
            t0 = time.monotonic()
            _generate(db, n, args.events_per_customer)
            print(f"store of {n:,} customers generated in {time.monotonic() - t0:.0f} s", flush=True)
        config = _configs(folder, db, args.chunk, args.memory_limit)
        shutil.rmtree(folder / "out", ignore_errors=True)
        s_time, s_mem, text = run_with_peak([*omnicrm, "score", str(config), "--as-of", AS_OF], env)
        summary = json.loads(text.strip().splitlines()[-1])
        manifest = json.loads((folder / "out/latest/manifest.json").read_text())
        m_time, m_mem, _ = run_with_peak(
            [sys.executable, __file__, "--minimal", str(config), str(folder / "minimal")], env
        )
        rows.append(
            {
                "customers": n,
                "scored (churn)": summary["scored"]["scores:churn"],
                "score s": s_time,
                "minimal s": m_time,
                "ratio": s_time / m_time,
                "score peak GB": s_mem,
                "minimal peak GB": m_mem,
                "models s": manifest["steps"]["models"]["seconds"],
                "features s": manifest["steps"]["features"]["seconds"],
                "other s": s_time - sum(t["seconds"] for t in manifest["steps"].values()),
                "chunks": manifest["chunks"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(
        f"\nstart-up: importing the score command's modules {startup:.1f} s ({startup_mem:.2f} GB), "
        f"the minimal pipeline's {min_startup:.1f} s; `omnicrm --help` {help_s:.1f} s; shap imported: {shap.strip()}"
    )
    head = list(rows[0])
    print("| " + " | ".join(head) + " |\n|" + "---:|" * len(head))
    for r in rows:
        print("| " + " | ".join(f"{v:,.2f}" if isinstance(v, float) else f"{v:,}" for v in r.values()) + " |")


if __name__ == "__main__":
    main()
