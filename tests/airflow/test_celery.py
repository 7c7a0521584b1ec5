"""The distributed path, for real: Airflow's scheduler, API server, dag-processor, triggerer and a Celery worker
(CeleryExecutor, Redis on loopback as the broker, PostgreSQL for metadata and results), as docker-compose.yml runs
them. The population extract and the conform DAG run on the worker (proved from each task instance's hostname,
which only the worker's processes report, and from the worker's log); a scheduler-driven backfill of the extract
over a date range leaves landing equal to one extract of the whole range; a DAG failure and a contract failure
each deliver exactly one webhook call, after the retries; the operator's page is then read in a real browser
(Playwright driving Debian's Chromium) logged in through Airflow's form, and screenshotted into ``artifacts/``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import yaml
from ndc_lab import cluster
from ndc_lab.bench.conform import TUNED
from ndc_lab.demo import airflow_env, import_pools
from ndc_lab.simulate import population

from ndc.config.sources import load_source
from ndc.tasks import extract_table
from ndc.warehouse import database
from ndc.warehouse.connections import with_database
from tests.helpers import REPO
from tests.helpers.browser import ARTIFACTS, logged_in, operator_frame
from tests.helpers.database import query, scalar
from tests.helpers.webhook import webhook_server

REDIS = os.environ.get("NDC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WORKER = "ndc-celery-worker-1"
LANDING = ("citizens", "households", "residence_changes")


def _redis_up() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=3).ping()
    except Exception as exc:  # the client raises several error types for an unreachable server
        message = f"Redis at {REDIS} is unreachable: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class Cluster:
    processes: cluster.Processes
    api: cluster.Api
    metadata: str
    warehouse: str
    source: str
    port: int
    webhook: list[dict]

    def trigger(self, dag_id: str, run_id: str, interval: tuple[datetime, datetime] | None = None,
                conf: dict | None = None) -> str:
        body: dict = {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
        if interval:
            body.update(logical_date=interval[0].isoformat(), data_interval_start=interval[0].isoformat(),
                        data_interval_end=interval[1].isoformat())
        self.api.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
        return cluster.wait_for_run(self.processes, self.metadata, dag_id, run_id, 600, "celery test")

    def task_hosts(self, dag_id: str, run_id: str) -> dict[str, tuple[str, str | None]]:
        return {r[0]: (r[1], r[2]) for r in cluster.metadata_query(
            self.metadata, "select task_id, state, hostname from task_instance where dag_id = %s and run_id = %s",
            (dag_id, run_id))}


def _day(day: int) -> datetime:
    return datetime.fromisoformat(f"2025-07-{day:02d}T00:00:00+00:00")


@pytest.fixture(scope="module")
def celery_cluster(dbs, tmp_path_factory) -> Iterator[Cluster]:
    _redis_up()
    spec = population.PopulationSpec(citizens=5_000, seed=17, defect_rate=0.002)
    population.write(dbs.source, population.simulate(spec), spec)
    metadata_db = with_database(dbs.warehouse, f"ndc_test_airflow_{dbs.run}")
    database.ensure_database(metadata_db)
    hook = contextlib.ExitStack()
    hook_url, received = hook.enter_context(webhook_server())
    port, queue = cluster.free_port(), f"ndc_test_{dbs.run}"
    home = tmp_path_factory.mktemp("airflow_celery")
    env = {**airflow_env(dbs.warehouse), **TUNED,
           "AIRFLOW_HOME": str(home),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db.replace("postgresql://", "postgresql+psycopg2://", 1),
           "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
           "AIRFLOW__CELERY__BROKER_URL": REDIS,
           "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_db,
           "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
           "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,  # this run's own queue on the shared broker
           "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port),
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
           "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(cluster.free_port()),
           "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
           # Runs come from triggers and the backfill only: the extract's schedule would catch up from 2024.
           "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
           "NDC_WAREHOUSE_URL": dbs.warehouse, "AIRFLOW_CONN_NDC_SRC_POPULATION": dbs.source,
           "NDC_TASK_RETRIES": "1", "NDC_RETRY_DELAY_SECONDS": "1",
           "NDC_ALERT_WEBHOOK": hook_url}
    try:
        import_pools(env)  # airflow db migrate, then the sources' pools
        cluster.Processes(env).cli("dags", "reserialize")
        yield from _running(env, dbs, port, queue, received)
    finally:
        hook.close()
        database.drop_database(metadata_db)
        cluster.drop_queue(REDIS, queue)  # this run's queue on the shared broker


def _running(env: dict[str, str], dbs, port: int, queue: str, received: list[dict]) -> Iterator[Cluster]:
    worker = ("celery", "worker", "--queues", queue, "--concurrency", "2", "--celery-hostname",
              f"{WORKER}@{dbs.run}", "--skip-serve-logs")
    processes = {"api-server": ("api-server",), "scheduler": ("scheduler",), "dag-processor": ("dag-processor",),
                 "triggerer": ("triggerer",), "worker": worker}
    worker_env = {"AIRFLOW__CORE__HOSTNAME_CALLABLE": "ndc_lab.cluster.worker_hostname", "NDC_WORKER_HOSTNAME": WORKER}
    with cluster.running_airflow(env, port, ("extract_population", "conform"), processes=processes,
                                 process_env={"worker": worker_env}, what="celery test") as (airflow, api):
        airflow.wait("the Celery worker", lambda: "ready" in airflow.log("worker").read_text(errors="replace"), 120)
        yield Cluster(airflow, api, env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], dbs.warehouse, dbs.source, port,
                      received)


@pytest.mark.airflow
@pytest.mark.slow
def test_extract_and_conform_run_on_the_celery_worker(celery_cluster):
    c = celery_cluster
    run_id = "celery_extract_20250701"
    assert c.trigger("extract_population", run_id, (_day(1), _day(2))) == "success"
    hosts = c.task_hosts("extract_population", run_id)
    assert hosts == {f"extract_{t}": ("success", WORKER) for t in LANDING}, "every task ran on the Celery worker"
    log = c.processes.log("worker").read_text(errors="replace")
    assert all(f"extract_{t}" in log for t in LANDING), "the worker's log names the tasks it executed"
    ledger = query(c.warehouse, "select target, outcome, run_id from ndc_meta.ledger where kind = 'extract'")
    assert sorted(ledger) == [(f"landing_population.{t}", "success", run_id) for t in LANDING]

    conform = "celery_conform_1"
    assert c.trigger("conform", conform) == "success"
    hosts = c.task_hosts("conform", conform)
    assert {t: hosts[t] for t in ("prepare_build", "dbt.build", "publish")} == {
        t: ("success", WORKER) for t in ("prepare_build", "dbt.build", "publish")}
    assert {state for state, _ in hosts.values()} == {"success"}
    assert scalar(c.warehouse, "select count(*) from shared.citizens") == scalar(
        c.warehouse, "select count(*) from landing_population.citizens where _ndc_deleted_at is null") > 0

    # What a scheduled run does (issue 19): nothing loaded since the publication, so the run builds nothing; its
    # tasks are skipped (the model tasks in the triggerer too) and the run succeeds.
    runs = scalar(c.warehouse, "select count(*) from ndc_meta.conform_runs")
    nothing = "celery_conform_nothing_changed"
    assert c.trigger("conform", nothing, conf={"changed_only": True}) == "success"
    states = {t: state for t, (state, _) in c.task_hosts("conform", nothing).items()}
    assert {states["prepare_build"], states["dbt.build"], states["publish"]} == {"skipped"}
    assert {s for t, s in states.items() if t.startswith("dbt.")} == {"skipped"}, states
    assert scalar(c.warehouse, "select count(*) from ndc_meta.conform_runs") == runs


@pytest.mark.airflow
@pytest.mark.slow
def test_a_backfill_through_the_scheduler_equals_one_extract_of_the_range(celery_cluster, pg_server):
    c = celery_cluster
    backfill = c.api.call("POST", "/api/v2/backfills", {
        "dag_id": "extract_population", "from_date": _day(2).isoformat(), "to_date": _day(4).isoformat(),
        "max_active_runs": 1, "reprocess_behavior": "none", "run_backwards": False, "dag_run_conf": {}})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        c.processes.check_alive()
        runs = cluster.metadata_query(c.metadata, "select run_id, state, data_interval_start, data_interval_end"
                                      " from dag_run where backfill_id = %s order by data_interval_start",
                                      (backfill["id"],))
        if runs and all(r[1] in ("success", "failed") for r in runs):
            break
        time.sleep(1)
    assert [r[1] for r in runs] == ["success"] * 3, runs
    assert [(r[2], r[3]) for r in runs] == [(_day(d), _day(d + 1)) for d in (2, 3, 4)]
    assert {h for r in runs for (_, h) in c.task_hosts("extract_population", r[0]).values()} == {WORKER}
    # The daily intervals (the first run's and the backfill's) cover [07-01, 07-05) without a gap.
    intervals = query(c.warehouse, "select distinct interval_start, interval_end from ndc_meta.ledger"
                      " where kind = 'extract' and outcome = 'success' order by 1")
    assert [i[0] for i in intervals[1:]] == [i[1] for i in intervals[:-1]]
    start, end = intervals[0][0], intervals[-1][1]
    assert start <= _day(2) and end == _day(5)

    single = with_database(pg_server, f"ndc_test_single_{uuid.uuid4().hex[:8]}")
    database.ensure_database(single)
    saved = os.environ["NDC_WAREHOUSE_URL"]
    try:
        os.environ["NDC_WAREHOUSE_URL"] = single
        source = load_source(REPO / "dags/sources/public_security/population.yml")
        for table in LANDING:
            extract_table(source, table, start, end, run_id="single_extract")
        for table in LANDING:
            pk = ", ".join(next(t for t in source.tables if t.name == table).primary_key)
            statement = (f"select {pk}, _ndc_row_hash, _ndc_deleted_at from landing_population.{table}"
                         f" order by {pk}")
            backfilled, once = query(c.warehouse, statement), query(single, statement)
            assert len(backfilled) > 0 and backfilled == once, table
        statement = "select dataset, record_key, checks from quarantine.rows order by 1, 2, 3"
        assert query(c.warehouse, statement) == query(single, statement)
    finally:
        os.environ["NDC_WAREHOUSE_URL"] = saved
        database.drop_database(single)


def _wait_for(what: str, check, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.airflow
@pytest.mark.slow
def test_a_dag_failure_and_a_contract_failure_each_deliver_one_webhook_call(celery_cluster):
    c = celery_cluster
    c.webhook.clear()
    source_db = psycopg.conninfo.conninfo_to_dict(c.source)["dbname"]
    admin = with_database(c.source, "postgres")
    # A DAG failure: the source database is unreachable (renamed away), on both tries of every task.
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", (source_db,))
        conn.execute(f'alter database "{source_db}" rename to "{source_db}_away"')
    try:
        failed = "celery_unreachable_20250710"
        assert c.trigger("extract_population", failed, (_day(10), _day(11))) == "failed"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'alter database "{source_db}_away" rename to "{source_db}"')
    tries = cluster.metadata_query(c.metadata, "select task_id, try_number, hostname from task_instance where"
                                   " dag_id = 'extract_population' and run_id = %s", (failed,))
    assert sorted(tries) == [(f"extract_{t}", 2, WORKER) for t in LANDING], "each task failed after its retry"
    _wait_for("the DAG failure's webhook call", lambda: c.webhook)
    time.sleep(5)  # no second call
    assert len(c.webhook) == 1, c.webhook
    call = c.webhook[0]
    assert (call["dataset"], call["check"], call["run_id"], call["first"]) == (
        "dag:extract_population", "dag_failed", failed, True)
    assert "Ministry of Public Security" in call["text"]

    # A contract failure: the source renames a column; the task fails its contract on both tries, and its alert
    # is the run's only call (the DAG run's callback finds it and stays quiet).
    c.webhook.clear()
    with psycopg.connect(c.source, autocommit=True) as conn:
        conn.execute("alter table residence_changes rename column moved_on to moved_date")
    try:
        drifted = "celery_drift_20250711"
        assert c.trigger("extract_population", drifted, (_day(11), _day(12))) == "failed"
        _wait_for("the DAG run's callback", lambda: query(
            c.warehouse, "select 1 from ndc_meta.alert_runs where run_id = %s and task_id = '__dag_run__'",
            (drifted,)))
        time.sleep(2)
        assert [(w["dataset"], w["check"], w["run_id"]) for w in c.webhook] == [
            ("population.residence_changes", "schema_drift", drifted)]
        assert scalar(c.warehouse, "select count(*) from ndc_meta.contract_results where run_id = %s"
                      " and outcome = 'blocked'", (drifted,)) == 2, "two tries, both blocked"
    finally:
        with psycopg.connect(c.source, autocommit=True) as conn:
            conn.execute("alter table residence_changes rename column moved_date to moved_on")
    # A later successful run closes the DAG's alert and the dataset's.
    assert c.trigger("extract_population", "celery_recovered_20250712", (_day(12), _day(13))) == "success"
    _wait_for("the alerts closed", lambda: scalar(
        c.warehouse, "select count(*) = 0 from ndc_meta.alerts where closed_at is null"))


@pytest.mark.airflow
@pytest.mark.slow
def test_a_stale_source_alerts_once_and_publishes_nothing(celery_cluster):
    c = celery_cluster
    c.webhook.clear()
    publications = scalar(c.warehouse, "select count(*) from ndc_meta.publications")
    # The source stopped sending 30 days ago: its rows' load times move back (and forward again afterwards, since
    # incremental models select by them).
    shift = "update landing_population.citizens set _ndc_loaded_at = _ndc_loaded_at {} interval '30 days'"
    with psycopg.connect(c.warehouse, autocommit=True) as conn:
        conn.execute(shift.format("-"))
    try:
        run_id = "celery_conform_stale"
        assert c.trigger("conform", run_id) == "failed"
        _wait_for("the DAG run's callback", lambda: query(
            c.warehouse, "select 1 from ndc_meta.alert_runs where run_id = %s and task_id = '__dag_run__'",
            (run_id,)))
        time.sleep(2)
        assert [(w["dataset"], w["check"]) for w in c.webhook] == [("conform.freshness", "stale_source")]
        assert "population.citizens" in c.webhook[0]["text"]
        assert scalar(c.warehouse, "select count(*) from ndc_meta.publications") == publications
    finally:
        with psycopg.connect(c.warehouse, autocommit=True) as conn:
            conn.execute(shift.format("+"))


def _apply_agreements(c: Cluster, folder: Path) -> list[str]:
    """The repository's agencies (logins suffixed for this run) and agreements (dated around today), approved by
    an approver role and applied: the next publish delivers under each. Returns the roles to drop afterwards."""
    from ndc.config.agreements import load_agencies, load_agreements
    from ndc.conform import dbt
    from ndc.sharing.agreements import apply, approve

    suffix = c.metadata.rsplit("_", 1)[1]
    agencies_dir, agreements_dir = folder / "agencies", folder / "agreements"
    agencies_dir.mkdir()
    shutil.copytree(REPO / "dags/agreements", agreements_dir)
    today = date.today()
    for path in agreements_dir.glob("*.yml"):
        text = re.sub(r"^start: .*$", f"start: {today - timedelta(days=30)}", path.read_text(), flags=re.M)
        path.write_text(re.sub(r"^expires: .*$", f"expires: {today + timedelta(days=300)}", text, flags=re.M))
    roles = [f"ndc_test_approver_{suffix}"]
    for path in (REPO / "dags/agencies").glob("*.yml"):
        data = yaml.safe_load(path.read_text())
        for user in data["users"]:
            user["login"] += "_" + suffix
            roles.append(user["login"])
        (agencies_dir / path.name).write_text(yaml.safe_dump(data, allow_unicode=True))
    with database.connect(c.warehouse) as conn:
        database.ensure_meta(conn)
        conn.execute(f'create role "{roles[0]}" login in role ndc_approver')
        conn.execute(f'grant connect on database "{c.warehouse.rsplit("/", 1)[1]}" to "{roles[0]}"')
        conn.execute(f'grant insert, select on ndc_meta.agreement_approvals to "{roles[0]}"')
        conn.commit()
    agencies = load_agencies(agencies_dir)
    agreements = load_agreements(agreements_dir, agencies=agencies, shared=dbt.shared_models())
    for agreement in agreements.values():
        approve(c.warehouse.replace("postgres@", f"{roles[0]}@", 1), agreement, agencies[agreement.consumer],
                note="celery test")
    with database.connect(c.warehouse) as conn:
        assert sorted(apply(conn, c.warehouse, agencies=agencies, agreements=agreements).applied) == sorted(agreements)
    return roles


@pytest.mark.airflow
@pytest.mark.slow
def test_the_operators_page_in_a_real_browser(celery_cluster, tmp_path):
    """Log in through Airflow's form in Debian's Chromium, open the operator's page (an external view: an iframe
    of the plugin's app) and read figures that depend on the simulated data, each checked against the database."""
    c = celery_cluster
    roles = _apply_agreements(c, tmp_path)
    try:
        # A publish under the applied agreements delivers to each agency; it closes the stale-source alert.
        assert c.trigger("conform", "celery_conform_deliver") == "success"
        assert scalar(c.warehouse, "select count(*) from ndc_meta.alerts where closed_at is null") == 0
        rows_loaded = scalar(c.warehouse, "select rows_loaded from ndc_meta.ledger where kind = 'extract' and"
                             " target = 'landing_population.citizens' order by ledger_id desc limit 1")
        run_id = scalar(c.warehouse, "select run_id from ndc_meta.ledger where kind = 'extract' and"
                        " target = 'landing_population.citizens' order by ledger_id desc limit 1")
        deliveries = query(c.warehouse, "select l.details->>'consumer', count(*) from ndc_meta.ledger l where"
                           " kind = 'delivery' and outcome = 'success' group by 1 order by 1")
        assert len(deliveries) == 2, deliveries
        quarantined = scalar(c.warehouse, "select count(*) from quarantine.rows where replayed_at is null")
        assert quarantined > 0, "the simulated defects"

        base = f"http://127.0.0.1:{c.port}"
        with logged_in(base, c.api.password) as page:
            frame = operator_frame(page, base)
            cell = frame.get_by_test_id("last-load-rows-loaded-population.citizens")
            assert cell.get_attribute("data-value") == str(rows_loaded)
            assert cell.inner_text().replace(",", "") == str(rows_loaded)
            assert frame.get_by_test_id("last-load-run-population.citizens").inner_text() == run_id
            for agency, count in deliveries:
                assert frame.get_by_test_id(f"sharing-agency-{agency}").get_attribute("data-value") == str(count)
            assert frame.get_by_test_id("quarantine-total").inner_text().replace(",", "") == str(quarantined)
            # Every drawn datum carries data-point="<series>|<label>|<value>": one bar per agency delivered to
            # today, one point per day of contract results (rows passing and validations passing).
            sharing = frame.get_by_test_id("chart-sharing")
            assert sharing.is_visible()
            points = sorted(p.get_attribute("data-point") for p in sharing.locator("[data-point]").all())
            today = date.today().isoformat()[5:]
            assert points == sorted(f"{agency}|{today}|{count}" for agency, count in deliveries)
            days = scalar(c.warehouse, "select count(distinct day) from ndc_meta.contract_pass_rates")
            assert frame.get_by_test_id("chart-pass-rate").locator("[data-point]").count() == 2 * days > 0
            page.screenshot(path=str(ARTIFACTS / "airflow-ui-operator-page.png"))
            # The page itself at full length (the same app, authenticated by the login's cookie).
            page.goto(base + "/ndc/", wait_until="networkidle")
            assert page.get_by_test_id("last-load-rows-loaded-population.citizens").get_attribute(
                "data-value") == str(rows_loaded)
            page.screenshot(path=str(ARTIFACTS / "operator-page.png"), full_page=True)
        assert (ARTIFACTS / "operator-page.png").stat().st_size > 10_000
    finally:
        with psycopg.connect(c.warehouse, autocommit=True) as conn:
            for role in roles:
                if conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone():
                    conn.execute(f'drop owned by "{role}"')
                    conn.execute(f'drop role "{role}"')
