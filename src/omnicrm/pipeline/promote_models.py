"""Registered recommenders and effect models: loading a version, checking its data, promoting it.

``omnicrm recommend`` registers ``omnicrm-<dataset>-recommend`` and ``omnicrm effects`` registers
``omnicrm-<dataset>-uplift-<outcome>``, each new version as ``candidate``. :func:`promote_model`
moves ``champion`` to the candidate:

* the first candidate of a model becomes champion directly;
* later, both versions are scored on the **same** evaluation data, which neither has seen, and the
  candidate is promoted when its primary metric is at least the champion's:

  - recommender: NDCG@k on the test window of the candidate's config (``test_cutoff`` +
    ``test_days``), in the mode it serves (``all``, or ``new`` with ``serve_exclude_purchased``).
    Each version scores the customers' purchases before ``test_cutoff`` without refitting, against
    what they bought in the window. A version fitted after ``test_cutoff`` has seen the window, so
    then no fair comparison exists;
  - effect model: the Qini coefficient (mean over actions) on the randomised exposures of the
    campaigns sent on or after both versions' as-of dates whose outcome window closed before the
    store's last event. A feature-table source holds no time, so nothing in it is unseen;

* when no such data exists, or the candidate is worse, promotion is refused with a message saying
  why (:class:`~omnicrm.pipeline.promote.PromotionRefused`), unless ``force``.

The result has the shape of a task promotion (:class:`~omnicrm.pipeline.promote.PromoteResult`), so
``omnicrm promote NAME`` prints either the same way.
"""

from __future__ import annotations

import json
import warnings
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from omnicrm import tracking
from omnicrm.config import parse_yaml
from omnicrm.errors import ConfigError
from omnicrm.pipeline.promote import PromoteResult, PromotionRefused, settle
from omnicrm.progress import Progress, silent

#: the registry names this module promotes end like this (``omnicrm-<dataset>-recommend``) ...
RECOMMEND_SUFFIX = "-recommend"
#: ... or hold this (``omnicrm-<dataset>-uplift-<outcome>``)
UPLIFT_INFIX = "-uplift-"
#: the ``model_kind`` tags of the versions promoted here
MODEL_KINDS = ("recommend", "uplift")


class DataFingerprintWarning(UserWarning):
    """A registered model scores data other than the data it was fitted on (different fingerprint)."""


def full_name(name: str) -> str:
    """``synthetic-recommend`` -> ``omnicrm-synthetic-recommend`` (the prefix is optional on the command line)."""
    return name if name.startswith("omnicrm-") else f"omnicrm-{name}"


def handles(name: str) -> bool:
    """Whether ``name`` is a registered recommender or effect model (promoted here, not as a task).

    Decided by the candidate version's ``model_kind`` tag; without a candidate, by the name's
    pattern (``...-recommend``, ``...-uplift-...``), so the missing candidate is reported here.
    """
    name = full_name(name)
    cand = tracking.find_version(name, "candidate")
    if cand is not None:
        return cand.tags.get("model_kind") in MODEL_KINDS
    return name.endswith(RECOMMEND_SUFFIX) or UPLIFT_INFIX in name


def load_registered(name: str, ref: str, command: str) -> tuple[tracking.VersionInfo, Any]:
    """The registered version ``ref`` (alias or version number) of ``name`` and its model object.

    Raises
    ------
    ConfigError
        No such version or alias; the message says how to make one.
    """
    version = tracking.find_version(name, ref)
    if version is None:
        hint = (
            f"run `omnicrm {command} CONFIG --as-of DATE --out FILE` without --model to fit and register a "
            f"candidate, then `omnicrm promote {name}`"
            if ref == "champion"
            else f"run `omnicrm {command} CONFIG --as-of DATE --out FILE` without --model to fit and register one"
        )
        raise ConfigError(f"{command} --model {ref}: registered model '{name}' has no version '{ref}'; {hint}")
    return version, tracking.load_model(tracking.model_uri(name, version.version))


