"""Duplicate keys across batches and schema drift, on a real PostgreSQL."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import polars as pl
import psycopg
import pytest
from ndc_lab.faults.groundtruth import quarantined_by_check
from ndc_lab.simulate import population

from ndc.errors import SchemaDriftError
from ndc.tasks import extract_table
from tests.helpers.database import query, scalar

EVERYTHING = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))


def _write_citizens(url: str, frame: pl.DataFrame) -> None:
    """A source holding exactly ``frame`` as its citizens (other tables empty)."""
    empty = population.simulate(population.PopulationSpec(citizens=10, defect_rate=0))
    sim = population.SimulatedPopulation(frame, empty.households.clear(), empty.residence_changes.clear(),
                                         empty.manifest.clear())
    population.write(url, sim, population.PopulationSpec())


@pytest.fixture
def small_batches():
    os.environ["NDC_BATCH_BYTES"] = "8192"
    yield
    os.environ.pop("NDC_BATCH_BYTES")


def test_duplicate_keys_across_batches_keep_the_newest(dbs, small_batches):
    clean = population.simulate(population.PopulationSpec(citizens=2000, seed=3, defect_rate=0)).citizens
    a_new, b_new = clean.row(0, named=True), clean.row(1, named=True)
    older = {"address": "Số 1 phố cũ", "updated_at": a_new["updated_at"].replace(year=2024, month=8)}
    a_old = {**a_new, **older}
    b_old = {**b_new, **older, "updated_at": b_new["updated_at"].replace(year=2024, month=8)}
    # a's older version comes first, b's older version last: both orders across batches are exercised.
    rows = [pl.DataFrame([a_old]), clean.slice(2, 900), pl.DataFrame([a_new, b_new]), clean.slice(902),
            pl.DataFrame([b_old])]
    _write_citizens(dbs.source, pl.concat(rows, how="vertical_relaxed").cast(clean.schema))
    result = extract_table("population", "citizens", *EVERYTHING, run_id="dups")
    assert result.batches > 3
    assert result.rows_in == 2002 and result.rows_loaded == 2000 and result.rows_quarantined == 2
    assert quarantined_by_check(dbs.warehouse, "citizens") == {"duplicate_key": {a_new["pin"], b_new["pin"]}}
    latest = dict(query(dbs.warehouse, "select pin, address from landing_population.citizens where pin = any(%s)",
                        ([a_new["pin"], b_new["pin"]],)))
    assert latest == {a_new["pin"]: a_new["address"], b_new["pin"]: b_new["address"]}
    assert scalar(dbs.warehouse, "select count(*) from landing_population.citizens_history") == 2000
    before = scalar(dbs.warehouse, "select md5(string_agg(x::text, '' order by x::text))"
                    " from landing_population.citizens_history x")
    extract_table("population", "citizens", *EVERYTHING, run_id="dups-rerun")
    assert scalar(dbs.warehouse, "select md5(string_agg(x::text, '' order by x::text))"
                  " from landing_population.citizens_history x") == before
    assert scalar(dbs.warehouse, "select count(*) from quarantine.rows") == 2


def test_new_column_is_reported_and_filtered(dbs):
    with psycopg.connect(dbs.source, autocommit=True) as src:
        src.execute("alter table citizens add column nickname text default 'Tí'")
    try:
        result = extract_table("population", "citizens", *EVERYTHING, run_id="drift-new")
    finally:
        with psycopg.connect(dbs.source, autocommit=True) as src:
            src.execute("alter table citizens drop column nickname")
    assert result.new_columns == ["nickname"]
    details = scalar(dbs.warehouse, "select details from ndc_meta.ledger order by ledger_id desc limit 1")
    assert details["new_columns"] == ["nickname"]
    assert "nickname" not in [r[0] for r in query(
        dbs.warehouse, "select column_name from information_schema.columns where table_name = 'citizens'")]


@pytest.mark.parametrize(("ddl", "undo", "message"), [
    ("alter table citizens rename column ward to commune", "alter table citizens rename column commune to ward",
     "column ward: missing"),
    ("alter table citizens alter column birth_date type text",
     "alter table citizens alter column birth_date type date using birth_date::date",
     "column birth_date: type text where the contract expects date"),
])
def test_removed_or_retyped_column_blocks_the_load(dbs, ddl, undo, message):
    before = scalar(dbs.warehouse, "select count(*) from ndc_meta.batches")
    with psycopg.connect(dbs.source, autocommit=True) as src:
        src.execute(ddl)
    try:
        with pytest.raises(SchemaDriftError) as caught:
            extract_table("population", "citizens", *EVERYTHING, run_id="drift-bad")
    finally:
        with psycopg.connect(dbs.source, autocommit=True) as src:
            src.execute(undo)
    assert "source population, table public.citizens" in str(caught.value)
    assert message in str(caught.value)
    assert scalar(dbs.warehouse, "select count(*) from ndc_meta.batches") == before
    outcome, details = query(dbs.warehouse, "select outcome, details from ndc_meta.ledger"
                             " order by ledger_id desc limit 1")[0]
    assert outcome == "failed" and message in details["error"]
