"""The conformance layer on the five simulated sources, then write-audit-publish and a consumer agency, on a real
PostgreSQL (and MariaDB for the enterprise register).

Every shared view is compared with ground truth, never with landing or the dbt models' own intermediates: the rows
the simulators wrote to their source databases, less what their defect manifests quarantine or supersede
(``ndc_lab.simulate.expected``), the manifests' ``exception`` defects, the simulators' identity crosswalks, and the
reference province mapping (``ndc.reference``). Also: snapshots, docs, a failed build publishes nothing, readers
never see a mix, and an agency reads only what its approved agreement grants.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import threading
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl
import psycopg
import pytest
import yaml
from ndc_lab.simulate import expected
from ndc_lab.simulate.all_sources import FiveSources, five_sources
from ndc_lab.simulate.common import SourceSpec

from ndc.config.agreements import Agency, Agreement, load_agencies, load_agreements
from ndc.config.sources import find_source, load_sources
from ndc.conform import dbt
from ndc.conform.publish import active_schema, inactive_schema, publish
from ndc.reference import REORGANISATION_DATE, province_mappings
from ndc.settings import get_settings
from ndc.sharing.agreements import apply, approve
from ndc.warehouse import database
from ndc.warehouse.connections import with_database
from tests.helpers import REPO
from tests.helpers.acceptance import assert_rows_equal
from tests.helpers.database import frame, query, scalar

REFERENCE = {m.old_code: m for m in province_mappings()}
SPEC = SourceSpec(citizens=20_000, seed=2025, defect_rate=0.002)
SHARED = {"citizens", "enterprises", "province_statistics", "identity_exceptions", "data_quality_summary"}
# The reason shared.identity_exceptions gives each kind of injected exception (the simulators' defect names).
EXCEPTION_REASONS = {
    "orphan_household": "household_not_found", "orphan_head": "head_citizen_not_found",
    "orphan_citizen": "citizen_not_found", "orphan_taxpayer": "taxpayer_not_found",
    "orphan_insurance_code": "insured_person_not_found", "orphan_enterprise": "enterprise_not_found",
    "orphan_student": "student_not_found", "orphan_school": "school_not_found", "orphan_pin": "pin_not_found",
}


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


@dataclass
class Truth:
    sims: dict[str, object]
    citizens: pl.DataFrame  # shared.citizens' own columns, as the sources and manifests say
    records: pl.DataFrame   # person records of the other sources: record_key, recorded_pin, true_pin, is_linkable


@pytest.fixture(scope="module")
def truth(published: FiveSources) -> Truth:
    people = expected.citizens(published.sims)
    records = expected.linkable(published.sims, expected.person_records(published.sims), people)
    return Truth(published.sims, people, records)


def as_role(url: str, role: str) -> str:
    return url.replace("postgres@", f"{role}@", 1)


def manifest(truth: Truth, source: str, table: str, outcome: str) -> pl.DataFrame:
    sim_manifest = truth.sims[source].manifest
    return sim_manifest.filter((pl.col("table_name") == table) & (pl.col("expected_outcome") == outcome))


# --- shared rows against the sources' ground truth --------------------------------------------------------------

def test_shared_citizens_are_the_source_citizens_the_manifest_keeps(dbs, truth):
    """One row per current citizen of the source: quarantined ones absent, the later version of a duplicate key,
    repaired text in NFC, an orphan household flagged, each in the current province of its historic code."""
    found = frame(dbs.warehouse, f"select {', '.join(truth.citizens.columns)} from shared.citizens")
    assert_rows_equal(found, truth.citizens, ["citizen_id"], "shared.citizens against the population source")
    shared = set(found["citizen_id"])
    assert not shared & set(manifest(truth, "population", "citizens", "quarantined")["record_key"])
    losers = manifest(truth, "population", "citizens", "superseded").select(
        pl.col("record_key").alias("citizen_id"), pl.col("row_version"))
    winners = found.join(losers, on="citizen_id")
    assert winners.height == losers.height > 0
    assert (winners["source_updated_at"] > winners["row_version"]).all(), "the later version of a key wins"
    repaired = found.filter(pl.col("citizen_id").is_in(manifest(truth, "population", "citizens", "repaired")
                                                       ["record_key"].implode()))
    assert repaired.height > 0 and (repaired["full_name"] == repaired["full_name"].str.normalize("NFC")).all()
    orphans = manifest(truth, "population", "citizens", "exception")["record_key"]
    flagged = found.filter(pl.col("citizen_id").is_in(orphans.implode()))
    assert flagged.height == orphans.len() > 0 and not flagged["has_registered_household"].any()


def test_every_old_code_maps_as_the_reference_says(dbs, published):
    pairs = query(dbs.warehouse, "select distinct historic_province_code, current_province_code,"
                  " current_province_name from shared.citizens where residence_recorded_on < %s",
                  (REORGANISATION_DATE,))
    assert {p[0] for p in pairs} == set(REFERENCE), "all 63 old codes must occur in the simulated data"
    for old, new, name in pairs:
        assert (new, name) == (REFERENCE[old].new_code, REFERENCE[old].new_name)
    after = query(dbs.warehouse, "select distinct historic_province_code, current_province_code from shared.citizens"
                  " where residence_recorded_on >= %s", (REORGANISATION_DATE,))
    assert {p[0] for p in after} == {m.new_code for m in REFERENCE.values()}
    assert all(old == new for old, new in after)


def test_seed_matches_the_package_reference():
    seed = (REPO / "dbt_project/seeds/province_mapping.csv").read_text(encoding="utf-8")
    assert seed == (REPO / "plugins/ndc/reference/provinces_2025.csv").read_text(encoding="utf-8")


def test_enterprises_land_in_their_current_province(dbs, truth):
    """Every current enterprise of the register, in the current province of its historic code, with the status
    events, open branches, tax filings and insured employees the four sources hold for it."""
    wanted = expected.enterprises(truth.sims)
    found = frame(dbs.warehouse, f"select {', '.join(wanted.columns)} from shared.enterprises")
    assert_rows_equal(found, wanted, ["enterprise_code"], "shared.enterprises against the sources")
    assert wanted.height > 300 and all(wanted[c].sum() > 0 for c in ("open_branches", "tax_filings",
                                                                     "insured_employees"))


def test_every_source_uses_all_63_old_codes_and_the_34_new_ones(truth):
    """The premise of the province tests: every source records all 63 codes before the reorganisation and the 34
    after (Việt Nam dates), so a wrong mapping of any code would show."""
    before, after = set(), set()
    for source, table, moment in (("population", "citizens", "updated_at"),
                                  ("taxation", "taxpayers", "updated_at"),
                                  ("insurance", "insured_people", "updated_at"),
                                  ("enterprise", "enterprises", "updated_at"),
                                  ("education", "students", "exported_at")):
        rows = expected.current_rows(truth.sims, source, table).select(
            "province_code", pl.col(moment).dt.convert_time_zone(expected.VIETNAM).dt.date().alias("on"))
        before |= {(table, c) for c in rows.filter(pl.col("on") < REORGANISATION_DATE)["province_code"]}
        after |= {(table, c) for c in rows.filter(pl.col("on") >= REORGANISATION_DATE)["province_code"]}
    assert {c for _, c in before} == set(REFERENCE)
    assert {c for _, c in after} == {m.new_code for m in REFERENCE.values()}
    for table in ("citizens", "taxpayers", "insured_people"):
        assert {c for t, c in before if t == table} == set(REFERENCE), table


def test_province_statistics_count_each_record_in_its_current_province(dbs, truth):
    """Every figure of every current province and month, recomputed from the sources' rows and the reference
    mapping: population at the month's end, births, deaths, moves, enterprises opened and closed, taxpayers
    registered, insured workers, students in each month of their school year."""
    wanted = expected.province_statistics(truth.sims)
    found = frame(dbs.warehouse, "select current_province_code, current_province_name, month, "
                  f"{', '.join(expected.FIGURES)} from shared.province_statistics")
    assert wanted["current_province_code"].n_unique() == 34
    assert_rows_equal(found, wanted, ["current_province_code", "month"], "shared.province_statistics")
    # Every figure occurs in the data, so equality means something; births excepted: the simulated people were all
    # born before July 2024, the first month of the statistics.
    assert {f for f in expected.FIGURES if wanted[f].sum() == 0} == {"births"}


# --- identity resolution, measured against the simulators' ground truth -------------------------------------------

def _listed(dbs, kind: str) -> pl.DataFrame:
    return frame(dbs.warehouse, "select source_name, dataset, record_key, exception_reason"
                 " from shared.identity_exceptions where exception_kind = %s", (kind,))


def _linked(dbs, truth: Truth) -> pl.DataFrame:
    """The person records the build linked: those shared.identity_exceptions does not list."""
    listed = _listed(dbs, "identity").select("dataset", "record_key")
    return truth.records.join(listed, on=["dataset", "record_key"], how="anti")


@dataclass
class Linking:
    linked: int
    correct: int
    misplaced: int  # citizens flagged by a source although none of their own records there was linked
    linkable: int
    linkable_linked: int

    @property
    def precision(self) -> float:
        return self.correct / (self.linked + self.misplaced) if self.linked + self.misplaced else 1.0

    @property
    def recall(self) -> float:
        return self.linkable_linked / self.linkable if self.linkable else 1.0


# The shared.citizens flag a linked record sets on its citizen (students' and representatives' targets show in the
# activity columns and nowhere else; test_citizens_carry_what_the_other_databases_know compares those).
FLAGS = {"taxpayers": "is_tax_registered", "insured_people": "is_insured"}


def measure_linking(dbs, truth: Truth) -> dict[str, Linking]:
    """Per source. Linked: records not listed as identity exceptions. Correct: linked records the authorities' rule
    can link (ground truth: ``expected.linkable``) whose true citizen carries the source's flag. Recall: linked among
    the linkable records."""
    linked = _linked(dbs, truth).select("dataset", "record_key", pl.lit(True).alias("is_linked"))
    judged = truth.records.join(linked, on=["dataset", "record_key"], how="left").with_columns(
        pl.col("is_linked").fill_null(False))
    flagged = {dataset: set(frame(dbs.warehouse, f"select citizen_id from shared.citizens where {flag}")
                            ["citizen_id"]) for dataset, flag in FLAGS.items()}
    found: dict[str, Linking] = {}
    for (source, dataset), rows in judged.group_by("source_name", "dataset"):
        mine = rows.filter("is_linked")
        flag = flagged.get(dataset)
        correct = mine.filter("is_linkable")
        if flag is not None:
            correct = correct.filter(pl.col("true_pin").is_in(list(flag)))
        linkable = rows.filter("is_linkable")
        found[source] = Linking(linked=mine.height, correct=correct.height,
                                misplaced=len(flag - set(mine["true_pin"])) if flag is not None else 0,
                                linkable=linkable.height, linkable_linked=linkable.filter("is_linked").height)
    return found


def test_identity_linking_precision_and_recall_against_ground_truth(dbs, truth):
    by_source = measure_linking(dbs, truth)
    total = Linking(*(sum(getattr(m, f) for m in by_source.values())
                      for f in ("linked", "correct", "misplaced", "linkable", "linkable_linked")))
    for source, m in [*sorted(by_source.items()), ("all", total)]:
        print(f"identity linking {source}: precision {m.precision:.4f} ({m.correct}/{m.linked + m.misplaced}),"
              f" recall {m.recall:.4f} ({m.linkable_linked}/{m.linkable} linkable)")
    assert set(by_source) == {"taxation", "insurance", "education", "enterprise"}
    assert total.linkable > 5000
    assert total.precision == 1.0
    assert total.recall >= 0.99
    assert all(m.precision == 1.0 and m.recall >= 0.99 for m in by_source.values())


def test_every_unlinked_record_is_an_exception_with_its_reason(dbs, truth):
    identity, reference = _listed(dbs, "identity"), _listed(dbs, "reference")
    # Identity: person records only, and every one the ground truth says cannot be linked (no PIN of a current
    # citizen, or a name and birth date that several citizens share) is listed, never guessed.
    keys = ["source_name", "dataset", "record_key"]
    assert identity.join(truth.records, on=keys, how="anti").is_empty(), "only person records are identity exceptions"
    unlinkable = truth.records.filter(~pl.col("is_linkable")).select(keys)
    assert unlinkable.height > 0
    assert unlinkable.join(identity, on=keys, how="anti").is_empty(), "a record that cannot be linked was linked"
    assert identity["exception_reason"].is_not_null().all()
    # Reference: exactly the current records whose reference finds no current row in the sources.
    wanted = expected.reference_exceptions(truth.sims)
    assert_rows_equal(reference.with_columns(pl.lit(True).alias("listed")),
                      wanted.with_columns(pl.lit(True).alias("listed")), [*keys, "exception_reason"],
                      "reference exceptions against the sources")
    # Every exception the simulators injected is listed, with the reason of its kind; none is dropped.
    listed = set(identity.rows()) | set(reference.rows())
    injected = expected.manifest_exceptions(truth.sims)
    assert injected.height > 0 and set(injected["kind"]) <= set(EXCEPTION_REASONS)
    missing = [row for row in injected.rows() if (*row[:3], EXCEPTION_REASONS[row[3]]) not in listed]
    assert not missing, missing[:10]
    # The constructed namesakes (same full name and birth date, no PIN recorded) are ambiguous, never guessed.
    pairs = truth.sims["taxation"].crosswalks["ambiguous_name_birth"].filter("constructed")
    unmigrated = {t for t in pairs["taxpayer_id_a"].to_list() + pairs["taxpayer_id_b"].to_list() if len(t) == 10}
    reasons = dict(identity.filter(pl.col("dataset") == "taxpayers").select("record_key", "exception_reason").rows())
    assert unmigrated and all(reasons.get(t) == "ambiguous_name_and_birth_date" for t in unmigrated)


def test_data_quality_summary_counts_what_the_sources_hold(dbs, truth):
    """Per source table: current and deleted rows and quarantined rows as the sources and manifests say, reference
    exceptions as the sources say, and the person records linked or listed."""
    summary = {(r[0], r[1]): r[2:] for r in query(
        dbs.warehouse, "select source_name, dataset, current_rows, deleted_rows, quarantined_rows,"
        " identity_exceptions, reference_exceptions, linked_records from shared.data_quality_summary")}
    identity = _listed(dbs, "identity")
    orphans = expected.reference_exceptions(truth.sims)
    wanted = {}
    for source in (s.name for s in load_sources(get_settings().sources_dir)):
        for table in (t.name for t in find_source(get_settings().sources_dir, source).tables):
            landed, current = (expected.landed_rows(truth.sims, source, table),
                               expected.current_rows(truth.sims, source, table))
            excluded = manifest(truth, source, table, "quarantined").height + manifest(
                truth, source, table, "superseded").height
            listed = identity.filter(pl.col("dataset") == table).height
            records = truth.records.filter(pl.col("dataset") == table).height
            wanted[(source, table)] = (current.height, landed.height - current.height, excluded, listed,
                                       orphans.filter(pl.col("dataset") == table).height,
                                       records - listed if records else None)
    assert len(wanted) == 16
    assert summary == wanted


def test_citizens_carry_what_the_other_databases_know(dbs, truth):
    """Tax registration and filings, insurance and months contributed, the highest grade enrolled: per citizen, from
    the source rows of the records linked to them, grouped by the citizen each really is (the crosswalks)."""
    wanted = expected.citizen_activity(truth.sims, _linked(dbs, truth))
    found = frame(dbs.warehouse, f"select citizen_id, {', '.join(expected.ACTIVITY)} from shared.citizens")
    assert_rows_equal(found, wanted, ["citizen_id"], "shared.citizens' activity against the sources")
    assert wanted["is_tax_registered"].sum() > 0 and wanted["is_insured"].sum() > 0
    assert wanted["highest_enrolled_grade"].is_not_null().sum() > 0 and wanted["contributing_months"].sum() > 0
    columns = {r[0] for r in query(dbs.warehouse, "select column_name from information_schema.columns"
                                   " where table_schema = 'shared' and table_name = 'citizens'")}
    assert not columns & {"legacy_id_card_number", "legacy_tax_code", "insurance_code", "residence_address"}


def _relation_with_columns(url: str, schema: str, columns: set[str]) -> str:
    """The one relation of ``schema`` holding all of ``columns``: an intermediate model is found by what it holds,
    since its name is no contract (shared views are)."""
    found = query(url, "select table_name from information_schema.columns where table_schema = %s"
                  " group by table_name having array_agg(column_name::text) @> %s", (schema, sorted(columns)))
    assert len(found) == 1, f"{schema}: relations with columns {sorted(columns)}: {found}"
    return f"{schema}.{found[0][0]}"


def test_crosswalk_links_legacy_identifiers_to_the_true_pin(dbs, truth, published):
    relation = _relation_with_columns(dbs.warehouse, "intermediate", {"identifier_kind", "identifier", "citizen_id"})
    crosswalk = dict(((k, i), p) for k, i, p in query(
        dbs.warehouse, f"select identifier_kind, identifier, citizen_id from {relation}"))
    tax = truth.sims["taxation"].crosswalks["legacy_tax_code_to_pin"]
    insured = truth.sims["insurance"].crosswalks["insurance_code_to_pin"]
    found = {kind: sum(1 for code, pin in pairs.rows() if crosswalk.get((kind, code)) == pin)
             for kind, pairs in (("legacy_tax_code", tax), ("insurance_code", insured))}
    wrong = [(kind, code) for kind, pairs in (("legacy_tax_code", tax), ("insurance_code", insured))
             for code, pin in pairs.rows() if crosswalk.get((kind, code)) not in (None, pin)]
    assert not wrong and found["legacy_tax_code"] > 0.9 * tax.height and found["insurance_code"] > 0.9 * insured.height
    cmnd = query(published.urls["population"], "select cmnd, pin from citizens where cmnd is not null limit 50")
    assert cmnd and sum(crosswalk.get(("cmnd", c)) == p for c, p in cmnd) >= 45


# --- a consumer agency, through an approved sharing agreement ------------------------------------------------------

@dataclass
class AgencyAccess:
    login: str
    agency: Agency
    agreement: Agreement


@pytest.fixture(scope="module")
def agency(dbs, published, tmp_path_factory):
    """The repository's Quảng Ngãi agency and residents agreement (logins suffixed for this run, valid around
    today), approved by an approver role and applied twice (idempotent)."""
    folder = tmp_path_factory.mktemp("sharing")
    agencies_dir, agreements_dir = folder / "agencies", folder / "agreements"
    agencies_dir.mkdir()
    agreements_dir.mkdir()
    declared = yaml.safe_load((REPO / "dags/agencies/quang_ngai.yml").read_text(encoding="utf-8"))
    for user in declared["users"]:
        user["login"] += f"_{dbs.run}"
    (agencies_dir / "quang_ngai.yml").write_text(yaml.safe_dump(declared, allow_unicode=True), encoding="utf-8")
    text = (REPO / "dags/agreements/quang_ngai_residents.yml").read_text(encoding="utf-8")
    text = re.sub(r"^start: .*$", f"start: {date.today() - timedelta(days=365)}", text, flags=re.M)
    text = re.sub(r"^expires: .*$", f"expires: {date.today() + timedelta(days=365)}", text, flags=re.M)
    (agreements_dir / "quang_ngai_residents.yml").write_text(text, encoding="utf-8")
    agencies = load_agencies(agencies_dir)
    agreements = load_agreements(agreements_dir, agencies=agencies, shared=dbt.shared_models())
    approver = f"ndc_test_approver_{dbs.run}"
    with database.connect(dbs.warehouse) as conn:
        database.ensure_meta(conn)
        conn.execute(f'create role "{approver}" login in role ndc_approver')
        conn.execute(f'grant connect on database "{dbs.warehouse.rsplit("/", 1)[1]}" to "{approver}"')
        conn.commit()
    approve(as_role(dbs.warehouse, approver), agreements["quang_ngai_residents"], agencies["quang_ngai"], note="test")
    with database.connect(dbs.warehouse) as conn:
        first = apply(conn, dbs.warehouse, agencies=agencies, agreements=agreements)
        again = apply(conn, dbs.warehouse, agencies=agencies, agreements=agreements)
    assert first.applied == again.applied == ["quang_ngai_residents"] and again.revoked == []
    logins = [user["login"] for user in declared["users"]]
    yield AgencyAccess(logins[0], agencies["quang_ngai"], agreements["quang_ngai_residents"])
    with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
        for role in [approver, *logins]:
            if conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone():
                conn.execute(f'drop owned by "{role}"')
                conn.execute(f'drop role "{role}"')


def _pseudonyms(dbs, agreement_id: str, pins) -> dict[str, str]:
    """HMAC-SHA256 of each PIN under the agreement's key, computed here from the key alone."""
    key = scalar(dbs.warehouse, "select hmac_key from ndc_meta.agreement_keys where agreement_id = %s",
                 (agreement_id,))
    return {pin: hmac.new(bytes(key), pin.encode(), hashlib.sha256).hexdigest() for pin in pins}


