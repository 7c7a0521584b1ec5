"""From landing to consumer: dbt build + write-audit-publish + a consumer agency role, on a real PostgreSQL."""

from __future__ import annotations

import csv
import subprocess
import threading
from datetime import UTC, datetime

import psycopg
import pytest

from ndc import dbt, warehouse
from ndc.connections import with_database
from ndc.jobs import extract_table
from ndc.publish import active_schema, inactive_schema, publish
from ndc.sharing import ProvinceAgency, apply_province_agency
from ndc.simulate import population

from .conftest import REPO, query, scalar

EVERYTHING = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
REFERENCE = {r["old_code"]: r for r in csv.DictReader((REPO / "plugins/ndc/reference/provinces_2025.csv").open())}


def conform(warehouse_url: str) -> str:
    """What `ndc conform` does: build into the inactive schema, then publish."""
    with warehouse.connect(warehouse_url) as conn:
        warehouse.ensure_meta(conn)
        build_schema = inactive_schema(conn)
        result = dbt.run(["build"], build_schema=build_schema)
        assert result.returncode == 0, result.output[-3000:]
        publish(conn, build_schema, dbt.shared_models(), run_id="test")
    return build_schema


@pytest.fixture(scope="module")
def published(dbs):
    spec = population.PopulationSpec(citizens=30_000, seed=2025, defect_rate=0.001)
    population.write(dbs.source, population.simulate(spec), spec)
    for table in ("citizens", "households", "residence_changes"):
        extract_table("population", table, *EVERYTHING, run_id="conform-test")
    dbt.parse()
    conform(dbs.warehouse)
    return spec


@pytest.fixture(scope="module")
def agency(dbs, published):
    role = f"ndc_test_agency_{dbs.run}"
    with warehouse.connect(dbs.warehouse) as conn:
        apply_province_agency(conn, ProvinceAgency(role, "agency_quang_ngai", "51"), dbs.warehouse)
        apply_province_agency(conn, ProvinceAgency(role, "agency_quang_ngai", "51"), dbs.warehouse)  # idempotent
    yield role
    with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
        conn.execute(f'drop owned by "{role}"')
        conn.execute(f'drop role "{role}"')


def as_role(url: str, role: str) -> str:
    return url.replace("postgres@", f"{role}@", 1)


def test_one_shared_row_per_landed_citizen(dbs, published):
    assert scalar(dbs.warehouse, "select count(*) from shared.citizens") == scalar(
        dbs.warehouse, "select count(*) from landing_population.citizens")
    clean = {r[0] for r in query(dbs.source, "select pin from citizens c where not exists (select 1 from"
                                 " simulator.defect_manifest m where m.table_name = 'citizens'"
                                 " and m.record_key = c.pin)")}
    shared = {r[0] for r in query(dbs.warehouse, "select citizen_id from shared.citizens")}
    assert clean and clean <= shared


def test_every_old_code_maps_as_the_reference_says(dbs, published):
    pairs = query(dbs.warehouse, "select distinct historic_province_code, current_province_code,"
                  " current_province_name from shared.citizens where residence_recorded_on < date '2025-07-01'")
    assert {p[0] for p in pairs} == set(REFERENCE), "all 63 old codes must occur in the simulated data"
    for old, new, name in pairs:
        assert (new, name) == (REFERENCE[old]["new_code"], REFERENCE[old]["new_name"])
    after = query(dbs.warehouse, "select distinct historic_province_code, current_province_code from shared.citizens"
                  " where residence_recorded_on >= date '2025-07-01'")
    assert {p[0] for p in after} == {r["new_code"] for r in REFERENCE.values()}
    assert all(old == new for old, new in after)


def test_seed_matches_the_package_reference():
    seed = (REPO / "dbt_project/seeds/province_mapping.csv").read_text(encoding="utf-8")
    assert seed == (REPO / "plugins/ndc/reference/provinces_2025.csv").read_text(encoding="utf-8")


