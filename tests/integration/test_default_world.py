"""The identity targets hold on the embedded default world (20,000 people, two years).

Costs about 25 s (generate 8 s, ingest and link 15 s), so it runs in the default suite: it is the
guard on the figures the README and the demo report.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from omnicrm.config import load_config
from omnicrm.identity.evaluate import evaluate_store
from omnicrm.pipeline.ingest import run_ingest
from omnicrm.synthetic import WorldConfig, generate_world

from ..conftest import ROOT, write_ingest_config

pytestmark = pytest.mark.integration


def test_identity_precision_and_recall_targets_on_default_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(WorldConfig, ROOT / "configs/generate/default.yaml")
    generate_world(cfg, tmp_path / "world")
    ingest = write_ingest_config(tmp_path, tmp_path / "world/raw")
    monkeypatch.setenv("OMNICRM_SALT", "default-world-test")
    result = run_ingest(ingest)
    m = evaluate_store(result.store, tmp_path / "world/truth/record_owner.parquet", "default-world-test")
    assert m.records_without_truth == 0
    assert m.precision >= 0.99, m
    assert m.recall >= 0.95, m
