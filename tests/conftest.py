"""Shared fixtures: tiny inline sources for ingest tests, small generated worlds for integration."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """The known third-party notices switched off, and a private temporary folder for the whole run.

    Warnings are errors (``filterwarnings = error`` in pyproject.toml) except those listed in
    :data:`omnicrm.quiet.WARNINGS`, added here as ``filterwarnings`` lines so that the list is
    written once; :func:`omnicrm.quiet.apply` sets the same logger levels and environment defaults
    as the command line.

    Ingest sweeps spill folders of dead processes from the system temp folder with a warning, and
    warnings are errors here: a folder left on the machine by some other killed run must not fail
    an unrelated test, nor may a test's kill leave anything outside the run's own folder.
    """
    import os
    import shutil
    import tempfile

    from omnicrm import quiet

    quiet.apply()
    for line in quiet.pytest_filters():
        config.addinivalue_line("filterwarnings", line)
    if "OMNICRM_TEST_TMPDIR" in os.environ:  # set already (a test run started by a test)
        return
    # one folder per user, reused, so pytest's rotation of its own folders keeps it small; spill
    # folders that killed runs of earlier test sessions left here are removed first
    private = Path(tempfile.gettempdir()) / f"omnicrm-tests-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    for pattern in ("omnicrm-ingest-*", "omnicrm-kill-tests-*"):
        for leftover in private.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)
    os.environ["OMNICRM_TEST_TMPDIR"] = os.environ["TMPDIR"] = str(private)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


@pytest.fixture(autouse=True)
def _logs_outside_the_repo(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Error logs of CLI tests go to a throw-away folder, never to ``logs/`` of the working folder."""
    monkeypatch.setenv("OMNICRM_LOG_DIR", str(tmp_path_factory.mktemp("logs")))


@pytest.fixture(autouse=True)
def _private_mlflow_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test logs to a throw-away SQLite MLflow store, never to the project's mlruns/."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("OMNICRM_MLRUNS", str(tmp_path_factory.mktemp("mlruns")))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def tiny_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A three-source world small enough to check every row by hand; returns the ingest config.

    Ana (card 1111 2222 3333, ana@x.com) appears in the CRM and on two POS receipts and in the shop
    under another spelling of her e-mail; Ben has a CRM record only. Some POS rows are malformed.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMNICRM_SALT", "test-salt")
    write(
        tmp_path / "raw/products.csv",
        """
        sku,category,list_price,margin_rate
        P1,Shoes,50.00,0.4
        P2,Books,10.00,0.2
        """,
    )
    write(
        tmp_path / "raw/crm.csv",
        """
        member_id,card_no,first_name,last_name,email,phone,postcode,joined_on,opt_in_email
        M1,1111 2222 3333,Ana,Silva, Ana@X.com ,07700 900123,sw1a 1aa,01/02/2023,Y
        M2,4444-5555-6666,Ben,Okafor,ben@y.org,,N1 9GU,15/03/2023,N
        """,
    )
    write(
        tmp_path / "raw/pos.csv",
        """
        receipt_no,line_no,till_time,card_no,kind,sku,qty,unit_price
        R1,1,05/03/2023 10:00:00,111122223333,SALE,P1,1,50.00
        R1,2,05/03/2023 10:00:00,111122223333,SALE,P2,2,10.00
        R2,1,01/07/2023 12:30:00,1111-2222-3333,RETURN,P2,1,10.00
        R3,1,31/02/2023 25:61:00,111122223333,SALE,P1,1,50.00
        R4,1,06/03/2023 09:00:00,,SALE,P1,1,50.00
        R5,1,06/03/2023 09:00:00,444455556666,SALE,P1,1,-50.00
        R6,1,06/03/2023 09:00:00,444455556666,SWAP,P1,1,50.00
        R1,1,05/03/2023 10:00:00,111122223333,SALE,P1,1,50.00
        R7,1,06/03/2023 09:00:00,444455556666,SALE,P9,1,5.00
        """,
    )
    write(
        tmp_path / "raw/shop.csv",
        """
        order_id,line_no,account_id,email,event_time,device,sku,qty,unit_price
        O1,1,A1,ANA@x.com,2023-04-01T10:00:00+01:00,Web,P2,1,10.00
        """,
    )
    write(
        tmp_path / "maps/products.yaml",
        """
        source: products
        file: products.csv
        target: products
        row_id: [sku]
        fields:
          category: {type: string, nullable: false}
          list_price: {type: double, nullable: false}
          margin_rate: {type: double}
        output: {product_id: sku, category: category, price: list_price, margin: list_price * margin_rate}
        """,
    )
    write(
        tmp_path / "maps/crm.yaml",
        """
        source: crm
        file: crm.csv
        target: profiles
        row_id: [member_id]
        customer_key: {column: member_id}
        fields:
          joined_on: {type: timestamp, format: "%d/%m/%Y", nullable: false}
          opt_in_email: {type: boolean}
        pii:
          {card: card_no, first_name: first_name, last_name: last_name, email: email, phone: phone, postcode: postcode}
        output: {first_seen: joined_on, consent_email: "coalesce(opt_in_email, FALSE)"}
        """,
    )
    write(
        tmp_path / "maps/pos.yaml",
        """
        source: pos
        file: pos.csv
        target: events
        row_id: [receipt_no, line_no]
        customer_key: {column: card_no, normalise: digits}
        fields:
          till_time: {type: timestamp, format: "%d/%m/%Y %H:%M:%S", timezone: Europe/London, nullable: false}
          kind: {type: category, values: {SALE: purchase, RETURN: return}, nullable: false}
          sku: {type: string, nullable: false}
          qty: {type: double, nullable: false}
          unit_price: {type: double, nullable: false}
        pii: {card: card_no}
        output:
          ts: till_time
          channel: "'store'"
          event_type: kind
          order_id: receipt_no
          product_id: sku
          quantity: qty
          amount: qty * unit_price
        rules:
          - {check: "unit_price >= 0", reason: "negative price on a sale"}
        max_quarantine_share: 0.9  # six of nine rows are bad on purpose
        """,
    )
    write(
        tmp_path / "maps/shop.yaml",
        """
        source: shop
        file: shop.csv
        target: events
        row_id: [order_id, line_no]
        customer_key: {column: account_id}
        fields:
          event_time: {type: timestamp, format: iso8601, nullable: false}
          device: {type: category, values: {web: web, app: app}, nullable: false}
          sku: {type: string}
          qty: {type: double}
          unit_price: {type: double}
        pii: {email: email}
        output:
          ts: event_time
          channel: device
          event_type: "'purchase'"
          order_id: order_id
          product_id: sku
          quantity: qty
          amount: qty * unit_price
        """,
    )
    return write(
        tmp_path / "ingest.yaml",
        """
        raw_dir: raw
        store: store/omnicrm.duckdb
        sources: [maps/products.yaml, maps/crm.yaml, maps/pos.yaml, maps/shop.yaml]
        identity: {probabilistic: false}
        """,
    )


