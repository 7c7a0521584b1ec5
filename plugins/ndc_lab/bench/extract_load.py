"""``ndc bench el``: the extract-and-load benchmark. Every figure is measured in the same run, on the same data,
and printed as a ratio against the raw limit measured beside it (machines here are small and noisy).

For each size N a citizen table (the population contract's 12 columns, valid rows) is generated in SQL with
``generate_series`` in a source database, then:

- **(a) raw limit**: the faster of ``psql \\copy ... to stdout (format binary) | psql \\copy ... from stdin`` and a
  psycopg 3 binary ``COPY TO STDOUT`` -> ``COPY FROM STDIN`` pipe (1 MiB writes), into a table with a primary-key
  btree on a text key, like landing's;
- **(b) validated load**: the platform's extract of the whole table in a fresh subprocess (stream -> cast and
  NFC -> pandera gate -> quarantine -> COPY into the landing stage -> ledger), its peak RSS measured there;
- **(c) merge**: the same run's merge of the staged rows into history and latest state (dedupe, version hash,
  append, upsert), timed separately;
- **no-change incremental run**: the next daily interval, in which nothing changed, against (b)+(c);
- **rerun of a merged interval** (the first size only): the whole interval extracted again; its merge (every
  row already landed, nothing new) against the first load's merge;
- **(d) reported baselines** on 100,000 rows, extrapolated as rows/s: an Airflow ``GenericTransfer``-style
  psycopg2 ``executemany`` and psycopg 3's pipelined ``executemany``;
- **(e) dlt**: dlt's fastest merge configuration (``sql_table`` with the ConnectorX backend, merge on the key) on
  the same source table and server, in a fresh process; with the ``bench`` extra installed
  (``pip install -e .[bench]``), else the figure says so.

``rounds`` > 1 interleaves (a), (b)+(c) and (e) round after round on the same table and reports the median of
each (the first round alone also measures the rerun of a merged interval); machines here are noisy, and a
one-shot comparison moves with whatever else runs.
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
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from ndc.reference import new_codes, old_codes
from ndc.warehouse import connections, database

COLUMNS = ["pin", "cmnd", "full_name", "birth_date", "death_date", "sex", "ethnicity", "household_id",
           "province_code", "ward", "address", "updated_at"]
TYPES = ("pin text, cmnd text, full_name text, birth_date date, death_date date, sex text, ethnicity text,"
         " household_id text, province_code text, ward text, address text, updated_at timestamptz")
SURNAMES = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Vũ", "Đặng", "Bùi", "Phan", "Võ"]
MIDDLES = ["Văn", "Thị", "Hữu", "Đức", "Minh", "Ngọc", "Thu", "Quang", "Thanh", "Xuân"]
FIRSTS = ["An", "Bình", "Cường", "Dũng", "Giang", "Hương", "Khánh", "Linh", "Mai", "Nam", "Phương", "Quân",
          "Sơn", "Thảo", "Trang", "Tuấn", "Uyên", "Việt", "Yến", "Đạt"]
GENERATE = """
create table citizens as
select pin, cmnd, full_name, birth_date, null::date as death_date, sex, 'Kinh'::text as ethnicity,
       'HK1' || lpad((i / 3)::text, 9, '0') as household_id,
       case when updated_at < timestamptz '2025-06-30 17:00:00+00'
            then (%(old)s::text[])[1 + i %% 63] else (%(new)s::text[])[1 + i %% 34] end as province_code,
       'Phường ' || (1 + i %% 40)::text as ward,
       'Số ' || (1 + i %% 300)::text || ' đường ' || (%(firsts)s::text[])[1 + i %% 20] as address, updated_at
