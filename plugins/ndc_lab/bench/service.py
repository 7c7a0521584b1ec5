"""``ndc bench service``: the sharing service's lookups against the same lookups in plain SQL, in one run, on
loopback, with the load generated from a second process (never in CI).

Setup, in a throwaway database ``ndc_bench_service`` on the server (dropped afterwards unless ``--keep``; a
leftover one is dropped first): the platform's schema; ``shared.citizens`` made directly as a table with the
shared model's contract columns (types from the dbt manifest) and ``--citizens`` synthetic rows, ``citizen_id``
the row number in 12 digits and the primary key; one agency with one login; an agreement granting the view
``citizens`` with ``citizen_id`` in clear (``purpose_allows_identifiers``) for the purpose ``bench_lookup``,
approved by a bench approver login (a member of ``ndc_approver``: the platform's own role may not approve) and
applied; a token for the login. Then ``ndc service serve`` in its own process, its rate limit out of the way.

Rounds, interleaved (SQL, service, SQL, service, ...), after a short warm-up of each:

- **SQL baseline**: ``pgbench -M prepared`` connected as the agency login, each transaction one lookup of a random
  key in ``agency_<agency>.citizens`` as ``row_to_json``: what the login gets from the database directly;
- **service**: ``wrk`` with the same number of connections (one thread), each request
  ``GET /v1/agreements/<id>/views/citizens/records/<random key>`` with the token and the purpose: requests per
  second, p50 and p99 latency, answers other than 2xx.

The medians of the rounds are reported against the targets (≥ 2,000 lookups/s, p99 ≤ 50 ms, service ÷ SQL ≥ 0.5);
a missed target is a result. Two checks make the figures valid: every answer was a 2xx, and after the service
stopped ``ndc_meta.service_requests`` holds one row per request wrk counted, plus at most the requests in flight
when each wrk run stopped (one per connection)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from ndc.errors import NdcError
from ndc.identifiers import ident
from ndc.warehouse import connections, database
from ndc_lab.environment import restore, snapshot

DATABASE = "ndc_bench_service"
AGENCY = "bench_service"
LOGIN = "ndc_bench_service_lookup"
APPROVER = "ndc_bench_service_approver"
AGREEMENT = "bench_service_lookups"
PURPOSE = "bench_lookup"
VIEW = "citizens"
GRANTED = ["citizen_id", "current_province_code", "current_province_name", "is_insured", "contributing_months"]
WARM_UP_SECONDS = 3
SLACK_SECONDS = 30  # a load generator's timeout beyond its run's duration
START_SECONDS = 60  # the service must answer /health within this
LOOKUP_PATH = f"/v1/agreements/{AGREEMENT}/views/{VIEW}/records/"
TARGETS = {  # figure -> (comparison, target)
    "service_lookups_per_s": (">=", 2000.0),
    "service_p99_ms": ("<=", 50.0),
    "service_to_sql_ratio": (">=", 0.5),
}

# Synthetic values of the shared citizens' contract columns, from the row number i (other columns are null).
SYNTHETIC = {
    "citizen_id": "lpad(i::text, 12, '0')",
    "full_name": "'Công dân ' || i::text",
    "birth_date": "date '1940-01-01' + (i * 7919 % 27000)::int",
    "sex": "case when i % 2 = 0 then 'M' else 'F' end",
    "ethnicity": "'Kinh'",
    "household_id": "'HK' || lpad((i / 3)::text, 10, '0')",
    "has_registered_household": "true",
    "historic_province_code": "lpad((1 + i % 63)::text, 2, '0')",
    "historic_province_name": "'Tỉnh ' || lpad((1 + i % 63)::text, 2, '0')",
    "current_province_code": "lpad((1 + i % 34)::text, 2, '0')",
    "current_province_name": "'Tỉnh ' || lpad((1 + i % 34)::text, 2, '0')",
    "residence_recorded_on": "date '2020-01-01' + (i % 2000)::int",
    "is_tax_registered": "i % 3 = 0",
    "tax_filings": "i % 5",
    "is_insured": "i % 4 <> 0",
    "contributing_months": "i % 240",
    "highest_enrolled_grade": "i % 13",
    "highest_enrolled_school_year": "'2024-2025'",
    "source_updated_at": "now()",
}

AGENCY_FILE = f"""name: {AGENCY}
full_name: Benchmark agency of `ndc bench service` (a throwaway database)
kind: sector
users:
  - login: {LOGIN}
    statement_timeout: 10s
    connection_limit: 100
