"""The platform's schema as Alembic revisions (ndc.warehouse.schema): a fresh warehouse upgrades to head; a
warehouse made by the last release before Alembic (fixtures/previous_release, that release's DDL frozen) is stamped
and upgraded without losing a row and ends with exactly a fresh install's schema; at head, ensure_meta is one read.
"""

from __future__ import annotations

import multiprocessing
import tomllib
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from ndc.audit import ledger
from ndc.errors import NdcError
from ndc.warehouse import database, schema
from ndc.warehouse.connections import with_database
from tests.helpers import REPO
from tests.helpers.database import query, scalar

PREVIOUS_RELEASE = Path(__file__).parent / "fixtures" / "previous_release"
SCHEMAS = ("ndc_meta", "quarantine", "shared")


@pytest.fixture
def new_database(pg_server: str) -> Iterator[Callable[[], str]]:
    """Empty databases as ndc.warehouse.database.ensure_database makes them, dropped afterwards."""
    made: list[str] = []

    def make() -> str:
        url = with_database(pg_server, f"ndc_test_mig_{uuid.uuid4().hex[:8]}")
        database.ensure_database(url)
        made.append(url)
        return url

    yield make
    for url in made:
        database.drop_database(url)


def previous_release(url: str, *, features_used: bool, version: int = 7) -> None:
    """A warehouse as the last release before Alembic left it: its schema (ensure_meta), and, once agreements,
    reads, the catalogue and the conform DAG were used, the tables they created then."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute((PREVIOUS_RELEASE / "meta.sql").read_text().replace("values (7)", f"values ({version})"))
        if features_used:
            conn.execute((PREVIOUS_RELEASE / "run_time.sql").read_text())


def fill(url: str, *, features_used: bool) -> None:
    """Rows in every table of the previous release's schema (the ledger's through ndc.audit.ledger: a valid chain)."""
    batch = uuid.uuid4()
    with database.connect(url) as conn:
        for n in range(3):  # anchored too (the anchor database goes with the warehouse's, see drop_database)
            ledger.append(conn, ledger.LedgerEntry(
                kind="extract", source="population", target="landing_population.citizens", rows_in=10 + n,
                rows_loaded=9, rows_quarantined=1 + n, duration_ms=120, outcome="success", run_id=f"r{n}",
                contract_name="population.citizens", contract_version="1.2.0", details={"batches": n}))
        with conn.transaction():
            _fill_landing_and_quarantine(conn, batch)
            _fill_results_alerts_exchanges(conn)
            if features_used:
                _fill_sharing_and_conform(conn)


def _fill_landing_and_quarantine(conn: psycopg.Connection, batch: uuid.UUID) -> None:
    now = datetime(2025, 7, 2, 3, 4, 5, tzinfo=UTC)
    conn.execute("insert into ndc_meta.batches values (%s, 'population.citizens', 'r1', %s, %s, 1, 10, 9, 1, 2, %s,"
                 " %s, %s, 'r1')", (batch, now, now, now, now, now))
    conn.execute("insert into ndc_meta.batches (batch_id, dataset, run_id, window_start, window_end, batch_no,"
                 " rows_in, rows_staged, rows_quarantined, rows_repaired, started_at) values"
                 " (%s, 'population.households', 'r2', %s, %s, 1, 5, 5, 0, 0, %s)", (uuid.uuid4(), now, now, now))
    conn.execute("insert into ndc_meta.watermarks values ('population.citizens', %s, 'r1', %s)", (now, now))
    for key, replayed in (("001099012345", None), ("001099054321", "still_failing")):
        conn.execute(
            "insert into quarantine.rows (dataset, record_key, checks, reasons, payload, row_hash, contract_name,"
            " contract_version, batch_id, run_id, replayed_at, replay_run_id, replay_outcome) values"
            " ('population.citizens', %s, array['pin_format'], %s, %s, md5(%s), 'population.citizens', '1.2.0', %s,"
            " 'r1', %s, %s, %s)",
            (key, Jsonb({"pin_format": "Họ tên Nguyễn Văn A"}), Jsonb({"pin": key, "full_name": "Nguyễn Văn A"}),
             key, batch, now if replayed else None, "replay1" if replayed else None, replayed))
    conn.execute("insert into ndc_meta.publications (build_schema, models, run_id) values"
                 " ('shared_a', array['citizens', 'enterprises'], 'c1')")
    conn.execute("insert into ndc_meta.files values ('education.students', repeat('a', 64), '/drops/hn.csv', 2048,"
                 " 'windows-1258', %s, 'r3', %s)", (batch, now))


def _fill_results_alerts_exchanges(conn: psycopg.Connection) -> None:
    conn.execute("insert into ndc_meta.contract_results (gate, dataset, contract_name, contract_version, run_id,"
                 " rows_checked, rows_failed, failed_by_check, duration_ms, outcome, message) values"
                 " ('landing', 'population.citizens', 'population.citizens', '1.2.0', 'r1', 10, 1,"
                 " '{\"pin_format\": 1}', 30, 'fail', null),"
                 " ('publish', 'shared.citizens', 'shared.citizens', '1.0.0', 'c1', 9, 0, '{}', 40, 'pass', null)")
    alert = conn.execute("insert into ndc_meta.alerts (dataset, check_name, dag_id, task_id, owner_agency,"
                         " first_run_id, last_run_id, message) values ('population.citizens', 'pin_format',"
                         " 'extract_population', 'extract_citizens', 'Bộ Công an', 'r1', 'r1', 'pin_format: 1 row')"
                         " returning alert_id").fetchone()[0]
    conn.execute("insert into ndc_meta.alert_runs (alert_id, dag_id, task_id, run_id) values"
                 " (%s, 'extract_population', 'extract_citizens', 'r1')", (alert,))
    conn.execute("insert into ndc_meta.exchange_rejections (exchange, record_key, checks, row_hmac, contract_name,"
                 " contract_version, run_id) values ('enterprise_to_taxation', '0101234567', array['tax_code'],"
                 " repeat('b', 64), 'enterprise.enterprises', '1.0.0', 'x1')")
    conn.execute("insert into ndc_meta.exchange_watermarks values ('enterprise_to_taxation', now(), 'x1', now())")


def _fill_sharing_and_conform(conn: psycopg.Connection) -> None:
    conn.execute("set local session_replication_role = replica")  # the approval trigger refuses the platform's role
    conn.execute("insert into ndc_meta.agreement_approvals (agreement_id, content_sha256, approved_by, note) values"
                 " ('quang_ngai_residents', repeat('c', 64), 'approver_1', 'signed 2025-07-01')")
    conn.execute("reset session_replication_role")
    conn.execute("insert into ndc_meta.agreement_keys values ('quang_ngai_residents', '\\x00ff', now())")
    conn.execute("insert into ndc_meta.applied_agreements values ('quang_ngai_residents', 'quang_ngai',"
                 " array['citizens'], repeat('c', 64), '2025-07-01', '2026-06-30', now())")
    conn.execute("insert into ndc_meta.delivery_receipts (agreement_id, consumer, publication_id, views, ledger_id,"
                 " ledger_hash) values ('quang_ngai_residents', 'quang_ngai', 1, array['citizens'], 3, 'h')")
    conn.execute("insert into ndc_meta.consumer_reads values ('2025-07-02', 'qn_analyst', 'quang_ngai',"
                 " 'agency_quang_ngai.citizens', 4)")
    conn.execute("insert into ndc_meta.read_counters values (10, 42, 4)")
    conn.execute("insert into ndc_meta.catalog (relation, owner_agencies, sources, consumers) values"
                 " ('citizens', array['Bộ Công an'], array['population'], '[]')")
    conn.execute("insert into ndc_meta.conform_nodes (run_id, unique_id, status) values"
                 " ('c1', 'model.ndc.citizens', 'success')")


OPERATOR_VIEWS = ("ndc_meta.ops_last_loads", "ndc_meta.ops_freshness_inputs", "ndc_meta.ops_sharing_transactions",
                  "ndc_meta.contract_pass_rates")


def rows_of(url: str, relation: str) -> list:
    return scalar(url, f"select coalesce(jsonb_agg(to_jsonb(r) order by to_jsonb(r)::text), '[]') from {relation} r")


def rows(url: str) -> dict[str, list]:
    """Every row of every table in the platform's schemas, by table."""
    tables = [t for (t,) in query(url, "select quote_ident(schemaname) || '.' || quote_ident(tablename) from pg_tables"
                                       " where schemaname = any(%s) order by 1", (list(SCHEMAS),))]
    return {t: scalar(url, f"select coalesce(jsonb_agg(to_jsonb(r) order by to_jsonb(r)::text), '[]') from {t} r")
            for t in tables}