SHIPPED_MAPPINGS = sorted((ROOT / "configs/sources/synthetic").glob("*.yaml"))


def example_ingest_config(example: Path, data: Path, work: Path) -> Path:
    """A shipped example's ingest config (``configs/examples/<name>/``) on its data, the store in ``work``."""
    cfg = yaml.safe_load((example / "ingest.yaml").read_text())
    cfg.update(
        raw_dir=str(data.parent), store=str(work / "store.duckdb"), sources=[str(example / s) for s in cfg["sources"]]
    )
    path = work / "ingest.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def write_ingest_config(work: Path, raw_dir: Path) -> Path:
    """An ingest config in ``work`` reading ``raw_dir`` with the shipped synthetic mappings."""
    cfg = work / "ingest.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "raw_dir": str(raw_dir),
                "store": str(work / "store.duckdb"),
                "sources": [str(p) for p in SHIPPED_MAPPINGS],
            }
        )
    )
    return cfg


def small_uplift_config(store: str) -> dict:
    """A tiny DR effect model on the small store's campaigns (registered as ``omnicrm-small-uplift-purchase``)."""
    return {
        "name": "small",
        "source": {"kind": "store", "store": store, "features": {}, "window_days": 14, "outcomes": ["purchase"]},
        "learners": {"names": ["DR"], "model": {"n_estimators": 20, "min_child_samples": 20}},
        "effects": {"learner": "DR", "outcome": "purchase"},
    }


def small_recommend_config(store: str) -> dict:
    """A popularity recommender on the small store (registered as ``omnicrm-small-recommend``)."""
    return {
        "store": store,
        "dataset": "small",
        "test_cutoff": "2024-05-27",
        "test_days": 28,
        "validation_days": 28,
        "k": 3,
        "seed": 3,
        "serve": "popularity",
        "methods": [{"name": "popularity", "kind": "popularity"}],
    }


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated world (raw files + truth), shared by the integration tests."""
    from omnicrm.synthetic import WorldConfig, generate_world

    out = tmp_path_factory.mktemp("world")
    cfg = WorldConfig(n_people=1200, days=540, seed=7, out_dir=str(out))
    generate_world(cfg, out)
    return out


@pytest.fixture(scope="session")
def small_store(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small world ingested with the shipped source mappings; returns the ingest config path."""
    import os

    from omnicrm.pipeline.ingest import run_ingest

    work = tmp_path_factory.mktemp("ingest")
    cfg = write_ingest_config(work, small_world / "raw")
    old = os.environ.get("OMNICRM_SALT")
    os.environ["OMNICRM_SALT"] = "integration-test-salt"
    try:
        run_ingest(cfg)
    finally:
        if old is None:
            os.environ.pop("OMNICRM_SALT")
        else:
            os.environ["OMNICRM_SALT"] = old
    return cfg


