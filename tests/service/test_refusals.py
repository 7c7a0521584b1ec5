"""Every refusal over real HTTP: the right status, the reason, and no data."""

from __future__ import annotations

import secrets
import time

import psycopg
import pytest

from ndc.service import tokens
from ndc.sharing.agreements import withdraw
from ndc.warehouse import database
from tests.service.conftest import EMPLOYERS, QN, QN_AGREEMENT, RATE, VSS, VSS_AGREEMENT

LOOKUP = "/v1/agreements/{agreement}/views/{view}/records/{key}"


def _digest(server, pin: str, agreement: str) -> str:
    with psycopg.connect(server.deployment.admin, autocommit=True) as conn:
        return conn.execute("select digest from ndc_meta.key_digests(%s) where agreement_id = %s",
                            (pin, agreement)).fetchone()[0]


def _citizen(server, *, in_province_51: bool) -> str:
    with psycopg.connect(server.deployment.admin, autocommit=True) as conn:
        return conn.execute("select citizen_id from shared.citizens where (current_province_code = '51') = %s"
                            " order by citizen_id limit 1", (in_province_51,)).fetchone()[0]


def _no_data(response) -> None:
    body = response.json()
    assert set(body) == {"status", "error"}, body
    assert body["status"] == response.status_code


def _lookup(server, pin: str, *, token: str | None, purpose: str | None = "public_services",
            agreement: str = QN_AGREEMENT):
    return server.get(LOOKUP.format(agreement=agreement, view="citizens", key=_digest(server, pin, agreement)),
                      token=token, purpose=purpose)


def test_a_key_outside_the_row_filter_is_not_found(server):
    inside, outside = _citizen(server, in_province_51=True), _citizen(server, in_province_51=False)
    assert _lookup(server, inside, token=server.token(QN)).status_code == 200
    response = _lookup(server, outside, token=server.token(QN))
    assert response.status_code == 404
    _no_data(response)


@pytest.mark.parametrize("authorization", [None, "forged", "wrong secret", "malformed", "revoked"])
def test_a_missing_forged_or_revoked_token_is_unauthorised(server, authorization):
    real = server.token(QN)
    token = {None: None, "forged": f"ndc_{secrets.token_hex(8)}.{secrets.token_urlsafe(32)}",
             "wrong secret": real.split(".")[0] + "." + secrets.token_urlsafe(32), "malformed": "not-a-token"
             }.get(authorization, real)
    if authorization == "revoked":
        with database.connect(server.deployment.runtime) as conn:
            token = tokens.issue(conn, login=server.sharing.logins[QN][1])
            first = _lookup(server, _citizen(server, in_province_51=True), token=token)
            assert first.status_code == 200, first.text
            tokens.revoke(conn, tokens.parse(token)[0], "test")
        time.sleep(0.5)  # the service's token cache (NDC_SERVICE_CACHE_SECONDS = 0.2 here)
    response = _lookup(server, _citizen(server, in_province_51=True), token=token)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    _no_data(response)


def test_a_wrong_or_missing_purpose_is_refused(server):
    pin = _citizen(server, in_province_51=True)
    wrong = _lookup(server, pin, token=server.token(QN), purpose="contribution_reconciliation")
    assert wrong.status_code == 403 and "purpose" in wrong.json()["error"]
    _no_data(wrong)
    missing = _lookup(server, pin, token=server.token(QN), purpose=None)
    assert missing.status_code == 400
    _no_data(missing)


def test_another_agencys_agreement_and_view_and_the_portal_token_are_refused(server):
    pin = _citizen(server, in_province_51=True)
    other = _lookup(server, pin, token=server.token(QN), agreement=VSS_AGREEMENT, purpose="contribution_reconciliation")
    assert other.status_code == 403
    _no_data(other)
    unshared = server.get(LOOKUP.format(agreement=QN_AGREEMENT, view="enterprises", key="0100000001"),
                          token=server.token(QN), purpose="public_services")
    assert unshared.status_code == 404
    _no_data(unshared)
    portal = _lookup(server, pin, token=server.tokens["portal"])
    assert portal.status_code == 403
    _no_data(portal)
    in_clear = server.get(LOOKUP.format(agreement=QN_AGREEMENT, view="citizens", key=pin), token=server.token(QN),
                          purpose="public_services")
    assert in_clear.status_code == 400 and "pseudonym" in in_clear.json()["error"]


