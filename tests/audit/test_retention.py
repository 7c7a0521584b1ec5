"""Personal data: the restricted role, and the retention purge of quarantine and landing history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg
import pytest
from ndc_lab.simulate import population
from psycopg import sql

from ndc.audit import retention
from ndc.audit.retention import purge
from ndc.tasks import extract_table
from ndc.warehouse.connections import with_database
from tests.helpers.database import query, scalar
from tests.helpers.sources import write_citizens

EVERYTHING = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
OLD = timedelta(days=800)


@pytest.fixture(scope="module")
def loaded(dbs):
    """100 citizens, 2 of them quarantined (blank name); then 10 changed: 108 versions in history, 10 superseded."""
    clean = population.simulate(population.PopulationSpec(citizens=300, seed=11, defect_rate=0)).citizens
    clean = clean.filter(pl.col("updated_at") < datetime(2025, 6, 1, tzinfo=UTC)).head(100)
    bad = clean.with_row_index("i").with_columns(
        full_name=pl.when(pl.col("i") < 2).then(pl.lit(" ")).otherwise(pl.col("full_name"))).drop("i")
    write_citizens(dbs.source, bad)
    extract_table("population", "citizens", *EVERYTHING, run_id="first")
    changed = bad.with_row_index("i").with_columns(
        address=pl.when(pl.col("i").is_between(10, 19)).then(pl.lit("Số 9 phố mới")).otherwise(pl.col("address")),
        updated_at=pl.when(pl.col("i").is_between(10, 19)).then(pl.col("updated_at") + timedelta(hours=1))
        .otherwise(pl.col("updated_at"))).drop("i")
    write_citizens(dbs.source, changed)
    # another window: the old versions were the source's state then, not a second version at the same time
    extract_table("population", "citizens", EVERYTHING[0], datetime(2031, 1, 1, tzinfo=UTC), run_id="second")
    return changed


def _superseded(url: str) -> list[tuple]:
    return query(url, "select h.pin, h._ndc_row_hash from landing_population.citizens_history h"
                 " join landing_population.citizens l using (pin) where h._ndc_row_hash <> l._ndc_row_hash"
                 " order by h.pin")


def test_quarantine_and_history_are_readable_only_by_the_personal_data_role(dbs, loaded):
    role = f"ndc_test_reader_{dbs.run}"
    database = dbs.warehouse.rsplit("/", 1)[1]
    with psycopg.connect(dbs.warehouse, autocommit=True) as admin:
        admin.execute(sql.SQL("create role {} login").format(sql.Identifier(role)))
        admin.execute(sql.SQL("grant connect on database {} to {}").format(sql.Identifier(database),
                                                                            sql.Identifier(role)))
    as_reader = with_database(dbs.warehouse, database).replace("postgres@", f"{role}@", 1)
    try:
        for relation in ("quarantine.rows", "quarantine.overview", "landing_population.citizens_history"):
            with psycopg.connect(as_reader) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"select count(*) from {relation}")
        with psycopg.connect(dbs.warehouse, autocommit=True) as admin:
            admin.execute(sql.SQL("grant ndc_personal_data to {}").format(sql.Identifier(role)))
        with psycopg.connect(as_reader) as conn:
            assert conn.execute("select count(*) from quarantine.rows").fetchone()[0] == 2
            assert conn.execute("select count(*) from landing_population.citizens_history").fetchone()[0] == 108
            with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the role reads; it does not delete
                conn.execute("delete from quarantine.rows")
    finally:
        with psycopg.connect(dbs.warehouse, autocommit=True) as admin:
            admin.execute(sql.SQL("revoke connect on database {} from {}").format(sql.Identifier(database),
                                                                                 sql.Identifier(role)))
            admin.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_purge_deletes_only_old_quarantine_and_old_superseded_history(dbs, loaded, monkeypatch):
    superseded = _superseded(dbs.warehouse)
    assert len(superseded) == 10
    old_versions = [h for _, h in superseded[:6]]  # 6 old superseded versions; 4 superseded but recent
    with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
        # everything current is old too: it must stay however old it is
        conn.execute("update landing_population.citizens_history set _ndc_loaded_at = now() - %s"
                     " where _ndc_row_hash in (select _ndc_row_hash from landing_population.citizens)"
                     " or _ndc_row_hash = any(%s)", (OLD, old_versions))
        conn.execute("update quarantine.rows set quarantined_at = now() - %s where quarantine_id ="
                     " (select min(quarantine_id) from quarantine.rows)", (OLD,))
    latest_before = scalar(dbs.warehouse, "select md5(string_agg(x::text, '' order by pin))"
                           " from landing_population.citizens x")
    ledger_rows = scalar(dbs.warehouse, "select count(*) from ndc_meta.ledger")

    dry = purge(retention_days=730, dry_run=True)
    assert dict(dry.quarantine) == {"population.citizens": 1} and dry.history == {"population.citizens": 6}
    assert scalar(dbs.warehouse, "select count(*) from landing_population.citizens_history") == 108
    assert scalar(dbs.warehouse, "select count(*) from quarantine.rows") == 2
    assert scalar(dbs.warehouse, "select count(*) from ndc_meta.ledger") == ledger_rows

    monkeypatch.setattr(retention, "BATCH_ROWS", 4)  # several batches
    done = purge(retention_days=730, run_id="purge-1")
    assert dict(done.quarantine) == {"population.citizens": 1} and done.history == {"population.citizens": 6}
    assert sorted(h for _, h in _superseded(dbs.warehouse)) == sorted(h for _, h in superseded[6:])
    assert scalar(dbs.warehouse, "select count(*) from landing_population.citizens_history") == 102
    assert scalar(dbs.warehouse, "select count(*) from landing_population.citizens l where not exists (select 1"
                  " from landing_population.citizens_history h where h.pin = l.pin"
                  " and h._ndc_row_hash = l._ndc_row_hash)") == 0
    assert scalar(dbs.warehouse, "select md5(string_agg(x::text, '' order by pin))"
                  " from landing_population.citizens x") == latest_before
    assert scalar(dbs.warehouse, "select count(*) from quarantine.rows where quarantined_at < now() - %s",
                  (timedelta(days=730),)) == 0
    assert scalar(dbs.warehouse, "select count(*) from quarantine.rows") == 1

    entry = query(dbs.warehouse, "select kind, rows_in, outcome, run_id, details from ndc_meta.ledger"
                  " order by ledger_id desc limit 1")[0]
    assert entry[:4] == ("purge", 7, "success", "purge-1")
    details = entry[4]
    assert details["quarantine_rows"] == {"population.citizens": 1}
    assert details["history_versions"] == {"population.citizens": 6}
    assert details["retention_days"] == 730 and details["cutoff"].startswith(str((datetime.now(UTC) - timedelta(
        days=730)).date()))
    assert not any(pin in str(details) for pin, _ in superseded)  # counts only, no keys

    again = purge(retention_days=730, run_id="purge-2")
    assert again.total == 0


def test_retention_setting(monkeypatch):
    from ndc.settings import get_settings

    monkeypatch.setenv("NDC_RETENTION_DAYS", "90")
    assert get_settings().retention_days == 90
    monkeypatch.delenv("NDC_RETENTION_DAYS")
    assert get_settings().retention_days == 730


def test_purge_dag():
    from ndc.airflow.maintenance import build_purge_dag

    dag = build_purge_dag()
    assert dag.dag_id == "purge_personal_data"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert [t.task_id for t in dag.tasks] == ["purge"]
    assert "NDC_RETENTION_DAYS" in dag.doc_md and "never purged" in dag.doc_md
