"""Qini, uplift AUC and uplift at k against scikit-uplift (binary outcomes) and hand-computed values."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from omnicrm.uplift import metrics as M

with warnings.catch_warnings():  # scikit-uplift 0.5.1 warns on import with scikit-learn 1.9
    warnings.simplefilter("ignore")
    from sklift import metrics as sk


def _binary(seed: int, n: int = 2000, ties: bool = False):  # noqa: ANN202
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, n)
    score = rng.normal(size=n)
    y = (rng.random(n) < 0.2 + 0.15 * t * (score > 0)).astype(int)
    if ties:
        score = np.round(score, 1)
    return y, score, t


@pytest.mark.filterwarnings("ignore::FutureWarning")  # scikit-uplift calls a deprecated scikit-learn helper
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
def test_matches_scikit_uplift_on_binary_outcomes(seed: int, ties: bool) -> None:
    y, s, t = _binary(seed, ties=ties)
    np.testing.assert_allclose(M.qini_curve(y, s, t), sk.qini_curve(y, s, t))
    np.testing.assert_allclose(M.uplift_curve(y, s, t), sk.uplift_curve(y, s, t))
    assert M.qini_coefficient(y, s, t) == pytest.approx(sk.qini_auc_score(y, s, t), rel=1e-12)
    assert M.uplift_auc(y, s, t) == pytest.approx(sk.uplift_auc_score(y, s, t), rel=1e-12)
    for k in (0.1, 0.3, 0.5):
        assert M.uplift_at_k(y, s, t, k) == pytest.approx(sk.uplift_at_k(y, s, t, strategy="overall", k=k))


def test_hand_computed_small_case() -> None:
    # sorted by score: (t=1,y=1) (t=0,y=0) (t=1,y=0) (t=0,y=1)
    y = np.array([1, 0, 0, 1])
    t = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.7, 0.5, 0.1])
    x, q = M.qini_curve(y, s, t)
    # Q(k) = Y_t - Y_c * n_t / n_c: k=1: 1 - 0; k=2: 1 - 0*1/1; k=3: 1 - 0*2/1; k=4: 1 - 1*2/2
    np.testing.assert_allclose(x, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(q, [0, 1, 1, 1, 0])
    # random line ends at 0, so the area is the trapezoid area 0.5 + 1 + 1 + 0.5 = 3; perfect ranking:
    # (t=1,y=1) (t=1,y=0) (t=0,y=0) (t=0,y=1) -> Q = 0, 1, 1, 1, 0 -> the same area, coefficient 1
    assert M.qini_coefficient(y, s, t) == pytest.approx(1.0)
    # reversed: Q = 0, 0, -1, -0.5, 0 -> area -1.5, coefficient -1.5 / 3
    assert M.qini_coefficient(y, -s, t) == pytest.approx(-0.5)
    # top half by score: rows 1-2 -> treated mean 1, control mean 0
    assert M.uplift_at_k(y, s, t, 0.5) == pytest.approx(1.0)
    assert M.average_effect(y, t) == pytest.approx(0.0)


def test_continuous_outcomes_are_supported() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    t = rng.integers(0, 2, n)
    x = rng.normal(size=n)
    spend = np.maximum(0, 20 + 10 * t * x + rng.normal(0, 5, n))
    good = M.qini_coefficient(spend, x, t)
    rand = M.qini_coefficient(spend, rng.normal(size=n), t)
    assert good > 0.3 and abs(rand) < 0.1
    assert M.uplift_at_k(spend, x, t, 0.3) > M.average_effect(spend, t) + 5


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="both treated and control"):
        M.qini_coefficient([1, 0], [0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="differ in length"):
        M.qini_curve([1, 0, 1], [0.1, 0.2], [1, 0])
    with pytest.raises(ValueError, match=r"k must be in \(0, 1\)"):
        M.uplift_at_k([1, 0], [0.1, 0.2], [1, 0], k=1.5)
