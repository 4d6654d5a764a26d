"""Baselines score a customer the same whatever batch it is scored in (a scoring job's chunk size must not matter)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omnicrm.tasks.baselines import Baseline


@pytest.mark.parametrize(("name", "problem"), [("logistic", "binary"), ("recency", "binary"), ("linear", "regression")])
def test_scores_do_not_depend_on_the_batch(name: str, problem: str) -> None:
    rng = np.random.default_rng(0)
    n, features = 5000, [f"x{i}" for i in range(40)]
    frame = pd.DataFrame(rng.normal(size=(n, 40)), columns=features)
    frame["recency_days"] = rng.integers(0, 400, n).astype(float)
    frame.loc[rng.random(n) < 0.1, "x3"] = np.nan  # the imputer's work is per row too
    y = (rng.random(n) < 1 / (1 + np.exp(-frame["x0"].fillna(0)))).astype(int) if problem == "binary" else frame["x1"]
    base = Baseline(name, [*features, "recency_days"]).fit(frame, np.asarray(y), problem)
    whole = base.predict(frame, problem)
    chunked = np.concatenate([base.predict(frame.iloc[i : i + 777], problem) for i in range(0, n, 777)])
    assert np.array_equal(whole, chunked)
    # and they are scikit-learn's own predictions up to rounding
    X = frame[[*features, "recency_days"]] if name != "recency" else frame[["recency_days"]]
    ref = base.estimator.predict_proba(X)[:, 1] if problem == "binary" else np.clip(base.estimator.predict(X), 0, None)
    np.testing.assert_allclose(whole, ref, rtol=0, atol=1e-12)
