"""The taxation simulator: deterministic, every injected defect meets its expected outcome at gate 1, and the
source is written to the real PostgreSQL with its manifest and crosswalks."""

from __future__ import annotations

import uuid

import polars as pl
import polars.testing
import psycopg
import pytest
from ndc_lab.simulate import taxation
from ndc_lab.simulate.common import SourceSpec, check_digits, tax_code_check_digit

from ndc.contracts import get_contract
from ndc.contracts.validation import validate
from ndc.warehouse.connections import with_database
from ndc.warehouse.database import drop_database

KEYS = {"taxpayers": "taxpayer_id", "filings": "filing_id", "payments": "payment_id"}


@pytest.fixture(scope="module")
def simulated():
    return taxation.simulate(SourceSpec(citizens=20_000, seed=5, defect_rate=0.002))


def test_deterministic_per_seed():
    spec = SourceSpec(citizens=3_000, seed=11, defect_rate=0.002)
    first, second = taxation.simulate(spec), taxation.simulate(spec)
    for table in KEYS:
        polars.testing.assert_frame_equal(first.tables[table], second.tables[table])
    polars.testing.assert_frame_equal(first.manifest, second.manifest)
    for name, frame in first.crosswalks.items():
        polars.testing.assert_frame_equal(frame, second.crosswalks[name])
    other = taxation.simulate(SourceSpec(citizens=3_000, seed=12, defect_rate=0.002))
    assert not first.tables["taxpayers"].equals(other.tables["taxpayers"])
    assert not first.manifest.equals(other.manifest)


def test_generated_tax_codes_meet_the_contracts_rule_and_a_wrong_digit_does_not():
    import numpy as np

    from ndc.contracts.checks import tax_code_is_valid

    first9 = np.arange(10_000_000, 10_002_000, dtype=np.int64) * 7 + 123
    digits = check_digits(first9)
    assert (digits == -1).any() and (digits >= 0).any()
    usable = first9[digits >= 0]
    good = [f"{v:09d}{d}" for v, d in zip(usable.tolist(), digits[digits >= 0].tolist(), strict=True)]
    wrong = [f"{code[:9]}{(int(code[9]) + 1) % 10}" for code in good]
    valid = pl.select(tax_code_is_valid(pl.lit(pl.Series(good + wrong)))).to_series().to_list()
    assert valid == [True] * len(good) + [False] * len(wrong)
    assert tax_code_check_digit("010010007") == 9


def _source_rows(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """The rows as the platform reads them: the contract's columns, both versions of a duplicated key."""
    return frame.select(list(get_contract(f"taxation.{table}").columns))


@pytest.mark.parametrize("table", list(KEYS))
def test_gate_catches_exactly_the_manifest(simulated, table):
    manifest = simulated.manifest.filter(pl.col("table_name") == table)
    result = validate(_source_rows(simulated.tables[table], table), get_contract(f"taxation.{table}"))
    rejected = {str(r[KEYS[table]]): r["_checks"] for r in result.rejected.iter_rows(named=True)}
    quarantined = manifest.filter(pl.col("expected_outcome") == "quarantined")
    assert quarantined.height and set(rejected) == set(quarantined["record_key"])
    assert result.rejected.height == quarantined.height  # no clean row (nor a losing version) is rejected
    for key, check in quarantined.select("record_key", "expected_check").iter_rows():
        assert check in rejected[key], (key, check, rejected[key])
    nfd = manifest.filter(pl.col("expected_outcome") == "repaired")
    assert result.repaired == nfd.height
    exceptions = manifest.filter(pl.col("expected_outcome") == "exception")["record_key"]
    passed = set(result.passed[KEYS[table]].cast(pl.String))
    assert set(exceptions) <= passed
    superseded = manifest.filter(pl.col("expected_outcome") == "superseded")
    if table == "taxpayers":
        assert superseded.height and exceptions.is_empty()
        assert (simulated.tables[table]["taxpayer_id"].is_duplicated().sum() == 2 * superseded.height)
    else:
        assert exceptions.len() and superseded.is_empty()


def test_duplicate_versions_share_a_utc_day(simulated):
    taxpayers = simulated.tables["taxpayers"]
    losers = simulated.manifest.filter(pl.col("expected_outcome") == "superseded")
    versions = losers.join(taxpayers, left_on="record_key", right_on="taxpayer_id")
    winners = versions.filter(pl.col("updated_at") != pl.col("row_version"))
    assert winners.height == losers.height
    assert (winners["row_version"] < winners["updated_at"]).all()
    assert (winners["row_version"].dt.date() == winners["updated_at"].dt.date()).all()


def test_identifiers_follow_the_cutover(simulated):
    taxpayers = simulated.tables["taxpayers"]
    flawed = simulated.manifest.filter((pl.col("table_name") == "taxpayers")
                                       & (pl.col("expected_outcome") == "quarantined"))["record_key"]
    clean = taxpayers.filter(~pl.col("taxpayer_id").is_in(flawed.implode()))
    day = clean["updated_at"].dt.convert_time_zone("Asia/Ho_Chi_Minh").dt.date()
    individual = clean.with_columns(day.alias("day")).filter(pl.col("taxpayer_kind") == "individual")
    before = individual.filter(pl.col("day") < pl.date(2025, 7, 1))
    after = individual.filter(pl.col("day") >= pl.date(2025, 7, 1))
    assert (before["taxpayer_id"].str.len_chars() == 10).all() and before["pin"].is_null().all()
    assert (after["taxpayer_id"] == after["pin"]).all()
    walk = simulated.crosswalks["legacy_tax_code_to_pin"]
    assert set(individual["legacy_tax_code"].drop_nulls()) <= set(walk["legacy_tax_code"])
    ambiguous = simulated.crosswalks["ambiguous_name_birth"]
    assert ambiguous.height and ambiguous["constructed"].any()


def test_write_and_read_back(pg_server, simulated):
    spec = SourceSpec(citizens=20_000, seed=5, defect_rate=0.002)
    url = with_database(pg_server, f"ndc_test_taxation_{uuid.uuid4().hex[:8]}")
    try:
        taxation.write(url, simulated, spec)
        with psycopg.connect(url) as conn:
            for table, frame in simulated.tables.items():
                assert conn.execute(f"select count(*) from {table}").fetchone()[0] == frame.height
            assert conn.execute("select count(*) from simulator.defect_manifest").fetchone()[0] == \
                simulated.manifest.height
            for name, frame in simulated.crosswalks.items():
                assert conn.execute(f"select count(*) from simulator.{name}").fetchone()[0] == frame.height
            kinds = conn.execute("select count(distinct kind) from simulator.defect_manifest").fetchone()[0]
            assert kinds == simulated.manifest["kind"].n_unique()
            nfd = conn.execute("select count(*) from taxpayers where full_name <> normalize(full_name, NFC)"
                               ).fetchone()[0]
            assert nfd == simulated.manifest.filter(pl.col("kind") == "nfd_text").height
    finally:
        drop_database(url)