def test_an_expired_agreement_answers_nothing(server):
    pin = _citizen(server, in_province_51=True)
    with psycopg.connect(server.deployment.admin, autocommit=True) as conn:
        before = conn.execute("select expires_at from ndc_meta.applied_agreements where agreement_id = %s",
                              (QN_AGREEMENT,)).fetchone()[0]
        conn.execute("update ndc_meta.applied_agreements set expires_at = now() - interval '1 second'"
                     " where agreement_id = %s", (QN_AGREEMENT,))
        try:
            response = _lookup(server, pin, token=server.token(QN))
        finally:
            conn.execute("update ndc_meta.applied_agreements set expires_at = %s where agreement_id = %s",
                         (before, QN_AGREEMENT))
    assert response.status_code == 403 and "not in force" in response.json()["error"]
    _no_data(response)
    assert _lookup(server, pin, token=server.token(QN)).status_code == 200


def test_a_withdrawn_agreement_answers_nothing(server):
    code = _enterprise(server)
    path = LOOKUP.format(agreement=EMPLOYERS, view="enterprises", key=code)
    assert server.get(path, token=server.token(VSS), purpose="employer_check").status_code == 200
    withdraw(server.deployment.approver, EMPLOYERS, "test: the agreement ends")
    server.sharing.apply()
    time.sleep(0.5)
    try:
        response = server.get(path, token=server.token(VSS), purpose="employer_check")
        assert response.status_code == 403
        _no_data(response)
    finally:
        server.sharing.approve(EMPLOYERS)
        server.sharing.apply()
    time.sleep(0.5)
    assert server.get(path, token=server.token(VSS), purpose="employer_check").status_code == 200


def _enterprise(server) -> str:
    with psycopg.connect(server.deployment.admin, autocommit=True) as conn:
        return conn.execute("select enterprise_code from shared.enterprises order by 1 limit 1").fetchone()[0]


def test_an_agency_over_its_rate_is_refused_until_it_slows_down(server):
    time.sleep(1.5)  # the bucket full again after the other tests
    path = LOOKUP.format(agreement=EMPLOYERS, view="enterprises", key=_enterprise(server))
    started = time.monotonic()
    responses = server.get_at_once(path, 4 * RATE, token=server.token(VSS), purpose="employer_check")
    elapsed = time.monotonic() - started
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 429}, statuses
    assert RATE <= statuses.count(200) <= RATE + RATE * elapsed + 1  # the burst, plus what refilled meanwhile
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            _no_data(response)
    other = _lookup(server, _citizen(server, in_province_51=True), token=server.token(QN))
    assert other.status_code == 200  # the limit is per agency
    time.sleep(1.5)
    assert server.get(path, token=server.token(VSS), purpose="employer_check").status_code == 200


def test_a_token_written_behind_the_ledgers_back_is_refused(server):
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    row = ("insert into ndc_meta.service_tokens (token_id, scope, login, agency, secret_sha256) values"
           " (%s, 'agency', %s, %s, %s)")
    values = (token_id, server.sharing.logins[QN][0], QN, tokens.secret_sha256(secret))
    with psycopg.connect(server.deployment.runtime, autocommit=True) as conn, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(row, values)  # the platform's role only reads the tokens
    with psycopg.connect(server.deployment.admin, autocommit=True) as conn:
        conn.execute(row, values)  # the owner can, but the ledger does not record it
    response = _lookup(server, _citizen(server, in_province_51=True), token=f"ndc_{token_id}.{secret}")
    assert response.status_code == 401
    _no_data(response)
