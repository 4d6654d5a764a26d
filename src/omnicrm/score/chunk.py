"""One chunk of a scoring run: every model applied to the chunk's customers (frames in, rows out).

Both engines of ``omnicrm score`` call :func:`score_chunk` with the same inputs, so they give the
same rows: the DuckDB engine (:mod:`omnicrm.pipeline.score`) in a loop over chunks read from its
temporary tables, the Spark engine (:mod:`omnicrm.pipeline.score_spark`) inside Spark's
``applyInPandas``, once per chunk, on the executors. What differs is where the inputs come from (a
:class:`ChunkReader`) and where the rows go (``write``, a ledger and a clock given by the caller).

For every task, the task's population in the chunk is scored by each registered target model and
the rest are excluded with the population rule in words; the recommender lists products from the
chunk's purchases; each effect model scores every customer with history. Every customer of every
step is scored or excluded with a reason (:class:`~omnicrm.score.accounting.Ledger`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import pandas as pd

from omnicrm import schema
from omnicrm.score import drift as dr
from omnicrm.score.accounting import Ledger
from omnicrm.score.config import ScoreSetup
from omnicrm.score.tables import NOT_YET_A_CUSTOMER, effects_long, excluded_rows, population_reason, scores_long

__all__ = ["ChunkReader", "Model", "score_chunk"]


@dataclass
class Model:
    """A registered model a scoring run scores with."""

    kind: str  # task | recommender | effects
    name: str
    version: str
    run_id: str
    ref: str
    obj: Any
    task: str = ""
    target: Any = None  # the task's Target
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def entry(self) -> dict[str, Any]:
        """The manifest's record of the model."""
        out = {"name": self.name, "version": self.version, "run_id": self.run_id, "ref": self.ref, "kind": self.kind}
        if self.task:
            out |= {"task": self.task, "target": self.target.name}
        out["training_ranges"] = len(self.ranges)
        return out


class ChunkReader(Protocol):
    """Where a chunk's per-step inputs come from (read inside the step, so the step's clock counts it)."""

    def population(self, i: int) -> pd.DataFrame:
        """``customer_id`` of the chunk's customers in task ``i``'s population."""

    def inputs(self, i: int) -> pd.DataFrame:
        """Task ``i``'s extra inputs (``customer_id`` and the task's extra columns) of the chunk."""

    def purchases(self, ids: np.ndarray) -> pd.DataFrame:
        """Purchase lines before ``as_of`` of the chunk's customers ``ids`` (sorted): what a recommender reads."""


#: ``write(table, frame, rows_in)``: append ``frame`` to output ``table``, ``rows_in`` customers having entered
Write = Callable[[str, pd.DataFrame, int], None]


