"""The pure half of ``omnicrm predict``: score a frame with one fitted model per target, side by side.

The wiring (:mod:`omnicrm.pipeline.predict`) builds the scoring frame, loads the registered models
and writes the file; here the scores of each target's model are put next to each other, with each
customer's top reasons when asked (exact contributions, about 400x a prediction: only on request).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
