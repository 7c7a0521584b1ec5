"""Item 4: an agency session left inside a transaction neither keeps reading past its agreement nor holds the
platform: expiry is checked at each statement's time, sessions have time limits, and publish and apply wait for
its locks a bounded time, then alert."""

from __future__ import annotations

import time

import psycopg
import pytest

from ndc.errors import NdcError
from ndc.tasks import publish_build
from tests.helpers.database import query, scalar
from tests.helpers.deployment import sharing_in

QN = "quang_ngai_residents_ss"
VIEW = "agency_quang_ngai_ss.citizens"


@pytest.fixture(scope="module")
def sharing(published, tmp_path_factory):
    found = sharing_in(published, tmp_path_factory.mktemp("sessions"), "ss")
    found.approve()
    found.apply()
    return found


def test_agency_logins_have_session_time_limits(sharing):
    settings = query(sharing.deployment.admin, "select unnest(s.setconfig) from pg_db_role_setting s"
                     " join pg_roles r on r.oid = s.setrole where r.rolname = %s",
                     (sharing.logins["quang_ngai_ss"][0],))
    names = {r[0].split("=")[0] for r in settings}
    assert {"statement_timeout", "idle_in_transaction_session_timeout"} <= names, settings


def test_an_open_transaction_does_not_outlive_the_agreement(sharing):
    """The attack: open a repeatable-read transaction before expiry and keep reading after it (now() is the
    transaction's start). The agreement's expiry instant is brought to a few seconds from now, as the clock
    reaching it would."""
    login = sharing.login("quang_ngai_ss")
    with psycopg.connect(sharing.deployment.admin, autocommit=True) as admin:
        admin.execute("update ndc_meta.applied_agreements set expires_at = clock_timestamp() + interval '3 seconds'"
                      " where agreement_id = %s", (QN,))
    try:
        with psycopg.connect(login) as agency:
            agency.execute("begin isolation level repeatable read")
            assert agency.execute(f"select count(*) from {VIEW}").fetchone()[0] > 0
            time.sleep(3.5)
            assert agency.execute(f"select count(*) from {VIEW}").fetchone()[0] == 0, \
                "the open transaction kept reading after the agreement expired"
    finally:
        sharing.apply()  # restores the agreement's validity from its file
    assert query(login, f"select count(*) from {VIEW}")[0][0] > 0


def test_an_idle_transaction_is_ended(sharing, monkeypatch):
    monkeypatch.setenv("NDC_AGENCY_IDLE_IN_TRANSACTION_SECONDS", "1")
    sharing.apply()
    try:
        with psycopg.connect(sharing.login("quang_ngai_ss")) as agency:
            agency.execute(f"select count(*) from {VIEW}").fetchone()
            time.sleep(2.5)
            with pytest.raises(psycopg.Error, match=r"idle-in-transaction timeout|terminat|closed"):
                agency.execute(f"select count(*) from {VIEW}").fetchone()
    finally:
        monkeypatch.delenv("NDC_AGENCY_IDLE_IN_TRANSACTION_SECONDS")
        sharing.apply()


def test_apply_waits_a_bounded_time_and_access_ends_at_once(sharing, monkeypatch):
    """The agency holds its view open while its approval is withdrawn: apply cannot drop the view, gives up after
    its attempts with an alert naming the session — and the session reads nothing from that moment."""
    from ndc.sharing.agreements import withdraw

    monkeypatch.setenv("NDC_LOCK_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("NDC_LOCK_ATTEMPTS", "2")
    login_role = sharing.logins["quang_ngai_ss"][0]
    with psycopg.connect(sharing.login("quang_ngai_ss")) as agency:
        assert agency.execute(f"select count(*) from {VIEW}").fetchone()[0] > 0  # holds the view's lock
        withdraw(sharing.deployment.approver, QN, "the province's request was withdrawn")
        started = time.monotonic()
        with pytest.raises(NdcError, match=f"gave up after 2 attempts.*{login_role}") as failed:
            sharing.apply()
        assert time.monotonic() - started < 20
        assert "access is revoked" in str(failed.value)
        # The open session reads nothing more: its login left the agency's group with the approval.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            agency.execute(f"select count(*) from {VIEW}").fetchone()
    alert = query(sharing.deployment.admin, "select message from ndc_meta.alerts where check_name = 'lock_wait'"
                  " and closed_at is null")
    assert alert and login_role in alert[0][0]
    assert f"{VIEW}" in sharing.apply().revoked  # the session has ended: the next apply drops it
    sharing.approve(QN)
    sharing.apply()


def test_publish_waits_a_bounded_time_then_ends_an_overlong_agency_transaction(sharing, monkeypatch):
    monkeypatch.setenv("NDC_LOCK_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("NDC_LOCK_ATTEMPTS", "2")
    build = scalar(sharing.deployment.admin, "select build_schema from ndc_meta.publications"
                   " order by publication_id desc limit 1")
    publications = "select count(*) from ndc_meta.publications"
    before = scalar(sharing.deployment.admin, publications)
    with psycopg.connect(sharing.login("quang_ngai_ss")) as agency:
        agency.execute(f"select count(*) from {VIEW}").fetchone()
        started = time.monotonic()
        with pytest.raises(NdcError, match="gave up after 2 attempts"):
            publish_build(build, run_id="blocked-publish")
        assert time.monotonic() - started < 30
        assert scalar(sharing.deployment.admin, publications) == before
        # With a transaction limit it has outlived, the agency's transaction is ended and the publish goes on.
        monkeypatch.setenv("NDC_AGENCY_TRANSACTION_SECONDS", "1")
        publish_build(build, run_id="publish-after-limit")
        assert scalar(sharing.deployment.admin, publications) == before + 1
        with pytest.raises(psycopg.OperationalError):
            agency.execute("select 1")
