"""Benchmark of the conform DAG through a real scheduler against a plain ``dbt build`` of the same models.

On an already-loaded warehouse (landing tables filled): (a) ``dbt build`` of the project into the inactive build
schema, timed; (b) Airflow's api-server, scheduler, dag-processor and triggerer with LocalExecutor (metadata in
the same PostgreSQL server), ``conform`` unpaused and triggered once the processes are up (their startup is not
counted), polled until the run ends. The DAG time is the dag run's ``end_date - start_date`` in the metadata DB;
trigger-to-end is timed too. Every process is stopped at the end (SIGTERM to its process group, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psycopg

from ndc.conform import dbt
from ndc.errors import NdcError
from ndc.settings import get_settings
from ndc.warehouse import connections, database
from ndc_lab import cluster
from ndc_lab.cluster import Api as _Api
from ndc_lab.cluster import Processes as _Airflow
from ndc_lab.cluster import metadata_query, plain_url, say
from ndc_lab.demo import airflow_env, import_pools

# Settings that cut per-task overhead on a small machine (each may be overridden through ``settings``).
TUNED = {
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__PARALLELISM": "4",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "600",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    "NDC_CONFORM_NODES": "concurrent",
    "NDC_CONFORM_POLL_SECONDS": "0.5",
}


def _say(message: str) -> None:
    say(message, "bench conform")


def _query(metadata_url: str, statement: str, params=()) -> list[tuple]:
    return metadata_query(metadata_url, statement, params)


def running_airflow(env: dict[str, str], port: int, dag_id: str = "conform"):
    return cluster.running_airflow(env, port, (dag_id,), what="bench conform")


def bench_env(warehouse_url: str, *, airflow_db: str = "ndc_bench_airflow", port: int = 8080,
              settings: dict[str, str] | None = None) -> dict[str, str]:
    """Airflow's environment for the benchmark: the demo's (:func:`ndc_lab.demo.airflow_env`) with its own metadata
    database and home, LocalExecutor, the API server on ``port`` and the tuned settings."""
    metadata = connections.with_database(warehouse_url, airflow_db).replace(
        "postgresql://", "postgresql+psycopg2://", 1)
    env = {**airflow_env(warehouse_url), **TUNED,
           "AIRFLOW_HOME": str(get_settings().data_dir / f"airflow_{airflow_db}"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata,
           "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__HOST": "127.0.0.1",
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
           "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port + 713),
           "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(port + 714),
           "NDC_DBT_PROJECT_DIR": str(dbt.project_dir())}
    env.update(settings or {})
    return env


def forget_partial_parse() -> None:
    """Start dbt from a full parse, as every conform run does: the build schema (a dbt var) alternates between
    runs, and dbt reparses the whole project when a var changes. Both sides of the ratio pay the same."""
    (dbt.project_dir() / "target" / "partial_parse.msgpack").unlink(missing_ok=True)


def plain_dbt_build(warehouse_url: str) -> tuple[float, str]:
    """Seconds of ``dbt build --full-refresh`` of the project into the inactive build schema (what a full conform
    run builds; the DAG runs it compares with are full refreshes too)."""
    from ndc.conform.publish import inactive_schema
    from ndc.warehouse import database

    with database.connect(warehouse_url) as conn:
        database.ensure_meta(conn)
        schema = inactive_schema(conn)
    forget_partial_parse()
    started = time.monotonic()
    result = dbt.run(["build", "--full-refresh"], build_schema=schema)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise NdcError(f"dbt build failed:\n{result.output[-3000:]}")
    return elapsed, schema


def _prepared(warehouse_url: str, airflow_db: str, port: int, settings: dict[str, str] | None) -> dict[str, str]:
    os.environ["NDC_WAREHOUSE_URL"] = warehouse_url
    env = bench_env(warehouse_url, airflow_db=airflow_db, port=port, settings=settings)
    if not dbt.manifest_file().exists():
        _say("no manifest: dbt parse")
        dbt.parse()
    database.ensure_database(plain_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]))
    _say(f"metadata database {airflow_db}: migrate and import pools")
    import_pools(env)
    _Airflow(env).cli("dags", "reserialize")
    return env


def measure(warehouse_url: str | None = None, *, runs: int = 1, airflow_db: str = "ndc_bench_airflow",
            port: int = 8080, settings: dict[str, str] | None = None, dag_id: str = "conform",
            run_timeout: float = 900, interleave: bool = True) -> dict:
    """Plain ``dbt build`` (median of ``runs``, before Airflow starts) against ``runs`` runs of the ``conform``
    DAG through the scheduler; the figures of the last run, with every run's and the medians.

    ``interleave``: also time a plain ``dbt build`` just before each DAG run (Airflow idle) and take each run's
    ratio against it, which cancels out load from other users of the machine; the ratio against the median of
    the builds before Airflow started is ``ratio_vs_before_start``."""
    warehouse_url = warehouse_url or get_settings().warehouse_url
    env = _prepared(warehouse_url, airflow_db, port, settings)
    metadata = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    # The baseline first, with no Airflow process running (the machine has 2 cores).
    baselines = []
    for number in range(1, runs + 1):
        dbt_s, schema = plain_dbt_build(warehouse_url)
        baselines.append(dbt_s)
        _say(f"plain dbt build {number}/{runs} into {schema}: {dbt_s:.2f} s")
    dbt_s = sorted(baselines)[len(baselines) // 2]
    figures: list[dict] = []
    with running_airflow(env, port, dag_id) as (airflow, api):
        for number in range(1, runs + 1):
            paired = dbt_s
            if interleave:
                paired, schema = plain_dbt_build(warehouse_url)
                _say(f"plain dbt build before run {number} into {schema}: {paired:.2f} s")
            figure = _one_run(airflow, api, metadata, dag_id, paired, run_timeout, number, {"full_refresh": True})
            figure["ratio_vs_before_start"] = round(figure["dag_s"] / dbt_s, 2)
            figures.append(figure)
    last = dict(figures[-1])
    dag_times = [f["dag_s"] for f in figures]
    ratios = sorted(f["ratio"] for f in figures)
    last.update(runs=figures, dbt_build_before_start_s=[round(b, 2) for b in baselines], dag_runs_s=dag_times,
                dbt_build_paired_s=[f["dbt_build_s"] for f in figures], ratios=[f["ratio"] for f in figures],
                ratio_median=ratios[len(ratios) // 2],
                settings={k: v for k, v in env.items()
                          if k.startswith(("AIRFLOW__CORE__", "AIRFLOW__SCHEDULER__", "AIRFLOW__TRIGGERER__",
                                           "NDC_CONFORM", "NDC_DBT_PROJECT"))})
    return last


def _one_run(airflow: _Airflow, api: _Api, metadata: str, dag_id: str, dbt_s: float, timeout: float,
             number: int, conf: dict | None = None) -> dict:
    run_id = f"bench__{time.strftime('%Y%m%dT%H%M%S')}_{number}"
    forget_partial_parse()
    triggered = time.monotonic()
    api.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None,
                                                         "conf": conf or {}})
    _say(f"triggered {run_id}")
    deadline, state, seen = time.monotonic() + timeout, None, None
    while time.monotonic() < deadline:
        airflow.check_alive()
        rows = _query(metadata, "select state from dag_run where dag_id = %s and run_id = %s", (dag_id, run_id))
        state = rows[0][0] if rows else None
        if state in ("success", "failed"):
            break
        counts = _query(metadata, "select coalesce(state, 'none'), count(*) from task_instance where dag_id = %s"
                        " and run_id = %s group by 1 order by 1", (dag_id, run_id))
        if counts != seen:
            _say(f"  {time.monotonic() - triggered:5.1f} s {state}: " + ", ".join(f"{s} {n}" for s, n in counts))
            seen = counts
        time.sleep(0.5)
    trigger_to_end = time.monotonic() - triggered
    (start, end, state), = _query(metadata, "select start_date, end_date, state from dag_run where dag_id = %s"
                                  " and run_id = %s", (dag_id, run_id))
    tasks = _query(metadata, "select task_id, state, try_number, start_date, end_date from task_instance"
                   " where dag_id = %s and run_id = %s order by start_date nulls last, task_id", (dag_id, run_id))
    per_state: dict[str, int] = {}
    for _, task_state, *_ in tasks:
        per_state[task_state or "none"] = per_state.get(task_state or "none", 0) + 1
    dag_s = (end - start).total_seconds() if start and end else None
    result = {"run_id": run_id, "state": state, "dbt_build_s": round(dbt_s, 2),
              "dag_s": round(dag_s, 2) if dag_s else None, "trigger_to_end_s": round(trigger_to_end, 2),
              "ratio": round(dag_s / dbt_s, 2) if dag_s else None, "tasks": len(tasks), "per_state": per_state,
              "task_times": {t[0]: [t[1], t[2], round((t[4] - t[3]).total_seconds(), 2) if t[3] and t[4] else None,
                                    round((t[3] - start).total_seconds(), 2) if t[3] else None] for t in tasks}}
    _say(f"run {run_id}: {state}, DAG {result['dag_s']} s (trigger to end {trigger_to_end:.1f} s), "
         f"dbt build {dbt_s:.2f} s, ratio {result['ratio']}, {len(tasks)} tasks {per_state}")
    if state != "success" or set(per_state) != {"success"}:
        raise NdcError(f"conform run {run_id} did not succeed: {state}, tasks {per_state}\n"
                       + json.dumps(result["task_times"], indent=1))
    return result


def change_landing(warehouse_url: str, share: float) -> dict[str, int]:
    """What an incremental extract of ``share`` changed rows per table leaves for conform: that share of every
    landing table's current rows (picked by a hash of the key) re-stamped as loaded now. Returns rows per table."""
    from psycopg import sql

    from ndc.config.sources import load_sources
    from ndc.identifiers import ident
    from ndc.tasks import landing_target

    modulus = max(1, round(1 / share))
    changed = {}
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        for source in load_sources(get_settings().sources_dir):
            for table in source.tables:
                target = landing_target(source, table.name)
                key = sql.SQL(" || '|' || ").join(sql.SQL("{}::text").format(ident(c)) for c in table.primary_key)
                cur = conn.execute(sql.SQL(
                    "update {t} set _ndc_loaded_at = clock_timestamp() where _ndc_deleted_at is null"
                    " and abs(hashtext({key})) % {m} = 0").format(
                        t=ident(target.schema, target.table), key=key, m=sql.Literal(modulus)))
                changed[target.dataset] = cur.rowcount
    return changed


