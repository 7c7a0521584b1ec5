"""The tooling's commands, loaded by ``ndc`` only when used: ``ndc simulate``, ``ndc demo``, ``ndc airflow``,
``ndc faults`` and ``ndc bench``."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from ndc.cli.targets import warehouse_url


@click.group()
def simulate() -> None:
    """Create simulated national databases (deterministic per seed) with a manifest of injected defects."""


def _simulate_command(name: str, summary: str) -> None:
    @simulate.command(name, help=summary)
    @click.option("--citizens", default=100_000, show_default=True, type=click.IntRange(min=10),
                  help="Population size; every source is drawn from, or scaled to, the same people.")
    @click.option("--seed", default=42, show_default=True, type=int)
    @click.option("--defect-rate", default=0.001, show_default=True, type=click.FloatRange(0, 0.05),
                  help="Share of rows per defect kind.")
    @click.option("--url", help=f"Where the source lives [default: the connection of dags/sources/{name}.yml].")
    def command(citizens: int, seed: int, defect_rate: float, url: str | None) -> None:
        import importlib

        from ndc.warehouse import connections
        from ndc_lab.simulate.common import SourceSpec

        warehouse_url()
        module = importlib.import_module(f"ndc_lab.simulate.{name}")
        target = url or module.default_target()
        spec = SourceSpec(citizens=citizens, seed=seed, defect_rate=defect_rate)
        started = datetime.now(UTC)
        sim = module.simulate(spec)
        module.write(target, sim, spec)
        seconds = (datetime.now(UTC) - started).total_seconds()
        click.echo(f"{name}: {module.describe(sim)} in {connections.redact(target)} ({seconds:.1f} s)")
        counts = sim.manifest.group_by("table_name", "kind", "expected_outcome").len().sort("table_name", "kind")
        for table, kind, outcome, count in counts.iter_rows():
            click.echo(f"  defect {table}.{kind}: {count} -> {outcome}")


for _name, _summary in (
    ("population", "The Ministry of Public Security's population database (PostgreSQL)."),
    ("enterprise", "The national business registration database (MariaDB/MySQL)."),
    ("taxation", "The General Department of Taxation's taxpayer database (PostgreSQL)."),
    ("insurance", "Vietnam Social Security's database, served as a REST API (see `ndc simulate serve-insurance`)."),
    ("education", "The education database's file drops (CSV and Parquet per province and school year)."),
):
    _simulate_command(_name, _summary)


def _scaffolded_simulators() -> None:
    """Simulators added by `ndc sources new` get their command without editing this file: a module of
    ndc_lab.simulate named like a source file of the DAG bundle is that source's simulator."""
    import pkgutil

    import ndc_lab.simulate
    from ndc.settings import get_settings

    sources = {path.stem for path in get_settings().sources_dir.glob("*/*.yml")}
    for module in pkgutil.iter_modules(ndc_lab.simulate.__path__):
        if module.name in sources and module.name not in simulate.commands:
            _simulate_command(module.name, f"The {module.name} source (see plugins/ndc_lab/simulate/{module.name}.py).")


_scaffolded_simulators()


@simulate.command("serve-insurance")
@click.option("--backend-url", help="The insurance backend database [default: as `ndc simulate insurance`].")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--token", envvar="NDC_INSURANCE_TOKEN", required=True, help="Bearer token clients must send.")
@click.option("--rate-limit", default=50.0, show_default=True, type=float, help="Requests per second per token.")
@click.option("--fault-rate", default=0.02, show_default=True, type=float, help="Share of requests answered 500.")
@click.option("--seed", default=0, show_default=True, type=int)
def serve_insurance(backend_url: str | None, host: str, port: int, token: str, rate_limit: float,
                    fault_rate: float, seed: int) -> None:
    """Serve the simulated insurance database as its REST API (blocking; Ctrl-C stops it)."""
    from ndc_lab.simulate import insurance, insurance_api

    warehouse_url()
    click.echo(f"insurance API on http://{host}:{port}/v1 (rate limit {rate_limit}/s, fault rate {fault_rate})")
    insurance_api.serve(backend_url or insurance.default_target(), host=host, port=port, token=token,
                        rate_limit=rate_limit, fault_rate=fault_rate, seed=seed)


