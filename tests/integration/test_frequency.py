"""``omnicrm frequency`` on the small world: the cadence experiment read from the store, judged, written."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from omnicrm import schema

pytestmark = pytest.mark.integration


def _config(tmp_path: Path, small_store: Path, world: Path, **extra) -> Path:  # noqa: ANN003
    store = yaml.safe_load(small_store.read_text())["store"]
    cfg = {
        "name": "small",
        "store": store,
        "features": {},
        "max_cadence": {"email": 4},
        "estimator": {"model": {"n_estimators": 30, "min_child_samples": 20}, "min_gain": 0.5},
        "bootstrap": 100,
        "truth": {
            "cadence": str(world / "truth/cadence.parquet"),
            "record_owner": str(world / "truth/record_owner.parquet"),
        },
        **extra,
    }
    path = tmp_path / "frequency.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow  # ~25-40 s on 2 shared cores; tests/unit/test_frequency.py proves consent and the maximum fast
def test_cli_frequency_writes_the_table_judges_the_policies_and_keeps_consent_and_the_maximum(
    small_store: Path, small_world: Path, tmp_path: Path
) -> None:
    from omnicrm.cli import app

    config = _config(tmp_path, small_store, small_world)
    out = tmp_path / "out/frequency.parquet"
    res = CliRunner().invoke(
        app, ["frequency", str(config), "--as-of", "2024-06-24", "--out", str(out)], env={"COLUMNS": "250"}
    )
    assert res.exit_code == 0, res.output
    assert "static_4" in res.output and "learned" in res.output
    # both confusion tables (the strict truth and the policy's decision rule), the shares and the caveat
    assert res.output.count("against learned (columns)") == 2 and "share of members per class" in res.output
    assert "off-policy intervals are about" in res.output
    assert (out.parent / "frequency.features.parquet").exists()
    table = pd.read_parquet(out)
    assert list(table.columns[:6]) == schema.output_columns(schema.CONTACT_FREQUENCY)
    # the hard maximum of 4 holds, and the 8 e-mails a four-week the experiment tried are never recommended
    assert table["recommended_cadence"].max() <= 4
    assert set(table["recommended_cadence"]) <= {0, 1, 2, 4}
    # every customer without e-mail consent at as-of (the CRM's flag, or an unsubscribe before it) gets 0
    store = yaml.safe_load(small_store.read_text())["store"]
    con = duckdb.connect(store, read_only=True)
    try:
        no_consent = set(
            con.execute(
                """select customer_id from customers where not coalesce(consent_email, false)
                   union select customer_id from events
                   where event_type = 'email_unsubscribe' and ts < timestamp '2024-06-24'"""
            )
            .df()["customer_id"]
            .tolist()
        )
    finally:
        con.close()
    blocked = table[table["customer_id"].isin(no_consent)]
    assert len(blocked) > 0
    assert (blocked["recommended_cadence"] == 0).all() and (blocked["class"] == "no_consent").all()
    assert (table.loc[~table["customer_id"].isin(no_consent), "recommended_cadence"] > 0).all()
    features = pd.read_parquet(tmp_path / "out/frequency.features.parquet")
    assert len(features) == len(table) and "email_cadence_class" in features.columns


def test_an_as_of_before_the_outcome_window_closes_is_refused(
    small_store: Path, small_world: Path, tmp_path: Path
) -> None:
    from omnicrm.errors import InputError
    from omnicrm.pipeline.frequency import run_frequency

    config = _config(tmp_path, small_store, small_world)
    with pytest.raises(InputError, match="outcome window"):
        run_frequency(config, pd.Timestamp("2024-03-01").to_pydatetime(), tmp_path / "x.parquet")
