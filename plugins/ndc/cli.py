"""The ``ndc`` command line: every DAG task is one of these commands, so any step can be run by hand.

Heavy modules (polars, pandera, Faker) are imported inside the commands, so ``ndc --help`` starts fast.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from ndc.errors import NdcError


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _warehouse() -> str:
    """NDC_WAREHOUSE_URL, or the embedded server (started if needed)."""
    from ndc import embedded

    return embedded.ensure_warehouse()


class _Cli(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NdcError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=_Cli)
@click.option("-v", "--verbose", is_flag=True, help="Log progress at INFO level.")
def main(verbose: bool) -> None:
    """NDC Data Sharing & Coordination Platform."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.group()
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

        from ndc import connections
        from ndc.simulate.common import SourceSpec

        _warehouse()
        module = importlib.import_module(f"ndc.simulate.{name}")
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
    """Simulators added by `ndc sources new` get their command without editing this file (found by name)."""
    import pkgutil

    import ndc.simulate

    taken = {"common", "manifest", "insurance_api", *simulate.commands}
    for module in pkgutil.iter_modules(ndc.simulate.__path__):
        if module.name not in taken:
            _simulate_command(module.name, f"The {module.name} source (see plugins/ndc/simulate/{module.name}.py).")


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
    from ndc.simulate import insurance, insurance_api

    _warehouse()
    click.echo(f"insurance API on http://{host}:{port}/v1 (rate limit {rate_limit}/s, fault rate {fault_rate})")
    insurance_api.serve(backend_url or insurance.default_target(), host=host, port=port, token=token,
                        rate_limit=rate_limit, fault_rate=fault_rate, seed=seed)


@main.command()
@click.argument("source")
@click.argument("table")
@click.option("--start", required=True, type=click.DateTime(), help="Interval start (UTC unless an offset is given).")
@click.option("--end", required=True, type=click.DateTime(), help="Interval end, exclusive.")
@click.option("--run-id", help="Run id recorded in landing, quarantine and the ledger.")
@click.option("--full-refresh", is_flag=True, help="Extract everything up to --end (files: reload every file).")
@click.option("--accept-row-drop", is_flag=True,
              help="Load even if the row count fell more than the table's row_count_drop rule allows.")
def extract(source: str, table: str, start: datetime, end: datetime, run_id: str | None,
            full_refresh: bool, accept_row_drop: bool) -> None:
    """Extract one table's interval [START - lookback, END), gate it and load it into landing."""
    from ndc.jobs import extract_table

    if _utc(end) <= _utc(start):
        raise click.BadParameter("--end must be after --start")
    from ndc import warehouse

    warehouse.ensure_database(_warehouse())
    result = extract_table(source, table, _utc(start), _utc(end), run_id=run_id, full_refresh=full_refresh,
                           accept_row_drop=accept_row_drop)
    click.echo(json.dumps(result.__dict__, indent=2, ensure_ascii=False))


@main.group()
def ledger() -> None:
    """The hash-chained ledger of hand-offs."""


@ledger.command("verify")
def ledger_verify() -> None:
    """Recompute the chain and compare it with its anchor; exit 1 on an edited or deleted row, a deleted tail, a
    rewritten chain or a replaced ledger (each named)."""
    from ndc import ledger as ledger_module
    from ndc import warehouse

    with warehouse.connect(_warehouse()) as conn:
        warehouse.ensure_meta(conn)
        result = ledger_module.verify(conn)
    for warning in result.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    if result.ok:
        click.echo(f"ledger verified: {result.rows} rows, head {result.head}, {result.anchored} anchored outside "
                   "the ledger's database")
        return
    for problem in result.problems:
        click.secho(problem, fg="red", err=True)
    click.secho(f"ledger does NOT verify: {len(result.problems)} problem(s) in {result.rows} rows", fg="red", err=True)
    sys.exit(1)


@ledger.command("anchor")
def ledger_anchor() -> None:
    """Anchor every ledger row not anchored yet (after the anchor database was unreachable)."""
    from ndc import ledger as ledger_module
    from ndc import warehouse

    with warehouse.connect(_warehouse()) as conn:
        warehouse.ensure_meta(conn)
        click.echo(f"anchored {ledger_module.anchor_missing(conn)} ledger row(s)")


