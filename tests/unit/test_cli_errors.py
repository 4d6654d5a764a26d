"""The command line's failure contract, on the tiny three-source world.

A user error prints one ``error:`` line and exits 2; an interrupt prints one ``interrupted:`` line
and exits 130; anything else exits 1 with one line naming the log file that holds the traceback.
Output paths and dates are refused before any work, and a failure leaves earlier outputs (and the
store) byte for byte as they were.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from omnicrm.cli import app

CUTOFF = "2023-06-01"  # the tiny world's events run from 2023-03-05 to 2023-07-01


def run(*args: str, **env: str):  # noqa: ANN201 - a typer Result
    return CliRunner().invoke(app, list(args), env=env or None)


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the first test keeps the store and features it built, for the others to copy."""
    return tmp_path_factory.mktemp("built")


@pytest.fixture
def world(tiny_sources: Path, built: Path) -> Path:
    """The tiny world ingested (store/omnicrm.duckdb), a features config and one features output.

    The first test builds them with the CLI; later ones copy its files (same raw files, same store).
    """
    root = tiny_sources.parent
    (root / "features.yaml").write_text(yaml.safe_dump({"store": "store/omnicrm.duckdb", "features": {}}))
    files = ["store/omnicrm.duckdb", "out/f.parquet"]
    if not (built / files[-1]).exists():
        res = run("ingest", str(tiny_sources))
        assert res.exit_code == 0, res.output
        res = run("features", "features.yaml", "--cutoff", CUTOFF, "--out", "out/f.parquet")
        assert res.exit_code == 0, res.output
        for f in files:
            (built / f).parent.mkdir(exist_ok=True)
            shutil.copyfile(root / f, built / f)
    for f in files:
        (root / f).parent.mkdir(exist_ok=True)
        shutil.copyfile(built / f, root / f)
    return root


@pytest.fixture
def no_features(monkeypatch: pytest.MonkeyPatch) -> None:
    """The feature pipeline must not run at all (a check came first)."""

    def refuse(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        raise AssertionError("run_features ran although the input was refused")

    monkeypatch.setattr("omnicrm.pipeline.features.run_features", refuse)


def store_bytes(world: Path) -> bytes:
    return (world / "store/omnicrm.duckdb").read_bytes()


# --- output paths: refused in a second, before the compute ---


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("out", "--out out: is a folder; give a file path ending in .parquet or .pq"),
        ("features.yaml/f.parquet", "features.yaml is a file, so the output cannot be written under it"),
        ("out/f.xlsx", "--out out/f.xlsx: file type '.xlsx'; this command writes .parquet or .pq files"),
    ],
)
def test_features_refuses_an_unusable_out_before_any_work(
    world: Path, no_features: None, out: str, message: str
) -> None:
    before = (world / "out/f.parquet").read_bytes()
    res = run("features", "features.yaml", "--cutoff", CUTOFF, "--out", out)
    assert res.exit_code == 2
    assert one_line(res.output).startswith("error: ") and message in res.output
    assert (world / "out/f.parquet").read_bytes() == before
    assert sorted(p.name for p in (world / "out").iterdir()) == ["f.parquet"]


@pytest.mark.parametrize(
    ("command", "out", "message"),
    [
        ("predict", "scores.json", "file type '.json'; this command writes .parquet, .pq or .csv files"),
        ("recommend", "scores.csv", "file type '.csv'; this command writes .parquet or .pq files"),
        ("effects", ".", "--out .: is a folder"),
    ],
)
def test_scoring_commands_check_out_before_reading_their_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, out: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    res = run(command, "no-such-config.yaml", "--as-of", "2024-01-01", "--out", out)
    assert res.exit_code == 2
    assert message in one_line(res.output)


