"""Items 2, 3, 6 and 7: approvals cannot be forged or stretched; who belongs to an agency is approved; pseudonyms
cannot be joined; a YAML file means what it looks like, and the approver sees what the platform parsed."""

from __future__ import annotations

import os
import subprocess

import psycopg
import pytest
import yaml

from ndc.errors import ConfigError, NdcError
from ndc.sharing.agreements import withdraw
from tests.helpers.database import query, scalar
from tests.helpers.deployment import sharing_in

QN, VSS = "quang_ngai_residents_ap", "social_insurance_contributors_ap"


@pytest.fixture(scope="module")
def sharing(published, tmp_path_factory):
    found = sharing_in(published, tmp_path_factory.mktemp("approvals"), "ap")
    found.approve()
    result = found.apply()
    assert sorted(result.applied) == [QN, VSS] and not result.awaiting
    return found


def _add_login(path, login: str) -> None:
    data = yaml.safe_load(path.read_text())
    data["users"].append({"login": login})
    path.write_text(yaml.safe_dump(data, allow_unicode=True))


def _rows(url: str, view: str) -> int:
    return query(url, f"select count(*) from {view}")[0][0]


def test_the_runtime_role_cannot_forge_an_approval(sharing):
    """Item 2: the attack — point an approval at an edited file's hash, or write one — is refused by PostgreSQL."""
    edited = "0" * 64
    with psycopg.connect(sharing.deployment.runtime, autocommit=True) as conn:
        for statement, params in [
            ("update ndc_meta.agreement_approvals set content_sha256 = %s where agreement_id = %s", (edited, QN)),
            ("delete from ndc_meta.agreement_approvals where agreement_id = %s", (QN,)),
            ("insert into ndc_meta.agreement_approvals (agreement_id, content_sha256, consumer, logins)"
             " values (%s, %s, 'quang_ngai_ap', '{}')", (QN, edited)),
            ("insert into ndc_meta.approval_withdrawals (approval_id, reason) select approval_id, 'x y z'"
             " from ndc_meta.agreement_approvals limit 1", ()),
            ("truncate ndc_meta.agreement_approvals", ()),
        ]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement, params)
    with psycopg.connect(sharing.deployment.approver, autocommit=True) as conn, \
            pytest.raises(psycopg.Error, match=r"append-only|permission denied"):
        conn.execute("update ndc_meta.agreement_approvals set content_sha256 = %s where agreement_id = %s",
                     (edited, QN))


def test_a_grant_made_by_hand_is_revoked_by_the_next_apply(sharing):
    """What the runtime role can still do (it owns the shared views): grant one to an agency without an agreement.
    The next apply revokes it and the ledger records it."""
    login = sharing.login("quang_ngai_ap")
    with psycopg.connect(sharing.deployment.runtime, autocommit=True) as conn:
        conn.execute("grant usage on schema shared to ndc_agency_quang_ngai_ap")
        conn.execute("grant select on shared.enterprises to ndc_agency_quang_ngai_ap")
    assert _rows(login, "shared.enterprises") > 0
    result = sharing.apply()
    assert {"SELECT on shared.enterprises from ndc_agency_quang_ngai_ap",
            "USAGE on shared from ndc_agency_quang_ngai_ap"} <= set(result.revoked)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _rows(login, "shared.enterprises")
    assert query(sharing.deployment.admin, "select target, details->>'role' from ndc_meta.ledger where kind ="
                 " 'stray_grant_revoked' order by 1") == [("shared", "ndc_agency_quang_ngai_ap"),
                                                         ("shared.enterprises", "ndc_agency_quang_ngai_ap")]


def test_every_approval_is_in_the_ledger_and_an_unrecorded_one_does_not_count(sharing):
    recorded = query(sharing.deployment.admin, "select target, details->>'approved_by', details->'logins'"
                     " from ndc_meta.ledger where kind = 'agreement_approved' and target = any(%s) order by 1",
                     ([QN, VSS],))
    assert [r[0] for r in recorded] == [QN, VSS]
    assert {r[1] for r in recorded} == {sharing.deployment.approver_role}
    assert sorted(recorded[0][2]) == sorted(sharing.logins["quang_ngai_ap"])
    # An approval row written behind the approvers' backs (by the approvals' owner: here the administrator) for an
    # edited file is not an approval: apply re-checks each against the ledger.
    path = sharing.agreements_dir / f"{QN}.yml"
    original = path.read_text()
    try:
        head, tail = original.rsplit('row_filter: {current_province_code: "51"}', 1)
        path.write_text(head + "row_filter: {}" + tail)  # every province's statistics
        _, agreements = sharing.load()
        with psycopg.connect(sharing.deployment.admin, autocommit=True) as admin:
            admin.execute(f'set session authorization "{sharing.deployment.approver_role}"')
            admin.execute("insert into ndc_meta.agreement_approvals (agreement_id, content_sha256, consumer, logins)"
                          " values (%s, %s, 'quang_ngai_ap', %s)",
                          (QN, agreements[QN].content_sha256, sharing.logins["quang_ngai_ap"]))
        result = sharing.apply()
        assert QN in result.unapproved and "agency_quang_ngai_ap.citizens" in result.revoked
    finally:
        path.write_text(original)
    assert QN in sharing.apply().applied


