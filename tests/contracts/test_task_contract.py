"""The task contract (``omnicrm/tasks/base.py``): every task in ``TASKS`` through the same checks.

On a tiny store written here (300 customers drawn with numpy, the store tables of
``omnicrm.schema``), each registered task is trained on its training cutoffs and evaluated on a
later one, and must: respect the time split (frames hold only their own cutoffs, labels read
nothing at or after ``T + label_days``), keep its labels out of the model's inputs, give finite
scores for its model and every baseline, and predict exactly the columns it declares. A task
written in this file (``ReturnsSoon``: one class and one registry entry) goes through the same
checks and through ``omnicrm train``'s wiring, so adding a task needs nothing else.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from omnicrm import schema
from omnicrm.errors import ConfigError
from omnicrm.features.cutoffs import normalize_cutoff
from omnicrm.store import StoreWriter, open_store
from omnicrm.tasks.base import Target, Task
from omnicrm.tasks.config import TaskConfig, load_task_config, task_config_from_dict
from omnicrm.tasks.frames import build_frame
from omnicrm.tasks.labels import events_sql
from omnicrm.tasks.predict import score_frame
from omnicrm.tasks.registry import TASKS, registered
from omnicrm.tasks.train import Frames, train_target

pytestmark = pytest.mark.contract

START = datetime(2023, 1, 1)
DAYS = 547  # to 2024-07-01
CUTOFFS = {"train": {"dates": ["2023-08-01", "2023-10-01"]}, "validation": "2024-01-01", "evaluation": "2024-04-01"}
SCORE_AT = "2024-06-01"
MODEL = {"params": {"n_estimators": 40, "learning_rate": 0.1, "num_leaves": 7, "min_child_samples": 10}}

#: one example ``task:`` section per registered task; a new task adds its own here
SECTIONS: dict[str, dict[str, Any]] = {
    "churn": {"kind": "churn", "horizon_days": 30},
    "next_purchase": {"kind": "next_purchase", "horizon_days": 30, "timing_max_days": 60, "timing_bins": [7, 14, 30]},
    "clv": {"kind": "clv", "horizon_days": 30},
    "propensity": {
        "kind": "propensity",
        "horizon_days": 30,
        "targets": [
            {"name": "shops_online", "where": "channel IN ('web', 'app')"},
            {"name": "clicks_email", "event_types": ["email_click"], "consent": "email"},
        ],
    },
}


def _events(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Purchases (a Poisson stream per customer while active), returns of some of them, monthly e-mails."""
    first = rng.uniform(0, 200, n)
    last = np.minimum(first + rng.exponential(400, n), DAYS - 1)
    gap = rng.uniform(10, 90, n)
    counts = rng.poisson((last - first) / gap) + 1
    cust = np.repeat(np.arange(n), counts)
    day = first[cust] + rng.uniform(0, 1, cust.size) * (last - first)[cust]
    product = rng.integers(0, 12, cust.size)
    quantity = rng.integers(1, 4, cust.size).astype(float)
    purchases = pd.DataFrame(
        {
            "customer": cust,
            "day": day,
            "channel": rng.choice(["store", "web", "app"], cust.size),
            "event_type": "purchase",
            "product": product,
            "quantity": quantity,
            "amount": quantity * (10.0 + 5 * product),
        }
    )
    back = purchases[rng.random(len(purchases)) < 0.15].copy()
    back["day"] += rng.uniform(3, 25, len(back))
    back["event_type"] = "return"
    sends = pd.DataFrame(
        {"customer": np.repeat(np.arange(n), DAYS // 30), "day": np.tile(np.arange(DAYS // 30) * 30.0, n)}
    )
    sends["day"] += rng.uniform(0, 1, len(sends))
    clicks = sends[rng.random(len(sends)) < rng.uniform(0.02, 0.4, n)[sends["customer"]]].copy()
    clicks["day"] += rng.uniform(0, 3, len(clicks))
    out = pd.concat(
        [
            purchases,
            back,
            sends.assign(event_type="email_sent", channel="email"),
            clicks.assign(event_type="email_click", channel="email"),
        ],
        ignore_index=True,
    )
    out = out[out["day"] < DAYS].reset_index(drop=True)
    is_sale = out["event_type"].isin(["purchase", "return"])
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(out))],
            "customer_id": [f"c{c:04d}" for c in out["customer"]],
            "ts": pd.Timestamp(START) + pd.to_timedelta(out["day"], unit="D"),
            "channel": out["channel"],
            "event_type": out["event_type"],
            "order_id": np.where(is_sale, [f"o{i}" for i in range(len(out))], None),
            "product_id": np.where(is_sale, [f"p{int(p)}" if p == p else "" for p in out["product"]], None),
            "category": np.where(is_sale, [f"cat{int(p) % 3}" if p == p else "" for p in out["product"]], None),
            "quantity": out["quantity"].where(is_sale),
            "amount": out["amount"].where(is_sale),
        }
    )


