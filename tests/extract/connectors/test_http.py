"""The HTTP connector against the real simulated insurance API on loopback: transient failures (HTTP 500, 429
with Retry-After, a 200 whose JSON is cut short) are retried with backoff; permanent ones fail at once, naming the
URL and status."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from ndc_lab.simulate import insurance, insurance_api
from ndc_lab.simulate.common import SourceSpec

from ndc.errors import NdcError
from ndc.extract.connectors.http import HttpConnector, RetryPolicy
from ndc.warehouse.connections import with_database
from ndc.warehouse.database import drop_database

TOKEN = "http-connector-test"


@pytest.fixture(scope="module")
def backend(dbs):
    url = with_database(dbs.warehouse, f"ndc_test_http_{dbs.run}")
    spec = SourceSpec(citizens=2_000, seed=4)
    insurance.write(url, insurance.simulate(spec), spec)
    yield url
    drop_database(url)


def _serve(backend: str, **faults):
    server, base = insurance_api.start_in_thread(backend, token=TOKEN, seed=7, **faults)
    return server, base.replace("http://", f"http://:{TOKEN}@") + "/"


def test_server_errors_and_rate_limits_are_retried(backend):
    server, url = _serve(backend, rate_limit=5.0, fault_rate=0.3)
    connector = HttpConnector(url, RetryPolicy(attempts=10, base=0.01, cap=0.5, seed=1))
    try:
        pages = [connector.get("/v1/employers", {"limit": 5}) for _ in range(15)]
    finally:
        connector.close()
        server.shutdown()
        server.server_close()
    assert all(len(page["data"]) == 5 for page in pages)
    assert connector.retries > 0, "with 30 % HTTP 500 and 5 requests/s, some requests must have been retried"


def test_a_source_that_keeps_failing_fails_the_task_by_url(backend):
    server, url = _serve(backend, rate_limit=0, fault_rate=1.0)
    connector = HttpConnector(url, RetryPolicy(attempts=3, base=0.01, cap=0.05, seed=1))
    try:
        with pytest.raises(NdcError,
                           match=r"/v1/employers: still failing after 3 attempts \(HTTP 500 ×3; the last: HTTP 500\)"):
            connector.get("/v1/employers")
    finally:
        connector.close()
        server.shutdown()
        server.server_close()
    assert connector.retries == 2


def test_a_wrong_token_fails_at_once(backend):
    server, url = _serve(backend, rate_limit=0, fault_rate=0.0)
    connector = HttpConnector(url.replace(TOKEN, "wrong"), RetryPolicy(attempts=5, base=0.01, seed=1))
    try:
        with pytest.raises(NdcError, match="HTTP 401"):
            connector.get("/v1/employers")
    finally:
        connector.close()
        server.shutdown()
        server.server_close()
    assert connector.retries == 0


class _Truncating(http.server.BaseHTTPRequestHandler):
    """Answers every GET with HTTP 200 and a JSON page cut in half, ``cut`` times, then the whole page."""

    cut = 0
    served: list[str] = []

    def do_GET(self):
        type(self).served.append(self.path)
        body = json.dumps({"data": [{"employer_id": "DN1", "name": "Công ty Cắt"}], "next_cursor": None}).encode()
        if len(type(self).served) <= type(self).cut:
            body = body[: len(body) // 2]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("cut", [2, 99])
def test_a_truncated_json_page_is_retried_then_named(cut):
    handler = type("Handler", (_Truncating,), {"cut": cut, "served": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    connector = HttpConnector(f"http://:{TOKEN}@127.0.0.1:{server.server_address[1]}/",
                              RetryPolicy(attempts=4, base=0.01, cap=0.05, seed=1))
    try:
        if cut < 4:
            assert connector.get("/v1/employers", {"limit": 5})["data"][0]["name"] == "Công ty Cắt"
            assert connector.retries == cut
        else:
            with pytest.raises(NdcError, match=r"/v1/employers\?limit=5: still failing after 4 attempts \(HTTP 200 "
                                               r"with a truncated or malformed JSON body ×4; the last: HTTP 200 "
                                               r"with a truncated or malformed JSON body \(\d+ bytes"):
                connector.get("/v1/employers", {"limit": 5})
            assert len(handler.served) == 4
    finally:
        connector.close()
        server.shutdown()
        server.server_close()