@main.group()
def sources() -> None:
    """The registry of national databases (dags/sources/*.yml)."""


@sources.command("validate")
@click.option("--dir", "directory", type=click.Path(exists=True, file_okay=False), help="Folder of source files.")
def sources_validate(directory: str | None) -> None:
    """Validate every source file and its contracts; exit 1 with every problem named."""
    from pathlib import Path

    from ndc.contracts import get_contract
    from ndc.registry import load_sources
    from ndc.settings import get_settings

    folder = Path(directory) if directory else get_settings().sources_dir
    for source in load_sources(folder):
        for table in source.tables:
            get_contract(table.contract)
        click.echo(f"{source.path}: ok ({source.name}, {len(source.tables)} tables)")


@sources.command("new")
@click.argument("name")
@click.option("--engine", type=click.Choice(["postgresql", "mysql", "http", "files"]), default="postgresql",
              show_default=True, help="Where the national database lives.")
@click.option("--owner", default="Owner agency (Bộ ...)", show_default=True, help="The owner agency.")
def sources_new(name: str, engine: str, owner: str) -> None:
    """Scaffold a new source: YAML, contract, simulator with its defect manifest, and a test."""
    from ndc.scaffold import new_source

    made = new_source(name, engine, owner)
    for path in made.files:
        click.echo(f"created {path}")
    click.echo(f"next: edit them, then `ndc sources validate`, `ndc simulate {name}` and "
               f"`ndc extract {name} records --start 2024-07-01 --end 2026-01-01`")


@sources.command("pools")
@click.option("--output", type=click.Path(dir_okay=False), help="Write the JSON to this file (Airflow may log to"
              " stdout while the DAG factory is imported, which would spoil a redirected stdout).")
def sources_pools(output: str | None) -> None:
    """Print the Airflow pools (one per source, max_connections slots) for `airflow pools import`."""
    from pathlib import Path

    from ndc.airflow.factory import pools
    from ndc.registry import load_sources
    from ndc.settings import get_settings

    text = json.dumps(pools(load_sources(get_settings().sources_dir)), indent=2, ensure_ascii=False)
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
        click.echo(f"pools written to {output}: airflow pools import {output}")
    else:
        click.echo(text)


@main.group("contracts")
def contracts_group() -> None:
    """The contract registry: versions, breaking-change check against released.json, agreement with dbt."""


@contracts_group.command("list")
def contracts_list() -> None:
    """Every registered contract: name, version, columns, dataset kind (landing table or shared view)."""
    from ndc.contracts import all_contracts

    for contract in all_contracts():
        click.echo(f"{contract.name:<34} {contract.version:<8} {len(contract.columns):>3} columns  {contract.kind}")


@contracts_group.command("check")
@click.option("--released", "released_path", type=click.Path(dir_okay=False),
              help="Released schemas [default: plugins/ndc/contracts/released.json].")
@click.option("--manifest", type=click.Path(dir_okay=False), help="dbt manifest [default: the project's].")
def contracts_check(released_path: str | None, manifest: str | None) -> None:
    """Exit 1 on a breaking change under a released major, or a shared contract that disagrees with dbt."""
    from pathlib import Path

    from ndc.contracts import all_contracts
    from ndc.contracts.compat import RELEASED, check, dbt_agreement, load_released

    report = check(list(all_contracts()), load_released(Path(released_path) if released_path else RELEASED))
    disagreements = dbt_agreement(Path(manifest) if manifest else None)
    for change in report.new_versions:
        click.echo(f"new version: {change}")
    for change in report.unreleased:
        click.echo(f"unreleased: {change}")
    for change in report.retired:
        click.secho(f"retired: {change}", fg="yellow")
    for change in report.breaking:
        click.secho(f"breaking: {change}", fg="red", err=True)
    for problem in disagreements:
        click.secho(f"dbt disagrees: {problem}", fg="red", err=True)
    if report.breaking or disagreements:
        click.secho(f"contracts check failed: {len(report.breaking)} breaking change(s), {len(disagreements)} "
                    "disagreement(s) with dbt; ship a breaking change as a new major version", fg="red", err=True)
        sys.exit(1)
    click.echo(f"contracts ok: {len(all_contracts())} registered, no breaking change, shared contracts agree with dbt")