def check_fingerprint(version: tracking.VersionInfo, fingerprint: str, what: str) -> bool:
    """Warn (:class:`DataFingerprintWarning`) when ``version`` was fitted on other data; True if it matches.

    A version without a ``data_fingerprint`` tag, or data without one, cannot be compared and passes.
    """
    fitted = version.tags.get("data_fingerprint", "")
    if not fitted or not fingerprint or fitted == fingerprint:
        return True
    warnings.warn(
        f"{version.name} v{version.version} was fitted on data with fingerprint {fitted[:12]}…, but {what} has "
        f"fingerprint {fingerprint[:12]}…: the model scores data it was not fitted on (products or customers "
        "it never saw are left to its fallback)",
        DataFingerprintWarning,
        stacklevel=2,
    )
    return False


# --- promotion --------------------------------------------------------------------------------------
def promote_model(name: str, force: bool = False, progress: Progress = silent) -> PromoteResult:
    """Move ``champion`` of a registered recommender or effect model to its ``candidate`` if not worse.

    Parameters
    ----------
    name
        ``omnicrm-<dataset>-recommend`` or ``omnicrm-<dataset>-uplift-<outcome>`` (``omnicrm-`` optional).
    force
        Promote even when the candidate is worse or no fair comparison exists.
    progress
        Progress callback.

    Returns
    -------
    PromoteResult
        Both versions, the metric and its values (``None`` when not compared), the evaluation data
        (``evaluation_cutoff``), whether the alias moved and why.

    Raises
    ------
    ConfigError
        No candidate version, or a version that is not a recommender or effect model.
    PromotionRefused
        The candidate is worse, or no evaluation data unseen by both versions exists (without ``force``).
    """
    name = full_name(name)
    cand = tracking.find_version(name, "candidate")
    if cand is None:
        command = "recommend" if name.endswith(RECOMMEND_SUFFIX) else "effects"
        raise ConfigError(
            f"promote: registered model '{name}' has no 'candidate' version; run `omnicrm {command} CONFIG "
            "--as-of DATE --out FILE` first"
        )
    champ = tracking.find_version(name, "champion")
    if champ is None:
        tracking.set_alias(name, "champion", cand.version)
        note = "no champion yet: candidate promoted"
        return PromoteResult(name, cand.version, None, "", None, None, "", True, note, champion_after=cand.version)
    if champ.version == cand.version:
        return PromoteResult(
            name, cand.version, champ.version, "", None, None, "", False, "candidate is already champion"
        )
    kind = cand.tags.get("model_kind")
    if kind == "recommend":
        metric, values, evaluated, why_not = _recommend_values(name, cand, champ, progress)
    elif kind == "uplift":
        metric, values, evaluated, why_not = _uplift_values(name, cand, champ, progress)
    else:
        raise ConfigError(f"promote: '{name}' v{cand.version} is not a registered recommender or effect model")
    result = PromoteResult(
        name,
        cand.version,
        champ.version,
        metric,
        values.get(cand.version),
        values.get(champ.version),
        evaluated,
        False,
        "",
    )
    if why_not:
        if not force:
            result.note = f"not compared ({why_not}): champion kept"
            raise PromotionRefused(
                f"promote {name}: cannot compare candidate v{cand.version} with champion v{champ.version}: {why_not}; "
                "not promoted (use --force to promote anyway)",
                result,
            )
        tracking.set_alias(name, "champion", cand.version)
        result.promoted, result.note = True, f"forced: not compared ({why_not})"
        return result
    return settle(result, evaluated, force)


def _run_config(version: tracking.VersionInfo) -> dict[str, Any]:
    source = f"config of run {version.run_id}"
    return parse_yaml(tracking.load_run_text(version.run_id, "config.yaml"), source)


def _as_of(version: tracking.VersionInfo) -> date:
    text = version.tags.get("as_of")
    if not text:
        raise ConfigError(f"promote: {version.name} v{version.version} has no 'as_of' tag (not registered by omnicrm)")
    return date.fromisoformat(text)


