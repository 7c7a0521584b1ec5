"""Taxation (PostgreSQL), enterprise (real MariaDB) and insurance (the simulated REST API on loopback), end to
end through their connectors, the gate and the loader:

- every injected defect has its expected outcome and no clean row is quarantined;
- a second run of the same interval loads nothing new;
- updates, inserts, tombstones and hard deletes in a later interval land exactly as changes (hard deletes are
  found by the full compare, which refuses a source that looks emptied);
- schema drift: a new column is recorded and the load continues; a renamed column blocks it, by name.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
import psycopg
import pytest
from ndc_lab.simulate import enterprise, insurance, insurance_api, taxation
from ndc_lab.simulate.common import SourceSpec

from ndc.config.sources import find_source
from ndc.errors import NdcError, SchemaDriftError
from ndc.landing.full_compare import compare_table
from ndc.settings import get_settings
from ndc.tasks import extract_table
from ndc.warehouse.connections import with_database
from ndc.warehouse.database import drop_database
from tests.helpers.acceptance import assert_matches_manifest, record_keys
from tests.helpers.database import mysql_connect, query, scalar

EVERYTHING = (datetime(2024, 7, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
LATER = (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC))
CHANGED_AT = "2026-01-05 12:00:00"
SPEC = SourceSpec(citizens=20_000, seed=9, defect_rate=0.002)
TOKEN = "test-token-" + uuid.uuid4().hex[:8]


@dataclass
class Plan:
    """How one source is set up and changed in these tests."""

    module: object
    table: str             # the table that gets changed
    key: str
    change_column: str     # a text or numeric column updated in place
    tombstone: bool
    hard_delete: bool


PLANS = {
    "taxation": Plan(taxation, "filings", "filing_id", "declared_amount", tombstone=False, hard_delete=True),
    "enterprise": Plan(enterprise, "branches", "branch_code", "name", tombstone=True, hard_delete=True),
    "insurance": Plan(insurance, "contributions", "contribution_id", "amount", tombstone=True, hard_delete=False),
}


class SourceDb:
    """SQL on the source's own engine (the insurance API's backend is PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.mysql = url.startswith("mysql")

    def run(self, statement: str) -> list[tuple]:
        if self.mysql:
            conn = mysql_connect(self.url)
            try:
                cursor = conn.cursor()
                cursor.execute("set time_zone = '+00:00'")
                cursor.execute(statement)
                return cursor.fetchall() if cursor.with_rows else []
            finally:
                conn.close()
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("set timezone = 'UTC'")
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []


@pytest.fixture(scope="module", params=list(PLANS))
def loaded(request, dbs) -> Iterator[tuple[str, SourceDb, object]]:
    name = request.param
    plan = PLANS[name]
    env_key = f"AIRFLOW_CONN_NDC_SRC_{name.upper()}"
    server = None
    if name == "enterprise":
        mariadb = request.getfixturevalue("mariadb_server")
        url = with_database(mariadb, f"ndc_test_ent_{dbs.run}")
        os.environ[env_key] = url
    elif name == "insurance":
        url = with_database(dbs.warehouse, f"ndc_test_ins_{dbs.run}")
    else:
        url = with_database(dbs.warehouse, f"ndc_test_tax_{dbs.run}")
        os.environ[env_key] = url
    sim = plan.module.simulate(SPEC)
    plan.module.write(url, sim, SPEC)
    if name == "insurance":
        # Rate-limited and failing now and then, as the real API does: the connector must retry through it.
        server, base = insurance_api.start_in_thread(url, token=TOKEN, rate_limit=20.0, fault_rate=0.05, seed=3)
        os.environ[env_key] = base.replace("http://", f"http://:{TOKEN}@") + "/"
    source = find_source(get_settings().sources_dir, name)
    for table in source.tables:
        extract_table(source, table.name, *EVERYTHING, run_id=f"{name}-first")
    try:
        yield name, SourceDb(url), sim
    finally:
        os.environ.pop(env_key, None)
        if server is not None:
            server.shutdown()
            server.server_close()
        if name == "enterprise":
            SourceDb(with_database(url, "")).run(f"drop database if exists ndc_test_ent_{dbs.run}")
        else:
            drop_database(url)


