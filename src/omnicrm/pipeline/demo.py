"""``omnicrm demo``: the whole workbench on the synthetic world.

Generate the world, ingest it, resolve identities, build features, then train every prediction
task next to its baselines (one of them tuned with a short Optuna study) and promote each trained
model to ``champion`` (so ``omnicrm predict`` works right after the demo), evaluate the recommenders
and write recommendations, estimate uplift and read out the campaigns, and write the marketing
report (``report``: an HTML page). The recommender that
wrote the lists and the uplift config's effect model (fitted at ``effects.as_of``) are registered and
promoted too, so ``omnicrm recommend ... --model champion`` and ``omnicrm effects ... --model
champion`` score without refitting after the demo. Then it builds a next-best-action list with those
champions (``nba``: the synthetic catalogue at the end of the data; its constraints re-checked against
the store, any violation fails the demo). Last (``frequency``) it learns the contact cadence of every
customer from the newsletter cadence experiment and prints the class counts and the headline
comparison (learned against the best static cap and the current cadence, on the truth and
off-policy). Model runs go to the MLflow store (``mlruns/``
unless ``MLFLOW_TRACKING_URI`` is set); ``omnicrm ui`` shows them.

Promotion goes through :func:`omnicrm.pipeline.promote.promote`: a model without a champion gets the
better of its candidate and the baseline registered with it (a baseline that beats LightGBM is what
ships); on a later demo run that better one is compared with the champion on the same evaluation
cutoff and a worse one is refused (the champion stays, the refusal is reported).

The demo is the one place that reads the synthetic ground truth: to *report* how well identity
resolution recovered the true people. The pipeline steps themselves never see it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

from omnicrm.config import StrictModel, load_config
from omnicrm.errors import ConfigError
from omnicrm.features.cutoffs import CutoffSpec
from omnicrm.identity.evaluate import PairwiseMetrics
from omnicrm.pipeline.features import FeaturesResult, run_features
from omnicrm.pipeline.ingest import IngestResult, evaluate_identity, load_ingest, run_ingest
from omnicrm.progress import Progress, silent
from omnicrm.synthetic import WorldSummary


class TuneStep(StrictModel):
    """A short Optuna study on one task (the tuned model is registered like any trained one)."""

    config: str
    trials: int = 6


class RecommendStep(StrictModel):
    """Evaluate the recommenders on their time split, then write top-k lists at ``as_of``."""

    config: str
    as_of: date
    out: str


class ReportStep(StrictModel):
    """Write the marketing report of the period ``[start, end)`` (``omnicrm report``) to ``out``."""

    config: str
    start: date
    end: date
    out: str


class EffectsStep(StrictModel):
    """Fit the uplift config's effects learner at ``as_of``, write every customer's effects, register the model."""

    as_of: date
    out: str


class NbaStep(StrictModel):
    """Build the next-best-action list of the catalogue ``config`` at ``as_of`` (``omnicrm nba``) into ``out``.

    With ``evaluate`` the catalogue is then judged off-policy (``omnicrm nba-eval``).
    """

    config: str
    as_of: date
    out: str
    evaluate: bool = True


class FrequencyStep(StrictModel):
    """Learn the contact cadence per customer from the cadence experiment (``omnicrm frequency``) at ``as_of``."""

    config: str
    as_of: date
    out: str


class DemoConfig(StrictModel):
    """Paths of the step configs (relative to this file) and the demo's cutoffs and outputs."""

    generate: str
    ingest: str
    features: str
    cutoffs: CutoffSpec
    features_out: str
    truth_dir: str | None = None
    tasks: list[str] = []  # task configs trained in order
    tune: TuneStep | None = None
    recommend: RecommendStep | None = None
    uplift: str | None = None  # uplift config: effects + Qini, then the campaign readout
    effects: EffectsStep | None = None  # then the uplift config's effect model, registered and promoted
    nba: NbaStep | None = None  # then a next-best-action list from the champions above
    report: ReportStep | None = None  # the marketing report page (champion CLV from the tasks above)
    frequency: FrequencyStep | None = None  # last: learned contact cadences per customer, judged on the truth


