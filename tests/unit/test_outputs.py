"""Output tables are written whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from omnicrm.store.outputs import write_frame


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    write_frame(pd.DataFrame({"customer_id": ["C1"], "score": [0.5]}), out)
    before = out.read_bytes()
    unserialisable = pd.DataFrame({"x": [object()]})
    with pytest.raises(Exception):  # noqa: B017 - whatever pyarrow raises, the old file must survive
        write_frame(unserialisable, out)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]


def test_csv_by_suffix(tmp_path: Path) -> None:
    out = write_frame(pd.DataFrame({"a": [1, 2]}), tmp_path / "sub" / "x.csv")
    assert out.read_text().splitlines() == ["a", "1", "2"]
