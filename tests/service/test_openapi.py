"""A property-based test over the service's OpenAPI description (schemathesis): whatever the generated request,
no answer is a server error. Each generated case is sent twice: as generated, and against a real agreement and
view with a purpose it allows (so keys, cursors and limits reach the database)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.service.conftest import QN, QN_AGREEMENT, free_port, start_server, stop_server


@pytest.fixture(scope="module")
def unlimited(server) -> Iterator[str]:
    """A second server of the same deployment without a practical rate limit (429s would hide the rest)."""
    port = free_port()
    process = start_server(server.deployment, port, {"NDC_SERVICE_RATE_PER_SECOND": "100000",
                                                    "NDC_SERVICE_RATE_BURST": "100000"})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(process)


def test_no_request_gets_a_server_error(server, unlimited):
    schema = schemathesis.openapi.from_url(f"{unlimited}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {o.path for o in operations} == {"/v1/agreements/{agreement_id}/views/{view}/records/{key}",
                                            "/v1/agreements/{agreement_id}/views/{view}/records",
                                            "/v1/tracker/{pin}"}
    for operation in operations:
        _fuzz(operation, server.tokens["portal"] if "tracker" in operation.path else server.token(QN), unlimited)


def _fuzz(operation, token: str, base_url: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy())
    def no_server_error(case) -> None:
        response = case.call(base_url=base_url, headers={**(case.headers or {}), **headers})
        assert response.status_code < 500, (case.path, case.path_parameters, case.query, response.text)
        if "agreement_id" in (case.path_parameters or {}):
            case.path_parameters = {**case.path_parameters, "agreement_id": QN_AGREEMENT, "view": "citizens"}
            response = case.call(base_url=base_url, headers={**(case.headers or {}), **headers,
                                                             "X-NDC-Purpose": "population_management"})
            assert response.status_code < 500, (case.path, case.path_parameters, case.query, response.text)

    no_server_error()
