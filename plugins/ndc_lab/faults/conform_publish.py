"""Fault scenarios of conform, publish and the Celery worker (4, 7, 8): see :mod:`ndc_lab.faults`.

Each scenario makes its own databases (``ndc_fault_<n>_<random>``, dropped at the end) and loads the simulated
population source (20,000 citizens; the other sources stay never-loaded, so ``prepare_conform`` gives them empty
landing tables) through the real extract.

4 and 8 run ``ndc conform`` as an operator does: a subprocess with an explicit environment, dbt's target and logs
in the scenario's own folder (concurrent builds of the project do not share them). The fault lands where partial
state exists, placed by a lock a second session holds rather than by timing (at 20,000 citizens the whole dbt
build takes about 3 s):

- 4: a full build is published, then a delta (nothing changed) leaves its build in ``shared_delta``. After the
  source changes, the next run is a delta: a lock on the old ``shared_delta.citizens`` stops dbt when it swaps
  in the new ``citizens``: the other four shared models are rebuilt, ``citizens`` is not, dbt is alive. dbt is
  then SIGKILLed.
- 8: a full build is published; after the source changes, the next run is a delta. A SHARE lock on the
  published ``identity_exceptions`` stops its apply mid-way: gate 2's row checks passed and ``citizens``,
  ``data_quality_summary`` and ``enterprises`` are already written in the applying transaction. The whole
  ``ndc conform`` process group is then SIGKILLed. The rerun must publish every change exactly once: each shared
  view is compared with a full refresh of the same landing data (``ndc.conform.verify``: no duplicate, no loss).

7 runs Airflow's scheduler, API server, dag-processor, triggerer and a Celery worker (Redis, PostgreSQL metadata
of its own, a queue of its own), kills the worker's whole session with SIGKILL while ``extract_citizens`` is
staging batches, starts a new worker, and lets Airflow find the lost task by its missing heartbeats
(``[scheduler] task_instance_heartbeat_timeout``, lowered here) and retry it there.

The environment (``NDC_WAREHOUSE_URL``, ``AIRFLOW_CONN_NDC_SRC_POPULATION``, ``NDC_BATCH_BYTES``) is set only while
a scenario runs.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from ndc.conform import dbt
from ndc.errors import NdcError
from ndc.tasks import extract_table
from ndc_lab import cluster
from ndc_lab.faults import Outcome, scenario
from ndc_lab.faults.checks import SHARED_CONSISTENT as CONSISTENT
from ndc_lab.faults.checks import population_promises
from ndc_lab.faults.common import databases, environment, merged, ndc_command, query, scalar, spawn
from ndc_lab.simulate import population

log = logging.getLogger(__name__)

TITLES = {
    "4": "dbt killed (SIGKILL) mid-build of a delta; the next conform publishes a consistent version",
    "7": "Celery worker killed (SIGKILL) while running an extract task; Airflow retries it on a new worker",
    "8": "a delta's apply killed (SIGKILL) mid-way; consumers keep the last good version, the rerun loses nothing",
}
SPEC = population.PopulationSpec(citizens=20_000, seed=409, defect_rate=0.002)
START = datetime(2024, 7, 1, tzinfo=UTC)
LOADED = datetime(2026, 1, 1, tzinfo=UTC)  # the first load: everything the simulator wrote (SPEC.as_of)
CHANGED_AT = datetime(2026, 1, 15, 8, tzinfo=UTC)  # when the source changes after the last good build
CHANGES = (LOADED, datetime(2026, 2, 1, tzinfo=UTC))  # the extract interval that carries the changes
LANDING = ("citizens", "households", "residence_changes")
WAIT = 180.0
REDIS = os.environ.get("NDC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


# --- plumbing -------------------------------------------------------------------------------------------------


def _simulate(source_url: str) -> None:
    population.write(source_url, population.simulate(SPEC), SPEC)


def _load(end: datetime, run_id: str, start: datetime = START) -> None:
    """The population extract of ``[start, end)``, in this process (the scenario's environment)."""
    for table in LANDING:
        extract_table("population", table, start, end, run_id=run_id)


def _change_source(source_url: str) -> int:
    """What arrives after the last good build, stamped ``CHANGED_AT``: 300 new citizens (clean citizens' copies
    under new PINs of the same birth province, sex and year), 50 deaths and 150 new addresses. Only clean rows
    (none in the defect manifest) recorded after the 2025 reorganisation are used, so their province codes hold.
    Returns the source rows written."""
    clean = ("select c.*, row_number() over (order by pin) as n from citizens c where updated_at >= %(from)s"
             " and pin ~ '^[0-9]{12}$' and death_date is null and birth_date < date '2000-01-01' and not exists"
             " (select from simulator.defect_manifest m where m.table_name = 'citizens' and m.record_key = c.pin)")
    new_pin = "left(c.pin, 6) || lpad(((right(c.pin, 6)::int + 500000) %% 1000000)::text, 6, '0')"
    values = {"from": datetime(2025, 7, 2, tzinfo=UTC), "at": CHANGED_AT}
    with psycopg.connect(source_url, autocommit=True) as conn:
        added = conn.execute(
            "insert into citizens (pin, cmnd, full_name, birth_date, death_date, sex, ethnicity, household_id,"
            f" province_code, ward, address, updated_at) select {new_pin}, null, full_name, birth_date, null, sex,"
            f" ethnicity, household_id, province_code, ward, address, %(at)s from ({clean}) c where n <= 300"
            f" and not exists (select from citizens x where x.pin = {new_pin})", values).rowcount
        changed = conn.execute(
            f"update citizens c set updated_at = %(at)s, address = c.address || ' (cập nhật)', death_date = case"
            f" when chosen.n <= 350 then date '2025-11-15' end from ({clean}) chosen where chosen.pin = c.pin"
            " and chosen.n > 300 and chosen.n <= 500", values).rowcount
    return added + changed


def _wait(what: str, check: Callable[[], object], timeout: float = WAIT,
          proc: subprocess.Popen | None = None) -> object:
    """Poll ``check`` until it returns something true; NdcError when ``proc`` ended or time ran out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise NdcError(f"waiting for {what}: the process ended first (exit {proc.returncode})")
        time.sleep(0.1)
    raise NdcError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def _holding(url: str, statement: str) -> Iterator[int]:
    """A second session holding a lock (``statement``) in an open transaction; yields its backend pid."""
    with psycopg.connect(url, connect_timeout=10) as conn:
        conn.execute(statement)
        try:
            yield conn.info.backend_pid
        finally:
            conn.rollback()


def _blocked_by(url: str, holder: int) -> list[tuple[int, str]]:
    """Sessions waiting for a lock ``holder`` holds: (pid, statement)."""
    return query(url, "select pid, query from pg_stat_activity where %s = any(pg_blocking_pids(pid))", (holder,))


def _gone(url: str, pids: list[int]) -> bool:
    return not query(url, "select pid from pg_stat_activity where pid = any(%s)", (pids,))


# --- the conform runs (4 and 8) --------------------------------------------------------------------------------

@dataclass
class _Conform:
    """``ndc conform`` runs of one scenario, each a subprocess in a session of its own, logging to ``folder``."""

    warehouse: str
    source: str
    folder: Path
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {**os.environ, "NDC_WAREHOUSE_URL": self.warehouse, "AIRFLOW_CONN_NDC_SRC_POPULATION": self.source,
                    "DBT_TARGET_PATH": str(self.folder / "target"), "DBT_LOG_PATH": str(self.folder / "logs")}

    def start(self, run_id: str) -> subprocess.Popen:
        with (self.folder / f"{run_id}.log").open("wb") as out:
            return spawn([ndc_command(), "conform", "--run-id", run_id], env=self.env, stdout=out,
                         stderr=subprocess.STDOUT)

    def said(self, run_id: str) -> str:
        return (self.folder / f"{run_id}.log").read_text(errors="replace")

    def run(self, run_id: str) -> None:
        code = self.start(run_id).wait(WAIT)
        if code != 0:
            raise NdcError(f"ndc conform --run-id {run_id} exited {code}:\n{self.said(run_id)[-3000:]}")


@contextmanager
def _conform_scenario(server_url: str, number: str) -> Iterator[_Conform]:
    """Databases, environment and folder of scenario 4 or 8, with the population simulated in the source."""
    if not dbt.manifest_file().exists():
        dbt.parse()  # what `ndc dbt parse` does (CI and the images do it before)
    folder = Path(tempfile.mkdtemp(prefix=f"ndc-fault-{number}-"))
    try:
        with databases(server_url, number, "", "src") as (warehouse, source), \
                environment(NDC_WAREHOUSE_URL=warehouse, AIRFLOW_CONN_NDC_SRC_POPULATION=source):
            _simulate(source)
            yield _Conform(warehouse, source, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class _Published:
    """What consumers see: the last publication, the build schema(s) the ``shared`` views read, and citizens
    with province_statistics' population against the living citizens of its last month."""

    publication: tuple[int, str] | None
    view_schemas: frozenset[str]
    citizens: int
    population: int | None
    living: int

    def describe(self) -> str:
        return (f"publication {self.publication}, views on {sorted(self.view_schemas)}, {self.citizens:,} citizens,"
                f" population {self.population} vs {self.living} living")


def _published(url: str) -> _Published:
    with psycopg.connect(url, connect_timeout=10, autocommit=True) as conn:
        publication = conn.execute("select publication_id, build_schema from ndc_meta.publications"
                                   " order by publication_id desc limit 1").fetchone()
        schemas = {r[0] for r in conn.execute("select distinct table_schema from information_schema.view_table_usage"
                                              " where view_schema = 'shared'")}
        population_, living, citizens = conn.execute(CONSISTENT).fetchone()
    return _Published(tuple(publication) if publication else None, frozenset(schemas), citizens, population_,
                      living)


def _relations(url: str, schema: str) -> dict[str, int]:
    """Tables of ``schema`` by name, with their oid (a table dbt rebuilt has a new one)."""
    return dict(query(url, "select c.relname::text, c.oid::bigint from pg_class c join pg_namespace n"
                            " on n.oid = c.relnamespace where n.nspname = %s and c.relkind in ('r', 'p')", (schema,)))


def _unchanged(url: str, before: _Published, when: str) -> list[str]:
    now = _published(url)
    return [] if now == before else [f"{when}: consumers see {now.describe()}, expected {before.describe()}"]


def _published_whole(url: str, before: _Published, build: str) -> list[str]:
    """The rerun published into ``build`` (the schema the views read: a delta's is the one they read before)
    whole: one publication more, every view on it, citizens equal the living landing citizens, province_statistics
    reconciles with citizens, and the data changed since ``before``."""
    after = _published(url)
    landing = scalar(url, "select count(*) from landing_population.citizens where _ndc_deleted_at is null")
    problems = []
    if before.publication is None or after.publication != (before.publication[0] + 1, build):
        problems.append(f"after the rerun: publication {after.publication}, expected the next one from {build}")
    if after.view_schemas != {build}:
        problems.append(f"after the rerun: shared views read {sorted(after.view_schemas)}, expected only {build}")
    if after.citizens != landing:
        problems.append(f"after the rerun: shared.citizens has {after.citizens:,} rows, landing {landing:,} living")
    if after.population != after.living:
        problems.append(f"after the rerun: province_statistics does not reconcile ({after.describe()})")
    if after.citizens == before.citizens:
        problems.append(f"the rerun published as many citizens as before ({before.citizens:,}): nothing changed")
    return problems


def _dbt_pids(session: int) -> list[int]:
    """``dbt build`` processes in the session of an ``ndc conform`` (dbt runs as ``python …/bin/dbt build``)."""
    found = []
    for pid in cluster.session_members(session):
        with suppress(OSError):
            argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
            if "dbt" in {Path(a).name for a in argv[:2]} and "build" in argv:
                found.append(pid)
    return found


# --- 4. dbt killed mid-build ----------------------------------------------------------------------------------

def _dbt_paused(run: _Conform, proc: subprocess.Popen, holder: int, build: str, old: dict[str, int],
                models: set[str]) -> tuple[list[int], list[str]]:
    """Wait until dbt has rebuilt every shared model but ``citizens`` in ``build`` and waits for the lock on the
    old ``citizens``; returns the waiting sessions and the partial state's problems (none when it is partial)."""
    others = models - {"citizens"}

    def rebuilt() -> set[str]:
        now = _relations(run.warehouse, build)
        return {m for m in models if m in now and now[m] != old.get(m)}

    _wait("dbt to rebuild every shared model but citizens", lambda: rebuilt() >= others, proc=proc)
    waiting = _wait("dbt to wait for the lock on citizens", lambda: _blocked_by(run.warehouse, holder), proc=proc)
    done, dbt_alive = rebuilt(), _dbt_pids(proc.pid)
    log.info("fault 4: dbt (pids %s) rebuilt %s in %s and waits: %s", dbt_alive, sorted(done), build, waiting)
    problems = []
    if done != others or not dbt_alive:
        problems.append(f"no partial build: rebuilt {sorted(done)} of {sorted(models)}, dbt processes {dbt_alive}")
    if not any("citizens" in query for _, query in waiting):
        problems.append(f"dbt does not wait on citizens: {waiting}")
    return [pid for pid, _ in waiting], problems


@scenario("4", TITLES["4"])
def dbt_killed(server_url: str) -> Outcome:
    with _conform_scenario(server_url, "4") as run:
        _load(LOADED, "fault4_load")
        run.run("fault4_conform_1")  # a full build, into shared_a
        run.run("fault4_conform_2")  # a delta (nothing changed): its build stays in shared_delta
        before = _published(run.warehouse)
        build, published = "shared_delta", before.publication[1]
        changed = _change_source(run.source)
        _load(CHANGES[1], "fault4_changes", CHANGES[0])
        models, old = set(dbt.shared_models()), _relations(run.warehouse, build)
        with _holding(run.warehouse, f"lock table {build}.citizens in access exclusive mode") as holder:
            proc = run.start("fault4_killed")
            waiting, problems = _dbt_paused(run, proc, holder, build, old, models)
            problems += _unchanged(run.warehouse, before, "while dbt was building")
            for pid in _dbt_pids(proc.pid):
                os.kill(pid, signal.SIGKILL)
            code = proc.wait(WAIT)
        said = run.said("fault4_killed")
        if code == 0 or "nothing published" not in said:
            problems.append(f"ndc conform exited {code} after dbt was killed, saying: {said[-500:]!r}")
        _wait("the killed dbt's sessions to end", lambda: _gone(run.warehouse, waiting), 60)
        problems += _unchanged(run.warehouse, before, "after dbt was killed")
        if _relations(run.warehouse, build).get("citizens") != old.get("citizens"):
            problems.append(f"{build}.citizens was replaced by the killed build")
        run.run("fault4_rerun")
        problems += _published_whole(run.warehouse, before, published)
        log.info("fault 4: %d source citizens changed; before %s; after %s", changed, before.describe(),
                 _published(run.warehouse).describe())
        return merged(population_promises("4", TITLES["4"], run.warehouse, run.source), problems)


# --- 8. publish interrupted between gate 2 and the switch -----------------------------------------------------

class _Reader(threading.Thread):
    """A consumer reading both views in one statement, again and again, until stopped: (time, citizens) of every
    read, and each read where province_statistics and citizens disagree."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True, name="ndc-fault-8-reader")
        self.url, self.reads, self.mismatches = url, [], []
        self.error: Exception | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self.stop.is_set():
                    population_, living, citizens = conn.execute(CONSISTENT).fetchone()
                    self.reads.append((time.monotonic(), citizens))
                    if population_ != living:
                        self.mismatches.append((population_, living, citizens))
                    time.sleep(0.02)
        except Exception as exc:  # reported by the scenario
            self.error = exc

    def seen(self, since: float = 0.0, until: float = float("inf")) -> set[int]:
        return {citizens for moment, citizens in self.reads if since <= moment < until}


def _applying(run: _Conform, waiting: list[tuple[int, str]], published: str) -> list[str]:
    """Mid-way: the session waits to write ``identity_exceptions`` and has already written ``citizens``."""
    problems = []
    if not all("identity_exceptions" in query for _, query in waiting):
        problems.append(f"not waiting at identity_exceptions' apply: {waiting}")
    written = {r[0] for r in query(run.warehouse, "select c.relname::text from pg_locks l join pg_class c on"
                                                  " c.oid = l.relation join pg_namespace n on n.oid = c.relnamespace"
                                                  " where l.pid = any(%s) and l.mode = 'RowExclusiveLock'"
                                                  " and l.granted and n.nspname = %s",
                                   ([pid for pid, _ in waiting], published))}
    if not {"citizens", "enterprises"} <= written:
        problems.append(f"the apply had not written citizens and enterprises before it waited: {sorted(written)}")
    return problems


def _exactly_once(url: str) -> list[str]:
    """Every published view equals a full refresh of the same landing data (no duplicate, no loss)."""
    from ndc.conform.verify import verify
    from ndc.warehouse import database

    with database.connect(url) as conn:
        compared = verify(conn)
    return [f"after the rerun shared.{m} differs from a full refresh: {c.published_rows:,} rows vs {c.full_rows:,},"
            f" {c.only_published} only published, {c.only_full} only in the full refresh"
            for m, c in compared.items() if not c.equal]


def _reads(reader: _Reader, before: _Published, rerun_at: float) -> list[str]:
    reader.stop.set()
    reader.join(10)
    problems = [f"the consumer's reads failed: {reader.error}"] if reader.error else []
    if reader.mismatches:
        problems.append(f"a consumer saw citizens and province_statistics of different builds: {reader.mismatches[:3]}")
    early = reader.seen(until=rerun_at)
    if early != {before.citizens}:
        problems.append(f"before the rerun consumers saw citizens counts {sorted(early)}, expected {before.citizens}")
    return problems


@scenario("8", TITLES["8"])
def publish_interrupted(server_url: str) -> Outcome:
    with _conform_scenario(server_url, "8") as run:
        _load(LOADED, "fault8_load")
        run.run("fault8_conform_1")  # a full build
        before = _published(run.warehouse)
        published = before.publication[1]
        _change_source(run.source)
        _load(CHANGES[1], "fault8_changes", CHANGES[0])
        reader = _Reader(run.warehouse)
        reader.start()
        with _holding(run.warehouse, f"lock table {published}.identity_exceptions in share mode") as holder:
            proc = run.start("fault8_killed")  # a delta
            waiting = _wait("the apply to wait for identity_exceptions",
                            lambda: _blocked_by(run.warehouse, holder), WAIT, proc)
            log.info("fault 8: the apply waits mid-way: %s", waiting)
            problems = _applying(run, waiting, published)
            problems += _unchanged(run.warehouse, before, "while the apply was half done")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(WAIT)
        _wait("the killed publish's session to end", lambda: _gone(run.warehouse, [p for p, _ in waiting]), 60)
        time.sleep(0.5)  # the consumer reads on after the kill
        problems += _unchanged(run.warehouse, before, "after the publish was killed")
        rerun_at = time.monotonic()
        run.run("fault8_rerun")
        problems += _published_whole(run.warehouse, before, published)
        problems += _reads(reader, before, rerun_at)
        problems += _exactly_once(run.warehouse)
        return merged(population_promises("8", TITLES["8"], run.warehouse, run.source), problems)


# --- 7. a Celery worker dies while running a task -------------------------------------------------------------

RUN_ID = "fault7_extract"
WORKER = "ndc-fault-worker"
BATCH_BYTES = "8192"  # about 60 citizens a streamed batch: extract_citizens stages some 300 batches, for seconds
HEARTBEAT_TIMEOUT = "15"  # seconds without a task heartbeat before the scheduler fails (and retries) the task


def _redis_up() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=3).ping()
    except Exception as exc:  # the client raises several error types for an unreachable server
        raise NdcError(f"Redis at {REDIS} is unreachable: {exc}") from exc


def _airflow_env(warehouse: str, source: str, metadata: str, home: Path, port: int, queue: str) -> dict[str, str]:
    """The Celery test's settings (tests/airflow/test_celery.py), with this scenario's databases, queue and a short task
    heartbeat timeout (Airflow's default, 300 s, is how long a lost task waits before it is retried)."""
    from ndc_lab.bench.conform import TUNED
    from ndc_lab.demo import airflow_env

    return {**airflow_env(warehouse), **TUNED,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata.replace("postgresql://", "postgresql+psycopg2://", 1),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": REDIS,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
            "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(cluster.free_port()),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": HEARTBEAT_TIMEOUT,
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            # A task the killed worker had already taken from the queue (prefetched, not started) stays queued
            # until this timeout sends it again (Celery would redeliver it only after its 24 h visibility timeout).
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "5",
            "NDC_WAREHOUSE_URL": warehouse, "AIRFLOW_CONN_NDC_SRC_POPULATION": source,
            "NDC_BATCH_BYTES": BATCH_BYTES, "NDC_TASK_RETRIES": "2", "NDC_RETRY_DELAY_SECONDS": "1"}


def _worker(queue: str, tag: str, n: int) -> tuple[tuple[str, ...], dict[str, str]]:
    """``airflow celery worker`` number ``n``: its command and environment (a hostname of its own)."""
    command = ("celery", "worker", "--queues", queue, "--concurrency", "2", "--celery-hostname",
               f"{WORKER}-{n}@{tag}", "--skip-serve-logs")
    return command, {"AIRFLOW__CORE__HOSTNAME_CALLABLE": "ndc_lab.cluster.worker_hostname",
                     "NDC_WORKER_HOSTNAME": f"{WORKER}-{n}"}


def _citizens_task(metadata: str) -> tuple[str, int, str | None] | None:
    rows = cluster.metadata_query(metadata, "select state, try_number, hostname from task_instance where dag_id ="
                                  " 'extract_population' and run_id = %s and task_id = 'extract_citizens'", (RUN_ID,))
    return rows[0] if rows else None


def _staged(warehouse: str) -> tuple[int, int]:
    """Committed batches of the run's citizens, and how many of them are merged."""
    if scalar(warehouse, "select to_regclass('ndc_meta.batches') is null"):
        return 0, 0
    return tuple(query(warehouse, "select count(*), count(merged_at) from ndc_meta.batches where dataset ="
                                   " 'population.citizens' and run_id = %s", (RUN_ID,))[0])


def _kill_session(airflow: cluster.Processes, name: str) -> list[int]:
    """SIGKILL every process of ``name``'s session (the Celery worker, its pool and the task processes)."""
    proc = airflow.procs.pop(name)
    members = cluster.session_members(proc.pid)
    for pid in members:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(30)
    return members


def _worker_lost(airflow: cluster.Processes, metadata: str, warehouse: str) -> list[str]:
    """Kill the worker while extract_citizens stages batches; the partial state it leaves (problems if none)."""
    _wait("extract_citizens running with batches committed", lambda: (_citizens_task(metadata) or ("",))[0]
          == "running" and _staged(warehouse)[0] >= 3, WAIT)
    killed = _kill_session(airflow, "worker")
    task, (batches, merged) = _citizens_task(metadata), _staged(warehouse)
    landed = scalar(warehouse, "select count(*) from landing_population.citizens_history")
    log.info("fault 7: killed the worker's %d processes; extract_citizens %s; %d batches committed, %d merged, %d"
             " rows landed", len(killed), task, batches, merged, landed)
    problems = []
    if task is None or task[0] != "running" or task[2] != f"{WORKER}-1":
        problems.append(f"extract_citizens was not running on the killed worker: {task}")
    if not batches or merged or landed:
        problems.append(f"no partial state: {batches} batches committed, {merged} merged, {landed} rows landed")
    with suppress(NdcError):
        _wait("the killed worker's processes to end", lambda: not any(map(_alive, killed)), 15)
    if any(map(_alive, killed)):
        problems.append(f"processes of the killed worker's session survived SIGKILL: {killed}")
    return problems


def _alive(pid: int) -> bool:
    with suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] not in "ZX"
    return False


def _celery_run(env: dict[str, str], port: int, queue: str, tag: str, warehouse: str) -> list[str]:
    metadata = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    command, worker_env = _worker(queue, tag, 1)
    processes = {name: (name,) for name in cluster.LOCAL_PROCESSES} | {"worker": command}
    with cluster.running_airflow(env, port, ("extract_population",), processes=processes,
                                 process_env={"worker": worker_env}, what="fault 7") as (airflow, api):
        airflow.wait("the Celery worker", lambda: "ready" in airflow.log("worker").read_text(errors="replace"), 120)
        api.call("POST", "/api/v2/dags/extract_population/dagRuns", {
            "dag_run_id": RUN_ID, "logical_date": START.isoformat(), "conf": {},
            "data_interval_start": START.isoformat(), "data_interval_end": LOADED.isoformat()})
        problems = _worker_lost(airflow, metadata, warehouse)
        command, worker_env = _worker(queue, tag, 2)
        airflow.start("worker_2", *command, env=worker_env)
        state = cluster.wait_for_run(airflow, metadata, "extract_population", RUN_ID, WAIT + 120, "fault 7")
        task = _citizens_task(metadata)
    if state != "success" or task is None or task[0] != "success" or task[1] < 2 or task[2] != f"{WORKER}-2":
        problems.append(f"after the new worker: run {state}, extract_citizens (state, try, host) {task}; expected"
                        f" success on a later try on {WORKER}-2")
    return problems


@scenario("7", TITLES["7"])
def worker_killed(server_url: str) -> Outcome:
    from ndc_lab.demo import import_pools

    _redis_up()
    tag = secrets.token_hex(4)
    home = Path(tempfile.mkdtemp(prefix="ndc-fault-7-"))
    queue = f"ndc_fault_7_{tag}"
    try:
        with databases(server_url, "7", "", "src", "airflow") as (warehouse, source, metadata), \
                environment(NDC_WAREHOUSE_URL=warehouse, AIRFLOW_CONN_NDC_SRC_POPULATION=source):
            _simulate(source)
            port = cluster.free_port()
            env = _airflow_env(warehouse, source, metadata, home, port, queue)
            import_pools(env)  # airflow db migrate, then the sources' pools
            cluster.Processes(env).cli("dags", "reserialize")
            problems = _celery_run(env, port, queue, tag, warehouse)
            return merged(population_promises("7", TITLES["7"], warehouse, source), problems)
    finally:
        cluster.drop_queue(REDIS, queue)
        shutil.rmtree(home, ignore_errors=True)
