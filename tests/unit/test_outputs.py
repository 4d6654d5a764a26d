"""Output tables are written whole or not at all, to checked paths; CSV cells cannot run as formulas."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from omnicrm.errors import ConfigError
from omnicrm.store.outputs import check_output_path, write_frame, write_frames


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
    assert out.read_bytes() == b"a\r\n1\r\n2\r\n"  # RFC 4180 line ends


def test_csv_cells_that_start_like_a_formula_are_defused(tmp_path: Path) -> None:
    risky = ['=HYPERLINK("x")', "+1", "-x", "@SUM(A1)", "\tx", "\rx"]
    frame = pd.DataFrame(
        {
            "shop_key": [*risky, "plain", None],
            "mixed": [*risky[:2], 3, 4.5, None, "ok", "=1+1", "a=b"],
            "reason": pd.Categorical(["=cmd", "ok"] * 4),
            "score": [-0.5, 0.1, -1e-9, 2.0, 0.0, -3.0, 1.0, float("nan")],
            "n": [-3, 1, 2, 3, 4, 5, 6, 7],
            "=total": [1] * 8,
        }
    )
    original = frame.copy()
    out = write_frame(frame, tmp_path / "scores.csv")
    back = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(back.columns) == ["shop_key", "mixed", "reason", "score", "n", "'=total"]
    assert back["shop_key"].tolist() == [f"'{v}" for v in risky] + ["plain", ""]
    assert back.loc[0, "shop_key"] == '\'=HYPERLINK("x")'
    assert len(back) == len(frame)  # a carriage return inside a cell is quoted, not a new row
    assert back["mixed"].tolist() == ['\'=HYPERLINK("x")', "'+1", "3", "4.5", "", "ok", "'=1+1", "a=b"]
    assert back["reason"].tolist() == ["'=cmd", "ok"] * 4
    numbers = pd.read_csv(out)  # numeric columns untouched, negative numbers included
    assert numbers["score"].equals(frame["score"]) and numbers["n"].equals(frame["n"])
    pd.testing.assert_frame_equal(frame, original)  # the caller's frame is not modified


def test_parquet_keeps_values_as_they_are(tmp_path: Path) -> None:
    frame = pd.DataFrame({"shop_key": ['=HYPERLINK("x")', "-1"], "score": [-0.5, 1.0]})
    pd.testing.assert_frame_equal(pd.read_parquet(write_frame(frame, tmp_path / "s.parquet")), frame)


def test_an_interrupt_mid_write_leaves_the_previous_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "scores.parquet"
    write_frame(pd.DataFrame({"a": [1]}), out)
    before = out.read_bytes()

    def interrupted(self, path, **kwargs) -> None:  # noqa: ANN001, ANN003
        Path(path).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_frame(pd.DataFrame({"a": [2]}), out)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]


@pytest.mark.parametrize("failure", ["error", "interrupt"])
def test_files_written_together_are_all_replaced_or_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    table, feats = tmp_path / "freq.parquet", tmp_path / "freq.features.parquet"
    write_frames([(pd.DataFrame({"a": [1]}), table), (pd.DataFrame({"b": [1]}), feats)])
    before = table.read_bytes(), feats.read_bytes()
    real = pd.DataFrame.to_parquet
    written = []

    def second_fails(self, path, **kwargs) -> None:  # noqa: ANN001, ANN003
        if written:  # the table's temporary file is complete; its features file is not
            Path(path).write_bytes(b"half a file")
            raise KeyboardInterrupt if failure == "interrupt" else OSError("disk full")
        written.append(path)
        real(self, path, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", second_fails)
    with pytest.raises(KeyboardInterrupt if failure == "interrupt" else OSError):
        write_frames([(pd.DataFrame({"a": [2]}), table), (pd.DataFrame({"b": [2]}), feats)])
    assert (table.read_bytes(), feats.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["freq.features.parquet", "freq.parquet"]
    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    write_frames([(pd.DataFrame({"a": [3]}), table), (pd.DataFrame({"b": [3]}), feats)])
    assert pd.read_parquet(table)["a"].tolist() == [3] and pd.read_parquet(feats)["b"].tolist() == [3]


def test_a_killed_writers_temporary_file_is_removed_with_a_warning(tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    dead = tmp_path / ".scores.parquet.999999999.0badc0de.tmp"
    old_style = tmp_path / ".scores.parquet.999999998.tmp"  # write_frame's name before the random part
    running = tmp_path / ".scores.parquet.1.0badc0de.tmp"  # pid 1 is alive: its writer may still be busy
    for p in (dead, old_style, running):
        p.write_bytes(b"x")
    with pytest.warns(UserWarning) as caught:
        write_frame(pd.DataFrame({"a": [1]}), out)
    assert sorted(str(w.message) for w in caught) == [
        f"removed stale temporary file {old_style} left by a killed run (pid 999999998)",
        f"removed stale temporary file {dead} left by a killed run (pid 999999999)",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name, "scores.parquet"]


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("sub", "--out {tmp}/sub: is a folder; give a file path ending in .parquet or .csv"),
        ("file.txt/x.csv", "--out {tmp}/file.txt/x.csv: {tmp}/file.txt is a file, so the output cannot be written"),
        ("file.txt/a/b/x.csv", "{tmp}/file.txt is a file"),
        ("x.xlsx", "--out {tmp}/x.xlsx: file type '.xlsx'; this command writes .parquet or .csv files"),
        ("x", "--out {tmp}/x: no file type; this command writes .parquet or .csv files"),
    ],
)
def test_unusable_output_paths_are_refused(tmp_path: Path, out: str, message: str) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match=re.escape(message.format(tmp=tmp_path))):
        check_output_path(tmp_path / out, (".parquet", ".csv"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "sub"]  # nothing created


def test_usable_output_paths_pass_and_nothing_is_created(tmp_path: Path) -> None:
    assert check_output_path(tmp_path / "new/dir/x.PARQUET", (".parquet",)) == tmp_path / "new/dir/x.PARQUET"
    (tmp_path / "x.csv").write_text("old")
    check_output_path(tmp_path / "x.csv", (".csv",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]


@pytest.mark.skipif(not Path("/proc/self").is_dir() or not Path("/dev/null").exists(), reason="Linux file systems")
def test_unwritable_places_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"--out /proc/x.parquet: cannot write in /proc \("):
        check_output_path("/proc/x.parquet")
    with pytest.raises(ConfigError, match=r"cannot create folders in /proc \("):
        check_output_path("/proc/new/x.parquet")
    with pytest.raises(ConfigError, match="/dev/null: exists and is not a regular file"):
        check_output_path("/dev/null")


def test_conform_orders_contract_columns_first_and_keeps_extras() -> None:
    from omnicrm import schema
    from omnicrm.store.outputs import conform

    frame = pd.DataFrame({"extra": [1], "reason": ["r"], "customer_id": ["C1"], "step": ["nba"]})
    out = conform(frame, schema.EXCLUDED)
    assert list(out.columns) == ["customer_id", "step", "reason", "extra"]
    with pytest.raises(ValueError, match=r"'excluded': missing column\(s\) \['reason'\]"):
        conform(frame.drop(columns="reason"), schema.EXCLUDED)


def test_output_contracts_match_design() -> None:
    """The output tables DESIGN.md names, with the columns it lists (scores in long form)."""
    from omnicrm import schema

    assert set(schema.OUTPUTS) == {"scores", "recommendations", "effects", "nba", "contact_frequency", "excluded"}
    assert schema.output_columns("contact_frequency") == [
        "customer_id",
        "channel",
        "current_cadence",
        "recommended_cadence",
        "class",
        "expected_gain",
    ]
    assert schema.output_columns("scores") == ["customer_id", "as_of", "task", "target", "score", "model", "version"]
    assert schema.output_columns("excluded") == ["customer_id", "step", "reason"]
    assert not set(schema.OUTPUTS) & set(schema.TABLES)  # outputs never shadow a store table