@contracts_group.command("release")
@click.option("--released", "released_path", type=click.Path(dir_okay=False),
              help="Released schemas [default: plugins/ndc/contracts/released.json].")
def contracts_release(released_path: str | None) -> None:
    """Record the registry's schemas in released.json: new majors and non-breaking changes (never a breaking one)."""
    from pathlib import Path

    from ndc.contracts import all_contracts
    from ndc.contracts.compat import RELEASED, check, load_released, release, write_released

    path = Path(released_path) if released_path else RELEASED
    released = load_released(path)
    report = check(list(all_contracts()), released)
    write_released(release(list(all_contracts()), released), path)  # raises, writing nothing, on a breaking change
    for change in report.new_versions + report.unreleased:
        click.echo(f"released {change.contract} v{change.major}: {change.kind}")
    click.echo(f"{path}: {len(report.new_versions)} new version(s), {len(report.unreleased)} change(s) recorded")


@main.command()
@click.argument("source")
@click.argument("table")
@click.option("--allow-mass-delete", is_flag=True, help="Mark rows deleted even when most keys are gone.")
@click.option("--run-id", help="Run id recorded in the ledger.")
def compare(source: str, table: str, allow_mass_delete: bool, run_id: str | None) -> None:
    """Full compare: mark landing rows whose key is gone from the source (hard deletes)."""
    from dataclasses import asdict

    from ndc.compare import compare_table

    _warehouse()
    result = compare_table(source, table, run_id=run_id, allow_mass_delete=allow_mass_delete)
    click.echo(json.dumps(asdict(result), indent=2, ensure_ascii=False))


@main.group()
def exchange() -> None:
    """Direct exchanges (dags/exchanges/*.yml): provider database -> contract -> consumer database."""


@exchange.command("validate")
@click.option("--dir", "directory", type=click.Path(exists=True, file_okay=False), help="Folder of exchange files.")
def exchange_validate(directory: str | None) -> None:
    """Validate every exchange file and its contract; exit 2 with the problems named by file and field."""
    from pathlib import Path

    from ndc.exchange import check_contract, exchanges_dir, load_exchanges

    for config in load_exchanges(Path(directory) if directory else exchanges_dir()):
        contract = check_contract(config)
        click.echo(f"{config.path}: ok ({config.provider_agency} -> {config.consumer_agency}, contract "
                   f"{contract.name} v{contract.version})")


@exchange.command("run")
@click.argument("name")
@click.option("--start", required=True, type=click.DateTime(), help="Interval start (UTC unless an offset is given).")
@click.option("--end", required=True, type=click.DateTime(), help="Interval end, exclusive.")
@click.option("--run-id", help="Run id recorded in the consumer's table and the ledger.")
def exchange_run(name: str, start: datetime, end: datetime, run_id: str | None) -> None:
    """Deliver exchange NAME's rows of [START - lookback, END) that pass its contract to the consumer (needs
    NDC_EXCHANGE_HASH_KEY); prints the counts."""
    from ndc import warehouse
    from ndc.exchange import hash_key, run_exchange

    if _utc(end) <= _utc(start):
        raise click.BadParameter("--end must be after --start")
    hash_key()  # before the embedded server is started for nothing
    warehouse.ensure_database(_warehouse())
    result = run_exchange(name, _utc(start), _utc(end), run_id=run_id)
    click.echo(json.dumps(result.__dict__, indent=2, ensure_ascii=False))


@main.group()
def quarantine() -> None:
    """Quarantined rows: overview, rows with their payload, and replay after a fix (docs/quarantine.md)."""