# What makes a schema, from the catalogs: everything but object ids and the database's name. Privileges are
# compared expanded (a NULL ACL as its default) and unordered.
def _acl(acl: str, kind: str, owner: str) -> str:
    return (f"array(select pg_get_userbyid(a.grantor) || '>' || pg_get_userbyid(a.grantee) || ':' || a.privilege_type"
            f" from aclexplode(coalesce({acl}, acldefault({kind}, {owner}))) a order by 1)")


CATALOG = {
    "schemas": "select n.nspname, pg_get_userbyid(n.nspowner), "
               + _acl("n.nspacl", "'n'", "n.nspowner")
               + " from pg_namespace n where n.nspname = any(%(schemas)s)",
    "relations": "select n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner), c.relrowsecurity, "
                 + _acl("c.relacl", "case when c.relkind = 'S' then 's' else 'r' end::\"char\"", "c.relowner")
                 + " from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = any(%(schemas)s)",
    "columns": "select n.nspname, c.relname, row_number() over (partition by c.oid order by a.attnum), a.attname,"
               " format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity,"
               " a.attgenerated, a.attcollation::regcollation::text"
               " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
               " join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped"
               " left join pg_attrdef d on d.adrelid = c.oid and d.adnum = a.attnum"
               " where n.nspname = any(%(schemas)s) and c.relkind in ('r', 'p', 'v', 'm')",
    "constraints": "select n.nspname, c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)"
                   " from pg_constraint c join pg_namespace n on n.oid = c.connamespace"
                   " where n.nspname = any(%(schemas)s)",
    "indexes": "select schemaname, indexname, indexdef from pg_indexes where schemaname = any(%(schemas)s)",
    "views": "select schemaname, viewname, definition from pg_views where schemaname = any(%(schemas)s)",
    "functions": "select n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid), "
                 + _acl("p.proacl", "'f'", "p.proowner")
                 + " from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = any(%(schemas)s)"
                 " and not exists (select from pg_depend e where e.objid = p.oid and e.deptype = 'e')",
    "triggers": "select t.tgrelid::regclass::text, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid) from pg_trigger t"
                " join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace"
                " where n.nspname = any(%(schemas)s) and not t.tgisinternal",
    "default privileges": "select n.nspname, d.defaclobjtype, pg_get_userbyid(d.defaclrole), "
                          + _acl("d.defaclacl", "d.defaclobjtype", "d.defaclrole")
                          + " from pg_default_acl d join pg_namespace n on n.oid = d.defaclnamespace",
    "extensions": "select e.extname, e.extnamespace::regnamespace::text, e.extversion from pg_extension e",
    "database privileges": "select " + _acl("d.datacl", "'d'", "d.datdba")
                           + " from pg_database d where d.datname = current_database()",
}


