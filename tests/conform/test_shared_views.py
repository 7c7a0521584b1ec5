"""The conformance layer on the five simulated sources, then write-audit-publish and a consumer agency role, on a
real PostgreSQL (and MariaDB for the enterprise register): identity resolution measured against the simulators'
ground truth, every source's records in the right current province, every unlinked record in
identity_exceptions, snapshots, docs; a failed build publishes nothing; readers never see a mix."""

from __future__ import annotations

import csv
import json
import subprocess
import threading
import unicodedata
from dataclasses import dataclass

import polars as pl
import psycopg
import pytest
from ndc_lab.simulate.all_sources import FiveSources, five_sources
from ndc_lab.simulate.common import SourceSpec

from ndc.conform import dbt
from ndc.conform.publish import active_schema, inactive_schema, publish
from ndc.warehouse import database
from ndc.warehouse.connections import with_database
from tests.helpers import REPO
from tests.helpers.database import query, scalar
from tests.helpers.province_agency import ProvinceAgency, apply_province_agency

REFERENCE = {r["old_code"]: r for r in csv.DictReader((REPO / "plugins/ndc/reference/provinces_2025.csv").open())}
SPEC = SourceSpec(citizens=20_000, seed=2025, defect_rate=0.002)
SHARED = {"citizens", "enterprises", "province_statistics", "identity_exceptions", "data_quality_summary"}


def conform(warehouse_url: str) -> str:
    """What `ndc conform` does: build into the inactive schema, then publish."""
    with database.connect(warehouse_url) as conn:
        database.ensure_meta(conn)
        build_schema = inactive_schema(conn)
        result = dbt.run(["build"], build_schema=build_schema)
        assert result.returncode == 0, result.output[-3000:]
        publish(conn, build_schema, dbt.shared_models(), run_id="test")
    return build_schema


@pytest.fixture(scope="module")
def published(request, dbs, tmp_path_factory):
    mariadb = request.getfixturevalue("mariadb_server")
    with five_sources(dbs.warehouse, SPEC, run=dbs.run, drops=tmp_path_factory.mktemp("drops"),
                      mariadb_url=mariadb) as loaded:
        dbt.parse()
        conform(dbs.warehouse)
        yield loaded


