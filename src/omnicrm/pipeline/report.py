"""``omnicrm report CONFIG --from DATE --to DATE --out report.html``: the marketing report of a store.

Wiring only: reads the report config (:mod:`omnicrm.report.config`), opens the store read-only
(``deterministic``: sums of doubles come out the same on every run), asks the registry for the
champion CLV model of the config's CLV task and scores the customers at ``--to`` with it (when none
is registered, :func:`omnicrm.report.build.build_report` fits the classic BG/NBD + Gamma-Gamma
model instead), reads the synthetic truth when the config names it, builds and renders the
report, writes the page atomically and logs it as an artifact of an ``omnicrm-report`` MLflow run
whose metrics are the headline KPIs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pandas as pd

from omnicrm.errors import ConfigError, InputError
from omnicrm.features.cutoffs import normalize_cutoff
from omnicrm.progress import Progress, silent
from omnicrm.report.build import Report, build_report
from omnicrm.report.config import ReportConfig, load_report_config
from omnicrm.report.page import render

__all__ = ["HTML", "ReportResult", "champion_clv", "read_truth", "run_report"]

#: the file types ``--out`` takes
HTML = (".html", ".htm")


@dataclass
class ReportResult:
    """What ``omnicrm report`` wrote: the page, the report behind it and the MLflow run."""

    out: Path
    report: Report
    clv_source: str
    run_id: str | None = None


def champion_clv(cfg: ReportConfig, config_path: Path, con, as_of: datetime) -> tuple[pd.DataFrame | None, str]:  # noqa: ANN001
    """CLV scores at ``as_of`` from the registered model ``cfg.clv.model`` of the CLV task, if there is one.

    Parameters
    ----------
    cfg : ReportConfig
        The report config (its ``clv`` block).
    config_path : pathlib.Path
        The report config file (``clv.task`` is relative to its folder).
    con : duckdb.DuckDBPyConnection
        The store.
    as_of : datetime.datetime
        Scoring date (features read ``ts < as_of``).

    Returns
    -------
    tuple
        ``(customer_id, clv)`` frame or ``None``, and a sentence naming the source.
    """
    from omnicrm import tracking

    if cfg.clv.task is None:
        return None, ""
    from omnicrm.pipeline.task_frames import feature_source
    from omnicrm.tasks import frames
    from omnicrm.tasks.config import load_task_config

    task_cfg = load_task_config(config_path.parent / cfg.clv.task)
    target = task_cfg.task.targets_of()[0]
    name = task_cfg.registered_name(target)
    info = tracking.find_version(name, cfg.clv.model)
    if info is None:
        return None, ""
    frame = frames.build_frame(
        con, task_cfg, [as_of], with_labels=False, what="scoring", features=feature_source(task_cfg.dataset)
    )
    model = tracking.load_model(tracking.model_uri(name, info.version))
    scores = model.predict_frame(frame)
    clv = pd.DataFrame({"customer_id": frame["customer_id"].to_numpy(), "clv": scores[target.score_column].to_numpy()})
    horizon = task_cfg.task.horizon_days
    return clv, f"registered model {name} v{info.version} ({cfg.clv.model}), spend in the next {horizon} days"


def read_truth(cfg: ReportConfig, config_path: Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The synthetic truth files the config names (``None`` without a ``truth`` block)."""
    if cfg.truth is None:
        return None
    frames = []
    for key, path in (("effects", cfg.truth.effects), ("record_owner", cfg.truth.record_owner)):
        if not Path(path).is_file():
            raise InputError(f"{config_path}: key 'truth.{key}': {path} not found")
        try:
            frames.append(pd.read_parquet(path))
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
            raise InputError(f"{config_path}: key 'truth.{key}': cannot read {path} ({exc})") from exc
    return frames[0], frames[1]


def run_report(
    config_path: str | Path, start: date, end: date, out: str | Path, progress: Progress = silent
) -> ReportResult:
    """Build the report over ``[start, end)``, write the page to ``out`` and log it to MLflow."""
    from omnicrm import tracking
    from omnicrm.store import check_date, data_range, open_store
    from omnicrm.store.outputs import check_output_path
    from omnicrm.store.staging import staged

    config_path = Path(config_path)
    out = check_output_path(out, HTML)
    cfg, feats = load_report_config(config_path)
    t0, t1 = normalize_cutoff(start), normalize_cutoff(end)
    if t1 <= t0:
        raise ConfigError(f"--to {t1:%Y-%m-%d} must be after --from {t0:%Y-%m-%d}")
    con = open_store(cfg.store, deterministic=True)
    try:
        # the dates are checked before anything is read or computed
        span = data_range(con)
        check_date(t0, span, "--from", before_first=True)
        check_date(t1, span, "--to")
        truth = read_truth(cfg, config_path)
        progress("report: CLV scores", 0.02)
        clv, source = champion_clv(cfg, config_path, con, t1)
        report = build_report(con, cfg, feats, t0, t1, clv, source, truth, progress)
    finally:
        con.close()
    progress("report: page", 0.9)
    page = render(report)
    with staged(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    value = next(
        (b.note for s in report.sections if s.key == "value" for b in s.blocks if b.title == "CLV deciles"), ""
    )
    tags = {"task": "report", "dataset": cfg.name, "from": f"{t0:%Y-%m-%d}", "to": f"{t1:%Y-%m-%d}"}
    with tracking.start_run(cfg.experiment, f"report-{cfg.name}", tags=tags) as run:
        tracking.log_config(cfg.model_dump(mode="json"))
        tracking.log_params({"from": f"{t0:%Y-%m-%d}", "to": f"{t1:%Y-%m-%d}", "store": cfg.store})
        tracking.log_metrics(report.kpis)
        tracking.log_artifact(out)
        run_id = run.run_id
    progress("report: done", 1.0)
    return ReportResult(out, report, source or value, run_id)