def _table(rows: list[dict], columns: list[str]) -> None:
    """Rows as a plain fixed-width table."""
    cells = [[str(row[c]) if row[c] is not None else "" for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


@quarantine.command("list")
@click.option("--dataset", help="Only this dataset (<source>.<table>).")
def quarantine_list(dataset: str | None) -> None:
    """Per dataset and failed check: rows, rows not yet replayed, still failing, loaded by a replay, and age.

    Reads the quarantine schema: needs the ndc_personal_data role."""
    from ndc import quarantine as module

    _warehouse()
    found = module.overview(dataset)
    if not found:
        click.echo("quarantine is empty" + (f" for {dataset}" if dataset else ""))
        return
    _table(found, ["dataset", "check_name", "rows", "rows_not_replayed", "rows_still_failing",
                   "rows_loaded_by_replay", "oldest_at", "oldest_age"])


@quarantine.command("show")
@click.argument("dataset")
@click.option("--check", help="Only rows that failed this check.")
@click.option("--id", "ids", multiple=True, type=int, help="Only this quarantine id (repeat the option).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row, with the whole payload.")
def quarantine_show(dataset: str, check: str | None, ids: tuple[int, ...], limit: int, as_json: bool) -> None:
    """Quarantined rows of DATASET (oldest first): id, key, checks, reasons, payload, age, replay status.

    The payload is personal data: this command is for holders of the ndc_personal_data role only."""
    from ndc import quarantine as module

    _warehouse()
    for row in module.show(dataset, check=check, ids=list(ids) or None, limit=limit):
        if as_json:
            click.echo(json.dumps(row, ensure_ascii=False, default=str))
            continue
        status = row["replay_outcome"] or "not replayed"
        click.echo(f"#{row['id']} key {row['record_key']}  age {row['age']}  contract v{row['contract_version']}"
                   f"  replay: {status}")
        click.echo(f"  checks:  {', '.join(row['checks'])}")
        click.echo(f"  reasons: {json.dumps(row['reasons'], ensure_ascii=False)}")
        click.echo(f"  payload: {json.dumps(row['payload'], ensure_ascii=False)}")


@quarantine.command("replay")
@click.argument("dataset")
@click.option("--check", help="Only rows that failed this check.")
@click.option("--id", "ids", multiple=True, type=int, help="Only this quarantine id (repeat the option).")
@click.option("--dry-run", is_flag=True, help="Revalidate and count; load and mark nothing.")
@click.option("--run-id", help="Run id recorded in landing, quarantine and the ledger.")
def quarantine_replay(dataset: str, check: str | None, ids: tuple[int, ...], dry_run: bool,
                      run_id: str | None) -> None:
    """Revalidate DATASET's quarantined rows with its current contract and load those that now pass.

    After a contract fix: rows no replay has loaded yet are rebuilt from their payload; those that pass are
    loaded into landing like an extract, the rest stay quarantined. Nothing is deleted; every replayed row is
    marked loaded or still_failing; one ledger row records it. duplicate_key rows are never replayed."""
    from dataclasses import asdict

    from ndc import quarantine as module

    _warehouse()
    result = module.replay(dataset, check=check, ids=list(ids) or None, run_id=run_id, dry_run=dry_run)
    click.echo(json.dumps(asdict(result), indent=2, ensure_ascii=False))


@main.command()
@click.option("--retention-days", type=click.IntRange(min=1),
              help="Keep this many days [default: NDC_RETENTION_DAYS, 730].")
@click.option("--dry-run", is_flag=True, help="Count what would be purged; delete nothing.")
@click.option("--run-id", help="Run id recorded in the ledger.")
def purge(retention_days: int | None, dry_run: bool, run_id: str | None) -> None:
    """Delete personal data past retention: quarantine rows and landing history versions that are no longer
    current. The current state is never purged; one ledger row records the counts."""
    from dataclasses import asdict

    from ndc.retention import purge as purge_personal_data

    _warehouse()
    result = purge_personal_data(retention_days=retention_days, dry_run=dry_run, run_id=run_id)
    click.echo(json.dumps({**asdict(result), "total": result.total}, indent=2, default=str))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def catalog(as_json: bool) -> None:
    """Every shared dataset: description, contract and version, owner agencies, freshness, consumers and their
    agreements (generated from the dbt manifest, the registries, ndc_meta and the applied agreements)."""
    from ndc import catalog as catalog_module
    from ndc import warehouse

    with warehouse.connect(_warehouse()) as conn:
        warehouse.ensure_meta(conn)
        found = catalog_module.refresh(conn)
    if as_json:
        click.echo(json.dumps(catalog_module.as_dicts(found), indent=2, ensure_ascii=False))
        return
    for e in found:
        consumers = ", ".join(f"{c['agency']} ({c['agreement']})" for c in e.consumers) or "none"
        deprecated = f" — DEPRECATED, removed after {e.deprecated_on}" if e.deprecated_on else ""
        click.echo(f"shared.{e.relation}{deprecated}\n  {e.description[:160]}\n"
                   f"  contract {e.contract_name} v{e.contract_version}; owners: {'; '.join(e.owner_agencies)}\n"
                   f"  published {e.last_published_at or 'never'}; sources loaded through "
                   f"{e.sources_loaded_through or 'never'}\n  consumers: {consumers}")


@main.command()
@click.argument("relation")
@click.argument("key")
def trace(relation: str, key: str) -> None:
    """Lineage of one row of shared.RELATION (citizens, enterprises) by KEY: its landing versions, their batches and
    runs, the contract versions that validated them, the publication and the agreements it was delivered under."""
    from dataclasses import asdict

    from ndc import warehouse
    from ndc.lineage import trace as trace_row

    with warehouse.connect(_warehouse()) as conn:
        warehouse.ensure_meta(conn)
        found = trace_row(conn, relation, key)
    click.echo(json.dumps(asdict(found), indent=2, ensure_ascii=False, default=str))


@main.group()
def reads() -> None:
    """Consumer reads per role and view (from pg_stat_statements)."""


@reads.command("collect")
def reads_collect() -> None:
    """Add the agency reads since the last collection to ndc_meta.consumer_reads (and the ledger)."""
    from ndc import warehouse
    from ndc.reads import collect

    with warehouse.connect(_warehouse()) as conn:
        warehouse.ensure_meta(conn)
        found = collect(conn)
    click.echo(f"{found.reads} read(s) in {found.statements} statement(s): "
               + ", ".join(f"{r} {v} {n}" for (r, v), n in sorted(found.per_view.items())))


@main.group()
def agreements() -> None:
    """Sharing agreements (dags/agreements/*.yml) with consumer agencies (dags/agencies/*.yml)."""


@agreements.command("validate")
def agreements_validate() -> None:
    """Validate every agency and agreement file (against the shared views in the dbt manifest)."""
    from ndc import dbt
    from ndc.agreements import load_agencies, load_agreements

    agencies = load_agencies()
    found = load_agreements(agencies=agencies, shared=dbt.shared_models())
    for agreement in found.values():
        click.echo(f"{agreement.path}: ok ({agreement.consumer}: {', '.join(v.shared for v in agreement.views)}; "
                   f"{agreement.start} to {agreement.expires})")


@agreements.command("approve")
@click.argument("agreement_id")
@click.option("--note", help="Recorded with the approval (e.g. the decision's reference).")
def agreements_approve(agreement_id: str, note: str | None) -> None:
    """Approve AGREEMENT_ID as it is now (its file's SHA-256), connecting as NDC_APPROVER_URL: a member of
    ndc_approver, never the role that deploys the platform."""
    import os

    from ndc import dbt
    from ndc.agreements import approve, load_agencies, load_agreements

    url = os.environ.get("NDC_APPROVER_URL")
    if not url:
        raise NdcError("set NDC_APPROVER_URL: the approver's own connection (a member of ndc_approver)")
    found = load_agreements(agencies=load_agencies(), shared=dbt.shared_models())
    if agreement_id not in found:
        raise NdcError(f"no agreement {agreement_id!r} (agreements: {', '.join(found) or 'none'})")
    approve(url, found[agreement_id], note)
    click.echo(f"approved {agreement_id} (sha256 {found[agreement_id].content_sha256[:16]}…)")


@agreements.command("apply")
@click.option("--run-id", help="Run id recorded in the ledger.")
def agreements_apply(run_id: str | None) -> None:
    """Agency roles, then views and grants for every approved, current agreement; revoke the rest (idempotent)."""
    from ndc import warehouse
    from ndc.agreements import apply

    url = _warehouse()
    with warehouse.connect(url) as conn:
        warehouse.ensure_meta(conn)
        result = apply(conn, url, run_id=run_id)
    click.echo(json.dumps(result.__dict__, indent=2))


@main.group()
def agency() -> None:
    """Consumer agencies (roles with security_barrier views over shared.<model>)."""


@agency.command("apply-province")
@click.argument("role")
@click.argument("province_code")
@click.option("--schema", help="Schema of the agency's views [default: the role name].")
def agency_apply_province(role: str, province_code: str, schema: str | None) -> None:
    """Give ROLE a masked view of shared.citizens for the current province PROVINCE_CODE (idempotent)."""
    from ndc import warehouse
    from ndc.sharing import ProvinceAgency, apply_province_agency

    url = _warehouse()
    with warehouse.connect(url) as conn:
        apply_province_agency(conn, ProvinceAgency(role, schema or role, province_code), url)
    click.echo(f"{role}: select on {schema or role}.citizens (current province {province_code}, PIN masked)")


@main.command()
@click.option("--citizens", default=100_000, show_default=True, type=click.IntRange(min=1000))
@click.option("--seed", default=42, show_default=True, type=int)
def demo(citizens: int, seed: int) -> None:
    """Simulate, extract, conform and publish as real Airflow DAG runs, then show what a consumer sees."""
    from ndc.demo import DEMO_AGENCY, run_demo

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


@main.command()
def stop() -> None:
    """Stop the embedded PostgreSQL server."""
    from ndc import embedded

    click.echo("embedded PostgreSQL stopped" if embedded.stop() else "embedded PostgreSQL was not running")


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


@main.command("airflow")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1024, 65535),
              help="Port of the UI on 127.0.0.1.")
