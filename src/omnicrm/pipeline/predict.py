"""``omnicrm predict CONFIG --as-of DATE --out FILE``: score every customer of the population at a date.

Features are built at ``as_of`` (``ts < as_of``); every customer of the task's population at that
date gets one row, keyed by ``customer_id`` and by the source systems' own keys (one column per
source from ``identity_links``, several keys joined by ``|``) so a business can join scores back.
Models come from the registry (``champion`` by default, or ``--model candidate`` / a version
number); a version may be a registered baseline (``model_family=baseline:<name>``, shipped by
``promote`` when it beats LightGBM), scored through the same ``predict_frame``. Top reasons
(``--reasons``) are exact per-customer contributions, computed only when asked for because they cost
about 400x a prediction; a baseline has none, which is said before any feature is built. ``as_of``
must lie after the store's first event and at most a month past its last
(:func:`omnicrm.store.check_date`). The output is written to a temporary file and moved into place,
so a failed run leaves the previous file intact; in a ``.csv``, text that a spreadsheet would run as
a formula (an id starting with ``=``) gets a leading ``'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from omnicrm import tracking
from omnicrm.errors import ConfigError, InputError
from omnicrm.features.cutoffs import normalize_cutoff
from omnicrm.progress import Progress, silent
from omnicrm.store.outputs import write_frame
from omnicrm.tasks.config import load_task_config
from omnicrm.tasks.predict import score_frame


@dataclass
class PredictResult:
    """What ``omnicrm predict`` wrote."""

    out: Path
    rows: int
    models: dict[str, str]  # registered name -> version
    columns: list[str]


def source_keys(con, customer_ids: pd.Series) -> pd.DataFrame:  # noqa: ANN001
    """One column ``<source>_key`` per source: the customer's record ids there, ``|``-joined."""
    links = con.sql(
        "SELECT customer_id, source, string_agg(source_record_id, '|' ORDER BY source_record_id) AS k "
        "FROM identity_links GROUP BY customer_id, source"
    ).df()
    links = links[links["customer_id"].isin(customer_ids)]
    wide = links.pivot(index="customer_id", columns="source", values="k")
    wide.columns = [f"{c}_key" for c in wide.columns]
    return wide.reset_index()


def _version(name: str, ref: str) -> tracking.VersionInfo:
    """The registered version ``ref`` (alias or number) of ``name``; a clear error when there is none."""
    info = tracking.find_version(name, ref)
    if info is None:
        raise ConfigError(
            f"predict: registered model '{name}' has no version '{ref}'"
            + (" (promote one with `omnicrm promote`, or pass --model candidate)" if ref == "champion" else "")
        )
    return info


def predict(
    config_path: str | Path,
    as_of: date,
    out: Path,
    model: str | None = None,
    reasons: bool = False,
    progress: Progress = silent,
) -> PredictResult:
    """Score the population at ``as_of`` (checked against the store's events first) and write ``out``."""
    from omnicrm.pipeline.task_frames import feature_source
    from omnicrm.store import check_date, data_range, open_store
    from omnicrm.tasks import frames

    cfg = load_task_config(config_path)
    task = cfg.task
    ref = model or "champion"
    con = open_store(cfg.dataset.store, deterministic=True)
    try:
        check_date(as_of, data_range(con), "--as-of")
        # the registry is asked before the features are built, so a missing champion costs no
        # compute (without labels, every target but an optional one such as CLV's margin)
        for target in task.targets_of():
            info = _version(cfg.registered_name(target), ref)
            family = info.tags.get("model_family", "") if reasons else ""
            if family.startswith("baseline:"):
                raise InputError(
                    f"predict --reasons: {info.name} v{info.version} ({ref}) is the baseline "
                    f"{family.removeprefix('baseline:')!r}, which has no per-customer reasons; drop --reasons, "
                    "or score with a LightGBM version (--model candidate)"
                )
        progress(f"features at {as_of}", 0.1)
        frame = frames.build_frame(
            con, cfg, [as_of], with_labels=False, what="scoring", features=feature_source(cfg.dataset)
        )
        keys = source_keys(con, frame["customer_id"])
    finally:
        con.close()
    result = frame[["customer_id"]].copy()
    result.insert(0, "as_of", pd.Timestamp(normalize_cutoff(as_of)))
    versions: dict[str, str] = {}
    models = {}
    targets = task.targets_of(frame)
    for i, target in enumerate(targets):
        name = cfg.registered_name(target)
        info = _version(name, ref)
        progress(f"scoring {name} v{info.version}", 0.3 + 0.2 * i)
        models[target] = tracking.load_model(tracking.model_uri(name, info.version))
        versions[name] = info.version
    scores = score_frame(task, frame, models, reasons=reasons)
    result = pd.concat([result, scores.set_axis(result.index)], axis=1)
    result["model_versions"] = ",".join(f"{k}:{v}" for k, v in versions.items())
    result = result.merge(keys, on="customer_id", how="left")
    out = write_frame(result, out)
    progress("scores written", 1.0)
    return PredictResult(out, len(result), versions, list(result.columns))
