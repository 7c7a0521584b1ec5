"""Fixtures on the real PostgreSQL: a fresh warehouse database and simulated source per test module.

Tests that need the server fail, not skip, when CI=true and it is unreachable. The server comes from
NDC_TEST_PG_URL (default: the machine's PostgreSQL on loopback).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from ndc_lab.environment import restore, snapshot

from ndc.warehouse.connections import with_database
from ndc.warehouse.database import drop_database, ensure_database
from tests.helpers.database import mysql_connect
from tests.helpers.deployment import built, deployment, published  # noqa: F401  (fixtures of tests/security, service)

SERVER = os.environ.get("NDC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _server_up() -> str | None:
    try:
        with psycopg.connect(SERVER, connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return str(exc).strip()


@pytest.fixture(scope="session")
def pg_server() -> str:
    problem = _server_up()
    if problem:
        message = f"PostgreSQL at {SERVER} is unreachable: {problem}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return SERVER


MYSQL_SERVER = os.environ.get("NDC_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/")


@pytest.fixture(scope="session")
def mariadb_server() -> str:
    """The machine's MariaDB (NDC_TEST_MYSQL_URL); fails, not skips, under CI=true when unreachable."""
    try:
        mysql_connect(MYSQL_SERVER).close()
    except Exception as exc:  # the driver raises several error types for an unreachable server
        message = f"MariaDB at {MYSQL_SERVER} is unreachable: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return MYSQL_SERVER


@dataclass
class Databases:
    warehouse: str
    source: str
    run: str


@pytest.fixture(scope="module")
def dbs(pg_server: str) -> Iterator[Databases]:
    """A warehouse database and a population source database, named for this run, dropped afterwards."""
    run = uuid.uuid4().hex[:8]
    found = Databases(warehouse=with_database(pg_server, f"ndc_test_{run}"),
                      source=with_database(pg_server, f"ndc_test_src_{run}"), run=run)
    ensure_database(found.warehouse)
    saved = snapshot(("NDC_WAREHOUSE_URL", "AIRFLOW_CONN_NDC_SRC_POPULATION"))
    os.environ["NDC_WAREHOUSE_URL"] = found.warehouse
    os.environ["AIRFLOW_CONN_NDC_SRC_POPULATION"] = found.source
    try:
        yield found
    finally:
        restore(saved)
        drop_database(found.warehouse)
        drop_database(found.source)
