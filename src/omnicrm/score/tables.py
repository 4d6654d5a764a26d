"""The output tables of a scoring run, built from what the models return (frames in, frames out).

* :func:`scores_long`: one model's predictions as rows of the long ``scores`` table;
* :func:`effects_long`: an effect model's per-customer effects as rows of the ``effects`` table;
* :func:`excluded_rows`: the ``excluded`` rows of one step, one per customer with the reason;
* :func:`population_reason`, :data:`NOT_YET_A_CUSTOMER`: the reasons a customer is not scored;
* :func:`nba_excluded`: the next-best-action step's per-candidate drops reduced to one reason per
  customer who got no action.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from omnicrm import schema
from omnicrm.store.outputs import conform

#: the reason of every step for a customer first seen on or after ``as_of``: no history to score from
NOT_YET_A_CUSTOMER = "first seen on or after as_of: no history before it"


def scores_long(
    ids: np.ndarray,
    predictions: pd.DataFrame,
    *,
    as_of: pd.Timestamp,
    task: str,
    target: str,
    score_column: str,
    model: str,
    version: str,
    run_id: str,
) -> pd.DataFrame:
    """The long ``scores`` rows of one target's model: one row per customer and predicted column.

    Parameters
    ----------
    ids : ndarray
        ``customer_id`` of each row of ``predictions``, in order.
    predictions : DataFrame
        What the model's ``predict_frame`` returned: its score column, then any extra columns
        (next_purchase's expected days).
    as_of : Timestamp
    task, target : str
        The task config's name and the target's name.
    score_column : str
        The target's score column; it comes first, extra columns after it.
    model, version, run_id : str
        The registered model, its version and the MLflow run that logged it.

    Returns
    -------
    DataFrame
        The ``scores`` contract columns, then ``output`` (the predicted column's name) and ``run_id``.
    """
    columns = [score_column, *[c for c in predictions.columns if c != score_column]]
    n = len(ids)
    values = np.concatenate([predictions[c].to_numpy(dtype="float64") for c in columns]) if n else np.array([])
    frame = pd.DataFrame(
        {
            "customer_id": np.tile(np.asarray(ids, dtype=object), len(columns)),
            "as_of": as_of,
            "task": task,
            "target": target,
            "score": values,
            "model": model,
            "version": str(version),
            "output": np.repeat(np.asarray(columns, dtype=object), n),
            "run_id": run_id,
        }
    )
    frame["as_of"] = frame["as_of"].astype("datetime64[us]")
    return frame[[*schema.output_columns(schema.SCORES), "output", "run_id"]]


def effects_long(ids: np.ndarray, actions: list[str], outcome: str, effect: np.ndarray) -> pd.DataFrame:
    """The ``effects`` output table: one row per customer and action, customers in input order."""
    frame = pd.DataFrame(
        {
            "customer_id": np.repeat(ids, len(actions)),
            "action": np.tile(np.asarray(actions, dtype=object), len(ids)),
            "outcome": outcome,
            "effect": effect.reshape(-1),
        }
    )
    return conform(frame, schema.EFFECTS)


def excluded_rows(ids: Sequence[str] | np.ndarray | pd.Series, step: str, reasons: str | pd.Series) -> pd.DataFrame:
    """``excluded`` rows of ``step``: one per customer in ``ids``, with one reason or a reason each."""
    ids = np.asarray(ids, dtype=object)
    reason = np.asarray(reasons, dtype=object) if isinstance(reasons, pd.Series) else np.full(len(ids), reasons, object)
    return pd.DataFrame({"customer_id": ids, "step": step, "reason": reason})[schema.output_columns(schema.EXCLUDED)]


def population_reason(task: str, active_days: int, min_purchases: int, consent: str | None) -> str:
    """Why a customer known at ``as_of`` is outside a task's population (its rule in words)."""
    bought = "no purchase" if min_purchases == 1 else f"fewer than {min_purchases} purchases"
    why = f"{bought} in the {active_days} days before as_of"
    if consent:
        why += f", or no {consent} consent"
    return f"not in the {task} population: {why}"


def nba_excluded(dropped: pd.DataFrame, sent: Sequence[str] | np.ndarray) -> pd.DataFrame:
    """One reason per customer of the next-best-action population who was sent no action.

    Parameters
    ----------
    dropped : DataFrame
        The next-best-action step's excluded table: one row per dropped candidate (customer,
        action, channel) or customer, with its ``step`` (eligibility, consent, allocation, ...) and
        ``reason``.
    sent : array of str
        Customers who were sent an action: their dropped alternatives are not reasons.

    Returns
    -------
    DataFrame
        ``customer_id, reason``: the distinct ``<step>: <reason>`` of each customer, sorted and
        joined by ``; `` (customers sorted by id).
    """
    rest = dropped[~dropped["customer_id"].isin(set(sent))]
    if rest.empty:
        return pd.DataFrame({"customer_id": pd.Series(dtype=object), "reason": pd.Series(dtype=object)})
    text = rest["step"].astype(str) + ": " + rest["reason"].astype(str)
    pairs = pd.DataFrame({"customer_id": rest["customer_id"].to_numpy(), "reason": text.to_numpy()})
    pairs = pairs.drop_duplicates().sort_values(["customer_id", "reason"])
    return pairs.groupby("customer_id", sort=True)["reason"].agg("; ".join).reset_index()