def test_a_withdrawn_approval_is_recorded_and_revokes_the_views(sharing):
    login = sharing.login("social_insurance_ap")
    assert _rows(login, "agency_social_insurance_ap.citizens") > 0
    with pytest.raises(NdcError, match="give a reason"):
        withdraw(sharing.deployment.approver, VSS, "")
    with pytest.raises(NdcError, match=r"may not withdraw|not by the platform"):
        withdraw(sharing.deployment.runtime, VSS, "the platform tries")
    withdrawn = withdraw(sharing.deployment.approver, VSS, "consent of the steering committee withdrawn")
    assert withdrawn
    # From the withdrawal's apply on, nothing is readable; the ledger records both.
    result = sharing.apply()
    assert VSS in result.unapproved and "agency_social_insurance_ap.citizens" in result.revoked
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):  # no approval lists it now
        _rows(login, "agency_social_insurance_ap.citizens")
    assert not query(sharing.deployment.admin, "select 1 from pg_views where schemaname = 'agency_social_insurance_ap'"
                     " and viewname = 'citizens'")
    kinds = [r[0] for r in query(sharing.deployment.admin, "select kind from ndc_meta.ledger where target = %s"
                                 " order by ledger_id", (VSS,))]
    assert kinds[-2:] == ["approval_withdrawn", "agreement_revoked"]


def test_a_login_added_to_an_agency_file_gets_nothing_until_approved(sharing):
    """Item 3: adding a login to the agency file is not enough; approving the agreement again (which lists it) is."""
    path = sharing.agencies_dir / "quang_ngai_ap.yml"
    original = path.read_text()
    intruder = f"ndc_qn_intruder_{sharing.deployment.run}"
    _add_login(path, intruder)
    try:
        result = sharing.apply()
        assert intruder in result.awaiting
        with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
            psycopg.connect(sharing.deployment.login(intruder)).close()
        assert not scalar(sharing.deployment.admin, "select pg_has_role(%s, 'ndc_agency_quang_ngai_ap', 'member')",
                          (intruder,))
        # The runtime role cannot admit it by hand either.
        with psycopg.connect(sharing.deployment.runtime, autocommit=True) as conn, \
                pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f'grant ndc_agency_quang_ngai_ap to "{intruder}"')
        # The approver approves the agreement for the agency as it now is (its logins are part of the approval).
        path_qn = sharing.agreements_dir / f"{QN}.yml"
        path_qn.write_text(path_qn.read_text() + "# approved again with the statistics office's new login\n")
        sharing.approve(QN)
        assert intruder not in sharing.apply().awaiting
        assert _rows(sharing.deployment.login(intruder), "agency_quang_ngai_ap.province_statistics") > 0
    finally:
        path.write_text(original)
    result = sharing.apply()
    assert f"role {intruder} (was in ndc_agency_quang_ngai_ap)" in result.revoked


def test_a_login_belongs_to_one_agency(sharing, tmp_path):
    vss_login = sharing.logins["social_insurance_ap"][0]
    path = sharing.agencies_dir / "quang_ngai_ap.yml"
    original = path.read_text()
    _add_login(path, vss_login)
    try:
        with pytest.raises(ConfigError, match=f"{vss_login} is already a login of agency|a login belongs to one"):
            sharing.load()
    finally:
        path.write_text(original)
    # And in the database, whatever the files say: the custodian's function refuses it.
    with psycopg.connect(sharing.deployment.runtime, autocommit=True) as conn, \
            pytest.raises(psycopg.errors.RaiseException, match="a login belongs to one agency"):
        conn.execute("select ndc_meta.ensure_agency_login(%s, 'quang_ngai_ap', '5s', 1, '5s', '5s')", (vss_login,))


def test_pseudonymised_agreements_refuse_quasi_identifiers_in_clear(sharing):
    """Item 6: the shipped agreements used to show name, birth date, sex and province beside the pseudonym."""
    path = sharing.agreements_dir / f"{QN}.yml"
    original = path.read_text()
    try:
        path.write_text(original.replace("columns: [sex,", "columns: [full_name, birth_date, sex,")
                        .replace("citizen_id: pseudonym, birth_date: year, ", "citizen_id: pseudonym, "))
        with pytest.raises(ConfigError, match="birth_date, full_name beside a pseudonym"):
            sharing.load()
        path.write_text(original.replace("quasi_identifiers_in_clear: [sex, ", "quasi_identifiers_in_clear: ["))
        with pytest.raises(ConfigError, match="sex beside a pseudonym"):
            sharing.load()
        path.write_text(original.replace("citizen_id: pseudonym", "citizen_id: partial"))
        with pytest.raises(ConfigError, match="citizen_id may not be masked 'partial'"):
            sharing.load()
    finally:
        path.write_text(original)
    # What the two agencies see in clear in common: the birth year and the province, never a name or a full date.
    common = set(_columns(sharing, "agency_quang_ngai_ap")) & set(_columns(sharing, "agency_social_insurance_ap"))
    assert common <= {"current_province_code", "birth_date_year", "citizen_id_pseudonym"}, common