@click.command()
@click.option("--citizens", default=100_000, show_default=True, type=click.IntRange(min=1000))
@click.option("--seed", default=42, show_default=True, type=int)
def demo(citizens: int, seed: int) -> None:
    """Simulate, extract, conform and publish as real Airflow DAG runs, then show what a consumer sees."""
    from ndc_lab.demo import DEMO_AGENCY, run_demo

    summary = run_demo(citizens, seed, click.echo)
    f = summary.figures
    click.echo("\n== Summary ==")
    click.echo("rows per stage (source rows include duplicate versions and rows that fail their contract):")
    for name, tables in f["source"].items():
        for table, count in tables.items():
            click.echo(f"  {name + '.' + table:<34} source {count:>9,}  landing {f['landing'][name][table]:>9,}")
    click.echo(f"shared views (published from {f['build_schema']}):")
    for model, count in f["shared_views"].items():
        click.echo(f"  shared.{model:<28} {count:>9,} rows")
    click.echo("conformance per source (records linked to a citizen / identity exceptions / orphan references):")
    for source, linked, identity, reference in f["conformance"]:
        click.echo(f"  {source:<12} {linked or 0:>9,} / {identity:>6,} / {reference:>6,}")
    click.echo("quarantined rows by check:")
    for dataset, checks, count in f["quarantine"]:
        click.echo(f"  {dataset:<30} {checks:<24} {count:>6,}")
    ledger_rows = ", ".join(f"{kind} {count}" for kind, count in f["ledger"])
    chain = "verified" if f["ledger_ok"] else "BROKEN"
    click.echo(f"ledger: {ledger_rows}; chain {chain} (head {f['ledger_head'][:16]}…)")
    click.echo("time per stage:")
    for title, seconds in summary.stages:
        click.echo(f"  {seconds:6.1f} s  {title}")
    click.echo(f"  {sum(s for _, s in summary.stages):6.1f} s  total")
    click.echo("deliveries of the published version: " + ", ".join(f"{agency} {count}"
                                                               for agency, count in f["deliveries"]))
    click.echo(f"what {DEMO_AGENCY} (Quảng Ngãi) sees in agency_quang_ngai.citizens ({f['consumer_rows']:,} rows;"
               " citizen_id_pseudonym is the agreement's HMAC of the PIN):")
    for row in f["consumer_sample"]:
        click.echo("  " + " | ".join(str(v) for v in row))
    env = " ".join(f"{k}={v}" for k, v in f["airflow_env"].items())
    click.echo("\nOpen the Airflow UI on the same data:  ndc airflow")
    click.echo(f"  (that is: {env} airflow standalone)")


def _admin_password(path: Path) -> str:
    """The local UI's admin password: Airflow's simple auth manager keeps the passwords already in its file, so
    one written here first (random, the file readable by its owner only) is the one it uses."""
    import secrets

    passwords = json.loads(path.read_text() or "{}") if path.exists() else {}
    if "admin" not in passwords:
        passwords["admin"] = secrets.token_urlsafe(12)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(passwords) + "\n")
    return passwords["admin"]


@click.command("airflow")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1024, 65535),
              help="Port of the UI on 127.0.0.1.")
