"""The pure half of ``omnicrm predict``: score a frame with one fitted model per target, side by side.

The wiring (:mod:`omnicrm.pipeline.predict`) builds the scoring frame, loads the registered models
and writes the file; here the scores of each target's model are put next to each other, with each
customer's top reasons when asked (exact contributions, about 400x a prediction: only on request),
every baseline's score (:func:`baseline_scores`), and scores carried from the label window to a
longer (or shorter) forecast horizon (:func:`horizon_ratio`, :func:`extend_horizon`; the method is
in docs/tasks.md, "Forecast horizon").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from omnicrm.tasks.base import Target, Task
from omnicrm.tasks.explain import top_reasons


def score_frame(task: Task, frame: pd.DataFrame, models: Mapping[Target, Any], reasons: bool = False) -> pd.DataFrame:
    """Every target's predicted columns for every row of ``frame``, in target order.

    Parameters
    ----------
    task : Task
        Says whether reasons carry the target's name (:attr:`~omnicrm.tasks.base.Task.multi_target`).
    frame : DataFrame
        A scoring frame (:func:`omnicrm.tasks.frames.build_frame` without labels).
    models : mapping of Target to model
        One fitted model per target (a :class:`~omnicrm.tasks.model.TaskModel`: ``predict_frame``
        and, for reasons, ``contributions``).
    reasons : bool
        Add each row's top three reasons per model.

    Returns
    -------
    DataFrame
        One row per row of ``frame`` (index 0..n-1): each target's
        :meth:`~omnicrm.tasks.base.Task.output_columns`, then its reasons.
    """
    parts = []
    for target, model in models.items():
        parts.append(model.predict_frame(frame).set_axis(range(len(frame))))
        if reasons:
            r = top_reasons(model, frame).set_axis(range(len(frame)))
            # several models: say whose reasons they are
            parts.append(r.add_prefix(f"{target.name}_") if task.multi_target else r)
    return pd.concat(parts, axis=1) if parts else pd.DataFrame(index=range(len(frame)))


def horizon_column(column: str, horizon_days: int) -> str:
    """``column`` named with its horizon: ``pred_spend`` -> ``pred_spend_180d``."""
    return f"{column}_{int(horizon_days)}d"


def horizon_ratio(
    expected_at_horizon: np.ndarray, expected_at_window: np.ndarray, horizon_days: int, window_days: int
) -> np.ndarray:
    """Per customer, how much longer the horizon is *for that customer*: ``E[Y(H)] / E[Y(h)]``.

    The classic model's (BG/NBD's) expected purchases over the horizon ``H`` and over the label
    window ``h``. A customer likely to have churned gains little from a longer horizon (ratio near
    1), an active regular close to ``H / h``. Where the classic model has no forecast (missing, or 0
    over ``h``) the ratio is the plain ``H / h`` of a constant rate.

    Parameters
    ----------
    expected_at_horizon, expected_at_window : ndarray
        Expected purchases over ``H`` and over ``h`` (NaN where the customer has no summary).
    horizon_days, window_days : int
        ``H`` and ``h``.

    Returns
    -------
    ndarray
    """
    num = np.asarray(expected_at_horizon, dtype=float)
    den = np.asarray(expected_at_window, dtype=float)
    plain = horizon_days / window_days
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = num / den
    return np.where(np.isfinite(ratio) & (den > 0), ratio, plain)


def extend_horizon(values: np.ndarray, ratio: np.ndarray, scaling: str) -> np.ndarray:
    """A score over the label window carried to the horizon by the per-customer ``ratio``.

    ``"amount"`` (expected spend or margin): ``value * ratio``. ``"probability"`` (of at least one
    purchase): the cumulative hazard ``-log(1 - p)`` is scaled by the ratio, ``1 - (1 - p)^ratio``, as
    for a Poisson process whose expected count grows by ``ratio`` (for a constant rate and ``H = 2h``:
    ``1 - (1 - p)^2``); it stays in ``[p, 1]`` for a ratio >= 1.

    Parameters
    ----------
    values : ndarray
        The model's scores over the label window.
    ratio : ndarray
        :func:`horizon_ratio`.
    scaling : {"amount", "probability"}
        The task's :attr:`~omnicrm.tasks.base.Task.horizon_scaling`.

    Returns
    -------
    ndarray
    """
    v = np.asarray(values, dtype=float)
    if scaling == "amount":
        return v * ratio
    if scaling == "probability":
        p = np.clip(v, 0.0, 1.0)
        with np.errstate(divide="ignore"):
            return -np.expm1(ratio * np.log1p(-p))
    raise ValueError(f"unknown horizon scaling {scaling!r}")


def baseline_scores(frame: pd.DataFrame, models: Mapping[Target, Any]) -> tuple[pd.DataFrame, list[str]]:
    """Every baseline's score of each target's model, as ``<score column>_baseline_<name>`` columns.

    A :class:`~omnicrm.tasks.model.TaskModel` carries the baselines fitted on its training frame
    (``baselines``); a registered baseline (:class:`~omnicrm.tasks.model.BaselineModel`) is its one
    baseline. A model registered before the baselines were kept has none, which is returned.

    Returns
    -------
    scores : DataFrame
        One row per row of ``frame`` (index 0..n-1).
    without : list of str
        The targets whose model carries no baseline.
    """
    columns: dict[str, np.ndarray] = {}
    without = []
    for target, model in models.items():
        fitted = getattr(model, "baselines", None) or {}
        if not fitted and getattr(model, "baseline", None) is not None:
            fitted = {model.baseline.name: model.baseline}
        if not fitted:
            without.append(target.name)
        for name, baseline in fitted.items():
            columns[f"{target.score_column}_baseline_{name}"] = np.asarray(
                baseline.predict(frame, target.problem), dtype=float
            )
    return pd.DataFrame(columns, index=range(len(frame))), without