def airflow_ui(port: int) -> None:
    """Start the Airflow UI (airflow standalone) on the demo's data; prints the URL and the login."""
    import os

    from ndc import embedded, warehouse
    from ndc.demo import airflow_command, airflow_env, import_pools

    env = {**os.environ, **airflow_env(embedded.ensure_warehouse()),
           "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port),
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/"}
    with warehouse.connect(env["NDC_WAREHOUSE_URL"]) as conn:
        warehouse.ensure_meta(conn)  # the operator's page reads its views
    warehouse.ensure_database(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", "", 1))
    import_pools(env)  # one pool per source caps its connections; the scheduler needs them to exist
    password = _admin_password(Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated")
    click.echo(f"Airflow UI: http://127.0.0.1:{port}  user admin, password {password} (Ctrl-C stops)")
    click.echo(f"operator's page: http://127.0.0.1:{port}/plugin/ndc_operations (Browse > NDC operations)",
               nl=True)
    sys.stdout.flush()
    os.execvpe(airflow_command()[0], airflow_command("standalone"), env)  # noqa: S606 - our own venv binary


@main.command()
@click.option("--only", "chosen", multiple=True, help="Run only these scenario numbers (repeat the option).")
@click.option("--server", help="PostgreSQL server for the scenarios' databases [default: the warehouse's server].")
def faults(chosen: tuple[str, ...], server: str | None) -> None:
    """Fault injection: run each scenario on fresh databases; one line each: survived or not, rows expected vs
    found. Exits 1 when any scenario did not survive."""
    from ndc import embedded
    from ndc.connections import with_database
    from ndc.faults import run_one, scenarios

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
    from ndc.bench_all import PARTS

    names = {name.strip() for item in value for name in item.split(",") if name.strip()}
    unknown = sorted(names - set(PARTS))
    if unknown:
        raise click.BadParameter(f"unknown part {', '.join(unknown)}; parts: {', '.join(PARTS)}")
    return names


@main.group(invoke_without_command=True)
@click.option("--rows", "sizes", multiple=True, type=click.IntRange(min=1000), default=(1_000_000, 5_000_000),
              show_default=True, help="EL table sizes (repeat the option); RSS growth is largest ÷ smallest.")
@click.option("--citizens", type=click.IntRange(min=1000), default=100_000, show_default=True,
              help="Citizens simulated for the conform, change and demo parts.")
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Conform DAG runs, each paired with a plain dbt build (the median run is reported).")
@click.option("--skip", multiple=True, callback=_parts, metavar="PART[,PART]",
              help="Leave out parts: parse, el, dlt, conform, change, demo (comma-separated or repeated).")
@click.option("--json-out", type=click.Path(dir_okay=False),
              help="Write the figures as JSON here [default: docs/bench-<UTC date>.json in the repository].")
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
    from ndc import bench_all

    options = bench_all.Options(server=server, sizes=sorted(set(sizes)), citizens=citizens, runs=runs, skip=skip,
                                port=port, airflow_db=airflow_db, prefix=db_prefix)
    document = bench_all.run_all(options, click.echo)
    path = Path(json_out) if json_out else bench_all.default_json_path()
    bench_all.write_json(document, path)
    click.echo("\n" + bench_all.table(document))
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
def bench_el(sizes: tuple[int, ...], server: str | None, json_out: str | None, keep: bool) -> None:
    """Extract-and-load: raw COPY limit vs the platform's validated load and merge, RSS, no-change run."""
    from ndc import bench as bench_module

    figures = bench_module.run(server or _warehouse(), list(sizes), click.echo, keep=keep)
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
    from ndc import bench_conform as module

    url = _warehouse()
    if citizens:
        url = module.load_bench_warehouse(url, citizens)
    figures = (module.measure_change(url, share=share, airflow_db=airflow_db, port=port) if share
               else module.measure(url, runs=runs, airflow_db=airflow_db, port=port))
    click.echo(json.dumps({k: v for k, v in figures.items() if k not in ("runs", "task_times")}, indent=2,
                          default=str))
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
    from ndc import bench_conform as module

    url = _warehouse()
    if citizens:
        url = module.load_bench_warehouse(url, citizens)
    figures = module.measure_gate2(url)
    click.echo(json.dumps(figures, indent=2, default=str))
    if json_out:
        with open(json_out, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2, default=str)


@main.group("dbt")
def dbt_group() -> None:
    """The dbt project (dbt_project/)."""


@dbt_group.command("parse")
def dbt_parse() -> None:
    """Write dbt_project/target/manifest.json, which the conform DAG is rendered from."""
    from ndc import dbt

    click.echo(f"manifest written: {dbt.parse()}")


@dbt_group.command("docs")
def dbt_docs() -> None:
    """Generate the dbt docs site (every model, column, test, source and exposure) from the warehouse."""
    from ndc import dbt, warehouse
    from ndc.publish import inactive_schema

    with warehouse.connect(_warehouse()) as conn:
        warehouse.ensure_meta(conn)
        schema = inactive_schema(conn)
    result = dbt.run(["docs", "generate"], build_schema=schema)
    if result.returncode != 0:
        raise NdcError(f"dbt docs generate failed:\n{result.output[-3000:]}")
    site = dbt.PROJECT_DIR / "target"
    click.echo(f"docs written to {site}/index.html (serve them with: python -m http.server -d {site})")


@main.command()
@click.option("--run-id", help="Run id recorded in the ledger.")
@click.option("--accept-stale", is_flag=True,
              help="Build even if a source is past its freshness error threshold (reported either way).")
@click.option("--accept-row-change", is_flag=True,
              help="Publish even if a shared model's row count changed more than NDC_PUBLISH_MAX_ROW_CHANGE allows.")
def conform(run_id: str | None, accept_stale: bool, accept_row_change: bool) -> None:
    """Source-freshness gate, dbt build into the inactive build schema, then publish it (write-audit-publish).

    If a source is stale or the build fails nothing is published: consumers keep reading the last good build."""
    from ndc import dbt
    from ndc.jobs import prepare_conform, publish_build

    prepared = prepare_conform(accept_stale=accept_stale)
    not_fresh = {k: v for k, v in prepared["freshness"].items() if v != "pass"}
    if not_fresh:
        click.echo(f"source freshness: {not_fresh}")
    build_schema = prepared["build_schema"]
    click.echo(f"building shared models into {build_schema}")
    result = dbt.run(["build"], build_schema=build_schema, echo=True)
    if result.returncode != 0:
        raise NdcError(f"dbt build failed (exit {result.returncode}); nothing published, "
                       "consumers still read the previous build")
    published = publish_build(build_schema, run_id=run_id, as_of=prepared["started_at"],
                              accept_row_change=accept_row_change)
    click.echo(f"published {published['rows']} from {published['build_schema']}")


if __name__ == "__main__":
    main()
