"""The promotion rule (``settle``): the better of candidate and baseline, never worse than the champion."""

from __future__ import annotations

import pytest

from omnicrm.pipeline import promote as promote_module
from omnicrm.pipeline.promote import PromoteResult, PromotionRefused, settle


@pytest.fixture
def aliases(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """The alias moves ``settle`` asks the registry for, recorded instead of made (descriptions too)."""
    moved: list[tuple[str, str, str]] = []
    monkeypatch.setattr(promote_module.tracking, "set_alias", lambda *args: moved.append(args))
    monkeypatch.setattr(promote_module.tracking, "describe", lambda *a, **k: DESCRIBED.append((a, k)))
    DESCRIBED.clear()
    return moved


#: the version descriptions ``settle`` wrote in the current test
DESCRIBED: list[tuple[tuple, dict]] = []


def _result(candidate: float, baseline: float | None, champion: float | None) -> PromoteResult:
    return PromoteResult(
        "omnicrm-churn",
        "3",
        "1" if champion is not None else None,
        "roc_auc",
        candidate,
        champion,
        "2024-03-01",
        False,
        "",
        "4" if baseline is not None else None,
        baseline,
        "recency" if baseline is not None else "",
    )


def test_first_promotion_ships_the_baseline_when_it_beats_the_candidate(aliases: list) -> None:
    r = settle(_result(0.64, 0.75, None), "the evaluation cutoff 2024-03-01", force=False)
    assert r.promoted and r.champion_after == "4" and aliases == [("omnicrm-churn", "champion", "4")]
    assert r.note == "no champion yet: baseline recency beats the candidate"
    assert r.figures() == "roc_auc on 2024-03-01: candidate v3 0.6400, baseline v4 (recency) 0.7500"
    # the shipped version says why, in the registry
    [((name, text), kw)] = DESCRIBED
    assert name == "omnicrm-churn" and kw == {"version": "4", "append": True}
    assert text.endswith(": no champion yet: baseline recency beats the candidate.")


def test_a_tie_with_the_baseline_ships_the_candidate(aliases: list) -> None:
    r = settle(_result(0.75, 0.75, 0.70), "x", force=False)
    assert r.champion_after == "3" and r.note == "candidate is at least as good as its baseline"


def test_a_baseline_that_is_already_champion_stays_without_a_refusal(aliases: list) -> None:
    r = _result(0.64, 0.75, 0.75)
    r.champion_before = "4"
    r = settle(r, "x", force=False)
    assert not r.promoted and r.champion_after == "4" and aliases == []
    assert r.note == "baseline recency beats the candidate; v4 is already champion"


def test_candidate_and_baseline_worse_than_the_champion_are_refused_unless_forced(aliases: list) -> None:
    with pytest.raises(
        PromotionRefused,
        match=r"candidate v3 roc_auc 0.6400 and its baseline v4 \(recency\) 0.7000 are "
        r"worse than champion v1 0.8000 on x; not promoted",
    ) as refused:
        settle(_result(0.64, 0.70, 0.80), "x", force=False)
    assert refused.value.result.champion_after == "1" and aliases == []
    forced = settle(_result(0.64, 0.70, 0.80), "x", force=True)
    assert forced.champion_after == "3" and forced.note == "forced: candidate is worse than its baseline and champion"


def test_without_a_baseline_the_rule_and_notes_are_unchanged(aliases: list) -> None:
    """Recommenders and effect models: candidate against champion, as before the gate."""
    with pytest.raises(PromotionRefused, match="candidate v3 roc_auc 0.6400 is worse than champion v1"):
        settle(_result(0.64, None, 0.80), "x", force=False)
    assert settle(_result(0.64, None, 0.80), "x", force=True).note == "forced: candidate is worse"
    assert settle(_result(0.90, None, 0.80), "x", force=False).note == "candidate is at least as good"


def test_a_nan_metric_never_wins(aliases: list) -> None:
    r = settle(_result(float("nan"), 0.6, None), "x", force=False)
    assert r.champion_after == "4"
