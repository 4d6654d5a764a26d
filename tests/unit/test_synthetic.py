"""Unit tests of the synthetic world generator (tiny worlds, generated in tmp directories)."""

from __future__ import annotations

import csv
import re
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from omnicrm.config import load_config, validate_config
from omnicrm.errors import ConfigError
from omnicrm.synthetic import WorldConfig, WorldSummary, generate_world
from omnicrm.synthetic.contract import DIGIT_KEYS, EVENT_SOURCES, RAW_COLUMNS, RECORD_KEY
from omnicrm.synthetic.formats import london_offset, phone_variants
from omnicrm.synthetic.mess import choose_damage, typo
from omnicrm.synthetic.writer import write_csv

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "generate"
TINY = {"n_people": 300, "days": 120, "n_products": 200, "n_stores": 6}


def _tiny(**overrides: object) -> WorldConfig:
    return WorldConfig(**{**TINY, **overrides})


def _raw(world: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(world / "raw" / f"{name}.csv", dtype=str, keep_default_na=False)


def _files(world: Path) -> dict[str, bytes]:
    return {str(p.relative_to(world)): p.read_bytes() for p in sorted(world.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, WorldSummary]:
    out = tmp_path_factory.mktemp("world")
    return out, generate_world(_tiny(), out)


# --- configuration ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["default.yaml", "small.yaml"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(WorldConfig, CONFIG_DIR / name)
    assert config.n_people > 0
    assert not config.out_dir.is_absolute()


def test_default_yaml_spells_out_the_defaults() -> None:
    assert load_config(WorldConfig, CONFIG_DIR / "default.yaml") == WorldConfig()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"n_people": 0}, "n_people"),
        ({"actions": ["discount_10pct", "bogus"]}, "actions"),
        ({"control_share": 1.0}, "control_share"),
        ({"n_products": 5, "n_categories": 10}, "n_products"),
        ({"mess": {"typo_rate": 0.9}}, "mess.typo_rate"),
        ({"mess": {"typo": 0.1}}, "did you mean 'typo_rate'"),
    ],
)
def test_invalid_config_is_rejected_with_the_key(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(match)):
        validate_config(WorldConfig, data, "world.yaml")


# --- determinism -------------------------------------------------------------------------------------
def test_same_seed_gives_identical_files(world: tuple[Path, WorldSummary], tmp_path: Path) -> None:
    first, _ = world
    generate_world(_tiny(), tmp_path)
    assert _files(tmp_path) == _files(first)


def test_different_seed_gives_different_files(world: tuple[Path, WorldSummary], tmp_path: Path) -> None:
    first, _ = world
    generate_world(_tiny(seed=7), tmp_path)
    a, b = _files(first), _files(tmp_path)
    assert a.keys() == b.keys()
    assert all(a[name] != b[name] for name in a if name.startswith("raw/") and "products" not in name)


