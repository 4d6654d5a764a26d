"""``omnicrm train`` on the demo's churn task against a bare process fitting the same LightGBM.

Where does a training command spend its time beyond the fit? Both sides run as fresh processes:

* ``omnicrm train``: the command on the demo world's churn config (``make demo`` first: it reads
  ``data/store/omnicrm.duckdb``), once with a **cold** feature cache (a new, empty cache folder) and
  once **warm** (the cache the untimed warm-up run filled), logging and registering into a private
  tracking store (``OMNICRM_MLRUNS`` in the scratch folder; nothing is added to the project's
  ``mlruns/``);
* bare: one process that imports LightGBM and pandas, reads the training and validation matrices
  the task's encoding produced (saved once by the set-up, Parquet), and fits the same estimator with
  the same params, seed and early stopping (``omnicrm.tasks.model.fit_lgbm``'s call, written out);
* bare + refit: the same, then the refit ``omnicrm train`` registers (``model.refit``, the
  default): the same params with the early-stopped tree count on the training, validation and
  evaluation rows stacked (``omnicrm.tasks.train.refit_target``'s fit, written out). A bare process
  that deploys what ``train`` deploys does both fits.

Reps are interleaved (bare, cold, warm in each rep) and the table shows medians over reps and the
median of the per-rep ratios, so load drift on a shared machine moves both sides of a ratio alike.
CPU seconds are the child's user + system time. The breakdown of the command comes from its own
step lines (``[  12.3s] step``, printed when stdout is not a terminal) and, in brackets, from the
training run's metrics (``fit_seconds``, ``frames_seconds``). Every registered model, and every
baseline registered beside it, is loaded afterwards and scores the evaluation frame: the scores must
be identical across all runs (cold and warm, every rep), or the script fails.

    python benchmarks/train.py --reps 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from measure import run

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "configs/tasks/churn.yaml"
STEP = re.compile(r"^\[\s*([0-9.]+)s\] (.*)$")


def _config(folder: Path, name: str, cache: Path) -> Path:
    """The churn config with absolute paths and its own feature cache folder."""
    import yaml

    raw = yaml.safe_load(CONFIG.read_text())
    dataset = yaml.safe_load((CONFIG.parent / raw["dataset"]).read_text())
    features = (CONFIG.parent / raw["dataset"]).parent / dataset["features"]
    dataset |= {
        "store": str(ROOT / dataset["store"]),
        "features": yaml.safe_load(features.read_text()),
        "feature_cache": str(cache),
    }
    raw["dataset"] = dataset
    raw["name"] = "churn"  # the step lines and run names read as the demo's
    for key in ("model", "search"):
        raw[key] = str((CONFIG.parent / raw[key]).resolve())
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _steps(output: str) -> dict[str, float]:
    """Seconds between the command's step lines: frames, fit (with baselines), logging."""
    marks = [(float(m[1]), m[2]) for line in output.splitlines() if (m := STEP.match(line))]
    at = {text: t for t, text in marks}

    def t(prefix: str) -> float:
        return next(v for k, v in at.items() if k.startswith(prefix))

    return {
        "frames": t("churn: fitting"),
        "fit + baselines": t("churn: logging") - t("churn: fitting"),
        "log + register": t("churn: done") - t("churn: logging"),
        "steps": t("churn: done"),
    }


def _save_matrices(config: Path, folder: Path) -> None:
    """The encoded training and validation matrices and the fit's arguments, for the bare process."""
    import pandas as pd

    from omnicrm import quiet
    from omnicrm.pipeline.task_frames import load_frames
    from omnicrm.tasks.config import load_task_config
    from omnicrm.tasks.frames import model_columns
    from omnicrm.tasks.model import DEFAULT_PARAMS, Encoding
    from omnicrm.tasks.train import lgbm_params

    quiet.apply()
    cfg = load_task_config(config)
    frames = load_frames(cfg)
    (target,) = cfg.task.targets_of(frames.train)
    tr, va = target.rows(frames.train), target.rows(frames.validation)
    enc = Encoding.learn(tr, model_columns(tr, cfg.task.label_columns))
    for name, frame in (("train", tr), ("validation", va)):
        X = enc.transform(frame).reset_index(drop=True)
        X["__label"] = frame[target.label].to_numpy()
        X.to_parquet(folder / f"{name}.parquet")
    # the refit's rows, encoded afresh on them as refit_target does
    rows = pd.concat([target.rows(f) for f in (frames.train, frames.validation, frames.evaluation)], ignore_index=True)
    refit_enc = Encoding.learn(rows, enc.features)
    X = refit_enc.transform(rows).reset_index(drop=True)
    X["__label"] = rows[target.label].to_numpy()
    X.to_parquet(folder / "refit.parquet")
    spec = {"params": DEFAULT_PARAMS | lgbm_params(cfg, target), "rounds": cfg.model.early_stopping_rounds}
    (folder / "fit.json").write_text(json.dumps(spec))