from (
  select i, birth_date, sex, updated_at,
         '0' || (%(old)s::text[])[1 + i %% 63]
             || ((extract(year from birth_date)::int / 100 - 19) * 2 + case sex when 'F' then 1 else 0 end)::text
             || lpad((extract(year from birth_date)::int %% 100)::text, 2, '0')
             || lpad((i / 63 %% 1000000)::text, 6, '0') as pin,
         case when i %% 3 = 0 then lpad((i * 7 %% 1000000000)::text, 9, '0') end as cmnd,
         (%(surnames)s::text[])[1 + i %% 10] || ' ' || (%(middles)s::text[])[1 + (i / 10) %% 10] || ' '
             || (%(firsts)s::text[])[1 + (i / 100) %% 20] as full_name
  from (select i, date '1930-01-01' + (i * 7919 %% 27000)::int as birth_date,
               case when i %% 2 = 0 then 'M' else 'F' end as sex,
               timestamptz '2024-07-01 00:00:00+00' + make_interval(secs => (i::bigint * 37) %% 47000000)
                   as updated_at
        from generate_series(1::bigint, %(rows)s) as i) g
) x
"""
SOURCE_FILE = """name: bench
description: generated citizens for `ndc bench el`
owner_agency: benchmark
connection_model: centralised
connection: {conn_id: ndc_src_bench, engine: postgresql}
schedule: "@daily"
start_date: 2024-07-01
full_compare_schedule: null
tables:
  - {name: citizens, source_table: citizens, primary_key: [pin], incremental_column: updated_at,
     contract: population.citizens}
"""


@dataclass
class SizeResult:
    rows: int
    raw: dict[str, float] = field(default_factory=dict)     # method -> seconds (median of the rounds)
    load: dict = field(default_factory=dict)                # the child's figures (the median round's)
    dlt: dict = field(default_factory=dict)                 # dlt's seconds (median) and version, or why not
    rounds: list[dict] = field(default_factory=list)        # every round's seconds


# dlt's fastest merge configuration on this machine (STACK.md, 2026-12-06: ConnectorX 21.7 s, pyarrow 26.1 s,
# SQLAlchemy 80.3 s at 1,000,000 rows): the whole pipeline (extract, normalize, load) timed in a fresh process.
DLT_MERGE = """
import json, sys, tempfile, time
import dlt
from dlt.sources.sql_database import sql_table
with tempfile.TemporaryDirectory() as folder:
    pipeline = dlt.pipeline(pipeline_name="ndc_bench_dlt", destination=dlt.destinations.postgres(sys.argv[2]),
                            dataset_name="bench_dlt", pipelines_dir=folder)
    began = time.perf_counter()
    pipeline.run(sql_table(credentials=sys.argv[1], table="citizens", backend="connectorx", primary_key="pin",
                           write_disposition="merge"))
    seconds = time.perf_counter() - began