def _columns(sharing, schema: str) -> list[str]:
    return [r[0] for r in query(sharing.deployment.admin, "select column_name from information_schema.columns"
                                " where table_schema = %s and table_name = 'citizens'", (schema,))]


REUSED = """id: reused_key_ap
consumer: {consumer}
purpose: A short-lived reconciliation, withdrawn and then given to another agency.
quasi_identifiers_in_clear: [current_province_code]
start: 2025-01-01
expires: 2099-12-31
views:
  - shared: citizens
    columns: [current_province_code]
    masked: {{citizen_id: pseudonym}}
"""


def test_an_agreement_id_reused_for_another_consumer_gets_a_new_key(sharing, tmp_path):
    """Item 6: a withdrawn agreement's id given to another agency must not hand it the old pseudonyms."""
    parked = [sharing.agreements_dir / f"{QN}.yml", sharing.agreements_dir / f"{VSS}.yml"]
    for path in parked:  # one agreement per view and agency: these two step aside
        path.rename(tmp_path / path.name)
    reused = sharing.agreements_dir / "reused_key_ap.yml"
    try:
        reused.write_text(REUSED.format(consumer="social_insurance_ap"))
        sharing.approve("reused_key_ap")
        sharing.apply()
        before = {r[0] for r in query(sharing.deployment.admin,
                                      "select citizen_id_pseudonym from agency_social_insurance_ap.citizens")}
        withdraw(sharing.deployment.approver, "reused_key_ap", "ended: the id is given to another agency")
        reused.write_text(REUSED.format(consumer="quang_ngai_ap"))
        sharing.approve("reused_key_ap")
        sharing.apply()
        after = {r[0] for r in query(sharing.deployment.admin,
                                     "select citizen_id_pseudonym from agency_quang_ngai_ap.citizens")}
        assert before and after and not (before & after), "the new consumer got the old consumer's pseudonyms"
        keys = query(sharing.deployment.admin, "select consumer from ndc_meta.agreement_keys"
                     " where agreement_id = 'reused_key_ap' order by 1")
        assert keys == [("quang_ngai_ap",), ("social_insurance_ap",)]
    finally:
        withdraw(sharing.deployment.approver, "reused_key_ap", "test over")
        reused.unlink()
        for path in parked:
            (tmp_path / path.name).rename(path)
        sharing.apply()


def test_repeated_yaml_keys_are_refused_in_every_config_file(sharing, tmp_path):
    """Item 7: the last `row_filter: {}` used to win silently, sharing every province."""
    path = sharing.agreements_dir / f"{QN}.yml"
    original = path.read_text()
    try:
        path.write_text(original.replace('row_filter: {current_province_code: "51"}\n  - shared: province',
                                         'row_filter: {current_province_code: "51"}\n    row_filter: {}\n'
                                         '  - shared: province'))
        with pytest.raises(ConfigError, match="the key 'row_filter' is given twice"):
            sharing.load()
    finally:
        path.write_text(original)
    agency = sharing.agencies_dir / "quang_ngai_ap.yml"
    text = agency.read_text()
    try:
        agency.write_text(text + "kind: ministry\n")
        with pytest.raises(ConfigError, match="the key 'kind' is given twice"):
            sharing.load()
    finally:
        agency.write_text(text)
    from ndc.config.sources import load_source
    from tests.helpers import REPO

    source = tmp_path / "population.yml"
    source.write_text(next((REPO / "dags/sources").glob("*/population.yml")).read_text() + "schedule: '@yearly'\n")
    with pytest.raises(ConfigError, match="the key 'schedule' is given twice"):
        load_source(source)


def test_approve_shows_the_parsed_agreement_and_approves_only_when_confirmed(sharing):
    path = sharing.agreements_dir / f"{QN}.yml"
    path.write_text(path.read_text() + "# reviewed again\n")
    env = {**os.environ, "NDC_AGENCIES_DIR": str(sharing.agencies_dir),
           "NDC_AGREEMENTS_DIR": str(sharing.agreements_dir)}
    refused = subprocess.run(["ndc", "agreements", "approve", QN], input="n\n", capture_output=True, text=True,
                             env=env)
    assert refused.returncode != 0
    shown = refused.stdout
    assert "rows: current_province_code in ['51']" in shown and "citizen_id (pseudonym)" in shown
    assert "birth_date (year)" in shown and sharing.logins["quang_ngai_ap"][0] in shown
    count = "select count(*) from ndc_meta.agreement_approvals where agreement_id = %s"
    before = scalar(sharing.deployment.admin, count, (QN,))
    accepted = subprocess.run(["ndc", "agreements", "approve", QN], input="y\n", capture_output=True, text=True,
                              env=env)
    assert accepted.returncode == 0, accepted.stderr
    assert scalar(sharing.deployment.admin, count, (QN,)) == before + 1