class Promotion(NamedTuple):
    """What the demo did with one registered model's ``champion`` alias.

    ``version`` is the champion after the step; ``note`` says why (promoted, or a worse candidate refused).
    """

    name: str
    version: str
    note: str


@dataclass
class DemoResult:
    world: WorldSummary
    ingest: IngestResult
    identity: PairwiseMetrics | None
    features: FeaturesResult
    tasks: list[Any] = field(default_factory=list)  # TargetResult of every trained target
    tuning: list[Any] = field(default_factory=list)  # TuneResult
    promotions: list[Promotion] = field(default_factory=list)  # one per registered model trained
    recommend_eval: Any = None
    recommendations: Any = None
    uplift: Any = None
    readout: Any = None
    effects: Any = None  # EffectsResult of the registered effect model
    nba: Any = None  # NbaResult of the next-best-action list
    nba_seconds: float | None = None  # wall time of the nba step
    nba_eval: Any = None  # NbaEvalResult: the catalogue judged off-policy
    nba_eval_seconds: float | None = None
    report: Any = None  # ReportResult of the marketing report
    frequency: Any = None  # FrequencyResult: learned cadences, their classes and the headline comparison


def run_demo(config_path: str | Path, progress: Progress = silent) -> DemoResult:
    """Run every step of the demo in order; see the module docstring."""
    from omnicrm.synthetic import WorldConfig, generate_world

    config_path = Path(config_path)
    cfg = load_config(DemoConfig, config_path)
    base = config_path.parent
    world_cfg = load_config(WorldConfig, base / cfg.generate)
    ingest_cfg, _ = load_ingest(base / cfg.ingest)
    expected_raw = Path(world_cfg.out_dir) / "raw"
    if Path(ingest_cfg.raw_dir) != expected_raw:
        raise ConfigError(
            f"{config_path}: the ingest config reads {ingest_cfg.raw_dir} but the world is written to "
            f"{expected_raw}; make them agree"
        )
    world = generate_world(world_cfg, Path(world_cfg.out_dir), progress=lambda s, f: progress(f"generate: {s}", f))
    ingested = run_ingest(base / cfg.ingest, progress=progress)
    metrics = evaluate_identity(base / cfg.ingest, cfg.truth_dir) if cfg.truth_dir else None
    feats = run_features(base / cfg.features, cfg.cutoffs.as_list(), Path(cfg.features_out), progress=progress)
    result = DemoResult(world, ingested, metrics, feats)
    _run_models(cfg, base, result, progress)
    return result


def _run_models(cfg: DemoConfig, base: Path, result: DemoResult, progress: Progress) -> None:
    """Prediction tasks (one tuned), recommender, uplift: each step reads the store just published."""
    if cfg.tasks or cfg.tune:
        from omnicrm.pipeline.train import train
        from omnicrm.pipeline.tune import tune

        tuned_path = (base / cfg.tune.config).resolve() if cfg.tune else None
        for task in cfg.tasks:
            path = base / task
            if tuned_path is not None and path.resolve() == tuned_path:
                assert cfg.tune is not None
                tuned, results = tune(path, progress=progress, n_trials=cfg.tune.trials)
                result.tuning += tuned
            else:
                results = train(path, progress=progress)
            result.tasks += results
        result.promotions = promote_trained(result.tasks, progress)
    if cfg.recommend:
        from omnicrm.pipeline.recommend import evaluate_recommenders, write_recommendations

        rec = base / cfg.recommend.config
        result.recommend_eval = evaluate_recommenders(rec, progress=progress)
        result.recommendations = write_recommendations(rec, cfg.recommend.as_of, Path(cfg.recommend.out), progress)
        _promote_registered(result, result.recommendations.registered_name, progress)
    if cfg.uplift:
        from omnicrm.pipeline.uplift import run_readout, run_uplift

        result.uplift = run_uplift(base / cfg.uplift, progress=progress)
        result.readout = run_readout(base / cfg.uplift, progress=progress)
        _register_effects(cfg, base, result, progress)
    if cfg.nba:
        import time

        from omnicrm.pipeline.nba import run_nba

        started = time.perf_counter()
        result.nba = run_nba(base / cfg.nba.config, cfg.nba.as_of, Path(cfg.nba.out), progress=progress)
        result.nba_seconds = time.perf_counter() - started
        if cfg.nba.evaluate:
            from omnicrm.pipeline.nba_eval import run_nba_eval

            started = time.perf_counter()
            result.nba_eval = run_nba_eval(base / cfg.nba.config, progress=progress)
            result.nba_eval_seconds = time.perf_counter() - started
    if cfg.report:
        from omnicrm.pipeline.report import run_report

        r = cfg.report
        result.report = run_report(base / r.config, r.start, r.end, Path(r.out), progress=progress)
    if cfg.frequency:
        from datetime import datetime, time

        from omnicrm.pipeline.frequency import run_frequency

        fr = cfg.frequency
        as_of = datetime.combine(fr.as_of, time())
        result.frequency = run_frequency(base / fr.config, as_of, Path(fr.out), progress=progress)


