"""The bad-input corpus (issue 9, item 8): every user mistake is one clear message and exit status 2
(or a documented correct success), never a traceback, and never costs an earlier output.

Each case starts from a work folder with the tiny world of ``tiny_sources``, a store published by
``omnicrm ingest`` and a features file written by ``omnicrm features``; it applies one bad input,
runs one command in-process, and checks: the exit status, a message naming the file, column or key,
no traceback, every file in the folder byte-identical afterwards (except the declared output of a
successful case) and no new file (no ``.tmp`` or ``.wal`` left, no new folder). The terminal
summary of pytest shows the tally: cases tried / clear error / documented success / traceback /
silent (exit 0 where an error was due, or a loss) / unclear.
"""

from __future__ import annotations

import math
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psutil
import pytest
import yaml
from typer.testing import CliRunner

from omnicrm.cli import app
from tests.integration.badinput import Case, Outcome, Tally, Work, compare, snapshot

pytestmark = pytest.mark.integration

CUTOFF = "2023-06-01"  # the tiny world's events span 2023-03-05 .. 2023-07-01
SPILL_PREFIX = "omnicrm-ingest-"


# --- the work folder ---------------------------------------------------------------------------


def _write_yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _configs(root: Path) -> None:
    """Features, task, recommender and uplift configs over the tiny store (relative to the work folder)."""
    store = "store/omnicrm.duckdb"
    _write_yaml(root / "features.yaml", {"store": store, "features": {}})
    _write_yaml(root / "features-missing-store.yaml", {"store": "store/nope.duckdb", "features": {}})
    _write_yaml(
        root / "churn.yaml",
        {
            "dataset": {"name": "tiny", "store": store, "features": {}, "feature_cache": None},
            "task": {"kind": "churn", "horizon_days": 14},
            "cutoffs": {
                "train": {"start": "2023-04-01", "end": "2023-05-01", "every": "month"},
                "validation": "2023-05-20",
                "evaluation": "2023-06-10",
            },
            "model": {"params": {"n_estimators": 5}},
        },
    )
    _write_yaml(
        root / "recommend.yaml",
        {
            "store": store,
            "dataset": "tiny",
            "test_cutoff": "2023-06-01",
            "test_days": 30,
            "validation_days": 30,
            "k": 2,
            "serve": "popularity",
            "methods": [{"name": "popularity", "kind": "popularity"}],
        },
    )
    _write_yaml(
        root / "uplift.yaml",
        {
            "name": "tiny",
            "source": {"kind": "store", "store": store, "features": {}, "outcomes": ["purchase"]},
            "learners": {"names": ["S"]},
            "effects": {"learner": "S", "outcome": "purchase"},
        },
    )


@pytest.fixture(scope="module")
def tally(pytestconfig: pytest.Config) -> Iterator[Tally]:
    """The outcome of every case; printed in pytest's terminal summary (a plugin registered here)."""
    t = Tally()
    pytestconfig.pluginmanager.register(t, "omnicrm-bad-input-tally")
    yield t