"""
AGREEMENT_FILE = f"""id: {AGREEMENT}
consumer: {AGENCY}
purpose: >
  Benchmark of the sharing service's lookups (ndc bench service) on synthetic citizens in a throwaway database.
purpose_allows_identifiers: true
purposes: [{PURPOSE}]
start: {{start}}
expires: {{expires}}
views:
  - shared: {VIEW}
    columns: [{", ".join(GRANTED)}]
"""
# wrk's script: the headers, and one random existing key per request.
WRK_SCRIPT = """-- ndc bench service: one lookup of a random existing key per request
local prefix = "{prefix}"
local citizens = {citizens}
wrk.headers["Authorization"] = "Bearer {token}"
wrk.headers["X-NDC-Purpose"] = "{purpose}"
math.randomseed(os.time())
request = function()
  return wrk.format("GET", prefix .. string.format("%012d", math.random(1, citizens)))
end
"""
PGBENCH_SCRIPT = """\\set i random(1, {citizens})
select row_to_json(v) from {view} v where citizen_id = lpad(:i::text, 12, '0');
"""


@dataclass
class Options:
    server: str                 # a URL of the PostgreSQL server (any database: the bench makes its own)
    citizens: int = 200_000
    connections: int = 32
    seconds: int = 15
    runs: int = 3
    keep: bool = False


@dataclass
class Bench:
    """What the setup made: the bench database's URL (as the server's administrator), the token, the tools."""
    url: str
    folder: Path
    wrk: str
    pgbench: str
    token: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def login_url(self) -> str:
        return connections.with_user(self.url, LOGIN)

    @property
    def anchor_url(self) -> str:
        return connections.with_database(self.url, DATABASE + "_ledger_anchor")


# --- tools ------------------------------------------------------------------------------------------------------------

def find_tools() -> tuple[str, str]:
    """wrk and pgbench, or an error naming the Debian package that installs each."""
    wrk = shutil.which("wrk")
    pgbench = shutil.which("pgbench") or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True)), None)
    missing = ([] if wrk else ["wrk (apt-get install -y wrk)"]) + \
        ([] if pgbench else ["pgbench (apt-get install -y postgresql-client)"])
    if missing:
        raise NdcError(f"`ndc bench service` needs {' and '.join(missing)}")
    return wrk, pgbench


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- setup ------------------------------------------------------------------------------------------------------------

def drop_bench(server_url: str) -> None:
    """The bench database (and its ledger anchor) and the bench's roles, if an earlier run left them."""
    database.drop_database(connections.with_database(server_url, DATABASE))
    with database.connect(connections.with_database(server_url, "postgres"), autocommit=True) as admin:
        for role in (LOGIN, f"ndc_agency_{AGENCY}", APPROVER):
            admin.execute(sql.SQL("drop role if exists {}").format(ident(role)))


def contract_types() -> list[tuple[str, str]]:
    """The shared citizens' contract columns, in order, with their types from the dbt manifest."""
    from ndc.conform import dbt

    columns = dbt.shared_models()[VIEW]
    nodes = json.loads(dbt.manifest_file().read_text())["nodes"].values()
    node = next(n for n in nodes if n["resource_type"] == "model" and n["config"].get("schema") == "shared"
                and n["alias"] == VIEW)
    return [(name, node["columns"][name].get("data_type") or "text") for name in columns]


def make_citizens(conn: psycopg.Connection, rows: int) -> None:
    """``shared.citizens`` as a table with the contract's columns and ``rows`` synthetic citizens."""
    typed = contract_types()
    missing = sorted(set(GRANTED) - {name for name, _ in typed})
    if missing:
        raise NdcError(f"the shared citizens' contract has no column {', '.join(missing)}: update the bench")
    definition = sql.SQL(", ").join(
        sql.SQL("{} {}{}").format(ident(name), sql.SQL(kind),
                                  sql.SQL(" primary key" if name == "citizen_id" else "")) for name, kind in typed)
    values = sql.SQL(", ").join(
        sql.SQL("({})::{}").format(sql.SQL(SYNTHETIC.get(name, "null")), sql.SQL(kind)) for name, kind in typed)
    with conn.transaction():
        conn.execute(sql.SQL("create table shared.citizens ({})").format(definition))
        conn.execute(sql.SQL("insert into shared.citizens select {} from generate_series(1, {}) as i").format(
            values, sql.Literal(rows)))
        conn.execute("analyze shared.citizens")


