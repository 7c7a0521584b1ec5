"""The enterprise simulator: deterministic, every injected defect meets its expected outcome at gate 1, and the
source is written to a real MariaDB and to the PostgreSQL fallback.

MariaDB comes from NDC_TEST_MYSQL_URL (default: root on 127.0.0.1:3306); tests that need it fail, not skip, when
CI=true and it is unreachable.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import polars as pl
import pytest
from ndc_lab.simulate import enterprise
from ndc_lab.simulate.common import SourceSpec, population_citizens

from ndc.contracts import get_contract
from ndc.contracts.validation import validate
from ndc.warehouse.connections import with_database
from ndc.warehouse.database import drop_database
from tests.helpers.database import query, scalar

TABLES = ["enterprises", "branches", "legal_representatives", "status_history"]
KEY = {
    "enterprises": pl.col("enterprise_code"),
    "branches": pl.col("branch_code"),
    "legal_representatives": pl.concat_str("enterprise_code", "pin", separator="|"),
    "status_history": pl.col("event_id").cast(pl.String),
}


def _mysql(url: str):
    import mysql.connector

    parts = urlsplit(url)
    return mysql.connector.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
                                   password=parts.password or "", use_pure=True, charset="utf8mb4",
                                   collation="utf8mb4_unicode_ci", connection_timeout=3)


@pytest.fixture(scope="module")
def spec() -> SourceSpec:
    return SourceSpec(citizens=50_000, seed=5, defect_rate=0.005)


@pytest.fixture(scope="module")
def simulated(spec):
    return enterprise.simulate(spec)


def _frames_equal(a, b) -> bool:
    return all(a.tables[t].equals(b.tables[t]) for t in TABLES) and a.manifest.equals(b.manifest) and all(
        a.crosswalks[c].equals(b.crosswalks[c]) for c in a.crosswalks)


def test_deterministic_per_seed():
    spec = SourceSpec(citizens=5_000, seed=3, defect_rate=0.01)
    first, second = enterprise.simulate(spec), enterprise.simulate(spec)
    assert _frames_equal(first, second)
    other = enterprise.simulate(SourceSpec(citizens=5_000, seed=4, defect_rate=0.01))
    assert not first.tables["enterprises"].equals(other.tables["enterprises"])
    assert enterprise.describe(first).endswith("status events")


@pytest.mark.parametrize("table", TABLES)
def test_gate_outcomes_match_manifest(simulated, table):
    frame = simulated.tables[table]
    contract = get_contract(f"enterprise.{table}")
    result = validate(frame.select(list(contract.columns)), contract)
    manifest = simulated.manifest.filter(pl.col("table_name") == table)
    expected = dict(manifest.filter(pl.col("expected_outcome") == "quarantined")
                    .select("record_key", "expected_check").iter_rows())
    rejected = {key: checks for key, checks in result.rejected.select(KEY[table].alias("k"), "_checks").iter_rows()}
    assert expected and rejected.keys() == expected.keys()
    assert all(expected[key] in checks for key, checks in rejected.items())
    assert result.repaired == manifest.filter(pl.col("expected_outcome") == "repaired").height
    exceptions = manifest.filter(pl.col("expected_outcome") == "exception")["record_key"]
    passed_keys = set(result.passed.select(KEY[table]).to_series().to_list())
    assert set(exceptions.to_list()) <= passed_keys


def test_defects_and_relations(simulated, spec):
    kinds = simulated.manifest.group_by("table_name", "kind").len()
    assert kinds.height == 16 and kinds["len"].min() >= 1
    enterprises = simulated.tables["enterprises"]
    duplicates = simulated.manifest.filter(pl.col("expected_outcome") == "superseded")
    versions = enterprises.filter(pl.col("enterprise_code").is_in(duplicates["record_key"].implode()))
    assert versions.height == 2 * duplicates.height
    winners = versions.group_by("enterprise_code").agg(pl.col("updated_at").max(), pl.col("updated_at").min()
                                                       .alias("older"))
    assert winners.filter(pl.col("older").dt.date() != pl.col("updated_at").dt.date()).is_empty()
    # every orphan is well formed but absent; every other reference resolves
    codes = set(enterprises["enterprise_code"].to_list())
    orphans = simulated.manifest.filter(pl.col("kind") == "orphan_enterprise")["record_key"].to_list()
    branches = simulated.tables["branches"]
    assert set(branches.filter(~pl.col("enterprise_code").is_in(list(codes)))["branch_code"].to_list()) == set(orphans)
    pins = set(population_citizens(spec)["pin"].to_list())
    reps = simulated.tables["legal_representatives"]
    unknown = reps.filter(~pl.col("pin").is_in(list(pins))).select(KEY["legal_representatives"]).to_series()
    flawed = simulated.manifest.filter(pl.col("kind").is_in(["orphan_pin", "pin_format"]))["record_key"]
    assert set(unknown.to_list()) == set(flawed.to_list())
    tombstones = branches["deleted_at"].is_not_null().sum()
    assert tombstones == round(enterprise.TOMBSTONE_SHARE * branches.height)


@pytest.fixture
def mysql_database(mariadb_server) -> Iterator[str]:
    url = with_database(mariadb_server, f"ndc_test_enterprise_{uuid.uuid4().hex[:8]}")
    try:
        yield url
    finally:
        conn = _mysql(mariadb_server)
        conn.cursor().execute(f"drop database if exists `{urlsplit(url).path.lstrip('/')}`")
        conn.close()


def _read_mysql(url: str, table: str, like: pl.DataFrame) -> pl.DataFrame:
    """A MySQL table as a frame typed like the simulated one (DATETIME read back as UTC)."""
    conn = _mysql(url)
    try:
        cursor = conn.cursor()
        cursor.execute(f"use `{urlsplit(url).path.lstrip('/')}`")
        cursor.execute(f"select {', '.join(like.columns)} from {table}")
        rows = cursor.fetchall()
    finally:
        conn.close()
    naive = {c: pl.Datetime("us") if isinstance(t, pl.Datetime) else t for c, t in like.schema.items()}
    frame = pl.DataFrame(rows, schema=naive, orient="row")
    return frame.with_columns(pl.col(c).dt.replace_time_zone("UTC") for c, t in like.schema.items()
                              if isinstance(t, pl.Datetime))


def _same_rows(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    return a.sort(a.columns, nulls_last=True).equals(b.sort(b.columns, nulls_last=True))


def test_write_mariadb(simulated, spec, mysql_database, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_NDC_SRC_ENTERPRISE", mysql_database)
    target = enterprise.default_target()
    assert target.startswith("mysql://")
    enterprise.write(target, simulated, spec)
    enterprise.write(target, simulated, spec)  # rewriting recreates, never appends
    for table in TABLES:  # every value round-trips: NFD text, blank names, NULL tombstones, microseconds
        assert _same_rows(_read_mysql(mysql_database, table, simulated.tables[table]), simulated.tables[table])
    assert _same_rows(_read_mysql(mysql_database, "simulator_defect_manifest", simulated.manifest),
                      simulated.manifest)
    crosswalk = simulated.crosswalks["representative_pins"]
    assert _same_rows(_read_mysql(mysql_database, "simulator_representative_pins", crosswalk), crosswalk)
    conn = _mysql(mysql_database)
    try:
        cursor = conn.cursor()
        cursor.execute("select count(*) from information_schema.statistics where table_schema = %s "
                       "and column_name = 'updated_at'", (urlsplit(mysql_database).path.lstrip("/"),))
        assert cursor.fetchone()[0] == len(TABLES)
    finally:
        conn.close()


def test_write_mariadb_without_local_infile(mysql_database, monkeypatch):
    """A server that refuses LOAD DATA LOCAL gets multi-row INSERTs instead, with the same content."""
    import mysql.connector

    def refuse(self, table, frame):
        raise mysql.connector.errors.DatabaseError(msg="Loading local data is disabled", errno=3948)

    monkeypatch.setattr(enterprise._MysqlLoader, "_load_file", refuse)
    monkeypatch.setattr(enterprise, "BATCH_ROWS", 70)
    spec = SourceSpec(citizens=2_000, seed=11, defect_rate=0.01)
    sim = enterprise.simulate(spec)
    enterprise.write(mysql_database, sim, spec)
    for table in TABLES:
        assert _same_rows(_read_mysql(mysql_database, table, sim.tables[table]), sim.tables[table])
    assert _read_mysql(mysql_database, "simulator_defect_manifest", sim.manifest).height == sim.manifest.height


def test_write_postgresql(simulated, spec, pg_server, monkeypatch):
    url = with_database(pg_server, f"ndc_test_enterprise_{uuid.uuid4().hex[:8]}")
    monkeypatch.delenv("AIRFLOW_CONN_NDC_SRC_ENTERPRISE", raising=False)
    assert enterprise.default_target().startswith("postgresql://")
    try:
        enterprise.write(url, simulated, spec)
        counts = {t: scalar(url, f"select count(*) from {t}") for t in TABLES}
        assert counts == {t: simulated.tables[t].height for t in TABLES}
        assert scalar(url, "select count(*) from simulator.defect_manifest") == simulated.manifest.height
        assert scalar(url, "select count(*) from simulator.representative_pins") == \
            simulated.crosswalks["representative_pins"].height
        nfd = simulated.manifest.filter((pl.col("table_name") == "enterprises") & (pl.col("kind") == "nfd_text"))
        stored = query(url, "select name from enterprises where enterprise_code = %s",
                       (nfd["record_key"][0],))[0][0]
        assert stored == simulated.tables["enterprises"].filter(
            pl.col("enterprise_code") == nfd["record_key"][0])["name"][0]
    finally:
        drop_database(url)
