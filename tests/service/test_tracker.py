"""The citizen's data tracker, checked against ground truth: the answers this package's own requests received."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg

from ndc.service.tracker import track
from ndc.sharing.agreements import deliver
from ndc.warehouse import database
from tests.service.conftest import QN, QN_AGREEMENT, VSS, VSS_AGREEMENT

LOOKUP = "/v1/agreements/{agreement}/views/citizens/records/{key}"


def _digests(server, pin: str) -> dict[str, str]:
    with psycopg.connect(server.deployment.admin, autocommit=True) as conn:
        return dict(conn.execute("select agreement_id, digest from ndc_meta.key_digests(%s)", (pin,)).fetchall())


def _citizens(server) -> tuple[str, str, str]:
    """Three citizens no other test asks for by key: in province 51 (both agencies' views), outside it (social
    insurance's only), and one more outside it."""
    with psycopg.connect(server.deployment.admin, autocommit=True) as conn:
        inside = conn.execute("select citizen_id from shared.citizens where current_province_code = '51'"
                              " order by citizen_id desc limit 1").fetchone()[0]
        outside = [r[0] for r in conn.execute("select citizen_id from shared.citizens where current_province_code"
                                              " <> '51' order by citizen_id desc limit 2")]
    return inside, outside[0], outside[1]


def _expected(server, pin: str) -> set[str]:
    """Every agency an answer of this package's requests gave the citizen's record to."""
    digests = _digests(server, pin)
    return {agency for agency, agreement, keys in server.received if pin in keys or digests.get(agreement) in keys}


def _lookup(server, agency: str, agreement: str, pin: str, purpose: str):
    return server.get(LOOKUP.format(agreement=agreement, key=_digests(server, pin)[agreement]),
                      token=server.token(agency), purpose=purpose)


def test_the_tracker_lists_exactly_the_agencies_that_received_a_record(server):
    inside, outside, untouched = _citizens(server)
    assert _lookup(server, QN, QN_AGREEMENT, inside, "public_services").status_code == 200
    assert _lookup(server, VSS, VSS_AGREEMENT, inside, "contribution_reconciliation").status_code == 200
    assert _lookup(server, VSS, VSS_AGREEMENT, outside, "contribution_reconciliation").status_code == 200
    assert _lookup(server, QN, QN_AGREEMENT, outside, "public_services").status_code == 404  # outside its rows
    assert _lookup(server, VSS, VSS_AGREEMENT, untouched, "public_services").status_code == 403  # wrong purpose
    for pin in (inside, outside, untouched):
        receipts = track(server.deployment.runtime, pin)
        assert {r.agency for r in receipts if r.channel == "service"} == _expected(server, pin), pin
        assert all(r.channel == "service" for r in receipts)  # no delivery since these agreements were applied
    assert {r.agency for r in track(server.deployment.runtime, inside)} == {QN, VSS}
    assert {r.agency for r in track(server.deployment.runtime, outside)} == {VSS}
    assert {r.agency for r in track(server.deployment.runtime, untouched)} == _expected(server, untouched)
    receipt = next(r for r in track(server.deployment.runtime, outside) if r.agency == VSS)
    assert (receipt.agreement, receipt.purpose, receipt.view) == (VSS_AGREEMENT, "contribution_reconciliation",
                                                                   "citizens")
    assert receipt.login == server.sharing.logins[VSS][0]


def test_the_portal_endpoint_and_the_cli_agree_with_the_tracker(server):
    inside, outside, _ = _citizens(server)
    for pin in (inside, outside):
        response = server.get(f"/v1/tracker/{pin}", token=server.tokens["portal"])
        assert response.status_code == 200, response.text
        expected = [r.as_json() for r in track(server.deployment.runtime, pin)]
        assert response.json()["receipts"] == expected
        env = {**os.environ, "NDC_WAREHOUSE_URL": server.deployment.runtime}
        printed = subprocess.run([sys.executable, "-m", "ndc.cli", "tracker", pin, "--json"], env=env,
                                 capture_output=True, text=True, timeout=120, check=True).stdout
        assert json.loads(printed) == expected
    refused = server.get(f"/v1/tracker/{inside}", token=server.token(QN))
    assert refused.status_code == 403 and "receipts" not in refused.json()


def test_a_delivery_is_listed_for_the_citizens_its_views_hold(server):
    inside, outside, _ = _citizens(server)
    with database.connect(server.deployment.runtime) as conn:
        publication = conn.execute("select max(publication_id) from ndc_meta.publications").fetchone()[0]
        conn.commit()
        deliver(conn, publication, run_id="tracker-test")
    delivered = {pin: {(r.agency, r.agreement, r.view) for r in track(server.deployment.runtime, pin)
                       if r.channel == "delivery"} for pin in (inside, outside)}
    assert delivered[inside] == {(QN, QN_AGREEMENT, "citizens"), (VSS, VSS_AGREEMENT, "citizens")}
    assert delivered[outside] == {(VSS, VSS_AGREEMENT, "citizens")}  # Quảng Ngãi's rows do not hold it
