"""``ndc bench scale``: the platform at the seed's size (issue 19), on generated national configurations
(:mod:`ndc_lab.national`).

* **Parse time per DAG file** at 5, 600, 1,500 and 3,000 sources: every DAG file of the bundle parsed by Airflow's
  ``DagBag`` (the dag-processor's parser, with its 30 s ``dagbag_import_timeout``), one forked process per file as
  the dag-processor does. The figure is the slowest file's time and the ratio of the largest size to the smallest
  (target ≤ 2×: flat in the number of sources); the mean agency file's ratio is printed beside it.
* **A day's runs**: the 3,000-source bundle, every source starting two days ago, under a real dag-processor and
  scheduler (LocalExecutor, the deployment's scheduler settings) on a fresh metadata database; the time from start
  until the scheduler has created the first day's run of every extract DAG (3,000 daily sources: 3,000 runs; the
  next day's run waits for it, ``max_active_runs=1``), and until the dag-processor had serialized every DAG. The
  direct exchange is left out of the bundle (its catch-up from 2024 is not a day's runs). The sources' pools get 0
  slots, so the runs are created and queued but no task runs: this times the scheduler, not the sources.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ndc.errors import NdcError
from ndc.warehouse import connections, database
from ndc_lab import national
from ndc_lab.cluster import Processes, metadata_query, plain_url

SIZES = (5, 600, 1500, 3000)
IMPORT_TIMEOUT_S = 30  # Airflow's default [core] dagbag_import_timeout
CLOSED = "postgresql://nobody@127.0.0.1:9/nowhere"  # DAG files must parse with no database reachable
# The deployment's scheduler settings at the seed's size (docker-compose.yml sets the same).
SCHEDULER_AT_SCALE = {
    "AIRFLOW__SCHEDULER__MAX_DAGRUNS_TO_CREATE_PER_LOOP": "100",
    "AIRFLOW__SCHEDULER__MAX_DAGRUNS_PER_LOOP_TO_SCHEDULE": "100",
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "2",
}

# As the dag-processor parses: a parent with Airflow imported forks one child per DAG file; the child parses that
# one file with DagBag (under dagbag_import_timeout) and reports its import errors, DAG ids and seconds. What the
# file imports beyond Airflow (the platform's modules) is part of its time.
PARSE = """
import json, os, sys, time
from pathlib import Path
from airflow.dag_processing.dagbag import DagBag
import airflow.sdk  # noqa: F401
root = Path(sys.argv[1])
files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
found = {"errors": {}, "dags": [], "files": {}}
started = time.monotonic()
for path in files:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        began = time.monotonic()
        bag = DagBag(dag_folder=str(path), bundle_path=root)
        took = time.monotonic() - began
        with os.fdopen(write, "w") as out:
            json.dump({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dag_ids),
                       "seconds": took}, out)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as result:
        text = result.read()
    os.waitpid(pid, 0)
    one = json.loads(text) if text else {"errors": {str(path): "the parsing process died"}, "dags": [],
                                         "seconds": None}
    found["errors"].update(one["errors"])
    found["dags"] += one["dags"]
    found["files"][path.relative_to(root).as_posix()] = one["seconds"]