# --- the scoring job's small world: registered models and configs (tests/integration/test_score.py, tests/spark) ---

AS_OF = date(2024, 6, 24)  # the day after the small world's last event


@dataclass
class World:
    store: str
    mlruns: Path
    folder: Path


def churn_config(store: str, trees: int) -> dict:
    return {
        "dataset": {"name": "small", "store": store, "features": {}, "feature_cache": None},
        "task": {"kind": "churn", "horizon_days": 60},
        "cutoffs": {
            "train": {"start": "2023-10-01", "end": "2023-12-01", "every": "month"},
            "validation": "2024-02-01",
            "evaluation": "2024-04-01",
        },
        "model": {
            "params": {"n_estimators": trees, "learning_rate": 0.1, "min_child_samples": 20},
            "calibration": "none",
            "early_stopping_rounds": 1000,
        },
    }


def catalogue(store: str) -> dict:
    return {
        "name": "small",
        "store": store,
        "features": {},
        "effect_model": "small-uplift-purchase",
        "recommender": "small-recommend",
        "channels": {"email": {"cost": 0.01}, "sms": {"cost": 0.05, "reach": 0.8}, "push": {"cost": 0.01}},
        "actions": {
            "discount_10pct": {"channels": ["email", "sms", "push"], "offer": {"share": 0.1}},
            "free_shipping": {"channels": ["email", "sms", "push"], "offer": {"fixed": 0.25}},
            "new_arrivals": {"channels": ["email", "push"], "product": "recommended"},
        },
        "value": {"column": "aov_365d", "scale": 0.3, "fallback": 10, "order_value": "aov_365d", "base_rate": 0.21},
        "rules": {"eligibility": {"not_churned": "lifecycle_stage <> 'churned'"}},
        "policy": {"caps": [{"channel": "email", "max": 1, "days": 7}]},
        "allocation": {"per_customer": 1, "budget": 40, "capacity": {"sms": 30}},
    }


def write_configs(
    folder: Path,
    store: str,
    output: Path,
    chunk: int,
    churn_model: str = "champion",
    extra: dict | None = None,
    **drift,
) -> Path:
    """A task config, a catalogue and the scoring config (with ``extra`` keys) in ``folder``; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "churn.yaml").write_text(yaml.safe_dump(churn_config(store, 20)))
    (folder / "nba.yaml").write_text(yaml.safe_dump(catalogue(store)))
    cfg = {
        "name": "small",
        "store": store,
        "features": {},
        "output": str(output),
        "chunk_size": chunk,
        "tasks": [{"config": "churn.yaml", "model": churn_model}],
        "recommender": {"name": "small-recommend"},
        "effects": [{"name": "small-uplift-purchase"}],
        "nba": {"catalogue": "nba.yaml"},
        # ages grow with time past what the Q4-2023 training saw; the check itself is tested below
        "drift": {"out_of_range_ignore": ["first_purchase_days", "tenure_days"], "out_of_range": 1.0} | drift,
    } | (extra or {})
    path = folder / "score.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def registered(small_store: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Churn v1 (10 trees) and v3 (20 trees, champion), a DR effect model and a popularity recommender."""
    from omnicrm import tracking
    from omnicrm.pipeline.recommend import write_recommendations
    from omnicrm.pipeline.train import train
    from omnicrm.pipeline.uplift import write_effects

    folder = tmp_path_factory.mktemp("score")
    store = yaml.safe_load(small_store.read_text())["store"]
    uplift = small_uplift_config(store)
    rec = small_recommend_config(store)
    (folder / "uplift.yaml").write_text(yaml.safe_dump(uplift))
    (folder / "rec.yaml").write_text(yaml.safe_dump(rec))
    mlruns = folder / "mlruns"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("OMNICRM_MLRUNS", str(mlruns))
        versions = []
        for trees in (10, 20):
            (folder / "churn.yaml").write_text(yaml.safe_dump(churn_config(store, trees)))
            versions.append(train(folder / "churn.yaml")[0].version)
        # train also registers its best baseline as a version: the models are v1 and v3
        assert versions == ["1", "3"]
        tracking.set_alias("omnicrm-churn", "champion", versions[1])
        eff = write_effects(folder / "uplift.yaml", AS_OF, folder / "effects.parquet")
        tracking.set_alias("omnicrm-small-uplift-purchase", "champion", eff.version)
        recs = write_recommendations(folder / "rec.yaml", AS_OF, folder / "recs.parquet")
        tracking.set_alias("omnicrm-small-recommend", "champion", recs.version)
    return World(store, mlruns, folder)
