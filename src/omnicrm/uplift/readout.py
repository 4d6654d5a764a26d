"""Campaign readout as an A/B test: each action's average effect against the shared control.

Per campaign, action and outcome (and optionally per segment): group sizes and means, the
difference in means with its unpooled (Welch) standard error ``sqrt(s_t^2 / n_t + s_c^2 / n_c)``,
a 95% confidence interval from Student's t with Welch-Satterthwaite degrees of freedom, a two-sided
p-value, and the minimum detectable effect at the observed group sizes,
``MDE = (z_{0.975} + z_{0.80}) * SE`` (two-sided 5% test, 80% power; e.g. Kohavi, Tang & Xu 2020,
"Trustworthy Online Controlled Experiments", ch. 17).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

Z_ALPHA = stats.norm.ppf(0.975)
Z_POWER = stats.norm.ppf(0.80)


def welch_ate(y_t: np.ndarray, y_c: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Difference in means of treated and control with Welch's standard error and interval."""
    y_t, y_c = np.asarray(y_t, float), np.asarray(y_c, float)
    n_t, n_c = y_t.size, y_c.size
    if n_t < 2 or n_c < 2:
        nan = float("nan")
        return {
            "n_t": n_t,
            "n_c": n_c,
            "mean_t": nan,
            "mean_c": nan,
            "ate": nan,
            "se": nan,
            "ci_low": nan,
            "ci_high": nan,
            "p_value": nan,
            "mde": nan,
            "relative_lift": nan,
        }
    v_t, v_c = y_t.var(ddof=1) / n_t, y_c.var(ddof=1) / n_c
    se = float(np.sqrt(v_t + v_c))
    ate = float(y_t.mean() - y_c.mean())
    # Welch-Satterthwaite degrees of freedom (large groups: the normal interval)
    denom = v_t**2 / (n_t - 1) + v_c**2 / (n_c - 1)
    df = (v_t + v_c) ** 2 / denom if denom > 0 else float("inf")
    q = stats.t.ppf(0.5 + level / 2, df) if np.isfinite(df) else stats.norm.ppf(0.5 + level / 2)
    p = 2 * stats.t.sf(abs(ate) / se, df) if se > 0 else float("nan")
    mean_c = float(y_c.mean())
    return {
        "n_t": n_t,
        "n_c": n_c,
        "mean_t": float(y_t.mean()),
        "mean_c": mean_c,
        "ate": ate,
        "se": se,
        "ci_low": ate - q * se,
        "ci_high": ate + q * se,
        "p_value": float(p),
        "mde": float((Z_ALPHA + Z_POWER) * se),
        "relative_lift": ate / mean_c if mean_c != 0 else float("nan"),
    }


def readout(
    frame: pd.DataFrame,
    treatment: str,
    control: object,
    outcomes: list[str],
    by: list[str] | None = None,
) -> pd.DataFrame:
    """One row per (groups in ``by``, action, outcome): the A/B figures of :func:`welch_ate`.

    Parameters
    ----------
    frame
        One row per exposed unit with the treatment column, the outcome columns and the ``by`` columns.
    treatment, control
        The arm column and the label of the shared control.
    outcomes
        Outcome columns to read out.
    by
        Grouping columns (campaign, segment); the control of the same group is the comparison.
    """
    by = list(by or [])
    rows = []
    groups = frame.groupby(by, sort=True, observed=True) if by else [((), frame)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        arm = part[treatment].to_numpy(dtype=object)
        ctrl = arm == control
        for action in sorted({a for a in arm.tolist() if a != control}, key=str):
            treated = arm == action
            for outcome in outcomes:
                y = part[outcome].to_numpy(float)
                rows.append(
                    {
                        **dict(zip(by, key, strict=True)),
                        "action": action,
                        "outcome": outcome,
                        **welch_ate(y[treated], y[ctrl]),
                    }
                )
    return pd.DataFrame(rows)
