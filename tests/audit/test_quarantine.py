"""Quarantine you can act on: overview, show, and replay after a contract fix, on a real PostgreSQL.

The contract fix is a real pandera schema change: the next minor version of ``population.citizens`` also
accepts the 12-digit citizen identity card number in ``cmnd``. The test swaps it in where replay finds the
dataset's current contract (``ndc.tasks.landing_target``), as deploying the new contract module would.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pandera.polars as pa
import polars as pl
import psycopg
import pytest
from ndc_lab.simulate import population
from pandera.polars import PolarsData

from ndc import tasks
from ndc.audit import ledger
from ndc.audit.quarantine import _revalidate, overview, replay, show, target_of
from ndc.contracts import Contract
from ndc.contracts.population import Citizens
from ndc.errors import NdcError
from ndc.tasks import extract_table
from tests.helpers.database import query, scalar
from tests.helpers.sources import write_citizens

EVERYTHING = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
DATASET = "population.citizens"
_MAJOR, _MINOR, _ = Citizens.__config__.metadata["version"].split(".")
FIXED = f"{_MAJOR}.{int(_MINOR) + 1}.0"  # the contract fix: a minor version that accepts more


def _cmnd_9_or_12_digits(data: PolarsData) -> pl.LazyFrame:
    column = pl.col(data.key)
    return data.lazyframe.select(column.is_null() | column.str.contains(r"^(\d{9}|\d{12})$").fill_null(False))


class CitizensFixed:
    """The next minor version of population.citizens: ``cmnd`` may also hold the 12-digit citizen identity card number.

    Built from version 1's pandera schema with that one check replaced, not by subclassing the model: pandera
    (0.35) pops a check's ``name`` when it first builds a schema, so a subclass's inherited checks would be
    labelled by their method names (``_full_name``) instead of their check names (``full_name_not_blank``)."""

    __config__ = Citizens.__config__
    schema = Citizens.to_schema().update_column(
        "cmnd", checks=[pa.Check(_cmnd_9_or_12_digits, name="cmnd_format")])

    @classmethod
    def to_schema(cls):
        return cls.schema

    @classmethod
    def validate(cls, frame: pl.DataFrame, *, lazy: bool = True) -> pl.DataFrame:
        return cls.schema.validate(frame, lazy=lazy)


@pytest.fixture(scope="module")
def world(dbs):
    """300 citizens: 5 with a 12-digit cmnd, 2 with a blank name, and one key whose older version (12-digit
    cmnd) was quarantined while its newer, valid version was loaded by a later extract."""
    clean = population.simulate(population.PopulationSpec(citizens=300, seed=7, defect_rate=0)).citizens
    clean = clean.filter(pl.col("updated_at") < datetime(2025, 6, 1, tzinfo=UTC)).head(200)
    twelve = pl.col("pin")  # a 12-digit number in cmnd
    defects = clean.with_row_index("i").with_columns(
        cmnd=pl.when(pl.col("i") < 5).then(twelve).otherwise(pl.col("cmnd")),
        full_name=pl.when(pl.col("i").is_in([5, 6])).then(pl.lit("  ")).otherwise(pl.col("full_name")),
    ).drop("i")
    newer = defects.row(7, named=True)
    older = {**newer, "cmnd": newer["pin"], "updated_at": newer["updated_at"] - timedelta(days=1)}
    first = pl.concat([defects.slice(0, 7), pl.DataFrame([older], schema=defects.schema), defects.slice(8)])
    write_citizens(dbs.source, first)
    extract_table("population", "citizens", *EVERYTHING, run_id="first")
    write_citizens(dbs.source, defects)
    extract_table("population", "citizens", *EVERYTHING, run_id="second")
    return {"fixed": defects["pin"].head(5).to_list(), "blank": defects["pin"].slice(5, 2).to_list(),
            "older": older, "newer": newer}


@pytest.fixture
def contract_fixed(monkeypatch):
    original = tasks.landing_target

    def with_fix(source, table_name):
        target = original(source, table_name)
        if target.dataset != DATASET:
            return target
        return dataclasses.replace(target, contract=Contract(DATASET, FIXED, CitizensFixed))

    monkeypatch.setattr(tasks, "landing_target", with_fix)


def _landing_fingerprint(url: str) -> tuple:
    return (scalar(url, "select md5(string_agg(x::text, '' order by x::text)) from landing_population.citizens x"),
            scalar(url, "select count(*) from landing_population.citizens_history"),
            scalar(url, "select count(*) from quarantine.rows"))


def test_overview_and_show(dbs, world):
    rows = {(r["dataset"], r["check_name"]): r for r in overview()}
    assert rows[(DATASET, "cmnd_format")]["rows"] == 6
    assert rows[(DATASET, "full_name_not_blank")]["rows_not_replayed"] == 2
    assert rows[(DATASET, "cmnd_format")]["oldest_age"] >= timedelta(0)
    shown = show(DATASET, check="full_name_not_blank")
    assert sorted(r["record_key"] for r in shown) == sorted(world["blank"])
    assert all(r["payload"]["full_name"] == "  " and r["replay_outcome"] is None for r in shown)
    assert show(DATASET, ids=[shown[0]["id"]], limit=5) == [shown[0]]


def test_replay_of_a_table_never_loaded_is_refused(dbs, world):
    with pytest.raises(NdcError, match=r"landing table landing_population\.households does not exist"):
        replay("population.households")


def test_dry_run_changes_nothing(dbs, world, contract_fixed):
    before = _landing_fingerprint(dbs.warehouse)
    ledger_rows = scalar(dbs.warehouse, "select count(*) from ndc_meta.ledger")
    result = replay(DATASET, dry_run=True)
    assert (result.rows_in, result.rows_loaded, result.rows_still_failing) == (8, 6, 2)
    assert _landing_fingerprint(dbs.warehouse) == before
    assert scalar(dbs.warehouse, "select count(*) from ndc_meta.ledger") == ledger_rows
    assert scalar(dbs.warehouse, "select count(*) from quarantine.rows where replayed_at is not null") == 0


def test_replay_after_a_contract_fix_loads_the_rows_that_now_pass(dbs, world, contract_fixed):
    assert target_of(DATASET).contract.version == FIXED
    result = replay(DATASET, run_id="replay-1")
    assert (result.rows_in, result.rows_loaded, result.rows_still_failing) == (8, 6, 2)
    assert result.rows_in == result.rows_loaded + result.rows_still_failing
    assert result.checks_before == {"cmnd_format": 6, "full_name_not_blank": 2}
    assert result.checks_now == {"full_name_not_blank": 2}
    assert result.rows_new_versions == 6

    # the fixed rows are in landing, latest and history, loaded by the replay
    landed = dict(query(dbs.warehouse, "select pin, cmnd from landing_population.citizens where pin = any(%s)",
                        (world["fixed"],)))
    assert landed == {pin: pin for pin in world["fixed"]}
    assert scalar(dbs.warehouse, "select count(*) from landing_population.citizens_history"
                  " where _ndc_run_id = 'replay-1'") == 6
    # nothing is deleted: every quarantine row is still there, marked
    marks = dict(query(dbs.warehouse, "select replay_outcome, count(*) from quarantine.rows"
                       " where replay_run_id = 'replay-1' group by replay_outcome"))
    assert marks == {"loaded": 6, "still_failing": 2}
    assert scalar(dbs.warehouse, "select count(*) from quarantine.rows") == 8
    still = query(dbs.warehouse, "select record_key, checks from quarantine.rows"
                  " where replay_outcome = 'still_failing'")
    assert sorted(still) == sorted((pin, ["full_name_not_blank"]) for pin in world["blank"])

    # ledger and contract-result history show it
    entry = query(dbs.warehouse, "select kind, source, target, rows_in, rows_loaded, rows_quarantined,"
                  " contract_version, outcome, details from ndc_meta.ledger order by ledger_id desc limit 1")[0]
    assert entry[:8] == ("replay", "quarantine.rows", "landing_population.citizens", 8, 6, 2, FIXED, "success")
    assert entry[8]["checks_before"] == {"cmnd_format": 6, "full_name_not_blank": 2}
    checked = query(dbs.warehouse, "select gate, dataset, contract_version, rows_checked, rows_failed,"
                    " failed_by_check, outcome, run_id from ndc_meta.contract_results where gate = 'replay'")
    assert checked == [("replay", DATASET, FIXED, 8, 2, {"full_name_not_blank": 2}, "fail", "replay-1")]
    with psycopg.connect(dbs.warehouse) as conn:
        assert ledger.verify(conn).ok


def test_a_replayed_older_version_never_replaces_a_newer_one(dbs, world, contract_fixed):
    """The older version reaches history; the latest state keeps the newer version loaded by an extract."""
    pin, newer, older = world["newer"]["pin"], world["newer"], world["older"]
    latest = query(dbs.warehouse, "select cmnd, updated_at, _ndc_run_id from landing_population.citizens"
                   " where pin = %s", (pin,))
    assert latest == [(newer["cmnd"], newer["updated_at"], "second")]
    versions = query(dbs.warehouse, "select updated_at, _ndc_run_id from landing_population.citizens_history"
                     " where pin = %s order by updated_at", (pin,))
    assert versions == [(older["updated_at"], "replay-1"), (newer["updated_at"], "second")]


def test_replay_again_loads_nothing_and_duplicates_nothing(dbs, world, contract_fixed):
    before = _landing_fingerprint(dbs.warehouse)
    again = replay(DATASET, run_id="replay-2")
    assert (again.rows_in, again.rows_loaded, again.rows_still_failing) == (2, 0, 2)
    assert _landing_fingerprint(dbs.warehouse) == before
    assert scalar(dbs.warehouse, "select count(*) from quarantine.rows where replay_outcome = 'loaded'"
                  " and replay_run_id = 'replay-1'") == 6
    assert query(dbs.warehouse, "select kind, rows_in, rows_loaded, rows_quarantined from ndc_meta.ledger"
                 " order by ledger_id desc limit 1") == [("replay", 2, 0, 2)]
    rows = {(r["dataset"], r["check_name"]): r for r in overview(DATASET)}
    assert rows[(DATASET, "cmnd_format")]["rows_loaded_by_replay"] == 6
    assert rows[(DATASET, "full_name_not_blank")]["rows_still_failing"] == 2


def test_an_uncastable_value_is_revalidated_from_its_raw_text(dbs, world):
    """A ``value_type`` row's payload holds null; its raw text (in the reasons) is what is revalidated."""
    target = target_of(DATASET)
    base = dict(world["newer"])

    def row(quarantine_id: int, raw: str) -> tuple:
        values = {**base, "birth_date": None}
        reasons = {"value_type(birth_date)": {"column": "birth_date", "value": raw, "expected": "Date"}}
        return (quarantine_id, ["value_type(birth_date)"], reasons, *[values[c] for c in target.columns])

    outcome = _revalidate([row(1, base["birth_date"].isoformat()), row(2, "2015-02-30")], target)
    assert outcome.passed_ids == [1] and outcome.passed[0]["birth_date"].to_list() == [base["birth_date"]]
    assert outcome.failing_ids == [2] and outcome.failing_checks == [["value_type(birth_date)"]]