def test_kon_tum_is_visible_to_quang_ngai_and_hai_duong_is_not(dbs, truth, agency):
    """The agency reads exactly the citizens whose current province is 51 (the former Kon Tum included, Hải Dương,
    now Hải Phòng, not), each under the agreement's pseudonym, never the PIN."""
    province = agency.agency.current_province_code
    residents = truth.citizens.filter(pl.col("current_province_code") == province)
    pseudonym = _pseudonyms(dbs, agency.agreement.id, truth.citizens["citizen_id"])
    wanted = residents.select(pl.col("citizen_id").replace_strict(pseudonym).alias("citizen_id_pseudonym"),
                              pl.col("birth_date").dt.year().cast(pl.Int32).alias("birth_date_year"), "sex",
                              "historic_province_code", "current_province_code")
    found = frame(as_role(dbs.warehouse, agency.login), f"select {', '.join(wanted.columns)}"
                  f" from {agency.agency.schema}.citizens")
    assert_rows_equal(found, wanted, ["citizen_id_pseudonym"], "what Quảng Ngãi reads of shared.citizens")
    kon_tum = truth.citizens.filter((pl.col("historic_province_code") == "62")
                                    & (pl.col("current_province_name") == "Quảng Ngãi"))["citizen_id"][0]
    hai_duong = truth.citizens.filter((pl.col("historic_province_code") == "30")
                                      & (pl.col("current_province_name") == "Hải Phòng"))["citizen_id"][0]
    shown = set(found["citizen_id_pseudonym"])
    assert pseudonym[kon_tum] in shown and pseudonym[hai_duong] not in shown
    assert not shown & set(truth.citizens["citizen_id"]), "no PIN is shown"
    assert set(found["current_province_code"]) == {province} and "30" not in set(found["historic_province_code"])


