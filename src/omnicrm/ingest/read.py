"""Reading raw source files as text, with a row number for every input row.

Every column is read as text so that nothing is lost to type inference: parsing happens in SQL
where a value that does not parse becomes a quarantine reason instead of a crash or a silent NULL.
pyarrow keeps file order, so ``_row`` is the 1-based data row number a user can find in the file.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from omnicrm.errors import InputError

ROW = "_row"


def read_source_table(
    path: Path, fmt: str, required: list[str], delimiter: str = ",", encoding: str = "utf-8"
) -> pa.Table:
    """Read ``path`` with every column as text plus a ``_row`` number column.

    Raises
    ------
    InputError
        If the file is missing or unreadable, or lacks a required column; the message names the
        file, the missing column(s) and the columns that were found.
    """
    if not path.is_file():
        raise InputError(f"{path}: source file not found")
    try:
        if fmt == "csv":
            read = pacsv.ReadOptions(block_size=1 << 24, encoding=encoding)
            parse = pacsv.ParseOptions(delimiter=delimiter)
            # names first, so that every column is read as text (no inference: "007" stays "007")
            with pacsv.open_csv(path, read_options=read, parse_options=parse) as reader:
                names = reader.schema.names
            table = pacsv.read_csv(
                path,
                read_options=read,
                parse_options=parse,
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.string() for n in names},
                    strings_can_be_null=True,
                    null_values=[""],
                    quoted_strings_can_be_null=True,
                ),
            )
        else:
            table = pq.read_table(path)
            table = pa.table({n: table[n].cast(pa.string()) for n in table.column_names})
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError, ValueError, LookupError) as exc:
        raise InputError(f"{path}: cannot read as {fmt}: {exc}") from exc
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise InputError(
            f"{path}: missing required column(s) {', '.join(repr(c) for c in missing)}; "
            f"found: {', '.join(table.column_names)}"
        )
    table = table.select(list(dict.fromkeys(required)))
    return table.append_column(ROW, pa.array(range(1, table.num_rows + 1), pa.int64()))
