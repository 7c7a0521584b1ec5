"""The direct distributed model: an exchange from the enterprise register (a real MariaDB) straight into the tax
authority's database (PostgreSQL), gated by its contract, idempotent, in the ledger — and a canary planted in the
exchanged rows is found nowhere in the hub: not in its databases, the result (XCom), the logs, or Airflow's own
metadata and task logs after a real `airflow dags test` run."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg
import pytest
from ndc_lab.environment import restore, snapshot
from ndc_lab.simulate import enterprise
from ndc_lab.simulate.common import SourceSpec
from psycopg import sql

from ndc.audit import ledger
from ndc.audit.anchor import SUFFIX
from ndc.config.exchanges import find_exchange, load_exchange
from ndc.errors import ConfigError
from ndc.sharing.exchange import ExchangeError, run_exchange
from ndc.warehouse.connections import with_database
from ndc.warehouse.database import drop_database, ensure_database
from tests.helpers import REPO
from tests.helpers.database import mysql_connect, query, scalar

EXCHANGE = "enterprise_to_taxation"
CONSUMER_TABLE = "incoming.enterprise_registrations"
START, END = datetime(2024, 7, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)  # every simulated row


@dataclass
class Setup:
    warehouse: str
    mariadb: str
    consumer: str
    sim_rows: pl.DataFrame          # the source's enterprises rows as written (canaries included)
    quarantined: set[str]           # keys whose row fails the contract (the simulator's manifest)
    canary: str                     # the prefix both canaries share
    good_key: str                   # the good row holding canary-good (and its day, for the Airflow run)
    good_day: datetime
    bad_key: str                    # a row that fails the contract and holds canary-bad


ENV_KEYS = ("AIRFLOW_CONN_NDC_SRC_ENTERPRISE", "AIRFLOW_CONN_NDC_AGENCY_TAXATION", "NDC_EXCHANGE_HASH_KEY",
            "NDC_BATCH_BYTES")


def _plant(url: str, key: str, version: datetime, text: str) -> None:
    conn = mysql_connect(url)
    try:
        cursor = conn.cursor()
        cursor.execute("update enterprises set address = %s where enterprise_code = %s and updated_at = %s",
                       (text, key, version.replace(tzinfo=None)))
        assert cursor.rowcount == 1
    finally:
        conn.close()


@pytest.fixture(scope="module")
def setup(dbs, mariadb_server) -> Iterator[Setup]:
    spec = SourceSpec(citizens=60_000, seed=7, defect_rate=0.004)
    sim = enterprise.simulate(spec)
    mariadb = with_database(mariadb_server, f"ndc_test_exchange_{dbs.run}")
    consumer = with_database(dbs.warehouse, f"ndc_test_tax_{dbs.run}")
    saved = snapshot(ENV_KEYS)
    try:
        enterprise.write(mariadb, sim, spec)
        ensure_database(consumer)
        rows = sim.tables["enterprises"]
        manifest = sim.manifest.filter(pl.col("table_name") == "enterprises")
        quarantined = set(manifest.filter(pl.col("expected_outcome") == "quarantined")["record_key"].to_list())
        clean = rows.filter(~pl.col("enterprise_code").is_in(manifest["record_key"].to_list()))
        busiest = clean.group_by(pl.col("updated_at").dt.date().alias("day")).len().sort("len", "day").row(-1)[0]
        good = clean.filter(pl.col("updated_at").dt.date() == busiest).row(0, named=True)
        bad = rows.filter(pl.col("enterprise_code").is_in(list(quarantined))).row(0, named=True)
        canary = f"CANARY-{uuid.uuid4().hex}"
        _plant(mariadb, good["enterprise_code"], good["updated_at"], f"{canary}-good, Phường Bến Nghé")
        _plant(mariadb, bad["enterprise_code"], bad["updated_at"], f"{canary}-bad, Phường Bến Nghé")
        os.environ.update({"AIRFLOW_CONN_NDC_SRC_ENTERPRISE": mariadb, "AIRFLOW_CONN_NDC_AGENCY_TAXATION": consumer,
                           "NDC_EXCHANGE_HASH_KEY": "test-exchange-hash-key-0123456789",
                           "NDC_BATCH_BYTES": "1024"})  # 1,000-row batches: two batches, a key may span both
        yield Setup(dbs.warehouse, mariadb, consumer, rows, quarantined, canary, good["enterprise_code"],
                    datetime.combine(busiest, datetime.min.time(), UTC), bad["enterprise_code"])
    finally:
        restore(saved)
        drop_database(consumer)
        conn = mysql_connect(mariadb_server)
        try:
            conn.cursor().execute(f"drop database if exists `ndc_test_exchange_{dbs.run}`")
        finally:
            conn.close()


def _expected(rows: pl.DataFrame, quarantined: set[str]) -> pl.DataFrame:
    """The latest passing version of every key: what the consumer must hold."""
    good = rows.filter(~pl.col("enterprise_code").is_in(list(quarantined)))
    return good.sort("updated_at").group_by("enterprise_code").last()


def _consumer_rows(url: str) -> list[tuple]:
    return query(url, f"select enterprise_code, updated_at, address, _ndc_row_hash, _ndc_run_id, _ndc_delivered_at"
                      f" from {CONSUMER_TABLE} order by enterprise_code")


def _tables_holding(url: str, text: str) -> list[str]:
    """Every base table of the database at ``url`` whose rows, as text (jsonb and arrays included), hold ``text``."""
    found = []
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute("select table_schema, table_name from information_schema.tables"
                              " where table_type = 'BASE TABLE'"
                              " and table_schema not in ('pg_catalog', 'information_schema')").fetchall()
        for schema, table in tables:
            hit = conn.execute(sql.SQL("select exists (select from {} t where t::text like %s)").format(
                sql.Identifier(schema, table)), (f"%{text}%",)).fetchone()[0]
            if hit:
                found.append(f"{schema}.{table}")
    return found


def _hub_databases(warehouse: str) -> list[str]:
    name = warehouse.rsplit("/", 1)[1]
    present = {r[0] for r in query(with_database(warehouse, "postgres"), "select datname from pg_database")}
    return [warehouse] + ([with_database(warehouse, name + SUFFIX)] if name + SUFFIX in present else [])


def test_exchange_delivers_passing_rows_once_and_the_hub_keeps_no_payload(setup, caplog):
    caplog.set_level(logging.DEBUG)
    result = run_exchange(EXCHANGE, START, END, run_id="test_run_1")
    expected = _expected(setup.sim_rows, setup.quarantined)
    delivered = _consumer_rows(setup.consumer)

    # Exactly the rows that pass the contract, each key once, in its latest version; the bad rows are absent.
    assert [r[0] for r in delivered] == sorted(expected["enterprise_code"].to_list())
    assert {(r[0], r[1]) for r in delivered} == set(expected.select("enterprise_code", "updated_at").iter_rows())
    assert not {r[0] for r in delivered} & setup.quarantined
    assert [r[2] for r in delivered if r[0] == setup.good_key] == [f"{setup.canary}-good, Phường Bến Nghé"]
    assert setup.canary + "-bad" not in str(delivered)
    total = setup.sim_rows.height
    superseded = total - len(setup.quarantined) - expected.height
    assert superseded > 0, "the simulator stores older versions of some keys"
    assert (result.rows_in, result.rows_delivered, result.rows_written, result.rows_rejected, result.batches) == (
        total, expected.height, expected.height, len(setup.quarantined) + superseded, 2)
    assert result.failed_by_check["duplicate_key"] == superseded
    assert result.target == f"{setup.consumer.rsplit('/', 1)[1]}.{CONSUMER_TABLE}"

    # A rerun of the window changes nothing in the consumer, and nothing new in the hub's rejections.
    rejections = query(setup.warehouse, "select record_key, checks, row_hmac from ndc_meta.exchange_rejections"
                       " order by rejection_id")
    again = run_exchange(EXCHANGE, START, END, run_id="test_run_2")
    assert _consumer_rows(setup.consumer) == delivered
    assert (again.rows_in, again.rows_delivered, again.rows_written) == (total, expected.height, 0)
    assert query(setup.warehouse, "select record_key, checks, row_hmac from ndc_meta.exchange_rejections"
                 " order by rejection_id") == rejections

    # The hub: key, failed checks and a keyed hash per row not delivered — nothing else of the row.
    assert {r[0] for r in rejections if r[1] != ["duplicate_key"]} == setup.quarantined
    assert len(rejections) == len(setup.quarantined) + superseded
    assert all(len(r[2]) == 64 and int(r[2], 16) >= 0 for r in rejections)
    entries = query(setup.warehouse, "select kind, source, target, rows_in, rows_loaded, rows_quarantined,"
                    " contract_name, outcome, details from ndc_meta.ledger order by ledger_id")
    assert [(e[0], e[2], e[3], e[4], e[5], e[6], e[7]) for e in entries] == [
        ("exchange", result.target, total, expected.height, result.rows_rejected, "enterprise.enterprises",
         "success")] * 2
    assert entries[0][1] == f"ndc_test_exchange_{setup.warehouse.rsplit('_', 1)[1]}.enterprises"
    assert entries[0][8]["payload_in_hub"] is False and entries[1][8]["rows_written"] == 0
    with psycopg.connect(setup.warehouse) as conn:
        assert ledger.verify(conn).ok
    assert query(setup.warehouse, "select gate, dataset, rows_checked, rows_failed, outcome"
                 " from ndc_meta.contract_results order by result_id") == [
        ("exchange", f"exchange.{EXCHANGE}", total, result.rows_rejected, "fail")] * 2

    # The canary: delivered to the consumer, nowhere in the hub, the result (the task's XCom) or the logs.
    assert _tables_holding(setup.consumer, setup.canary) == [CONSUMER_TABLE]
    for database in _hub_databases(setup.warehouse):
        assert _tables_holding(database, setup.canary) == [], database
    assert setup.canary not in repr(asdict(result)) + repr(asdict(again))
    assert caplog.records, "the run logs its progress"
    assert setup.canary not in caplog.text
    assert not [r for r in caplog.records if setup.canary in repr(r.args) + repr(r.msg)]


def test_a_failed_exchange_names_no_row_value_and_still_writes_the_ledger(setup, caplog):
    """The consumer's table gains a rule its rows break: the upsert fails inside the consumer's transaction (the
    database's message quotes the failing row); nothing is delivered, the ledger says failed, and neither the error
    nor the logs carry a value of a row."""
    caplog.set_level(logging.DEBUG)
    with psycopg.connect(setup.consumer, autocommit=True) as conn:
        conn.execute(f"create table {CONSUMER_TABLE}_saved as table {CONSUMER_TABLE}")
        conn.execute(f"update {CONSUMER_TABLE} set updated_at = updated_at - interval '1 day'")  # all get rewritten
        conn.execute(f"alter table {CONSUMER_TABLE} add constraint short_address check (length(address) < 5) not valid")
    before = _consumer_rows(setup.consumer)
    try:
        with pytest.raises(ExchangeError) as failed:
            run_exchange(EXCHANGE, START, END, run_id="test_run_failing")
        assert _consumer_rows(setup.consumer) == before  # rolled back: the whole window or nothing
    finally:
        with psycopg.connect(setup.consumer, autocommit=True) as conn:
            conn.execute(f"drop table {CONSUMER_TABLE}")
            conn.execute(f"alter table {CONSUMER_TABLE}_saved rename to enterprise_registrations")
            conn.execute(f"alter table {CONSUMER_TABLE} add primary key (enterprise_code)")
    assert "SQLSTATE 23514" in str(failed.value)
    assert setup.canary not in str(failed.value) + caplog.text
    assert query(setup.warehouse, "select outcome, rows_loaded, details->>'error' from ndc_meta.ledger"
                 " where run_id = 'test_run_failing'") == [("failed", 0, str(failed.value).split(": ", 1)[1])]
    for database in _hub_databases(setup.warehouse):
        assert _tables_holding(database, setup.canary) == [], database


def test_a_run_needs_the_hash_key_and_never_delivers_into_the_hub(setup, monkeypatch):
    monkeypatch.delenv("NDC_EXCHANGE_HASH_KEY")
    with pytest.raises(ConfigError, match="NDC_EXCHANGE_HASH_KEY"):
        run_exchange(EXCHANGE, START, END)
    monkeypatch.setenv("NDC_EXCHANGE_HASH_KEY", "test-exchange-hash-key-0123456789")
    monkeypatch.setenv("AIRFLOW_CONN_NDC_AGENCY_TAXATION", setup.warehouse)
    with pytest.raises(ConfigError, match=r"field 'consumer\.conn_id'.*hub's warehouse"):
        run_exchange(EXCHANGE, START, END)


BAD_FILE = (REPO / "dags" / "exchanges" / f"{EXCHANGE}.yml").read_text()


@pytest.mark.parametrize(("change", "field", "message"), [
    (("  schema: incoming", "  schema: Incoming Tax"), "consumer.schema", "lower-case SQL identifier"),
    (("  engine: mysql", "  engine: oracle"), "provider.engine", "'postgresql' or 'mysql'"),
    (("  table: enterprises\n", "  table: enterprises\n  password: hunter2\n"), "provider.password",
     "Extra inputs are not permitted"),
    (("start_date: 2024-07-01", "start_date: 2024-13-01"), "start_date", "date"),
])
def test_config_errors_name_the_file_and_the_field(tmp_path, change, field, message):
    path = tmp_path / f"{EXCHANGE}.yml"
    path.write_text(BAD_FILE.replace(*change))
    with pytest.raises(ConfigError) as error:
        load_exchange(path)
    assert str(path) in str(error.value) and f"field '{field}'" in str(error.value)
    assert message in str(error.value)


def test_an_unknown_contract_or_key_column_is_named(tmp_path, monkeypatch):
    from ndc.sharing.exchange import check_contract

    (tmp_path / f"{EXCHANGE}.yml").write_text(BAD_FILE.replace("primary_key: [enterprise_code]",
                                                               "primary_key: [tax_code]"))
    with pytest.raises(ConfigError, match=r"field 'provider\.primary_key': tax_code not a column"):
        check_contract(find_exchange(EXCHANGE, tmp_path))
    (tmp_path / f"{EXCHANGE}.yml").write_text(BAD_FILE.replace("contract: enterprise.enterprises",
                                                               "contract: enterprise.firms"))
    with pytest.raises(ConfigError, match=r"field 'contract': unknown contract 'enterprise\.firms'"):
        check_contract(find_exchange(EXCHANGE, tmp_path))


def test_factory_builds_one_scheduled_dag_per_exchange_file():
    from ndc.airflow.exchange import exchange_dags

    dags = exchange_dags(REPO / "dags" / "exchanges")
    dag = dags[f"exchange_{EXCHANGE}"]
    assert dag.catchup is True and dag.max_active_runs == 1
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert [t.task_id for t in dag.tasks] == ["exchange"]
    assert type(dag.tasks[0].on_failure_callback[0]).__name__ == "ContractAlertNotifier"
    for named in ("Ministry of Finance", "General Department of Taxation", "incoming.enterprise_registrations",
                  "enterprise.enterprises", "Open and update enterprises' tax files", f"ndc exchange run {EXCHANGE}"):
        assert named in dag.doc_md


@pytest.mark.airflow
@pytest.mark.slow
def test_exchange_dag_run_keeps_the_canary_out_of_airflow(setup, tmp_path):
    """A real `airflow dags test` run into a fresh consumer database: the rows arrive; the canary is in neither
    Airflow's metadata database (XCom included) nor its logs."""
    consumer = with_database(setup.warehouse, f"{setup.consumer.rsplit('/', 1)[1]}_dag")
    ensure_database(consumer)
    try:
        env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
               "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
               "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
               "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db",
               "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG", "AIRFLOW_CONN_NDC_AGENCY_TAXATION": consumer}
        subprocess.run(["airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
        logical = (setup.good_day + timedelta(days=1)).date().isoformat()  # the interval is the day before
        run = subprocess.run(["airflow", "dags", "test", f"exchange_{EXCHANGE}", logical], env=env,
                             capture_output=True, text=True, timeout=300, check=False)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

        window = (setup.good_day - timedelta(hours=2), setup.good_day + timedelta(days=1))
        in_window = setup.sim_rows.filter((pl.col("updated_at") >= window[0]) & (pl.col("updated_at") < window[1]))
        expected = _expected(in_window, setup.quarantined)
        assert [r[0] for r in _consumer_rows(consumer)] == sorted(expected["enterprise_code"].to_list())
        assert _tables_holding(consumer, setup.canary) == [CONSUMER_TABLE]  # the search finds it where it is
        assert scalar(setup.warehouse, "select count(*) from ndc_meta.ledger where kind = 'exchange'"
                      " and interval_end = %s and outcome = 'success'", (window[1],)) == 1

        with sqlite3.connect(tmp_path / "airflow.db") as meta:
            xcom = meta.execute("select value from xcom where dag_id = ? and key = 'return_value'",
                                (f"exchange_{EXCHANGE}",)).fetchall()
        assert len(xcom) == 1 and b"rows_delivered" in bytes(xcom[0][0] if isinstance(xcom[0][0], bytes)
                                                             else str(xcom[0][0]).encode())
        needle = setup.canary.encode()
        stored = [p for p in tmp_path.rglob("*") if p.is_file() and needle in p.read_bytes()]
        assert stored == [], f"the canary is in {stored}"
        logs = [p.read_text(errors="replace") for p in (tmp_path / "logs").rglob("*") if p.is_file()]
        assert any("exchange enterprise_to_taxation delivered" in text for text in [*logs, run.stdout + run.stderr]), \
            "the task's log was written where it is searched"
        assert setup.canary not in run.stdout + run.stderr
        for database in _hub_databases(setup.warehouse):
            assert _tables_holding(database, setup.canary) == [], database
    finally:
        drop_database(consumer)
