"""Explanations: global (SHAP summary plot, importance) and per-customer top reasons.

Exact per-row contributions cost about 400x a plain prediction (DESIGN.md: 2.2 ms/row for a
200-tree, 63-leaf model), so global pictures use a sample and per-customer reasons are computed only
for the rows asked for (``omnicrm predict --reasons``). Contributions are LightGBM's ``pred_contrib``
(TreeSHAP; identical to SHAP's TreeExplainer, library notes §5) in raw-score units: log-odds for
classifiers, log-scale for Tweedie.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from omnicrm.tasks.model import TaskModel


def importance(model: TaskModel, frame: pd.DataFrame, sample: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean |SHAP| on a sample next to LightGBM's split gain, most important first."""
    rows = frame.sample(min(sample, len(frame)), random_state=seed) if len(frame) > sample else frame
    contrib = model.contributions(rows)
    gain = model.estimator.booster_.feature_importance(importance_type="gain")
    out = pd.DataFrame(
        {
            "feature": model.encoding.features,
            "mean_abs_shap": contrib.abs().mean().to_numpy(),
            "gain_share": gain / max(gain.sum(), 1e-12),
        }
    )
    return out.sort_values("mean_abs_shap", ascending=False, ignore_index=True)


def shap_summary_figure(model: TaskModel, frame: pd.DataFrame, title: str, sample: int = 2000, seed: int = 0):  # noqa: ANN201
    """SHAP's beeswarm summary plot on a sample (a matplotlib Figure)."""
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shap's import warns about matplotlib colormap API changes
        import shap

    rows = frame.sample(min(sample, len(frame)), random_state=seed) if len(frame) > sample else frame
    X = model.encoding.transform(rows)
    contrib = model.contributions(rows).to_numpy()
    shown = X.copy()
    for c in model.encoding.categories:  # the plot colours by value: show category codes
        shown[c] = shown[c].cat.codes.astype(float)
    fig = plt.figure(figsize=(9, 7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shap.summary_plot(contrib, shown, show=False, max_display=20, plot_size=None)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def top_reasons(model: TaskModel, frame: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    """For each row, the ``n`` features that push its score up the most: feature, value, contribution.

    Returns one row per input row with columns ``reason_<i>_feature``, ``reason_<i>_value`` (as text),
    ``reason_<i>_contribution`` (raw-score units), in the input's order.
    """
    contrib = model.contributions(frame)
    vals = contrib.to_numpy()
    order = np.argsort(-vals, axis=1)[:, :n]
    feats = np.asarray(model.encoding.features)
    raw = frame[model.encoding.features].astype("object").to_numpy()
    idx = np.arange(len(frame))[:, None]
    out = {}
    for i in range(min(n, len(feats))):
        col = order[:, i]
        out[f"reason_{i + 1}_feature"] = feats[col]
        out[f"reason_{i + 1}_value"] = [_fmt(v) for v in raw[idx[:, 0], col]]
        out[f"reason_{i + 1}_contribution"] = vals[idx[:, 0], col]
    return pd.DataFrame(out)


def _fmt(v: object) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "missing"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