# --- the contract of the raw files ---------------------------------------------------------------------
def test_every_raw_file_has_exactly_the_contract_columns(world: tuple[Path, WorldSummary]) -> None:
    out, summary = world
    assert sorted(p.stem for p in (out / "raw").glob("*.csv")) == sorted(RAW_COLUMNS)
    for name, columns in RAW_COLUMNS.items():
        with (out / "raw" / f"{name}.csv").open(encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
        assert tuple(rows[0]) == columns, name
        assert all(len(r) == len(columns) for r in rows[1:]), name
        assert len(rows) - 1 == summary.rows[name] > 0, name


def test_record_owner_covers_every_key_and_each_key_has_one_person(
    world: tuple[Path, WorldSummary],
) -> None:
    out, _ = world
    owner = pd.read_parquet(out / "truth" / "record_owner.parquet")
    assert not owner.duplicated(["source", "record_key"]).any()
    people = set(pd.read_parquet(out / "truth" / "people.parquet")["person_id"])
    assert set(owner["person_id"]) <= people
    for source, column in RECORD_KEY.items():
        keys = _raw(out, source)[column]
        if source in DIGIT_KEYS:
            keys = keys.str.replace(r"\D", "", regex=True)
            assert keys[keys != ""].str.fullmatch(r"\d{12}").all()
        seen = set(keys[keys != ""])
        known = set(owner.loc[owner["source"] == source, "record_key"])
        assert seen == known, source


def test_campaigns_have_treatment_and_control(world: tuple[Path, WorldSummary]) -> None:
    out, _ = world
    exposures = _raw(out, "campaign_exposures")
    clean = exposures[exposures["channel"].isin(["email", "sms", "push"])]
    groups = clean.groupby("campaign_id")["group"].agg(set)
    assert len(groups) == WorldConfig().n_campaigns
    assert all(g == {"treatment", "control"} for g in groups)
    assert set(clean.loc[clean["group"] == "control", "action"]) == {"control"}
    effects = pd.read_parquet(out / "truth" / "treatment_effects.parquet")
    assert set(effects.groupby("campaign_id")["group"].nunique()) == {2}
    assert {f"effect_{a}" for a in WorldConfig().actions} <= set(effects.columns)
    # some people respond negatively to an action, most positively
    discount = effects["effect_discount_10pct"]
    assert (discount < 0).any() and (discount > 0).mean() > 0.5


# --- mess --------------------------------------------------------------------------------------------
def test_personal_data_is_messy(world: tuple[Path, WorldSummary]) -> None:
    out, _ = world
    crm = _raw(out, "crm_members")
    emails = pd.concat([crm["email"], _raw(out, "esp_events")["email"], _raw(out, "ecom_orders")["email"]])
    assert emails.str.contains("[A-Z]").any()
    assert (emails != emails.str.strip()).any()
    assert (crm["email"] == "").any()
    assert crm["card_no"].str.contains(" ").any() and crm["card_no"].str.contains("-").any()
    assert crm["card_no"].str.fullmatch(r"\d{12}").any()
    phones = pd.concat([crm["phone"], _raw(out, "service_contacts")["caller_phone"]])
    assert phones.str.startswith("+44").any() and phones.str.startswith("(0").any()
    assert (_raw(out, "ecom_orders")["device"].isin(["Web", "WEB", "App", "APP"])).any()


def test_call_centre_names_come_in_every_written_form() -> None:
    # tested on the function: a small world holds only a dozen calls, too few to see each form
    from omnicrm.synthetic.mess import full_name_variants

    first = np.array(["John"] * 2000)
    last = np.array(["Smith"] * 2000)
    names = pd.Series(full_name_variants(first, last, np.random.default_rng(0), 0.3))
    assert {"John Smith", "SMITH, John", "Smith, John", "JOHN SMITH"} <= set(names)
    assert names.str.startswith(" ").any()  # the padded, double-spaced, lower-case form
    assert 0.2 < (names != "John Smith").mean() < 0.4


def test_bad_rows_exist_and_are_a_small_share(world: tuple[Path, WorldSummary]) -> None:
    out, summary = world
    defects = pd.read_parquet(out / "truth" / "row_defects.parquet")
    assert set(defects["source"]) <= set(RAW_COLUMNS)
    event_rows = sum(summary.rows[s] for s in EVENT_SOURCES)
    assert 0 < defects["source"].isin(EVENT_SOURCES).sum() < 0.01 * event_rows
    for source in EVENT_SOURCES:
        if summary.rows[source] >= 1000:  # tiny files can hold one bad row in twenty
            assert (defects["source"] == source).sum() < 0.02 * summary.rows[source], source
    assert {"bad_timestamp", "empty_key", "unknown_value", "duplicate"} <= set(defects["defect"])
    esp = _raw(out, "esp_events")
    parsed = pd.to_datetime(esp["event_time"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    assert 0 < parsed.isna().sum() < 0.05 * len(esp)
    flagged = defects[(defects["source"] == "esp_events") & (defects["defect"] == "bad_timestamp")]
    assert sorted(flagged["row_index"]) == sorted(np.flatnonzero(parsed.isna().to_numpy()))
    # exact duplicates repeat a row, id included
    copies = defects[(defects["source"] == "esp_events") & (defects["defect"] == "duplicate")]
    for i in copies["row_index"]:
        assert esp.iloc[i].equals(esp.iloc[i - 1])


def test_records_carry_at_most_one_damage(world: tuple[Path, WorldSummary]) -> None:
    """A CRM record differs from its owner's canonical data in at most one field (typo or missing)."""
    out, _ = world
    crm = _raw(out, "crm_members").drop_duplicates()
    owner = pd.read_parquet(out / "truth" / "record_owner.parquet")
    people = pd.read_parquet(out / "truth" / "people.parquet").set_index("person_id")
    key = owner[owner["source"] == "crm_members"].set_index("record_key")["person_id"]
    truth = people.loc[key.reindex(crm["member_id"]).to_numpy()]
    norm = lambda s: s.str.strip().str.lower().str.replace(r"\s+", "", regex=True)  # noqa: E731
    email = norm(crm["email"]).to_numpy()
    off = (
        (norm(crm["first_name"]).to_numpy() != norm(truth["first_name"]).to_numpy()).astype(int)
        + (norm(crm["last_name"]).to_numpy() != norm(truth["last_name"]).to_numpy())
        + ((email != truth["email"].to_numpy()) & (email != truth["email2"].to_numpy()))
        + (crm["phone"] == "").to_numpy()
        + (
            (norm(crm["postcode"]).to_numpy() != norm(truth["postcode"]).to_numpy())
            & (norm(crm["postcode"]).to_numpy() != norm(truth["new_postcode"]).to_numpy())
        )
    )
    assert off.max() <= 1
    assert 0 < (off == 1).mean() < 0.5


# --- formats -----------------------------------------------------------------------------------------
def test_timestamps_follow_their_formats(world: tuple[Path, WorldSummary]) -> None:
    out, _ = world
    defects = pd.read_parquet(out / "truth" / "row_defects.parquet")

    def good(name: str) -> pd.DataFrame:
        bad = defects.loc[(defects["source"] == name) & (defects["defect"] != "duplicate"), "row_index"]
        frame = _raw(out, name)
        return frame.drop(index=bad.to_numpy())

    ecom = good("ecom_orders")["event_time"]
    assert ecom.str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)").all()
    assert all(ecom.str.endswith(suffix).any() for suffix in ("+01:00", "Z", "+00:00"))
    pd.to_datetime(good("pos_sales")["till_time"], format="%d/%m/%Y %H:%M:%S")
    pd.to_datetime(good("service_contacts")["contact_time"], format="%Y-%m-%d %H:%M")
    pd.to_datetime(good("nps_responses")["submitted_at"], format="%Y-%m-%dT%H:%M:%SZ")
    pd.to_datetime(good("campaign_exposures")["sent_at"], format="%Y-%m-%d %H:%M:%S")
    pd.to_datetime(_raw(out, "crm_members")["joined_on"], format="%d/%m/%Y")
    started = good("web_sessions")["started_at"].astype("int64")
    start = datetime(2023, 1, 1, tzinfo=UTC).timestamp()
    assert started.min() >= start and started.max() < start + 120 * 86400


def test_london_offset_matches_the_tz_database() -> None:
    ts = np.random.default_rng(0).integers(1_600_000_000, 1_800_000_000, 2000)
    london = ZoneInfo("Europe/London")
    expected = [datetime.fromtimestamp(int(t), london).utcoffset().seconds for t in ts]
    assert london_offset(ts).tolist() == expected


def test_phone_variants_share_their_digits() -> None:
    forms = phone_variants(np.array(["7700900123", "2079460123"]))
    assert forms[0].tolist() == [
        "07700 900123",
        "+44 7700 900123",
        "(07700) 900-123",
        "447700900123",
        "07700900123",
    ]
    assert forms[1, 0] == "020 7946 0123"
    for row, nsn in zip(forms, ["7700900123", "2079460123"], strict=True):
        digits = [re.sub(r"\D", "", f) for f in row]
        assert all(d.removeprefix("44").removeprefix("0") == nsn for d in digits)


def test_typo_is_one_small_edit() -> None:
    rng = np.random.default_rng(1)
    words = np.array(["Margaret", "Smith", "oliver.jones@gmail.com"] * 50)
    out = typo(words, rng)
    assert (out != words).mean() > 0.8  # swapping two equal letters changes nothing
    assert all(abs(len(a) - len(b)) <= 1 for a, b in zip(out, words, strict=True))


def test_choose_damage_gives_at_most_one_and_follows_the_rates() -> None:
    damage = choose_damage(np.random.default_rng(2), 100_000, [0.03, 0.04])
    assert set(np.unique(damage)) == {-1, 0, 1}
    assert abs((damage == 0).mean() - 0.03) < 0.005 and abs((damage == 1).mean() - 0.04) < 0.005


def test_csv_quotes_only_where_needed(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    write_csv(path, {"a": pa.array(["plain", " padded ", "SMITH, John", None, 'say "hi"'])})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == ["a", "plain", '" padded "', '"SMITH, John"', "", '"say ""hi"""']
    back = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)["a"].tolist()
    assert back == ["plain", " padded ", "SMITH, John", "", 'say "hi"']


# --- truth and the entry point -----------------------------------------------------------------------
def test_truth_people_and_summary(world: tuple[Path, WorldSummary]) -> None:
    out, summary = world
    people = pd.read_parquet(out / "truth" / "people.parquet")
    assert len(people) == summary.people == 300
    assert people["person_id"].is_unique
    assert people["churn_date"].isna().any() and people["churn_date"].notna().any()
    assert (people.groupby("household_id").size() > 1).any()
    assert summary.total_rows == sum(summary.rows.values())
    assert (out / "world.json").is_file()


def test_progress_is_reported_and_nothing_printed(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls: list[tuple[str, float]] = []
    generate_world(_tiny(n_people=50, days=28, n_campaigns=1), tmp_path, progress=lambda s, f: calls.append((s, f)))
    steps = [s for s, _ in calls]
    assert set(steps) == {"people", "simulate", "sources", "write"}
    assert all(0.0 <= f <= 1.0 for _, f in calls)
    assert {s for s, f in calls if f == 1.0} == set(steps)
    assert capsys.readouterr() == ("", "")


def test_start_date_is_honoured(tmp_path: Path) -> None:
    generate_world(_tiny(n_people=60, days=35, start_date=date(2024, 6, 1), n_campaigns=0), tmp_path)
    sent = pd.to_datetime(_raw(tmp_path, "esp_events")["event_time"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    assert sent.min() >= pd.Timestamp("2024-06-01") and sent.max() < pd.Timestamp("2024-07-06")
    assert len(_raw(tmp_path, "campaign_exposures")) == 0


@pytest.mark.slow
def test_default_world_is_fast(tmp_path: Path) -> None:
    summary = generate_world(load_config(WorldConfig, CONFIG_DIR / "default.yaml"), tmp_path)
    assert summary.elapsed_seconds < 60
    assert 1_500_000 <= summary.total_rows <= 3_000_000


def test_failed_generation_leaves_the_earlier_world_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "world"
    generate_world(_tiny(), out)
    before = _files(out)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("omnicrm.synthetic.world.write_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        generate_world(_tiny(seed=99), out)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]  # no staging folder left


def test_a_killed_generators_staging_folder_is_removed_next_time(tmp_path: Path) -> None:
    from omnicrm.store.staging import StaleFileWarning

    out = tmp_path / "world"
    generate_world(_tiny(), out)
    stale = tmp_path / ".world.999999999-deadbeef"  # a pid no process has
    (stale / "raw").mkdir(parents=True)
    with pytest.warns(StaleFileWarning, match="left by a killed run"):
        generate_world(_tiny(), out)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]