def write_sharing_files(folder: Path) -> tuple[Path, Path]:
    """The agency's and the agreement's files (dated from a month ago to a year ahead), in ``folder``."""
    agencies, agreements = folder / "agencies", folder / "agreements"
    agencies.mkdir()
    agreements.mkdir()
    (agencies / f"{AGENCY}.yml").write_text(AGENCY_FILE, encoding="utf-8")
    today = date.today()
    (agreements / f"{AGREEMENT}.yml").write_text(AGREEMENT_FILE.format(
        start=today - timedelta(days=30), expires=today + timedelta(days=365)), encoding="utf-8")
    return agencies, agreements


def approve_and_apply(bench: Bench) -> None:
    """The bench approver (a login in ``ndc_approver``) approves the agreement; the administrator applies it."""
    from ndc.config.agreements import load_agencies, load_agreements
    from ndc.conform import dbt
    from ndc.sharing.agreements import apply, approve

    with database.connect(bench.url, autocommit=True) as admin:
        admin.execute(sql.SQL("create role {} login in role ndc_approver").format(ident(APPROVER)))
        admin.execute(sql.SQL("grant connect on database {} to {}").format(ident(DATABASE), ident(APPROVER)))
    agencies_dir, agreements_dir = write_sharing_files(bench.folder)
    agencies = load_agencies(agencies_dir)
    agreements = load_agreements(agreements_dir, agencies=agencies, shared=dbt.shared_models())
    approve(connections.with_user(bench.url, APPROVER), agreements[AGREEMENT], agencies[AGENCY],
            note="ndc bench service")
    with database.connect(bench.url) as conn:
        result = apply(conn, bench.url, agencies=agencies, agreements=agreements)
    if AGREEMENT not in result.applied or result.awaiting:
        raise NdcError(f"the bench agreement was not applied (applied {result.applied}, unapproved "
                       f"{result.unapproved}, logins awaiting an approval {result.awaiting})")


def prepare(bench: Bench, citizens: int, say: Callable[[str], None]) -> None:
    """The bench database, its citizens, the agreement applied and a token for the login."""
    from ndc.service import tokens

    started = time.perf_counter()
    database.ensure_database(bench.url)
    with database.connect(bench.url) as conn:
        database.ensure_meta(conn)
        make_citizens(conn, citizens)
    approve_and_apply(bench)
    with database.connect(bench.url) as conn:
        bench.token = tokens.issue(conn, login=LOGIN, days=1)
    say(f"setup: {citizens:,} citizens, agreement {AGREEMENT} applied, token issued "
        f"({time.perf_counter() - started:.1f} s)")


# --- the service ------------------------------------------------------------------------------------------------------