def test_quang_ngai_reads_the_statistics_of_its_own_province(dbs, truth, agency):
    wanted = expected.province_statistics(truth.sims).filter(
        pl.col("current_province_code") == agency.agency.current_province_code)
    found = frame(as_role(dbs.warehouse, agency.login), f"select {', '.join(wanted.columns)}"
                  f" from {agency.agency.schema}.province_statistics")
    assert wanted.height > 0
    assert_rows_equal(found, wanted, ["current_province_code", "month"], "Quảng Ngãi's province statistics")


def test_agency_role_can_read_nothing_else(dbs, agency):
    url, schema = as_role(dbs.warehouse, agency.login), agency.agency.schema
    readable = query(url, """
        select n.nspname || '.' || c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('r', 'v', 'm', 'p', 'f') and n.nspname not in ('pg_catalog', 'information_schema')
          and n.nspname !~ '^pg_toast'
          and (has_table_privilege(c.oid, 'select') or has_table_privilege(c.oid, 'insert')
               or has_table_privilege(c.oid, 'update') or has_table_privilege(c.oid, 'delete'))""")
    granted = {f"{schema}.{view.shared}" for view in agency.agreement.views} | {
        f"{schema}.delivery_receipts", f"{schema}.agreements"}
    assert {r[0] for r in readable} == granted
    for other in ("shared", "landing_population", "quarantine", "ndc_meta", "public", schema):
        assert scalar(url, "select has_schema_privilege(%s, 'create')", (other,)) is False
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        query(url, "select count(*) from shared.citizens")
    user = agency.agency.users[0]
    settings = scalar(dbs.warehouse, "select rolconfig from pg_roles where rolname = %s", (agency.login,))
    assert f"statement_timeout={user.statement_timeout}" in settings
    assert scalar(dbs.warehouse, "select rolconnlimit from pg_roles where rolname = %s",
                  (agency.login,)) == user.connection_limit


