"""Online Retail II (2009-12 .. 2010-12) through the shipped example: ingest, then churn and CLV trained.

The ingest counts are checked against the figures documented in
``../shared/data/online_retail_ii/README.md`` and an independent pandas reading of the mapping's
rules; the example's task configs train on the store with the small-data model settings, leave
out the features that are constant on a plain log, and report the model next to every baseline.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from omnicrm.pipeline.ingest import run_ingest
from omnicrm.pipeline.train import train

from ..conftest import ROOT, example_ingest_config

pytestmark = pytest.mark.integration

DATA = ROOT.parent / "shared/data/online_retail_ii/online_retail_ii_2009_2010.parquet"
EXAMPLE = ROOT / "configs/examples/online_retail_ii"


@pytest.fixture(scope="module")
def retail_ii(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    if not DATA.is_file():
        pytest.skip(f"{DATA} not present (it is part of ../shared on every omnicrm machine)")
    work = tmp_path_factory.mktemp("retail_ii")
    example_ingest_config(EXAMPLE, DATA, work)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMNICRM_SALT", "test-salt")
        run_ingest(work / "ingest.yaml")
    return work, pd.read_parquet(DATA)


def test_ingest_counts_match_the_documented_figures_and_a_pandas_reference(
    retail_ii: tuple[Path, pd.DataFrame],
) -> None:
    work, df = retail_ii
    cancel = df["Invoice"].str.startswith("C")
    ok = (
        df["Customer ID"].notna()
        & df["StockCode"].str.match(r"^[0-9]{5}")
        & (df["Price"] > 0)
        & (df["Quantity"] != 0)
        & (cancel | (df["Quantity"] > 0))
        & (~cancel | (df["Quantity"] < 0))
    )
    con = duckdb.connect(str(work / "store.duckdb"), read_only=True)
    rows_in, accepted, quarantined = con.sql("SELECT rows_in, accepted, quarantined FROM ingest_report").fetchall()[0]
    assert rows_in == 525_461  # README: the whole first sheet
    assert accepted == ok.sum() and quarantined == (~ok).sum()
    missing = con.sql("SELECT count(*) FROM quarantine WHERE reason = 'missing key: Customer ID'").fetchall()[0][0]
    assert missing == 107_927  # README: rows with missing Customer ID
    assert con.sql("SELECT count(*) FROM customers").fetchall()[0][0] == df.loc[ok, "Customer ID"].nunique()
    first, last = con.sql("SELECT min(ts), max(ts) FROM events").fetchall()[0]
    assert (first.date().isoformat(), last.date().isoformat()) == ("2009-12-01", "2010-12-09")


def _config(work: Path, task: str) -> Path:
    """The example's task config on the test's store, every path absolute."""
    raw = yaml.safe_load((EXAMPLE / f"{task}.yaml").read_text())
    dataset = yaml.safe_load((EXAMPLE / raw["dataset"]).read_text())
    dataset |= {
        "store": str(work / "store.duckdb"),
        "features": str((EXAMPLE / dataset["features"]).resolve()),
        "feature_cache": str(work / "cache"),
    }
    (work / "dataset.yaml").write_text(yaml.safe_dump(dataset))
    raw |= {"dataset": str(work / "dataset.yaml"), "search": str((EXAMPLE / raw["search"]).resolve())}
    raw["model"] = str((EXAMPLE / raw["model"]).resolve())
    path = work / f"{task}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("task", ["churn", "clv"])
def test_the_example_trains_without_constant_features_next_to_every_baseline(
    retail_ii: tuple[Path, pd.DataFrame], task: str
) -> None:
    work, _ = retail_ii
    (r,) = train(_config(work, task), register=False)
    assert r.model.meta["evaluation_cutoff"] == "2010-09-01"
    assert r.registered_name == f"omnicrm-online_retail_ii-{task}"
    # a plain log has no channels, campaigns, visits, surveys or categories: those features are left out
    enc = r.model.encoding
    for name in ("channel_share_store_365d", "email_sent_90d", "last_nps_score", "top_category_365d"):
        assert name in enc.dropped and name not in enc.features
    assert 20 <= len(enc.dropped) <= 30 and "recency_days" in enc.features
    expected = {"churn": {"recency", "logistic"}, "clv": {"run_rate", "btyd", "linear"}}[task]
    assert set(r.baseline_metrics) == expected
    # the figures are in benchmarks/README.md ("Small data"); here only what no salt can change
    floor = {"churn": 0.70, "clv": 0.74}[task]
    assert r.model_metrics[r.primary] > floor
    assert r.model_metrics[r.primary] > min(m[r.primary] for m in r.baseline_metrics.values())


def test_train_names_the_constant_features_on_the_console_and_in_the_run(retail_ii: tuple[Path, pd.DataFrame]) -> None:
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from omnicrm import tracking
    from omnicrm.cli import app

    work, _ = retail_ii
    run = CliRunner().invoke(app, ["train", str(_config(work, "churn"))], env={"COLUMNS": "400"})
    assert run.exit_code == 0, run.output
    output = " ".join(run.output.split())  # the note may wrap
    assert "model: 25 features; 24 constant in training, left out: spend_prev_90d," in output
    assert "lifecycle_stage" in output
    # mlflow's own registration lines (printed to stderr) do not interleave with the command's
    assert "Successfully registered model" not in output and "Created version" not in output
    assert "refit on 5 cutoffs" in output  # the command says what it registered itself
    cand = tracking.get_version("omnicrm-online_retail_ii-churn", "candidate")  # the refit
    evaluation = MlflowClient().get_run(cand.tags["evaluated_as_run"])  # the run that evaluated it
    params = evaluation.data.params
    # the dataset's runs have their own experiment, named like its registered model
    assert MlflowClient().get_experiment(evaluation.info.experiment_id).name == "omnicrm-online_retail_ii-churn"
    assert params["frame.features"] == "25"
    dropped = params["frame.features_dropped_constant"].split(",")
    assert len(dropped) == 24 and "channel_share_web_365d" in dropped and "recency_days" not in dropped


def test_clv_on_a_day_without_repeat_buyers_says_to_use_a_later_date(retail_ii: tuple[Path, pd.DataFrame]) -> None:
    """One day into the log nobody has bought twice: BG/NBD's inputs cannot be fitted, and the message says
    which date and what to do (not only the spend model's complaint)."""
    from datetime import date

    from omnicrm.errors import InputError
    from omnicrm.store import open_store
    from omnicrm.tasks.config import load_task_config
    from omnicrm.tasks.frames import build_frame

    work, _ = retail_ii
    cfg = load_task_config(_config(work, "clv"))
    con = open_store(cfg.dataset.store, deterministic=True)
    try:
        with pytest.raises(
            InputError, match=r"clv at 2009-12-02: .*use a later date, or set task.btyd_features: false"
        ):
            build_frame(con, cfg, [date(2009, 12, 2)], with_labels=False, what="scoring")
    finally:
        con.close()
