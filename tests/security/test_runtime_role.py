"""Item 1: the platform's runtime role cannot make itself more than it is."""

from __future__ import annotations

import psycopg
import pytest

from ndc.audit import ledger
from ndc.warehouse import database
from tests.helpers.database import scalar


@pytest.mark.parametrize("statement", [
    "grant ndc_approver to {runtime}",
    "grant ndc_custodian to {runtime}",
    "grant ndc_anchor_owner to {runtime}",
    "grant pg_execute_server_program to {runtime}",
    "grant pg_write_server_files to {runtime}",
    "set role ndc_approver",
    "set role ndc_custodian",
    "create role ndc_attacker_{run} login superuser",
    "create role ndc_attacker_{run} login",
    "alter role {runtime} createrole",
    "create database ndc_attacker_{run}",
    "copy (select 1) to program 'id'",
    "alter table ndc_meta.ledger owner to {runtime}",
    "alter table ndc_meta.ledger disable trigger ledger_no_update",
    "drop table ndc_meta.ledger",
    "alter schema ndc_meta rename to ndc_meta_old",
    "drop trigger approvals_append_only on ndc_meta.agreement_approvals",
    "create or replace function ndc_meta.append_only() returns trigger language sql as 'select null'",
])
def test_the_runtime_role_cannot_escalate(published, statement):
    """Each statement an insider holding the runtime role's password would try; each is refused by PostgreSQL."""
    text = statement.format(runtime=published.runtime_role, run=published.run)
    with psycopg.connect(published.runtime, autocommit=True) as conn, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(text)


def test_the_runtime_role_holds_no_dangerous_attribute_or_role(published):
    attributes = scalar(published.admin, "select (rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls)"
                        "::text from pg_roles where rolname = %s", (published.runtime_role,))
    assert attributes == "(f,f,f,f,f)"
    held = {r for r in scalar(published.admin, "select array_agg(g.rolname) from pg_roles g where pg_has_role(%s,"
                              " g.oid, 'member') and g.rolname <> %s", (published.runtime_role,
                                                                         published.runtime_role))}
    assert held <= {"ndc_operator", "ndc_personal_data"}, held
    owners = dict(scalar(published.admin, "select array_agg(array[c.relname, pg_get_userbyid(c.relowner)]) from"
                         " pg_class c where c.relnamespace = 'ndc_meta'::regnamespace and c.relname in ('ledger',"
                         " 'ledger_identity', 'agreement_approvals', 'approval_withdrawals', 'agency_roles',"
                         " 'read_meters', 'agreement_keys')"))
    assert set(owners.values()) == {"ndc_custodian"}, owners


def test_agency_role_functions_refuse_roles_the_platform_did_not_make(published):
    """The runtime role makes agency roles only through the custodian's functions: they refuse to take over an
    existing role (the approver, the runtime role itself) as an agency login."""
    with psycopg.connect(published.runtime, autocommit=True) as conn:
        conn.execute("select ndc_meta.ensure_agency_group('sec_probe')")
        for victim in (published.approver_role, published.runtime_role, "postgres"):
            with pytest.raises(psycopg.errors.RaiseException, match="exists and is not a login of agency"):
                conn.execute("select ndc_meta.ensure_agency_login(%s, 'sec_probe', '5s', 1, '5s', '5s')", (victim,))
    assert not scalar(published.admin, "select pg_has_role(%s, 'ndc_agency_sec_probe', 'member')",
                      (published.approver_role,))


def test_the_platform_runs_as_the_runtime_role(published):
    """What the layout must still allow: the five sources were loaded, built and published as the runtime role
    (the fixture), and its ledger rows are chained and anchored by the INSERT-only writer."""
    assert scalar(published.admin, "select count(*) from shared.citizens") > 500
    assert scalar(published.admin, "select pg_get_userbyid(relowner) from pg_class where oid ="
                  " 'shared.citizens'::regclass") == published.runtime_role
    with database.connect(published.runtime) as conn:
        result = ledger.verify(conn)
    assert result.ok and result.rows > 5 and result.anchored > 5, result