def schema_of(url: str) -> dict[str, list]:
    with psycopg.connect(url) as conn:
        return {name: sorted(conn.execute(statement, {"schemas": list(SCHEMAS)}).fetchall(), key=repr)
                for name, statement in CATALOG.items()}


def upgraded(url: str) -> None:
    with database.connect(url) as conn:
        database.ensure_meta(conn)


# -- a fresh warehouse -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("autocommit", [False, True], ids=["transaction", "autocommit"])
def test_a_fresh_warehouse_upgrades_to_head(new_database, autocommit):
    url = new_database()
    with database.connect(url, autocommit=autocommit) as conn:
        assert schema.current(conn) is None
        database.ensure_meta(conn)
        assert schema.current(conn) == schema.head()
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # committed
    tables = {t for (t,) in query(url, "select schemaname || '.' || tablename from pg_tables")}
    assert {"ndc_meta.ledger", "ndc_meta.batches", "quarantine.rows", "ndc_meta.agreement_approvals",
            "ndc_meta.consumer_reads", "ndc_meta.read_meters", "ndc_meta.catalog", "ndc_meta.conform_nodes",
            "ndc_meta.alembic_version"} <= tables
    assert "ndc_meta.read_counters" not in tables  # revision 0005: the read meters replace it
    assert "ndc_meta.schema_version" not in tables  # Alembic's version table replaces it
    assert "public.alembic_version" not in tables  # never where Airflow keeps its own
    assert scalar(url, "select count(*) from ndc_meta.ledger_identity") == 1
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"), psycopg.connect(url) as conn:
        conn.execute("truncate ndc_meta.ledger")


