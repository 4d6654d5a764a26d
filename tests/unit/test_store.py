"""The store file: atomic writes and their temporary files, checks on open, the dates it can support."""

from __future__ import annotations

import os
import re
import time
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest

from omnicrm import schema
from omnicrm.errors import ConfigError, InputError
from omnicrm.store import DataRange, StoreWriter, check_date, data_range, open_store
from omnicrm.store.data_range import LateDateWarning
from omnicrm.store.staging import (
    StaleFileWarning,
    staging_dir,
    staging_path,
    sweep_stale,
    sweep_stale_dirs,
)

DEAD = 999_999_999  # above any pid_max: never a running process


# --- temporary files ---


def test_staging_path_carries_the_pid_beside_the_target(tmp_path: Path) -> None:
    tmp = staging_path(tmp_path / "omnicrm.duckdb")
    assert tmp.parent == tmp_path
    assert re.fullmatch(rf"\.omnicrm\.duckdb\.{os.getpid()}\.[0-9a-f]{{8}}\.tmp", tmp.name)
    assert staging_path(tmp_path / "omnicrm.duckdb") != tmp


def test_sweep_removes_only_temporary_files_of_dead_writers_of_that_target(tmp_path: Path) -> None:
    target = tmp_path / "omnicrm.duckdb"
    dead = [f".omnicrm.duckdb.{DEAD}.0badc0de.tmp", f".omnicrm.duckdb.{DEAD}.0badc0de.tmp.wal"]
    kept = [
        ".omnicrm.duckdb.1.0badc0de.tmp",  # pid 1 is running
        f".omnicrm.duckdb.{os.getpid()}.0badc0de.tmp",  # this process: another writer in it may be busy
        f".other.duckdb.{DEAD}.0badc0de.tmp",  # another target
        f".omnicrm.duckdb.x.{DEAD}.0badc0de.tmp",  # another target whose name starts alike
        f"omnicrm.duckdb.{DEAD}.0badc0de.tmp",  # not one of ours
        ".omnicrm.duckdb.0badc0de.tmp",  # an earlier version's name, written just now
    ]
    for name in dead + kept:
        (tmp_path / name).write_bytes(b"x")
    with pytest.warns(StaleFileWarning) as caught:
        removed = sweep_stale(target)
    assert sorted(p.name for p in removed) == sorted(dead)
    assert [str(w.message) for w in caught] == [
        f"removed stale temporary file {tmp_path / name} left by a killed run (pid {DEAD})" for name in sorted(dead)
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_sweep_removes_an_earlier_versions_temporary_store_once_it_is_old(tmp_path: Path) -> None:
    old = tmp_path / ".omnicrm.duckdb.0badc0de.tmp"
    old.write_bytes(b"x")
    an_hour_ago = time.time() - 3700
    os.utime(old, (an_hour_ago, an_hour_ago))
    with pytest.warns(StaleFileWarning, match="left by a killed run \\(an earlier omnicrm version\\)"):
        assert sweep_stale(tmp_path / "omnicrm.duckdb") == [old]
    assert sweep_stale(tmp_path / "missing-folder" / "x.parquet") == []


def test_stale_staging_folders_of_dead_processes_are_removed(tmp_path: Path) -> None:
    mine = staging_dir(tmp_path, "omnicrm-ingest-")
    assert mine.name.startswith(f"omnicrm-ingest-{os.getpid()}-") and mine.is_dir()
    dead = tmp_path / f"omnicrm-ingest-{DEAD}-abc123"
    (dead / "spill").mkdir(parents=True)
    (dead / "spill" / "block.tmp").write_bytes(b"x")
    other = tmp_path / f"omnicrm-other-{DEAD}-abc123"
    other.mkdir()
    with pytest.warns(StaleFileWarning, match=f"temporary folder {re.escape(str(dead))} left by a killed run"):
        assert sweep_stale_dirs(tmp_path, "omnicrm-ingest-") == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name])


def _contract_tables(writer: StoreWriter) -> None:
    for table, cols in schema.TABLES.items():
        nulls = ", ".join(f"NULL AS {c!r}".replace("'", '"') for c in cols)
        writer.write_table(table, f"SELECT {nulls} WHERE false")


def test_store_writer_interrupted_leaves_the_old_store_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "omnicrm.duckdb"
    path.write_bytes(b"the previous store")
    stale = tmp_path / f".omnicrm.duckdb.{DEAD}.0badc0de.tmp"
    stale.write_bytes(b"x")
    con = duckdb.connect()
    with pytest.warns(StaleFileWarning), pytest.raises(KeyboardInterrupt), StoreWriter(con, path) as writer:  # noqa: PT012
        _contract_tables(writer)
        assert writer.tmp.exists()
        raise KeyboardInterrupt
    con.close()
    assert path.read_bytes() == b"the previous store"
    assert [p.name for p in tmp_path.iterdir()] == ["omnicrm.duckdb"]


# --- opening a store ---


