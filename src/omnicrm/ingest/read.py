"""Reading raw source files as text, with a row number for every input row.

Every column is read as text so that nothing is lost to type inference: parsing happens in SQL
where a value that does not parse becomes a quarantine reason instead of a crash or a silent NULL.
pyarrow keeps file order, so ``_row`` is the 1-based data row number a user can find in the file.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from omnicrm.errors import InputError

ROW = "_row"


@dataclass(frozen=True)
class RawSource:
    """A source file read as text: parsed rows (with ``_row``) and the rows that could not be
    parsed at all (a CSV line with the wrong number of fields), as (row number, reason)."""

    table: pa.Table
    malformed: list[tuple[int, str]]

    @property
    def rows_in(self) -> int:
        return self.table.num_rows + len(self.malformed)


def read_source_table(
    path: Path, fmt: str, required: list[str], delimiter: str = ",", encoding: str = "utf-8"
) -> RawSource:
    """Read ``path`` with every column as text plus a ``_row`` number column.

    ``_row`` is the data row number: 1 for the first row after the header, blank lines not
    counted. Rows with the wrong number of fields are not an error of the whole file: they come
    back in ``malformed`` (their text is never kept: it may hold personal data).

    Raises
    ------
    InputError
        If the file is missing or unreadable, or lacks a required column; the message names the
        file, the missing column(s) and the columns that were found.
    """
    if not path.is_file():
        raise InputError(f"{path}: source file not found")
    malformed: list[tuple[int, str]] = []
    try:
        if fmt == "csv":
            table, malformed = _read_csv(path, delimiter, encoding)
        else:
            table = pq.read_table(path)
            table = pa.table({n: table[n].cast(pa.string()) for n in table.column_names})
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError, ValueError, LookupError) as exc:
        raise InputError(f"{path}: cannot read as {fmt}: {_without_row_text(str(exc))}") from None
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise InputError(
            f"{path}: missing required column(s) {', '.join(repr(c) for c in missing)}; found: {_names(table)}"
        )
    table = table.select(list(dict.fromkeys(required)))
    n_all = table.num_rows + len(malformed)
    rows = np.setdiff1d(np.arange(1, n_all + 1), np.array([r for r, _ in malformed], dtype=np.int64))
    return RawSource(table.append_column(ROW, pa.array(rows, pa.int64())), malformed)


def _read_csv(path: Path, delimiter: str, encoding: str) -> tuple[pa.Table, list[tuple[int, str]]]:
    def read(handler) -> pa.Table:  # noqa: ANN001
        # arrow numbers invalid rows only when it parses on one thread, so the (rare) ragged
        # file is read again single-threaded with a handler; clean files take the fast path
        opts = pacsv.ReadOptions(block_size=1 << 24, encoding=encoding, use_threads=handler is None)
        parse = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=handler)
        # names first, so that every column is read as text (no inference: "007" stays "007")
        with pacsv.open_csv(path, read_options=opts, parse_options=parse) as r:
            names = r.schema.names
        convert = pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            strings_can_be_null=True,
            null_values=[""],
            quoted_strings_can_be_null=True,
        )
        return pacsv.read_csv(path, read_options=opts, parse_options=parse, convert_options=convert)

    try:
        return read(None), []
    except pa.ArrowInvalid as exc:
        if not re.search(r"Expected \d+ columns, got \d+", str(exc)):
            raise
    # the handler gets each bad line decoded; text that does not decode must fail here, cleanly
    decoder = codecs.getincrementaldecoder(encoding)()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 23), b""):
            decoder.decode(block)
        decoder.decode(b"", final=True)
    seen: list[tuple[int, int, int]] = []

    def handler(row) -> str:  # noqa: ANN001 - pyarrow's InvalidRow; its .text is never kept
        seen.append((row.number, row.expected_columns, row.actual_columns))
        return "skip"

    table = read(handler)
    # arrow counts the header as row 1; the header pass of open_csv may report a row twice
    numbered = sorted({(n - 1, e, a) for n, e, a in seen})
    return table, [(n, f"malformed CSV row: expected {e} fields, got {a}") for n, e, a in numbered]


def _names(table: pa.Table, most: int = 30) -> str:
    """The file's column names for an error message, only where they look like names.

    A file without a header (or not the file the mapping meant) has data in its first line, and
    data may be personal: such a "name" is counted, never echoed.
    """
    names = table.column_names
    shown = [n for n in names[:most] if _NAME.fullmatch(n)]
    hidden = len(names) - len(shown)
    text = ", ".join(shown) if shown else "no column name"
    return text + (f" (and {hidden} that do not look like column names, withheld)" if hidden else "")


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_ ]{0,63}")


def _without_row_text(message: str) -> str:
    """Arrow's CSV errors end with the offending line's text, which may hold personal data."""
    if message.startswith("CSV parse error"):
        return ": ".join(message.split(": ")[:2]) + " (line text withheld)"
    return message
