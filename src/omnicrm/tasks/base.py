"""The contract every prediction task follows; one module per task implements it.

A task is the ``task:`` section of a task config *and* what that section means: a pydantic model
(strict, like every config) whose fields are the task's settings and whose methods say how its
frames are labelled, what is fitted, and how it is judged. Each task lives in its own module
(:mod:`~omnicrm.tasks.churn`, :mod:`~omnicrm.tasks.next_purchase`, :mod:`~omnicrm.tasks.clv`,
:mod:`~omnicrm.tasks.propensity`) and is listed once in :data:`omnicrm.tasks.registry.TASKS`, keyed
by the ``task.kind`` a config names. Nothing outside the task modules asks which task it is.

A subclass of :class:`Task` declares
    ``name`` (class attribute)
        The registry key, the ``kind`` in configs, the ``omnicrm-<name>`` of registered models.
    its settings (pydantic fields)
        Beyond the shared ``kind``, ``horizon_days`` and ``population``; checked by its own
        validators, so a wrong or foreign key is an error naming the file and key.
    :meth:`Task.declared_targets` (required)
        One :class:`Target` per model the task trains: its name, label column, problem (``binary``
        or ``regression``), score column, optional consent filter and registered-name suffix. A
        target marked ``optional`` is trained only when its label column exists in the frame
        (clv's margin: only when products carry one).
    :meth:`Task.add_labels` (required)
        Adds the label columns to a frame at cutoff ``T``, reading only events in ``[T, T+h)``
        (:meth:`Task.label_days` says how far; the time-split guard and the store-end check use it).
        Labels are named ``y_<...>``; any other column it adds is listed in ``label_columns``, so
        that no label ever becomes a model input.
    ``baselines`` (class attribute)
        The default baselines (names of :class:`omnicrm.tasks.baselines.Baseline`); a config may
        list others.

and may override, where the base class's default does not fit
    :meth:`Task.population_sql`
        Who is scored at ``T`` (default: the shared active-customer population, ``ts < T``).
    :meth:`Task.add_inputs`
        Extra point-in-time inputs beyond the feature snapshot (clv: BG/NBD outputs), ``ts < T``.
    :meth:`Task.primary_metric` and :meth:`Task.metrics`
        How a target is judged (default: ROC-AUC with the binary metrics, normalised Gini with the
        regression ones).
    :meth:`Task.objective_params`
        LightGBM objective settings per target (default: none for binary, L2 for regression).
    :meth:`Task.fit_baselines`
        Each baseline fitted on the training frame (default: every named baseline as it is); the
        fitted baselines score the evaluation frame (:meth:`Task.baseline_scores`) and the best one
        is registered beside the model (:class:`omnicrm.tasks.model.BaselineModel`).
    :meth:`Task.fit_extra`, :meth:`Task.extra_metrics`, :meth:`Task.extra_columns`, :meth:`Task.extra_summary`
        An optional second model fitted next to a target's LightGBM on the same features, with its
        own output columns and metrics (next_purchase: the censoring-aware timing model).
    ``multi_target`` (class attribute)
        Whether the task trains several registered models, so per-target outputs (reasons) carry
        the target's name.
    ``horizon_scaling`` (class attribute)
        How ``omnicrm predict --horizon`` carries a score over the label window to another horizon
        (:func:`omnicrm.tasks.predict.extend_horizon`): ``"amount"`` (an expected amount: scaled by
        the classic model's ratio of expected purchases), ``"probability"`` (of at least one purchase:
        its cumulative hazard scaled by that ratio), or ``None`` (not extrapolated: ``--horizon`` is
        refused).

:meth:`Task.output_columns` is what a fitted target's model predicts: its score column, then the
extra model's columns. The fitting, evaluation and logging around this contract are shared
(:mod:`omnicrm.tasks.train`, :mod:`omnicrm.pipeline.train`); one test runs every registered task
through the same checks (``tests/contracts/test_task_contract.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from omnicrm.config import StrictModel
from omnicrm.tasks import labels
from omnicrm.tasks import metrics as mt
from omnicrm.tasks.baselines import Baseline

if TYPE_CHECKING:
    import duckdb

    from omnicrm.tasks.model import Encoding, TaskModel

#: what a target's model predicts: a probability or a non-negative amount
Problem = Literal["binary", "regression"]
#: the metric a target is judged by (higher is better), per problem
PRIMARY: dict[str, str] = {"binary": "roc_auc", "regression": "normalised_gini"}


def score_metrics(problem: str, y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """The evaluation metrics of one score against its labels.

    Parameters
    ----------
    problem : {"binary", "regression"}
        Binary targets get ROC-AUC, PR-AUC, log loss, Brier and lift; regression targets Gini,
        capture, Spearman and errors (:mod:`omnicrm.tasks.metrics`).
    y, score : ndarray
        Labels and scores, one per row.

    Returns
    -------
    dict of str to float
    """
    return mt.binary_metrics(y, score) if problem == "binary" else mt.clv_metrics(y, score)


@dataclass(frozen=True)
class Target:
    """One model of a task.

    Attributes
    ----------
    name : str
        The target's name (``churn``, ``spend``, a propensity target's name).
    label : str
        The frame column holding its label (set by :meth:`Task.add_labels`).
    problem : {"binary", "regression"}
        Classifier (scores are calibrated probabilities) or regressor (scores are clipped at 0).
    score_column : str
        The column of its score in predictions (``p_churn``, ``pred_spend``, ...).
    consent : {"email", "sms", "push"}, optional
        Train and evaluate only on customers with this consent (e-mail targets).
    registry_suffix : str, optional
        Registered as ``omnicrm-<task>-<suffix>``; ``None`` means plain ``omnicrm-<task>``.
    optional : bool
        Trained only when :attr:`label` is a column of the frame.
    """

    name: str
    label: str
    problem: Problem
    score_column: str
    consent: str | None = None
    registry_suffix: str | None = None
    optional: bool = False

    def rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``frame`` this target is trained and judged on (its consent filter).

        Parameters
        ----------
        frame : DataFrame
            A task frame with the ``consent_*`` columns.

        Returns
        -------
        DataFrame
            ``frame`` itself without a consent filter, else the consenting rows, re-indexed.
        """
        if self.consent:
            return frame[frame[f"consent_{self.consent}"].fillna(False).astype(bool)].reset_index(drop=True)
        return frame


