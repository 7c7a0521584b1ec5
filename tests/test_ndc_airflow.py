"""``ndc airflow``: the Airflow UI on the configured warehouse (the embedded one by default), with the login it
prints and the operator's page mounted, behind that login."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import suppress

import pytest

from ndc import cluster, warehouse
from ndc.connections import with_database


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
    port = cluster.free_port()
    env = {**os.environ, "NDC_WAREHOUSE_URL": dbs.warehouse, "NDC_DATA_DIR": str(tmp_path),
           "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(cluster.free_port()),
           "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(cluster.free_port()),
           "AIRFLOW__CORE__PARALLELISM": "2"}
    log = tmp_path / "ndc-airflow.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["ndc", "airflow", "--port", str(port)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, password = time.monotonic() + 240, None
        while time.monotonic() < deadline and proc.poll() is None:
            found = re.search(rf"http://127\.0\.0\.1:{port}  user admin, password (\S+)", log.read_text())
            if found and _get(f"http://127.0.0.1:{port}/api/v2/monitor/health")[0] == 200:
                password = found.group(1)
                break
            time.sleep(1)
        assert password, f"ndc airflow did not come up:\n{log.read_text()[-3000:]}"
        assert f"http://127.0.0.1:{port}/plugin/ndc_operations" in log.read_text()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/auth/token", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"username": "admin", "password": password}).encode())
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            token = json.loads(response.read())["access_token"]
        assert _get(f"http://127.0.0.1:{port}/ndc/api/summary")[0] == 401
        status, body = _get(f"http://127.0.0.1:{port}/ndc/api/summary", token)
        assert status == 200, body[:500]
        summary = json.loads(body)
        assert {s["dataset"] for s in summary["sources"]} >= {"population.citizens", "enterprise.enterprises"}
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        for pid in cluster.session_members(proc.pid):  # standalone's children, in process groups of their own
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
        warehouse.drop_database(with_database(dbs.warehouse, f"{dbs.warehouse.rsplit('/', 1)[1]}_airflow"))
