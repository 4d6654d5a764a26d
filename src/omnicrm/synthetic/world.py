"""Entry point: generate a whole synthetic omni-channel retail world into a directory.

>>> from omnicrm.config import load_config
>>> config = load_config(WorldConfig, "configs/generate/small.yaml")  # doctest: +SKIP
>>> summary = generate_world(config, config.out_dir)  # doctest: +SKIP

The world is a pure function of the config (minus ``out_dir``): the same config gives byte-identical
files. See :mod:`omnicrm.synthetic.contract` for the files and their columns.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from omnicrm.store.staging import staging_dir, sweep_stale_dirs
from omnicrm.synthetic.behaviour import Simulation, simulate
from omnicrm.synthetic.campaigns import CONTROL, CampaignPlan, person_effects, plan_campaigns
from omnicrm.synthetic.catalogue import make_catalogue
from omnicrm.synthetic.config import WorldConfig
from omnicrm.synthetic.contract import RAW_DIR, TRUTH_DIR, WORLD_JSON
from omnicrm.synthetic.fatigue import cadence_truth, contact_truth, plan_cadence, tolerance
from omnicrm.synthetic.formats import epoch_seconds
from omnicrm.synthetic.people import make_population, make_stores, people_truth, person_ids
from omnicrm.synthetic.sources import record_owner, render_sources, row_defects
from omnicrm.synthetic.streams import stream
from omnicrm.synthetic.writer import write_csv, write_json, write_parquet

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class WorldSummary:
    """What :func:`generate_world` produced.

    Attributes
    ----------
    out_dir
        The world directory (``raw/``, ``truth/``, ``world.json``).
    people
        Number of people.
    rows
        Data rows per raw file (file stem -> rows, header excluded).
    truth_rows
        Rows per truth table.
    elapsed_seconds
        Wall-clock time of the generation.
    """

    out_dir: Path
    people: int
    rows: dict[str, int] = field(default_factory=dict)
    truth_rows: dict[str, int] = field(default_factory=dict)
    elapsed_seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        """Rows over all raw files."""
        return sum(self.rows.values())


def treatment_truth(sim: Simulation, plan: CampaignPlan, config: WorldConfig) -> pa.Table:
    """Truth per campaign exposure, wide format.

    Columns: ``person_id, campaign_id, channel, sent_at`` (UTC), ``group`` (treatment/control),
    ``action`` (the arm assigned, or ``control``), ``baseline_p`` (weekly purchase probability
    without any campaign in the send week) and one ``effect_<action>`` column per action: the
    additive change of that person's weekly purchase probability in the send week and the week
    after, had they been given that action (whatever they were assigned).
    """
    e = sim.effects
    x = sim.exposures
    arm = e["arm"].to_numpy()
    actions = np.asarray(list(config.actions) + ["control"])
    cols: dict[str, pa.Array] = {
        "person_id": pa.array(person_ids(e["person"].to_numpy())),
        "campaign_id": pa.array(plan.campaign_id[e["campaign"].to_numpy()]),
        "channel": pa.array(plan.channel[e["campaign"].to_numpy()]),
        "sent_at": pa.array(x["ts"].to_numpy().astype("datetime64[s]")),
        "group": pa.array(np.where(arm == CONTROL, "control", "treatment")),
        "action": pa.array(actions[np.where(arm == CONTROL, len(config.actions), arm)]),
        "baseline_p": pa.array(e["baseline_p"].to_numpy()),
    }
    for a in config.actions:
        cols[f"effect_{a}"] = pa.array(e[f"effect_{a}"].to_numpy())
    return pa.table(cols)


def generate_world(config: WorldConfig, out_dir: Path, progress: Progress | None = None) -> WorldSummary:
    """Generate a synthetic world and write it to ``out_dir``.

    Parameters
    ----------
    config
        The world configuration (``config.out_dir`` is ignored here; the caller passes ``out_dir``).
    out_dir
        Directory to write ``raw/*.csv``, ``truth/*.parquet`` and ``world.json`` to. The world
        is written to a temporary folder beside it and swapped in when complete, so an earlier
        world stays whole if generation fails.
    progress
        Optional callback ``progress(step, fraction)`` with the name of the current step
        (``people``, ``simulate``, ``sources``, ``write``) and the fraction of it done. The
        generator itself prints nothing.

    Returns
    -------
    WorldSummary
        Rows per file, number of people and elapsed seconds.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out_dir.name}."  # staging folders are .<name>.<pid>-<random>: a killed run's are swept
    if out_dir.exists():  # else a killed swap may have left the only copy as .old: keep it for a human
        sweep_stale_dirs(out_dir.parent, prefix)
    staging = staging_dir(out_dir.parent, prefix)
    try:
        summary = _generate(config, staging, progress)
        old = staging.with_name(staging.name + ".old")
        if out_dir.exists():
            out_dir.rename(old)
        staging.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dataclasses.replace(summary, out_dir=out_dir)


def _generate(config: WorldConfig, out_dir: Path, progress: Progress | None) -> WorldSummary:
    began = time.perf_counter()
    report: Progress = progress if progress is not None else (lambda step, fraction: None)
    start_ts = epoch_seconds(config.start_date)
    n_weeks = -(-config.days // 7)

    report("people", 0.0)
    stores = make_stores(config, stream(config.seed, "stores"))
    pop = make_population(config, stores, stream(config.seed, "people"))
    catalogue = make_catalogue(config, stream(config.seed, "catalogue"))
    plan = plan_campaigns(config, n_weeks, start_ts)
    effects = person_effects(pop, list(config.actions), stream(config.seed, "effects"))
    tol = tolerance(pop, stream(config.seed, "tolerance"))
    cadence = plan_cadence(config.cadence, n_weeks)
    report("people", 1.0)

    sim = simulate(
        pop,
        stores,
        catalogue,
        plan,
        effects,
        config,
        stream(config.seed, "behaviour"),
        progress=lambda f: report("simulate", f),
        tol=tol,
        cadence=cadence,
        frng=stream(config.seed, "fatigue"),
    )
    tables = render_sources(config, pop, stores, catalogue, plan, sim, progress=lambda f: report("sources", f))

    rows: dict[str, int] = {}
    for i, (name, table) in enumerate(tables.items()):
        rows[name] = write_csv(out_dir / RAW_DIR / f"{name}.csv", table.columns)
        report("write", (i + 1) / (len(tables) + 1))
    truth = {
        "people": people_truth(pop, config, sim.churn_day),
        "record_owner": record_owner(tables),
        "treatment_effects": treatment_truth(sim, plan, config),
        "row_defects": row_defects(tables),
    }
    truth["contact"] = contact_truth(pop, tol, sim.email_load_end, sim.push_load_end, sim.subscribed_end, catalogue)
    if cadence is not None:
        truth["cadence"] = cadence_truth(
            pop, tol, sim.cadence_load, sim.cadence_who, sim.cadence_arm, cadence, catalogue
        )
    for name, table in truth.items():
        write_parquet(out_dir / TRUTH_DIR / f"{name}.parquet", table)
    truth_rows = {name: table.num_rows for name, table in truth.items()}
    end = np.datetime64(config.start_date, "D") + np.timedelta64(config.days, "D")
    write_json(
        out_dir / WORLD_JSON,
        {
            "generator": "omnicrm.synthetic",
            "config": config.model_dump(mode="json", exclude={"out_dir"}),
            "period": {"start": str(config.start_date), "end_exclusive": str(end), "weeks": n_weeks},
            "people": pop.size,
            "rows": rows,
            "truth_rows": truth_rows,
            "cadence_experiment": None
            if cadence is None
            else {
                "arms": [int(a) for a in cadence.arms],
                "start": str(np.datetime64(config.start_date, "D") + np.timedelta64(7 * cadence.start_week, "D")),
                "weeks": cadence.weeks,
                "follow_weeks": cadence.follow_weeks,
            },
            "campaigns": [
                {"campaign_id": str(c), "channel": str(ch), "sent_at": str(np.datetime64(int(ts), "s"))}
                for c, ch, ts in zip(plan.campaign_id, plan.channel, plan.send_ts, strict=True)
            ],
        },
    )
    report("write", 1.0)
    return WorldSummary(
        out_dir=out_dir, people=pop.size, rows=rows, truth_rows=truth_rows, elapsed_seconds=time.perf_counter() - began
    )
