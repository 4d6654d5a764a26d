"""The registered model object and how it is fitted: LightGBM, early stopping, optional calibration.

:class:`TaskModel` is what MLflow stores (through :mod:`omnicrm.tracking`): it owns the feature
list and the categories seen in training, so scoring-time frames are encoded exactly as training
frames were, and its :meth:`TaskModel.predict_frame` returns named score columns.

Early stopping and calibration use the validation cutoff only. Calibration (``auto``) is kept only
when it lowers the log loss *out of sample*: each calibrator is fitted on one half of the
validation customers and scored on the other, both ways round; the winner is refitted on all of
the validation frame.

Expected days to the next purchase (``next_purchase``'s extra model) come from a discrete-time hazard model
(Singer & Willett): the horizon is cut into bins, each (customer, bin) still at risk is one row
whose label is "first purchase in this bin", a LightGBM classifier learns the hazard with the bin
as a feature, and the survival curve ``S(t) = prod(1 - h_k)`` gives the restricted mean time
``E[min(T, max)] = integral of S``. Customers who do not buy within the horizon are censored at it
and still contribute every bin they survived, so censoring is used, not dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from omnicrm import determinism
from omnicrm.lgbm_params import check_feature_params

DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 2000,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 50,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
    **determinism.LIGHTGBM,
}


def constant_columns(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """The ``columns`` holding one value in ``frame`` (missing counts as a value; all-missing is constant).

    A tree cannot split on such a column and a linear baseline gives it no weight, so it carries
    nothing the model could learn from; on a plain transaction log about 25 of the default features
    are constant (no channels, campaigns, surveys or categories). A column with one value and some
    missing ones is kept: whether it is missing may matter.

    Parameters
    ----------
    frame : DataFrame
        The training frame.
    columns : list of str
        Candidate feature columns of ``frame``.

    Returns
    -------
    list of str
        In the order of ``columns``.
    """
    return [c for c in columns if frame[c].nunique(dropna=False) <= 1]


@dataclass
class Encoding:
    """Feature order and the categories of each str column, fixed at training time.

    Attributes
    ----------
    features : list of str
        The model's inputs, in order.
    categories : dict of str to list of str
        The sorted training categories of each non-numeric input.
    dropped : tuple of str
        Candidate features left out because they were constant in the training frame
        (:func:`constant_columns`); empty for an encoding learnt before they were dropped.
    """

    features: list[str]
    categories: dict[str, list[str]]
    # a tuple with a class-level default, so an encoding pickled before this attribute unpickles with ()
    dropped: tuple[str, ...] = ()

    @classmethod
    def learn(cls, frame: pd.DataFrame, features: list[str], drop_constant: bool = True) -> Encoding:
        """The feature order as given, without constant columns, and the sorted categories of every non-numeric one.

        Parameters
        ----------
        frame : DataFrame
            The training frame.
        features : list of str
            Candidate feature columns (:func:`omnicrm.tasks.frames.model_columns`).
        drop_constant : bool
            Leave out the columns constant in ``frame`` (recorded in :attr:`dropped`).

        Returns
        -------
        Encoding
        """
        dropped = constant_columns(frame, features) if drop_constant else []
        kept = [c for c in features if c not in set(dropped)]
        cats = {}
        for c in kept:
            if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])):
                cats[c] = sorted(frame[c].dropna().astype(str).unique().tolist())
        return cls(kept, cats, tuple(dropped))

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's input: numeric columns as float, str columns as categoricals of the training categories."""
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            from omnicrm.errors import InputError

            raise InputError(f"scoring frame: missing feature column(s) {', '.join(missing)}")
        out = {}
        for c in self.features:
            if c in self.categories:
                # a category unseen in training is treated as missing (as LightGBM would)
                values = frame[c].astype("object")
                known = values.isin(self.categories[c])
                out[c] = pd.Categorical(values.where(known, None), categories=self.categories[c])
            else:
                out[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
        return pd.DataFrame(out, index=frame.index)


class Calibrator:
    """Isotonic or Platt (sigmoid) mapping of raw probabilities."""

    def __init__(self, method: str) -> None:
        self.method = method
        self._iso: IsotonicRegression | None = None
        self._lr: LogisticRegression | None = None

    def fit(self, p: np.ndarray, y: np.ndarray) -> Calibrator:
        """Learn the mapping from raw probabilities ``p`` to the outcomes ``y``."""
        if self.method == "isotonic":
            self._iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-6, y_max=1 - 1e-6).fit(p, y)
        else:
            self._lr = LogisticRegression(C=1e6).fit(_logit(p)[:, None], y)
        return self

    def transform(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities."""
        if self._iso is not None:
            return self._iso.predict(p)
        assert self._lr is not None
        return self._lr.predict_proba(_logit(p)[:, None])[:, 1]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def choose_calibration(p: np.ndarray, y: np.ndarray, mode: str, seed: int) -> tuple[Calibrator | None, dict]:
    """Pick a calibrator on validation data by 2-fold cross-fitting; ``None`` when none helps."""
    if mode == "none" or len(np.unique(y)) < 2:
        return None, {"calibration": "none"}
    rng = np.random.default_rng(seed)
    fold = rng.random(len(y)) < 0.5
    methods = ["isotonic", "sigmoid"] if mode == "auto" else [mode]
    raw = np.mean([_log_loss(y[~fold], p[~fold]), _log_loss(y[fold], p[fold])])
    scores = {}
    for m in methods:
        losses = []
        for a, b in ((fold, ~fold), (~fold, fold)):
            cal = Calibrator(m).fit(p[a], y[a])
            losses.append(_log_loss(y[b], cal.transform(p[b])))
        scores[m] = float(np.mean(losses))
    best = min(scores, key=scores.get)
    info = {"calibration_raw_logloss": float(raw), **{f"calibration_{m}_logloss": v for m, v in scores.items()}}
    if mode == "auto" and scores[best] >= raw:
        return None, info | {"calibration": "none"}
    return Calibrator(best).fit(p, y), info | {"calibration": best}


@dataclass
class Blend:
    """The model's score mixed with a fitted baseline's: ``weight * model + (1 - weight) * baseline``.

    On a small log a linear baseline extrapolates where the trees cannot (a customer silent for
    longer than any training customer was); mixing the two keeps the trees' interactions and the
    baseline's trend. The mix of two probabilities is a probability, of two amounts an amount.
    The baseline reads its own columns of the scored frame (run rate: ``spend_365d``; BG/NBD:
    ``btyd_clv``); they are model features unless constant in training.

    Attributes
    ----------
    baseline : Baseline
        Fitted on the model's training frame (:mod:`omnicrm.tasks.baselines`).
    weight : float
        The model's share, in ``(0, 1)``; chosen on the validation cutoff (:func:`choose_blend`).
    """

    baseline: Any
    weight: float

    @property
    def name(self) -> str:
        """The baseline's name."""
        return self.baseline.name

    def mix(self, score: np.ndarray, frame: pd.DataFrame, problem: str) -> np.ndarray:
        """The blended score of the rows of ``frame`` whose model score is ``score``."""
        base = np.asarray(self.baseline.predict(frame, problem), dtype=float)
        return self.weight * np.asarray(score, dtype=float) + (1.0 - self.weight) * base


def choose_blend(
    model_score: np.ndarray,
    baselines: dict[str, Any],
    frame: pd.DataFrame,
    y: np.ndarray,
    problem: str,
    metric: Callable[[np.ndarray, np.ndarray], float],
    steps: int = 10,
) -> tuple[Blend | None, dict[str, Any]]:
    """The blend of the model with one baseline that scores best on the validation frame, if any beats the model.

    Every baseline and every weight ``k / steps`` (``k = 1 .. steps - 1``) are tried; the pair with the
    highest ``metric`` wins, ties going to the larger model weight. ``None`` when no blend scores
    strictly above the model alone (weight 1): the model is then used as it is.

    Parameters
    ----------
    model_score : ndarray
        The model's scores of the validation rows (calibrated probabilities or amounts).
    baselines : dict of str to Baseline
        Fitted baselines by name (each scores ``frame``).
    frame : DataFrame
        The validation rows.
    y : ndarray
        Their labels.
    problem : {"binary", "regression"}
    metric : callable
        ``metric(y, score)``, higher is better (the target's primary metric).
    steps : int
        The weight grid's resolution.

    Returns
    -------
    blend : Blend or None
    info : dict
        ``blend`` (``"<baseline> <weight>"`` or ``"none"``) and ``blend_validation_gain`` (the
        metric's gain over the model alone on validation, 0 without a blend).
    """
    alone = metric(y, model_score)
    best: tuple[float, float, str] | None = None
    for name, baseline in baselines.items():
        base = np.asarray(baseline.predict(frame, problem), dtype=float)
        for k in range(steps - 1, 0, -1):  # larger model weights first: they win ties
            w = k / steps
            value = metric(y, w * model_score + (1 - w) * base)
            if not np.isnan(value) and (best is None or value > best[0]):
                best = (value, w, name)
    if best is None or not best[0] > alone:
        return None, {"blend": "none", "blend_validation_gain": 0.0}
    value, w, name = best
    return Blend(baselines[name], w), {"blend": f"{name} {w:g}", "blend_validation_gain": float(value - alone)}


def fit_lgbm(
    problem: str,
    X_tr: pd.DataFrame,
    y_tr: np.ndarray,
    X_va: pd.DataFrame,
    y_va: np.ndarray,
    params: dict[str, Any],
    early_stopping_rounds: int,
    callbacks: list | None = None,
) -> lgb.LGBMModel:
    """A seeded LightGBM (a classifier for ``problem="binary"``) fitted with early stopping on the validation frame."""
    # what refers to features by position, against these features: LightGBM 4.7 aborts the process
    # on some of them (omnicrm.lgbm_params)
    check_feature_params(
        params,
        [str(c) for c in X_tr.columns],
        {str(c) for c in X_tr.columns if isinstance(X_tr[c].dtype, pd.CategoricalDtype)},
        "model.params",
    )
    est_cls = lgb.LGBMClassifier if problem == "binary" else lgb.LGBMRegressor
    est = est_cls(**(DEFAULT_PARAMS | params))
    est.fit(
        X_tr,
        y_tr,
        eval_X=(X_va,),
        eval_y=(y_va,),
        eval_names=["valid"],
        callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False), lgb.log_evaluation(0), *(callbacks or [])],
    )
    return est