class _RecordingCursor(psycopg.Cursor):
    """Records every statement sent through a cursor of the connection (SQLAlchemy's, under Alembic, included)."""

    sent: list[str] = []

    def execute(self, query, params=None, **kwargs):
        self.sent.append(str(query))
        return super().execute(query, params, **kwargs)


def test_ensure_meta_at_head_is_one_read_and_waits_for_no_upgrade(new_database):
    url = new_database()
    upgraded(url)
    with psycopg.connect(url, autocommit=True) as elsewhere:
        elsewhere.execute("select pg_advisory_lock(727001)")  # another process holds the DDL lock
        with psycopg.connect(url, cursor_factory=_RecordingCursor) as conn:
            conn.execute("set lock_timeout = '2s'")
            conn.commit()
            _RecordingCursor.sent.clear()
            database.ensure_meta(conn)
    assert _RecordingCursor.sent == ["select version_num from ndc_meta.alembic_version"]


def _first_run(url: str, start, results) -> None:
    with database.connect(url) as conn:
        start.wait(timeout=60)
        database.ensure_meta(conn)
        results.put(schema.current(conn))


def test_concurrent_first_runs_upgrade_once(new_database):
    """Processes, as Airflow's tasks are: each opens the empty warehouse at the same moment."""
    url = new_database()
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(4), context.Queue()
    runs = [context.Process(target=_first_run, args=(url, start, results)) for _ in range(4)]
    for run in runs:
        run.start()
    revisions = [results.get(timeout=60) for _ in runs]
    for run in runs:
        run.join(30)
    assert [run.exitcode for run in runs] == [0] * 4
    assert revisions == [schema.head()] * 4
    assert scalar(url, "select count(*) from ndc_meta.alembic_version") == 1
    assert scalar(url, "select count(*) from ndc_meta.ledger_identity") == 1


# -- a warehouse made by the last release before Alembic -------------------------------------------------------------

@pytest.mark.parametrize("features_used", [True, False], ids=["features-used", "never-used"])
def test_a_previous_release_warehouse_is_stamped_and_upgraded_without_loss(new_database, features_used):
    fresh, previous = new_database(), new_database()
    upgraded(fresh)
    previous_release(previous, features_used=features_used)
    fill(previous, features_used=features_used)
    before = rows(previous)
    assert all(before.values()), f"tables the test leaves empty: {[t for t, r in before.items() if not r]}"
    operator_views = {v: rows_of(previous, v) for v in OPERATOR_VIEWS}
    assert operator_views["ndc_meta.ops_last_loads"] and operator_views["ndc_meta.contract_pass_rates"]

    upgraded(previous)

    # revision 0004's views read rollups filled from the history: they show what the old views computed
    assert {v: rows_of(previous, v) for v in OPERATOR_VIEWS} == operator_views
    after = rows(previous)
    assert after.pop("ndc_meta.alembic_version") == [{"version_num": schema.head()}]
    assert before.pop("ndc_meta.schema_version")[0]["version"] == 7
    for row in after["ndc_meta.publications"]:  # revision 0003's columns: a publication before it was a full one
        assert (row.pop("mode"), row.pop("conform_seq")) == ("full", None)
    for row in after["ndc_meta.agreement_approvals"]:  # revision 0005: an earlier approval named no logins
        assert (row.pop("consumer"), row.pop("logins")) == (None, [])
    for row in after["ndc_meta.agreement_keys"]:  # revision 0005: keys per consumer (the applied agreement's)
        assert row.pop("consumer") in {"quang_ngai", ""}
    for row in after["ndc_meta.applied_agreements"]:  # revision 0005: the validity as instants
        assert row.pop("starts_at") and row.pop("expires_at")
        # revision 0006: how the sharing service reads it (the next apply fills them)
        assert (row.pop("purposes"), row.pop("lookup_keys")) == ([], {})
    # revision 0006: the request log's days, made ahead
    days = {t for t in after if t.startswith("ndc_meta.service_requests_")}
    assert len(days) == 3 and all(not after.pop(t) for t in days)
    # revision 0005 drops the pg_stat_statements counters (the views' read meters replace them)
    assert "ndc_meta.read_counters" not in after
    before.pop("ndc_meta.read_counters", None)
    assert {t: r for t, r in after.items() if t in before} == before
    assert set(after) - set(before) == ({"ndc_meta.agreement_approvals", "ndc_meta.agreement_keys",
                                         "ndc_meta.applied_agreements", "ndc_meta.delivery_receipts",
                                         "ndc_meta.consumer_reads", "ndc_meta.catalog",
                                         "ndc_meta.conform_nodes"} if not features_used else set()) | {
                                            "ndc_meta.conform_runs",  # revision 0003
                                            # revision 0004: the operator's rollups, filled from the history
                                            "ndc_meta.dataset_loads", "ndc_meta.landing_freshness",
                                            "ndc_meta.sharing_daily", "ndc_meta.contract_results_daily",
                                            # revision 0005: withdrawals, the agency-role registry, read meters
                                            "ndc_meta.approval_withdrawals", "ndc_meta.agency_roles",
                                            "ndc_meta.read_meters",
                                            # revision 0006: the sharing service's tokens and request log
                                            "ndc_meta.service_tokens", "ndc_meta.service_requests"}
    with database.connect(previous) as conn:
        assert ledger.verify(conn).problems == []
    assert schema_of(previous) == schema_of(fresh)