print(json.dumps({"seconds": seconds, "version": dlt.__version__}))
"""
DLT_CONFIG = "sql_table, ConnectorX backend, merge on the key"


def dlt_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("dlt", "connectorx", "pyarrow"))


def dlt_merge(source_url: str, target_url: str) -> dict:
    """dlt's fastest merge configuration from the source table into a fresh database; seconds and version."""
    database.drop_database(target_url)
    database.ensure_database(target_url)
    # dlt's PostgreSQL destination insists on a password; a server that trusts loopback ignores the one given
    env = {**os.environ}
    if not urlsplit(target_url).password:
        env["DESTINATION__POSTGRES__CREDENTIALS__PASSWORD"] = "unused-on-a-trusting-server"  # noqa: S105
    out = subprocess.run([sys.executable, "-c", DLT_MERGE, source_url, target_url], capture_output=True, text=True,
                         check=False, env=env)
    database.drop_database(target_url)
    if out.returncode:
        raise RuntimeError(f"the dlt load failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _seconds(action) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def generate(source_url: str, rows: int) -> None:
    database.drop_database(source_url)
    database.ensure_database(source_url)
    with psycopg.connect(source_url, autocommit=True) as conn:
        conn.execute("set timezone = 'UTC'")
        conn.execute(GENERATE, {"rows": rows, "old": list(old_codes()), "new": list(new_codes()),
                                "surnames": SURNAMES, "middles": MIDDLES, "firsts": FIRSTS})
        conn.execute("create index on citizens (updated_at)")
        conn.execute("vacuum analyze citizens")


def _raw_table(target_url: str) -> None:
    with psycopg.connect(target_url, autocommit=True) as conn:
        conn.execute(f"drop table if exists raw_citizens; create table raw_citizens ({TYPES}, primary key (pin))")


def psql_pipe(source_url: str, target_url: str) -> float:
    _raw_table(target_url)
    psql = shutil.which("psql")
    if psql is None:
        from ndc.warehouse.embedded import tool

        psql = tool("psql")
    out_cmd = [psql, "-X", "-q", source_url, "-c", f"\\copy (select {', '.join(COLUMNS)} from citizens) to stdout"
               " (format binary)"]
    in_cmd = [psql, "-X", "-q", target_url, "-c", "\\copy raw_citizens from stdin (format binary)"]
    began = time.perf_counter()
    producer = subprocess.Popen(out_cmd, stdout=subprocess.PIPE)
    consumer = subprocess.run(in_cmd, stdin=producer.stdout, capture_output=True, check=False)
    producer.stdout.close()
    producer.wait()
    seconds = time.perf_counter() - began
    if producer.returncode or consumer.returncode:
        raise RuntimeError(f"psql pipe failed: {consumer.stderr.decode()[-500:]}")
    return seconds


def psycopg_pipe(source_url: str, target_url: str) -> float:
    _raw_table(target_url)
    began = time.perf_counter()
    with psycopg.connect(source_url) as src, psycopg.connect(target_url) as dst:
        copy_out = f"copy (select {', '.join(COLUMNS)} from citizens) to stdout (format binary)"
        with src.cursor().copy(copy_out) as out, dst.cursor().copy(
                "copy raw_citizens from stdin (format binary)") as into:
            pending = bytearray()
            for block in out:
                pending += block
                if len(pending) >= 1 << 20:
                    into.write(pending)
                    pending = bytearray()
            if pending:
                into.write(pending)
    return time.perf_counter() - began


def executemany_rates(source_url: str, target_url: str, rows: int = 100_000) -> dict[str, float]:
    """Rows/s of row-at-a-time inserts: psycopg2 ``executemany`` (what GenericTransfer does) and psycopg 3's
    pipelined ``executemany``, on ``rows`` rows."""
    import psycopg2

    with psycopg.connect(source_url) as src:
        data = src.execute(f"select {', '.join(COLUMNS)} from citizens order by pin limit %s", (rows,)).fetchall()
    insert = f"insert into raw_citizens ({', '.join(COLUMNS)}) values ({', '.join(['%s'] * len(COLUMNS))})"
    rates = {}
    _raw_table(target_url)
    conn = psycopg2.connect(target_url)
    began = time.perf_counter()
    with conn, conn.cursor() as cur:
        cur.executemany(insert, data)
    rates["psycopg2 executemany (GenericTransfer-style)"] = len(data) / (time.perf_counter() - began)
    conn.close()
    _raw_table(target_url)
    began = time.perf_counter()
    with psycopg.connect(target_url) as conn, conn.cursor() as cur:
        cur.executemany(insert, data)
    rates["psycopg 3 pipelined executemany"] = len(data) / (time.perf_counter() - began)
    return rates


CHILD = """
import json, os, resource, sys, time
from datetime import datetime, timezone
from ndc.tasks import extract_table
full = extract_table("bench", "citizens", datetime(2024, 7, 1, tzinfo=timezone.utc),
                     datetime(2026, 1, 1, tzinfo=timezone.utc), run_id="bench-full", full_refresh=True)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
began = time.perf_counter()
quiet = extract_table("bench", "citizens", datetime(2026, 1, 1, tzinfo=timezone.utc),
                      datetime(2026, 1, 2, tzinfo=timezone.utc), run_id="bench-no-change")
no_change = time.perf_counter() - began
rerun = None
if os.environ.get("NDC_BENCH_RERUN"):
    again = extract_table("bench", "citizens", datetime(2024, 7, 1, tzinfo=timezone.utc),
                          datetime(2026, 1, 1, tzinfo=timezone.utc), run_id="bench-rerun", full_refresh=True)
    rerun = {"merging": again.seconds_merging, "steps": again.merge_steps, "new_versions": again.rows_new_versions}
print(json.dumps({"rerun": rerun, "staging": full.seconds_staging, "merging": full.seconds_merging,
                  "steps": full.merge_steps, "rows_in": full.rows_in,
                  "loaded": full.rows_loaded, "quarantined": full.rows_quarantined, "batches": full.batches,
                  "peak_rss": rss, "no_change": no_change, "no_change_rows": quiet.rows_in}))
"""


def platform_load(source_url: str, warehouse_url: str, sources_dir: Path, rerun: bool = False) -> dict:
    """The platform's extract of the whole table, in a fresh process (so its peak RSS is its own); ``rerun``:
    then the same interval again."""
    database.drop_database(warehouse_url)
    database.ensure_database(warehouse_url)
    env = {**os.environ, "NDC_WAREHOUSE_URL": warehouse_url, "NDC_SOURCES_DIR": str(sources_dir),
           "AIRFLOW_CONN_NDC_SRC_BENCH": source_url, "NDC_BENCH_RERUN": "1" if rerun else ""}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"the platform load failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_size(server_url: str, rows: int, echo, prefix: str = "ndc_bench", rerun: bool = False,
             rounds: int = 1) -> SizeResult:
    source_url = connections.with_database(server_url, f"{prefix}_source")
    target_url = connections.with_database(server_url, f"{prefix}_raw")
    warehouse_url = connections.with_database(server_url, f"{prefix}_warehouse")
    dlt_url = connections.with_database(server_url, f"{prefix}_dlt")
    result = SizeResult(rows)
    echo(f"[{rows:,} rows] generating the source table in SQL ...")
    generate(source_url, rows)
    database.drop_database(target_url)
    database.ensure_database(target_url)
    with_dlt = dlt_installed()
    if not with_dlt:
        result.dlt = {"installed": False, "note": "dlt is not installed: pip install -e .[bench] to measure it"}
        echo(f"[{rows:,} rows] (e) {result.dlt['note']}")
    loads, dlt_runs = [], []
    for number in range(1, rounds + 1):
        tag = f"[{rows:,} rows, round {number}/{rounds}]" if rounds > 1 else f"[{rows:,} rows]"
        echo(f"{tag} (a) raw pipes ...")
        raw = {"psql binary pipe": psql_pipe(source_url, target_url),
               "psycopg 3 binary pipe": psycopg_pipe(source_url, target_url)}
        echo(f"{tag} (b)+(c) the platform's validated load, in a fresh process ...")
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "bench.yml").write_text(SOURCE_FILE, encoding="utf-8")
            load = platform_load(source_url, warehouse_url, Path(folder), rerun and number == 1)
        loads.append(load)
        seconds = {**raw, "platform": load["staging"] + load["merging"]}
        if with_dlt:
            echo(f"{tag} (e) dlt ({DLT_CONFIG}), in a fresh process ...")
            dlt_runs.append(dlt_merge(source_url, dlt_url))
            seconds["dlt"] = dlt_runs[-1]["seconds"]
        result.rounds.append(seconds)
    result.raw = {m: statistics.median_high([r[m] for r in result.rounds]) for m in raw}
    middle = statistics.median_high([r["platform"] for r in result.rounds])
    result.load = next(load for load in loads if load["staging"] + load["merging"] == middle)
    if rerun and not result.load.get("rerun"):
        result.load = {**result.load, "rerun": loads[0]["rerun"]}
    if with_dlt:
        result.dlt = {"installed": True, "seconds": statistics.median_high([d["seconds"] for d in dlt_runs]),
                      "version": dlt_runs[0]["version"], "config": DLT_CONFIG}
    return result