# --- a store that is not one ---


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_store_is_one_clear_error(world: Path, damage: str) -> None:
    store = world / "store/omnicrm.duckdb"
    data = store.read_bytes()
    store.write_bytes(b"not a database\n" * 100 if damage == "garbage" else data[: len(data) // 2])
    before = (world / "out/f.parquet").read_bytes()
    res = run("features", "features.yaml", "--cutoff", CUTOFF, "--out", "out/f.parquet")
    assert res.exit_code == 2
    line = one_line(res.output)
    assert line.startswith("error: store/omnicrm.duckdb: not a readable omnicrm store (")
    assert line.endswith("); re-run `omnicrm ingest`")
    assert (world / "out/f.parquet").read_bytes() == before


# --- dates against the store's data ---


@pytest.mark.parametrize(
    ("cutoff", "message"),
    [
        ("0001-01-01", "--cutoff 0001-01-01 is before the store's first event (2023-03-05); "
                       "the store covers 2023-03-05 .. 2023-07-01"),
        ("1900-01-01", "--cutoff 1900-01-01 is before the store's first event (2023-03-05); "
                       "the store covers 2023-03-05 .. 2023-07-01"),
        ("2023-03-05", "--cutoff 2023-03-05 is the day of the store's first event"),
        ("2030-01-01", "--cutoff 2030-01-01 is 2376 days after the store's last event (2023-07-01); "
                       "the store covers 2023-03-05 .. 2023-07-01. At most 31 days are allowed"),
    ],
)  # fmt: skip
def test_a_cutoff_outside_the_data_is_refused(world: Path, cutoff: str, message: str) -> None:
    before = (world / "out/f.parquet").read_bytes()
    res = run("features", "features.yaml", "--cutoff", CUTOFF, "--cutoff", cutoff, "--out", "out/f.parquet")
    assert res.exit_code == 2
    assert one_line(res.output).startswith(f"error: {message}")
    assert (world / "out/f.parquet").read_bytes() == before


def test_a_cutoff_a_little_after_the_data_warns(world: Path) -> None:
    res = run("features", "features.yaml", "--cutoff", "2023-07-20", "--out", "out/late.parquet")
    assert res.exit_code == 0, res.output
    assert "warning: --cutoff 2023-07-20 is 19 days after the store's last event (2023-07-01)" in res.output
    quiet = run("features", "features.yaml", "--cutoff", "2023-07-02", "--out", "out/next-day.parquet")
    assert quiet.exit_code == 0 and "warning" not in quiet.output


def test_an_unparseable_date_stays_a_usage_error(world: Path) -> None:
    res = run("features", "features.yaml", "--cutoff", "2023-13-01", "--out", "out/f.parquet")
    assert res.exit_code == 2
    assert "Invalid value for '--cutoff'" in res.output and "Traceback" not in res.output


def write_churn_config(world: Path) -> None:
    """``churn.yaml``: a churn task on the tiny store (nothing registered for it)."""
    task = {
        "dataset": {"name": "tiny", "store": "store/omnicrm.duckdb", "features": {}, "feature_cache": None},
        "task": {"kind": "churn", "horizon_days": 30},
        "cutoffs": {"train": {"dates": ["2023-04-01"]}, "validation": "2023-05-15", "evaluation": "2023-06-20"},
    }
    (world / "churn.yaml").write_text(yaml.safe_dump(task))


def test_predict_as_of_far_after_the_data_is_an_error_and_a_little_after_a_warning(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_churn_config(world)
    res = run("predict", "churn.yaml", "--as-of", "2024-01-01", "--out", "out/s.csv")
    assert res.exit_code == 2
    assert one_line(res.output).startswith(
        "error: --as-of 2024-01-01 is 184 days after the store's last event (2023-07-01)"
    )

    def stop(*args, **kwargs) -> None:  # noqa: ANN002, ANN003 - no model registry is needed to see the warning
        from omnicrm.errors import InputError

        raise InputError("stopped after the date check")

    # a registry stand-in with a champion: the models are loaded beside the features, never reached here
    monkeypatch.setattr("omnicrm.pipeline.predict._load_models", lambda *args: None)
    monkeypatch.setattr("omnicrm.tasks.frames.build_frame", stop)
    res = run("predict", "churn.yaml", "--as-of", "2023-07-15", "--out", "out/s.csv")
    assert res.exit_code == 2
    assert "warning: --as-of 2023-07-15 is 14 days after the store's last event (2023-07-01)" in res.output
    assert "error: stopped after the date check" in res.output
    assert not (world / "out/s.csv").exists()


def test_predict_without_a_champion_stops_the_feature_query_and_says_so(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry is read while the features are built: its error interrupts the query at once.

    The feature build is replaced by DuckDB queries for 90 s; the run must end with the registry's
    error (exit 2, not the interrupt's 130) before that, and write nothing.
    """
    write_churn_config(world)

    def endless(con, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        # one query after another for 90 s (a regression fails here rather than hanging the suite)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            con.sql("SELECT count(*) FROM range(200000000) t(x) WHERE x % 7 = 3").fetchall()
        raise AssertionError("the feature query was not interrupted")

    monkeypatch.setattr("omnicrm.tasks.frames.build_frame", endless)
    started = time.monotonic()
    res = run("predict", "churn.yaml", "--as-of", "2023-07-01", "--out", "out/s.csv")
    assert res.exit_code == 2, res.output
    # the features had started (their step line), the error ends the output
    assert res.output.strip().splitlines()[-1] == (
        "error: predict: registered model 'omnicrm-churn' has no version 'champion' "
        "(promote one with `omnicrm promote`, or pass --model candidate)"
    )
    assert time.monotonic() - started < 90
    assert not (world / "out/s.csv").exists()


# --- ingest ---


@pytest.mark.parametrize("truth", ["/nope", "maps", "ingest.yaml"])
def test_ingest_with_an_unusable_truth_folder_leaves_the_store_untouched(world: Path, truth: str) -> None:
    before = store_bytes(world)
    res = run("ingest", "ingest.yaml", "--truth", truth)
    assert res.exit_code == 2
    line = one_line(res.output)
    assert line.startswith(f"error: --truth {truth}: ")
    assert "truth folder" in line
    assert store_bytes(world) == before


def test_ingest_removes_temporary_files_of_a_killed_run(world: Path) -> None:
    dead = 999_999_999  # above any pid_max: no such process
    stale = world / f"store/.omnicrm.duckdb.{dead}.0badc0de.tmp"
    stale.write_bytes(b"x" * 1000)
    wal = stale.with_name(stale.name + ".wal")
    wal.write_bytes(b"y")
    res = run("ingest", "ingest.yaml")
    assert res.exit_code == 0, res.output
    for p in (stale, wal):  # named as the config names the store: relative to the working folder
        assert f"warning: removed stale temporary file store/{p.name} left by a killed run (pid {dead})" in res.output
    assert not stale.exists() and not wal.exists()
    assert sorted(p.name for p in (world / "store").iterdir()) == ["omnicrm.duckdb"]


# --- failures that are not the user's ---


def test_an_unexpected_exception_is_one_line_and_a_log(
    world: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def crash(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        raise ZeroDivisionError("float division by zero\nsecond line of detail")

    monkeypatch.setattr("omnicrm.pipeline.features.run_features", crash)
    monkeypatch.delenv("OMNICRM_LOG_DIR")  # the default: logs/ in the working folder (the world here)
    before = (world / "out/f.parquet").read_bytes()
    res = run("features", "features.yaml", "--cutoff", CUTOFF, "--out", "out/f.parquet")
    assert res.exit_code == 1
    line = one_line(res.output)
    assert line.startswith("error: ZeroDivisionError: float division by zero (details: logs/omnicrm-")
    assert line.endswith(".log; rerun with --debug for the traceback)")
    log = Path(line.split("details: ")[1].split(";")[0])
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "second line of detail" in text
    assert "command: omnicrm features features.yaml" in text
    assert (world / "logs/.gitignore").read_text() == "*\n"  # error messages can quote data: keep logs out of git
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    assert (world / "out/f.parquet").read_bytes() == before

    monkeypatch.setenv("OMNICRM_LOG_DIR", str(tmp_path / "elsewhere"))
    res = run("--debug", "features", "features.yaml", "--cutoff", CUTOFF, "--out", "out/f.parquet")
    assert res.exit_code == 1
    assert "Traceback (most recent call last)" in res.output and "second line of detail" in res.output
    assert f"details: {tmp_path / 'elsewhere'}" in res.output
    assert len(list((tmp_path / "elsewhere").glob("omnicrm-*.log"))) == 1


@pytest.mark.parametrize(
    "make",
    [
        KeyboardInterrupt,
        lambda: duckdb.InterruptException("INTERRUPT Error: Interrupted!"),
        lambda: RuntimeError("Query interrupted"),
    ],
    ids=["KeyboardInterrupt", "duckdb", "RuntimeError"],
)
def test_an_interrupt_is_one_line_and_exit_130(world: Path, monkeypatch: pytest.MonkeyPatch, make) -> None:  # noqa: ANN001
    def stopped(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        raise make()

    monkeypatch.setattr("omnicrm.pipeline.features.run_features", stopped)
    before = (world / "out/f.parquet").read_bytes()
    res = run("features", "features.yaml", "--cutoff", CUTOFF, "--out", "out/f.parquet")
    assert res.exit_code == 130
    assert one_line(res.output) == "interrupted: features stopped; no output was left half-written"
    assert (world / "out/f.parquet").read_bytes() == before
    assert not (world / "logs").exists()


def test_sigterm_unwinds_like_ctrl_c_with_exit_143(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scheduler's timeout sends SIGTERM: writers clean up, earlier outputs stay, one line, 128 + 15."""
    import os
    import signal
    import time

    def killed(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr("omnicrm.pipeline.features.run_features", killed)
    before = (world / "out/f.parquet").read_bytes()
    handler = signal.getsignal(signal.SIGTERM)
    res = run("features", "features.yaml", "--cutoff", CUTOFF, "--out", "out/f.parquet")
    assert res.exit_code == 143
    assert one_line(res.output) == "terminated: features stopped; no output was left half-written"
    assert (world / "out/f.parquet").read_bytes() == before
    assert signal.getsignal(signal.SIGTERM) is handler  # restored after the command


def test_tables_are_not_cut_when_the_output_is_not_a_terminal(tiny_sources: Path) -> None:
    res = run("ingest", str(tiny_sources))
    assert res.exit_code == 0, res.output
    # 80 columns would wrap this reason over two lines of its table cell
    assert "unparseable till_time: expected timestamp (%d/%m/%Y %H:%M:%S)" in res.output


def test_help_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["--help"], ["features", "--help"], ["--debug", "predict", "--help"]):
        res = run(*args)
        assert res.exit_code == 0, res.output
        assert "error:" not in res.output and "details:" not in res.output
    assert not (tmp_path / "logs").exists()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_python_swallows_still_stops_the_command_at_its_next_step() -> None:
    # Python drops a KeyboardInterrupt raised inside a weak reference's callback ("Exception ignored
    # in ..."): train once carried on and exited 0 after such a Ctrl-C. The handler remembers it.
    import gc
    import importlib
    import signal
    import weakref

    from omnicrm import interrupts
    from omnicrm.cli.render import _StepLines

    handler = importlib.import_module("omnicrm.cli.app")._raise_interrupted  # the module, not the Typer app

    class Resource:
        pass

    steps = _StepLines()
    held = Resource()
    ref = weakref.ref(held, lambda _: handler(signal.SIGINT, None))
    try:
        del held
        gc.collect()
        assert ref() is None and interrupts.SIGINT_SEEN.is_set()  # swallowed, but remembered
        with pytest.raises(KeyboardInterrupt):
            steps("logging to MLflow", 0.9)
    finally:
        interrupts.SIGINT_SEEN.clear()
    steps("next command", 0.1)  # a new command starts clean
