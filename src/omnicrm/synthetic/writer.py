"""Writing a generated world: CSV for raw files, Parquet for truth, JSON for the summary.

The CSV writer quotes a field only when it must (a comma, quote or line break inside, or leading or
trailing whitespace that readers would otherwise be free to trim), as most exporting systems do.
Empty fields are missing values. It builds each row with Arrow kernels and writes the bytes of the
resulting string array directly, which is an order of magnitude faster than a row-wise writer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

_NEEDS_QUOTES = r'[",\r\n]|^\s|\s$'
_CHUNK_ROWS = 500_000


def _csv_field(values: pa.Array) -> pa.Array:
    """Text of one column as CSV fields (nulls -> empty, quoted where needed)."""
    text = pc.fill_null(values.cast(pa.string()), "")
    needs = pc.match_substring_regex(text, _NEEDS_QUOTES)
    if not pc.any(needs).as_py():
        return text
    # constants as arrays: Arrow's join kernels are several times slower with scalar operands
    quote = pa.repeat('"', len(text))
    quoted = pc.binary_join_element_wise(quote, pc.replace_substring(text, '"', '""'), quote, "")
    return pc.if_else(needs, quoted, text)


def _lines_bytes(columns: list[pa.Array]) -> bytes:
    """CSV lines (each ending in a newline) of equally long columns, as one bytes object."""
    fields = [_csv_field(c) for c in columns]
    n = len(fields[0])
    fields.append(pa.repeat("\n", n))
    line = pc.binary_join_element_wise(pc.binary_join_element_wise(*fields[:-1], pa.repeat(",", n)), fields[-1], "")
    if isinstance(line, pa.ChunkedArray):
        line = line.combine_chunks()
    offsets = np.frombuffer(line.buffers()[1], dtype=np.int32, count=len(line) + 1, offset=line.offset * 4)
    return line.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]


def write_csv(path: Path, columns: dict[str, pa.Array]) -> int:
    """Write ``columns`` (name -> string array) as a UTF-8 CSV with a header row.

    Returns
    -------
    int
        Number of data rows written.
    """
    names = list(columns)
    n = len(columns[names[0]]) if names else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(_lines_bytes([pa.array([name]) for name in names]))
        for start in range(0, n, _CHUNK_ROWS):
            fh.write(_lines_bytes([columns[c].slice(start, _CHUNK_ROWS) for c in names]))
    return n


def write_parquet(path: Path, table: pa.Table) -> None:
    """Write a truth table as Parquet (zstd)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON document, keys in the given order, with a trailing newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