@pytest.fixture
def empty_store(tmp_path: Path) -> Path:
    """A store with every contract table and two events."""
    path = tmp_path / "store.duckdb"
    con = duckdb.connect()
    with StoreWriter(con, path) as writer:
        _contract_tables(writer)
        writer.con.execute(
            f"INSERT INTO {StoreWriter.ALIAS}.events (event_id, customer_id, ts) VALUES "
            "('e1', 'c1', TIMESTAMP '2023-01-05 10:00'), ('e2', 'c1', TIMESTAMP '2024-12-31 23:00')"
        )
        writer.commit()
    con.close()
    return path


def test_open_store_reads_a_complete_store(empty_store: Path) -> None:
    con = open_store(empty_store, deterministic=True)
    assert data_range(con) == DataRange(datetime(2023, 1, 5, 10), datetime(2024, 12, 31, 23))
    assert str(data_range(con)) == "2023-01-05 .. 2024-12-31"
    con.close()


def test_open_store_refuses_what_is_not_a_store(tmp_path: Path, empty_store: Path) -> None:
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(InputError, match=r"garbage\.duckdb: not a readable omnicrm store \(IO Error: .*\); re-run"):
        open_store(garbage)
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).execute("CREATE TABLE events (x INT)").close()
    with pytest.raises(InputError, match=r"other\.duckdb: not a readable omnicrm store \(missing table\(s\) customers"):
        open_store(other)
    with pytest.raises(InputError, match=r"nope\.duckdb: store not found; run `omnicrm ingest` first"):
        open_store(tmp_path / "nope.duckdb")


def test_an_empty_events_table_has_no_range(empty_store: Path) -> None:
    con = duckdb.connect()
    con.execute(f"ATTACH '{empty_store}' AS s")
    con.execute("DELETE FROM s.events")
    con.close()
    con = open_store(empty_store)
    with pytest.raises(InputError, match="the events table is empty"):
        data_range(con)
    con.close()


# --- dates against the store's range ---

SPAN = DataRange(datetime(2023, 1, 5, 10), datetime(2024, 12, 31, 23))


@pytest.mark.parametrize("ok", [date(2023, 1, 6), date(2024, 6, 1), date(2024, 12, 31), date(2025, 1, 1)])
def test_dates_inside_the_range_pass_quietly(ok: date) -> None:
    check_date(ok, SPAN, "--cutoff")  # warnings are errors in this suite


@pytest.mark.parametrize(
    ("day", "message"),
    [
        (date(1, 1, 1), "--as-of 0001-01-01 is before the store's first event (2023-01-05); "
                        "the store covers 2023-01-05 .. 2024-12-31"),
        (date(2023, 1, 5), "--as-of 2023-01-05 is the day of the store's first event, so no event precedes it"),
        (date(2025, 2, 1), "--as-of 2025-02-01 is 32 days after the store's last event (2024-12-31); "
                           "the store covers 2023-01-05 .. 2024-12-31. At most 31 days are allowed"),
        (date(9999, 12, 31), "--as-of 9999-12-31 is 2912808 days after"),
    ],
)  # fmt: skip
def test_dates_outside_the_range_are_errors_naming_date_and_range(day: date, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_date(day, SPAN, "--as-of")


def test_a_date_a_little_after_the_last_event_warns() -> None:
    with pytest.warns(LateDateWarning, match=r"--cutoff 2025-01-31 is 31 days after the store's last event"):
        check_date(datetime(2025, 1, 31), SPAN)
    with pytest.warns(LateDateWarning, match="2 days after"):
        check_date(date(2025, 1, 2), SPAN)


def test_the_allowed_gap_and_early_dates_are_the_callers_choice() -> None:
    with pytest.raises(ConfigError, match="At most 7 days are allowed"):
        check_date(date(2025, 1, 9), SPAN, max_days_after=7)
    check_date(date(2000, 1, 1), SPAN, "--as-of", before_first=True)


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_signals_wait_for_a_deferred_block_whichever_thread_the_kernel_picks(signum: str) -> None:
    # The kernel gives a process's signal to any thread that does not block it; Python then runs the
    # handler on the main thread at once. Blocking the signal on the main thread alone therefore
    # deferred nothing once a worker thread existed (an MLflow write was interrupted inside SQLAlchemy).
    import os
    import signal
    import threading
    import time

    from omnicrm.store.staging import signals_deferred

    sig = getattr(signal, signum)
    previous = signal.signal(sig, signal.default_int_handler)
    idle = threading.Event()
    worker = threading.Thread(target=idle.wait)  # blocks no signal
    worker.start()
    finished = []
    try:
        with pytest.raises(KeyboardInterrupt), signals_deferred():
            os.kill(os.getpid(), sig)
            time.sleep(0.2)  # the handler had every chance to run here
            finished.append(True)
        assert finished == [True]
        assert signal.getsignal(sig) is signal.default_int_handler  # restored
    finally:
        signal.signal(sig, previous)
        idle.set()
        worker.join()