def _recommend_values(
    name: str, cand: tracking.VersionInfo, champ: tracking.VersionInfo, progress: Progress
) -> tuple[str, dict[str, float], str, str]:
    """NDCG@k of both versions on the candidate config's test window: (metric, values, window, why not)."""
    from omnicrm.pipeline.recommend import load_store_purchases
    from omnicrm.recommend.config import recommend_config_from_dict
    from omnicrm.recommend.evaluate import make_split
    from omnicrm.recommend.metrics import ranking_metrics

    cfg = recommend_config_from_dict(_run_config(cand), f"config of run {cand.run_id}")
    mode = "new" if cfg.serve_exclude_purchased else "all"
    metric = f"ndcg_at_{cfg.k}"
    window = f"the test window {cfg.test_cutoff}..{cfg.test_end} ({mode} mode)"
    late = {v.version: _as_of(v) for v in (cand, champ) if _as_of(v) > cfg.test_cutoff}
    if late:
        fitted = ", ".join(f"v{k} as of {d}" for k, d in late.items())
        return (
            metric,
            {},
            window,
            (
                f"{fitted} fitted after the test cutoff {cfg.test_cutoff}, so the test window is not unseen; "
                f"register a candidate with --as-of {cfg.test_cutoff} or earlier to compare"
            ),
        )
    progress(f"promote {name}: purchases before {cfg.test_end}", 0.2)
    purchases, items = load_store_purchases(cfg, cfg.test_end)
    split = make_split(purchases, items, cfg.test_cutoff, cfg.test_end, "test")
    customers = split.customers(mode)
    before = purchases[pd.to_datetime(purchases["ts"]) < pd.Timestamp(cfg.test_cutoff)]
    history = before[before["customer_id"].astype(str).isin(set(customers))]
    values = {}
    for i, v in enumerate((cand, champ)):
        progress(f"promote {name}: scoring v{v.version}", 0.4 + 0.3 * i)
        served = tracking.load_model(tracking.model_uri(name, v.version))
        recs = served.predict_frame(history, as_of=cfg.test_cutoff, k=cfg.k, exclude_purchased=mode == "new")
        values[v.version] = float(ranking_metrics(recs, split.truth[mode], cfg.k, split.history.n_items)[metric])
    return metric, values, window, ""


def _uplift_values(
    name: str, cand: tracking.VersionInfo, champ: tracking.VersionInfo, progress: Progress
) -> tuple[str, dict[str, float], str, str]:
    """Mean Qini of both versions on campaigns neither has seen: (metric, values, campaigns, why not)."""
    from omnicrm.config import validate_config
    from omnicrm.features.config import resolve_feature_config
    from omnicrm.pipeline.uplift import load_data
    from omnicrm.store import store_data_range
    from omnicrm.uplift.config import UpliftConfig
    from omnicrm.uplift.data import StoreSource, send_window_end
    from omnicrm.uplift.evaluate import qini_by_action

    metric = "qini"
    source = f"config of run {cand.run_id}"
    cfg = validate_config(UpliftConfig, _run_config(cand), source)
    if not isinstance(cfg.source, StoreSource):
        return metric, {}, "", f"the source {cfg.source.path} is a feature table, which holds no time: no row is unseen"
    feats = resolve_feature_config(
        json.loads(tracking.load_run_text(cand.run_id, "features.json")), ".", f"features of run {cand.run_id}"
    )
    after = max(_as_of(cand), _as_of(champ))
    progress(f"promote {name}: exposures sent on or after {after}", 0.2)
    data = load_data(cfg, feats)
    last = pd.Timestamp(store_data_range(cfg.source.store).last)
    frame = data.frame
    unseen = (frame["cutoff"] >= pd.Timestamp(after)) & (send_window_end(frame, cfg.source.window_days) <= last)
    rows = frame[unseen.to_numpy()].reset_index(drop=True)
    arms = set(rows["arm"]) if len(rows) else set()
    if data.control not in arms or len(arms) < 2:
        return (
            metric,
            {},
            "",
            (
                f"no campaign was sent on or after {after} (the later as-of date of the two) with its "
                f"{cfg.source.window_days}-day outcome window closed by the store's last event ({last:%Y-%m-%d})"
            ),
        )
    campaigns = ", ".join(sorted(rows["campaign_id"].astype(str).unique()))
    evaluated = f"campaigns {campaigns} ({len(rows):,} exposures)"
    y = rows[cfg.effects.outcome].to_numpy(float)
    arm = rows["arm"].to_numpy(dtype=object)
    values = {}
    for i, v in enumerate((cand, champ)):
        progress(f"promote {name}: scoring v{v.version}", 0.5 + 0.2 * i)
        model = tracking.load_model(tracking.model_uri(name, v.version))
        by_action = qini_by_action(model.predict_effect(rows), model.actions, arm, y, data.control)
        if not by_action:
            return metric, {}, evaluated, f"v{v.version}'s actions {model.actions} do not occur in {evaluated}"
        values[v.version] = float(np.mean(list(by_action.values())))
    return metric, values, evaluated, ""