def test_every_defect_has_its_expected_outcome(dbs, loaded):
    name, _, sim = loaded
    source = find_source(get_settings().sources_dir, name)
    print(name, assert_matches_manifest(dbs.warehouse, source, sim.tables, sim.manifest))


def test_rerunning_the_interval_loads_nothing_new(dbs, loaded):
    name, _, _ = loaded
    source = find_source(get_settings().sources_dir, name)
    before = scalar(dbs.warehouse, "select count(*) from quarantine.rows")
    for table in source.tables:
        result = extract_table(source, table.name, *EVERYTHING, run_id=f"{name}-again")
        assert result.rows_new_versions == 0, table.name
        assert result.rows_in > 0, table.name
    assert scalar(dbs.warehouse, "select count(*) from quarantine.rows") == before


def _clean_keys(sim, plan: Plan, n: int) -> list[str]:
    # Rows already carrying post-reorganisation province codes, so moving their updated_at to 2026 keeps
    # them valid (an older row re-sent in 2026 with a retired code is quarantined, rightly).
    frame = sim.tables[plan.table].filter(pl.col("updated_at") >= datetime(2025, 7, 2, tzinfo=UTC))
    flawed = set(sim.manifest.filter(pl.col("table_name") == plan.table)["record_key"].to_list())
    keys = sorted(record_keys(frame, [plan.key]) - flawed)
    return keys[:n]


def _quoted(keys: list[str]) -> str:
    return ", ".join(f"'{k}'" for k in keys)


def test_changes_land_exactly(dbs, loaded):
    name, src, sim = loaded
    plan = PLANS[name]
    source = find_source(get_settings().sources_dir, name)
    keys = _clean_keys(sim, plan, 9)
    updated, tombstoned, deleted, copied = keys[:3], keys[3:5], keys[5:6], keys[6:8]
    value = "concat(name, ' (đổi)')" if plan.change_column == "name" else f"{plan.change_column} + 1"
    src.run(f"update {plan.table} set {plan.change_column} = {value}, updated_at = '{CHANGED_AT}'"
            f" where {plan.key} in ({_quoted(updated)})")
    if plan.tombstone:
        src.run(f"update {plan.table} set deleted_at = '{CHANGED_AT}', updated_at = '{CHANGED_AT}'"
                f" where {plan.key} in ({_quoted(tombstoned)})")
    new_keys = _insert_copies(src, plan, copied)
    if plan.hard_delete:
        src.run(f"delete from {plan.table} where {plan.key} in ({_quoted(deleted)})")
    result = extract_table(source, plan.table, *LATER, run_id=f"{name}-changes")
    expected_versions = len(updated) + len(new_keys) + (len(tombstoned) if plan.tombstone else 0)
    assert result.rows_in == expected_versions and result.rows_new_versions == expected_versions
    assert result.rows_quarantined == 0
    landing = f"landing_{name}.{plan.table}"
    marked = dict(query(dbs.warehouse, f"select {plan.key}::text, _ndc_deleted_by from {landing}"
                        " where _ndc_deleted_at is not null"))
    if plan.tombstone:
        assert {k: "tombstone" for k in tombstoned}.items() <= marked.items()
    assert set(new_keys) <= {r[0] for r in query(dbs.warehouse, f"select {plan.key}::text from {landing}")}
    if plan.hard_delete:
        found = compare_table(source, plan.table, run_id=f"{name}-compare")
        assert found.newly_deleted == len(deleted) and found.sample_deleted == deleted
        assert scalar(dbs.warehouse, f"select _ndc_deleted_by from {landing} where {plan.key}::text = %s",
                      (deleted[0],)) == "full_compare"
        again = compare_table(source, plan.table, run_id=f"{name}-compare-again")
        assert again.newly_deleted == 0
    # the rows are kept: history holds every version, latest the deletion marks
    assert scalar(dbs.warehouse, f"select count(*) from {landing} where {plan.key}::text = %s",
                  (deleted[0],)) == 1