def start_service(bench: Bench, port: int, log_path: Path) -> subprocess.Popen:
    """``ndc service serve`` on ``port`` over the bench database, the rate limit out of the way; its output goes
    to ``log_path``. Returns once it answers ``/health``."""
    env = {**os.environ, "NDC_WAREHOUSE_URL": bench.url, "NDC_SERVICE_URL": bench.url,
           "NDC_LEDGER_ANCHOR_URL": bench.anchor_url, "NDC_SERVICE_RATE_PER_SECOND": "1000000",
           "NDC_SERVICE_RATE_BURST": "1000000", **bench.extra_env}
    for name in ("NDC_ADMIN_URL", "NDC_APPROVER_URL", "NDC_OPERATOR_URL"):
        env.pop(name, None)
    with log_path.open("w", encoding="utf-8") as output:
        process = subprocess.Popen([sys.executable, "-m", "ndc.cli", "service", "serve", "--port", str(port)],
                                   env=env, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NdcError(f"the service exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                if answer.status == 200:
                    return process
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    stop_service(process)
    raise NdcError(f"the service did not answer /health within {START_SECONDS} s:\n{log_path.read_text()[-3000:]}")


def stop_service(process: subprocess.Popen) -> int:
    """SIGTERM (uvicorn's graceful stop: the request log writes what is pending and seals its batch); killed if
    it has not exited after 60 s. Returns its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


def check_lookup(base: str, token: str) -> None:
    """One lookup answered 200 with the record asked for, or the setup failed."""
    key = f"{1:012d}"
    request = urllib.request.Request(base + LOOKUP_PATH + key,  # noqa: S310 - our own http:// loopback URL
                                     headers={"Authorization": f"Bearer {token}", "X-NDC-Purpose": PURPOSE})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - as above
            body = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise NdcError(f"the service refused the bench's lookup: HTTP {exc.code} {exc.read()[:500]!r}") from None
    if body.get("record", {}).get("citizen_id") != key:
        raise NdcError(f"the service answered the bench's lookup with {str(body)[:500]}")


# --- load generators --------------------------------------------------------------------------------------------------

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(text: str) -> dict:
    """Requests, requests per second, p50/p75/p90/p99 (ms), answers other than 2xx/3xx and socket errors from
    wrk's output (``--latency``)."""
    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", text, re.M)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not done or not rate:
        raise NdcError(f"wrk's output has no request count or rate:\n{text[-2000:]}")
    percentiles = {f"p{p}_ms": round(float(v) * UNITS_MS[u], 3)
                   for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {"requests": int(done.group(1)), "seconds": round(float(done.group(2)) * UNITS_MS[done.group(3)] / 1000, 3),
            "lookups_per_s": float(rate.group(1)), **percentiles,
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
            "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0}


def parse_pgbench(text: str) -> dict:
    """Transactions, transactions per second, failed transactions and the mean latency (ms) from pgbench's
    output (``tps = ... (without initial connection time)``; before PostgreSQL 14 ``excluding connections
    establishing``)."""
    tps = re.search(r"^tps = ([\d.]+) \((?:without initial connection time|excluding connections establishing)\)",
                    text, re.M) or re.search(r"^tps = ([\d.]+)", text, re.M)
    processed = re.search(r"number of transactions actually processed: (\d+)", text)
    if not tps or not processed:
        raise NdcError(f"pgbench's output has no tps:\n{text[-2000:]}")
    latency = re.search(r"latency average = ([\d.]+) ms", text)
    failed = re.search(r"number of failed transactions: (\d+)", text)
    return {"transactions": int(processed.group(1)), "lookups_per_s": float(tps.group(1)),
            "latency_avg_ms": float(latency.group(1)) if latency else None,
            "failed": int(failed.group(1)) if failed else 0}


def _load(command: list[str], seconds: int, what: str, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + SLACK_SECONDS, env=env,
                              check=False)
    except subprocess.TimeoutExpired:
        raise NdcError(f"{what} did not finish within {seconds + SLACK_SECONDS} s") from None
    if done.returncode != 0:
        raise NdcError(f"{what} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


def run_wrk(bench: Bench, base: str, script: Path, clients: int, seconds: int) -> dict:
    return parse_wrk(_load([bench.wrk, "-t1", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s", "--latency",
                            "-s", str(script), base], seconds, "wrk"))


def run_pgbench(bench: Bench, script: Path, clients: int, seconds: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # only the login's URL decides
    return parse_pgbench(_load([bench.pgbench, "-n", "-M", "prepared", "-c", str(clients), "-j", "1", "-T",
                                str(seconds), "-f", str(script), bench.login_url], seconds, "pgbench", env))


def write_scripts(bench: Bench, citizens: int) -> tuple[Path, Path]:
    """wrk's Lua script (holding the token: readable by its owner only) and pgbench's."""
    lua = bench.folder / "lookup.lua"
    lua.touch(mode=0o600)
    lua.write_text(WRK_SCRIPT.format(prefix=LOOKUP_PATH, citizens=citizens, token=bench.token, purpose=PURPOSE),
                   encoding="utf-8")
    pgbench = bench.folder / "lookup.sql"
    pgbench.write_text(PGBENCH_SCRIPT.format(citizens=citizens, view=f"agency_{AGENCY}.{VIEW}"), encoding="utf-8")
    return lua, pgbench


# --- the run ----------------------------------------------------------------------------------------------------------

def measure(bench: Bench, base: str, options: Options, say: Callable[[str], None]) -> dict:
    """A warm-up of each, then ``runs`` rounds of SQL then service. Returns every run's figures."""
    lua, pgbench = write_scripts(bench, options.citizens)
    clients, seconds = options.connections, options.seconds
    warm = min(WARM_UP_SECONDS, seconds)
    say(f"warm-up: {warm} s of each")
    warm_up = {"sql": run_pgbench(bench, pgbench, clients, warm), "service": run_wrk(bench, base, lua, clients, warm)}
    rounds = []
    for number in range(1, options.runs + 1):
        sql_round = run_pgbench(bench, pgbench, clients, seconds)
        say(f"round {number} SQL:     {sql_round['lookups_per_s']:>9,.0f} lookups/s"
            f"  (mean latency {sql_round['latency_avg_ms']} ms)")
        service_round = run_wrk(bench, base, lua, clients, seconds)
        say(f"round {number} service: {service_round['lookups_per_s']:>9,.0f} lookups/s  p50 "
            f"{service_round.get('p50_ms')} ms  p99 {service_round.get('p99_ms')} ms  non-2xx "
            f"{service_round['non_2xx']}")
        rounds.append({"sql": sql_round, "service": service_round})
    return {"warm_up": warm_up, "rounds": rounds}


def logged_requests(bench: Bench) -> tuple[int, int]:
    """Rows of the request log, and of those the lookups answered 200."""
    with database.connect(bench.url) as conn:
        return conn.execute("select count(*), count(*) filter (where operation = 'lookup' and status = 200)"
                            " from ndc_meta.service_requests").fetchone()


def _median(rounds: list[dict], side: str, key: str) -> float | None:
    values = [r[side][key] for r in rounds if r[side].get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def summarise(measured: dict, logged: tuple[int, int], options: Options) -> dict:
    """The medians, the targets met or missed, and the two validity checks."""
    rounds = measured["rounds"]
    wrk_runs = [measured["warm_up"]["service"], *(r["service"] for r in rounds)]
    counted = 1 + sum(run["requests"] for run in wrk_runs)  # + the setup's one lookup
    in_flight = options.connections * len(wrk_runs)
    service_rate, sql_rate = _median(rounds, "service", "lookups_per_s"), _median(rounds, "sql", "lookups_per_s")
    figures = {
        "service_lookups_per_s": service_rate,
        "service_p50_ms": _median(rounds, "service", "p50_ms"),
        "service_p99_ms": _median(rounds, "service", "p99_ms"),
        "sql_lookups_per_s": sql_rate,
        "sql_latency_avg_ms": _median(rounds, "sql", "latency_avg_ms"),
        "service_to_sql_ratio": round(service_rate / sql_rate, 3) if service_rate and sql_rate else None,
    }
    targets = {name: {"measured": figures[name], "target": f"{op} {limit:g}",
                      "met": figures[name] is not None and (figures[name] >= limit if op == ">=" else
                                                            figures[name] <= limit)}
               for name, (op, limit) in TARGETS.items()}
    non_2xx = sum(run["non_2xx"] + run["socket_errors"] for run in wrk_runs)
    checks = {
        "non_2xx": {"value": non_2xx, "ok": non_2xx == 0,
                    "detail": "answers other than 2xx, and socket errors, over every wrk run (must be 0)"},
        "request_log": {"logged_rows": logged[0], "logged_lookups_200": logged[1], "wrk_requests": counted,
                        "in_flight_allowance": in_flight, "ok": 0 <= logged[0] - counted <= in_flight,
                        "detail": "rows of ndc_meta.service_requests vs requests wrk counted (+ the setup's "
                                  "lookup); the difference may be up to one request per connection per wrk run"},
    }
    return {"figures": figures, "targets": targets, "checks": checks}


def machine(bench: Bench) -> dict:
    from ndc.settings import get_settings

    with database.connect(bench.url) as conn:
        version = conn.execute("show server_version").fetchone()[0]
    return {"cpus": os.cpu_count(), "postgresql": version, "service_pool": get_settings().service_pool,
            "service_flush_ms": get_settings().service_flush_ms}


def run(options: Options, say: Callable[[str], None]) -> dict:
    """Setup, the service, the interleaved rounds, the request log's check; the bench database and roles are
    dropped afterwards unless ``options.keep``. Raises NdcError when the setup fails."""
    wrk, pgbench = find_tools()
    url = connections.with_database(options.server, DATABASE)
    say(f"bench database {connections.redact(url)}: {options.citizens:,} citizens, {options.connections} "
        f"connections, {options.runs} rounds of {options.seconds} s (SQL then service)")
    load_at_start = os.getloadavg()[0]
    if load_at_start > 0.5:
        say(f"note: the machine's load average is {load_at_start:.2f} already: other work shares its CPUs")
    drop_bench(options.server)
    saved = snapshot(["NDC_LEDGER_ANCHOR_URL"])
    with tempfile.TemporaryDirectory(prefix="ndc_bench_service_") as folder:
        bench = Bench(url=url, folder=Path(folder), wrk=wrk, pgbench=pgbench)
        os.environ["NDC_LEDGER_ANCHOR_URL"] = bench.anchor_url  # the approver's and the platform's ledger rows
        try:
            prepare(bench, options.citizens, say)
            document = _serve_and_measure(bench, options, say)
            document["machine"] = {**machine(bench), "load_average_at_start": round(load_at_start, 2)}
        finally:
            restore(saved)
            if not options.keep:
                drop_bench(options.server)
    document["options"] = {"citizens": options.citizens, "connections": options.connections,
                           "seconds": options.seconds, "runs": options.runs}
    return document


def _serve_and_measure(bench: Bench, options: Options, say: Callable[[str], None]) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = bench.folder / "service.log"
    process = start_service(bench, port, log_path)
    try:
        check_lookup(base, bench.token)
        measured = measure(bench, base, options, say)
    finally:
        code = stop_service(process)
    output = log_path.read_text(errors="replace")
    if code not in (0, -signal.SIGTERM):  # uvicorn re-raises the SIGTERM it handled once it has shut down
        say(f"the service exited with {code}:\n{output[-2000:]}")
    document = summarise(measured, logged_requests(bench), options)
    document["rounds"], document["warm_up"] = measured["rounds"], measured["warm_up"]
    document["service_exit"] = code
    return document


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f} {unit}" if unit == "lookups/s" else f"{value:,.3f}" if unit == "" else f"{value:.2f} {unit}"


def table(document: dict) -> str:
    """figure | measured | target | met?, then the checks."""
    f, targets = document["figures"], document["targets"]
    rows = [("figure", "measured", "target", "met?")]
    for name, label, unit in (("service_lookups_per_s", "service lookups/s (median)", "lookups/s"),
                              ("service_p50_ms", "service p50 latency (median)", "ms"),
                              ("service_p99_ms", "service p99 latency (median)", "ms"),
                              ("sql_lookups_per_s", "SQL lookups/s, pgbench as the login (median)", "lookups/s"),
                              ("service_to_sql_ratio", "service ÷ SQL", "")):
        target = targets.get(name)
        rows.append((label, _number(f[name], unit), target["target"] if target else "reported",
                     ("met" if target["met"] else "MISSED") if target else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    checks = document["checks"]
    log = checks["request_log"]
    lines.append("")
    lines.append(f"answers other than 2xx (and socket errors): {checks['non_2xx']['value']}"
                 f" ({'ok' if checks['non_2xx']['ok'] else 'NOT 0: the figures are not valid'})")
    difference = log["logged_rows"] - log["wrk_requests"]
    lines.append(f"request log: {log['logged_rows']:,} rows ({log['logged_lookups_200']:,} lookups answered 200)"
                 f" for {log['wrk_requests']:,} requests wrk counted; difference {difference:,}"
                 f" (at most {log['in_flight_allowance']:,} in flight) — {'ok' if log['ok'] else 'MISMATCH'}")
    return "\n".join(lines)


def checks_failed(document: dict) -> list[str]:
    return [name for name, check in document["checks"].items() if not check["ok"]]
