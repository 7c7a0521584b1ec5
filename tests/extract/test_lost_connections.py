"""A source or warehouse that cannot be reached is named (never a bare driver error), and a run that fails before
it reads anything still leaves its failed ledger row. Real PostgreSQL; the unreachable server is a closed port."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from ndc_lab.cluster import free_port

from ndc.errors import ConfigError, SourceUnavailableError
from ndc.tasks import extract_table
from ndc.warehouse.connections import with_database
from ndc.warehouse.database import drop_database, ensure_database
from tests.helpers.database import query

EVERYTHING = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))


@pytest.fixture
def warehouse_url(pg_server, monkeypatch):
    url = with_database(pg_server, f"ndc_test_lost_{uuid.uuid4().hex[:8]}")
    ensure_database(url)
    monkeypatch.setenv("NDC_WAREHOUSE_URL", url)
    yield url
    drop_database(url)


def _failed_rows(url: str, run_id: str) -> list[str]:
    return [r[1].get("error", "") for r in query(url, "select outcome, details from ndc_meta.ledger where run_id = %s",
                                                 (run_id,)) if r[0] == "failed"]


def test_an_unreachable_source_is_named_without_its_password(warehouse_url, monkeypatch):
    closed = f"postgresql://ndc:s3cret-pw@127.0.0.1:{free_port()}/population"
    monkeypatch.setenv("AIRFLOW_CONN_NDC_SRC_POPULATION", closed)
    with pytest.raises(SourceUnavailableError) as caught:
        extract_table("population", "citizens", *EVERYTHING, run_id="unreachable")
    message = str(caught.value)
    assert "connection to source population" in message and "127.0.0.1" in message
    assert "s3cret-pw" not in message and "***" in message
    [error] = _failed_rows(warehouse_url, "unreachable")
    assert error.startswith("SourceUnavailableError:") and "s3cret-pw" not in error


def test_a_source_without_a_connection_still_writes_its_failed_ledger_row(warehouse_url, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_NDC_SRC_INSURANCE", raising=False)
    with pytest.raises(ConfigError, match="AIRFLOW_CONN_NDC_SRC_INSURANCE"):
        extract_table("insurance", "employers", *EVERYTHING, run_id="no-connection")
    [error] = _failed_rows(warehouse_url, "no-connection")
    assert "AIRFLOW_CONN_NDC_SRC_INSURANCE" in error


def test_an_interrupted_run_is_recorded_as_failed_never_as_a_success(warehouse_url, monkeypatch):
    """Ctrl-C on ``ndc extract`` or a task timeout is a BaseException: the run's ledger row must still say failed."""
    import ndc.tasks

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setenv("AIRFLOW_CONN_NDC_SRC_POPULATION", warehouse_url)  # reachable; the run stops before reading
    monkeypatch.setattr(ndc.tasks, "check_drift", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract_table("population", "citizens", *EVERYTHING, run_id="interrupted")
    [error] = _failed_rows(warehouse_url, "interrupted")
    assert error.startswith("KeyboardInterrupt: the run was interrupted")
    assert not query(warehouse_url, "select 1 from ndc_meta.ledger where run_id = 'interrupted'"
                                    " and outcome <> 'failed'")