def test_agency_role_cannot_connect_to_source_or_airflow_databases(dbs, agency, published):
    airflow_db = with_database(dbs.warehouse, f"ndc_test_airflow_{dbs.run}")
    database.ensure_database(airflow_db)
    try:
        for url in (published.urls["population"], published.urls["taxation"], airflow_db):
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                psycopg.connect(as_role(url, agency.login)).close()
    finally:
        database.drop_database(airflow_db)


# --- publishing --------------------------------------------------------------------------------------------------

def test_every_shared_model_is_published_with_an_enforced_contract(dbs, published):
    manifest_json = json.loads(dbt.manifest_file().read_text())
    shared = {n["name"]: n for n in manifest_json["nodes"].values()
              if n["resource_type"] == "model" and n["config"].get("schema") == "shared"}
    assert set(shared) == SHARED
    for name, node in shared.items():
        assert node["config"]["contract"]["enforced"] and node["description"]
        assert all(c.get("description") and c.get("data_type") for c in node["columns"].values()), name
        assert scalar(dbs.warehouse, f"select count(*) from shared.{name}") > 0
    exposures = {e["name"]: e for e in manifest_json["exposures"].values()}
    assert len(exposures) >= 4 and all(e["owner"]["name"] for e in exposures.values())


def test_docs_generate_works(dbs, published):
    result = subprocess.run(["ndc", "dbt", "docs"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "index.html" in result.stdout
    catalog = json.loads((dbt.project_dir() / "target" / "catalog.json").read_text())
    documented = {node["metadata"]["name"] for node in catalog["nodes"].values()}
    # Shared models live in the two build schemas and `ndc dbt docs` catalogues the inactive one (dbt refuses to run
    # against the published build), which need not hold them yet; every other model and snapshot has one relation.
    built = {n["alias"] or n["name"] for n in json.loads(dbt.manifest_file().read_text())["nodes"].values()
             if n["resource_type"] in ("model", "snapshot") and n["config"]["materialized"] != "ephemeral"
             and n["config"].get("schema") != "shared"}
    assert len(built) > 20 and built <= documented, sorted(built - documented)


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
    assert "nothing published, consumers still read the previous version" in result.stderr
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


# Last in the module: it changes landing (one citizen deleted, one moved), so the shared views no longer match the
# sources' ground truth afterwards.
def test_concurrent_reader_sees_old_or_new_never_a_mix(dbs, published):
    """A reader polls during a publish whose build differs (one citizen fewer); it sees either build, whole."""
    old = scalar(dbs.warehouse, "select count(*) from shared.citizens")
    victim = scalar(dbs.warehouse, "select pin from landing_population.citizens order by pin limit 1")
    mover = scalar(dbs.warehouse, "select pin from landing_population.citizens where province_code = '62'"
                   " and pin <> %s order by pin limit 1", (victim,))
    with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
        # deleted at the source, as a full compare marks it (landing keeps the row, stamped)
        conn.execute("update landing_population.citizens set _ndc_deleted_at = now(), _ndc_deleted_by ="
                     " 'full_compare', _ndc_loaded_at = now() where pin = %s", (victim,))
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