def write_tiny_store(path: Path, n: int = 300, seed: int = 7) -> Path:
    """A store with every contract table: customers, products, events; the others empty."""
    rng = np.random.default_rng(seed)
    customers = pd.DataFrame(
        {
            "customer_id": [f"c{i:04d}" for i in range(n)],
            "first_seen": pd.Timestamp(START),
            "region": rng.choice(["north", "south"], n),
            "signup_channel": rng.choice(["store", "web"], n),
            "consent_email": rng.random(n) < 0.7,
            "consent_sms": rng.random(n) < 0.3,
            "consent_push": rng.random(n) < 0.3,
            "n_source_records": 1,
        }
    )
    products = pd.DataFrame(
        {
            "product_id": [f"p{i}" for i in range(12)],
            "category": [f"cat{i % 3}" for i in range(12)],
            "price": [10.0 + 5 * i for i in range(12)],
            "margin": [3.0 + i for i in range(12)],
        }
    )
    data = {
        schema.CUSTOMERS: customers,
        schema.PRODUCTS: products,
        schema.EVENTS: _events(rng, n),
        schema.STORE_META: pd.DataFrame({"key": ["data_fingerprint"], "value": ["tiny-contract-store"]}),
    }
    con = duckdb.connect()
    try:
        with StoreWriter(con, path) as writer:
            for table, cols in schema.TABLES.items():
                if table in data:
                    con.register(f"src_{table}", data[table])
                    writer.write_table(table, f"SELECT * FROM src_{table}")
                else:
                    nulls = ", ".join(f'NULL AS "{c}"' for c in cols)
                    writer.write_table(table, f"SELECT {nulls} WHERE false")
            writer.commit()
    finally:
        con.close()
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_store(tmp_path_factory.mktemp("contract") / "store.duckdb")


def task_config(store: Path, section: dict[str, Any], **dataset: Any) -> TaskConfig:
    data = {
        "name": f"contract-{section['kind']}",
        "dataset": {"name": "tiny", "store": str(store), "features": {}, "feature_cache": None} | dataset,
        "task": section,
        "cutoffs": CUTOFFS,
        "model": MODEL,
    }
    return task_config_from_dict(data, "contract test")


def _frames(cfg: TaskConfig, store: Path) -> Frames:
    con = open_store(store, deterministic=True)
    try:
        tr = build_frame(con, cfg, cfg.train_cutoffs())
        va = build_frame(con, cfg, [cfg.cutoffs.validation], what="validation")
        ev = build_frame(con, cfg, [cfg.cutoffs.evaluation], what="evaluation")
    finally:
        con.close()
    return Frames(tr, va, ev, "tiny-contract-store", 0.0)


