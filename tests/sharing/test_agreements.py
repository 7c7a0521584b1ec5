"""Agencies and sharing agreements on a real published warehouse: each consumer role reads exactly what its approved
agreement grants (columns, rows, masks), nothing else — not even through a leaky function (security_barrier) —
two agencies' pseudonyms for one citizen differ, approval comes only from an approver role, and expiry or removal
takes access away."""

from __future__ import annotations

import re
import shutil
from datetime import date, timedelta

import psycopg
import pytest
import yaml
from ndc_lab.simulate.all_sources import five_sources
from ndc_lab.simulate.common import SourceSpec

from ndc.config.agreements import load_agencies, load_agreements
from ndc.conform import dbt
from ndc.errors import ConfigError, NdcError
from ndc.sharing.agreements import apply, approve
from ndc.warehouse import database
from tests.helpers import REPO
from tests.helpers.conform import build_and_publish
from tests.helpers.database import query, scalar

SPEC = SourceSpec(citizens=2_000, seed=707, defect_rate=0.002)
TODAY = date.today()
START, QN_EXPIRES, VSS_EXPIRES = TODAY - timedelta(days=365), TODAY + timedelta(days=400), TODAY + timedelta(days=200)


def as_role(url: str, role: str) -> str:
    return url.replace("postgres@", f"{role}@", 1)


@pytest.fixture(scope="module")
def setup(request, dbs, tmp_path_factory):
    """Five sources built and published; the repository's agencies and agreements with run-suffixed role names."""
    mariadb = request.getfixturevalue("mariadb_server")
    folder = tmp_path_factory.mktemp("sharing")
    suffix = dbs.run
    agencies_dir, agreements_dir = folder / "agencies", folder / "agreements"
    agencies_dir.mkdir()
    shutil.copytree(REPO / "dags/agreements", agreements_dir)
    for path, (start, expires) in {"quang_ngai_residents.yml": (START, QN_EXPIRES),
                                   "social_insurance_contributors.yml": (START, VSS_EXPIRES)}.items():
        text = (agreements_dir / path).read_text()
        text = re.sub(r"^start: .*$", f"start: {start}", text, flags=re.M)
        (agreements_dir / path).write_text(re.sub(r"^expires: .*$", f"expires: {expires}", text, flags=re.M))
    logins = {}
    for path in (REPO / "dags/agencies").glob("*.yml"):
        data = yaml.safe_load(path.read_text())
        for user in data["users"]:
            logins.setdefault(data["name"], []).append(user["login"] + "_" + suffix)
            user["login"] += "_" + suffix
        (agencies_dir / path.name).write_text(yaml.safe_dump(data, allow_unicode=True))
    approver = f"ndc_test_approver_{suffix}"
    with five_sources(dbs.warehouse, SPEC, run=dbs.run, drops=tmp_path_factory.mktemp("drops"),
                      mariadb_url=mariadb):
        dbt.parse()
        build_and_publish("agreements")
        with database.connect(dbs.warehouse) as conn:
            database.ensure_meta(conn)
            conn.execute(f'create role "{approver}" login in role ndc_approver')
            conn.execute(f'grant connect on database "{dbs.warehouse.rsplit("/", 1)[1]}" to "{approver}"')
            conn.execute(f'grant usage on schema ndc_meta to "{approver}"')
            conn.execute(f'grant insert, select on ndc_meta.agreement_approvals to "{approver}"')
            conn.commit()
        yield {"agencies": agencies_dir, "agreements": agreements_dir, "logins": logins, "approver": approver,
               "url": dbs.warehouse}
    with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
        for role in [approver, *(r for rs in logins.values() for r in rs)]:
            if conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone():
                conn.execute(f'drop owned by "{role}"')
                conn.execute(f'drop role "{role}"')


def load(setup):
    agencies = load_agencies(setup["agencies"])
    return agencies, load_agreements(setup["agreements"], agencies=agencies, shared=dbt.shared_models())