def _insert_copies(src: SourceDb, plan: Plan, keys: list[str]) -> list[str]:
    columns = [c for c in _columns(src, plan.table) if c not in (plan.key, "updated_at")]
    cols = ", ".join(columns)
    made = []
    for n, key in enumerate(keys):
        if plan.key == "branch_code":
            new_key = f"'{key[:10]}-{900 + n}'"
        else:
            new_key = f"(select max({plan.key}) + 1 from {plan.table} x)"
        src.run(f"insert into {plan.table} ({plan.key}, {cols}, updated_at) select {new_key}, {cols},"
                f" '{CHANGED_AT}' from {plan.table} where {plan.key} = '{key}'")
        made.append(key[:10] + f"-{900 + n}" if plan.key == "branch_code"
                    else str(src.run(f"select max({plan.key}) from {plan.table}")[0][0]))
    return made


def _columns(src: SourceDb, table: str) -> list[str]:
    if src.mysql:
        rows = src.run("select column_name from information_schema.columns where table_schema = database()"
                       f" and table_name = '{table}' order by ordinal_position")
    else:
        rows = src.run("select column_name from information_schema.columns where table_schema = 'public'"
                       f" and table_name = '{table}' order by ordinal_position")
    return [r[0] for r in rows]


def test_full_compare_refuses_a_source_that_looks_emptied(dbs, loaded):
    name, src, _ = loaded
    plan = PLANS[name]
    if not plan.hard_delete:
        source = find_source(get_settings().sources_dir, name)
        with pytest.raises(NdcError, match="tombstones"):
            compare_table(source, plan.table)
        return
    source = find_source(get_settings().sources_dir, name)
    src.run(f"create table {plan.table}_saved as select * from {plan.table}")
    src.run(f"delete from {plan.table}")
    try:
        with pytest.raises(NdcError, match="refusing"):
            compare_table(source, plan.table, run_id=f"{name}-emptied")
    finally:
        src.run(f"insert into {plan.table} select * from {plan.table}_saved")
        src.run(f"drop table {plan.table}_saved")
    assert scalar(dbs.warehouse, "select outcome from ndc_meta.ledger where run_id = %s",
                  (f"{name}-emptied",)) == "failed"
    assert scalar(dbs.warehouse, f"select count(*) from landing_{name}.{plan.table}"
                  " where _ndc_deleted_by = 'full_compare'") <= 1


def test_schema_drift_is_reported_or_blocks_by_name(dbs, loaded):
    name, src, _ = loaded
    plan = PLANS[name]
    source = find_source(get_settings().sources_dir, name)
    src.run(f"alter table {plan.table} add column remarks text")
    try:
        result = extract_table(source, plan.table, *LATER, run_id=f"{name}-new-column")
    finally:
        src.run(f"alter table {plan.table} drop column remarks")
    assert result.new_columns == ["remarks"]
    batches = scalar(dbs.warehouse, "select count(*) from ndc_meta.batches")
    src.run(f"alter table {plan.table} rename column {plan.change_column} to {plan.change_column}_old")
    try:
        with pytest.raises(SchemaDriftError) as caught:
            extract_table(source, plan.table, *LATER, run_id=f"{name}-renamed")
    finally:
        src.run(f"alter table {plan.table} rename column {plan.change_column}_old to {plan.change_column}")
    assert f"source {name}" in str(caught.value) and f"column {plan.change_column}: missing" in str(caught.value)
    assert scalar(dbs.warehouse, "select count(*) from ndc_meta.batches") == batches