def measure_change(warehouse_url: str | None = None, *, share: float = 0.01, airflow_db: str = "ndc_bench_airflow",
                   port: int = 8080, settings: dict[str, str] | None = None, run_timeout: float = 1800,
                   runs: int = 3) -> dict:
    """The conform DAG end to end (freshness gate and plan, dbt build, gate 2 and publish) after ``share`` of the
    landing rows changed (a delta) vs the same DAG on a full refresh (``full_refresh`` param), through the
    scheduler, ``runs`` pairs; the median ratio. During each delta, the peak disk of the shared storage against the
    published shared tables' size (:class:`DiskSampler`)."""
    warehouse_url = warehouse_url or get_settings().warehouse_url
    env = _prepared(warehouse_url, airflow_db, port, settings)
    metadata = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    fulls, deltas, disks = [], [], []
    with running_airflow(env, port) as (airflow, api):
        warm = _one_run(airflow, api, metadata, "conform", 1.0, run_timeout, 0)  # first run after start is cold
        _say(f"warm-up run {warm['dag_s']} s")
        for number in range(1, runs + 1):
            fulls.append(_one_run(airflow, api, metadata, "conform", 1.0, run_timeout, 10 + number,
                                  {"full_refresh": True}))
            changed = change_landing(warehouse_url, share)
            _say(f"changed {sum(changed.values()):,} landing rows ({share:.0%} of each table)")
            with DiskSampler(warehouse_url) as disk:
                deltas.append(_one_run(airflow, api, metadata, "conform", 1.0, run_timeout, 20 + number))
            disks.append(disk.figures())
            _say(f"run {number}: full refresh {fulls[-1]['dag_s']} s, delta {deltas[-1]['dag_s']} s, "
                 f"ratio {deltas[-1]['dag_s'] / fulls[-1]['dag_s']:.3f}; disk {disks[-1]}")
    ratios = sorted(d["dag_s"] / f["dag_s"] for d, f in zip(deltas, fulls, strict=True))
    disk_ratios = sorted(d["peak_ratio"] for d in disks)
    return {"share": share, "rows_changed": changed, "runs": runs,
            "full_refresh_dag_s": [f["dag_s"] for f in fulls], "after_change_dag_s": [d["dag_s"] for d in deltas],
            "ratios": [round(r, 3) for r in ratios], "ratio": round(ratios[len(ratios) // 2], 3),
            "disk": disks, "disk_peak_ratio": disk_ratios[len(disk_ratios) // 2],
            "task_times": {"full_refresh": fulls[-1]["task_times"], "after_change": deltas[-1]["task_times"]}}


class DiskSampler:
    """Samples, every 0.2 s while a run publishes, the disk of the shared storage (``shared_a``, ``shared_b``,
    ``shared_delta``: tables, indexes, TOAST) and of the whole database; :meth:`figures` gives the peaks against
    the published shared tables' size afterwards."""

    SHARED = ("select coalesce(sum(pg_total_relation_size(c.oid)), 0) from pg_class c join pg_namespace n on"
              " n.oid = c.relnamespace where n.nspname = any(%s) and c.relkind = 'r'")

    def __init__(self, url: str) -> None:
        import threading

        self.url, self.peak_shared, self.peak_db, self.samples = url, 0, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            self.db_before = conn.execute("select pg_database_size(current_database())").fetchone()[0]
            while not self.stop.is_set():
                shared = conn.execute(self.SHARED, (["shared_a", "shared_b", "shared_delta"],)).fetchone()[0]
                size = conn.execute("select pg_database_size(current_database())").fetchone()[0]
                self.peak_shared, self.peak_db = max(self.peak_shared, shared), max(self.peak_db, size)
                self.samples += 1
                self.stop.wait(0.2)

    def __enter__(self) -> DiskSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def figures(self) -> dict:
        with psycopg.connect(self.url, autocommit=True) as conn:
            active = conn.execute("select build_schema from ndc_meta.publications order by publication_id desc"
                                  " limit 1").fetchone()[0]
            published = conn.execute(self.SHARED, ([active],)).fetchone()[0]
        return {"published_shared_bytes": published, "peak_shared_storage_bytes": self.peak_shared,
                "peak_ratio": round(self.peak_shared / published, 3) if published else None,
                "database_growth_bytes": self.peak_db - self.db_before, "samples": self.samples}


def load_bench_warehouse(server_url: str, citizens: int, seed: int = 7) -> str:
    """A fresh warehouse ``ndc_bench_conform`` on ``server_url``'s server with the five sources simulated at
    ``citizens`` and loaded (full history); the source databases are dropped afterwards. Returns its URL."""
    import tempfile

    from ndc.warehouse.database import drop_database, ensure_database
    from ndc_lab.simulate.all_sources import five_sources
    from ndc_lab.simulate.common import SourceSpec

    url = connections.with_database(server_url, "ndc_bench_conform")
    drop_database(url)
    ensure_database(url)
    os.environ["NDC_WAREHOUSE_URL"] = url
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as drops, five_sources(
            url, SourceSpec(citizens=citizens, seed=seed), run="bench", drops=Path(drops),
            mariadb_url=os.environ.get("NDC_BENCH_MARIADB_URL")):
        _say(f"five sources at {citizens:,} citizens loaded in {time.monotonic() - started:.0f} s")
    return url


def measure_gate2(warehouse_url: str | None = None) -> dict:
    """Gate 2's cost against the dbt build it guards, in one run on one warehouse:

    1. a plain ``dbt build`` into the inactive schema (the baseline), then gate 2 over it as on a first publish
       (every row of every shared relation validated), then publish;
    2. a second ``dbt build`` (same data), then gate 2 as on every later publish (only the rows that changed:
       ``build EXCEPT published``), then publish.
    Prints seconds and gate 2 ÷ dbt build for both."""
    from datetime import UTC, datetime

    from ndc.conform import build_audit
    from ndc.conform.publish import active_schema, publish
    from ndc.warehouse import database

    warehouse_url = warehouse_url or get_settings().warehouse_url
    figures: dict = {}
    for step in ("first_publish", "later_publish"):
        dbt_s, schema = plain_dbt_build(warehouse_url)
        relations = dbt.shared_models()
        with database.connect(warehouse_url) as conn:
            published = None if step == "first_publish" else active_schema(conn)
            started = time.monotonic()
            checked = build_audit.audit(conn, schema, published, relations, run_id=f"bench_gate2_{step}",
                                  as_of=datetime.now(UTC), accept_row_change=True)
            gate_s = time.monotonic() - started
            publish(conn, schema, relations, run_id=f"bench_gate2_{step}_publish", accept_row_change=True)
        figures[step] = {"dbt_build_s": round(dbt_s, 2), "gate2_s": round(gate_s, 2),
                         "ratio": round(gate_s / dbt_s, 3), "rows_checked": checked,
                         "rows_checked_total": sum(checked.values())}
        _say(f"{step}: dbt build {dbt_s:.1f} s, gate 2 {gate_s:.1f} s ({sum(checked.values()):,} rows checked),"
             f" ratio {gate_s / dbt_s:.3f}")
    return figures