@pytest.fixture(scope="module")
def agency(dbs, published):
    role = f"ndc_test_agency_{dbs.run}"
    with database.connect(dbs.warehouse) as conn:
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
    clean = {r[0] for r in query(published.urls["population"], "select pin from citizens c where not exists"
                                 " (select 1 from simulator.defect_manifest m where m.table_name = 'citizens'"
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


def test_agency_role_cannot_connect_to_source_or_airflow_databases(dbs, agency, published):
    airflow_db = with_database(dbs.warehouse, f"ndc_test_airflow_{dbs.run}")
    database.ensure_database(airflow_db)
    try:
        for url in (published.urls["population"], published.urls["taxation"], airflow_db):
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                psycopg.connect(as_role(url, agency)).close()
    finally:
        database.drop_database(airflow_db)


def test_failed_build_publishes_nothing(dbs, published):
    before = (active_schema(psycopg.connect(dbs.warehouse)),
              query(dbs.warehouse, "select count(*), md5(string_agg(citizen_id, '' order by citizen_id))"
                    " from shared.citizens")[0])
    with psycopg.connect(dbs.warehouse, autocommit=True) as conn:  # staging reads ward: dbt build fails
        conn.execute("alter table landing_population.households rename column ward to ward_away")
    try:
        result = subprocess.run(["ndc", "conform"], capture_output=True, text=True, check=False)
    finally:
        with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
            conn.execute("alter table landing_population.households rename column ward_away to ward")
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
    mover = scalar(dbs.warehouse, "select pin from landing_population.citizens where province_code = '62'"
                   " and pin <> %s order by pin limit 1", (victim,))
    with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
        conn.execute("delete from landing_population.citizens where pin = %s", (victim,))
        # Kon Tum (62) -> Hà Nội (01): the residence history (SCD2 snapshot) keeps both versions.
        conn.execute("update landing_population.citizens set province_code = '01', updated_at = now(),"
                     " _ndc_loaded_at = now() where pin = %s", (mover,))
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
    versions = query(dbs.warehouse, "select residence_province_code, dbt_valid_to is null from"
                     " history.citizen_residence_history where citizen_id = %s order by dbt_valid_from", (mover,))
    assert versions == [("62", False), ("01", True)]
    assert query(dbs.warehouse, "select dbt_valid_to is null from history.citizen_residence_history"
                 " where citizen_id = %s", (victim,)) == [(False,)]



# --- identity resolution, measured against the simulators' ground truth -------------------------------------------

def _name_key(name: str | None) -> str | None:
    """The same name as the authorities compare it: NFC, case-folded, single spaces."""
    if name is None:
        return None
    key = " ".join(unicodedata.normalize("NFC", name).split()).lower()
    return key or None


def _ground_truth(loaded: FiveSources) -> pl.DataFrame:
    """(dataset, record_key, true_pin) for every person record the simulators wrote, from their crosswalks."""
    tax, ins, edu, ent = (loaded.sims[n] for n in ("taxation", "insurance", "education", "enterprise"))
    individuals = tax.tables["taxpayers"].filter(pl.col("taxpayer_kind") == "individual").unique("taxpayer_id")
    legacy = tax.crosswalks["legacy_tax_code_to_pin"].rename({"pin": "by_legacy"})
    taxpayers = individuals.join(legacy, on="legacy_tax_code", how="left").select(
        pl.lit("taxpayers").alias("dataset"), pl.col("taxpayer_id").alias("record_key"),
        pl.coalesce("by_legacy", pl.when(pl.col("taxpayer_id").str.len_chars() == 12).then("taxpayer_id"))
        .alias("true_pin"))
    insured = ins.crosswalks["insurance_code_to_pin"].select(
        pl.lit("insured_people").alias("dataset"), pl.col("insurance_code").alias("record_key"),
        pl.col("pin").alias("true_pin"))
    students = edu.crosswalks["student_to_pin"].select(
        pl.lit("students").alias("dataset"), pl.col("student_id").alias("record_key"), pl.col("pin").alias("true_pin"))
    representatives = ent.crosswalks["representative_pins"].select(
        pl.lit("legal_representatives").alias("dataset"),
        pl.concat_str("enterprise_code", "recorded_pin", separator="|").alias("record_key"), "true_pin")
    return pl.concat([taxpayers, insured, students, representatives]).unique(["dataset", "record_key"])


@dataclass
class Linking:
    linked: int
    correct: int
    linkable: int
    linkable_linked: int

    @property
    def precision(self) -> float:
        return self.correct / self.linked if self.linked else 1.0

    @property
    def recall(self) -> float:
        return self.linkable_linked / self.linkable if self.linkable else 1.0


def _exceptions_in_manifests(loaded: FiveSources) -> set[tuple[str, str]]:
    return {(t, k) for sim in loaded.sims.values() for t, k in
            sim.manifest.filter(pl.col("expected_outcome") == "exception").select("table_name", "record_key").rows()}


def measure_linking(dbs, loaded: FiveSources) -> dict[str, Linking]:
    """Precision: linked records whose PIN is the true one. Recall: linked correctly among the linkable records, those
    whose true citizen is current in landing, that are no injected exception, and that either carry a PIN or
    whose true citizen is the only one with that full name and birth date (the ground truth says so, not the
    model)."""
    resolved = pl.DataFrame(query(dbs.warehouse, "select source_name, dataset, record_key, citizen_id,"
                                  " recorded_citizen_id is not null from intermediate.int_identities_resolved r"
                                  " join intermediate.int_person_records_unioned p using (source_name, dataset,"
                                  " record_key)"),
                            schema=["source_name", "dataset", "record_key", "citizen_id", "has_pin"], orient="row")
    citizens = pl.DataFrame(query(dbs.warehouse, "select pin, full_name, birth_date from landing_population.citizens"
                                  " where _ndc_deleted_at is null"), schema=["pin", "full_name", "birth_date"],
                            orient="row")
    citizens = citizens.with_columns(pl.col("full_name").map_elements(_name_key, return_dtype=pl.String))
    group = citizens.group_by("full_name", "birth_date").len("namesakes")
    unique_people = set(citizens.join(group, on=["full_name", "birth_date"]).filter(pl.col("namesakes") == 1)["pin"])
    current = set(citizens["pin"])
    excepted = _exceptions_in_manifests(loaded)
    judged = resolved.join(_ground_truth(loaded), on=["dataset", "record_key"], how="left")
    assert judged.filter(pl.col("true_pin").is_null()).height == 0, "every landed person record has a ground truth"
    found: dict[str, Linking] = {}
    for (source,), rows in judged.group_by("source_name"):
        linked = rows.filter(pl.col("citizen_id").is_not_null())
        linkable = rows.filter(
            pl.col("true_pin").is_in(current)
            & ~pl.struct("dataset", "record_key").map_elements(lambda r: (r["dataset"], r["record_key"]) in excepted,
                                                               return_dtype=pl.Boolean)
            & (pl.col("has_pin") | pl.col("true_pin").is_in(unique_people)))
        found[source] = Linking(
            linked=linked.height, correct=linked.filter(pl.col("citizen_id") == pl.col("true_pin")).height,
            linkable=linkable.height,
            linkable_linked=linkable.filter(pl.col("citizen_id") == pl.col("true_pin")).height)
    return found


def test_identity_linking_precision_and_recall_against_ground_truth(dbs, published):
    by_source = measure_linking(dbs, published)
    total = Linking(*(sum(getattr(m, f) for m in by_source.values())
                      for f in ("linked", "correct", "linkable", "linkable_linked")))
    for source, m in [*sorted(by_source.items()), ("all", total)]:
        print(f"identity linking {source}: precision {m.precision:.4f} ({m.correct}/{m.linked}),"
              f" recall {m.recall:.4f} ({m.linkable_linked}/{m.linkable} linkable)")
    assert set(by_source) == {"taxation", "insurance", "education", "enterprise"}
    assert total.linkable > 5000
    assert total.precision == 1.0
    assert total.recall >= 0.99
    assert all(m.precision == 1.0 and m.recall >= 0.99 for m in by_source.values())


def test_every_unlinked_record_is_an_exception_with_its_reason(dbs, published):
    unlinked = set(query(dbs.warehouse, "select source_name, dataset, record_key, exception_reason"
                         " from intermediate.int_identities_resolved where citizen_id is null"))
    listed = set(query(dbs.warehouse, "select source_name, dataset, record_key, exception_reason"
                       " from shared.identity_exceptions where exception_kind = 'identity'"))
    assert unlinked and unlinked == listed
    assert all(reason for *_, reason in listed)
    # Every record the simulators made an exception (orphans, mistyped PINs) is listed; none is dropped.
    everything = {(d, k) for d, k in query(dbs.warehouse, "select dataset, record_key from shared.identity_exceptions")}
    missing = _exceptions_in_manifests(published) - everything
    assert not missing, sorted(missing)[:10]
    # The constructed namesakes (same full name and birth date, no PIN recorded) are ambiguous, never guessed.
    pairs = published.sims["taxation"].crosswalks["ambiguous_name_birth"].filter("constructed")
    unmigrated = {t for t in pairs["taxpayer_id_a"].to_list() + pairs["taxpayer_id_b"].to_list() if len(t) == 10}
    reasons = dict(query(dbs.warehouse, "select record_key, exception_reason from shared.identity_exceptions"
                         " where dataset = 'taxpayers'"))
    assert unmigrated and all(reasons.get(t) == "ambiguous_name_and_birth_date" for t in unmigrated)
    # Counted per source in the data-quality summary.
    counted = dict(((s, d), (i, r)) for s, d, i, r in query(
        dbs.warehouse, "select source_name, dataset, identity_exceptions, reference_exceptions"
        " from shared.data_quality_summary"))
    for (source, dataset, kind), n in {((s, d, k), n) for s, d, k, n in query(
            dbs.warehouse, "select source_name, dataset, exception_kind, count(*) from shared.identity_exceptions"
            " group by 1, 2, 3")}:
        assert counted[(source, dataset)][0 if kind == "identity" else 1] == n
    assert len(counted) == 16


def test_crosswalk_links_legacy_identifiers_to_the_true_pin(dbs, published):
    crosswalk = dict(((k, i), p) for k, i, p in query(
        dbs.warehouse, "select identifier_kind, identifier, citizen_id"
                       " from intermediate.int_legacy_identifiers_linked"))
    tax = published.sims["taxation"].crosswalks["legacy_tax_code_to_pin"]
    insured = published.sims["insurance"].crosswalks["insurance_code_to_pin"]
    found = {kind: sum(1 for code, pin in frame.rows() if crosswalk.get((kind, code)) == pin)
             for kind, frame in (("legacy_tax_code", tax), ("insurance_code", insured))}
    wrong = [(kind, code) for kind, frame in (("legacy_tax_code", tax), ("insurance_code", insured))
             for code, pin in frame.rows() if crosswalk.get((kind, code)) not in (None, pin)]
    assert not wrong and found["legacy_tax_code"] > 0.9 * tax.height and found["insurance_code"] > 0.9 * insured.height
    cmnd = query(published.urls["population"], "select cmnd, pin from citizens where cmnd is not null limit 50")
    assert cmnd and sum(crosswalk.get(("cmnd", c)) == p for c, p in cmnd) >= 45


# --- administrative units: every source's records in the right current province -----------------------------------

def _current(code: str) -> str:
    return REFERENCE[code]["new_code"]


def test_enterprises_land_in_their_current_province(dbs, published):
    rows = query(dbs.warehouse, "select e.historic_province_code, e.current_province_code, e.current_province_name,"
                 " l.province_code from shared.enterprises e join landing_enterprise.enterprises l using"
                 " (enterprise_code)")
    assert len(rows) == scalar(dbs.warehouse, "select count(*) from landing_enterprise.enterprises")
    for historic, current, name, landed in rows:
        assert historic == landed and (current, name) == (_current(landed), REFERENCE[landed]["new_name"])


def test_every_source_uses_all_63_old_codes_and_the_34_new_ones(dbs, published):
    before, after = set(), set()
    for table, column, moment in (
            ("landing_population.citizens", "province_code", "updated_at"),
            ("landing_taxation.taxpayers", "province_code", "updated_at"),
            ("landing_insurance.insured_people", "province_code", "updated_at"),
            ("landing_enterprise.enterprises", "province_code", "updated_at"),
            ("landing_education.students", "province_code", "exported_at")):
        for code, old in query(dbs.warehouse, f"select distinct {column}, ({moment} at time zone"
                               f" 'Asia/Ho_Chi_Minh')::date < date '2025-07-01' from {table}"):
            (before if old else after).add((table, code))
    assert {c for _, c in before} == set(REFERENCE)
    assert {c for _, c in after} == {r["new_code"] for r in REFERENCE.values()}
    for table in ("landing_population.citizens", "landing_taxation.taxpayers", "landing_insurance.insured_people"):
        assert {c for t, c in before if t == table} == set(REFERENCE), table


def _statistic(frame: pl.DataFrame, code: str, value: str) -> dict[tuple[str, object], int]:
    mapped = frame.with_columns(pl.col(code).replace_strict({k: _current(k) for k in REFERENCE}).alias("current"))
    counted = mapped.group_by("current", "month").agg(pl.col(value).n_unique().alias("n"))
    return {(c, m): n for c, m, n in counted.rows()}


def test_province_statistics_count_each_record_in_its_current_province(dbs, published):
    stats = pl.DataFrame(query(dbs.warehouse, "select current_province_code, month, insured_workers, students,"
                               " taxpayers_registered, population from shared.province_statistics"),
                         schema=["current", "month", "insured", "students", "taxpayers", "population"], orient="row")
    assert stats["current"].n_unique() == 34
    assert stats.height == 34 * stats["month"].n_unique()
    months = set(stats["month"])
    insured = _statistic(pl.DataFrame(query(
        dbs.warehouse, "select p.province_code, c.contribution_month, c.insurance_code"
        " from landing_insurance.contributions c join landing_insurance.insured_people p using (insurance_code)"
        " where c._ndc_deleted_at is null and p._ndc_deleted_at is null"),
        schema=["code", "month", "person"], orient="row"), "code", "person")
    taxpayers = _statistic(pl.DataFrame(query(
        dbs.warehouse, "select province_code, date_trunc('month', registered_on)::date, taxpayer_id"
        " from landing_taxation.taxpayers where _ndc_deleted_at is null"),
        schema=["code", "month", "taxpayer"], orient="row"), "code", "taxpayer")
    for current, month, n_insured, _, n_taxpayers, _ in stats.rows():
        assert n_insured == insured.get((current, month), 0), (current, month)
        assert n_taxpayers == taxpayers.get((current, month), 0), (current, month)
    assert sum(n for (_, m), n in insured.items() if m in months) == stats["insured"].sum() > 0
    # Population at the last month's end = living citizens (every citizen has a current province).
    last = max(months)
    living = scalar(dbs.warehouse, "select count(*) from shared.citizens where death_date is null"
                    " or death_date >= (%s::date + interval '1 month')", (last,))
    assert stats.filter(pl.col("month") == last)["population"].sum() == living
    # Students: an enrolment counts in the province of its school, in each month of its school year.
    per_year = dict(query(dbs.warehouse, "select left(e.school_year, 4)::int, count(distinct e.student_id)"
                          " from landing_education.enrolments e join landing_education.schools s using (school_id)"
                          " where e._ndc_deleted_at is null and s._ndc_deleted_at is null group by 1"))
    september = {m.year: stats.filter(pl.col("month") == m)["students"].sum() for m in months if m.month == 9}
    assert september and all(september[y] == per_year.get(y, 0) for y in september)


def test_citizens_carry_what_the_other_databases_know(dbs, published):
    flags = query(dbs.warehouse, "select count(*) filter (where is_tax_registered), count(*) filter (where is_insured),"
                  " count(*) filter (where highest_enrolled_grade is not null), sum(contributing_months)"
                  " from shared.citizens")[0]
    linked = dict(query(dbs.warehouse, "select dataset, count(distinct citizen_id)"
                        " from intermediate.int_identities_resolved where citizen_id is not null group by 1"))
    assert flags[0] == linked["taxpayers"] and flags[1] == linked["insured_people"]
    assert 0 < flags[2] <= linked["students"] and flags[3] > 0
    columns = {r[0] for r in query(dbs.warehouse, "select column_name from information_schema.columns"
                                   " where table_schema = 'shared' and table_name = 'citizens'")}
    assert not columns & {"legacy_id_card_number", "legacy_tax_code", "insurance_code", "residence_address"}


def test_every_shared_model_is_published_with_an_enforced_contract(dbs, published):
    manifest = json.loads(dbt.manifest_file().read_text())
    shared = {n["name"]: n for n in manifest["nodes"].values()
              if n["resource_type"] == "model" and n["config"].get("schema") == "shared"}
    assert set(shared) == SHARED
    for name, node in shared.items():
        assert node["config"]["contract"]["enforced"] and node["description"]
        assert all(c.get("description") and c.get("data_type") for c in node["columns"].values()), name
        assert scalar(dbs.warehouse, f"select count(*) from shared.{name}") > 0
    exposures = {e["name"]: e for e in manifest["exposures"].values()}
    assert len(exposures) >= 4 and all(e["owner"]["name"] for e in exposures.values())


def test_docs_generate_works(dbs, published):
    result = subprocess.run(["ndc", "dbt", "docs"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "index.html" in result.stdout
    catalog = json.loads((dbt.project_dir() / "target" / "catalog.json").read_text())
    names = {node["metadata"]["name"] for node in catalog["nodes"].values()}
    assert {"int_identities_resolved", "stg_taxation__taxpayers", "citizen_residence_history"} <= names
