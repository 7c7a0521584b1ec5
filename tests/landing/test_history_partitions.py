"""History is written once: the stage a load writes into becomes that load's history partition (a large load), or
is appended to the small loads' partition; latest state takes only the changed keys. A warehouse of the earlier
layout (a plain history table, a stage without history's columns) is converted on its first run, losing nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from ndc_lab.simulate import population

from ndc.landing.load import BULK_ROWS
from ndc.tasks import extract_table
from tests.helpers.database import query, scalar

EVERYTHING = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
CITIZENS = 30_000


@pytest.fixture(scope="module")
def source(dbs):
    spec = population.PopulationSpec(citizens=CITIZENS, seed=2020, defect_rate=0.0)
    population.write(dbs.source, population.simulate(spec), spec)
    return dbs


def test_a_large_load_becomes_its_own_partition_and_a_small_one_joins_the_small_loads(source):
    first = extract_table("population", "citizens", *EVERYTHING, run_id="first")
    url = source.warehouse
    assert first.rows_new_versions >= BULK_ROWS
    names = {r[0] for r in query(url, "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
                                      " where i.inhparent = 'landing_population.citizens_history'::regclass")}
    large = names - {"_citizens_l0"}
    assert "_citizens_l0" in names and len(large) == 1, names
    (partition,) = large
    # the first load's rows are in its own partition, written there once: the stage was renamed, not copied
    assert scalar(url, f"select count(*) from landing_population.{partition}") == first.rows_new_versions
    assert scalar(url, "select count(*) from landing_population._citizens_l0") == 0
    assert scalar(url, "select count(*) from landing_population._citizens_stage") == 0
    load = int(partition.removeprefix("_citizens_l"))
    assert scalar(url, f"select count(distinct _ndc_load) from landing_population.{partition}") == 1
    assert scalar(url, f"select min(_ndc_load) from landing_population.{partition}") == load
    # a fresh stage waits for the next load, numbered for itself
    assert scalar(url, "select 'landing_population._citizens_stage'::regclass::oid::bigint") != load

    # change a few citizens at the source: a small load goes to the small loads' partition, latest takes them
    pins = [r[0] for r in query(url, "select pin from landing_population.citizens order by pin limit 25")]
    with psycopg.connect(source.source, autocommit=True) as src:
        changed = src.execute("update citizens set address = address || ' (mới)',"
                              " updated_at = updated_at + interval '1 second' where pin = any(%s) returning pin",
                              (pins,)).fetchall()
    # another window than the first load's (within one window, two versions of a key are a duplicate)
    second = extract_table("population", "citizens", EVERYTHING[0], datetime(2030, 1, 2, tzinfo=UTC),
                           run_id="second")  # the rest is known
    assert second.rows_new_versions == len(changed) == 25
    assert scalar(url, "select count(*) from landing_population._citizens_l0") == 25
    assert scalar(url, "select count(*) from landing_population.citizens where address like '%%(mới)'") == 25
    assert scalar(url, "select count(*) from landing_population.citizens_history") == first.rows_new_versions + 25
    # every latest row's version is in history, and history holds no version twice
    assert scalar(url, "select count(*) from landing_population.citizens l where not exists (select 1 from"
                       " landing_population.citizens_history h where h.pin = l.pin"
                       " and h._ndc_row_hash = l._ndc_row_hash)") == 0
    assert scalar(url, "select count(*) - count(distinct (pin, _ndc_row_hash))"
                       " from landing_population.citizens_history") == 0

    # a rerun of everything adds nothing anywhere
    again = extract_table("population", "citizens", *EVERYTHING, run_id="again")
    assert again.rows_new_versions == 0
    assert scalar(url, "select count(*) from landing_population.citizens_history") == first.rows_new_versions + 25
    assert scalar(url, "select count(*) from pg_inherits"
                       " where inhparent = 'landing_population.citizens_history'::regclass") == 2


def test_a_warehouse_of_the_earlier_layout_is_converted_without_losing_a_version(dbs, source):
    url = dbs.warehouse
    with psycopg.connect(url, autocommit=True) as wh:
        wh.execute("drop schema if exists landing_population cascade")
    extract_table("population", "households", *EVERYTHING, run_id="before")  # creates ndc_meta and the schema
    with psycopg.connect(url, autocommit=True) as wh:
        # rebuild households' history and stage as the earlier release had them, holding the same rows
        wh.execute("""
            create table landing_population.old_history as
                select household_id, head_pin, province_code, ward, address, updated_at, _ndc_row_hash,
                       _ndc_batch_id, _ndc_run_id, _ndc_loaded_at from landing_population.households_history;
            drop table landing_population.households_history;
            drop table landing_population._households_stage;
            alter table landing_population.old_history rename to households_history;
            alter table landing_population.households_history add primary key (household_id, _ndc_row_hash);
            create table landing_population._households_stage (household_id text, head_pin text,
                province_code text, ward text, address text, updated_at timestamptz,
                _ndc_row_hash text collate "C" not null,
                _ndc_batch_id uuid not null default current_setting('ndc.batch_id')::uuid)""")
        versions = wh.execute("select count(*) from landing_population.households_history").fetchone()[0]
        # a killed run of the earlier release left one staged batch: a changed household
        batch = wh.execute(
            "insert into ndc_meta.batches (batch_id, dataset, run_id, window_start, window_end, batch_no, rows_in,"
            " rows_staged, rows_quarantined, rows_repaired, started_at) values (gen_random_uuid(),"
            " 'population.households', 'killed', '2000-01-01', '2030-01-01', 1, 1, 1, 0, 0, now())"
            " returning batch_id").fetchone()[0]
        wh.execute("insert into landing_population._households_stage select household_id, head_pin,"
                   " province_code, ward, address || ' (staged)', updated_at + interval '1 second',"
                   " md5(household_id || 'staged'), %s from landing_population.households limit 1", (batch,))
    assert versions > 0
    after = extract_table("population", "households", *EVERYTHING, run_id="after")
    assert after.rows_new_versions == 1  # the carried-over staged version; everything else was known
    assert scalar(url, "select relkind::text from pg_class"
                       " where oid = 'landing_population.households_history'::regclass") == "p"
    assert scalar(url, "select count(*) from landing_population.households_history") == versions + 1
    assert scalar(url, "select count(*) from landing_population._households_l0") == versions + 1
    assert scalar(url, "select count(*) from landing_population.households where address like '%%(staged)'") == 1
    assert scalar(url, "select count(*) from pg_constraint where contype = 'p'"
                       " and conrelid = 'landing_population.households_history'::regclass") == 1
    assert scalar(url, "select count(*) from ndc_meta.batches where merged_at is null") == 0