found["wall"] = time.monotonic() - started
print(json.dumps(found))
"""


def parse_env(dags: Path, home: Path) -> dict[str, str]:
    """The environment of a parse: no NDC_/AIRFLOW setting inherited; the DAG bundle ``dags``; the warehouse, every
    source connection and the metadata database on a closed port (parsing must touch none of them)."""
    from ndc.config.sources import load_sources

    env = {k: v for k, v in os.environ.items() if not k.startswith(("NDC_", "AIRFLOW"))}
    env.update(NDC_WAREHOUSE_URL=CLOSED, NDC_DAGS_DIR=str(dags), AIRFLOW_HOME=str(home),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__CORE__UNIT_TEST_MODE="True",
               AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT=str(IMPORT_TIMEOUT_S),
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=CLOSED.replace("postgresql://", "postgresql+psycopg2://"))
    for source in load_sources(dags / "sources", problems=[]):  # a broken file is the parse's to report
        env[f"AIRFLOW_CONN_{source.connection.conn_id.upper()}"] = CLOSED
    return env


def parse_bundle(dags: Path, home: Path) -> dict:
    """Every DAG file of ``dags`` parsed as the dag-processor does (one forked process per file), no database
    reachable: import errors (file → message), DAG ids, seconds per file (whole file: its imports beyond Airflow,
    its config, its DAGs), the slowest file."""
    env = parse_env(dags, home)
    out = subprocess.run([sys.executable, "-c", PARSE, str(dags)], env=env, capture_output=True, text=True,
                         check=False, timeout=1800)
    if out.returncode != 0:
        raise NdcError(f"parsing {dags} failed:\n{(out.stdout + out.stderr)[-3000:]}")
    found = json.loads(out.stdout.strip().splitlines()[-1])
    seconds = {f: s for f, s in found["files"].items() if s is not None}
    found["slowest"] = max(seconds.items(), key=lambda kv: kv[1]) if seconds else (None, 0.0)
    return found


def parse_figures(sizes: tuple[int, ...] = SIZES, say: Callable[[str], None] = print,
                  work: Path | None = None) -> dict:
    """Per-file parse time at each size (sources; agencies: 95, or fewer for a small size)."""
    work = work or Path(tempfile.mkdtemp(prefix="ndc-bench-scale-"))
    rows = []
    for size in sizes:
        bundle = national.generate(work / f"n{size}", size, min(95, size))
        found = parse_bundle(bundle.dags, work / f"home{size}")
        if found["errors"]:
            raise NdcError(f"{size} sources: import errors {found['errors']}")
        per_file = sorted(s for s in found["files"].values() if s is not None)
        agency_files = [s for f, s in found["files"].items() if f.startswith("extract/") or "/extract/" in f]
        row = {"sources": size, "agencies": bundle.agencies, "dag_files": len(per_file), "dags": len(found["dags"]),
               "expected_dags": bundle.expected_dags, "max_file_s": round(per_file[-1], 3),
               "slowest_file": found["slowest"][0],
               "median_file_s": round(statistics.median(per_file), 3),
               "mean_agency_file_s": round(statistics.mean(agency_files), 3) if agency_files else None,
               "sum_s": round(sum(per_file), 2), "wall_s": round(found["wall"], 2)}
        say(f"  {size:>5} sources, {row['dag_files']} files, {row['dags']} DAGs: slowest file {row['max_file_s']} s"
            f" ({row['slowest_file']}), median {row['median_file_s']} s, mean agency file "
            f"{row['mean_agency_file_s']} s, all files {row['sum_s']} s")
        rows.append(row)
    first, last = rows[0], rows[-1]
    return {"sizes": rows, "max_file_ratio": round(last["max_file_s"] / first["max_file_s"], 2),
            "mean_agency_file_ratio": round(last["mean_agency_file_s"] / first["mean_agency_file_s"], 2),
            "target_ratio": 2.0, "work": str(work)}


def _pools(bundle: national.National, slots: int) -> dict:
    from ndc.config.sources import load_sources, pools

    defined = pools(load_sources(bundle.dags / "sources"))
    return {name: {**pool, "slots": slots} for name, pool in defined.items()}


def scheduler_day(warehouse_url: str, *, sources: int = 3000, airflow_db: str = "ndc_bench_scale_airflow",
                  timeout: float = 3600, say: Callable[[str], None] = print, work: Path | None = None) -> dict:
    """Seconds until a real scheduler has created every due run of the 3,000-source bundle (see the module)."""
    from ndc_lab.bench.conform import bench_env

    work = work or Path(tempfile.mkdtemp(prefix="ndc-bench-scale-day-"))
    start = (datetime.now(UTC) - timedelta(days=2)).date()
    bundle = national.generate(work / "national", sources, 95, start_date=start)
    (bundle.dags / "exchanges.py").unlink()
    expected = bundle.expected_dags - 1
    env = {**bench_env(warehouse_url, airflow_db=airflow_db), **SCHEDULER_AT_SCALE,
           "AIRFLOW__CORE__DAGS_FOLDER": str(bundle.dags), "NDC_DAGS_DIR": str(bundle.dags),
           "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
           "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
           "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
           "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": str(IMPORT_TIMEOUT_S)}
    metadata = plain_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    database.drop_database(metadata)
    database.ensure_database(metadata)
    home = Path(env["AIRFLOW_HOME"])
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    airflow = Processes(env, log_dir="scale_logs")
    say(f"  metadata database {connections.database_of(metadata)}: migrate, {sources} pools with 0 slots")
    airflow.cli("db", "migrate", timeout=900)
    pool_file = work / "pools.json"
    pool_file.write_text(json.dumps(_pools(bundle, 0)), encoding="utf-8")
    started = time.monotonic()
    airflow.cli("pools", "import", str(pool_file), timeout=900)
    pools_s = time.monotonic() - started
    extract_dags = sources
    figures: dict = {"sources": sources, "agencies": bundle.agencies, "expected_dags": expected,
                     "start_date": start.isoformat(), "pools_import_s": round(pools_s, 1),
                     "scheduler_settings": SCHEDULER_AT_SCALE}
    try:
        started = time.monotonic()
        airflow.start("dag-processor")
        airflow.start("scheduler")
        serialized_at = done_at = None
        last_said = 0.0
        while time.monotonic() - started < timeout:
            airflow.check_alive()
            now = time.monotonic() - started
            dags, with_run, runs = metadata_query(metadata, """
                select (select count(*) from dag where dag_id like 'extract\\_%%'),
                       count(distinct dag_id), count(*)
                from dag_run where dag_id like 'extract\\_%%'""")[0]
            serialized = metadata_query(metadata, "select count(*) from serialized_dag")[0][0]
            if serialized_at is None and serialized >= expected:
                serialized_at = now
                say(f"  {now:6.0f} s: every DAG serialized ({serialized})")
            if with_run >= extract_dags:
                done_at = now
                break
            if now - last_said >= 30:
                last_said = now
                say(f"  {now:6.0f} s: {serialized} DAGs serialized, {dags} extract DAGs known, {runs} runs "
                    f"created, {extract_dags - with_run} extract DAGs without their day's run")
            time.sleep(2)
        errors = metadata_query(metadata, "select filename, left(stacktrace, 300) from import_error")
        by_state = dict(metadata_query(metadata, "select state, count(*) from dag_run group by 1"))
        figures.update({"serialized_s": round(serialized_at, 1) if serialized_at is not None else None,
                        "runs_created_s": round(done_at, 1) if done_at is not None else None,
                        "runs": metadata_query(metadata, "select count(*) from dag_run where dag_id like"
                                               " 'extract\\_%%'")[0][0],
                        "runs_by_state": by_state, "import_errors": len(errors), "target_s": 600})
        if errors:
            figures["first_import_error"] = errors[0]
        if done_at is None:
            figures["timed_out_after_s"] = timeout
    finally:
        airflow.stop()
    return figures