def test_config_errors_name_the_file_and_field(setup, tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text((setup["agreements"] / "quang_ngai_residents.yml").read_text()
                   .replace("id: quang_ngai_residents", "id: bad").replace(f"expires: {QN_EXPIRES}", "expires: soon"))
    with pytest.raises(ConfigError, match=r"bad.yml: invalid agreement file\n  - field 'expires'"):
        load_agreements(tmp_path)
    bad.write_text(bad.read_text().replace("expires: soon", f"expires: {QN_EXPIRES}")
                   .replace("columns: [sex,", "columns: [citizen_id, sex,")
                   .replace("citizen_id: pseudonym, ", "", 1))
    with pytest.raises(ConfigError, match=r"field 'views.0.columns': citizen_id is a personal identifier"):
        load_agreements(tmp_path, agencies=load_agencies(setup["agencies"]), shared=dbt.shared_models())


def test_unapproved_agreements_are_not_applied_and_the_platform_cannot_approve(setup):
    agencies, agreements = load(setup)
    with database.connect(setup["url"]) as conn:
        result = apply(conn, setup["url"], agencies=agencies, agreements=agreements)
    assert sorted(result.unapproved) == sorted(agreements) and result.applied == []
    assert not query(setup["url"], "select 1 from pg_views where left(schemaname, 7) = 'agency_'"
                     " and viewname not in ('delivery_receipts', 'agreements')")
    with pytest.raises(NdcError, match="not by the platform's own role"):
        approve(setup["url"], agreements["quang_ngai_residents"], agencies["quang_ngai"])


@pytest.fixture(scope="module")
def applied(setup):
    agencies, agreements = load(setup)
    approver_url = as_role(setup["url"], setup["approver"])
    for agreement in agreements.values():
        approve(approver_url, agreement, agencies[agreement.consumer], note="test")
    with database.connect(setup["url"]) as conn:
        first = apply(conn, setup["url"], agencies=agencies, agreements=agreements, today=TODAY)
        again = apply(conn, setup["url"], agencies=agencies, agreements=agreements, today=TODAY)
    assert sorted(first.applied) == sorted(again.applied) == sorted(agreements)
    assert again.revoked == []
    return agreements


def read(setup, agency: str, statement: str, params=()) -> list[tuple]:
    return query(as_role(setup["url"], setup["logins"][agency][0]), statement, params)


def test_each_role_reads_exactly_its_columns_and_rows(setup, applied):
    columns = [r[0] for r in query(setup["url"], "select column_name from information_schema.columns where"
                                   " table_schema = 'agency_quang_ngai' and table_name = 'citizens'"
                                   " order by ordinal_position")]
    granted = next(v for v in applied["quang_ngai_residents"].views if v.shared == "citizens")
    assert columns == [*granted.columns, "citizen_id_pseudonym", "birth_date_year", "death_date_year"]
    rows = read(setup, "quang_ngai", "select current_province_code, count(*) from agency_quang_ngai.citizens"
                " group by 1")
    assert rows == [("51", scalar(setup["url"], "select count(*) from shared.citizens"
                                                " where current_province_code = '51'"))]
    assert rows[0][1] > 0
    for user in setup["logins"]["quang_ngai"]:  # every login of the agency, through its group role
        assert query(as_role(setup["url"], user), "select count(*) from agency_quang_ngai.province_statistics"
                     " where current_province_code <> '51'") == [(0,)]
    vss = read(setup, "social_insurance", "select count(*) from agency_social_insurance.citizens")
    assert vss == [(scalar(setup["url"], "select count(*) from shared.citizens"),)]


@pytest.mark.parametrize("statement", [
    "select * from shared.citizens limit 1",
    "select * from shared_a.citizens limit 1",
    "select * from landing_population.citizens limit 1",
    "select * from quarantine.rows limit 1",
    "select * from ndc_meta.ledger limit 1",
    "select * from ndc_meta.agreement_keys",
    "select * from agency_social_insurance.citizens limit 1",
    "select citizen_id from agency_quang_ngai.citizens limit 1",
    "create table agency_quang_ngai.mine (x int)",
    "create table public.mine (x int)",
    "create temp table mine (x int)",
    "create schema mine",
])
def test_everything_else_is_refused(setup, applied, statement):
    with pytest.raises(psycopg.Error) as refused:
        read(setup, "quang_ngai", statement)
    assert isinstance(refused.value, psycopg.errors.InsufficientPrivilege | psycopg.errors.UndefinedColumn)


def test_pseudonyms_differ_between_agencies_and_are_keyed_hmacs(setup, applied):
    pins = [r[0] for r in query(setup["url"], "select citizen_id from shared.citizens where current_province_code"
                                " = '51' order by citizen_id limit 50")]
    hmac = ("select encode(ndc_meta.hmac(convert_to(p, 'UTF8'), hmac_key, 'sha256'), 'hex') from unnest(%s::text[]) p,"
            " ndc_meta.agreement_keys where agreement_id = %s")
    qn = {r[0] for r in query(setup["url"], hmac, (pins, "quang_ngai_residents"))}
    vss = {r[0] for r in query(setup["url"], hmac, (pins, "social_insurance_contributors"))}
    assert len(qn) == len(vss) == len(pins) and not qn & vss, "one key per agreement: pseudonyms differ"
    assert all(len(p) == 64 and not any(pin in p for pin in pins) for p in qn)
    assert qn <= {r[0] for r in read(setup, "quang_ngai", "select citizen_id_pseudonym from"
                                     " agency_quang_ngai.citizens")}
    assert vss <= {r[0] for r in read(setup, "social_insurance", "select citizen_id_pseudonym from"
                                      " agency_social_insurance.citizens")}


def test_a_leaky_function_sees_only_the_agency_rows(setup, applied):
    """security_barrier: the view's own filter runs before a caller's cheap function that leaks its argument."""
    with psycopg.connect(setup["url"], autocommit=True) as admin:
        admin.execute("create or replace function public.ndc_test_leak(text) returns boolean language plpgsql"
                      " cost 0.0000001 as $$ begin raise notice 'leaked: %', $1; return true; end $$")
        admin.execute("grant execute on function public.ndc_test_leak(text) to public")
    leaked: list[str] = []
    with psycopg.connect(as_role(setup["url"], setup["logins"]["quang_ngai"][0])) as conn:
        conn.add_notice_handler(lambda notice: leaked.append(notice.message_primary.removeprefix("leaked: ")))
        conn.execute("select count(*) from agency_quang_ngai.citizens where"
                     " public.ndc_test_leak(historic_province_code)")
    allowed = {r[0] for r in query(setup["url"], "select historic_province_code from shared.citizens"
                                   " where current_province_code = '51'")}
    assert leaked and set(leaked) <= allowed


def test_each_publish_delivers_under_each_agreement_with_a_receipt(setup, applied):
    build_and_publish("delivered")
    deliveries = query(setup["url"], "select details->>'agreement', row_hash, ledger_id from ndc_meta.ledger"
                       " where kind = 'delivery' and run_id = 'delivered' order by 1")
    assert [d[0] for d in deliveries] == sorted(applied)
    receipts = read(setup, "quang_ngai", "select agreement_id, ledger_id, ledger_hash, views"
                    " from agency_quang_ngai.delivery_receipts")
    assert receipts == [("quang_ngai_residents", deliveries[0][2], deliveries[0][1],
                         ["citizens", "province_statistics"])], "an agency sees its own receipts only"
    counted = dict(((r[0], r[1]), r[2]) for r in query(
        setup["url"], "select agency, dataset, transactions from ndc_meta.sharing_transactions"
        " where unit = 'delivery'"))
    assert counted == {("quang_ngai", "citizens"): 1, ("quang_ngai", "province_statistics"): 1,
                       ("social_insurance", "citizens"): 1}


def test_a_shared_row_traces_to_its_batches_contracts_publication_and_agreements(setup, applied):
    import json
    import subprocess

    from ndc.contracts import get_contract

    pin = scalar(setup["url"], "select citizen_id from shared.citizens where current_province_code = '51' limit 1")
    out = subprocess.run(["ndc", "trace", "citizens", pin], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    assert found["in_published_view"] is True and found["versions"]
    current = [v for v in found["versions"] if v["current"]]
    assert len(current) == 1
    batch = query(setup["url"], "select run_id from ndc_meta.batches where batch_id = %s", (current[0]["batch_id"],))
    assert batch == [(current[0]["run_id"],)]
    assert {(c["contract"], c["version"]) for c in found["contracts"]} == {
        ("population.citizens", get_contract("population.citizens").version)}
    latest = scalar(setup["url"], "select max(publication_id) from ndc_meta.publications")
    assert found["publication"]["publication_id"] == latest and found["publication"]["ledger_hash"]
    agreements = {a["agreement"]: a for a in found["agreements"]}
    assert set(agreements) == {"quang_ngai_residents", "social_insurance_contributors"}
    assert all(a["delivery_ledger_hash"] for a in agreements.values())
    refused = subprocess.run(["ndc", "trace", "province_statistics", "51"], capture_output=True, text=True)
    assert refused.returncode != 0 and "lineage is traced for citizens, enterprises" in refused.stderr


def test_consumer_reads_are_counted_per_role_and_view(setup, applied):
    from ndc.sharing.reads import collect

    with database.connect(setup["url"]) as conn:
        collect(conn)  # what was read before this test
        statistics, portal = setup["logins"]["quang_ngai"]
        for _ in range(3):
            query(as_role(setup["url"], statistics), "select count(*) from agency_quang_ngai.citizens")
        query(as_role(setup["url"], portal), "select * from agency_quang_ngai.province_statistics limit 1")
        query(as_role(setup["url"], portal), "select count(*) from agency_quang_ngai.citizens c join"
              " agency_quang_ngai.province_statistics p using (current_province_code)")
        found = collect(conn, run_id="reads")
        assert dict(found.per_view) == {
            (statistics, "agency_quang_ngai.citizens"): 3,
            (portal, "agency_quang_ngai.province_statistics"): 2, (portal, "agency_quang_ngai.citizens"): 1}
        assert collect(conn).reads == 0, "a second collection counts only what was read since"
    entry = query(setup["url"], "select rows_loaded from ndc_meta.ledger where kind = 'reads' and run_id = 'reads'")
    assert entry == [(6,)]
    counted = dict(query(setup["url"], "select dataset, sum(transactions) from ndc_meta.sharing_transactions"
                         " where unit = 'read' and agency = 'quang_ngai' group by 1"))
    assert counted["agency_quang_ngai.citizens"] >= 4 and counted["agency_quang_ngai.province_statistics"] >= 2


def test_the_catalogue_lists_every_shared_dataset_with_its_consumers(setup, applied):
    import json
    import subprocess

    out = subprocess.run(["ndc", "catalog", "--json"], capture_output=True, text=True, check=True)
    listed = {e["relation"]: e for e in json.loads(out.stdout)}
    assert set(listed) == set(dbt.shared_models())
    consumers = {r: sorted(c["agency"] for c in e["consumers"]) for r, e in listed.items()}
    assert consumers["citizens"] == ["quang_ngai", "social_insurance"]
    assert consumers["province_statistics"] == ["quang_ngai"] and consumers["enterprises"] == []
    citizens = listed["citizens"]
    assert citizens["contract_name"] == "shared.citizens" and citizens["contract_version"]
    assert "Ministry of Public Security (Bộ Công an)" in citizens["owner_agencies"]
    assert citizens["last_published_at"] and citizens["description"]
    assert scalar(setup["url"], "select count(*) from ndc_meta.catalog") == len(listed)
    text = subprocess.run(["ndc", "catalog"], capture_output=True, text=True, check=True).stdout
    assert "shared.citizens" in text and "quang_ngai (quang_ngai_residents)" in text


def test_expiry_and_removal_take_access_away(setup, applied):
    agencies, agreements = load(setup)
    # Past its expiry the view itself returns nothing, before any apply runs.
    expiring = setup["agreements"] / "social_insurance_contributors.yml"
    assert read(setup, "social_insurance", "select count(*) from agency_social_insurance.citizens")[0][0] > 0
    with psycopg.connect(setup["url"], autocommit=True) as admin:  # the clock passes the expiry instant
        admin.execute("update ndc_meta.applied_agreements set expires_at = now() - interval '1 second'"
                      " where agreement_id = 'social_insurance_contributors'")
    assert read(setup, "social_insurance", "select count(*) from agency_social_insurance.citizens") == [(0,)]
    # The next apply after expiry revokes it: the view is gone, and the ledger says so.
    with database.connect(setup["url"]) as conn:
        result = apply(conn, setup["url"], agencies=agencies, agreements=agreements,
                       today=VSS_EXPIRES + timedelta(days=1))
    assert "agency_social_insurance.citizens" in result.revoked
    with pytest.raises(psycopg.errors.UndefinedTable):
        read(setup, "social_insurance", "select 1 from agency_social_insurance.citizens")
    assert query(setup["url"], "select target from ndc_meta.ledger where kind = 'agreement_revoked'") == [
        ("social_insurance_contributors",)]
    # A changed file is unapproved until approved again: the next apply revokes it too.
    quang_ngai = setup["agreements"] / "quang_ngai_residents.yml"
    quang_ngai.write_text(quang_ngai.read_text().replace(f"expires: {QN_EXPIRES}",
                                                         f"expires: {QN_EXPIRES + timedelta(days=1)}"))
    agencies, agreements = load(setup)
    with database.connect(setup["url"]) as conn:
        result = apply(conn, setup["url"], agencies=agencies, agreements=agreements, today=TODAY)
    assert "quang_ngai_residents" in result.unapproved and "agency_quang_ngai.citizens" in result.revoked
    assert expiring.exists()


def test_a_user_removed_from_an_agency_file_loses_the_login(setup, applied):
    agencies_file = setup["agencies"] / "quang_ngai.yml"
    data = yaml.safe_load(agencies_file.read_text())
    statistics, portal = setup["logins"]["quang_ngai"]
    data["users"] = [u for u in data["users"] if u["login"] != portal]
    agencies_file.write_text(yaml.safe_dump(data, allow_unicode=True))
    agencies, agreements = load(setup)
    with database.connect(setup["url"]) as conn:
        result = apply(conn, setup["url"], agencies=agencies, agreements=agreements)
    assert f"role {portal} (was in ndc_agency_quang_ngai)" in result.revoked
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        psycopg.connect(as_role(setup["url"], portal)).close()
    assert scalar(setup["url"], "select count(*) from pg_auth_members m join pg_roles g on g.oid = m.roleid"
                  " join pg_roles r on r.oid = m.member where g.rolname = 'ndc_agency_quang_ngai'"
                  " and r.rolname = %s", (portal,)) == 0
    psycopg.connect(as_role(setup["url"], statistics)).close()  # the listed user still logs in