@dataclass
class HazardModel:
    """Discrete-time hazard of the first purchase after the cutoff (see module docstring)."""

    edges: list[float]
    estimator: Any = None

    @staticmethod
    def person_period(X: pd.DataFrame, duration: np.ndarray, event: np.ndarray, edges: list[float]):
        """(customer, bin) rows still at risk at the start of each bin, labelled by a purchase in it."""
        starts = np.asarray(edges[:-1], dtype=float)
        ends = np.asarray(edges[1:], dtype=float)
        at_risk = duration[:, None] >= starts[None, :]
        hit = (event[:, None] == 1) & (duration[:, None] >= starts[None, :]) & (duration[:, None] < ends[None, :])
        rows, bins = np.nonzero(at_risk)
        Xp = X.iloc[rows].reset_index(drop=True)
        Xp.insert(0, "bin_start", starts[bins])
        return Xp, hit[rows, bins].astype(np.int8)

    def survival(self, X: pd.DataFrame) -> np.ndarray:
        """``S`` at every edge (first column 1.0), shape ``(n, len(edges))``."""
        n, k = len(X), len(self.edges) - 1
        S = np.ones((n, k + 1))
        for b in range(k):
            Xb = X.copy()
            Xb.insert(0, "bin_start", float(self.edges[b]))
            h = self.estimator.predict_proba(Xb)[:, 1]
            S[:, b + 1] = S[:, b] * (1 - h)
        return S

    def expected_days(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Restricted mean ``E[min(T, max)]``, ``E[T | T < max]`` and ``P(T < max)`` (trapezoid rule)."""
        S = self.survival(X)
        e = np.asarray(self.edges, dtype=float)
        width = np.diff(e)
        rmst = ((S[:, :-1] + S[:, 1:]) / 2 * width).sum(axis=1)
        p_event = 1 - S[:, -1]
        # E[T | T < max] from E[min(T,max)] = E[T | T<max] P(T<max) + max (1 - P(T<max))
        cond = np.where(p_event > 1e-9, (rmst - e[-1] * S[:, -1]) / np.maximum(p_event, 1e-9), e[-1])
        return rmst, np.clip(cond, 0, e[-1]), p_event

    @staticmethod
    def columns(max_days: float) -> tuple[str, str, str]:
        """The output columns for a window of ``max_days``: expected days, if a purchase, P(purchase)."""
        return "expected_days", "expected_days_if_purchase", f"p_purchase_{int(max_days)}d"

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """:meth:`expected_days` as named columns (:meth:`columns`), one row per row of the encoded ``X``."""
        rmst, cond, p_event = self.expected_days(X)
        return pd.DataFrame(dict(zip(self.columns(self.edges[-1]), (rmst, cond, p_event), strict=True)))


@dataclass
class TaskModel:
    """One fitted target: encoding + LightGBM (+ calibrator, + an extra model). Registered in MLflow.

    Attributes
    ----------
    task, target : str
        The task's registry name and the target's name.
    problem : {"binary", "regression"}
    score_column : str
        The column of :meth:`predict_score` in :meth:`predict_frame` (the task declares it).
    encoding : Encoding
    estimator : LGBMModel
    calibrator : Calibrator, optional
    extra : object, optional
        A second model on the same encoded features whose ``predict_frame(X)`` adds columns
        (next_purchase: the :class:`HazardModel` behind ``expected_days``).
    meta : dict
        Evaluation cutoff and config name, for the registry.
    baselines : dict of str to Baseline
        Every baseline fitted on the model's training frame, by name, so ``omnicrm predict
        --baselines`` can export each one's score; empty for a model registered before they were kept.
    blend : Blend, optional
        A baseline mixed into the score (:func:`choose_blend`, ``model.blend: auto``);
        :meth:`contributions` explain the LightGBM part only.
    """

    task: str
    target: str
    problem: str  # binary | regression
    score_column: str
    encoding: Encoding
    estimator: Any
    calibrator: Calibrator | None = None
    extra: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, Any] = field(default_factory=dict)
    blend: Blend | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle, also a model registered before the task contract (it had ``kind``, ``timing``, no column)."""
        state = dict(state)
        state.setdefault("baselines", {})  # registered before the fitted baselines were kept
        if "kind" in state:
            state["problem"] = state.pop("kind")
        if "timing" in state:
            state["extra"] = state.pop("timing")
        if "score_column" not in state:
            from omnicrm.tasks.registry import TASKS

            state["score_column"] = TASKS[state["task"]].score_column_for(state["target"])
        self.__dict__.update(state)

    def predict_score(self, frame: pd.DataFrame) -> np.ndarray:
        """The target's score per row: a (calibrated) probability, or a prediction clipped at 0; blended if set."""
        X = self.encoding.transform(frame)
        if self.problem == "binary":
            p = self.estimator.predict_proba(X)[:, 1]
            score = self.calibrator.transform(p) if self.calibrator is not None else p
        else:
            score = np.clip(self.estimator.predict(X), 0, None)
        return score if self.blend is None else self.blend.mix(score, frame, self.problem)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Named score columns for each input row (the pyfunc output): the score, then the extra model's."""
        return _score_frame(self, frame)

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Exact per-row feature contributions (raw score units; LightGBM ``pred_contrib`` = TreeSHAP)."""
        X = self.encoding.transform(frame)
        contrib = self.estimator.booster_.predict(X, pred_contrib=True)
        return pd.DataFrame(contrib[:, :-1], columns=self.encoding.features, index=frame.index)


def _score_frame(model: TaskModel | BaselineModel, frame: pd.DataFrame) -> pd.DataFrame:
    """The score column, then the extra model's columns on the encoded frame (a registered version's output)."""
    out = pd.DataFrame({model.score_column: model.predict_score(frame)}, index=frame.index)
    if model.extra is not None:
        extra = model.extra.predict_frame(model.encoding.transform(frame))
        for column in extra.columns:
            out[column] = extra[column].to_numpy()
    return out.reset_index(drop=True)


@dataclass
class BaselineModel:
    """A fitted baseline registered as a model: scored like a :class:`TaskModel`, so it can be champion.

    ``omnicrm train`` registers the best baseline of each target beside the LightGBM candidate, and
    ``omnicrm promote`` ships it when it scores better (the gate: never ship worse than a baseline).
    The predict path needs only ``predict_score`` / ``predict_frame`` and the naming attributes.

    Attributes
    ----------
    task, target : str
        The task's registry name and the target's name.
    problem : {"binary", "regression"}
    score_column : str
        The column of :meth:`predict_score` in :meth:`predict_frame`.
    baseline : Baseline
        The fitted baseline (:mod:`omnicrm.tasks.baselines`), fitted on the candidate's training frame.
    encoding : Encoding
        The candidate's encoding: the frame columns the version is logged with, and the extra
        model's input.
    extra : object, optional
        The candidate's extra model (next_purchase: the timing model), carried over so a baseline
        champion predicts the same columns as a LightGBM one; the baseline replaces only the score.
    meta : dict
        Evaluation cutoff, config name and ``model_family`` (``baseline:<name>``).
    """

    task: str
    target: str
    problem: str
    score_column: str
    baseline: Any
    encoding: Encoding
    extra: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def model_family(self) -> str:
        """``baseline:<name>``, as the registered version is tagged."""
        return f"baseline:{self.baseline.name}"

    def predict_score(self, frame: pd.DataFrame) -> np.ndarray:
        """The baseline's score per row (a probability, or an amount clipped at 0)."""
        return np.asarray(self.baseline.predict(frame, self.problem), dtype=float)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Named score columns per input row: the baseline's score, then the carried extra model's columns."""
        return _score_frame(self, frame)

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Not available: a baseline has no per-customer feature contributions (always raises).

        Raises
        ------
        InputError
            Always; ``predict --reasons`` checks the registry first and says so before any work.
        """
        from omnicrm.errors import InputError

        raise InputError(
            f"{self.task}/{self.target}: the registered version is the baseline {self.baseline.name!r}, which has "
            "no per-customer reasons; predict without --reasons, or with a LightGBM version (--model candidate)"
        )