def report(results: list[SizeResult], baselines: dict[str, float], echo) -> dict:
    figures: dict = {"sizes": []}
    best_d = max(baselines.values())
    for r in results:
        size = _size_figures(r, best_d)
        figures["sizes"].append(size)
        load, steps = r.load, r.load["steps"]
        echo(f"\n== {r.rows:,} rows ==")
        for method, rate in size["raw"].items():
            echo(f"  (a) {method:<44} {rate:>11,.0f} rows/s  ({r.rows / rate:.2f} s)")
        echo(f"  (b) validated load into landing history     {size['b_rows_per_s']:>11,.0f} rows/s  "
             f"({size['b_seconds']:.2f} s = read/gate/hash/COPY into the stage {load['staging']:.2f} s"
             f" + dedupe and the stage attached as history {size['b_seconds'] - load['staging']:.2f} s;"
             f" {load['batches']} batches, {load['quarantined']:,} quarantined)")
        echo(f"  (c) latest state (upsert of the new versions) {r.rows / steps['latest']:>9,.0f} rows/s  "
             f"({steps['latest']:.2f} s)")
        echo(f"      merge steps (s): {json.dumps(steps)}")
        echo(f"  b/a = {size['b_over_a']:.2f} (target >= 0.6);  stage alone / a = {size['stage_over_a']:.2f};"
             f"  (b+c)/a = {size['b_plus_c_over_a']:.2f};  b/d = {size['b_over_d']:.1f}")
        echo(f"  peak RSS of (b)+(c): {size['peak_rss_mb']:.0f} MB;  no-change incremental run: "
             f"{load['no_change']:.2f} s ({load['no_change_rows']} rows read) = "
             f"{size['no_change_over_full']:.3f} of the full load (target <= 0.05)")
        if r.dlt.get("installed"):
            echo(f"  (e) dlt {r.dlt['version']} ({r.dlt['config']}): {r.dlt['seconds']:.2f} s;  platform (history"
                 f" and latest) is {size['platform_over_dlt']:.2f}x as fast (target >= 3)")
        else:
            echo(f"  (e) dlt: not measured ({r.dlt.get('note')})")
        if len(r.rounds) > 1:
            echo(f"  medians of {len(r.rounds)} interleaved rounds; every round (s): {json.dumps(r.rounds)}")
        if load.get("rerun"):
            echo(f"  rerun of the merged interval: merge {load['rerun']['merging']:.2f} s "
                 f"({load['rerun']['new_versions']} new versions) = {size['rerun_merge_over_first']:.2f} of the "
                 f"first load's merge {load['merging']:.2f} s; steps {json.dumps(load['rerun']['steps'])}")
    echo("\n(d) row-at-a-time baselines (100,000 rows, extrapolated):")
    for method, rate in baselines.items():
        echo(f"  {method:<48} {rate:>9,.0f} rows/s")
    if len(results) > 1:
        growth = results[-1].load["peak_rss"] / results[0].load["peak_rss"]
        figures["rss_growth"] = growth
        echo(f"\npeak RSS at {results[-1].rows:,} / at {results[0].rows:,}: {growth:.2f} (target <= 1.2; "
             f"and <= 600 MB)")
    figures["baselines"] = baselines
    return figures


