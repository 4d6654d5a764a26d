"""``omnicrm promote TASK``: move the ``champion`` alias to the ``candidate`` if it is not worse.

Both versions are scored on the **same** evaluation frame: the candidate's evaluation cutoff,
population and labels, rebuilt from the resolved config its training run logged. Comparing the
numbers each run logged would compare different cutoffs whenever the champion is older. A worse
candidate is refused unless ``force``; the first candidate of a model becomes champion directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from omnicrm import tracking
from omnicrm.config import parse_yaml
from omnicrm.errors import ConfigError, OmnicrmError
from omnicrm.progress import Progress, silent
from omnicrm.tasks.config import task_config_from_dict


@dataclass
class PromoteResult:
    """What ``omnicrm promote`` did: both versions' scores on one evaluation cutoff, and the outcome."""

    name: str
    candidate: str
    champion_before: str | None
    metric: str
    candidate_value: float | None
    champion_value: float | None
    evaluation_cutoff: str
    promoted: bool
    note: str


class PromotionRefused(OmnicrmError):
    """The candidate scored worse than the champion on the same evaluation cutoff (``result``: both scores)."""

    def __init__(self, message: str, result: PromoteResult) -> None:
        super().__init__(message)
        self.result = result


def promote(task: str, force: bool = False, progress: Progress = silent) -> PromoteResult:
    """Move ``champion`` to the ``candidate`` of ``omnicrm-<task>`` unless it scores worse; see the module docstring.

    Parameters
    ----------
    task : str
        The registered model's name, with or without ``omnicrm-`` (``churn``, ``clv-margin``); a
        recommender (``<dataset>-recommend``) or an effect model (``<dataset>-uplift-<outcome>``) is
        handed to :func:`omnicrm.pipeline.promote_models.promote_model`.
    force : bool
        Promote a worse candidate too.
    progress : Progress

    Returns
    -------
    PromoteResult

    Raises
    ------
    PromotionRefused
        The candidate is worse and ``force`` is not set.
    """
    from omnicrm.pipeline.promote_models import handles, promote_model

    if handles(task):  # a recommender or an effect model: judged on its own evaluation data
        return promote_model(task, force=force, progress=progress)
    from omnicrm.pipeline.task_frames import feature_source
    from omnicrm.store import open_store
    from omnicrm.tasks.frames import build_frame

    name = task if task.startswith("omnicrm-") else f"omnicrm-{task}"
    cand = tracking.find_version(name, "candidate")
    if cand is None:
        raise ConfigError(f"promote: registered model '{name}' has no 'candidate' version; run omnicrm train first")
    champ = tracking.find_version(name, "champion")
    if champ is None:
        tracking.set_alias(name, "champion", cand.version)
        return PromoteResult(name, cand.version, None, "", None, None, "", True, "no champion yet: candidate promoted")
    if champ.version == cand.version:
        return PromoteResult(
            name, cand.version, champ.version, "", None, None, "", False, "candidate is already champion"
        )
    source = f"config of run {cand.run_id}"
    cfg = task_config_from_dict(parse_yaml(tracking.load_run_text(cand.run_id, "config.yaml"), source), source)
    progress(f"promote {name}: evaluation frame at {cfg.cutoffs.evaluation}", 0.2)
    con = open_store(cfg.dataset.store, deterministic=True)
    try:
        frame = build_frame(con, cfg, [cfg.cutoffs.evaluation], what="evaluation", features=feature_source(cfg.dataset))
    finally:
        con.close()
    models = {v: tracking.load_model(tracking.model_uri(name, v)) for v in (cand.version, champ.version)}
    # the candidate's target, as its config's task declares it (label, consent filter, metric)
    target = next(t for t in cfg.task.targets_of(frame) if t.name == models[cand.version].target)
    rows = target.rows(frame)
    y = rows[target.label].to_numpy()
    metric = cfg.task.primary_metric(target)
    progress(f"promote {name}: scoring both versions", 0.7)
    values = {v: cfg.task.metrics(target, y, models[v].predict_score(rows))[metric] for v in models}
    cut = str(cfg.cutoffs.evaluation)
    result = PromoteResult(
        name, cand.version, champ.version, metric, values[cand.version], values[champ.version], cut, False, ""
    )
    return settle(result, f"the evaluation cutoff {cut}", force)


def settle(result: PromoteResult, where: str, force: bool) -> PromoteResult:
    """Move ``champion`` to the candidate unless it scored worse; every model kind decides here.

    Parameters
    ----------
    result : PromoteResult
        Both versions' values of ``result.metric`` on the same evaluation data (higher is better).
    where : str
        That evaluation data, for the message (``"the evaluation cutoff 2024-10-01"``).
    force : bool
        Promote a worse candidate too.

    Returns
    -------
    PromoteResult
        ``result`` with ``promoted`` and ``note`` set.

    Raises
    ------
    PromotionRefused
        The candidate is worse and ``force`` is not set.
    """
    better = result.candidate_value >= result.champion_value
    if not better and not force:
        result.note = "candidate is worse: champion kept"
        raise PromotionRefused(
            f"promote {result.name}: candidate v{result.candidate} {result.metric} {result.candidate_value:.4f} is "
            f"worse than champion v{result.champion_before} {result.champion_value:.4f} on {where}; not promoted "
            "(use --force to promote anyway)",
            result,
        )
    tracking.set_alias(result.name, "champion", result.candidate)
    result.promoted = True
    result.note = "candidate is at least as good" if better else "forced: candidate is worse"
    return result
