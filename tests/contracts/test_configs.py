"""Every shipped config loads into its typed model; the CLI documents every command."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from omnicrm.cli import app
from omnicrm.config import load_config
from omnicrm.ingest import load_mapping

from ..conftest import ROOT

pytestmark = pytest.mark.contract

CONFIGS = ROOT / "configs"


def _task_like(path: Path) -> bool:
    return "task:" in path.read_text() and "cutoffs:" in path.read_text()


def _model_for(path: Path):  # noqa: ANN202, C901
    """The typed model of a shipped config, by where it lives (None: a source mapping)."""
    rel = path.relative_to(CONFIGS)
    top, name = rel.parts[0], rel.name
    if top == "tasks" or (top == "examples" and _task_like(path)):
        from omnicrm.tasks.config import load_task_config

        return load_task_config
    if top == "datasets" or (top == "examples" and name == "dataset.yaml"):
        from omnicrm.tasks.config import DatasetConfig

        return DatasetConfig
    if top == "models":
        from omnicrm.tasks.config import ModelConfig

        return ModelConfig
    if top == "search":
        from omnicrm.tasks.config import SearchConfig

        return SearchConfig
    if top == "recommend":
        from omnicrm.recommend.config import load_recommend_config

        return load_recommend_config
    if top == "uplift":
        from omnicrm.pipeline.uplift import load_uplift_config

        return load_uplift_config
    if top == "nba":
        from omnicrm.config import read_yaml
        from omnicrm.nba.catalogue import Catalogue, load_catalogue

        def nba(p: Path) -> None:
            # a catalogue with a store compiles its rules against the features; one without (a table
            # experiment, judged only) is validated, and its evaluation history must exist
            cat = load_catalogue(p) if "store" in read_yaml(p) else load_config(Catalogue, p)
            if cat.evaluation is not None:
                assert (p.parent / cat.evaluation.uplift).is_file(), f"{p}: evaluation.uplift not found"

        return nba
    if top == "frequency":
        from omnicrm.frequency.config import load_frequency_config

        return load_frequency_config
    if top == "score":
        from omnicrm.score.config import load_score_config

        return load_score_config
    if top == "report":
        from omnicrm.report.config import load_report_config

        return load_report_config
    if top == "sources" or (top == "examples" and name not in ("ingest.yaml", "features.yaml")):
        return None
    if top == "generate":
        from omnicrm.synthetic import WorldConfig

        return WorldConfig
    if top == "ingest" or name == "ingest.yaml":
        from omnicrm.pipeline.ingest import IngestConfig

        return IngestConfig
    if top == "features" or name == "features.yaml":
        from omnicrm.features.config import FeatureConfig
        from omnicrm.pipeline.features import FeaturesRunConfig

        return FeaturesRunConfig if "store:" in path.read_text() else FeatureConfig
    if str(rel) == "demo.yaml":
        from omnicrm.pipeline.demo import DemoConfig

        return DemoConfig
    raise AssertionError(f"no model known for shipped config {path}; add it here")


SHIPPED = sorted(p for p in CONFIGS.rglob("*.yaml") if "local" not in p.parts)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_loads(path: Path) -> None:
    model = _model_for(path)
    if model is None:
        load_mapping(path)
    elif isinstance(model, type):
        load_config(model, path)
    else:  # a loader that resolves parts (task configs) or its own sections
        model(path)


def test_ingest_configs_reference_existing_mappings() -> None:
    from omnicrm.pipeline.ingest import load_ingest

    for path in [*(CONFIGS / "ingest").glob("*.yaml"), *(CONFIGS / "examples").glob("*/ingest.yaml")]:
        load_ingest(path)


@pytest.mark.parametrize(
    "command",
    [
        None,
        "generate",
        "ingest",
        "features",
        "demo",
        "train",
        "tune",
        "promote",
        "predict",
        "ui",
        "recommend",
        "recommend-eval",
        "uplift",
        "effects",
        "readout",
        "score",
    ],
)
def test_every_command_has_help(command: str | None) -> None:
    args = [command, "--help"] if command else ["--help"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_cli_reports_user_errors_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "ingest.yaml"
    bad.write_text("raw_dir: x\nstore: y\nsources: []\nsalt: z\n")
    result = CliRunner().invoke(app, ["ingest", str(bad)])
    assert result.exit_code == 2
    assert "unknown key 'salt'" in result.output
    assert "Traceback" not in result.output


def test_generate_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    cfg = CONFIGS / "generate/small.yaml"
    bad = CliRunner().invoke(app, ["generate", str(cfg), "--people", "0"])
    assert bad.exit_code == 2
    assert "(command-line overrides): key 'n_people': Input should be greater than 0" in bad.output
    ok = CliRunner().invoke(app, ["generate", str(cfg), "--people", "50", "--out", str(tmp_path / "w")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "w/raw/crm_members.csv").is_file()
