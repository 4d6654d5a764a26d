"""Meta-learners of per-customer treatment effects with several actions against one shared control.

The contract every learner follows (scikit-learn style: ``__init__`` stores hyper-parameters as
given, ``fit`` validates and sets fitted state ending in ``_``)::

    learner.fit(X, treatment, y)          # treatment: one label per row, ``control`` marks the control
    effect = learner.predict_effect(X)    # ndarray (n_rows, n_actions), columns in ``learner.actions_``

``effect[:, j]`` estimates E[Y | X, action_j] - E[Y | X, control]. Outcomes may be binary (visit,
conversion: the base model is a classifier and effects are differences of probabilities) or
continuous (spend, margin: a regressor). The base model is any scikit-learn-compatible estimator,
cloned for every sub-model; the default is a small, seeded, deterministic LightGBM.

In a randomised experiment the propensity of each arm is known by design (the share of the arm), so
the X- and DR-learners use the arm shares of the training data instead of a fitted propensity model.

References: Künzel, Sekhon, Bickel & Yu (2019), "Metalearners for estimating heterogeneous treatment
effects using machine learning", PNAS 116(10) (S-, T-, X-learner); Kennedy (2023), "Towards optimal
doubly robust estimation of heterogeneous causal effects", EJS 17(2) (DR-learner with cross-fitting).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from sklearn.base import clone, is_classifier

from omnicrm import determinism

OutcomeType = Literal["auto", "binary", "continuous"]


def default_model(kind: Literal["classifier", "regressor"], random_state: int = 0, **params: Any) -> Any:
    """A small seeded LightGBM with the shared determinism settings (:mod:`omnicrm.determinism`)."""
    import lightgbm as lgb

    settings: dict[str, Any] = {
        "n_estimators": 150,
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_child_samples": 100,
        "subsample": 0.8,
        "subsample_freq": 1,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "random_state": random_state,
        **determinism.LIGHTGBM,
    }
    settings.update(params)
    cls = lgb.LGBMClassifier if kind == "classifier" else lgb.LGBMRegressor
    return cls(**settings)


def tree_contributions(model: Any, X: pd.DataFrame) -> np.ndarray:
    """Per-row additive contributions of a fitted LightGBM regressor, shape ``(rows, features + 1)``.

    LightGBM's ``pred_contrib`` (TreeSHAP, Lundberg et al. 2020, "From local explanations to global
    understanding with explainable AI for trees", Nat. Mach. Intell. 2): each row's contributions and
    the last column (the expected value) sum to its prediction.

    Raises
    ------
    NotImplementedError
        ``model`` is not a LightGBM regressor (no exact per-row contributions).
    """
    if not hasattr(model, "booster_") or is_classifier(model):
        raise NotImplementedError(f"no per-feature contributions for {type(model).__name__} (LightGBM regressors only)")
    return np.asarray(model.predict(X, pred_contrib=True), dtype=float)


def _as_frame(X: Any) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X.reset_index(drop=True)
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise ValueError(f"X must be 2-dimensional, got shape {arr.shape}")
    return pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])


def _set_seed(model: Any, seed: int) -> Any:
    """Give a cloned model a seed of its own, if it takes one (sub-models must not share draws)."""
    if "random_state" in model.get_params():
        model.set_params(random_state=seed)
    return model


class UpliftLearner:
    """Base class. Subclasses implement ``_fit`` and ``_predict``.

    Parameters
    ----------
    control
        The treatment label of the shared control group.
    outcome
        ``"binary"`` (0/1: classifier, probability differences), ``"continuous"`` (regressor) or
        ``"auto"`` (binary when ``y`` holds only 0 and 1).
    base_model
        Outcome model (classifier for binary, regressor for continuous outcomes); ``None``: LightGBM.
    effect_model
        Regressor of the second stage (X, DR); ``None``: LightGBM regressor.
    random_state
        Seed of every sub-model and of the cross-fitting folds.
    """

    name: ClassVar[str] = "base"

    def __init__(
        self,
        control: Any = "control",
        outcome: OutcomeType = "auto",
        base_model: Any = None,
        effect_model: Any = None,
        random_state: int = 0,
    ) -> None:
        self.control = control
        self.outcome = outcome
        self.base_model = base_model
        self.effect_model = effect_model
        self.random_state = random_state

    # --- contract ----------------------------------------------------------------------------------
    def fit(self, X: Any, treatment: Any, y: Any) -> UpliftLearner:
        """Fit on rows of features ``X``, arm labels ``treatment`` and outcomes ``y``."""
        X = _as_frame(X)
        t = np.asarray(treatment)
        y = np.asarray(y, dtype=float)
        if not (len(X) == t.size == y.size):
            raise ValueError(f"X, treatment and y differ in length: {len(X)}, {t.size}, {y.size}")
        if self.outcome not in ("auto", "binary", "continuous"):
            raise ValueError(
                f"The 'outcome' parameter must be a str among {{'auto', 'binary', 'continuous'}}. Got {self.outcome!r}."
            )
        if np.isnan(y).any():
            raise ValueError("y holds missing values")
        is_binary = bool(np.isin(y, (0.0, 1.0)).all())
        if self.outcome == "binary" and not is_binary:
            raise ValueError("outcome='binary' but y holds values other than 0 and 1")
        self.binary_ = is_binary if self.outcome == "auto" else self.outcome == "binary"
        if not (t == self.control).any():
            raise ValueError(f"no control rows: no treatment label equals control={self.control!r}")
        self.actions_ = sorted({a for a in t.tolist() if a != self.control}, key=str)
        if not self.actions_:
            raise ValueError("no treated rows: every treatment label is the control")
        if self.binary_ and len(np.unique(y)) < 2:
            raise ValueError("binary outcome y is constant; nothing to learn")
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        # arm shares: the known propensities of a randomised experiment
        self.propensity_ = {a: float((t == a).mean()) for a in [self.control, *self.actions_]}
        self._seed = np.random.SeedSequence(self.random_state)
        self._fit(X, t, y)
        return self

    def predict_effect(self, X: Any) -> np.ndarray:
        """Estimated effect of each action against control, shape ``(n_rows, n_actions)``."""
        if not hasattr(self, "actions_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(X, treatment, y) first")
        X = _as_frame(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the learner was fitted with {self.n_features_in_}")
        return np.asarray(self._predict(X), dtype=float).reshape(len(X), len(self.actions_))

    def get_params(self, deep: bool = False) -> dict[str, Any]:  # noqa: ARG002 - scikit-learn signature
        return {k: getattr(self, k) for k in ("control", "outcome", "base_model", "effect_model", "random_state")}

    def effect_contributions(self, X: Any, action: Any) -> np.ndarray:
        """Per-row contributions of each feature to ``action``'s effect, shape ``(rows, features + 1)``.

        Column ``j < features`` is feature ``j``'s share of the row's effect, the last column the
        baseline; a row's columns sum to its :meth:`predict_effect`. Learners whose effect is a
        linear combination of LightGBM regressors (DR; X; T on a continuous outcome) decompose it
        exactly; the others raise ``NotImplementedError`` (an S- or binary T-learner's effect is a
        difference of probabilities, which tree contributions in log-odds do not add up to).
        """
        if not hasattr(self, "actions_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(X, treatment, y) first")
        if action not in self.actions_:
            raise ValueError(f"unknown action {action!r}; the learner knows {self.actions_}")
        return self._contributions(_as_frame(X), action)

    def _contributions(self, X: pd.DataFrame, action: Any) -> np.ndarray:  # noqa: ARG002
        raise NotImplementedError(f"the {self.name}-learner's effects are not a sum of per-feature contributions")

    # --- helpers for subclasses --------------------------------------------------------------------
    def _next_seed(self) -> int:
        return int(self._seed.spawn(1)[0].generate_state(1)[0] % (2**31 - 1))

    def _outcome_model(self) -> Any:
        kind = "classifier" if self.binary_ else "regressor"
        if self.base_model is None:
            return default_model(kind, self._next_seed())
        model = _set_seed(clone(self.base_model), self._next_seed())
        if self.binary_ != is_classifier(model):
            want = "a classifier" if self.binary_ else "a regressor"
            kind = "binary" if self.binary_ else "continuous"
            got = type(model).__name__
            raise ValueError(f"{self.name}-learner: a {kind} outcome needs {want} as base_model, got {got}")
        return model

    def _regressor(self) -> Any:
        if self.effect_model is None:
            return default_model("regressor", self._next_seed())
        model = _set_seed(clone(self.effect_model), self._next_seed())
        if is_classifier(model):
            raise ValueError(f"{self.name}-learner: effect_model must be a regressor, got {type(model).__name__}")
        return model

    def _fit_outcome(self, X: pd.DataFrame, y: np.ndarray) -> Any:
        model = self._outcome_model()
        model.fit(X, y.astype(int) if self.binary_ else y)
        return model

    def _mean(self, model: Any, X: pd.DataFrame) -> np.ndarray:
        """Expected outcome: P(y = 1) for a classifier, the prediction for a regressor."""
        if self.binary_:
            return model.predict_proba(X)[:, 1]
        return model.predict(X)

    # --- to implement ------------------------------------------------------------------------------
    def _fit(self, X: pd.DataFrame, t: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _predict(self, X: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError


class SLearner(UpliftLearner):
    """One outcome model on features plus the arm (one indicator per action); effect = f(x, a) - f(x, control).

    Cheap and stable, but a tree model may ignore the arm indicators when effects are small
    (it then predicts effects near zero: a conservative bias).
    """

    name = "S"

    def _with_arm(self, X: pd.DataFrame, arm: Any) -> pd.DataFrame:
        cols = {
            f"__arm_{i}": (arm == a).astype(float) if isinstance(arm, np.ndarray) else float(arm == a)
            for i, a in enumerate(self.actions_)
        }
        return pd.concat([X, pd.DataFrame(cols, index=X.index)], axis=1)

    def _fit(self, X: pd.DataFrame, t: np.ndarray, y: np.ndarray) -> None:
        self.model_ = self._fit_outcome(self._with_arm(X, t), y)

    def _predict(self, X: pd.DataFrame) -> np.ndarray:
        base = self._mean(self.model_, self._with_arm(X, self.control))
        return np.column_stack([self._mean(self.model_, self._with_arm(X, a)) - base for a in self.actions_])


class TLearner(UpliftLearner):
    """One outcome model per arm; effect = mu_a(x) - mu_control(x)."""

    name = "T"

    def _fit(self, X: pd.DataFrame, t: np.ndarray, y: np.ndarray) -> None:
        self.models_ = {a: self._fit_outcome(X[t == a], y[t == a]) for a in [self.control, *self.actions_]}

    def _predict(self, X: pd.DataFrame) -> np.ndarray:
        base = self._mean(self.models_[self.control], X)
        return np.column_stack([self._mean(self.models_[a], X) - base for a in self.actions_])

    def _contributions(self, X: pd.DataFrame, action: Any) -> np.ndarray:
        if self.binary_:  # probabilities: contributions are in log-odds and do not subtract to the effect
            return super()._contributions(X, action)
        return tree_contributions(self.models_[action], X) - tree_contributions(self.models_[self.control], X)


class XLearner(UpliftLearner):
    """Künzel et al.'s X-learner, per action against the shared control.

    Stage 1: outcome models per arm (a T-learner). Stage 2: imputed effects
    ``D1 = y - mu_0(x)`` on the treated and ``D0 = mu_a(x) - y`` on the controls, each regressed on x.
    The two are blended with the known propensity ``g = e_a / (e_a + e_0)``:
    ``tau(x) = g * tau_0(x) + (1 - g) * tau_1(x)`` (the estimate from the larger group gets more weight).
    """

    name = "X"

    def _fit(self, X: pd.DataFrame, t: np.ndarray, y: np.ndarray) -> None:
        mu = {a: self._fit_outcome(X[t == a], y[t == a]) for a in [self.control, *self.actions_]}
        ctrl = t == self.control
        Xc, yc = X[ctrl], y[ctrl]
        self.stage2_ = {}
        for a in self.actions_:
            ta = t == a
            d1 = y[ta] - self._mean(mu[self.control], X[ta])
            d0 = self._mean(mu[a], Xc) - yc
            tau1 = self._regressor().fit(X[ta], d1)
            tau0 = self._regressor().fit(Xc, d0)
            g = self.propensity_[a] / (self.propensity_[a] + self.propensity_[self.control])
            self.stage2_[a] = (tau0, tau1, g)

    def _predict(self, X: pd.DataFrame) -> np.ndarray:
        out = []
        for a in self.actions_:
            tau0, tau1, g = self.stage2_[a]
            out.append(g * tau0.predict(X) + (1 - g) * tau1.predict(X))
        return np.column_stack(out)

    def _contributions(self, X: pd.DataFrame, action: Any) -> np.ndarray:
        tau0, tau1, g = self.stage2_[action]
        return g * tree_contributions(tau0, X) + (1 - g) * tree_contributions(tau1, X)


class DRLearner(UpliftLearner):
    """Doubly-robust learner with cross-fitting (Kennedy 2023), several actions against one control.

    Outcome models per arm are fitted on ``n_folds - 1`` folds and predict the held-out fold. The
    pseudo-outcome of action ``a`` for every row is the AIPW score
    ``mu_a(x) - mu_0(x) + 1[T=a] (y - mu_a(x)) / e_a - 1[T=0] (y - mu_0(x)) / e_0`` with the known arm
    shares ``e``; a regressor of the pseudo-outcome on x is the effect estimate.
    """

    name = "DR"

    def __init__(
        self,
        control: Any = "control",
        outcome: OutcomeType = "auto",
        base_model: Any = None,
        effect_model: Any = None,
        random_state: int = 0,
        n_folds: int = 2,
    ) -> None:
        super().__init__(control, outcome, base_model, effect_model, random_state)
        self.n_folds = n_folds

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        return {**super().get_params(deep), "n_folds": self.n_folds}

    def _fit(self, X: pd.DataFrame, t: np.ndarray, y: np.ndarray) -> None:
        if not isinstance(self.n_folds, int) or self.n_folds < 2:
            raise ValueError(f"The 'n_folds' parameter must be an int >= 2. Got {self.n_folds!r}.")
        arms = [self.control, *self.actions_]
        rng = np.random.default_rng(self._next_seed())
        # folds stratified by arm, so every fold sees every arm in its share
        fold = np.empty(t.size, dtype=int)
        for a in arms:
            idx = np.flatnonzero(t == a)
            fold[idx] = rng.permutation(idx.size) % self.n_folds
        mu = np.zeros((t.size, len(arms)))
        for k in range(self.n_folds):
            train, test = fold != k, fold == k
            for j, a in enumerate(arms):
                model = self._fit_outcome(X[train & (t == a)], y[train & (t == a)])
                mu[test, j] = self._mean(model, X[test])
        e0 = self.propensity_[self.control]
        resid0 = np.where(t == self.control, (y - mu[:, 0]) / e0, 0.0)
        self.final_ = {}
        for j, a in enumerate(self.actions_, start=1):
            psi = mu[:, j] - mu[:, 0] + np.where(t == a, (y - mu[:, j]) / self.propensity_[a], 0.0) - resid0
            self.final_[a] = self._regressor().fit(X, psi)

    def _predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.column_stack([self.final_[a].predict(X) for a in self.actions_])

    def _contributions(self, X: pd.DataFrame, action: Any) -> np.ndarray:
        return tree_contributions(self.final_[action], X)


#: Learners by the names configs use.
LEARNERS: dict[str, type[UpliftLearner]] = {"S": SLearner, "T": TLearner, "X": XLearner, "DR": DRLearner}


def make_learner(name: str, **params: Any) -> UpliftLearner:
    """A learner by name (``S``, ``T``, ``X``, ``DR``)."""
    if name not in LEARNERS:
        raise ValueError(f"The learner name must be a str among {sorted(LEARNERS)}. Got {name!r} instead.")
    cls = LEARNERS[name]
    if name != "DR":
        params.pop("n_folds", None)
    return cls(**params)
