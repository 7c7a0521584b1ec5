"""The sharing service as a real server (``ndc service serve`` in its own process, uvicorn on loopback) over the
deployment's warehouse (tests/helpers/deployment.py): the platform as its runtime role, the service as its own
login, two agencies with the repository's agreements plus one that looks enterprises up by code in clear."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from ndc.service import tokens
from ndc.warehouse import database
from tests.helpers.deployment import Deployment, Sharing, environment_of, sharing_in

TAG = "sv"
QN, VSS = f"quang_ngai_{TAG}", f"social_insurance_{TAG}"
QN_AGREEMENT, VSS_AGREEMENT, EMPLOYERS = f"quang_ngai_residents_{TAG}", f"social_insurance_contributors_{TAG}", \
    f"employer_checks_{TAG}"
CONSUMERS = {QN_AGREEMENT: QN, VSS_AGREEMENT: VSS, EMPLOYERS: VSS}
RATE = 40  # requests per second per agency, and the burst, of the server under test

EMPLOYER_AGREEMENT = f"""
id: {EMPLOYERS}
consumer: {VSS}
purpose: >
  Checking that an employer declaring social insurance contributions is a registered enterprise (Law on Social
  Insurance 2024).
purposes: [employer_check]
start: {{start}}
expires: {{expires}}
views:
  - shared: enterprises
    columns: [enterprise_code, current_province_code, status]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    sharing: Sharing
    tokens: dict[str, str]  # login (or portal) -> token
    process: subprocess.Popen
    sent: list[tuple[str, int]] = field(default_factory=list)  # (path, status) of every request the tests made
    # (agency, agreement, keys of the records answered) of every answer with data: the tracker's ground truth
    received: list[tuple[str, str, set[str]]] = field(default_factory=list)

    @property
    def deployment(self) -> Deployment:
        return self.sharing.deployment

    def get(self, path: str, *, token: str | None = None, purpose: str | None = None, **params) -> httpx.Response:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if purpose is not None:
            headers["X-NDC-Purpose"] = purpose
        response = httpx.get(self.url + path, headers=headers, params=params or None, timeout=30)
        self.sent.append((path, response.status_code))
        if response.status_code == 200 and "/agreements/" in path:
            body = response.json()
            records = [body["record"]] if "record" in body else body["rows"]
            keys = {r.get("citizen_id_pseudonym") or r.get("citizen_id") or r.get("enterprise_code") for r in records}
            self.received.append((CONSUMERS[body["agreement"]], body["agreement"], keys))
        return response

    def get_at_once(self, path: str, count: int, *, token: str, purpose: str) -> list[httpx.Response]:
        """``count`` requests sent together (one client, concurrent connections)."""
        async def send() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=count)
            async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=60) as client:
                headers = {"Authorization": f"Bearer {token}", "X-NDC-Purpose": purpose}
                return await asyncio.gather(*(client.get(path, headers=headers) for _ in range(count)))

        responses = asyncio.run(send())
        self.sent += [(path, r.status_code) for r in responses]
        return responses

    def token(self, agency: str) -> str:
        return self.tokens[self.sharing.logins[agency][0]]


def start_server(deployment: Deployment, port: int, extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "NDC_WAREHOUSE_URL": deployment.runtime, "NDC_SERVICE_URL": deployment.service,
           "NDC_LEDGER_ANCHOR_URL": deployment.anchor, "NDC_SERVICE_RATE_PER_SECOND": str(RATE),
           "NDC_SERVICE_RATE_BURST": str(RATE), "NDC_SERVICE_CACHE_SECONDS": "0.2",
           "NDC_SERVICE_BATCH_SECONDS": "0.5", **(extra or {})}
    env.pop("NDC_ADMIN_URL", None)
    # its output to a file (a pipe nobody reads while it runs could fill and stop it)
    output = Path(tempfile.mkstemp(prefix="ndc-service-", suffix=".log")[1])
    with output.open("w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "ndc.cli", "service", "serve", "--port", str(port)],
                                   env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
    process.output = output
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the service exited ({process.returncode}):\n{output.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    pytest.fail("the service did not answer /health within 60 s")


def stop_server(process: subprocess.Popen) -> str:
    """SIGTERM (uvicorn's graceful stop: the request log seals its open batch), then its output."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    output = process.output.read_text()
    process.output.unlink()
    return output


@pytest.fixture(scope="package")
def sharing(built, tmp_path_factory) -> Iterator[Sharing]:
    """One set of agencies, agreements and tokens for the package, its environment pointed at the deployment."""
    with environment_of(built):
        yield _sharing(built, tmp_path_factory)


def _sharing(built: Deployment, tmp_path_factory) -> Sharing:
    found = sharing_in(built, tmp_path_factory.mktemp("service"), TAG)
    today = date.today()  # dated as sharing_in dates the repository's agreements
    (found.agreements_dir / f"{EMPLOYERS}.yml").write_text(EMPLOYER_AGREEMENT.format(
        start=today - timedelta(days=365), expires=today + timedelta(days=365)))
    found.approve()
    found.apply()
    return found


@pytest.fixture(scope="package")
def server(sharing: Sharing) -> Iterator[Server]:
    issued = {}
    with database.connect(sharing.deployment.runtime) as conn:
        for logins in sharing.logins.values():
            for login in logins:
                issued[login] = tokens.issue(conn, login=login)
        issued["portal"] = tokens.issue(conn, login=f"citizen_portal_{TAG}", scope="tracker")
    port = free_port()
    process = start_server(sharing.deployment, port)
    found = Server(f"http://127.0.0.1:{port}", sharing, issued, process)
    try:
        yield found
    finally:
        if process.poll() is None:
            print(stop_server(process)[-5000:])  # shown with a failure
