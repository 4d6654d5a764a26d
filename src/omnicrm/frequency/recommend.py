"""Per customer and channel: the recommended cadence, its class and the expected gain of moving there.

The recommended cadence is the arm of highest estimated value among those not above the channel's
hard maximum; a customer without consent on the channel gets 0 (and the class ``no_consent``). The
class compares it with the customer's current cadence (sends on the channel in the last four weeks,
taken to the nearest arm on a log scale): ``saturated`` (recommended below the current),
``on_target`` or ``under_saturated`` (above). The expected gain is the estimated value of the
recommended cadence minus that of the current one, over the experiment's outcome window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from omnicrm.frequency.data import nearest_arm
from omnicrm.frequency.estimate import best_cadence

CLASSES = ("saturated", "on_target", "under_saturated")
NO_CONSENT = "no_consent"


def classify(recommended: np.ndarray, current_arm: np.ndarray) -> np.ndarray:
    """``saturated`` / ``on_target`` / ``under_saturated`` of a recommended cadence against the current one."""
    return np.where(
        recommended < current_arm, CLASSES[0], np.where(recommended == current_arm, CLASSES[1], CLASSES[2])
    ).astype(object)


def allowed_arms(arms: list[int], maximum: int, n: int) -> np.ndarray:
    """``(n, arms)``: which arms a customer may be given (never above the hard maximum)."""
    return np.broadcast_to(np.asarray(arms) <= maximum, (n, len(arms))).copy()


def contact_frequency(
    customers: pd.DataFrame,
    values: np.ndarray,
    arms: list[int],
    channel: str,
    maximum: int,
    min_gain: float = 0.0,
) -> pd.DataFrame:
    """The ``contact_frequency`` table (``omnicrm.schema.OUTPUTS``) and one ``value_<arm>`` column per arm.

    Parameters
    ----------
    customers
        ``customer_id``, ``consent`` (bool) and ``current_cadence`` (sends in the last four weeks).
    values
        ``(rows, arms)`` estimated value of each cadence (against any common reference).
    arms, channel, maximum
        The cadences, the channel and its hard maximum.
    min_gain
        The estimated gain needed to move a customer off their own current arm (a tie or a gain within
        the estimate's noise is no reason to change).

    Returns
    -------
    pandas.DataFrame
        ``customer_id, channel, current_cadence, recommended_cadence, class, expected_gain`` and the values.
    """
    n = len(customers)
    arms = sorted(arms)
    consent = customers["consent"].to_numpy(bool)
    current = customers["current_cadence"].to_numpy(float)
    current_arm = nearest_arm(current, arms)
    allowed = allowed_arms(arms, maximum, n) & consent[:, None]
    # each customer's own current arm is the one they stay on unless another gains more than min_gain
    rows = np.arange(n)
    col = {a: j for j, a in enumerate(arms)}
    own = np.asarray([col[a] for a in current_arm], dtype=int)
    bonus = np.zeros_like(values, dtype=float)
    if n:
        bonus[rows, own] = min_gain + 1e-12
    rec = best_cadence(values + bonus, arms, allowed)
    rec_value = values[rows, np.asarray([col.get(r, 0) for r in rec], dtype=int)] if n else np.zeros(0)
    cur_value = values[rows, np.asarray([col[a] for a in current_arm], dtype=int)] if n else np.zeros(0)
    klass = classify(rec, current_arm)
    klass[rec == 0] = NO_CONSENT
    out = pd.DataFrame(
        {
            "customer_id": customers["customer_id"].to_numpy(),
            "channel": channel,
            "current_cadence": current,
            "recommended_cadence": rec.astype(np.int64),
            "class": klass,
            "expected_gain": np.where(rec == 0, 0.0, rec_value - cur_value),
        }
    )
    for j, a in enumerate(arms):
        out[f"value_{a}"] = values[:, j]
    return out


def frequency_features(table: pd.DataFrame) -> pd.DataFrame:
    """One row per customer with ``<channel>_cadence``, ``<channel>_cadence_class`` and ``<channel>_cadence_gain``."""
    wide = table.pivot(index="customer_id", columns="channel", values=["recommended_cadence", "class", "expected_gain"])
    names = {"recommended_cadence": "cadence", "class": "cadence_class", "expected_gain": "cadence_gain"}
    wide.columns = [f"{ch}_{names[v]}" for v, ch in wide.columns]
    return wide.reset_index()
