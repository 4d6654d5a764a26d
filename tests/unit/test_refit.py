"""The refit for deployment and short-history validation (issue 11): the pure rules.

The tree count the refit carries over, the customer hold-out of ``validation: holdout``, the
time-split guard with it, the labels a version saw, and how ``promote`` compares a champion that
may have seen the candidate's evaluation labels.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from omnicrm.pipeline.promote import champion_basis
from omnicrm.tasks.config import TaskConfig
from omnicrm.tasks.describe import run_name
from omnicrm.tasks.registry import TASKS
from omnicrm.tasks.train import holdout_split, refit_trees


def _config(cutoffs: dict[str, Any], **model: Any) -> TaskConfig:
    return TaskConfig[TASKS["churn"]].model_validate(
        {
            "name": "churn",
            "dataset": {"name": "shop", "store": "x.duckdb"},
            "task": {"kind": "churn", "horizon_days": 90},
            "cutoffs": cutoffs,
            "model": model,
        }
    )


#: nine months of log (2023-01-01 .. 2023-10-01): no room for three disjoint 90-day label windows
NINE_MONTHS = {"train": {"dates": ["2023-03-01", "2023-04-01"]}, "evaluation": "2023-07-01"}


def test_refit_trees_keep_the_best_iteration_or_scale_it_by_the_rows() -> None:
    assert refit_trees("keep", 120, 3000, 6000) == 120
    assert refit_trees("scale", 120, 3000, 6000) == 240
    assert refit_trees("scale", 0, 3000, 6000) == 1  # never zero trees


def test_holdout_keeps_each_customer_on_one_side_at_every_cutoff() -> None:
    ids = [f"c{i}" for i in range(2000)]
    frame = pd.DataFrame({"customer_id": ids * 3, "cutoff": [1] * 2000 + [2] * 2000 + [3] * 2000})
    train, held = holdout_split(frame, 0.2, seed=42)
    assert len(train) + len(held) == len(frame)
    assert not set(train["customer_id"]) & set(held["customer_id"])
    assert held.groupby("customer_id").size().eq(3).all(), "a held-out customer is held out at every cutoff"
    assert 0.17 < held["customer_id"].nunique() / 2000 < 0.23
    again, _ = holdout_split(frame, 0.2, seed=42)
    pd.testing.assert_frame_equal(train, again)  # the same split from run to run


def test_holdout_validation_lets_nine_months_train_a_90_day_horizon() -> None:
    with pytest.raises(ValidationError, match="time split"):
        _config(NINE_MONTHS | {"validation": "2023-05-01"})  # no validation cutoff fits
    cfg = _config(NINE_MONTHS | {"validation": "holdout"})
    assert cfg.cutoffs.holdout and cfg.cutoffs.validation_dates() == []
    assert cfg.refit_cutoffs() == [date(2023, 3, 1), date(2023, 4, 1), date(2023, 7, 1)]
    # the evaluated model saw labels up to 2023-06-30; the refit up to the evaluation window's end
    assert cfg.labels_end(refit=False) == date(2023, 6, 30) <= cfg.cutoffs.evaluation
    assert cfg.labels_end(refit=True) == date(2023, 9, 29)
    # evaluation stays later than training, label windows included
    with pytest.raises(ValidationError, match=r"last training cutoff 2023-04-01 .* after the evaluation cutoff"):
        _config(NINE_MONTHS | {"validation": "holdout", "evaluation": "2023-06-01"})
    with pytest.raises(ValidationError, match="holdout_share"):
        _config(NINE_MONTHS | {"validation": "holdout", "holdout_share": 1.0})


def test_refit_is_on_by_default_and_off_by_config() -> None:
    cfg = _config(NINE_MONTHS | {"validation": "holdout"})
    assert cfg.model.refit and cfg.model.refit_trees == "keep"
    assert not _config(NINE_MONTHS | {"validation": "holdout"}, refit=False).model.refit
    with pytest.raises(ValidationError, match="refit_trees"):
        _config(NINE_MONTHS | {"validation": "holdout"}, refit_trees="double")


def test_a_refit_run_is_named_as_one() -> None:
    cfg = _config(NINE_MONTHS | {"validation": "holdout"})
    assert run_name(cfg, "churn") == "churn · shop · lightgbm · train 2023-03-01…2023-04-01 ×2 · eval 2023-07-01"
    assert (
        run_name(cfg, "churn", tuned=True, refit=True)
        == "churn · shop · lightgbm tuned refit · refit 2023-03-01…2023-07-01 ×3 · eval 2023-07-01"
    )


@pytest.mark.parametrize(
    ("tags", "basis"),
    [
        # fitted before the cutoff's label window: scored on the candidate's evaluation frame
        ({"labels_end": "2024-01-01", "refit": "true", "evaluation_cutoff": "2023-11-01"}, "score"),
        ({"labels_end": "2024-03-01", "evaluation_cutoff": "2024-01-01"}, "score"),
        # registered before refits existed (no labels_end, not a refit): scored, as before
        ({"evaluation_cutoff": "2024-01-01"}, "score"),
        # a refit on the same cutoffs (a retrain): its evaluation run judged it on the same cutoff
        ({"labels_end": "2024-04-30", "refit": "true", "evaluation_cutoff": "2024-03-01"}, "recorded"),
        # it has seen the cutoff's labels and was judged elsewhere: no honest comparison
        ({"labels_end": "2024-04-30", "refit": "true", "evaluation_cutoff": "2024-02-01"}, "none"),
        # judged on the same cutoff but by another metric: not comparable either
        (
            {"labels_end": "2024-04-30", "refit": "true", "evaluation_cutoff": "2024-03-01", "primary_metric": "x"},
            "none",
        ),
    ],
)
def test_the_champion_is_compared_without_labels_it_has_seen(tags: dict[str, str], basis: str) -> None:
    got, why = champion_basis(tags, "2024-03-01", "roc_auc")
    assert got == basis
    assert bool(why) == (basis == "none")
    if basis == "none":
        assert "past the candidate's evaluation cutoff 2024-03-01" in why


def _churn_frame(n: int, seed: int, recency_max: float) -> pd.DataFrame:
    """Churn grows with recency, linearly beyond the range the training cutoffs show."""
    import numpy as np

    rng = np.random.default_rng(seed)
    recency = rng.uniform(0, recency_max, n)
    z = rng.normal(size=n)
    logit = 0.02 * (recency - 45) + np.where(z > 0.5, 1.0, -0.3)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    ids = [f"c{seed}-{i}" for i in range(n)]
    return pd.DataFrame({"customer_id": ids, "cutoff": seed, "recency_days": recency, "z": z, "y_churn": y})


def _blend_case() -> tuple[TaskConfig, Any]:
    """A churn config with ``model.blend: auto`` on frames whose validation reaches beyond the trees' range."""
    from omnicrm.tasks.train import Frames

    cfg = _config(
        {"train": {"dates": ["2023-01-01"]}, "validation": "2023-04-01", "evaluation": "2023-07-01"},
        blend="auto",
        params={"n_estimators": 200, "num_leaves": 7, "learning_rate": 0.05},
        early_stopping_rounds=20,
    )
    frames = Frames(_churn_frame(3000, 0, 90), _churn_frame(3000, 1, 270), _churn_frame(3000, 2, 270), "fp", 0.0)
    return cfg, frames


