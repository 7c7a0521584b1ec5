"""Items 8 and 9: an agency login sees only its own agreement's views (not another's statements, view definitions
or purposes), and its reads are counted by what it executed, not by what its statement's text says."""

from __future__ import annotations

import psycopg
import pytest

from ndc.sharing.reads import collect
from ndc.warehouse import database
from tests.helpers.database import query
from tests.helpers.deployment import sharing_in

QN_VIEW, VSS_VIEW = "agency_quang_ngai_is.citizens", "agency_social_insurance_is.citizens"


@pytest.fixture(scope="module")
def sharing(published, tmp_path_factory):
    found = sharing_in(published, tmp_path_factory.mktemp("isolation"), "is")
    found.approve()
    found.apply()
    query(found.login("social_insurance_is"), f"select count(*) from {VSS_VIEW}")  # something to be seen
    return found


@pytest.mark.parametrize("statement", [
    "select userid, query, calls from pg_stat_statements",
    "select * from pg_stat_statements_info",
    "select pg_get_viewdef('agency_social_insurance_is.citizens'::regclass)",
    "select definition from pg_views where schemaname = 'agency_social_insurance_is'",
    "select ev_action from pg_rewrite",
    "select * from agency_social_insurance_is.agreements",
    "select * from agency_social_insurance_is.citizens",
    "select * from ndc_meta.applied_agreements",
    "select * from ndc_meta.catalog",
])
def test_an_agency_cannot_look_into_another(sharing, statement):
    with psycopg.connect(sharing.login("quang_ngai_is"), autocommit=True) as conn:
        if "pg_stat_statements" in statement and not conn.execute(
                "select 1 from pg_extension where extname = 'pg_stat_statements'").fetchone():
            pytest.fail("pg_stat_statements is not installed in the warehouse (.ci/run preloads it)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement).fetchall()


def test_view_comments_carry_no_purpose_and_an_agency_reads_its_own(sharing):
    with psycopg.connect(sharing.login("quang_ngai_is"), autocommit=True) as conn:
        comments = conn.execute("select string_agg(coalesce(obj_description(c.oid, 'pg_class'), ''), ' ')"
                                " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
                                " where n.nspname like 'agency%'").fetchone()[0] or ""
        own = conn.execute("select agreement_id, purpose from agency_quang_ngai_is.agreements").fetchall()
    assert "Reconciling" not in comments and "Decree" not in comments
    assert [r[0] for r in own] == ["quang_ngai_residents_is"] and "Quảng Ngãi" in own[0][1]


def _collect(sharing) -> dict:
    with database.connect(sharing.deployment.runtime) as conn:
        return dict(collect(conn).per_view)


def test_reads_are_counted_by_what_ran_not_by_the_statement_text(sharing):
    """Item 9: the old collector matched `agency_x.view` in statement text: a search_path hid reads and a comment
    invented them. The views now count themselves, once per statement, per login."""
    _collect(sharing)  # what was read before
    qn_login, vss_login = sharing.logins["quang_ngai_is"][0], sharing.logins["social_insurance_is"][0]
    with psycopg.connect(sharing.login("quang_ngai_is"), autocommit=True) as conn:
        conn.execute("set search_path = agency_quang_ngai_is")
        for _ in range(3):
            conn.execute("select count(*) from citizens").fetchone()  # no schema in the text
        for _ in range(5):
            conn.execute(f"select 1 /* {QN_VIEW} {VSS_VIEW} */").fetchone()  # names views, reads none
        # The meter cannot be called by hand (no access to its schema), for another agency's view or its own.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select ndc_meta.agency_read('social_insurance_contributors_is', %s)", (VSS_VIEW,))
    counted = _collect(sharing)
    assert counted == {(qn_login, QN_VIEW): 3}, counted
    assert (vss_login, VSS_VIEW) not in counted
    assert _collect(sharing) == {}, "a second collection counts only what was read since"
    ledger = query(sharing.deployment.admin, "select rows_loaded from ndc_meta.ledger where kind = 'reads'"
                   " order by ledger_id desc limit 2")
    assert [r[0] for r in ledger] == [0, 3]


def test_the_runtime_role_cannot_set_the_read_meters(sharing):
    meter = query(sharing.deployment.admin, "select meter_id from ndc_meta.read_meters limit 1")[0][0]
    with psycopg.connect(sharing.deployment.runtime, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"select setval('ndc_meta.read_meter_{meter}', 1000000)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("update ndc_meta.read_meters set counted = 0")
