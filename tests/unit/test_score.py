"""The pure pieces of batch scoring and its publication: PSI, profiles, accounting, tables, the lock, pointers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omnicrm import schema
from omnicrm.errors import ConfigError
from omnicrm.score import drift as dr
from omnicrm.score.accounting import AccountingError, Ledger
from omnicrm.score.config import Drift, load_score_config
from omnicrm.score.manifest import StepClock, build_manifest
from omnicrm.score.tables import excluded_rows, nba_excluded, scores_long
from omnicrm.store import runs
from omnicrm.store.staging import StaleFileWarning

# --- PSI and profiles -------------------------------------------------------------------------------


def test_psi_matches_the_formula_worked_by_hand() -> None:
    e, a = [0.5, 0.5], [0.25, 0.75]
    want = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.75 - 0.5) * np.log(0.75 / 0.5)
    assert dr.psi(e, a) == pytest.approx(want)
    assert dr.psi(e, e) == 0.0
    assert np.isfinite(dr.psi([1.0, 0.0], [0.0, 1.0]))  # empty bins are floored, not infinite


def test_a_profile_against_itself_has_zero_psi_and_a_shift_is_large() -> None:
    rng = np.random.default_rng(0)
    x = pd.Series(rng.normal(size=5000))
    prof = dr.profile(x, 10)
    assert len(prof["shares"]) == len(prof["edges"]) + 2 and sum(prof["shares"]) == pytest.approx(1.0)
    assert dr.psi_against(prof, x) == pytest.approx(0.0, abs=1e-12)
    assert dr.psi_against(prof, x + 1.0) > 0.25  # one standard deviation: a major shift
    assert dr.psi_against(prof, pd.Series(rng.normal(size=5000))) < 0.02  # another sample: no shift


def test_missing_values_have_their_own_bin_and_text_columns_their_values() -> None:
    x = pd.Series([1.0, 2.0, np.nan, np.nan])
    prof = dr.profile(x, 2)
    assert prof["shares"][-1] == 0.5
    text = pd.Series(["a", "a", "b", None], dtype=object)
    tp = dr.profile(text, 10)
    assert tp == {"kind": "text", "shares": {dr.MISSING: 0.25, "a": 0.5, "b": 0.25}}
    assert dr.psi_against(tp, text) == 0.0
    assert dr.psi_against(tp, pd.Series(["c"] * 4, dtype=object)) > 1
    assert dr.psi_against(tp, x) is None  # a column that changed kind is not compared


def test_changed_next_best_actions_count_no_action_as_a_value() -> None:
    old = pd.DataFrame(
        {"customer_id": ["a", "b", "c"], "rank": 1, "action": ["x", "x", "y"], "channel": "email", "product_id": None}
    )
    new = old.assign(action=["x", "y", "y"]).iloc[:2]  # b changed, c lost its action
    assert dr.nba_changed(dr.first_actions(old), dr.first_actions(new), ["a", "b", "c", "d"]) == pytest.approx(0.5)
    assert dr.population_change(110, 100) == pytest.approx(0.1)


def test_training_ranges_come_from_the_boosters_inside_a_model_and_flag_values_outside() -> None:
    import lightgbm as lgb

    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.uniform(0, 10, 500), "b": rng.uniform(-1, 1, 500)})
    y = (X["a"] + rng.normal(size=500) > 5).astype(int)
    est = lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(X, y)

    class Wrapper:  # a model holding its estimator a few levels down, like the meta-learners
        def __init__(self) -> None:
            self.parts = {"first": [est]}

    ranges = dr.training_ranges(Wrapper())
    assert ranges["a"] == pytest.approx((X["a"].min(), X["a"].max()))
    scoring = pd.DataFrame({"a": [-1.0, 5.0, 11.0, np.nan], "b": [0.0, 0.0, 0.0, 2.0]})
    assert dr.out_of_range(scoring, ranges) == {"a": 2, "b": 1}


def test_the_drift_table_marks_values_above_their_thresholds() -> None:
    t = dr.drift_table(
        Drift(feature_psi=0.2, out_of_range=0.1),
        feature_psi={"spend": 0.5, "orders": 0.01},
        score_psi={},
        population=0.0,
        nba=None,
        outside={("m", "spend"): (5, 100)},
    )
    assert list(t.columns) == dr.COLUMNS
    assert set(t.loc[t["breach"], "subject"]) == {"spend"}
    assert t.loc[t["check"] == "out_of_range", "value"].item() == pytest.approx(0.05)


# --- tables and accounting --------------------------------------------------------------------------


def test_scores_long_puts_the_score_first_then_the_extra_columns() -> None:
    pred = pd.DataFrame({"expected_days": [3.0, 4.0], "p_x": [0.1, 0.2]})
    rows = scores_long(
        np.array(["a", "b"], dtype=object),
        pred,
        as_of=pd.Timestamp("2024-01-01"),
        task="t",
        target="x",
        score_column="p_x",
        model="omnicrm-t",
        version="2",
        run_id="r",
    )
    assert list(rows.columns[:7]) == schema.output_columns(schema.SCORES)
    assert rows["output"].tolist() == ["p_x", "p_x", "expected_days", "expected_days"]
    assert rows["score"].tolist() == [0.1, 0.2, 3.0, 4.0]


def test_nba_reasons_are_one_per_customer_without_an_action() -> None:
    dropped = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "c"],
            "step": ["consent", "cap", "allocation", "consent"],
            "reason": ["no consent to sms", "1 email in 7 days", "budget", "no consent to sms"],
        }
    )
    out = nba_excluded(dropped, sent=["b"])
    assert out.to_dict("records") == [
        {"customer_id": "a", "reason": "cap: 1 email in 7 days; consent: no consent to sms"},
        {"customer_id": "c", "reason": "consent: no consent to sms"},
    ]


def test_the_ledger_counts_a_chunk_that_adds_up_and_fails_loudly_otherwise() -> None:
    ids = np.array(["a", "b", "c", "d"], dtype=object)
    ledger = Ledger()
    ledger.add("s", ids, np.array(["a", "a", "b"], dtype=object), excluded_rows(["c", "d"], "s", "why"))
    assert ledger.as_dict()["s"] == {"customers_in": 4, "scored": 2, "excluded": 2, "excluded_by_reason": {"why": 2}}
    with pytest.raises(AccountingError, match=r"1 customer\(s\) neither scored nor excluded, e.g. \['d'\]"):
        ledger.add("s", ids, np.array(["a", "b"], dtype=object), excluded_rows(["c"], "s", "why"))
    with pytest.raises(AccountingError, match="both scored and excluded"):
        ledger.add("s", ids, ids, excluded_rows(["c"], "s", "why"))
    with pytest.raises(AccountingError, match="excluded twice"):
        ledger.add("s", ids, ids[:2], excluded_rows(["c", "d", "d"], "s", "why"))
    with pytest.raises(AccountingError, match="without a reason"):
        ledger.add("s", ids, ids[:2], excluded_rows(["c", "d"], "s", ""))
    with pytest.raises(AccountingError, match="did not see all 8 customers"):
        ledger.check_totals(8)


def test_the_manifest_has_the_contract_keys_first_and_checks_counts() -> None:
    clock = StepClock()
    with clock.step("x") as st:
        st.rows = 3
    m = build_manifest(
        as_of="2024-01-01",
        run_id="r",
        code_version={"omnicrm": "0"},
        config_hash="h",
        data_fingerprint="f",
        models=[],
        tables={"scores": {"rows_in": 1, "rows_out": 2}},
        steps=clock.as_dict(),
        extra=1,
    )
    assert tuple(m)[: len(schema.MANIFEST_KEYS)] == schema.MANIFEST_KEYS and m["extra"] == 1
    assert m["steps"]["x"]["rows"] == 3 and m["steps"]["x"]["peak_memory_bytes"] > 0
    with pytest.raises(ValueError, match="rows_in/rows_out"):
        build_manifest(**{**_args(), "tables": {"scores": {"rows": 1}}})


def _args() -> dict:
    return dict(
        as_of="x", run_id="r", code_version={}, config_hash="", data_fingerprint="", models=[], tables={}, steps={}
    )


# --- lock, staging, publication -------------------------------------------------------------------


def test_a_live_lock_stops_a_second_run_and_a_stale_one_is_explained_and_taken_over(tmp_path: Path) -> None:
    from datetime import date

    live = rf"another scoring run is writing this output \(pid {os.getpid()}"
    with runs.RunLock(tmp_path, date(2024, 1, 1), "r1"), pytest.raises(ConfigError, match=live):
        runs.RunLock(tmp_path, date(2024, 1, 1), "r2").__enter__()
    assert not (tmp_path / runs.LOCK).exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    info = {"pid": int(dead.stdout), "host": os.uname().nodename, "started": "then", "as_of": "2024-01-01"}
    (tmp_path / runs.LOCK).write_text(json.dumps(info))
    stale = rf"stale lock .* \(pid {info['pid']} .* started then"
    with pytest.warns(StaleFileWarning, match=stale), runs.RunLock(tmp_path, date(2024, 1, 2), "r3") as lock:
        assert json.loads((tmp_path / runs.LOCK).read_text())["run_id"] == "r3" and lock.held
    assert not (tmp_path / runs.LOCK).exists()


@pytest.mark.parametrize("text", ["", "not json{", "[1, 2]"])
def test_an_empty_or_torn_lock_is_stale_once_old_and_busy_while_young(tmp_path: Path, text: str) -> None:
    """A run killed between creating the lock and writing it leaves such a file: it must not block every later run."""
    from datetime import date

    lock = tmp_path / runs.LOCK
    lock.write_text(text)
    with pytest.raises(ConfigError, match="taking the lock right now"):
        runs.RunLock(tmp_path, date(2024, 1, 1), "r1").__enter__()
    old = lock.stat().st_mtime - runs.TORN_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    with pytest.warns(StaleFileWarning, match="stale lock"), runs.RunLock(tmp_path, date(2024, 1, 1), "r2") as held:
        assert json.loads(lock.read_text())["run_id"] == "r2" and held.held
    assert not lock.exists()


def test_a_pinned_version_may_be_written_as_a_number() -> None:
    from omnicrm.score.config import RegisteredModel, TaskModels

    assert TaskModels(config="c.yaml", model=3).model == "3"
    assert RegisteredModel(name="m", model=12).model == "12"
    with pytest.raises(ValueError, match="pattern"):
        RegisteredModel(name="m", model="not a ref")


def test_publication_moves_pointers_and_replacing_removes_the_old_run(tmp_path: Path) -> None:
    from datetime import date

    d1, d2 = date(2024, 1, 1), date(2024, 2, 1)
    first = runs.new_staging(tmp_path)
    (first / "x.txt").write_text("1")
    p1 = runs.publish(tmp_path, first, d1, "a")
    assert runs.latest(tmp_path) == p1 == runs.published(tmp_path, d1)
    second = runs.new_staging(tmp_path)
    (second / "x.txt").write_text("2")
    p2 = runs.publish(tmp_path, second, d2, "b")
    assert runs.latest(tmp_path) == p2 and runs.published(tmp_path, d1) == p1
    third = runs.new_staging(tmp_path)
    p3 = runs.publish(tmp_path, third, d1, "c")  # a replace of d1: its old run goes
    assert runs.published(tmp_path, d1) == p3 and not p1.exists() and p2.exists()
    assert (tmp_path / "latest" / "x.txt").exists() is False  # latest is the replaced d1 run


def test_the_sweep_removes_orphan_runs_and_staging_folders_of_dead_processes(tmp_path: Path) -> None:
    from datetime import date

    kept = runs.publish(tmp_path, runs.new_staging(tmp_path), date(2024, 1, 1), "a")
    orphan = tmp_path / runs.RUNS / "2024-02-01_b"
    orphan.mkdir()
    (orphan / "scores.parquet").write_text("half")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / runs.STAGING / f"{runs.STAGING_PREFIX}{int(dead.stdout)}-x"
    stale.mkdir(parents=True)
    with pytest.warns(StaleFileWarning):
        assert runs.sweep_orphans(tmp_path) == [orphan]
    with pytest.warns(StaleFileWarning, match="stale temporary folder"):
        fresh = runs.new_staging(tmp_path)
    assert kept.exists() and not orphan.exists() and not stale.exists() and fresh.exists()


def test_a_table_writer_appends_chunks_and_writes_an_empty_table_with_the_contract(tmp_path: Path) -> None:
    w = runs.TableWriter(tmp_path / "e.parquet", schema.EXCLUDED)
    w.write(excluded_rows(["a"], "s", "r"))
    w.write(excluded_rows([], "s", "r"))
    w.write(excluded_rows(["b", "c"], "s", "r"))
    w.close()
    assert pd.read_parquet(tmp_path / "e.parquet")["customer_id"].tolist() == ["a", "b", "c"] and w.rows == 3
    empty = runs.TableWriter(tmp_path / "r.parquet", schema.RECOMMENDATIONS)
    empty.close()
    got = pd.read_parquet(tmp_path / "r.parquet")
    assert list(got.columns) == schema.output_columns(schema.RECOMMENDATIONS) and got.empty


# --- config ---------------------------------------------------------------------------------------------


def _write(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


def test_config_errors_name_the_file_and_key(tmp_path: Path) -> None:
    base = {"name": "x", "store": "s.duckdb", "output": "out", "effects": [{"name": "x-uplift-y"}]}
    with pytest.raises(ConfigError, match=r"key 'chunk_siz'"):
        load_score_config(_write(tmp_path / "a.yaml", base | {"chunk_siz": 3}))
    spark = load_score_config(_write(tmp_path / "b.yaml", base | {"engine": "spark", "features": {}})).config
    assert spark.spark is None  # the defaults: local[2], the store copied in through the driver
    with pytest.raises(ConfigError, match=r"key 'spark': Spark settings are read with engine: spark only"):
        load_score_config(_write(tmp_path / "b.yaml", base | {"spark": {"master": "local[1]"}}))
    with pytest.raises(ConfigError, match=r"key 'spark.conf'.*start with 'spark.'"):
        load_score_config(_write(tmp_path / "b.yaml", base | {"engine": "spark", "spark": {"conf": {"x": 1}}}))
    with pytest.raises(ConfigError, match=r"key 'spark.mastr'"):
        load_score_config(_write(tmp_path / "b.yaml", base | {"engine": "spark", "spark": {"mastr": "local"}}))
    with pytest.raises(ConfigError, match=r"key 'output': s3a://b/out is a URL"):
        load_score_config(_write(tmp_path / "b.yaml", base | {"engine": "spark", "output": "s3a://b/out"}))
    with pytest.raises(ConfigError, match="nothing to score"):
        load_score_config(_write(tmp_path / "c.yaml", {k: v for k, v in base.items() if k != "effects"}))
    with pytest.raises(ConfigError, match=r"effects"):
        load_score_config(_write(tmp_path / "d.yaml", base | {"effects": [{"name": "a"}, {"name": "omnicrm-a"}]}))
    task = {
        "dataset": {"name": "d", "store": "other.duckdb", "features": {}},
        "task": {"kind": "churn", "horizon_days": 30},
        "cutoffs": {
            "train": {"start": "2023-10-01", "end": "2023-12-01", "every": "month"},
            "validation": "2024-03-01",
            "evaluation": "2024-05-01",
        },
    }
    _write(tmp_path / "t.yaml", task)
    with pytest.raises(ConfigError, match=r"key 'tasks.0.config': .*t.yaml reads store other.duckdb"):
        load_score_config(_write(tmp_path / "e.yaml", base | {"tasks": [{"config": "t.yaml"}], "features": {}}))
    _write(tmp_path / "t.yaml", task | {"dataset": {**task["dataset"], "store": "s.duckdb"}})
    feats = {"windows": [30]}
    with pytest.raises(ConfigError, match="features are built once"):
        load_score_config(_write(tmp_path / "f.yaml", base | {"tasks": [{"config": "t.yaml"}], "features": feats}))
    ok = load_score_config(_write(tmp_path / "g.yaml", base | {"tasks": [{"config": "t.yaml"}], "features": {}}))
    assert len(ok.config_hash) == 64 and ok.tasks[0].name == "t"


def test_the_shipped_config_loads_and_names_the_demo_models() -> None:
    from tests.conftest import ROOT

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        setup = load_score_config(ROOT / "configs/score/synthetic.yaml")
    assert [t.name for t in setup.tasks] == ["churn", "next_purchase", "clv", "propensity"]
    assert setup.catalogue is not None and setup.config.engine == "duckdb"


def test_engine_spark_without_pyspark_is_a_user_error_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from omnicrm.pipeline.score import run_score

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyspark" else real(name, *a))
    cfg = {"name": "x", "store": "s.duckdb", "output": str(tmp_path / "out"), "features": {}, "engine": "spark"}
    path = _write(tmp_path / "s.yaml", cfg | {"effects": [{"name": "x-uplift-y"}]})
    with pytest.raises(ConfigError, match=r"s.yaml: key 'engine': spark needs pyspark and Java"):
        run_score(path, date(2024, 1, 1))
    assert not (tmp_path / "out").exists()  # nothing touched: no output folder, no lock


def test_counts_from_aggregates_add_up_or_fail_like_the_ledger() -> None:
    from omnicrm.score.accounting import counted_step

    ok = dict(touched=10, scored=7, excluded=3, both=0, twice=0, unknown=0, reasons={"a": 2, "b": 1})
    c = counted_step("s", 10, **ok)
    assert c.as_dict() == {"customers_in": 10, "scored": 7, "excluded": 3, "excluded_by_reason": {"a": 2, "b": 1}}
    for bad, msg in (
        ({"touched": 9}, "1 customer\\(s\\) neither scored nor excluded"),
        ({"both": 1}, "both scored and excluded"),
        ({"twice": 1}, "excluded twice"),
        ({"touched": 11, "unknown": 1}, "scored or excluded but not in"),
        ({"reasons": {"a": 2}}, "3 excluded rows but 2 with a reason"),
    ):
        with pytest.raises(AccountingError, match=msg):
            counted_step("s", 10, **(ok | bad))
