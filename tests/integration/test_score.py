"""``omnicrm score`` on the small world (1,200 people, 540 days, ends 2024-06-23) with tiny registered models.

Two churn models are trained and registered (v1, v3; v3 is champion; train registers their baselines
as v2 and v4), a DR effect model and a popularity recommender are registered as champions, and the
next-best-action catalogue uses them.
One module fixture runs the job once; the tests then check every table and the manifest against the
store (every customer scored or excluded with a reason, per step), a second run with another chunk
size (identical tables, no drift), the refusal of the same date without ``--replace``, a pinned
version, a live lock, and a deliberately shifted store (drift, exit 3 with ``--fail-on-drift``,
nothing published).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from omnicrm import schema, tracking
from omnicrm.cli import app

from ..conftest import AS_OF, World, write_configs

pytestmark = pytest.mark.integration

TABLES = (schema.SCORES, schema.RECOMMENDATIONS, schema.EFFECTS, schema.NBA, schema.EXCLUDED)


@dataclass
class Scored:
    world: World
    output: Path
    config: Path
    result: object  # the CLI result of the first run
    folder: Path  # the first published run (its copy: a later --replace removes it)


def score(config: Path, *extra: str) -> object:
    return CliRunner().invoke(app, ["score", str(config), "--as-of", str(AS_OF), *extra])


def summary(res: object) -> dict:
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def scored(registered: World, tmp_path_factory: pytest.TempPathFactory) -> Scored:
    out = tmp_path_factory.mktemp("score-out") / "out"
    config = write_configs(registered.folder / "run1", registered.store, out, chunk=97)
    with pytest.MonkeyPatch.context() as mp:
        # module scope runs before the per-test fixture that clears it: an earlier test's mlflow may have
        # exported MLFLOW_TRACKING_URI, which would send this run to that test's store
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("OMNICRM_MLRUNS", str(registered.mlruns))
        res = score(config)
    assert res.exit_code == 0, res.output
    copy = tmp_path_factory.mktemp("first-run") / "run"
    shutil.copytree(out / "latest", copy)
    return Scored(registered, out, config, res, copy)


@pytest.fixture
def world(scored: Scored, monkeypatch: pytest.MonkeyPatch) -> Scored:
    monkeypatch.setenv("OMNICRM_MLRUNS", str(scored.world.mlruns))
    return scored


def _tables(folder: Path) -> dict[str, pd.DataFrame]:
    return {t: pd.read_parquet(folder / f"{t}.parquet") for t in TABLES}


KEYS = {
    schema.SCORES: ["task", "target", "output", "customer_id"],
    schema.RECOMMENDATIONS: ["customer_id", "rank"],
    schema.EFFECTS: ["model", "action", "customer_id"],
    schema.NBA: ["customer_id", "rank"],
    schema.EXCLUDED: ["step", "customer_id"],
}


def _sorted(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEYS[table], kind="stable").reset_index(drop=True)


def test_every_table_and_the_manifest_are_published_and_every_customer_is_accounted_for(world: Scored) -> None:
    run = world.output / "latest"
    assert {f"{t}.parquet" for t in TABLES} | {"manifest.json", "drift.csv", "profile.json"} <= {
        p.name for p in run.iterdir()
    }
    m = json.loads((run / "manifest.json").read_text())
    assert tuple(m)[: len(schema.MANIFEST_KEYS)] == schema.MANIFEST_KEYS
    tables = _tables(run)
    for t, frame in tables.items():
        assert list(frame.columns[: len(schema.OUTPUTS[t])]) == schema.output_columns(t)
        assert m["tables"][t]["rows_out"] == len(frame)
    assert {(x["name"], x["version"]) for x in m["models"]} == {
        ("omnicrm-churn", "3"),
        ("omnicrm-small-recommend", "1"),
        ("omnicrm-small-uplift-purchase", "1"),
    }
    assert set(m["steps"]) >= {"models", "features", "scores:churn", "recommendations", "nba", "drift"}
    assert all(s["seconds"] >= 0 and s["peak_memory_bytes"] > 0 for s in m["steps"].values())

    con = duckdb.connect(world.world.store, read_only=True)
    try:
        customers = set(con.execute("SELECT customer_id FROM customers").df()["customer_id"])
        active = set(
            con.execute(
                "SELECT DISTINCT customer_id FROM events WHERE event_type = 'purchase' AND ts < ? AND ts >= ?",
                [AS_OF, pd.Timestamp(AS_OF) - pd.Timedelta(days=365)],
            ).df()["customer_id"]
        )
    finally:
        con.close()
    assert m["customers"] == len(customers) > 1000
    excluded = tables[schema.EXCLUDED]
    scored_by_step = {
        "scores:churn": set(tables[schema.SCORES]["customer_id"]),
        "recommendations": set(tables[schema.RECOMMENDATIONS]["customer_id"]),
        "effects:small-uplift-purchase": set(tables[schema.EFFECTS]["customer_id"]),
        "nba": set(tables[schema.NBA]["customer_id"]),
    }
    assert scored_by_step["scores:churn"] == active  # the churn population, computed independently
    for step, got in scored_by_step.items():
        ex = excluded[excluded["step"] == step]
        assert ex["customer_id"].is_unique and ex["reason"].str.len().gt(0).all()
        assert not got & set(ex["customer_id"]) and got | set(ex["customer_id"]) == customers, step
        count = m["accounting"][step]
        assert count["customers_in"] == len(customers) == count["scored"] + count["excluded"]
        assert (count["scored"], count["excluded"]) == (len(got), len(ex))
        assert sum(count["excluded_by_reason"].values()) == len(ex)
    assert (
        m["accounting"]["scores:churn"]["excluded_by_reason"][
            "not in the churn population: no purchase in the 365 days before as_of"
        ]
        > 0
    )  # noqa: E501
    s = summary(world.result)
    assert s["status"] == "ok" and s["exit"] == 0 and s["customers"] == len(customers)
    assert s["scored"]["nba"] == len(scored_by_step["nba"]) > 0
    # the MLflow run: the manifest and the drift table as artifacts
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri())
    (mrun,) = mlflow.search_runs(experiment_names=["omnicrm-score"], output_format="list")
    assert mrun.info.run_id == m["mlflow_run_id"] and mrun.data.tags["published"] == "true"
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(mrun.info.run_id)}
    assert {"manifest.json", "tables"} <= arts
    assert mrun.data.metrics["scored.nba"] == len(scored_by_step["nba"])


def test_the_scoring_runs_list_is_the_one_omnicrm_nba_makes_from_the_same_models(world: Scored, tmp_path: Path) -> None:
    # the job builds features once and hands them, with the models it loaded, to the list; a list
    # built on its own (its own snapshot, models looked up in the registry) must be the same rows
    from omnicrm.pipeline.nba import run_nba

    alone = run_nba(world.world.folder / "run1" / "nba.yaml", AS_OF, tmp_path / "nba.parquet")
    theirs = pd.read_parquet(world.folder / "nba.parquet")
    assert len(theirs) > 0
    pd.testing.assert_frame_equal(
        _sorted(schema.NBA, theirs), _sorted(schema.NBA, pd.read_parquet(alone.out)), check_exact=True
    )
    m = json.loads((world.folder / "manifest.json").read_text())
    assert m["nba"]["models"] == alone.models and m["nba"]["summary"]["violations"] == 0


def test_the_same_date_is_refused_then_replaced_with_identical_tables_and_no_drift(world: Scored) -> None:
    res = score(world.config)
    assert res.exit_code == 2 and "already published" in res.output and "--replace" in res.output
    assert summary(res)["exit"] == 2
    # another chunk size: the same tables (features shared, extra inputs fitted once, chunks independent)
    other = write_configs(world.world.folder / "run2", world.world.store, world.output, chunk=100_000)
    res = score(other, "--replace", "--fail-on-drift")
    assert res.exit_code == 0, res.output
    new = world.output / "latest"
    assert new.resolve() != world.folder and len(list((world.output / "runs").iterdir())) == 1
    for t, frame in _tables(world.folder).items():
        # the same rows; a table is written chunk after chunk, so its row order follows the chunks
        pd.testing.assert_frame_equal(_sorted(t, frame), _sorted(t, _tables(new)[t]), check_exact=True, obj=t)
    m = json.loads((new / "manifest.json").read_text())
    assert (
        m["replaced"]
        and m["drift"]["previous_run"] == json.loads((world.folder / "manifest.json").read_text())["run_id"]
    )
    drift = pd.read_csv(new / "drift.csv")
    assert not drift["breach"].any()
    assert {"feature_psi", "score_psi", "population_change", "nba_changed"} <= set(drift["check"])
    assert drift.loc[drift["check"] != "out_of_range", "value"].abs().max() == pytest.approx(0.0, abs=1e-12)
    assert not (world.output / ".staging").exists() and not (world.output / ".lock").exists()


def test_a_pinned_version_scores_with_that_version(world: Scored, tmp_path: Path) -> None:
    config = write_configs(
        world.world.folder / "pinned", world.world.store, tmp_path / "out", chunk=500, churn_model="1"
    )
    res = score(config)
    assert res.exit_code == 0, res.output
    scores = pd.read_parquet(tmp_path / "out/latest/scores.parquet")
    assert set(scores["version"]) == {"1"} and set(scores["model"]) == {"omnicrm-churn"}
    champion = pd.read_parquet(world.folder / "scores.parquet")
    assert not scores["score"].equals(champion["score"])  # 10 trees against 20
    missing = write_configs(world.world.folder / "missing", world.world.store, tmp_path / "o2", 500, churn_model="7")
    res = score(missing)
    assert res.exit_code == 2 and "registered model 'omnicrm-churn' has no version '7'" in res.output


def test_a_live_lock_stops_the_run_before_any_work(world: Scored) -> None:
    lock = world.output / ".lock"
    lock.write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename, "started": "x", "as_of": "y"}))
    try:
        res = score(world.config, "--replace")
    finally:
        lock.unlink()
    assert res.exit_code == 2 and "another scoring run is writing this output" in res.output


def test_a_memory_limit_too_small_for_the_base_is_a_clear_error_and_nothing_is_published(
    world: Scored, tmp_path: Path
) -> None:
    config = write_configs(
        tmp_path / "cfg", world.world.store, tmp_path / "out", chunk=500, extra={"memory_limit": "1MB"}
    )
    res = score(config)
    assert res.exit_code == 2, res.output
    assert "key 'memory_limit'" in res.output and "raise memory_limit" in res.output
    assert summary(res)["exit"] == 2 and not (tmp_path / "out" / "latest").exists()
    assert not list((tmp_path / "out").glob("runs/*")) and not (tmp_path / "out" / ".lock").exists()


def test_usage_errors_are_exit_2_with_the_json_line(world: Scored) -> None:
    # a scheduler reads the last stdout line whatever went wrong, usage mistakes included
    for args, text in (
        ([], "missing argument CONFIG"),
        ([str(world.config)], "missing option --as-of"),
        ([str(world.config), "--as-of", "2024-13-01"], "expected a date as YYYY-MM-DD"),
    ):
        res = CliRunner().invoke(app, ["score", *args])
        assert res.exit_code == 2 and summary(res)["exit"] == 2 and text in summary(res)["error"], res.output


def test_a_shifted_store_breaches_drift_and_fail_on_drift_exits_3_without_publishing(
    world: Scored, tmp_path: Path
) -> None:
    shifted = tmp_path / "shifted.duckdb"
    shutil.copy(world.world.store, shifted)
    con = duckdb.connect(str(shifted))
    try:  # three times the spend, and a third of the customers' purchases gone
        con.execute("UPDATE events SET amount = amount * 3")
        con.execute("DELETE FROM events WHERE event_type = 'purchase' AND hash(customer_id) % 3 = 0")
    finally:
        con.close()
    before = (world.output / "latest").resolve()
    config = write_configs(tmp_path / "cfg", str(shifted), world.output, chunk=500)
    res = score(config, "--replace", "--fail-on-drift")
    assert res.exit_code == 3, res.output
    s = summary(res)
    assert s["status"] == "drift" and s["exit"] == 3 and s["drift_breaches"] > 0 and not s["published"]
    assert (world.output / "latest").resolve() == before  # nothing moved
    assert "feature_psi" in res.output and "spend_365d" in res.output
    assert not (world.output / ".staging").exists() and len(list((world.output / "runs").iterdir())) == 1


# --- killed runs ----------------------------------------------------------------------------------------
# `omnicrm score` as a real process, SIGKILLed at several moments: "working" (half-way through a reference
# run), "staged" (its manifest is in the staging folder: everything computed, nothing published) and
# "published" (latest just moved). The published run must stay as it was (or be the new complete one),
# and a rerun must complete, explain the stale lock, remove what the killed run left and publish a run
# whose manifest adds up and whose tables hold the reference rows.


@dataclass
class KillWork:
    output: Path
    argv: list[str]
    env: dict[str, str]
    reference: dict[str, pd.DataFrame]
    seconds: float


def _command() -> list[str]:
    import sys

    script = Path(sys.executable).parent / "omnicrm"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "omnicrm.entry"]


def _run(work: KillWork) -> object:
    import subprocess

    r = subprocess.run([*_command(), *work.argv], env=work.env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def kill_work(registered: World, tmp_path_factory: pytest.TempPathFactory) -> KillWork:
    import time

    root = tmp_path_factory.mktemp("score-kill")
    config = write_configs(root / "cfg", registered.store, root / "out", chunk=97)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "OMNICRM_DEBUG")}
    env |= {"OMNICRM_MLRUNS": str(registered.mlruns), "OMNICRM_LOG_DIR": str(root / "logs")}
    work = KillWork(root / "out", ["score", str(config), "--as-of", str(AS_OF), "--replace"], env, {}, 0.0)
    started = time.monotonic()
    _run(work)
    work.seconds = time.monotonic() - started
    work.reference = {t: _sorted(t, f) for t, f in _tables(work.output / "latest").items()}
    return work


def _snapshot(output: Path) -> dict[str, bytes]:
    run = output / "latest"
    return {"@latest": str(run.resolve()).encode(), **{p.name: p.read_bytes() for p in sorted(run.iterdir())}}


def _leftovers(output: Path) -> list[str]:
    """What must not be there between runs: staging folders, a lock, temporary links, unreferenced runs."""
    found = [str(p.relative_to(output)) for p in output.glob(".staging/*")]
    found += [p.name for p in output.iterdir() if p.name in (".lock", ".staging") or p.name.endswith(".tmp")]
    referenced = {(output / "latest").resolve()} | {p.resolve() for p in output.glob("as_of=*")}
    found += [f"runs/{p.name}" for p in (output / "runs").iterdir() if p.resolve() not in referenced]
    return found


def _consistent(work: KillWork) -> list[str]:
    run = work.output / "latest"
    m = json.loads((run / "manifest.json").read_text())
    problems = []
    tables = _tables(run)
    for t, frame in tables.items():
        if m["tables"][t]["rows_out"] != len(frame):
            problems.append(f"{t}: manifest says {m['tables'][t]['rows_out']} rows, the file has {len(frame)}")
        if not _sorted(t, frame).equals(work.reference[t]):
            problems.append(f"{t}: rows differ from the reference run's")
    for step, c in m["accounting"].items():
        if c["customers_in"] != c["scored"] + c["excluded"] or c["customers_in"] != m["customers"]:
            problems.append(f"accounting of {step} does not add up: {c}")
    return problems


def _kill_at(work: KillWork, moment: str, signum: int) -> tuple[int, bool, str]:
    import signal
    import subprocess
    import time

    before = (work.output / "latest").resolve()
    with open(work.output.parent / "kill.err", "w+") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            [*_command(), *work.argv],
            env=work.env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            # Ctrl-C's default action even when the test run was started in the background (see test_kill.py)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        signalled = False
        while proc.poll() is None:
            if moment == "working":
                due = time.monotonic() - started >= work.seconds / 2
            elif moment == "staged":
                due = any(work.output.glob(".staging/run-*/manifest.json"))
            else:  # published
                due = (work.output / "latest").resolve() != before
            if due:
                proc.send_signal(signum)
                signalled = True
                break
            time.sleep(0.002)
        code = proc.wait(timeout=600)
        err.seek(0)
        return code, signalled, err.read()


KILL_CASES = [
    ("SIGKILL", "working"),
    pytest.param("SIGKILL", "staged", marks=pytest.mark.slow),
    pytest.param("SIGKILL", "published", marks=pytest.mark.slow),
    pytest.param("SIGINT", "working", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("signame", "moment"), KILL_CASES)
def test_a_killed_run_keeps_the_published_run_and_a_rerun_cleans_up_and_completes(
    kill_work: KillWork, signame: str, moment: str
) -> None:
    import signal

    signum = getattr(signal, signame)
    before = _snapshot(kill_work.output)
    code, signalled, stderr = _kill_at(kill_work, moment, signum)
    assert signalled, f"{moment}: exit {code} before the signal\n{stderr[-2000:]}"
    if signum == signal.SIGINT:  # Ctrl-C: one line, exit 130, and the run removes its own staging folder and lock
        assert code == 130 and "interrupted:" in stderr and "Traceback" not in stderr, stderr[-2000:]
        assert not _leftovers(kill_work.output), _leftovers(kill_work.output)
    else:
        assert code == -signal.SIGKILL, stderr[-2000:]
    after = _snapshot(kill_work.output)
    if after != before:  # the kill came after the publication: the new run is complete
        assert moment == "published" and not _consistent(kill_work)
    lock_left = (kill_work.output / ".lock").exists()
    r = _run(kill_work)
    if lock_left:
        assert "stale lock" in r.stderr and "no longer running" in r.stderr, r.stderr[-2000:]
    assert not _leftovers(kill_work.output), _leftovers(kill_work.output)
    assert not _consistent(kill_work), _consistent(kill_work)
    assert json.loads(r.stdout.strip().splitlines()[-1])["status"] == "ok"
    assert not (kill_work.output.parent / "logs").exists()  # no exit-1 log was written
