"""The five simulated national databases loaded end to end into one warehouse (the tests and ``ndc bench
conform``): simulate -> source engine -> extract -> landing. Population and taxation on PostgreSQL, the enterprise
register on MariaDB (PostgreSQL when no MariaDB is given), social insurance through its REST API served on
loopback, education as file drops."""

from __future__ import annotations

import importlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ndc.config.sources import load_sources
from ndc.settings import get_settings
from ndc.tasks import extract_table
from ndc.warehouse.connections import with_database
from ndc.warehouse.database import drop_database
from ndc_lab.environment import restore, snapshot
from ndc_lab.simulate import insurance_api
from ndc_lab.simulate.common import SourceSpec

SOURCES = ("population", "taxation", "enterprise", "insurance", "education")
EVERYTHING = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))


def _drop_mysql_database(url: str) -> None:
    from urllib.parse import unquote, urlsplit

    import mysql.connector

    parts = urlsplit(url)
    conn = mysql.connector.connect(host=parts.hostname, port=parts.port or 3306, user=unquote(parts.username or "root"),
                                   password=unquote(parts.password or ""))
    try:
        conn.cursor().execute(f"drop database if exists `{parts.path.lstrip('/')}`")
    finally:
        conn.close()


@dataclass
class FiveSources:
    sims: dict[str, object]   # the simulations: tables, defect manifests, ground-truth crosswalks
    urls: dict[str, str]      # each source's own database (or drop folder)


@contextmanager
def five_sources(warehouse_url: str, spec: SourceSpec, *, run: str, drops: Path,
                 mariadb_url: str | None = None) -> Iterator[FiveSources]:
    """Simulate, write and extract every table of the five sources (full history) into the warehouse named by
    NDC_WAREHOUSE_URL. Source databases are dropped afterwards."""
    urls = {name: with_database(warehouse_url, f"ndc_t5_{name}_{run}") for name in ("population", "taxation",
                                                                                    "insurance", "enterprise")}
    if mariadb_url:
        urls["enterprise"] = with_database(mariadb_url, f"ndc_t5_ent_{run}")
    urls["education"] = drops.as_uri()
    saved = snapshot(f"AIRFLOW_CONN_NDC_SRC_{name.upper()}" for name in SOURCES)
    sims: dict[str, object] = {}
    server = None
    try:
        for name in SOURCES:
            module = importlib.import_module(f"ndc_lab.simulate.{name}")
            sims[name] = sim = module.simulate(spec)
            module.write(urls[name], sim, spec)
            os.environ[f"AIRFLOW_CONN_NDC_SRC_{name.upper()}"] = urls[name]
        token = secrets.token_urlsafe(12)
        server, base = insurance_api.start_in_thread(urls["insurance"], token=token)
        os.environ["AIRFLOW_CONN_NDC_SRC_INSURANCE"] = base.replace("http://", f"http://:{token}@") + "/"
        for source in load_sources(get_settings().sources_dir):
            for table in source.tables:
                extract_table(source, table.name, *EVERYTHING, run_id=f"five-{source.name}")
        yield FiveSources(sims, urls)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        restore(saved)
        for name in ("population", "taxation", "insurance"):
            drop_database(urls[name])
        if urls["enterprise"].startswith("mysql"):
            _drop_mysql_database(urls["enterprise"])
        else:
            drop_database(urls["enterprise"])