def test_kon_tum_is_visible_to_quang_ngai_and_hai_duong_is_not(dbs, agency):
    kon_tum = scalar(dbs.warehouse, "select citizen_id from shared.citizens where historic_province_code = '62'"
                     " and current_province_name = 'Quảng Ngãi' limit 1")
    hai_duong = scalar(dbs.warehouse, "select citizen_id from shared.citizens where historic_province_code = '30'"
                       " and current_province_name = 'Hải Phòng' limit 1")
    rows = query(as_role(dbs.warehouse, agency), "select citizen_id_masked, current_province_code,"
                 " historic_province_code from agency_quang_ngai.citizens")
    masked = {r[0] for r in rows}
    assert "********" + kon_tum[-4:] in masked
    assert all(r[1] == "51" for r in rows)
    assert not any(r[2] == "30" for r in rows)
    assert hai_duong not in masked and all(not m[:8].isdigit() for m in masked)
    assert len(rows) == scalar(dbs.warehouse, "select count(*) from shared.citizens where current_province_code = '51'")


def test_agency_role_can_read_nothing_else(dbs, agency):
    readable = query(as_role(dbs.warehouse, agency), """
        select n.nspname || '.' || c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('r', 'v', 'm', 'p', 'f') and n.nspname not in ('pg_catalog', 'information_schema')
          and n.nspname !~ '^pg_toast'
          and (has_table_privilege(c.oid, 'select') or has_table_privilege(c.oid, 'insert')
               or has_table_privilege(c.oid, 'update') or has_table_privilege(c.oid, 'delete'))""")
    assert readable == [("agency_quang_ngai.citizens",)]
    for schema in ("shared", "landing_population", "quarantine", "ndc_meta", "public", "agency_quang_ngai"):
        assert scalar(as_role(dbs.warehouse, agency), "select has_schema_privilege(%s, 'create')", (schema,)) is False
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        query(as_role(dbs.warehouse, agency), "select count(*) from shared.citizens")
    settings = scalar(dbs.warehouse, "select rolconfig from pg_roles where rolname = %s", (agency,))
    assert "statement_timeout=30s" in settings
    assert scalar(dbs.warehouse, "select rolconnlimit from pg_roles where rolname = %s", (agency,)) == 5


def test_agency_role_cannot_connect_to_source_or_airflow_databases(dbs, agency):
    airflow_db = with_database(dbs.warehouse, f"ndc_test_airflow_{dbs.run}")
    warehouse.ensure_database(airflow_db)
    try:
        for url in (dbs.source, airflow_db):
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                psycopg.connect(as_role(url, agency)).close()
    finally:
        warehouse.drop_database(airflow_db)


def test_failed_build_publishes_nothing(dbs, published):
    before = (active_schema(psycopg.connect(dbs.warehouse)),
              query(dbs.warehouse, "select count(*), md5(string_agg(citizen_id, '' order by citizen_id))"
                    " from shared.citizens")[0])
    with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
        conn.execute("alter table landing_population.households rename to households_away")
    try:
        result = subprocess.run(["ndc", "conform"], capture_output=True, text=True, check=False)
    finally:
        with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
            conn.execute("alter table landing_population.households_away rename to households")
    assert result.returncode == 2
    assert "nothing published, consumers still read the previous build" in result.stderr
    after = (active_schema(psycopg.connect(dbs.warehouse)),
             query(dbs.warehouse, "select count(*), md5(string_agg(citizen_id, '' order by citizen_id))"
                   " from shared.citizens")[0])
    assert after == before


def test_building_into_the_published_schema_is_refused(dbs, published):
    with psycopg.connect(dbs.warehouse) as conn:
        active = active_schema(conn)
    result = dbt.run(["build", "--select", "citizens"], build_schema=active)
    assert result.returncode != 0 and f"refusing to build into {active}" in result.output
    assert scalar(dbs.warehouse, "select count(*) from shared.citizens") > 0


def test_concurrent_reader_sees_old_or_new_never_a_mix(dbs, published):
    """A reader polls during a publish whose build differs (one citizen fewer); it sees either build, whole."""
    old = scalar(dbs.warehouse, "select count(*) from shared.citizens")
    victim = scalar(dbs.warehouse, "select pin from landing_population.citizens order by pin limit 1")
    with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
        conn.execute("delete from landing_population.citizens where pin = %s", (victim,))
    seen: set[tuple[int, bool]] = set()
    stop = threading.Event()

    def read() -> None:
        with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
            while not stop.is_set():
                seen.add(conn.execute("select count(*), bool_or(citizen_id = %s) from shared.citizens",
                                      (victim,)).fetchone())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        conform(dbs.warehouse)
    finally:
        stop.set()
        reader.join()
    assert (old, True) in seen, "the reader must have read the old build during the publish"
    assert seen <= {(old, True), (old - 1, False)}
    assert scalar(dbs.warehouse, "select count(*) from shared.citizens") == old - 1

