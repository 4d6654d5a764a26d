"""The pieces of a task model: censoring-aware timing, calibration choice, encoding, the guard."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omnicrm.errors import InputError
from omnicrm.tasks.baselines import Baseline
from omnicrm.tasks.metrics import binary_metrics
from omnicrm.tasks.model import Encoding, HazardModel, TaskModel, choose_blend, choose_calibration, fit_lgbm


def _exponential(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, n)
    mean = np.where(x == 1, 120.0, 15.0)  # days to the next purchase
    t = rng.exponential(mean)
    cap = 90.0
    return pd.DataFrame({"x": x.astype(float)}), np.minimum(t, cap), (t < cap).astype(np.int8), mean


def test_hazard_model_recovers_the_restricted_mean_under_censoring() -> None:
    edges = [0.0, 7.0, 14.0, 21.0, 30.0, 45.0, 60.0, 75.0, 90.0]
    X, dur, event, _ = _exponential(12000, 1)
    Xv, dur_v, event_v, _ = _exponential(4000, 2)
    assert 0.2 < 1 - event.mean() < 0.5, "a good share of customers is censored"
    hz = HazardModel(edges)
    Xp, yp = hz.person_period(X, dur, event, edges)
    Xpv, ypv = hz.person_period(Xv, dur_v, event_v, edges)
    params = {"n_estimators": 300, "learning_rate": 0.1, "num_leaves": 8, "random_state": 0}
    hz.estimator = fit_lgbm("binary", Xp, yp, Xpv, ypv, params, 30)
    rmst, cond, p_event = hz.expected_days(pd.DataFrame({"x": [0.0, 1.0]}))
    for i, mean in enumerate((15.0, 120.0)):
        lam = 1 / mean
        true_rmst = (1 - np.exp(-lam * 90)) / lam  # E[min(T, 90)] of an exponential
        assert rmst[i] == pytest.approx(true_rmst, rel=0.06)
        assert p_event[i] == pytest.approx(1 - np.exp(-lam * 90), abs=0.03)
    # dropping the censored customers (a common mistake) would badly understate the slow group
    naive = dur[(X["x"] == 1) & (event == 1)].mean()
    assert naive < 0.75 * rmst[1]


def test_person_period_rows_are_the_bins_a_customer_entered() -> None:
    X = pd.DataFrame({"x": [1.0, 2.0]})
    Xp, y = HazardModel.person_period(X, np.array([10.0, 30.0]), np.array([1, 0]), [0.0, 7.0, 14.0, 30.0])
    # customer 0 buys on day 10: at risk in bins [0,7) and [7,14), label 1 in the second
    # customer 1 is censored at day 30: at risk in all three bins, never a purchase
    assert Xp["bin_start"].tolist() == [0.0, 7.0, 0.0, 7.0, 14.0]
    assert y.tolist() == [0, 1, 0, 0, 0]


def test_calibration_is_kept_only_where_it_helps_out_of_sample() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, 20000)
    y = (rng.random(20000) < p).astype(int)
    cal, info = choose_calibration(p, y, "auto", seed=1)
    assert cal is None and info["calibration"] == "none", "already calibrated: leave it alone"
    skewed = p**3  # systematically too low
    cal, info = choose_calibration(skewed, y, "auto", seed=1)
    assert cal is not None and info["calibration"] in ("isotonic", "sigmoid")
    assert np.abs(cal.transform(skewed) - p).mean() < 0.05


def test_encoding_fixes_categories_and_names_missing_columns() -> None:
    train = pd.DataFrame({"seg": ["a", "b", None], "n": [1, 2, 3]})
    enc = Encoding.learn(train, ["seg", "n"])
    out = enc.transform(pd.DataFrame({"seg": ["b", "zzz"], "n": [5, None]}))
    assert list(out["seg"].cat.categories) == ["a", "b"]
    assert out["seg"].isna().tolist() == [False, True], "an unseen category is treated as missing"
    assert out["n"].dtype == "float64"
    with pytest.raises(InputError, match="missing feature column.*seg"):
        enc.transform(pd.DataFrame({"n": [1]}))


def test_encoding_drops_features_constant_in_training_and_names_them() -> None:
    """A plain transaction log leaves about 25 default features constant: they are left out and reported."""
    import pickle

    train = pd.DataFrame(
        {
            "n": [1.0, 2.0, 3.0],
            "zero": [0.0, 0.0, 0.0],
            "empty": [np.nan] * 3,
            "seg": ["web"] * 3,
            "some_missing": [1.0, np.nan, 1.0],  # missing or not may matter: kept
        }
    )
    columns = list(train.columns)
    enc = Encoding.learn(train, columns)
    assert enc.features == ["n", "some_missing"]
    assert enc.dropped == ("zero", "empty", "seg")
    assert enc.categories == {}
    # scoring frames need only the kept columns, in the training order
    assert list(enc.transform(train[["some_missing", "n"]]).columns) == ["n", "some_missing"]
    assert Encoding.learn(train, columns, drop_constant=False).features == columns
    # an encoding pickled before ``dropped`` existed unpickles with nothing dropped
    old = pickle.loads(pickle.dumps(enc))
    del old.__dict__["dropped"]
    assert pickle.loads(pickle.dumps(old)).dropped == ()


def _churn_like(n: int, seed: int) -> pd.DataFrame:
    """Churn grows with recency, and only linearly beyond the range the trees were trained on."""
    rng = np.random.default_rng(seed)
    recency = rng.uniform(0, 90 if seed == 0 else 270, n)
    z = rng.normal(size=n)
    logit = 0.02 * (recency - 45) + np.where(z > 0.5, 1.0, -0.3)
    return pd.DataFrame({"recency_days": recency, "z": z, "y": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)})


def test_a_blend_with_a_baseline_is_chosen_on_validation_and_scores_as_chosen() -> None:
    tr, va = _churn_like(3000, 0), _churn_like(3000, 1)
    features = ["recency_days", "z"]
    enc = Encoding.learn(tr, features)
    params = {"n_estimators": 200, "num_leaves": 7, "random_state": 0, "learning_rate": 0.05}
    est = fit_lgbm("binary", enc.transform(tr), tr["y"].to_numpy(), enc.transform(va), va["y"].to_numpy(), params, 20)
    model = TaskModel("churn", "churn", "binary", "p_churn", enc, est)
    y_tr = tr["y"].to_numpy()
    baselines = {name: Baseline(name, features).fit(tr, y_tr, "binary") for name in ("recency", "logistic")}

    def auc(y: np.ndarray, s: np.ndarray) -> float:
        return binary_metrics(y, s)["roc_auc"]

    y_va, alone = va["y"].to_numpy(), model.predict_score(va)
    blend, info = choose_blend(alone, baselines, va, y_va, "binary", auc)
    # the trees see recency only up to 90 days; validation reaches 270, where the linear baseline extrapolates
    assert blend is not None and 0 < blend.weight < 1
    assert info["blend"] == f"{blend.name} {blend.weight:g}" and info["blend_validation_gain"] > 0.005
    model.blend = blend
    blended = model.predict_score(va)
    assert auc(y_va, blended) == pytest.approx(auc(y_va, alone) + info["blend_validation_gain"])
    expected = blend.weight * alone + (1 - blend.weight) * baselines[blend.name].predict(va, "binary")
    np.testing.assert_allclose(blended, expected)
    assert ((blended >= 0) & (blended <= 1)).all(), "a mix of probabilities is a probability"
    # no blend where none beats the model alone (here a model scoring the outcome itself)
    none, info = choose_blend(y_va.astype(float), baselines, va, y_va, "binary", auc)
    assert none is None and info == {"blend": "none", "blend_validation_gain": 0.0}


def test_a_model_pickled_before_the_task_contract_still_predicts_its_columns() -> None:
    """Registered models are pickled TaskModels; those from before issue 10 had ``kind`` and ``timing``
    and no score column, and champions of that age must keep scoring (``omnicrm predict``, promote)."""
    import pickle

    from omnicrm.tasks.model import TaskModel

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=400)})
    y = (X["x"] + rng.normal(size=400) > 0).astype(int).to_numpy()
    params = {"n_estimators": 20, "num_leaves": 4, "random_state": 0}
    enc = Encoding.learn(X, ["x"])
    est = fit_lgbm("binary", enc.transform(X), y, enc.transform(X), y, params, 5)
    edges = [0.0, 7.0, 30.0]
    hz = HazardModel(edges)
    Xp, yp = hz.person_period(enc.transform(X), rng.uniform(0, 30, 400), rng.integers(0, 2, 400), edges)
    hz.estimator = fit_lgbm("binary", Xp, yp, Xp, yp, params, 5)
    new = TaskModel("next_purchase", "next_purchase", "binary", "p_purchase", enc, est, extra=hz)
    # the same model as the old class laid it out (what an old pickle restores into __dict__)
    old_state = {
        "task": "next_purchase",
        "target": "next_purchase",
        "kind": "binary",
        "encoding": enc,
        "estimator": est,
        "calibrator": None,
        "timing": hz,
        "meta": {},
    }

    class OldPickle:
        """Pickles as an old TaskModel did: a bare TaskModel, then its ``__dict__`` as state."""

        def __reduce__(self) -> tuple:
            return object.__new__, (TaskModel,), old_state

    old = pickle.loads(pickle.dumps(OldPickle()))
    for model in (old, pickle.loads(pickle.dumps(new))):
        got = model.predict_frame(X.head(5))
        assert list(got.columns) == ["p_purchase", "expected_days", "expected_days_if_purchase", "p_purchase_30d"]
        pd.testing.assert_frame_equal(got, new.predict_frame(X.head(5)))
    assert (old.problem, old.score_column, old.extra.edges) == ("binary", "p_purchase", edges)
    assert not hasattr(old, "kind") and not hasattr(old, "timing")
    # the fitted baselines were not kept then: `predict --baselines` finds none, and says so
    assert old.baselines == {} and new.baselines == {}


def test_params_by_feature_position_are_checked_against_the_features_before_lightgbm_aborts() -> None:
    """LightGBM 4.7 aborts the whole process (exit 134, no error) on a ``monotone_constraints`` list
    shorter than the features, on one constraining a categorical feature, or on an interaction
    index past the last feature: fit_lgbm must refuse them with an error naming the config key, and
    still fit valid ones."""
    rng = np.random.default_rng(0)
    n = 300
    X = pd.DataFrame(
        {
            "recency_days": rng.uniform(0, 100, n),
            "top_category": pd.Categorical(rng.choice(["a", "b"], n)),
            "orders_90d": rng.integers(0, 5, n).astype(float),
        }
    )
    y = (rng.random(n) < 0.4).astype(int)
    args = ("binary", X, y, X, y)
    with pytest.raises(
        InputError, match=r"monotone_constraints: 1 value\(s\) for the model's 3 features.*recency_days"
    ):
        fit_lgbm(*args, {"monotone_constraints": [1]}, 5)
    with pytest.raises(InputError, match="mc: LightGBM cannot constrain categorical feature.*top_category"):
        fit_lgbm(*args, {"mc": "0,1,0"}, 5)
    # an interaction index past the last feature corrupted LightGBM's heap (exit 134) or segfaulted
    with pytest.raises(InputError, match=r"interaction_constraints: feature index\(es\) \[3\] past the model's 3"):
        fit_lgbm(*args, {"interaction_constraints": [[0, 3]]}, 5)
    est = fit_lgbm(
        *args, {"monotone_constraints": [1, 0, -1], "interaction_constraints": [[0, 2], [1]], "n_estimators": 5}, 5
    )
    assert est.booster_.num_trees() >= 1
