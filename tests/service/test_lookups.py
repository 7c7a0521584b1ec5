"""Lookups and pages over real HTTP: the service answers exactly what the agency's own view answers."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.service.conftest import EMPLOYERS, QN, QN_AGREEMENT, VSS


def _view_rows(server, agency: str, statement: str, params: tuple = ()) -> list[dict]:
    with psycopg.connect(server.sharing.login(agency), autocommit=True) as conn:
        return [json.loads(r[0]) for r in conn.execute(statement, params)]


@pytest.mark.parametrize(("agency", "agreement", "view", "key", "purpose"), [
    (QN, QN_AGREEMENT, "citizens", "citizen_id_pseudonym", "public_services"),  # by the agreement's pseudonym
    (VSS, EMPLOYERS, "enterprises", "enterprise_code", "employer_check"),  # by a key in clear
])
def test_a_lookup_returns_what_the_agency_view_returns(server, agency, agreement, view, key, purpose):
    rows = _view_rows(server, agency, f"select row_to_json(v)::text from agency_{agency}.{view} v"
                                      f" order by {key} desc limit 4")
    with psycopg.connect(server.deployment.admin, autocommit=True) as conn:
        publication = conn.execute("select max(publication_id) from ndc_meta.publications").fetchone()[0]
        contract = conn.execute("select contract_version from ndc_meta.catalog where relation = %s",
                                (view,)).fetchone()[0]
    assert len(rows) == 4
    for row in rows:
        response = server.get(f"/v1/agreements/{agreement}/views/{view}/records/{row[key]}",
                              token=server.token(agency), purpose=purpose)
        assert response.status_code == 200, response.text
        assert response.json() == {"agreement": agreement, "view": view, "publication_id": publication,
                                   "contract_version": contract, "record": row}


@pytest.mark.parametrize(("agency", "agreement", "view", "order", "purpose"), [
    (QN, QN_AGREEMENT, "citizens", "citizen_id_pseudonym", "population_management"),
    (QN, QN_AGREEMENT, "province_statistics", "current_province_code, month", "population_management"),
])
def test_pages_return_the_agency_view_in_key_order(server, agency, agreement, view, order, purpose):
    expected = _view_rows(server, agency, f"select row_to_json(v)::text from agency_{agency}.{view} v order by {order}")
    assert len(expected) > 7
    got, after, pages = [], None, 0
    while True:
        params = {"limit": 7, **({"after": after} if after else {})}
        response = server.get(f"/v1/agreements/{agreement}/views/{view}/records", token=server.token(agency),
                              purpose=purpose, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        got += body["rows"]
        pages += 1
        after = body["next"]
        if after is None:
            break
    assert got == expected
    assert pages == len(expected) // 7 + 1


def test_a_cursor_the_service_did_not_give_is_refused(server):
    response = server.get(f"/v1/agreements/{QN_AGREEMENT}/views/citizens/records", token=server.token(QN),
                          purpose="population_management", after="bm90IGEgY3Vyc29y")
    assert response.status_code == 400 and "cursor" in response.json()["error"]
    assert "rows" not in response.json()