def score_chunk(
    setup: ScoreSetup,
    as_of: datetime,
    models: list[Model],
    ids_frame: pd.DataFrame,
    feats: pd.DataFrame,
    consent: pd.DataFrame,
    reader: ChunkReader,
    *,
    write: Write,
    ledger: Ledger,
    step: Callable[[str], AbstractContextManager[Any]],
    outside: dict[tuple[str, str], list[int]],
) -> None:
    """Score one chunk with every model; hand the rows to ``write``; account for every customer.

    Parameters
    ----------
    setup : ScoreSetup
        The scoring config and the configs it names.
    as_of : datetime
    models : list of Model
        Every loaded model (tasks, recommender, effects).
    ids_frame : DataFrame
        The chunk's customers (``customer_id``, sorted; ``first_seen``).
    feats : DataFrame
        The feature snapshot of the chunk's customers with history before ``as_of`` (by id, with
        :func:`~omnicrm.features.snapshot.feature_dtypes`).
    consent : DataFrame
        ``customer_id`` and the consent columns of the chunk's customers.
    reader : ChunkReader
        The populations, extra inputs and purchases of the chunk.
    write : callable
        ``write(table, frame, rows_in)``.
    ledger : Ledger
        Checks and counts each step's customers (raises :class:`~omnicrm.score.accounting.AccountingError`).
    step : callable
        ``step(name)``: a context manager timing the block as step ``name``; yields a record with
        a ``rows`` attribute (:meth:`omnicrm.score.manifest.StepClock.step`).
    outside : dict
        ``{(model, feature): [rows outside the training range, rows scored]}``, added to.
    """
    cfg = setup.config
    as_of_ts = pd.Timestamp(as_of).as_unit("us")
    by_task: dict[str, list[Model]] = {}
    for m in models:
        if m.kind == "task":
            by_task.setdefault(m.task, []).append(m)
    recommender = next((m for m in models if m.kind == "recommender"), None)
    effect_models = [m for m in models if m.kind == "effects"]

    def count_outside(m: Model, frame: pd.DataFrame) -> None:
        for feature, n_out in dr.out_of_range(frame, m.ranges).items():
            acc = outside.setdefault((m.name, feature), [0, 0])
            acc[0] += n_out
            acc[1] += len(frame)

    ids = ids_frame["customer_id"].to_numpy(dtype=object)
    known = pd.Index(feats["customer_id"].astype(object), dtype=object)
    new = ~pd.Index(ids, dtype=object).isin(known)

    for i, tcfg in enumerate(setup.tasks):
        name = f"scores:{tcfg.name}"
        with step(name) as st:
            pop = reader.population(i)
            inputs = reader.inputs(i)
            frame = feats.merge(pop, on="customer_id", how="inner")
            frame = frame.merge(consent, on="customer_id", how="left").merge(inputs, on="customer_id", how="left")
            frame = frame.sort_values("customer_id", kind="stable").reset_index(drop=True)
            fids = frame["customer_id"].to_numpy(dtype=object)
            for m in by_task.get(tcfg.name, []):
                pred = m.obj.predict_frame(frame)
                rows = scores_long(
                    fids,
                    pred,
                    as_of=as_of_ts,
                    task=tcfg.name,
                    target=m.target.name,
                    score_column=m.target.score_column,
                    model=m.name,
                    version=m.version,
                    run_id=m.run_id,
                )
                write(schema.SCORES, rows, len(frame))
                st.rows += len(rows)
                count_outside(m, frame)
            rest = ~pd.Index(ids, dtype=object).isin(pd.Index(fids, dtype=object))
            pop_rule = tcfg.task.population
            reason = population_reason(tcfg.name, pop_rule.active_days, pop_rule.min_purchases, pop_rule.consent)
            why = pd.Series(np.where(new[rest], NOT_YET_A_CUSTOMER, reason), dtype=object)
            excl = excluded_rows(ids[rest], name, why)
            ledger.add(name, ids, fids, excl)
            write(schema.EXCLUDED, excl, len(excl))

    if recommender is not None:
        name = "recommendations"
        with step(name) as st:
            purchases = reader.purchases(ids)
            rec = cfg.recommender
            if purchases.empty:  # a chunk of customers without purchases: nothing to recommend from
                recs = pd.DataFrame({c: pd.Series(dtype=object) for c in schema.output_columns(name)})
            else:
                recs = recommender.obj.predict_frame(
                    purchases, as_of=as_of, k=rec.k, exclude_purchased=rec.exclude_purchased
                )
            write(schema.RECOMMENDATIONS, recs, int(purchases["customer_id"].nunique()))
            st.rows += len(recs)
            got = pd.Index(recs["customer_id"].astype(object).unique(), dtype=object)
            rest = ~pd.Index(ids, dtype=object).isin(got)
            bought = pd.Index(ids, dtype=object).isin(
                pd.Index(purchases["customer_id"].astype(object).unique(), dtype=object)
            )
            why = np.where(
                new,
                NOT_YET_A_CUSTOMER,
                np.where(
                    bought,
                    "no product left to recommend (every product already bought or unknown to the model)",
                    "no purchase before as_of",
                ),
            )
            excl = excluded_rows(ids[rest], name, pd.Series(why[rest], dtype=object))
            ledger.add(name, ids, got.to_numpy(), excl)
            write(schema.EXCLUDED, excl, len(excl))

    for m in effect_models:
        name = f"effects:{m.name.removeprefix('omnicrm-')}"
        with step(name) as st:
            if len(feats):
                tau = m.obj.predict_effect(feats)
                long = effects_long(feats["customer_id"].to_numpy(dtype=object), m.obj.actions, m.obj.outcome, tau)
                long["model"], long["version"] = m.name, m.version
                write(schema.EFFECTS, long, len(feats))
                st.rows += len(long)
                count_outside(m, feats)
            excl = excluded_rows(ids[new], name, NOT_YET_A_CUSTOMER)
            ledger.add(name, ids, known.to_numpy(), excl)
            write(schema.EXCLUDED, excl, len(excl))