def test_the_previous_release_is_stamped_not_run_again(new_database):
    """Its DDL is not sent again (the baseline would fail on the objects that exist); the later revisions are."""
    url = new_database()
    previous_release(url, features_used=False)
    identity = scalar(url, "select ledger_uuid from ndc_meta.ledger_identity")
    with psycopg.connect(url, cursor_factory=_RecordingCursor) as conn:
        _RecordingCursor.sent.clear()
        database.ensure_meta(conn)
    sent = "\n".join(_RecordingCursor.sent)
    assert "create table ndc_meta.ledger (" not in sent
    assert "create table if not exists ndc_meta.catalog (" in sent
    assert scalar(url, "select array_agg(ledger_uuid) from ndc_meta.ledger_identity") == [identity]
    assert scalar(url, "select version_num from ndc_meta.alembic_version") == schema.head()


def test_a_warehouse_older_than_the_previous_release_is_refused(new_database):
    url = new_database()
    previous_release(url, features_used=False, version=6)
    with database.connect(url) as conn, pytest.raises(NdcError, match="schema_version is 6"):
        database.ensure_meta(conn)
    assert scalar(url, "select to_regclass('ndc_meta.alembic_version')") is None  # rolled back, nothing stamped
    assert scalar(url, "select max(version) from ndc_meta.schema_version") == 6


def test_a_failed_upgrade_leaves_the_warehouse_as_it_was(new_database):
    """One transaction, even on an autocommit connection: a warehouse with the platform's tables but no version
    (neither Alembic's nor the previous release's) fails at the baseline, and nothing of the attempt remains."""
    url = new_database()
    previous_release(url, features_used=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("drop table ndc_meta.schema_version")
    before = schema_of(url)
    with database.connect(url, autocommit=True) as conn, pytest.raises(psycopg.errors.DuplicateTable):
        database.ensure_meta(conn)
    assert schema_of(url) == before
    assert scalar(url, "select to_regclass('ndc_meta.alembic_version')") is None


def test_a_newer_release_schema_is_left_alone(new_database):
    url = new_database()
    upgraded(url)
    newer = f"{int(schema.head()) + 1:04d}"
    with psycopg.connect(url) as conn:
        conn.execute("update ndc_meta.alembic_version set version_num = %s", (newer,))
    upgraded(url)
    assert scalar(url, "select version_num from ndc_meta.alembic_version") == newer


# -- the revisions ---------------------------------------------------------------------------------------------------

def test_the_revisions_are_one_chain_numbered_like_their_files():
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(schema.alembic_config())
    chain = list(reversed(list(scripts.walk_revisions())))
    assert scripts.get_heads() == [schema.head()] == [chain[-1].revision]
    assert [s.revision for s in chain] == [f"{n:04d}" for n in range(1, len(chain) + 1)]
    assert [s.down_revision for s in chain] == [None, *(s.revision for s in chain[:-1])]
    assert all(Path(s.path).name.startswith(f"{s.revision}_") for s in chain)
    assert chain[0].revision == schema.BASELINE


def test_the_revisions_ship_with_the_package():
    """An installed package has no repository beside it: Alembic reads env.py and the revisions as package data."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    package = REPO / "plugins" / "ndc" / "warehouse"
    shipped = {path for pattern in config["package-data"]["ndc.warehouse"] for path in package.glob(pattern)}
    needed = {path for path in (package / "migrations").rglob("*")
              if path.is_file() and "__pycache__" not in path.parts}
    assert needed and needed <= shipped