def airflow_ui(port: int) -> None:
    """Start the Airflow UI (airflow standalone) on the demo's data; prints the URL and the login."""
    import os

    from ndc.warehouse import database, embedded
    from ndc_lab.demo import airflow_command, airflow_env, import_pools

    env = {**os.environ, **airflow_env(embedded.ensure_warehouse()),
           "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port),
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/"}
    with database.connect(env["NDC_WAREHOUSE_URL"]) as conn:
        database.ensure_meta(conn)  # the operator's page reads its views
    database.ensure_database(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", "", 1))
    import_pools(env)  # one pool per source caps its connections; the scheduler needs them to exist
    password = _admin_password(Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated")
    click.echo(f"Airflow UI: http://127.0.0.1:{port}  user admin, password {password} (Ctrl-C stops)")
    click.echo(f"operator's page: http://127.0.0.1:{port}/plugin/ndc_operations (Browse > NDC operations)",
               nl=True)
    sys.stdout.flush()
    os.execvpe(airflow_command()[0], airflow_command("standalone"), env)  # noqa: S606 - our own venv binary


@click.command()
@click.option("--only", "chosen", multiple=True, help="Run only these scenario numbers (repeat the option).")
@click.option("--server", help="PostgreSQL server for the scenarios' databases [default: the warehouse's server].")
def faults(chosen: tuple[str, ...], server: str | None) -> None:
    """Fault injection: run each scenario on fresh databases; one line each: survived or not, rows expected vs
    found. Exits 1 when any scenario did not survive."""
    from ndc.warehouse import embedded
    from ndc.warehouse.connections import with_database
    from ndc_lab.faults import run_one, scenarios

    known = scenarios()
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise click.UsageError(f"unknown scenario {', '.join(unknown)}; known: {', '.join(known)}")
    server_url = server or with_database(embedded.ensure_warehouse(), "postgres")
    failed = 0
    # The scenarios' own level holds when Airflow, imported by the Celery scenario, reconfigures the root logger:
    # the summary stays one line per scenario (ndc -v shows their progress).
    platform_log, before = logging.getLogger("ndc"), logging.getLogger("ndc").level
    platform_log.setLevel(logging.getLogger().getEffectiveLevel())
    try:
        for number, item in known.items():
            if chosen and number not in chosen:
                continue
            click.echo(f"[{number}] {item.title} ...")
            outcome = run_one(item, server_url)
            click.echo(outcome.line())
            failed += not outcome.survived
    finally:
        platform_log.setLevel(before)
    if failed:
        raise SystemExit(1)


def _parts(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> set[str]:
    from ndc_lab.bench.all_figures import PARTS

    names = {name.strip() for item in value for name in item.split(",") if name.strip()}
    unknown = sorted(names - set(PARTS))
    if unknown:
        raise click.BadParameter(f"unknown part {', '.join(unknown)}; parts: {', '.join(PARTS)}")
    return names


@click.group(invoke_without_command=True)
@click.option("--rows", "sizes", multiple=True, type=click.IntRange(min=1000), default=(1_000_000, 5_000_000),
              show_default=True, help="EL table sizes (repeat the option); RSS growth is largest ÷ smallest.")
@click.option("--citizens", type=click.IntRange(min=1000), default=100_000, show_default=True,
              help="Citizens simulated for the conform, change and demo parts.")
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Conform DAG runs, each paired with a plain dbt build (the median run is reported).")
@click.option("--skip", multiple=True, callback=_parts, metavar="PART[,PART]",
              help="Leave out parts: parse, el, dlt, conform, change, demo (comma-separated or repeated).")
@click.option("--json-out", type=click.Path(dir_okay=False),
              help="Write the figures as JSON here [default: results/bench/bench-<UTC date>.json in the repository].")
@click.option("--server", help="PostgreSQL server for the el, dlt and conform databases [default: the warehouse's].")
@click.option("--port", type=int, default=8080, show_default=True, help="Port of the Airflow API server (conform).")
@click.option("--airflow-db", default="ndc_bench_airflow", show_default=True,
              help="Airflow metadata database for conform/change, on the server.")
@click.option("--db-prefix", default="ndc_bench", show_default=True, hidden=True,
              help="Prefix of the el/dlt databases (<prefix>_source, _raw, _warehouse, _dlt).")
@click.pass_context
def bench(ctx: click.Context, sizes: tuple[int, ...], citizens: int, runs: int, skip: set[str],
          json_out: str | None, server: str | None, port: int, airflow_db: str, db_prefix: str) -> None:
    """Benchmarks: figures as ratios against a baseline measured in the same run (never in CI).

    With no subcommand: every figure in one invocation (DAG parse time, validated EL ÷ raw COPY and ÷ executemany
    and ÷ dlt, peak RSS per size, no-change rerun ÷ full load, conform DAG ÷ dbt build, after a 1 % change ÷ full
    refresh, the demo end to end), one table at the end and the figures as JSON. Exits 1 if a part failed; a
    missed target is a result, not a failure."""
    if ctx.invoked_subcommand is not None:
        return
    from ndc_lab.bench import all_figures

    options = all_figures.Options(server=server, sizes=sorted(set(sizes)), citizens=citizens, runs=runs, skip=skip,
                                port=port, airflow_db=airflow_db, prefix=db_prefix)
    document = all_figures.run_all(options, click.echo)
    path = Path(json_out) if json_out else all_figures.default_json_path()
    all_figures.write_json(document, path)
    click.echo("\n" + all_figures.table(document))
    click.echo(f"\nfigures written to {path}")
    if document["failed"]:
        click.secho(f"failed parts: {', '.join(document['failed'])}", fg="red", err=True)
        raise SystemExit(1)


@bench.command("el")
@click.option("--rows", "sizes", multiple=True, type=click.IntRange(min=1000), default=(1_000_000, 5_000_000),
              show_default=True, help="Table sizes to measure (repeat the option).")
@click.option("--server", help="PostgreSQL server for the bench databases [default: the warehouse's server].")
@click.option("--json-out", type=click.Path(dir_okay=False), help="Also write the figures as JSON here.")
@click.option("--keep", is_flag=True, help="Keep the bench databases (ndc_bench_*) afterwards.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Interleaved rounds of raw pipe, platform and dlt per size; medians are reported.")
def bench_el(sizes: tuple[int, ...], server: str | None, json_out: str | None, keep: bool, rounds: int) -> None:
    """Extract-and-load: raw COPY limit vs the platform's validated load and merge, RSS, no-change run, and dlt's
    fastest merge configuration with the bench extra (`pip install -e .[bench]`)."""
    from ndc_lab.bench import extract_load as bench_module

    figures = bench_module.run(server or warehouse_url(), list(sizes), click.echo, keep=keep, rounds=rounds)
    if json_out:
        with open(json_out, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)


@bench.command("conform")
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True,
              help="DAG runs (the first after Airflow starts is cold).")
@click.option("--change", "share", type=click.FloatRange(min=0.0001, max=1.0), default=None,
              help="Instead: the DAG after this share of landing rows changed vs a full-refresh run (e.g. 0.01).")
@click.option("--citizens", type=click.IntRange(min=1000), default=None,
              help="First simulate and load the five sources at this size into a fresh bench warehouse"
                   " (ndc_bench_conform on the warehouse's server) [default: use the configured warehouse].")
@click.option("--airflow-db", default="ndc_bench_airflow", show_default=True,
              help="Airflow metadata database, on the warehouse's server.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port of the Airflow API server.")
@click.option("--json-out", type=click.Path(dir_okay=False), help="Also write the figures as JSON here.")
def bench_conform(runs: int, share: float | None, citizens: int | None, airflow_db: str, port: int,
                  json_out: str | None) -> None:
    """The conform DAG through a real scheduler: ÷ a plain dbt build of the same models (default), or after a
    small change ÷ a full refresh (--change)."""
    from ndc_lab.bench import conform as module

    url = warehouse_url()
    if citizens:
        url = module.load_bench_warehouse(url, citizens)
    figures = (module.measure_change(url, share=share, airflow_db=airflow_db, port=port, runs=runs) if share
               else module.measure(url, runs=runs, airflow_db=airflow_db, port=port))
    click.echo(json.dumps({k: v for k, v in figures.items() if k not in ("runs", "task_times")}, indent=2,
                          default=str))
    if json_out:
        with open(json_out, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2, default=str)


@bench.command("scale")
@click.option("--sizes", default="5,600,1500,3000", show_default=True,
              help="Numbers of generated sources whose DAG files are parsed (comma-separated).")
@click.option("--skip-scheduler", is_flag=True, help="Only the parse figures, not a day's runs under a scheduler.")
@click.option("--airflow-db", default="ndc_bench_scale_airflow", show_default=True,
              help="Airflow metadata database for the scheduler part (dropped and made afresh), on the warehouse's"
                   " server.")
@click.option("--json-out", type=click.Path(dir_okay=False), help="Also write the figures as JSON here.")
def bench_scale(sizes: str, skip_scheduler: bool, airflow_db: str, json_out: str | None) -> None:
    """The seed's size: per-file DAG parse time at 5 … 3,000 generated sources (÷ the smallest size: flat is ≤ 2),
    and the time a real scheduler takes to create a day's runs of 3,000 sources (target ≤ 600 s)."""
    from ndc_lab.bench import scale

    chosen = tuple(sorted({int(s) for s in sizes.split(",") if s.strip()}))
    click.echo(f"parse time per DAG file at {', '.join(map(str, chosen))} sources")
    figures = {"parse": scale.parse_figures(chosen, click.echo)}
    click.echo(f"slowest file at {chosen[-1]} ÷ at {chosen[0]} sources: {figures['parse']['max_file_ratio']}"
               f" (mean agency file: {figures['parse']['mean_agency_file_ratio']}; target ≤ 2)")
    if not skip_scheduler:
        click.echo(f"a day's runs of {chosen[-1]} sources under a real dag-processor and scheduler")
        day = scale.scheduler_day(warehouse_url(), sources=chosen[-1], airflow_db=airflow_db, say=click.echo)
        figures["scheduler_day"] = day
        click.echo(f"every due run created after {day.get('runs_created_s')} s ({day.get('runs')} extract runs;"
                   f" every DAG serialized after {day.get('serialized_s')} s; target ≤ 600 s)")
    click.echo(json.dumps(figures, indent=2, default=str))
    if json_out:
        with open(json_out, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2, default=str)


@bench.command("gate2")
@click.option("--citizens", type=click.IntRange(min=1000), default=None,
              help="First simulate and load the five sources at this size into a fresh bench warehouse"
                   " (ndc_bench_conform on the warehouse's server) [default: use the configured warehouse].")
@click.option("--json-out", type=click.Path(dir_okay=False), help="Also write the figures as JSON here.")
def bench_gate2(citizens: int | None, json_out: str | None) -> None:
    """Gate 2 ÷ the dbt build it guards: on a first publish (every row) and a later one (changed rows only)."""
    from ndc_lab.bench import conform as module

    url = warehouse_url()
    if citizens:
        url = module.load_bench_warehouse(url, citizens)
    figures = module.measure_gate2(url)
    click.echo(json.dumps(figures, indent=2, default=str))
    if json_out:
        with open(json_out, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2, default=str)


@bench.command("service")
@click.option("--server", help="PostgreSQL server for the bench database ndc_bench_service [default: the warehouse's"
                               " server].")
@click.option("--citizens", type=click.IntRange(min=1000), default=200_000, show_default=True,
              help="Synthetic citizens in shared.citizens; each request looks up a random one.")
@click.option("--connections", type=click.IntRange(1, 80), default=32, show_default=True,
              help="Concurrent connections of wrk (to the service) and of pgbench (to the database).")
@click.option("--seconds", type=click.IntRange(min=1), default=15, show_default=True,
              help="Duration of each load run.")
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Interleaved rounds of SQL then service; the medians are reported.")
@click.option("--keep", is_flag=True, help="Keep the bench database and its roles afterwards.")
@click.option("--json-out", type=click.Path(dir_okay=False), help="Also write the figures as JSON here.")
def bench_service(server: str | None, citizens: int, connections: int, seconds: int, runs: int, keep: bool,
                  json_out: str | None) -> None:
    """The sharing service's lookups (wrk, one process, on loopback) ÷ the same lookups in SQL (pgbench as the
    agency login), interleaved; checks every answer was 2xx and the request log holds every request. Targets:
    ≥ 2,000 lookups/s, p99 ≤ 50 ms, service ÷ SQL ≥ 0.5 (a missed target is a result). Exits 1 when a check
    fails, 2 when the setup fails. Needs wrk and pgbench (Debian packages wrk and postgresql-client)."""
    from ndc_lab.bench import service as module

    options = module.Options(server=server or warehouse_url(), citizens=citizens, connections=connections,
                             seconds=seconds, runs=runs, keep=keep)
    document = module.run(options, click.echo)
    click.echo("\n" + module.table(document))
    if json_out:
        with open(json_out, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, default=str)
    failed = module.checks_failed(document)
    if failed:
        click.secho(f"failed checks: {', '.join(failed)}", fg="red", err=True)
        raise SystemExit(1)
