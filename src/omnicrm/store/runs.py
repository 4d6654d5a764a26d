"""Published scoring runs: a lock, a staging folder, publication by rename and atomic pointers.

An output folder of ``omnicrm score`` looks like this::

    <output>/
      runs/<as_of>_<run id>/        one complete run each: tables, manifest.json, profile.json, drift.csv
      as_of=2024-12-01 -> runs/...  the published run of each as-of date (a symbolic link)
      latest -> runs/...            the run published last (a symbolic link)
      .staging/run-<pid>-<random>/  a run being written (never read by anyone else)
      .lock                         held while a run writes (JSON: pid, host, start, as_of)

A run writes everything into its staging folder, renames the folder into ``runs/`` (one rename,
atomic on one file system) and then moves the ``as_of=`` pointer and ``latest`` by replacing each
link with :func:`os.replace` (atomic too). A reader that follows a pointer always sees one complete
run. A killed run leaves at most its staging folder or an unreferenced folder in ``runs/``; the
next run removes both (they belong to no live process and no pointer), with a warning naming them.

The lock is a file created with ``O_EXCL``. Another live process holding it stops the run with a
:class:`~omnicrm.errors.ConfigError` naming it; a lock whose process is gone (killed) is reported
as stale, with its pid, start time and as-of date, and taken over.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import time
import warnings
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from omnicrm.errors import ConfigError
from omnicrm.store.staging import StaleFileWarning, _alive, staging_dir, sweep_stale_dirs

RUNS = "runs"
LATEST = "latest"
LOCK = ".lock"
STAGING = ".staging"
STAGING_PREFIX = "run-"
_POINTER = re.compile(r"as_of=\d{4}-\d{2}-\d{2}")


def new_run_id() -> str:
    """A run id that sorts by start time: ``20241201T060000Z-1a2b3c4d``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def pointer_name(as_of: date | datetime) -> str:
    """The name of the pointer to the published run of ``as_of``: ``as_of=YYYY-MM-DD``."""
    return f"as_of={as_of:%Y-%m-%d}"


