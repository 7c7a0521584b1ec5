"""Contracts agree with the simulator's ground truth: clean rows pass, each defect fails exactly its check."""

from __future__ import annotations

import unicodedata
from datetime import UTC, date, datetime

import polars as pl
import pytest
from ndc_lab.simulate import population

from ndc.contracts import get_contract
from ndc.contracts.validation import normalise_text, validate

TABLES = ["citizens", "households", "residence_changes"]
KEY = {"citizens": "pin", "households": "household_id", "residence_changes": "change_id"}


@pytest.fixture(scope="module")
def simulated():
    return population.simulate(population.PopulationSpec(citizens=20_000, seed=5, defect_rate=0.002))


@pytest.mark.parametrize("table", TABLES)
def test_clean_rows_pass(table):
    clean = population.simulate(population.PopulationSpec(citizens=5_000, seed=9, defect_rate=0))
    result = validate(getattr(clean, table), get_contract(f"population.{table}"))
    assert result.rejected.is_empty() and result.repaired == 0


@pytest.mark.parametrize("table", TABLES)
def test_each_defect_fails_exactly_its_check(simulated, table):
    result = validate(getattr(simulated, table), get_contract(f"population.{table}"))
    got = {(str(r[KEY[table]]), tuple(r["_checks"])) for r in result.rejected.iter_rows(named=True)}
    manifest = simulated.manifest.filter(
        (pl.col("table_name") == table) & (pl.col("expected_outcome") == "quarantined"))
    expected = {(key, (check,)) for key, check in manifest.select("record_key", "expected_check").iter_rows()}
    assert expected and got == expected


def test_nfd_is_repaired_and_counted():
    name = "Nguyễn Thị Hương"
    frame = pl.DataFrame({"full_name": [unicodedata.normalize("NFD", name), name, None]})
    repaired, count = normalise_text(frame)
    assert count == 1 and repaired["full_name"].to_list() == [name, name, None]


def test_pin_structure_rules():
    contract = get_contract("population.citizens")
    base = population.simulate(population.PopulationSpec(citizens=10, seed=1, defect_rate=0)).citizens.head(1)
    row = base.row(0, named=True)
    cases = {
        "ok": dict(pin="001090123456", birth_date=date(1990, 5, 1), sex="M"),
        "woman_1900s": dict(pin="001190123456", birth_date=date(1990, 5, 1), sex="F"),
        "man_2000s": dict(pin="079205123456", birth_date=date(2005, 1, 1), sex="M"),
        "sex_contradicts": dict(pin="001090654321", birth_date=date(1990, 5, 1), sex="F"),
        "year_contradicts": dict(pin="001091123456", birth_date=date(1990, 5, 1), sex="M"),
        "unknown_prefix": dict(pin="099090123456", birth_date=date(1990, 5, 1), sex="M"),
        "eleven_digits": dict(pin="00109012345", birth_date=date(1990, 5, 1), sex="M"),
    }
    frame = pl.DataFrame([{**row, **values, "cmnd": None, "death_date": None} for values in cases.values()],
                         schema=base.schema)
    result = validate(frame, contract)
    checks = {r["pin"]: r["_checks"] for r in result.rejected.iter_rows(named=True)}
    by_case = {name: checks.get(values["pin"]) for name, values in cases.items()}
    assert by_case["ok"] is None and by_case["woman_1900s"] is None and by_case["man_2000s"] is None
    assert by_case["year_contradicts"] == ["pin_birth_consistency"]
    assert by_case["sex_contradicts"] == ["pin_birth_consistency"]
    assert by_case["unknown_prefix"] == ["pin_format"] and by_case["eleven_digits"] == ["pin_format"]


def test_province_codes_are_effective_dated():
    contract = get_contract("population.households")
    before = datetime(2025, 6, 30, 16, 59, tzinfo=UTC)  # 23:59 on 30 June in Việt Nam
    after = datetime(2025, 6, 30, 17, 0, tzinfo=UTC)  # 00:00 on 1 July in Việt Nam
    frame = pl.DataFrame({"household_id": [f"HK1{i:09d}" for i in range(4)],
                          "head_pin": ["001090123456"] * 4, "province_code": ["62", "62", "51", "99"],
                          "ward": ["x"] * 4, "address": ["y"] * 4, "updated_at": [before, after, after, before]},
                         schema_overrides={"updated_at": pl.Datetime("us", "UTC")})
    rejected = validate(frame, contract).rejected
    assert rejected["household_id"].to_list() == ["HK1000000001", "HK1000000003"]
    assert all(c == ["province_code_valid"] for c in rejected["_checks"].to_list())