def test_model_blend_auto_is_chosen_on_validation_and_the_refit_keeps_it_with_the_refitted_baseline() -> None:
    from omnicrm.tasks.train import train_target

    cfg, frames = _blend_case()
    result = train_target(cfg, cfg.task.targets_of(frames.train)[0], frames)
    blend = result.model.blend
    # the trees saw recency up to 90 days only; the validation cutoff reaches 270, where a baseline extrapolates
    assert blend is not None and 0 < blend.weight < 1
    assert result.info["blend"] == f"{blend.name} {blend.weight:g}" and result.info["blend_validation_gain"] > 0
    refit = result.refit.model
    assert refit.blend is not None and refit.blend.weight == blend.weight and refit.blend.name == blend.name
    assert refit.blend.baseline is result.refit.baselines[blend.name], "the refit mixes in the refitted baseline"
    assert refit.baselines is result.refit.baselines
    # the default leaves the model alone
    default = _config(cfg.cutoffs.model_dump(), params=cfg.model.params, early_stopping_rounds=20)
    plain = train_target(default, default.task.targets_of(frames.train)[0], frames)
    assert plain.model.blend is None and plain.refit.model.blend is None and "blend" not in plain.info


def test_the_refit_started_in_the_background_is_the_refit_fitted_after_the_evaluation(monkeypatch) -> None:
    """``train_target(background=...)`` starts the refit's fits as soon as LightGBM has its best
    iteration (``omnicrm train`` does): what it registers must be what the inline refit gives."""
    import threading

    import numpy as np

    from omnicrm.interrupts import worker_pool
    from omnicrm.tasks import train as train_module
    from omnicrm.tasks.train import RefitStopped, attach_refit, train_target

    cfg, frames = _blend_case()
    target = cfg.task.targets_of(frames.train)[0]
    inline = train_target(cfg, target, frames)
    with worker_pool(1, "omnicrm-refit") as pool:
        early = train_target(cfg, target, frames, background=pool, stop=threading.Event())
        assert early.refit is None and early.pending_refit is not None
        attach_refit(early, early.pending_refit.result())
    a, b = inline.refit, early.refit
    assert a.info == b.info and a.model.meta == b.model.meta
    assert a.model.estimator.booster_.model_to_string() == b.model.estimator.booster_.model_to_string()
    assert a.model.calibrator is inline.model.calibrator and b.model.calibrator is early.model.calibrator
    assert b.model.blend is not None and b.model.blend.baseline is b.baselines[b.model.blend.name]
    scoring = frames.evaluation
    np.testing.assert_array_equal(a.model.predict_score(scoring), b.model.predict_score(scoring))
    for name in a.baselines:  # the refit's baselines, fitted while LightGBM fitted, are the same too
        np.testing.assert_array_equal(
            a.baselines[name].predict(scoring, "binary"), b.baselines[name].predict(scoring, "binary")
        )

    # the evaluated fit fails: the refit's baselines waiting behind the evaluated ones stop, nothing hangs
    def failing(*args: object, **kwargs: object) -> None:
        raise RuntimeError("fit failed")

    monkeypatch.setattr(train_module, "fit_target", failing)
    stop = threading.Event()
    with worker_pool(1, "omnicrm-refit") as pool, pytest.raises(RuntimeError, match="fit failed"):
        train_target(cfg, target, frames, background=pool, stop=stop)
    assert stop.is_set()
    with pytest.raises(RefitStopped):  # what the refit's baselines do when they see the stop
        train_module._refit_baselines(_done(), cfg, target, ["logistic"], ["recency_days", "z"], frames, stop)


def _done():
    from concurrent.futures import Future

    f: Future[None] = Future()
    f.set_result(None)
    return f


def test_a_time_split_that_does_not_fit_says_how_to_fix_it_without_dumping_the_config(tmp_path) -> None:
    import yaml

    from omnicrm.errors import ConfigError
    from omnicrm.tasks.config import load_task_config

    path = tmp_path / "churn.yaml"
    data = {
        "name": "churn",
        "dataset": {"name": "shop", "store": "x.duckdb"},
        "task": {"kind": "churn", "horizon_days": 90},
        "cutoffs": {**NINE_MONTHS, "validation": "2023-05-01"},
    }
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        load_task_config(path)
    msg = str(e.value)
    assert "time split" in msg and "2023-06-30" in msg and "cutoffs.validation: holdout" in msg
    assert "got {" not in msg and len(msg) < 500, "the whole resolved config echoed back"