def check_output_folder(output: Path) -> Path:
    """Create ``output`` if needed; :class:`ConfigError` when it is not a writable folder."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output {output}: exists and is not a folder")
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f".probe.{os.getpid()}.{secrets.token_hex(4)}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"output {output}: cannot write there ({exc.strerror or exc})") from None
    return output


class RunLock:
    """The output folder's lock (see the module docstring); a context manager."""

    def __init__(self, output: Path, as_of: date | datetime, run_id: str) -> None:
        self.path = Path(output) / LOCK
        self.info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "as_of": f"{as_of:%Y-%m-%d}",
            "run_id": run_id,
        }
        self.held = False

    def __enter__(self) -> RunLock:
        """Take the lock, or explain who holds it."""
        for _ in range(3):  # a stale lock taken over by another starting run: look again
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.info, f)
            self.held = True
            return self
        raise ConfigError(f"{self.path}: could not take the lock (other runs keep taking it); try again")

    def _handle_existing(self) -> None:
        holder = _read_lock(self.path)
        if holder is None:
            return  # removed meanwhile (its run ended): try again
        pid, host = holder.get("pid"), holder.get("host")
        if not holder:
            # empty or torn: a run killed between creating the lock and writing it, or one that is
            # writing it this instant; only the second is young, so an old one is stale
            if _age_seconds(self.path) < TORN_LOCK_SECONDS:
                raise ConfigError(f"{self.path}: another scoring run is taking the lock right now; try again")
            host = socket.gethostname()
        who = (
            f"pid {pid} on {host}, started {holder.get('started', '?')}, scoring as_of {holder.get('as_of', '?')}"
            f" (run {holder.get('run_id', '?')})"
        )
        if host != socket.gethostname():
            raise ConfigError(
                f"{self.path}: another scoring run holds the lock ({who}); this machine cannot tell whether it "
                "still runs. Wait for it, or remove the lock file if you know it is dead"
            )
        if isinstance(pid, int) and _alive(pid):
            raise ConfigError(f"{self.path}: another scoring run is writing this output ({who}); wait for it to end")
        # stale: moved aside first, so two runs that both found it stale cannot both take over
        aside = self.path.with_name(f"{LOCK}.stale.{os.getpid()}.{secrets.token_hex(4)}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        aside.unlink(missing_ok=True)
        warnings.warn(
            f"removed the stale lock {self.path} of a run that is no longer running ({who}): it was killed or "
            "crashed before it finished, and nothing it wrote was published",
            StaleFileWarning,
            stacklevel=3,
        )

    def __exit__(self, *exc: object) -> None:
        """Release the lock (only if this process still holds it)."""
        if self.held:
            holder = _read_lock(self.path)
            if holder is not None and holder.get("pid") == os.getpid() and holder.get("run_id") == self.info["run_id"]:
                self.path.unlink(missing_ok=True)
            self.held = False


#: an empty or unreadable lock older than this is a killed run's, not one being written
TORN_LOCK_SECONDS = 30.0


def _age_seconds(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the lock file ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = {}
    return data if isinstance(data, dict) else {}  # an empty or torn lock: its pid is unknown, so stale


def new_staging(output: Path) -> Path:
    """A fresh private staging folder in ``<output>/.staging`` (stale ones of dead processes removed first)."""
    parent = Path(output) / STAGING
    parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_dirs(parent, STAGING_PREFIX)
    return staging_dir(parent, STAGING_PREFIX)


def resolve(output: Path, name: str) -> Path | None:
    """The run folder a pointer (``latest``, ``as_of=...``) leads to, or ``None``."""
    link = Path(output) / name
    if not link.is_symlink():
        return None
    target = (link.parent / os.readlink(link)).resolve()
    return target if target.is_dir() else None


def published(output: Path, as_of: date | datetime) -> Path | None:
    """The published run of ``as_of``, if any."""
    return resolve(output, pointer_name(as_of))


def latest(output: Path) -> Path | None:
    """The run published last, if any."""
    return resolve(output, LATEST)


def _point(link: Path, target: Path) -> None:
    """Make ``link`` a relative symbolic link to ``target``, replacing the old one atomically."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    os.symlink(os.path.relpath(target, link.parent), tmp)
    try:
        os.replace(tmp, link)
    finally:
        if tmp.is_symlink():
            tmp.unlink()


def publish(output: Path, staging: Path, as_of: date | datetime, run_id: str) -> Path:
    """Move a complete staging folder into ``runs/`` and point ``as_of=...`` and ``latest`` at it.

    The run that ``as_of=...`` pointed to before (a ``--replace``) is removed once no pointer leads
    to it. Returns the published folder.
    """
    output = Path(output)
    runs = output / RUNS
    runs.mkdir(exist_ok=True)
    final = runs / f"{as_of:%Y-%m-%d}_{run_id}"
    before = published(output, as_of)
    os.rename(staging, final)
    _point(output / pointer_name(as_of), final)
    _point(output / LATEST, final)
    if before is not None and before != final and before not in _referenced(output):
        shutil.rmtree(before, ignore_errors=True)
    return final


def _referenced(output: Path) -> set[Path]:
    found = set()
    for p in Path(output).iterdir():
        if p.is_symlink() and (p.name == LATEST or _POINTER.fullmatch(p.name)):
            target = resolve(output, p.name)
            if target is not None:
                found.add(target)
    return found


def sweep_orphans(output: Path) -> list[Path]:
    """Remove run folders no pointer leads to, and temporary links (call with the lock held).

    Such folders are what a run killed between its rename and its pointers, or a replaced run whose
    removal was interrupted, left behind. Warns once per removed path.
    """
    output = Path(output)
    removed = []
    runs = output / RUNS
    keep = _referenced(output)
    if runs.is_dir():
        for p in sorted(runs.iterdir()):
            if p.resolve() not in keep:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink()
                removed.append(p)
    for p in sorted(output.glob(".*.tmp")):
        if p.is_symlink():
            p.unlink()
            removed.append(p)
    for p in removed:
        warnings.warn(f"removed {p}, left by a scoring run that was killed", StaleFileWarning, stacklevel=2)
    return removed


class TableWriter:
    """One output table of a run, written to a Parquet file chunk by chunk (one row group per chunk).

    Memory stays that of one chunk. The Arrow schema is fixed by the contract types of the table
    (:data:`omnicrm.schema.OUTPUTS`) for contract columns and by the first chunk for the others, so
    every chunk is written with the same types; a table that received no rows is still written,
    with the contract columns. Written in the staging folder, so no temporary file is needed.
    """

    _ARROW = {"VARCHAR": "string", "TIMESTAMP": "timestamp[us]", "DOUBLE": "float64", "BIGINT": "int64"}

    def __init__(self, path: Path, table: str) -> None:
        self.path = Path(path)
        self.table = table
        self.rows = 0
        self._writer: Any = None
        self._schema: Any = None

    def _schema_for(self, frame: Any) -> Any:
        import pyarrow as pa

        from omnicrm import schema

        contract = schema.OUTPUTS[self.table]
        inferred = pa.Schema.from_pandas(frame, preserve_index=False)
        fields = []
        for f in inferred:
            if f.name in contract:
                kind = self._ARROW[contract[f.name]]
                fields.append(
                    pa.field(f.name, pa.timestamp("us") if kind == "timestamp[us]" else pa.type_for_alias(kind))
                )
            elif pa.types.is_null(f.type) or pa.types.is_large_string(f.type):
                fields.append(pa.field(f.name, pa.string()))
            else:
                fields.append(pa.field(f.name, f.type))
        return pa.schema(fields)

    def write(self, frame: Any) -> None:
        """Append a chunk (a DataFrame with the table's columns; extra columns as in the first chunk)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._schema is None:
            self._schema = self._schema_for(frame)
            self._writer = pq.ParquetWriter(self.path, self._schema)
        if not len(frame):
            return
        self._writer.write_table(pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False))
        self.rows += len(frame)

    def close(self) -> None:
        """Finish the file (an empty table with the contract columns if nothing was written)."""
        import pandas as pd

        from omnicrm import schema

        if self._writer is None:
            types = {"VARCHAR": "str", "TIMESTAMP": "datetime64[us]", "DOUBLE": "float64", "BIGINT": "int64"}
            empty = pd.DataFrame({c: pd.Series(dtype=types[t]) for c, t in schema.OUTPUTS[self.table].items()})
            self.write(empty)
        self._writer.close()