def check_task(cfg: TaskConfig, store: Path) -> None:
    """The checks every task passes (see the module docstring)."""
    task = cfg.task
    assert type(task) is TASKS[task.kind] and task.name == task.kind
    # the time split: training < validation < evaluation, label windows included
    h = timedelta(days=task.label_days())
    assert max(cfg.train_cutoffs()) + h <= cfg.cutoffs.validation
    assert cfg.cutoffs.validation + h <= cfg.cutoffs.evaluation
    frames = _frames(cfg, store)
    assert set(frames.train["cutoff"]) == {pd.Timestamp(d) for d in cfg.train_cutoffs()}
    assert set(frames.evaluation["cutoff"]) == {pd.Timestamp(cfg.cutoffs.evaluation)}
    scoring = _scoring_frame(cfg, store)
    # what add_labels adds is a declared label: a target's y_ column or one of label_columns
    added = set(frames.train.columns) - set(scoring.columns)
    assert added == {t.label for t in task.targets_of(frames.train)} | set(task.label_columns)
    targets = task.targets_of(frames.train)
    assert targets and [t.name for t in targets] == [t.name for t in task.targets_of(frames.evaluation)]
    models = {}
    for target in targets:
        assert target.label.startswith("y_")
        assert cfg.registered_name(target).startswith(f"omnicrm-{task.kind}")
        result = train_target(cfg, target, frames)
        features = result.model.encoding.features
        assert not added & set(features), "a label is a model input"
        assert set(features) <= set(scoring.columns), "a model input is missing at scoring time"
        ev = target.rows(frames.evaluation)
        assert result.info["evaluation_rows"] == len(ev) > 0
        assert np.isfinite(result.model_metrics[result.primary])
        assert result.primary == task.primary_metric(target) and result.baseline_metrics
        for name, score in result.scores.items():
            assert len(score) == len(ev) and np.isfinite(score).all(), f"{task.kind}/{target.name}: {name}"
        assert list(result.model.predict_frame(ev).columns) == task.output_columns(target)
        # the refit (the registered model, on by default) predicts the same columns from the same inputs
        assert result.refit is not None and result.deployed is result.refit.model
        assert result.deployed.encoding.features == features
        assert list(result.deployed.predict_frame(ev).columns) == task.output_columns(target)
        # every baseline, registered as a model (refitted beside the model), predicts the same columns and
        # what the refitted baseline predicts; the evaluated baselines scored what training reported
        for name in result.baselines:
            baseline = result.baseline_model(name)
            assert list(baseline.predict_frame(ev).columns) == task.output_columns(target), name
            np.testing.assert_array_equal(
                baseline.predict_score(ev), result.refit.baselines[name].predict(ev, target.problem)
            )
            np.testing.assert_array_equal(
                result.baselines[name].predict(ev, target.problem), result.scores[f"baseline_{name}"]
            )
            assert baseline.predict_frame(scoring).notna().all().all(), f"{task.kind}/{target.name}: {name}"
        models[target] = result.deployed  # what `omnicrm predict` scores with
    _check_labels_read_only_their_window(cfg, store, frames.evaluation)
    _check_scoring(task, scoring, {t: m for t, m in models.items() if t in task.targets_of(scoring)})


def _scoring_frame(cfg: TaskConfig, store: Path) -> pd.DataFrame:
    con = open_store(store, deterministic=True)
    try:
        return build_frame(con, cfg, [pd.Timestamp(SCORE_AT).date()], with_labels=False, what="scoring")
    finally:
        con.close()


def _check_labels_read_only_their_window(cfg: TaskConfig, store: Path, ev: pd.DataFrame) -> None:
    """Events at or after ``T + label_days`` (every type, every customer) change nothing at ``T``."""
    copy = store.with_name(f"later-{cfg.task.kind}.duckdb")
    shutil.copyfile(store, copy)
    t = normalize_cutoff(cfg.cutoffs.evaluation) + timedelta(days=cfg.task.label_days())
    con = duckdb.connect(str(copy))
    try:
        con.execute(
            f"""INSERT INTO events
                SELECT 'later-' || event_id, customer_id, ts - (SELECT min(ts) FROM events) + TIMESTAMP '{t:%Y-%m-%d}',
                       channel, event_type, order_id, product_id, category, quantity, amount
                FROM events"""
        )
    finally:
        con.close()
    later = _frames(cfg, copy).evaluation
    pd.testing.assert_frame_equal(later, ev)


def _check_scoring(task: Task, frame: pd.DataFrame, models: dict[Target, Any]) -> None:
    """A scoring frame (no labels) gets exactly the declared output columns of every scored target."""
    assert models
    scores = score_frame(task, frame, models)
    assert list(scores.columns) == [c for t in task.targets_of(frame) for c in task.output_columns(t)]
    assert len(scores) == len(frame) and np.isfinite(scores.to_numpy(dtype=float)).all()
    with_reasons = score_frame(task, frame, models, reasons=True)
    first = [f"{t.name}_reason_1_feature" if task.multi_target else "reason_1_feature" for t in models]
    assert set(first) <= set(with_reasons.columns)


def test_every_registered_task_has_an_example_section() -> None:
    assert set(SECTIONS) == set(TASKS), "add an example 'task:' section for each registered task to SECTIONS"


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_task_follows_the_contract(kind: str, store: Path) -> None:
    check_task(task_config(store, SECTIONS[kind]), store)


# --- a task added in a test: one class, one registry entry ---


class ReturnsSoon(Task):
    """Test-only task: does an active customer return something in ``[T, T+h)``?"""

    name: ClassVar[str] = "returns_soon"

    def declared_targets(self) -> list[Target]:
        return [Target("returns_soon", "y_returns_soon", "binary", self.score_column_for("returns_soon"))]

    def add_labels(self, con: duckdb.DuckDBPyConnection, cutoff: datetime, frame: pd.DataFrame) -> pd.DataFrame:
        hit = con.sql(events_sql(cutoff, self.horizon_days, ["return"])).df()
        frame["y_returns_soon"] = frame["customer_id"].isin(hit["customer_id"]).astype(np.int8)
        return frame