@pytest.fixture
def work(
    tiny_sources: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
    template: list[bytes],
) -> Work:
    """The tiny world with a published store and features file; cwd is the work folder."""
    root = tiny_sources.parent
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("OMNICRM_MLRUNS", str(root / "mlruns"))  # inside: a command touching it leaves a new file
    monkeypatch.setenv("OMNICRM_LOG_DIR", str(tmp_path_factory.mktemp("logs")))  # outside: read, not a stray
    monkeypatch.delenv("OMNICRM_DEBUG", raising=False)
    _configs(root)
    w = Work(
        root=root,
        ingest=tiny_sources,
        store=root / "store/omnicrm.duckdb",
        features_config=root / "features.yaml",
        features=root / "out/features.parquet",
        mlruns=root / "mlruns",
    )
    published = (w.store, w.features)
    if not template:  # the first case publishes with the command line; the others get the same bytes
        runner = CliRunner()
        for argv in (
            ["ingest", str(w.ingest)],
            ["features", str(w.features_config), "--cutoff", CUTOFF, "--out", str(w.features)],
        ):
            r = runner.invoke(app, argv)
            assert r.exit_code == 0, (argv, r.output)
        template.extend(p.read_bytes() for p in published)
    else:
        for path, data in zip(published, template, strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return w


@pytest.fixture(scope="module")
def template() -> list[bytes]:
    """The store and features file published from ``tiny_sources`` once (its inputs are the same in every case)."""
    return []


# --- case helpers --------------------------------------------------------------------------------


def _append(rel: str, text: str):  # noqa: ANN202 - a setup function
    def setup(w: Work) -> None:
        with (w.root / rel).open("a", encoding="utf-8") as f:
            f.write(text)

    return setup


def _replace(rel: str, old: str, new: str):  # noqa: ANN202
    return lambda w: w.edit(rel, old, new)


def _write(rel: str, data: str | bytes):  # noqa: ANN202
    def setup(w: Work) -> None:
        path = w.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")

    return setup


def _remove_column(rel: str, column: str):  # noqa: ANN202
    def setup(w: Work) -> None:
        path = w.root / rel
        rows = [line.split(",") for line in path.read_text(encoding="utf-8").splitlines()]
        i = rows[0].index(column)
        path.write_text("\n".join(",".join(r[:i] + r[i + 1 :]) for r in rows) + "\n", encoding="utf-8")

    return setup


def _header_only(rel: str):  # noqa: ANN202
    def setup(w: Work) -> None:
        path = w.root / rel
        path.write_text(path.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")

    return setup


def _truncate_store(w: Work) -> None:
    data = w.store.read_bytes()
    w.store.write_bytes(data[: len(data) // 2])


def _garbage_store(w: Work) -> None:
    w.store.write_bytes(b"this is not a DuckDB database\n" * 2000)


def _garbage_mlflow_db(w: Work) -> None:
    w.mlruns.mkdir()
    (w.mlruns / "mlflow.db").write_bytes(b"\x00garbage, not SQLite\n" * 500)


def _port_in_use(w: Work) -> socket.socket:
    """A port someone listens on (the socket stays open during the run)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    w.extra["port"] = sock.getsockname()[1]
    return sock


def _busy_port(w: Work) -> list[str]:
    return ["ui", "--port", str(w.extra["port"])]


def _non_finite_quarantined(w: Work) -> None:
    con = duckdb.connect(str(w.store), read_only=True)
    try:
        reasons = dict(
            con.sql(
                "SELECT source_row_id, reason FROM quarantine WHERE source = 'pos' AND source_row_id LIKE 'R8|%'"
            ).fetchall()
        )
        amounts = [a for (a,) in con.sql("SELECT amount FROM events").fetchall() if a is not None]
    finally:
        con.close()
    assert set(reasons) == {"R8|1", "R8|2", "R8|3", "R8|4"}, f"quarantined R8 rows: {reasons}"
    assert all(r for r in reasons.values()), f"a quarantined row without a reason: {reasons}"
    bad = [a for a in amounts if not math.isfinite(a) or abs(a) > 1e12]
    assert not bad, f"non-finite or absurd amounts in events: {bad}"


# --- the cases -----------------------------------------------------------------------------------

ING = ["ingest", "ingest.yaml"]
FEAT = ["features", "features.yaml", "--cutoff", CUTOFF]
FEAT_OUT = [*FEAT, "--out", "out/features.parquet"]  # the earlier output: overwriting it is the normal use
OK_OUT = "out/new.parquet"
MLFLOW_STORE = ("mlruns", "mlruns/mlflow.db", "mlruns/artifacts")
#: temporary files of a killed writer (pid 999999999 does not exist): the next writer removes them
STALE_STORE = ".omnicrm.duckdb.999999999.0badc0de.tmp"
STALE_FEATURES = ".features.parquet.999999999.0badc0de.tmp"

CASES = [
    # ingest: the config
    Case("ingest-unknown-key", _append("ingest.yaml", "bogus_key: 1\n"), ING, 2, r"ingest\.yaml.*bogus_key"),
    Case(
        "ingest-duplicate-key",
        _append("ingest.yaml", "store: store/other.duckdb\n"),
        ING,
        2,
        r"ingest\.yaml.*'store'",
    ),
    Case("ingest-not-a-mapping", _write("ingest.yaml", "- raw\n- store\n"), ING, 2, r"ingest\.yaml.*mapping"),
    Case("ingest-empty-config", _write("ingest.yaml", ""), ING, 2, r"ingest\.yaml"),
    Case("ingest-yaml-syntax", _write("ingest.yaml", "raw_dir: [raw\nstore: x\n"), ING, 2, r"ingest\.yaml"),
    Case("ingest-missing-key", _replace("ingest.yaml", "raw_dir: raw\n", ""), ING, 2, r"ingest\.yaml.*raw_dir"),
    Case(
        "ingest-wrong-type",
        _replace("ingest.yaml", "identity: {probabilistic: false}", "identity: {probabilistic: maybe}"),
        ING,
        2,
        r"ingest\.yaml.*probabilistic",
    ),
    Case("ingest-config-not-found", None, ["ingest", "nope.yaml"], 2, r"nope\.yaml"),
    Case(
        "ingest-mapping-not-found",
        _replace("ingest.yaml", "maps/shop.yaml", "maps/nope.yaml"),
        ING,
        2,
        r"maps/nope\.yaml",
    ),
    Case(
        "ingest-mapping-unknown-key",
        _append("maps/shop.yaml", "colour: blue\n"),
        ING,
        2,
        r"shop\.yaml.*colour",
    ),
    Case(
        "ingest-mapping-duplicate-key",
        _append("maps/shop.yaml", "file: shop2.csv\n"),
        ING,
        2,
        r"shop\.yaml.*'file'",
    ),
    Case(
        "ingest-mapping-unknown-type",
        _replace("maps/pos.yaml", "qty: {type: double", "qty: {type: decimalish"),
        ING,
        2,
        r"pos\.yaml.*qty",
    ),
    Case(
        "ingest-mapping-bad-expression",
        _replace("maps/pos.yaml", "amount: qty * unit_price", 'amount: "qty * * unit_price"'),
        ING,
        2,
        r"pos\.yaml.*amount",
    ),
    Case(
        "ingest-mapping-unknown-column",
        _replace("maps/pos.yaml", "amount: qty * unit_price", "amount: qty * no_such_column"),
        ING,
        2,
        r"pos\.yaml.*(amount|no_such_column)",
    ),
    Case(
        "ingest-duplicate-source",
        _replace("ingest.yaml", "maps/shop.yaml]", "maps/shop.yaml, maps/shop.yaml]"),
        ING,
        2,
        r"ingest\.yaml.*shop",
    ),
    # ingest: the raw files
    Case("ingest-missing-raw-file", lambda w: (w.root / "raw/shop.csv").unlink(), ING, 2, r"shop\.csv"),
    Case(
        "ingest-missing-column",
        _remove_column("raw/pos.csv", "unit_price"),
        ING,
        2,
        r"pos\.csv.*unit_price",
    ),
    Case(
        "ingest-file-reading-expression",
        _replace(
            "maps/shop.yaml", "order_id: order_id", "order_id: \"(SELECT content FROM read_text('/etc/hostname'))\""
        ),
        ING,
        2,
        r"shop\.yaml.*output\.order_id",
    ),
    Case(
        "ingest-second-statement",
        _replace(
            "maps/shop.yaml", "order_id: order_id", "order_id: \"order_id); COPY (SELECT 1) TO 'x.csv'; SELECT (1\""
        ),
        ING,
        2,
        r"shop\.yaml.*output\.order_id",
    ),
    Case("ingest-header-only-source", _header_only("raw/shop.csv"), ING, 2, r"shop.*0 of 0 rows"),
    Case(
        "ingest-source-quarantined-100pct",
        _replace("maps/pos.yaml", 'format: "%d/%m/%Y %H:%M:%S"', 'format: "%Y-%m-%d %H:%M:%S"'),
        ING,
        2,
        r"pos.*0 of 9 rows accepted.*till_time",
    ),
    Case(
        "ingest-nan-inf-1e308-prices",
        _append(
            "raw/pos.csv",
            "R8,1,06/03/2023 09:00:00,111122223333,SALE,P1,1,NaN\n"
            "R8,2,06/03/2023 09:00:00,111122223333,SALE,P1,1,inf\n"
            "R8,3,06/03/2023 09:00:00,111122223333,SALE,P1,1,-Infinity\n"
            "R8,4,06/03/2023 09:00:00,111122223333,SALE,P1,1,1e308\n",
        ),
        ING,
        0,
        "",
        outputs=("store/omnicrm.duckdb",),
        check=_non_finite_quarantined,
    ),
    Case(
        "ingest-non-utf8-file",
        _write(
            "raw/crm.csv",
            b"member_id,card_no,first_name,last_name,email,phone,postcode,joined_on,opt_in_email\n"
            + "M1,1111 2222 3333,José,Silva,ana@x.com,,sw1a 1aa,01/02/2023,Y\n".encode("latin-1"),
        ),
        ING,
        2,
        r"crm\.csv.*(?i:utf-?8|encoding)",
    ),
    Case("ingest-truth-missing", None, [*ING, "--truth", "/nope"], 2, r"--truth /nope"),
    Case("ingest-truth-not-a-world", None, [*ING, "--truth", "raw"], 2, r"--truth raw.*record_owner"),
    Case("ingest-no-secret", None, ING, 2, r"OMNICRM_SALT", env={"OMNICRM_SALT": None}),
    # features
    Case(
        "features-cutoff-0001",
        None,
        ["features", "features.yaml", "--cutoff", "0001-01-01", "--out", OK_OUT],
        2,
        r"--cutoff 0001-01-01.*2023-03-05",
    ),
    Case(
        "features-cutoff-1900",
        None,
        ["features", "features.yaml", "--cutoff", "1900-01-01", "--out", OK_OUT],
        2,
        r"--cutoff 1900-01-01.*2023-03-05",
    ),
    Case(
        "features-cutoff-2100",
        None,
        ["features", "features.yaml", "--cutoff", "2100-01-01", "--out", OK_OUT],
        2,
        r"--cutoff 2100-01-01.*2023-07-01",
    ),
    Case(
        "features-cutoff-first-day",
        None,
        ["features", "features.yaml", "--cutoff", "2023-03-05", "--out", OK_OUT],
        2,
        r"--cutoff 2023-03-05",
    ),
    Case(
        "features-cutoff-text",
        None,
        ["features", "features.yaml", "--cutoff", "last tuesday", "--out", OK_OUT],
        2,
        r"--cutoff.*last tuesday",
    ),
    Case(
        "features-cutoff-invalid-day",
        None,
        ["features", "features.yaml", "--cutoff", "2023-02-30", "--out", OK_OUT],
        2,
        r"--cutoff.*2023-02-30",
    ),
    Case("features-no-cutoff", None, ["features", "features.yaml", "--out", OK_OUT], 2, r"--cutoff"),
    Case("features-out-is-dir", None, [*FEAT, "--out", "out"], 2, r"--out out.*folder"),
    Case(
        "features-out-under-file", None, [*FEAT, "--out", "raw/crm.csv/f.parquet"], 2, r"--out raw/crm\.csv/f\.parquet"
    ),
    Case("features-out-unknown-suffix", None, [*FEAT, "--out", "out/f.xlsx"], 2, r"--out out/f\.xlsx.*\.xlsx"),
    Case("features-store-garbage", _garbage_store, FEAT_OUT, 2, r"store/omnicrm\.duckdb.*not a readable"),
    Case(
        "features-store-truncated", _truncate_store, FEAT_OUT, 2, r"store/omnicrm\.duckdb.*(cut short|not a readable)"
    ),
    Case(
        "features-store-missing",
        None,
        ["features", "features-missing-store.yaml", "--cutoff", CUTOFF, "--out", OK_OUT],
        2,
        r"store/nope\.duckdb.*not found",
    ),
    Case(
        "features-config-unknown-key",
        _append("features.yaml", "colour: blue\n"),
        FEAT_OUT,
        2,
        r"features\.yaml.*colour",
    ),
    Case(
        "features-unknown-group",
        _replace("features.yaml", "features: {}", "features: {groups: [rfm, astrology]}"),
        FEAT_OUT,
        2,
        r"features\.yaml.*astrology",
    ),
    Case("features-overwrite-earlier-output", None, FEAT_OUT, 0, "", outputs=("out/features.parquet",)),
    Case(
        "features-cutoff-late-warns",
        None,
        ["features", "features.yaml", "--cutoff", "2023-07-20", "--out", OK_OUT],
        0,
        r"warning: --cutoff 2023-07-20 is 19 days after the store's last event",
        outputs=(OK_OUT,),
    ),
    Case(
        "features-sweeps-stale-temp",
        _write(f"out/{STALE_FEATURES}", b"half a parquet file"),
        FEAT_OUT,
        0,
        rf"warning: removed stale temporary file .*{re.escape(STALE_FEATURES)}",
        outputs=("out/features.parquet", f"out/{STALE_FEATURES}"),
    ),
    Case(
        "ingest-sweeps-stale-temp",
        lambda w: [_write(f"store/{n}", b"a killed run's store")(w) for n in (STALE_STORE, STALE_STORE + ".wal")],
        ING,
        0,
        rf"(?s)(?=.*warning: removed stale temporary file \S*{re.escape(STALE_STORE)} left)"
        rf"(?=.*warning: removed stale temporary file \S*{re.escape(STALE_STORE)}\.wal left)",
        outputs=("store/omnicrm.duckdb", f"store/{STALE_STORE}", f"store/{STALE_STORE}.wal"),
    ),
    # predict / recommend / effects: an unusable --out fails before any model work
    Case(
        "predict-out-is-dir",
        None,
        ["predict", "churn.yaml", "--as-of", CUTOFF, "--out", "out"],
        2,
        r"--out out.*folder",
    ),
    Case(
        "predict-out-under-file",
        None,
        ["predict", "churn.yaml", "--as-of", CUTOFF, "--out", "raw/crm.csv/s.csv"],
        2,
        r"--out raw/crm\.csv/s\.csv",
    ),
    Case(
        "predict-out-unknown-suffix",
        None,
        ["predict", "churn.yaml", "--as-of", CUTOFF, "--out", "out/s.json"],
        2,
        r"--out out/s\.json",
    ),
    Case(
        "predict-as-of-2100",
        None,
        ["predict", "churn.yaml", "--as-of", "2100-01-01", "--out", "out/s.parquet"],
        2,
        r"--as-of 2100-01-01",
    ),
    Case(
        "predict-garbage-mlflow-db",
        _garbage_mlflow_db,
        ["predict", "churn.yaml", "--as-of", CUTOFF, "--out", "out/s.parquet"],
        2,
        r"mlruns/mlflow\.db",
    ),
    Case(
        "predict-no-registered-model",
        None,
        ["predict", "churn.yaml", "--as-of", CUTOFF, "--out", "out/s.parquet"],
        2,
        r"omnicrm-churn",
        outputs=MLFLOW_STORE,  # reading the registry creates the empty local tracking store; nothing else
    ),
    Case(
        "predict-as-of-6-months-late",
        None,
        ["predict", "churn.yaml", "--as-of", "2024-01-01", "--out", "out/s.parquet"],
        2,
        r"--as-of 2024-01-01.*2023-07-01",
    ),
    Case(
        "predict-as-of-0001",
        None,
        ["predict", "churn.yaml", "--as-of", "0001-01-01", "--out", "out/s.parquet"],
        2,
        r"--as-of 0001-01-01.*2023-03-05",
    ),
    Case(
        "recommend-out-is-dir",
        None,
        ["recommend", "recommend.yaml", "--as-of", CUTOFF, "--out", "out"],
        2,
        r"--out out.*folder",
    ),
    Case(
        "recommend-out-under-file",
        None,
        ["recommend", "recommend.yaml", "--as-of", CUTOFF, "--out", "raw/crm.csv/r.parquet"],
        2,
        r"--out raw/crm\.csv/r\.parquet",
    ),
    Case(
        "recommend-as-of-2100",
        None,
        ["recommend", "recommend.yaml", "--as-of", "2100-01-01", "--out", "out/r.parquet"],
        2,
        r"--as-of 2100-01-01",
    ),
    Case(
        "recommend-store-garbage",
        _garbage_store,
        ["recommend", "recommend.yaml", "--as-of", CUTOFF, "--out", "out/r.parquet"],
        2,
        r"store/omnicrm\.duckdb.*not a readable",
    ),
    Case(
        "effects-out-is-dir",
        None,
        ["effects", "uplift.yaml", "--as-of", CUTOFF, "--out", "out"],
        2,
        r"--out out.*folder",
    ),
    Case(
        "effects-out-under-file",
        None,
        ["effects", "uplift.yaml", "--as-of", CUTOFF, "--out", "raw/crm.csv/e.parquet"],
        2,
        r"--out raw/crm\.csv/e\.parquet",
    ),
    Case(
        "recommend-as-of-1900",
        None,
        ["recommend", "recommend.yaml", "--as-of", "1900-01-01", "--out", "out/r.parquet"],
        2,
        r"1900-01-01",
    ),
    Case(
        "effects-as-of-2100",
        None,
        ["effects", "uplift.yaml", "--as-of", "2100-01-01", "--out", "out/e.parquet"],
        2,
        r"--as-of 2100-01-01",
    ),
    Case(
        "features-config-not-found",
        None,
        ["features", "nope.yaml", "--cutoff", CUTOFF, "--out", OK_OUT],
        2,
        r"nope\.yaml",
    ),
    # ui
    Case("ui-port-99999", None, ["ui", "--port", "99999"], 2, r"--port.*99999"),
    Case("ui-port-in-use", _port_in_use, _busy_port, 2, r"port \d+.*in use"),
]


# --- the test ------------------------------------------------------------------------------------


def _our_spill_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(f"{SPILL_PREFIX}{os.getpid()}-*")}


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, work: Work, tally: Tally, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in case.env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    keep = case.setup(work) if case.setup else None
    argv = case.argv(work)
    logs = Path(os.environ["OMNICRM_LOG_DIR"])
    before = snapshot(work.root)
    spill_before, children_before = _our_spill_folders(), _children()
    started = time.perf_counter()
    try:
        result = CliRunner().invoke(app, argv)
    finally:
        if isinstance(keep, socket.socket):
            keep.close()
    outcome = Outcome(case.name, argv, result.exit_code, result.output, time.perf_counter() - started)
    outcome.exception = result.exception
    outcome.file_problems = compare(before, snapshot(work.root), case.outputs)
    outcome.file_problems += [f"spill folder left: {n}" for n in sorted(_our_spill_folders() - spill_before)]
    outcome.file_problems += [f"child process left: {p}" for p in sorted(_children() - children_before)]
    if case.check is not None and result.exit_code == 0:
        try:
            case.check(work)
        except AssertionError as exc:
            outcome.check_problem = str(exc)
    logged = sorted(logs.glob("*.log"))
    if logged:
        outcome.log_text = logged[-1].read_text(encoding="utf-8", errors="replace")
    cls = outcome.classify(case.status, case.message)
    tally.add(case.name, cls)

    report = outcome.report()
    print(report)  # with -s: every case's command and message
    assert not outcome.traceback_seen, report
    assert result.exit_code == case.status, report
    assert re.search(case.message, result.output), f"message does not match {case.message!r}\n{report}"
    assert not outcome.file_problems, report
    assert outcome.check_problem is None, report
