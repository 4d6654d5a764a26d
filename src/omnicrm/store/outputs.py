"""Output files written whole or not at all, to paths checked before any work starts.

Every command that writes a table (features, scores, recommendations, effects, the feature cache)
writes a temporary file beside the target and moves it into place with ``os.replace``, so a
failed run leaves the previous output intact and a reader never sees half a file (temporary names
and the sweep of those a killed run left: :mod:`omnicrm.store.staging`). Commands call
:func:`check_output_path` first, so an unusable ``--out`` fails in a second, not after the compute.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

import pandas as pd

from omnicrm import schema
from omnicrm.errors import ConfigError
from omnicrm.store.staging import discard, signals_deferred, staged, staging_path, sweep_stale

PARQUET = (".parquet", ".pq")
CSV = (".csv",)
#: a spreadsheet treats a cell starting with one of these as a formula (OWASP, "CSV Injection")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def check_output_path(path: str | Path, suffixes: Sequence[str] | None = None, *, what: str = "--out") -> Path:
    """Check that a file can be published at ``path``; raise :class:`ConfigError` saying why not.

    Refused: an existing folder or other non-file, a file type not in ``suffixes`` (when given), a
    path under an existing file, and a folder where no file can be created (permissions, a
    read-only or virtual file system: tried with a probe file that is removed at once). Folders
    that do not exist yet are not created here. ``what`` names the value in messages (``--out``).
    """
    path = Path(path)
    wanted = _either(suffixes) if suffixes else ""
    if path.is_dir():
        raise ConfigError(f"{what} {path}: is a folder; give a file path" + (f" ending in {wanted}" if wanted else ""))
    if path.exists() and not path.is_file():
        raise ConfigError(f"{what} {path}: exists and is not a regular file")
    if suffixes and path.suffix.lower() not in suffixes:
        found = f"file type '{path.suffix}'" if path.suffix else "no file type"
        raise ConfigError(f"{what} {path}: {found}; this command writes {wanted} files")
    folder = next(p for p in path.parents if p.exists() or p.is_symlink())  # "/" or "." at the latest
    if not folder.is_dir():
        raise ConfigError(f"{what} {path}: {folder} is a file, so the output cannot be written under it")
    probe = staging_path(path if folder == path.parent else folder / path.name)
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        verb = "write in" if folder == path.parent else "create folders in"
        raise ConfigError(f"{what} {path}: cannot {verb} {folder} ({exc.strerror or exc})") from None
    finally:  # an interrupt between create and remove must not leave the probe
        with suppress(OSError):  # on a read-only disk removing it fails too; the error above says why
            probe.unlink(missing_ok=True)
    return path


def _either(options: Sequence[str]) -> str:
    """Options as ``.a, .b or .c``."""
    return " or ".join([", ".join(options[:-1]), options[-1]] if len(options) > 1 else list(options))


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with text cells (and column names) that a spreadsheet would run as formulas defused.

    A cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading
    single quote (OWASP's advice against CSV injection): a raw account id such as
    ``=HYPERLINK("...")`` is written as ``'=HYPERLINK("...")``. Numeric, boolean and date columns are
    untouched; the input frame is not modified.
    """
    out = frame.copy(deep=False)
    for col in out.columns:
        s = out[col]
        if isinstance(s.dtype, pd.CategoricalDtype):
            s = s.astype(object)
        elif not (pd.api.types.is_object_dtype(s.dtype) or pd.api.types.is_string_dtype(s.dtype)):
            continue
        try:
            risky = s.str.startswith(FORMULA_PREFIXES, na=False).astype(bool)
        except AttributeError:  # an object column without text (dates, bytes, lists)
            continue
        if risky.any():
            s = s.astype(object).copy()
            s[risky] = "'" + s[risky].astype(str)
        out[col] = s
    names = pd.Index(out.columns.astype(str))
    return out.set_axis(names.where(~names.str.startswith(FORMULA_PREFIXES), "'" + names), axis=1)


def conform(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """``frame`` with the columns of output table ``table`` (:data:`omnicrm.schema.OUTPUTS`) first, in order.

    Columns beyond the contract (a predict's source keys, a reason's detail) follow the contract's.
    A missing contract column is a bug in the writer, not a user error: it raises ``ValueError``.
    """
    wanted = schema.output_columns(table)
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise ValueError(f"output table {table!r}: missing column(s) {missing}; the contract is {wanted}")
    return frame[wanted + [c for c in frame.columns if c not in wanted]]


def write_frames(outputs: Sequence[tuple[pd.DataFrame, str | Path]]) -> list[Path]:
    """Write files that belong together (a table and its features): all of them, or none.

    Each is written to its temporary file first (as :func:`write_frame` writes one); only when all
    are complete are they moved into place, one after the other with Ctrl-C and SIGTERM deferred
    (:func:`omnicrm.store.staging.signals_deferred`), so an interrupt never leaves a new file beside
    an old one.
    """
    paths = [check_output_path(path, what="output file") for _, path in outputs]
    tmps: list[Path] = []
    try:
        for (frame, _), path in zip(outputs, paths, strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            sweep_stale(path)
            tmps.append(staging_path(path))
            _write(frame, path, tmps[-1])
        with signals_deferred():
            for tmp, path in zip(tmps, paths, strict=True):
                os.replace(tmp, path)
    finally:
        for tmp in tmps:
            discard(tmp)
    return paths


def _write(frame: pd.DataFrame, path: Path, tmp: Path) -> None:
    """``frame`` to ``tmp`` in the format ``path`` asks for (see :func:`write_frame`)."""
    if path.suffix.lower() in CSV:
        # CRLF rows (RFC 4180) make the writer quote a cell holding a lone "\r"; with "\n" rows it
        # did not, and a reader split the row there (the part after "\r" then began a row of its own)
        csv_safe(frame).to_csv(tmp, index=False, lineterminator="\r\n")
    else:
        frame.to_parquet(tmp, index=False)


def write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` to ``path`` atomically: CSV for ``.csv``, else Parquet; returns the path.

    CSV text cells that start like a spreadsheet formula are prefixed with ``'`` (see
    :func:`csv_safe`), and rows end in CRLF (RFC 4180), so a line break inside a cell is always
    quoted. Parquet keeps values exactly as they are.
    """
    path = check_output_path(path, what="output file")
    with staged(path) as tmp:
        _write(frame, path, tmp)
    return path