@pytest.fixture
def returns_soon() -> Any:
    """``ReturnsSoon`` registered for one test, removed afterwards."""
    with registered(ReturnsSoon):
        yield ReturnsSoon


def test_a_task_added_in_a_test_follows_the_contract_and_trains_through_the_wiring(
    returns_soon: type[Task], store: Path, tmp_path: Path
) -> None:
    from omnicrm.pipeline.train import train

    section = {"kind": "returns_soon", "horizon_days": 30}
    check_task(task_config(store, section), store)
    # `omnicrm train` runs it as it is, feature cache included (no MLflow here: register=False)
    cfg = task_config(store, section, feature_cache=str(tmp_path / "cache"))
    [result] = train(cfg, register=False)
    assert (result.task, result.target, result.registered_name) == (
        "returns_soon",
        "returns_soon",
        "omnicrm-returns_soon",
    )
    assert list(result.model.predict_frame(_frames(cfg, store).evaluation).columns) == ["p_returns_soon"]
    assert len(list((tmp_path / "cache").glob("tiny-*.parquet"))) == 4  # one snapshot per cutoff


def test_registration_is_removed_after_its_block(store: Path) -> None:
    with registered(ReturnsSoon):
        assert TASKS["returns_soon"] is ReturnsSoon
        with pytest.raises(ValueError, match="registered already"), registered(ReturnsSoon):
            pass
    assert "returns_soon" not in TASKS
    with pytest.raises(ConfigError, match=r"key 'task.kind': must be one of \{'churn', .*\}; got 'returns_soon'"):
        task_config(store, {"kind": "returns_soon", "horizon_days": 30})


# --- the task section is validated by its task ---


def _write(tmp_path: Path, section: dict[str, Any]) -> Path:
    path = tmp_path / "task.yaml"
    data = {"dataset": {"name": "tiny", "store": "store.duckdb"}, "task": section, "cutoffs": CUTOFFS}
    path.write_text(yaml.safe_dump(data))
    return path


def test_an_unknown_kind_names_the_file_key_and_allowed_values(tmp_path: Path) -> None:
    path = _write(tmp_path, {"kind": "chrun", "horizon_days": 30})
    allowed = "{'churn', 'clv', 'next_purchase', 'propensity'}"
    with pytest.raises(ConfigError) as err:
        load_task_config(path)
    assert str(err.value) == f"{path}: key 'task.kind': must be one of {allowed}; got 'chrun' (did you mean 'churn'?)"


def test_a_key_of_another_task_is_an_unknown_key_listing_this_tasks_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, {"kind": "churn", "horizon_days": 30, "btyd_features": False})
    with pytest.raises(
        ConfigError, match=r"key 'task.btyd_features': unknown key .*allowed keys: horizon_days, kind, population"
    ):
        load_task_config(path)
    path = _write(tmp_path, {"kind": "propensity", "horizon_days": 30})
    with pytest.raises(ConfigError, match="a propensity task needs at least one entry under 'targets'"):
        load_task_config(path)
    path = _write(
        tmp_path, {"kind": "next_purchase", "horizon_days": 30, "timing_max_days": 20, "timing_bins": [7, 30]}
    )
    with pytest.raises(ConfigError, match="timing_bins must not exceed timing_max_days"):
        load_task_config(path)


def test_a_config_logged_before_the_task_classes_still_validates(store: Path) -> None:
    """Configs logged to MLflow before issue 10 carried every task's keys in one flat section."""
    flat = {
        "timing_max_days": None,
        "timing_bins": [7, 14, 21, 30, 45, 60, 90, 120],
        "clv_objective": "tweedie",
        "tweedie_variance_power": 1.3,
        "btyd_features": True,
        "margin": True,
        "targets": [],
    }
    logged = task_config(store, SECTIONS["churn"]).model_dump(mode="json")
    logged["task"] |= flat
    cfg = task_config_from_dict(logged)
    assert cfg.task == task_config(store, SECTIONS["churn"]).task
    logged["task"]["btyd_features"] = False  # not a default: it was set on purpose, so it is an error
    with pytest.raises(ConfigError, match="unknown key 'btyd_features'"):
        task_config_from_dict(logged)
