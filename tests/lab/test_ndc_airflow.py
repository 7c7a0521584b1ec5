"""``ndc airflow``: the Airflow UI on the configured warehouse (the embedded one by default), with the login it
prints and the operator's page mounted, behind that login."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest

from ndc.warehouse import database
from ndc.warehouse.connections import with_database
from tests.helpers.browser import ndc_airflow


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http://127.0.0.1 only
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError:  # not listening yet
        return 0, b""


@pytest.mark.airflow
@pytest.mark.slow
def test_ndc_airflow_prints_a_working_login_and_serves_the_operators_page(dbs, tmp_path):
    env = {**os.environ, "NDC_WAREHOUSE_URL": dbs.warehouse, "NDC_DATA_DIR": str(tmp_path)}
    log = tmp_path / "ndc-airflow.log"
    try:
        with ndc_airflow(env, log) as (base, password):
            _serves_the_page(base, password, log.read_text())
    finally:
        database.drop_database(with_database(dbs.warehouse, f"{dbs.warehouse.rsplit('/', 1)[1]}_airflow"))


def _serves_the_page(base: str, password: str, said: str) -> None:
    assert f"{base}/plugin/ndc_operations" in said
    login = json.dumps({"username": "admin", "password": password}).encode()
    request = urllib.request.Request(f"{base}/auth/token", method="POST", data=login,  # noqa: S310 - loopback
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        token = json.loads(response.read())["access_token"]
    assert _get(f"{base}/ndc/api/summary")[0] == 401
    status, body = _get(f"{base}/ndc/api/summary", token)
    assert status == 200, body[:500]
    summary = json.loads(body)
    assert {s["dataset"] for s in summary["sources"]} >= {"population.citizens", "enterprise.enterprises"}