def promote_trained(results: list[Any], progress: Progress = silent) -> list[Promotion]:
    """Promote the better of candidate and baseline of every registered model in ``results`` unless it is worse.

    The better of a model's candidate and its registered baseline becomes champion when there is none;
    later, it must score at least as well as the champion on the same evaluation cutoff
    (:func:`~omnicrm.pipeline.promote.promote`), else the champion stays and the refusal is recorded
    instead of stopping the demo.
    """
    from omnicrm.pipeline.promote import PromotionRefused, promote

    out = []
    for name in dict.fromkeys(r.registered_name for r in results if r.version is not None):
        try:
            p = promote(name, progress=progress)
        except PromotionRefused as refused:
            r = refused.result
            note = f"{r.note} ({r.figures()})"
            out.append(Promotion(name, str(r.champion_before), note))
            continue
        out.append(Promotion(name, str(p.champion_after or p.champion_before), p.note))
    return out


def _promote_registered(result: DemoResult, name: str | None, progress: Progress) -> None:
    """Promote the candidate of a registered recommender or effect model; record what happened.

    The first candidate becomes champion. Later ones are compared with the champion on data neither
    has seen (:func:`~omnicrm.pipeline.promote_models.promote_model`); when there is none (the demo
    fits at the end of its data) or the candidate is worse, the champion stays and the note says why.
    """
    if name is None:  # the served method cannot be registered (the refit's result says why)
        return
    from omnicrm.pipeline.promote import PromotionRefused
    from omnicrm.pipeline.promote_models import promote_model

    try:
        p = promote_model(name, progress=progress)
    except PromotionRefused as refused:
        r = refused.result
        result.promotions.append(Promotion(name, str(r.champion_before), r.note))
        return
    result.promotions.append(Promotion(name, p.candidate if p.promoted else str(p.champion_before), p.note))


def _register_effects(cfg: DemoConfig, base: Path, result: DemoResult, progress: Progress) -> None:
    """Fit and register the uplift config's effect model at ``effects.as_of``, write its effects, promote it.

    The held-out Qini of the same learner and outcome from the uplift evaluation just run is tagged
    on the version when it was computed on the same exposures.
    """
    if cfg.effects is None or cfg.uplift is None:
        return
    from omnicrm.pipeline.uplift import HeldOutQini, load_uplift_config, write_effects

    path = base / cfg.uplift
    ucfg, _ = load_uplift_config(path)
    qini = None
    ev = result.uplift.evaluations.get(ucfg.effects.outcome) if result.uplift is not None else None
    if ev is not None:
        summary = ev.summary()
        rows = summary[(summary["learner"] == ucfg.effects.learner) & (summary["metric"] == "qini")]
        if len(rows):
            source = f"omnicrm uplift run {result.uplift.run_id}: mean over {ucfg.evaluation.seeds} split seeds"
            by_action = dict(zip(rows["action"].astype(str), rows["mean"].astype(float), strict=True))
            qini = HeldOutQini(result.uplift.rows, by_action, source)
    result.effects = write_effects(path, cfg.effects.as_of, Path(cfg.effects.out), progress, qini=qini)
    _promote_registered(result, result.effects.registered_name, progress)