def bare(folder: str, refit: bool) -> None:
    """The bare process (run by :func:`main` as ``--bare FOLDER [--refit]``): read the matrices, fit, report."""
    import lightgbm as lgb
    import pandas as pd

    spec = json.loads((Path(folder) / "fit.json").read_text())
    tr = pd.read_parquet(Path(folder) / "train.parquet")
    va = pd.read_parquet(Path(folder) / "validation.parquet")
    y_tr, y_va = tr.pop("__label").to_numpy(), va.pop("__label").to_numpy()
    est = lgb.LGBMClassifier(**spec["params"])
    est.fit(
        tr,
        y_tr,
        eval_X=(va,),
        eval_y=(y_va,),
        eval_names=["valid"],
        callbacks=[lgb.early_stopping(spec["rounds"], verbose=False), lgb.log_evaluation(0)],
    )
    if refit:  # model.refit_trees: keep (the default): the early-stopped tree count
        rows = pd.read_parquet(Path(folder) / "refit.parquet")
        y = rows.pop("__label").to_numpy()
        lgb.LGBMClassifier(**(spec["params"] | {"n_estimators": max(est.best_iteration_, 1)})).fit(rows, y)
    print(json.dumps({"best_iteration": est.best_iteration_}))


def _score_hashes(config: Path, versions: list[str], mlruns: Path) -> dict[str, str]:
    """Each registered version's scores on the evaluation frame, hashed (identical runs: equal hashes)."""
    os.environ["OMNICRM_MLRUNS"] = str(mlruns)
    from omnicrm import quiet, tracking
    from omnicrm.pipeline.task_frames import load_frames
    from omnicrm.tasks.config import load_task_config

    quiet.apply()
    ev = load_frames(load_task_config(config)).evaluation
    out = {}
    for v in versions:
        model = tracking.load_model(tracking.model_uri("omnicrm-churn", v))
        out[v] = hashlib.sha256(model.predict_frame(ev).to_numpy().tobytes()).hexdigest()[:16]
    return out


def main() -> None:
    """Set up, run the reps interleaved, check the models, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument(
        "--before", metavar="SRC", help="also run the command from this source tree (e.g. an older commit's src/)"
    )
    parser.add_argument("--bare", metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--refit", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare(args.bare, args.refit)
        return
    if not (ROOT / "data/store/omnicrm.duckdb").is_file():
        raise SystemExit("no data/store/omnicrm.duckdb: run `make demo` first")
    work = Path(args.work or tempfile.mkdtemp(prefix="omnicrm-bench-train-"))
    mlruns = work / "mlruns"
    shutil.rmtree(work, ignore_errors=True)
    mlruns.mkdir(parents=True)
    env = os.environ | {"OMNICRM_MLRUNS": str(mlruns), "PYTHONPATH": str(ROOT / "src")}
    env.pop("MLFLOW_TRACKING_URI", None)
    omnicrm = [str(Path(sys.executable).parent / "omnicrm")]
    print(f"load before: {os.getloadavg()}", flush=True)
    warm = _config(work, "warm", work / "cache-warm")
    # untimed: creates the tracking database and fills the warm cache
    run([*omnicrm, "train", str(warm)], env)
    _save_matrices(warm, work)
    trees = {"": ROOT / "src"} | ({"before ": Path(args.before).resolve()} if args.before else {})
    kinds = [f"{tag}{kind}" for tag in trees for kind in ("cold", "warm")]
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in ("bare", "bare + refit", *kinds)}
    outputs = []
    for rep in range(args.reps):
        wall, cpu, _ = run([sys.executable, __file__, "--bare", str(work)], env)
        rows["bare"].append({"wall": wall, "cpu": cpu})
        wall, cpu, _ = run([sys.executable, __file__, "--bare", str(work), "--refit"], env)
        rows["bare + refit"].append({"wall": wall, "cpu": cpu})
        for i, kind in enumerate(kinds):
            tag, _, temp = kind.rpartition(" ")
            config = _config(work, f"cold{rep}-{i}", work / f"cache-cold{rep}-{i}") if temp == "cold" else warm
            tree_env = env | {"PYTHONPATH": str(trees[f"{tag} " if tag else ""])}
            wall, cpu, out = run([*omnicrm, "train", str(config)], tree_env)
            rows[kind].append({"wall": wall, "cpu": cpu, **_steps(out)})
            outputs.append(out)
        print(json.dumps({k: v[-1] for k, v in rows.items()}), flush=True)
    print(f"load after: {os.getloadavg()}")
    # the model and its registered baseline, every run: the baselines fit on other threads too
    models = sorted({m for out in outputs for m in re.findall(r"model v(\d+), baseline", out)}, key=int)
    baselines = sorted({m for out in outputs for m in re.findall(r"baseline \w+ v(\d+)\)", out)}, key=int)
    for what, versions in (("models", models), ("baselines", baselines)):
        hashes = _score_hashes(warm, versions, mlruns)
        print(f"registered {what} v{', v'.join(versions)}: evaluation scores sha256 {sorted(set(hashes.values()))}")
        if len(set(hashes.values())) != 1:
            raise SystemExit(f"{what} differ between runs: {hashes}")
    med = {k: {c: statistics.median(r[c] for r in v) for c in v[0]} for k, v in rows.items()}
    print(
        "\n| process | wall s | CPU s | wall / bare (median) | wall / bare + refit (median) | frames s "
        "| fit + baselines s | log + register s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind in rows:
        m = med[kind]
        ratios = [
            statistics.median(c["wall"] / b["wall"] for c, b in zip(rows[kind], rows[ref], strict=True))
            for ref in ("bare", "bare + refit")
        ]
        steps = (
            f"{m['frames']:.2f} | {m['fit + baselines']:.2f} | {m['log + register']:.2f}"
            if not kind.startswith("bare")
            else "— | — | —"
        )
        print(f"| {kind} | {m['wall']:.2f} | {m['cpu']:.2f} | {ratios[0]:.2f}× | {ratios[1]:.2f}× | {steps} |")


if __name__ == "__main__":
    main()
