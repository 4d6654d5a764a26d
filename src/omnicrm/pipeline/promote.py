"""``omnicrm promote TASK``: move ``champion`` to the better of ``candidate`` and its ``baseline``, if not worse.

``omnicrm train`` registers each target's LightGBM model (alias ``candidate``) and, from the same
run, its best baseline on the evaluation cutoff (alias ``baseline``, tagged
``model_family=baseline:<name>``). Promotion is the gate that never ships a model worse than that
baseline:

1. candidate, baseline and champion (when there is one) are compared on the **same** evaluation
   cutoff, the candidate's, without a figure any of them earned by having seen that cutoff's labels:

   * candidate and baseline count with the figures their **evaluation run** measured there
     (:func:`recorded_value`). ``omnicrm train`` registers the *refit* on every labelled cutoff
     (evaluation included, :mod:`omnicrm.tasks.train`), which has seen those labels: scored there
     it would be judged on its own training data. The evaluation run's model and baselines were
     fitted on the training cutoffs only; the refit is that configuration with more recent data;
   * the champion (:func:`champion_basis`) is scored on the candidate's evaluation frame (rebuilt
     from the resolved config the candidate's run logged) when it has seen no label of that
     window (tag ``labels_end`` on or before the cutoff); a champion that has (a refit on the same
     cutoffs: a retrain on the same config) counts with its own evaluation run's figure when that
     run judged it on the same cutoff; otherwise no honest comparison exists and the gate
     refuses unless ``force`` (move the evaluation cutoff to or past the champion's
     ``labels_end``). Comparing figures logged on *different* cutoffs is never done;
2. the challenger is the candidate if it scores at least as well as its baseline, else the baseline;
3. the challenger becomes champion if there is no champion yet or it scores at least as well as the
   champion; otherwise nothing moves and :class:`PromotionRefused` says so with all three figures.

``force`` promotes the candidate whatever the figures say (they are still computed and reported).
A candidate registered without a baseline (before the gate) and without a champion is promoted
directly, as before. Recommenders and effect models are judged by
:mod:`omnicrm.pipeline.promote_models` and decided by the same :func:`settle`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

from omnicrm import tracking
from omnicrm.config import parse_yaml
from omnicrm.errors import ConfigError, OmnicrmError
from omnicrm.progress import Progress, silent
from omnicrm.tasks.config import TaskConfig, task_config_from_dict


@dataclass
class PromoteResult:
    """What ``omnicrm promote`` did: the versions' scores on one evaluation cutoff, and the outcome.

    ``baseline`` / ``baseline_value`` / ``baseline_name`` are set for prediction tasks whose training
    run registered a baseline; ``champion_after`` is the champion version once settled (``None``
    when the alias did not move and there was no champion).
    """

    name: str
    candidate: str
    champion_before: str | None
    metric: str
    candidate_value: float | None
    champion_value: float | None
    evaluation_cutoff: str
    promoted: bool
    note: str
    baseline: str | None = None
    baseline_value: float | None = None
    baseline_name: str = ""
    champion_after: str | None = None

    def figures(self) -> str:
        """``roc_auc on 2024-03-01: candidate v3 0.7330, baseline v4 (recency) 0.7516, champion v1 0.7400``."""
        if self.candidate_value is None:
            return ""
        parts = [f"candidate v{self.candidate} {self.candidate_value:.4f}"]
        if self.baseline is not None and self.baseline_value is not None:
            parts.append(f"baseline v{self.baseline} ({self.baseline_name}) {self.baseline_value:.4f}")
        if self.champion_before is not None and self.champion_value is not None:
            parts.append(f"champion v{self.champion_before} {self.champion_value:.4f}")
        return f"{self.metric} on {self.evaluation_cutoff}: " + ", ".join(parts)


class PromotionRefused(OmnicrmError):
    """The candidate scored worse than the champion on the same evaluation cutoff (``result``: both scores)."""

    def __init__(self, message: str, result: PromoteResult) -> None:
        super().__init__(message)
        self.result = result


def promote(task: str, force: bool = False, progress: Progress = silent) -> PromoteResult:
    """Move ``champion`` to the better of ``candidate`` and ``baseline`` unless it is worse; see the module docstring.

    Parameters
    ----------
    task : str
        The registered model's name, with or without ``omnicrm-`` (``churn``, ``clv-margin``); a
        recommender (``<dataset>-recommend``) or an effect model (``<dataset>-uplift-<outcome>``) is
        handed to :func:`omnicrm.pipeline.promote_models.promote_model`.
    force : bool
        Promote the candidate even when it scores worse than the champion or its baseline.
    progress : Progress

    Returns
    -------
    PromoteResult

    Raises
    ------
    PromotionRefused
        The better of candidate and baseline is worse than the champion, and ``force`` is not set.
    """
    from omnicrm.pipeline.promote_models import handles, promote_model

    if handles(task):  # a recommender or an effect model: judged on its own evaluation data
        return promote_model(task, force=force, progress=progress)
    name = task if task.startswith("omnicrm-") else f"omnicrm-{task}"
    cand = tracking.find_version(name, "candidate")
    if cand is None:
        raise ConfigError(f"promote: registered model '{name}' has no 'candidate' version; run omnicrm train first")
    champ = tracking.find_version(name, "champion")
    base = tracking.find_version(name, "baseline")
    if base is not None and base.run_id != cand.run_id:
        base = None  # a baseline of another training run was fitted on other frames: not this candidate's
    if champ is not None and champ.version == cand.version:
        return PromoteResult(
            name, cand.version, champ.version, "", None, None, "", False, "candidate is already champion", None
        )
    if champ is None and base is None:
        tracking.set_alias(name, "champion", cand.version)
        note = "no champion yet: candidate promoted (no baseline registered with it)"
        return PromoteResult(name, cand.version, None, "", None, None, "", True, note, champion_after=cand.version)
    source = f"config of run {cand.run_id}"
    cfg = task_config_from_dict(parse_yaml(tracking.load_run_text(cand.run_id, "config.yaml"), source), source)
    cut = str(cfg.cutoffs.evaluation)
    metric = cand.tags.get("primary_metric", "")
    # candidate and baseline: the figures their evaluation run measured (a refit has seen the
    # evaluation cutoff's labels, so scoring it there would favour it)
    values = {v.version: recorded_value(v, metric) for v in (cand, base) if v is not None}
    basis, why_not = ("", "")
    if champ is not None:
        basis, why_not = champion_basis(champ.tags, cut, metric)
        if basis == "recorded":
            values[champ.version] = recorded_value(champ, metric)
            if values[champ.version] is None:
                run = champ.tags.get("evaluated_as_run") or champ.run_id
                why_not = f"the champion has seen those labels and its evaluation run {run} logged no {metric}"
                basis = "none"
    to_score = [v for v in (cand, base) if v is not None and values.get(v.version) is None]
    if basis == "score":
        to_score.append(champ)
    changed = False
    if to_score:
        metric, scored, fingerprint = _score(name, cfg, cand, to_score, progress)
        values |= scored
        # the candidate's figure is from its evaluation run: say so when the store has changed since
        changed = cand.tags.get("data_fingerprint", fingerprint) != fingerprint and cand.version not in scored
    result = PromoteResult(
        name,
        cand.version,
        champ.version if champ else None,
        metric,
        values[cand.version],
        values.get(champ.version) if champ else None,
        cut,
        False,
        "",
        base.version if base else None,
        values[base.version] if base else None,
        base.tags.get("model_family", "baseline:?").removeprefix("baseline:") if base else "",
    )
    if basis == "none":
        return _not_comparable(result, why_not, force)
    where = f"the evaluation cutoff {cut}"
    if basis == "recorded":
        where += " (figures of the versions' evaluation runs)"
    if changed:
        where += " (the store changed since the candidate's evaluation run, whose figures are used for it)"
    return settle(result, where, force)


def recorded_value(version: tracking.VersionInfo, metric: str) -> float | None:
    """``metric`` of a version as its evaluation run measured it on its evaluation cutoff (``None``: not logged).

    The evaluation run is the version's ``evaluated_as_run`` tag (a refit's), else its own run (a
    version registered by the run that evaluated it). A baseline version (``model_family`` tag
    ``baseline:<name>``) reads ``baseline.<name>.<metric>``, the model ``model.<metric>``.
    """
    if not metric:
        return None
    run = version.tags.get("evaluated_as_run") or version.run_id
    family = version.tags.get("model_family", "")
    name = family.removeprefix("baseline:")
    key = f"baseline.{name}.{metric}" if family.startswith("baseline:") else f"model.{metric}"
    value = tracking.run_metrics(run).get(key)
    return None if value is None else float(value)


def champion_basis(tags: dict[str, str], evaluation_cutoff: str, metric: str) -> tuple[str, str]:
    """How the champion is compared on the candidate's evaluation cutoff, honestly: ``(basis, why not)``.

    * ``score``: the champion has seen no label of that cutoff's window (its ``labels_end`` tag is on
      or before the cutoff; a version without the tag and not refit was fitted before the
      evaluation cutoff by the time-split guard, as before): it is scored there;
    * ``recorded``: it has (a refit on the same or later cutoffs), but its evaluation run judged it
      on the same cutoff with the same primary metric: both evaluation runs' figures are compared;
    * ``none``: neither, ``why not`` says so; the gate refuses unless forced.

    Parameters
    ----------
    tags : dict
        The champion version's tags.
    evaluation_cutoff : str
        The candidate's evaluation cutoff (ISO date).
    metric : str
        The candidate's primary metric.

    Returns
    -------
    tuple of str
    """
    end = tags.get("labels_end")
    if (end and end <= evaluation_cutoff) or (not end and tags.get("refit") != "true"):
        return "score", ""
    if tags.get("evaluation_cutoff") == evaluation_cutoff and tags.get("primary_metric", metric) == metric:
        return "recorded", ""
    return "none", (
        f"the champion has seen labels up to {end} (refit on cutoffs {tags.get('fitted_cutoffs', '?')}), past the "
        f"candidate's evaluation cutoff {evaluation_cutoff}, and was evaluated on "
        f"{tags.get('evaluation_cutoff', '?')}, not on it; train the candidate with an evaluation cutoff on or "
        f"after {end}, or the same evaluation cutoff as the champion"
    )


def _score(
    name: str, cfg: TaskConfig, cand: tracking.VersionInfo, versions: list[tracking.VersionInfo], progress: Progress
) -> tuple[str, dict[str, float], str]:
    """``versions`` scored on the candidate's evaluation frame, rebuilt from its config.

    Returns
    -------
    metric : str
        The primary metric.
    values : dict
        Version -> metric.
    fingerprint : str
        The store's data fingerprint now.
    """
    from omnicrm.pipeline.task_frames import feature_source
    from omnicrm.store import open_store
    from omnicrm.tasks.frames import build_frame, store_fingerprint

    progress(f"promote {name}: evaluation frame at {cfg.cutoffs.evaluation}", 0.2)
    con = open_store(cfg.dataset.store, deterministic=True)
    try:
        frame = build_frame(con, cfg, [cfg.cutoffs.evaluation], what="evaluation", features=feature_source(cfg.dataset))
        fingerprint = store_fingerprint(con)
    finally:
        con.close()
    models = {v.version: tracking.load_model(tracking.model_uri(name, v.version)) for v in [cand, *versions]}
    # the candidate's target, as its config's task declares it (label, consent filter, metric)
    target = next(t for t in cfg.task.targets_of(frame) if t.name == models[cand.version].target)
    rows = target.rows(frame)
    y = rows[target.label].to_numpy()
    metric = cfg.task.primary_metric(target)
    progress(f"promote {name}: scoring versions {', '.join(v.version for v in versions)}", 0.7)
    values = {v.version: cfg.task.metrics(target, y, models[v.version].predict_score(rows))[metric] for v in versions}
    return metric, values, fingerprint


def _not_comparable(result: PromoteResult, why_not: str, force: bool) -> PromoteResult:
    """No honest comparison with the champion exists: refused, or the candidate forced in."""
    r = result
    if not force:
        r.champion_after, r.note = r.champion_before, f"not compared with the champion ({why_not}): champion kept"
        raise PromotionRefused(
            f"promote {r.name}: cannot compare candidate v{r.candidate} with champion v{r.champion_before} on "
            f"{r.evaluation_cutoff}: {why_not}; not promoted (use --force to promote the candidate anyway)",
            r,
        )
    tracking.set_alias(r.name, "champion", r.candidate)
    r.promoted, r.champion_after = True, r.candidate
    r.note = f"forced: not compared with the champion ({why_not})"
    tracking.describe(r.name, f"Promoted to champion on {date.today()}: {r.note}.", version=r.candidate, append=True)
    return r


def _low(value: float | None) -> float:
    """A metric for comparison: a missing or NaN value counts as the lowest."""
    return -math.inf if value is None or math.isnan(value) else value


def settle(result: PromoteResult, where: str, force: bool) -> PromoteResult:
    """Move ``champion`` to the better of candidate and baseline unless it scored worse; every model kind decides here.

    Parameters
    ----------
    result : PromoteResult
        The versions' values of ``result.metric`` on the same evaluation data (higher is better);
        ``champion_before`` ``None`` for a model without champion, ``baseline`` ``None`` for one
        without a registered baseline (recommenders, effect models).
    where : str
        That evaluation data, for the message (``"the evaluation cutoff 2024-10-01"``).
    force : bool
        Promote the candidate even when it is worse.

    Returns
    -------
    PromoteResult
        ``result`` with ``promoted``, ``champion_after`` and ``note`` set.

    Raises
    ------
    PromotionRefused
        The better of candidate and baseline is worse than the champion and ``force`` is not set.
    """
    r = result
    base_wins = r.baseline is not None and _low(r.baseline_value) > _low(r.candidate_value)
    first = r.champion_before is None
    prefix = "no champion yet: " if first else ""
    if force:
        chosen, value = r.candidate, r.candidate_value
        worse = [
            w for w, v in (("baseline", r.baseline_value), ("champion", r.champion_value)) if _low(v) > _low(value)
        ]
        detail = f" than its {' and '.join(worse)}" if r.baseline is not None else ""  # recommenders: as before
        why = f"forced: candidate is worse{detail}" if worse else "candidate is at least as good"
    elif base_wins:
        chosen, value = r.baseline, r.baseline_value
        why = f"baseline {r.baseline_name} beats the candidate"
    else:
        chosen, value = r.candidate, r.candidate_value
        why = (
            "candidate is at least as good as its baseline"
            if r.baseline is not None
            else "candidate is at least as good"
        )
    if not force and not first:
        if chosen == r.champion_before:
            r.champion_after = r.champion_before
            r.note = f"{why}; v{chosen} is already champion"
            return r
        if _low(value) < _low(r.champion_value):
            r.champion_after = r.champion_before
            r.note = (
                "candidate is worse: champion kept" if chosen == r.candidate else f"{why}, but is worse: champion kept"
            )
            who = (
                f"candidate v{r.candidate} {r.metric} {r.candidate_value:.4f} is"
                if chosen == r.candidate
                else f"candidate v{r.candidate} {r.metric} {r.candidate_value:.4f} and its baseline v{r.baseline} "
                f"({r.baseline_name}) {r.baseline_value:.4f} are"
            )
            raise PromotionRefused(
                f"promote {r.name}: {who} worse than champion v{r.champion_before} {r.champion_value:.4f} on "
                f"{where}; not promoted (use --force to promote the candidate anyway)",
                r,
            )
    tracking.set_alias(r.name, "champion", chosen)
    r.promoted, r.champion_after, r.note = True, chosen, prefix + why
    # the version says why it ships, in the registry's UI, beside how it was trained
    tracking.describe(r.name, f"Promoted to champion on {date.today()}: {r.note}.", version=chosen, append=True)
    return r
