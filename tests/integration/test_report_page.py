"""The marketing report on a small generated world: the command, the page in a real headless browser."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from omnicrm.cli import app
from omnicrm.store import store_data_range

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
SECTIONS = ("base", "retention", "value", "omni", "satisfaction", "campaigns", "attribution")


def _month(d: date, add: int) -> date:
    m = d.year * 12 + d.month - 1 + add
    return date(m // 12, m % 12 + 1, 1)


@pytest.fixture(scope="module")
def page(small_store: Path, small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """``omnicrm report`` on the small world over its whole months.

    Returns the page, the command's output and the MLflow store folder it logged to.
    """

    store = yaml.safe_load(small_store.read_text())["store"]
    work = tmp_path_factory.mktemp("report")
    cfg = work / "report.yaml"
    truth = small_world / "truth"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "small",
                "store": str(store),
                "truth": {
                    "effects": str(truth / "treatment_effects.parquet"),
                    "record_owner": str(truth / "record_owner.parquet"),
                },
            }
        )
    )
    span = store_data_range(store)
    start, end = _month(span.first.date(), 1), _month(span.last.date(), 0)
    out = work / "report.html"
    mlruns = work / "mlruns"
    # a module fixture starts before the per-test private MLflow store: it sets up its own
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("OMNICRM_MLRUNS", str(mlruns))
        mp.setenv("OMNICRM_LOG_DIR", str(work / "logs"))
        result = CliRunner().invoke(
            app, ["report", str(cfg), "--from", f"{start}", "--to", f"{end}", "--out", str(out)], catch_exceptions=False
        )
    assert result.exit_code == 0, result.output
    return out, result.output, str(mlruns)


def test_the_command_writes_the_page_and_names_it(page: tuple[Path, str, str]) -> None:
    out, output, _ = page
    assert out.is_file()
    assert f"report -> {out}" in output.replace("\n", "")
    for title in ("Customer base", "Campaigns", "Attribution"):
        assert title in output


def test_the_report_is_an_mlflow_run_with_its_kpis_and_the_page(
    page: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from omnicrm import tracking

    out, output, mlruns = page
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("OMNICRM_MLRUNS", mlruns)
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", output.replace("\n", "")).group(1)
    metrics = tracking.run_metrics(run_id)
    assert metrics["orders"] > 0 and "nps" in metrics and "campaign_roi" in metrics
    assert "attribution_over_last_touch" in metrics
    assert tracking.load_run_text(run_id, out.name) == out.read_text(encoding="utf-8")


def test_the_page_fetches_nothing(page: tuple[Path, str, str]) -> None:
    text = page[0].read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    # every reference is an anchor on the page or inline data; nothing points at a server
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", text)
    assert all(r.startswith(("#", "data:")) for r in refs), [r for r in refs if not r.startswith(("#", "data:"))]
    assert "@import" not in text
    assert all(u.startswith(("#", "data:")) for u in re.findall(r"url\(\s*['\"]?([^)'\"]*)", text))


# .ci/run installs chromium first, so in CI (CI set) a missing browser fails instead of skipping
@pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)",
)
def test_the_page_renders_in_a_headless_browser(page: tuple[Path, str, str], tmp_path: Path) -> None:
    out = page[0]
    shot = tmp_path / "report.png"
    common = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
    ]  # fmt: skip
    dom = subprocess.run(
        [*common, f"--user-data-dir={tmp_path / 'profile-dom'}", "--enable-logging=stderr", "--v=0", "--dump-dom",
         out.as_uri()],
        capture_output=True, text=True, timeout=180, check=True,
    )  # fmt: skip
    # a script error or a console message would be logged as "CONSOLE(...)" / "Uncaught"
    assert "Uncaught" not in dom.stderr and "CONSOLE(" not in dom.stderr, dom.stderr[-2000:]
    html = dom.stdout
    for key in SECTIONS:
        m = re.search(rf"<section id=\"?{key}\"?[^>]*>(.*?)</section>", html, re.S)
        assert m, f"section {key} is missing from the rendered page"
        body = m.group(1)
        plots = re.findall(r'class="?plot"? data-marks="?(\d+)"?', body)
        assert plots, f"section {key} has no plot"
        assert all(int(n) > 0 for n in plots), f"section {key} has an empty plot: {plots}"
        assert "<svg" in body
    subprocess.run(
        [*common, f"--user-data-dir={tmp_path / 'profile-shot'}", f"--screenshot={shot}", "--window-size=1400,5000",
         out.as_uri()],
        capture_output=True, text=True, timeout=180, check=True,
    )  # fmt: skip
    print(f"report screenshot: {shot}")  # kept in the test output (pytest -rP shows it)
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1400, 5000)
        pixels = np.asarray(im.convert("RGB").resize((140, 500))).reshape(-1, 3)
    colours = len(np.unique(pixels, axis=0))
    assert colours > 50, "the screenshot is (nearly) blank"


def test_the_demo_writes_the_report_and_prints_its_path(small_store: Path, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from omnicrm.cli.render import console
    from omnicrm.pipeline.demo import DemoConfig, DemoResult, _run_models

    store = yaml.safe_load(small_store.read_text())["store"]
    (tmp_path / "report.yaml").write_text(yaml.safe_dump({"name": "small", "store": str(store)}))
    span = store_data_range(store)
    start, end = _month(span.first.date(), 1), _month(span.last.date(), 0)
    out = tmp_path / "out/demo.html"
    cfg = DemoConfig(
        generate="-",
        ingest="-",
        features="-",
        features_out="-",
        cutoffs={"dates": ["2024-01-01"]},
        report={"config": "report.yaml", "start": start, "end": end, "out": str(out)},
    )
    result = DemoResult(world=None, ingest=None, identity=None, features=None)
    _run_models(cfg, tmp_path, result, lambda step, fraction: None)
    assert result.report.out == out and out.is_file()
    # the demo's last line names the page (print_demo's report line, without the earlier steps)
    from omnicrm.cli import render

    fake = SimpleNamespace(report=result.report)
    with console.capture() as cap:
        render._print_demo_report(fake)
    assert f"-> {out}" in cap.get().replace("\n", "")


def _one_error_line(result) -> str:  # noqa: ANN001 - a typer Result
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_bad_inputs_are_one_clear_error_before_any_work(small_store: Path, tmp_path: Path) -> None:
    store = yaml.safe_load(small_store.read_text())["store"]
    cfg = tmp_path / "report.yaml"
    cfg.write_text(yaml.safe_dump({"name": "small", "store": str(store)}))
    span = store_data_range(store)
    ok_from, ok_to = f"{_month(span.first.date(), 1)}", f"{_month(span.last.date(), 0)}"

    def run(*args: str):  # noqa: ANN202 - a typer Result
        return CliRunner().invoke(app, ["report", *args])

    # --out is checked before the config is read: a folder, a wrong suffix
    line = _one_error_line(
        run(str(tmp_path / "missing.yaml"), "--from", ok_from, "--to", ok_to, "--out", str(tmp_path))
    )
    assert "--out" in line and "is a folder" in line
    assert "--out" in _one_error_line(run(str(cfg), "--from", ok_from, "--to", ok_to, "--out", str(tmp_path / "r.pdf")))
    out = str(tmp_path / "r.html")
    assert "must be after --from" in _one_error_line(run(str(cfg), "--from", ok_to, "--to", ok_from, "--out", out))
    far = f"{span.last.date().year + 2}-01-01"
    assert "--to" in _one_error_line(run(str(cfg), "--from", ok_from, "--to", far, "--out", out))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "small", "store": str(store), "lapse_day": 30}))
    line = _one_error_line(run(str(bad), "--from", ok_from, "--to", ok_to, "--out", out))
    assert "lapse_day" in line and str(bad) in line
    assert not Path(out).exists()