def _size_figures(r: SizeResult, best_d: float) -> dict:
    a_rate = r.rows / min(r.raw.values())
    load, steps = r.load, r.load["steps"]
    full = load["staging"] + load["merging"]
    b_seconds = full - steps["latest"]
    b_rate = r.rows / b_seconds
    return {"rows": r.rows, "raw": {k: r.rows / v for k, v in r.raw.items()}, "a_rows_per_s": a_rate,
            "b_seconds": b_seconds, "b_rows_per_s": b_rate, "c_seconds": steps["latest"],
            "b_over_a": b_rate / a_rate, "stage_over_a": r.rows / load["staging"] / a_rate,
            "b_plus_c_over_a": r.rows / full / a_rate, "b_over_d": b_rate / best_d,
            "peak_rss_mb": load["peak_rss"] / 2**20, "no_change_over_full": load["no_change"] / full,
            "no_change_s": load["no_change"], "full_load_s": full, "staging_s": load["staging"],
            "merge_steps": steps, "quarantined": load["quarantined"], "rounds": r.rounds,
            "dlt": r.dlt, **({"dlt_s": r.dlt["seconds"], "platform_over_dlt": r.dlt["seconds"] / full}
                             if r.dlt.get("installed") else {}),
            **({"rerun_merge_s": load["rerun"]["merging"],
                "rerun_merge_over_first": load["rerun"]["merging"] / load["merging"]} if load.get("rerun") else {})}


def run(server_url: str, sizes: list[int], echo, keep: bool = False, prefix: str = "ndc_bench",
        rounds: int = 1) -> dict:
    """Every size (``rounds`` interleaved rounds each), then the row-at-a-time baselines (on the last size's
    table); databases ``<prefix>_source``, ``_raw``, ``_warehouse`` and ``_dlt`` on ``server_url``'s server,
    dropped afterwards unless ``keep``."""
    results = [run_size(server_url, rows, echo, prefix, rerun=n == 0, rounds=rounds) for n, rows in enumerate(sizes)]
    echo("(d) row-at-a-time baselines on 100,000 rows ...")
    source_url = connections.with_database(server_url, f"{prefix}_source")
    target_url = connections.with_database(server_url, f"{prefix}_raw")
    baselines = executemany_rates(source_url, target_url)
    figures = report(results, baselines, echo)
    if not keep:
        for suffix in ("source", "raw", "warehouse", "dlt"):
            database.drop_database(connections.with_database(server_url, f"{prefix}_{suffix}"))
    return figures
