"""Simple baselines, fitted on the same training frame and scored on the same evaluation cutoff.

A model's number means something only next to these (each task names its defaults,
:attr:`omnicrm.tasks.base.Task.baselines`):

``recency``      logistic regression on days since the last purchase (the classic churn heuristic)
``logistic``     logistic regression on all numeric features (median-imputed, standardised)
``run_rate``     CLV: spend of the past year scaled to the horizon ("next period = last period")
``btyd``         CLV: BG/NBD + Gamma-Gamma expected value, fitted on history before the cutoff
``linear``       CLV: ridge regression on all numeric features
``gap``          next-purchase timing: mean inter-purchase gap minus days since the last purchase
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def _numeric(frame: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    cols = [c for c in features if pd.api.types.is_numeric_dtype(frame[c])]
    X = frame[cols].astype("float64")
    # a column that is empty in training would be dropped by the imputer: keep shapes stable
    return X.fillna({c: 0.0 for c in cols if X[c].isna().all()})


@dataclass
class Baseline:
    name: str
    features: list[str]
    estimator: Any = None
    horizon_days: int = 90
    #: ``(numerator, denominator)`` the prediction is multiplied, then divided by (clv's margin turns
    #: spend heuristics into margin with the training frame's margin rate); ``(1, 1)`` leaves it as is
    scale: tuple[float, float] = (1.0, 1.0)

    def fit(self, frame: pd.DataFrame, y: np.ndarray, problem: str) -> Baseline:
        if self.name in ("run_rate", "btyd", "gap"):
            return self  # nothing to learn
        X = _numeric(frame, self.features) if self.name in ("logistic", "linear") else _recency(frame)
        if problem == "binary":
            self.estimator = make_pipeline(
                SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)
            ).fit(X, y)
        else:
            self.estimator = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), Ridge(alpha=1.0)).fit(
                X, y
            )
        return self

    def predict(self, frame: pd.DataFrame, problem: str) -> np.ndarray:
        num, den = self.scale
        return self._predict(frame, problem) * num / den

    def _predict(self, frame: pd.DataFrame, problem: str) -> np.ndarray:
        if self.name == "run_rate":
            return frame["spend_365d"].fillna(0).to_numpy(dtype=float) * self.horizon_days / 365.0
        if self.name == "btyd":
            if "btyd_clv" not in frame.columns:
                raise KeyError("btyd baseline needs the BG/NBD features (task.btyd_features: true)")
            return frame["btyd_clv"].fillna(0).to_numpy(dtype=float)
        X = _numeric(frame, self.features) if self.name in ("logistic", "linear") else _recency(frame)
        z = _linear_scores(self.estimator, X)
        if problem == "binary":
            return 1.0 / (1.0 + np.exp(-z))
        return np.clip(z, 0, None)


def _linear_scores(pipeline: Any, X: pd.DataFrame) -> np.ndarray:
    """The fitted linear model's decision values, row by row.

    scikit-learn computes them as one matrix product, whose BLAS blocking depends on the number of
    rows: a customer's score then changes in the last bit with the batch it is scored in, and a
    scoring job run with another chunk size would not reproduce its own output. An element-wise
    product summed along each row depends on that row alone.
    """
    *steps, (_, linear) = pipeline.steps
    Z = X
    for _, step in steps:
        Z = step.transform(Z)
    Z = np.ascontiguousarray(Z, dtype=float)
    return (Z * np.ravel(linear.coef_)).sum(axis=1) + float(np.ravel(linear.intercept_)[0])


def _recency(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["recency_days"]].astype("float64")


def gap_days(frame: pd.DataFrame, cap: float) -> np.ndarray:
    """Timing baseline: the customer's mean gap minus the days already elapsed, within ``[0, cap]``."""
    gap = frame["gap_mean_days"].astype("float64")
    since = frame["recency_days"].astype("float64")
    return np.clip((gap - since).fillna(cap).to_numpy(), 0, cap)
