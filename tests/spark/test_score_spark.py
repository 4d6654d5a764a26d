"""``omnicrm score`` with ``engine: spark`` gives the DuckDB engine's tables on the small world (issue 13, item 7).

The small world's registered models (tests/conftest.py ``registered``: churn v1/v3, a DR effect
model, a popularity recommender, the next-best-action catalogue) score the base at ``AS_OF`` once
with ``engine: duckdb`` and once with ``engine: spark`` on the session of ``conftest.spark``
(``local[2]``), another chunk size, and the store copied into Spark. The tables must hold the same
rows (ids and texts exactly, numbers to 1e-9 relative), the manifests the same accounting, and the
Spark manifest's counts must add up on their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from omnicrm import schema

from ..conftest import AS_OF, World, write_configs

pytest.importorskip("pyspark")

pytestmark = pytest.mark.spark

TABLES = (schema.SCORES, schema.RECOMMENDATIONS, schema.EFFECTS, schema.NBA, schema.EXCLUDED)
KEYS = {
    schema.SCORES: ["task", "target", "output", "customer_id"],
    schema.RECOMMENDATIONS: ["customer_id", "rank"],
    schema.EFFECTS: ["model", "action", "customer_id"],
    schema.NBA: ["customer_id", "rank"],
    schema.EXCLUDED: ["step", "customer_id"],
}


@dataclass
class Runs:
    world: World
    duck: Path  # the published DuckDB run
    spark: Path  # the published Spark run


def tables(folder: Path) -> dict[str, pd.DataFrame]:
    """Every table of a published run, sorted by its key (a Spark table is a folder of part files)."""
    out = {}
    for t in TABLES:
        frame = pd.read_parquet(folder / f"{t}.parquet")
        out[t] = frame.sort_values(KEYS[t], kind="stable").reset_index(drop=True)
    return out


def assert_same_tables(a: Path, b: Path) -> None:
    ta, tb = tables(a), tables(b)
    for t in TABLES:
        assert len(ta[t]) > 0, t
        assert list(ta[t].columns) == list(tb[t].columns), t
        for c in ta[t].columns:
            x, y = ta[t][c], tb[t][c]
            if pd.api.types.is_float_dtype(x):
                assert pd.api.types.is_float_dtype(y), (t, c, y.dtype)
                pd.testing.assert_series_equal(x, y, check_exact=False, rtol=1e-9, atol=1e-12, obj=f"{t}.{c}")
            else:
                assert (x.astype(object).fillna("<NA>") == y.astype(object).fillna("<NA>")).all(), (t, c)


@pytest.fixture(scope="module")
def runs_done(registered: World, spark, tmp_path_factory: pytest.TempPathFactory) -> Runs:  # noqa: ANN001
    from omnicrm.pipeline.score import run_score

    root = tmp_path_factory.mktemp("score-spark")
    duck = write_configs(root / "duck", registered.store, root / "out-duck", chunk=97)
    on_spark = write_configs(
        root / "spark",
        registered.store,
        root / "out-spark",
        chunk=250,  # another chunk size: chunks must not change the rows
        extra={"engine": "spark", "spark": {"master": "local[2]"}},
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("OMNICRM_MLRUNS", str(registered.mlruns))
        a = run_score(duck, AS_OF)
        b = run_score(on_spark, AS_OF)
    assert a.published and b.published
    return Runs(registered, a.folder, b.folder)


def test_the_spark_engine_writes_the_duckdb_engines_rows_and_accounts_for_every_customer(runs_done: Runs) -> None:
    assert_same_tables(runs_done.duck, runs_done.spark)
    assert (runs_done.spark / f"{schema.SCORES}.parquet").is_dir()  # a Parquet dataset written by Spark
    md = json.loads((runs_done.duck / schema.MANIFEST).read_text())
    ms = json.loads((runs_done.spark / schema.MANIFEST).read_text())
    assert tuple(ms)[: len(schema.MANIFEST_KEYS)] == schema.MANIFEST_KEYS
    assert ms["engine"] == "spark" and ms["spark"]["master"] == "local[2]" and ms["chunks"] == 5
    assert ms["models"] == md["models"] and ms["data_fingerprint"] == md["data_fingerprint"]
    assert ms["tables"] == md["tables"]  # rows in and out per table
    assert ms["accounting"] == md["accounting"]
    for step, c in ms["accounting"].items():
        assert c["customers_in"] == ms["customers"] == c["scored"] + c["excluded"], step
        assert sum(c["excluded_by_reason"].values()) == c["excluded"], step
    assert set(ms["accounting"]) == {"scores:churn", "recommendations", "effects:small-uplift-purchase", "nba"}
    untimed = [{k: v for k, v in m["nba"]["summary"].items() if "seconds" not in k} for m in (ms, md)]
    # sums over the list (cost, budget used) may add the same rows in another order: last-bit equal
    assert untimed[0] == pytest.approx(untimed[1], rel=1e-12) and ms["nba"]["models"] == md["nba"]["models"]
    assert {"features", "scores:churn", "recommendations", "nba", "write", "drift"} <= set(ms["steps"])


def test_an_input_that_is_not_an_export_of_the_store_is_refused_naming_the_table(
    runs_done: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import duckdb

    from omnicrm.errors import ConfigError
    from omnicrm.pipeline.score import run_score

    world = runs_done.world
    export = tmp_path / "export"
    con = duckdb.connect(world.store, read_only=True)
    try:  # an export whose events stop early: a stale copy of the store
        con.execute(f"EXPORT DATABASE '{export}' (FORMAT parquet)")
        events = export / "events.parquet"
        con.execute(f"COPY (SELECT * FROM events ORDER BY ts LIMIT 100) TO '{events}' (FORMAT parquet)")
    finally:
        con.close()
    config = write_configs(
        tmp_path / "cfg",
        world.store,
        tmp_path / "out",
        chunk=250,
        extra={"engine": "spark", "spark": {"master": "local[2]", "input": str(export)}},
    )
    monkeypatch.setenv("OMNICRM_MLRUNS", str(world.mlruns))
    with pytest.raises(ConfigError, match=r"score.yaml: key 'spark.input': .*events.parquet has 100 rows, the store's"):
        run_score(config, AS_OF)
    assert not list((tmp_path / "out").glob("runs/*")) and not (tmp_path / "out" / ".lock").exists()


# --- a real standalone cluster ---------------------------------------------------------------------------


def _command() -> list[str]:
    import sys

    script = Path(sys.executable).parent / "omnicrm"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "omnicrm.entry"]


def _worker_state(ui: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"{ui}/json", timeout=5) as r:  # noqa: S310 - a local http URL
        return json.loads(r.read())


def test_the_job_runs_on_a_standalone_cluster_with_two_workers_and_gives_the_same_rows(
    runs_done: Runs, tmp_path: Path
) -> None:
    # `omnicrm score` as its own process (a driver of its own) against a master and two workers started
    # with pyspark's spark-class; its executors are one per worker (one core each, two cores at most),
    # and they read the store from a Parquet export (spark.input)
    import os
    import subprocess
    import sys

    import duckdb

    from .cluster import event_log, standalone_cluster

    events = tmp_path / "events"
    events.mkdir()
    world = runs_done.world
    # the executors read the store tables from Parquet (as from object storage), not through the driver
    export = tmp_path / "export"
    con = duckdb.connect(world.store, read_only=True)
    try:
        con.execute(f"EXPORT DATABASE '{export}' (FORMAT parquet)")
    finally:
        con.close()
    with standalone_cluster(tmp_path / "cluster") as cluster:
        spark = {
            "master": cluster.master_url,
            "input": str(export),
            "app_name": "omnicrm-score-cluster-test",
            "conf": {
                "spark.executor.cores": 1,
                "spark.executor.memory": "512m",
                "spark.cores.max": 2,
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.ui.enabled": False,
                "spark.sql.shuffle.partitions": 4,
                "spark.eventLog.enabled": True,
                "spark.eventLog.dir": events.as_uri(),
                "spark.eventLog.compress": False,
            },
        }
        config = write_configs(
            tmp_path / "cfg", world.store, tmp_path / "out", chunk=250, extra={"engine": "spark", "spark": spark}
        )
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "OMNICRM_DEBUG")}
        env |= {"OMNICRM_MLRUNS": str(world.mlruns), "PYSPARK_PYTHON": sys.executable}
        r = subprocess.run(
            [*_command(), "score", str(config), "--as-of", str(AS_OF)],
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
        state = cluster.state()
        workers = [_worker_state(ui) for ui in cluster.worker_uis]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["status"] == "ok" and summary["published"]
    run = tmp_path / "out" / "latest"
    m = json.loads((run / schema.MANIFEST).read_text())
    app = m["spark"]["app_id"]
    assert m["spark"]["master"] == cluster.master_url and m["spark"]["executors"] == 2
    assert m["spark"]["input"] == str(export)
    # the master ran the application to the end; each worker ran one of its executors
    assert [a["state"] for a in state["completedapps"] if a["id"] == app] == ["FINISHED"]
    for w in workers:
        assert [e["appid"] for e in w["finishedexecutors"] + w["executors"]].count(app) == 1, w
    # and both executors ran tasks (Spark's own event log of the application)
    log = event_log(events)
    added = {e["Executor ID"] for e in log if e["Event"] == "SparkListenerExecutorAdded"}
    busy = {e["Task Info"]["Executor ID"] for e in log if e["Event"] == "SparkListenerTaskEnd"}
    assert len(added) == 2 and busy == added
    # the same rows as the local run, and the same accounting
    assert_same_tables(runs_done.spark, run)
    local = json.loads((runs_done.spark / schema.MANIFEST).read_text())
    assert m["accounting"] == local["accounting"] and m["tables"] == local["tables"]