class Population(StrictModel):
    """Who is scored at a cutoff: customers with a purchase in the ``active_days`` before it."""

    active_days: int = Field(365, gt=0)
    min_purchases: int = Field(1, ge=1)
    consent: Literal["email", "sms", "push"] | None = None  # also require this consent (e.g. e-mail targets)


class Task(StrictModel):
    """Base of every task: the shared settings and the defaults most tasks use (see the module docstring).

    Attributes
    ----------
    kind : str
        The task's registry name (the config's ``task.kind``).
    horizon_days : int
        The label window ``[T, T+horizon)``.
    population : Population
        Who is scored at a cutoff.
    """

    kind: str
    horizon_days: int = Field(gt=0)
    population: Population = Population()

    #: the registry key and ``kind`` of this task (set by every subclass)
    name: ClassVar[str] = ""
    #: default baselines, reported next to the model (a config's ``baselines`` list replaces them)
    baselines: ClassVar[tuple[str, ...]] = ("logistic",)
    #: several registered models per config: per-target outputs (reasons) are prefixed by the target
    multi_target: ClassVar[bool] = False
    #: label-side columns :meth:`add_labels` adds besides the targets' ``y_*`` labels (never model inputs)
    label_columns: ClassVar[tuple[str, ...]] = ()
    #: how a score over the label window is carried to ``predict --horizon`` (see the module docstring)
    horizon_scaling: ClassVar[Literal["amount", "probability"] | None] = None

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if cls.name:
            if value != cls.name:
                raise ValueError(f"must be {cls.name!r} for the {cls.__name__} task; got {value!r}")
            return value
        from omnicrm.tasks.registry import TASKS, unknown_kind

        if value not in TASKS:
            raise ValueError(unknown_kind(value))
        return value

    # --- what is predicted ---------------------------------------------------------------------

    def declared_targets(self) -> list[Target]:
        """Every target this task can train, in training order (each subclass declares its own).

        Returns
        -------
        list of Target
        """
        raise NotImplementedError(f"{type(self).__name__} must declare its targets")

    def targets_of(self, frame: pd.DataFrame | None = None) -> list[Target]:
        """The targets ``frame`` supports: every declared one, optional ones only with their label.

        Parameters
        ----------
        frame : DataFrame, optional
            A labelled frame; without one (or without labels: scoring) optional targets are left out.

        Returns
        -------
        list of Target
        """
        columns = set() if frame is None else set(frame.columns)
        return [t for t in self.declared_targets() if not t.optional or t.label in columns]

    @classmethod
    def score_column_for(cls, target: str) -> str:
        """The score column of a target of this task (default ``p_<target>``).

        Parameters
        ----------
        target : str
            The target's name.

        Returns
        -------
        str
        """
        return f"p_{target}"

    def output_columns(self, target: Target) -> list[str]:
        """The columns a fitted target's model predicts, in order: its score, then the extra model's.

        Parameters
        ----------
        target : Target

        Returns
        -------
        list of str
        """
        return [target.score_column, *self.extra_columns(target)]

    # --- frames --------------------------------------------------------------------------------

    def label_days(self) -> int:
        """How far after a cutoff the labels read (the time-split guard and the store-end check use it).

        Returns
        -------
        int
        """
        return self.horizon_days

    def population_sql(self, cutoff: datetime) -> str:
        """SQL giving the ``customer_id`` of everyone scored at ``cutoff`` (reads only ``ts < cutoff``).

        Parameters
        ----------
        cutoff : datetime
            ``T``, naive UTC.

        Returns
        -------
        str
        """
        return labels.population_sql(cutoff, self.population)

    def add_inputs(self, con: duckdb.DuckDBPyConnection, cutoff: datetime, frame: pd.DataFrame) -> pd.DataFrame:
        """Extra point-in-time model inputs beyond the feature snapshot (default: none).

        Parameters
        ----------
        con : duckdb.DuckDBPyConnection
            The store.
        cutoff : datetime
            ``T``; inputs read only ``ts < T``.
        frame : DataFrame
            Population rows with features at ``T``.

        Returns
        -------
        DataFrame
            ``frame`` with any added columns, rows in the same order.
        """
        return frame

    def add_labels(self, con: duckdb.DuckDBPyConnection, cutoff: datetime, frame: pd.DataFrame) -> pd.DataFrame:
        """Add every target's label column at ``cutoff``, reading only ``[T, T + label_days)``.

        Parameters
        ----------
        con : duckdb.DuckDBPyConnection
            The store.
        cutoff : datetime
            ``T``.
        frame : DataFrame
            Population rows with their inputs at ``T``.

        Returns
        -------
        DataFrame
            ``frame`` with the label columns (named by the targets' ``label``), rows in the same order.
        """
        raise NotImplementedError(f"{type(self).__name__} must add its labels")

    # --- fitting and judging -------------------------------------------------------------------

    def primary_metric(self, target: Target) -> str:
        """The metric a target is judged and tuned by (higher is better).

        Parameters
        ----------
        target : Target

        Returns
        -------
        str
            A key of :meth:`metrics`' result.
        """
        return PRIMARY[target.problem]

    def metrics(self, target: Target, y: np.ndarray, score: np.ndarray) -> dict[str, float]:
        """Evaluation metrics of one score of ``target`` (model or baseline).

        Parameters
        ----------
        target : Target
        y, score : ndarray
            Labels and scores, one per row.

        Returns
        -------
        dict of str to float
        """
        return score_metrics(target.problem, y, score)

    def objective_params(self, target: Target) -> dict[str, Any]:
        """LightGBM objective settings of ``target``, merged over the model config's params.

        Parameters
        ----------
        target : Target

        Returns
        -------
        dict
            Default: nothing for binary targets (LightGBM's log loss), L2 for regression targets.
        """
        return {} if target.problem == "binary" else {"objective": "regression"}

    def fit_baselines(
        self, target: Target, names: Sequence[str], features: list[str], tr: pd.DataFrame
    ) -> dict[str, Baseline]:
        """Each baseline fitted on the training frame, ready to score any frame built the same way.

        Parameters
        ----------
        target : Target
        names : sequence of str
            Baseline names (:mod:`omnicrm.tasks.baselines`), in reporting order.
        features : list of str
            The model's feature columns (for the baselines that use all features).
        tr : DataFrame
            The target's training rows.

        Returns
        -------
        dict of str to Baseline
            Baseline name -> fitted baseline; a baseline that does not apply is left out.
        """
        out = {}
        for name in names:
            b = Baseline(name, features, horizon_days=self.horizon_days)
            out[name] = b.fit(tr, tr[target.label].to_numpy(), target.problem)
        return out

    def baseline_scores(
        self, target: Target, names: Sequence[str], features: list[str], tr: pd.DataFrame, ev: pd.DataFrame
    ) -> dict[str, np.ndarray]:
        """Each baseline's scores on the evaluation frame, fitted on the training frame (:meth:`fit_baselines`).

        Parameters
        ----------
        target : Target
        names : sequence of str
            Baseline names (:mod:`omnicrm.tasks.baselines`), in reporting order.
        features : list of str
            The model's feature columns (for the baselines that use all features).
        tr, ev : DataFrame
            The target's training and evaluation rows.

        Returns
        -------
        dict of str to ndarray
            Baseline name -> one score per row of ``ev``; a baseline that does not apply is left out.
        """
        fitted = self.fit_baselines(target, names, features, tr)
        return {name: b.predict(ev, target.problem) for name, b in fitted.items()}

    # --- an optional extra model ---------------------------------------------------------------

    def fit_extra(
        self,
        target: Target,
        encoding: Encoding,
        tr: pd.DataFrame,
        va: pd.DataFrame,
        params: dict[str, Any],
        early_stopping_rounds: int,
    ) -> tuple[Any, dict[str, Any]]:
        """Fit a second model next to ``target``'s LightGBM (default: none).

        Parameters
        ----------
        target : Target
        encoding : Encoding
            The target's fitted feature encoding.
        tr, va : DataFrame
            Training and validation rows (with labels).
        params : dict
            The target's LightGBM params (model config, objective, tuning override).
        early_stopping_rounds : int

        Returns
        -------
        model : object or None
            Stored as :attr:`TaskModel.extra`; its ``predict_frame(X_encoded)`` returns
            :meth:`extra_columns`.
        info : dict
            Logged with the run's params.
        """
        return None, {}

    def extra_columns(self, target: Target) -> list[str]:
        """The columns the extra model adds to predictions (default: none).

        Parameters
        ----------
        target : Target

        Returns
        -------
        list of str
        """
        return []

    def extra_metrics(
        self, target: Target, model: TaskModel, ev: pd.DataFrame
    ) -> dict[str, dict[str, dict[str, float]]]:
        """Metrics of the extra model on the evaluation frame (default: none).

        Parameters
        ----------
        target : Target
        model : TaskModel
            The fitted target, with its extra model.
        ev : DataFrame
            The evaluation rows.

        Returns
        -------
        dict
            ``{group: {score: {metric: value}}}``, logged as ``<group>.<score>.<metric>``
            (next_purchase: ``timing.model.concordance``, ``timing.baseline_gap.concordance``).
        """
        return {}

    def extra_summary(self, target: Target, extra: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
        """Rows the extra model adds to the summary table (default: none).

        Parameters
        ----------
        target : Target
        extra : dict
            What :meth:`extra_metrics` returned.

        Returns
        -------
        list of dict
            Each with ``target``, ``metric``, ``model``, ``best_baseline`` and ``baseline``.
        """
        return []
