"""``ndc demo``: the whole path on one machine, as real Airflow DAG runs, with a summary at the end.

simulate the five national databases (population, taxation and the enterprise register in databases, the insurance
API served on loopback, education file drops) -> one ``extract_<source>`` DAG run each (full refresh) -> ``conform``
DAG run (freshness gate, one dbt build with a task per model, then write-audit-publish of the five shared views) ->
a consumer agency role reads its view -> summary. On the embedded default the warehouse and the simulated sources
are rebuilt on every run (the demo starts clean), and the enterprise register, which lives on MariaDB, falls back to
a database in the embedded PostgreSQL unless ``AIRFLOW_CONN_NDC_SRC_ENTERPRISE`` names a MariaDB. A configured
``NDC_WAREHOUSE_URL`` is never dropped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from ndc.errors import NdcError
from ndc.settings import REPO_ROOT, get_settings
from ndc.warehouse import connections, database, embedded

DEMO_AGENCY = "ndc_qn_statistics_office"  # a login of dags/agencies/quang_ngai.yml (province 51, with former Kon Tum)
DEMO_APPROVER = "ndc_demo_approver"
LOGICAL_DATE = "2026-01-01"  # the simulators' as-of date: every simulated row is before it


def airflow_env(warehouse_url: str) -> dict[str, str]:
    """Airflow's settings for the demo and ``ndc airflow``: metadata in the same server (database
    ``<warehouse database>_airflow``: ``ndc_airflow`` on the embedded default), this repo's DAGs."""
    name = f"{connections.database_of(warehouse_url)[:55]}_airflow"
    metadata = connections.with_database(warehouse_url, name).replace(
        "postgresql://", "postgresql+psycopg2://", 1)
    return {
        "AIRFLOW_HOME": str(get_settings().data_dir / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata,
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "NDC_WAREHOUSE_URL": warehouse_url,
    }


def airflow_command(*args: str) -> list[str]:
    found = Path(sys.prefix) / "bin" / "airflow"
    return [str(found) if found.exists() else "airflow", *args]


def ndc_command() -> str:
    """The ``ndc`` executable of this interpreter's environment."""
    found = Path(sys.prefix) / "bin" / "ndc"
    return str(found) if found.exists() else "ndc"


def _airflow(env: dict[str, str], *args: str) -> None:
    result = subprocess.run(airflow_command(*args), env={**os.environ, **env}, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise NdcError(f"airflow {' '.join(args)} failed (exit {result.returncode}):\n"
                       f"{(result.stdout + result.stderr)[-4000:]}")


def import_pools(env: dict[str, str]) -> None:
    """Create or update the sources' Airflow pools (``ndc sources pools``) in the metadata database."""
    import tempfile

    from ndc.config.sources import load_sources, pools

    _airflow(env, "db", "migrate")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(pools(load_sources(get_settings().sources_dir)), handle)
    try:
        _airflow(env, "pools", "import", handle.name)
    finally:
        os.unlink(handle.name)


@dataclass
class DemoSummary:
    stages: list[tuple[str, float]] = field(default_factory=list)
    figures: dict = field(default_factory=dict)


SOURCES = ("population", "enterprise", "taxation", "insurance", "education")


def _reset(warehouse_url: str) -> None:
    """Start clean: drop the demo's warehouse and source databases, only those on the embedded server."""
    from urllib.parse import urlsplit

    from ndc_lab.simulate import insurance

    server = urlsplit(warehouse_url).netloc
    urls = [warehouse_url, insurance.default_target(),
            *(connections.source_url(f"ndc_src_{name}", "postgresql") for name in ("population", "taxation"))]
    if not os.environ.get("AIRFLOW_CONN_NDC_SRC_ENTERPRISE"):
        urls.append(connections.source_url("ndc_src_enterprise", "mysql"))
    for url in urls:
        if urlsplit(url).scheme == "postgresql" and urlsplit(url).netloc == server:
            database.drop_database(url)


def _simulate_all(citizens: int, seed: int) -> dict[str, dict[str, int]]:
    """Every source at the same size and seed (they share the population); returns rows per table."""
    import importlib

    from ndc_lab.simulate.common import SourceSpec

    spec = SourceSpec(citizens=citizens, seed=seed)
    rows = {}
    for name in SOURCES:
        module = importlib.import_module(f"ndc_lab.simulate.{name}")
        sim = module.simulate(spec)
        module.write(module.default_target(), sim, spec)
        tables = sim.tables if hasattr(sim, "tables") else {
            "citizens": sim.citizens, "households": sim.households, "residence_changes": sim.residence_changes}
        rows[name] = {table: frame.height for table, frame in tables.items()}
    return rows


def _serve_insurance(state: dict) -> None:
    """The insurance API on a free loopback port for the demo's lifetime, rate-limited and failing now and then
    as the real one does; the extract DAG reaches it through AIRFLOW_CONN_NDC_SRC_INSURANCE."""
    import secrets

    from ndc_lab.simulate import insurance, insurance_api

    token = secrets.token_urlsafe(16)
    server, base = insurance_api.start_in_thread(insurance.default_target(), token=token, rate_limit=50.0,
                                                 fault_rate=0.01, seed=1)
    state["insurance_server"] = server
    state["airflow"]["AIRFLOW_CONN_NDC_SRC_INSURANCE"] = base.replace("http://", f"http://:{token}@", 1) + "/"


def run_demo(citizens: int, seed: int, echo: Callable[[str], None]) -> DemoSummary:
    summary = DemoSummary()
    configured = bool(os.environ.get("NDC_WAREHOUSE_URL"))
    state: dict = {}

    def step_warehouse() -> None:
        state["url"] = embedded.ensure_warehouse()
        if not configured:
            _reset(state["url"])
        database.ensure_database(state["url"])
        state["airflow"] = airflow_env(state["url"])
        database.ensure_database(state["airflow"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", ""))

    def step_simulate() -> None:
        state["source_rows"] = _simulate_all(citizens, seed)
        _serve_insurance(state)

    def step_extract() -> None:
        import_pools(state["airflow"])
        _airflow(state["airflow"], "dags", "reserialize")
        from concurrent.futures import ThreadPoolExecutor

        # Three DAG runs at a time: each `airflow dags test` spends seconds starting up, the loads overlap it.
        with ThreadPoolExecutor(max_workers=3) as pool:
            runs = [pool.submit(_airflow, state["airflow"], "dags", "test", f"extract_{name}", LOGICAL_DATE,
                                "-c", json.dumps({"full_refresh": True})) for name in SOURCES]
            for run in runs:
                run.result()

    def step_conform() -> None:
        from ndc.conform import dbt

        if not dbt.manifest_file().exists():
            dbt.parse()
        _airflow(state["airflow"], "dags", "test", "conform", LOGICAL_DATE)

    def step_agency() -> None:
        state["deliveries"] = share(state["url"])

    where = "embedded PostgreSQL" if not configured else "NDC_WAREHOUSE_URL"
    steps: list[tuple[str, Callable[[], None]]] = [
             (f"warehouse ({where})", step_warehouse),
             (f"simulate the five national databases ({citizens:,} citizens)", step_simulate),
             ("extract_<source> DAG runs, three at a time (airflow dags test, full refresh)", step_extract),
             ("conform DAG run (freshness gate, dbt build, a task per model, write-audit-publish)", step_conform),
             ("sharing agreements (dags/agreements): approved, applied, the published version delivered",
              step_agency)]
    try:
        _run_steps(steps, summary, echo)
    finally:
        if "insurance_server" in state:
            state["insurance_server"].shutdown()
            state["insurance_server"].server_close()
    summary.figures = collect_figures(state["url"], state["source_rows"])
    summary.figures["airflow_env"] = {k: v for k, v in state["airflow"].items()
                                      if k != "AIRFLOW_CONN_NDC_SRC_INSURANCE"}  # the token stays private
    return summary


def share(url: str) -> int:
    """The repository's agencies and sharing agreements on the demo's warehouse: each agreement approved by a demo
    approver (a login in ndc_approver, as ``ndc agreements approve`` needs), applied (agency roles, views, grants),
    and the version just published delivered under each (a ledger row and a receipt per agreement, as every later
    publish does). Returns the deliveries made."""
    from psycopg import sql

    from ndc.audit import ledger
    from ndc.config.agreements import load_agencies, load_agreements
    from ndc.identifiers import ident
    from ndc.sharing import agreements

    with database.connect(url) as conn:
        database.ensure_meta(conn)
        if not conn.execute("select 1 from pg_roles where rolname = %s", (DEMO_APPROVER,)).fetchone():
            conn.execute(sql.SQL("create role {} login in role ndc_approver").format(ident(DEMO_APPROVER)))
        conn.execute(sql.SQL("grant connect on database {} to {}").format(
            ident(connections.database_of(url)), ident(DEMO_APPROVER)))
        conn.execute(sql.SQL("grant insert, select on ndc_meta.agreement_approvals to {}").format(
            ident(DEMO_APPROVER)))
        conn.commit()
    approver = connections.with_user(url, DEMO_APPROVER)
    agencies = load_agencies()
    for agreement in load_agreements(agencies=agencies).values():
        agreements.approve(approver, agreement, agencies[agreement.consumer], note="ndc demo")
    with database.connect(url) as conn:
        # The demo approver cannot reach the anchor (a deployment gives approvers NDC_LEDGER_ANCHOR_URL): the
        # platform seals its approval rows, after verifying the chain.
        ledger.anchor_missing(conn)
        agreements.apply(conn, url, run_id="demo")
        publication = conn.execute("select max(publication_id) from ndc_meta.publications").fetchone()[0]
        conn.commit()
        return agreements.deliver(conn, publication, run_id="demo")


def _run_steps(steps: list[tuple[str, Callable[[], None]]], summary: DemoSummary,
               echo: Callable[[str], None]) -> None:
    for number, (title, action) in enumerate(steps, start=1):
        echo(f"[{number}/{len(steps)}] {title} ...")
        began = time.monotonic()
        action()
        summary.stages.append((title, time.monotonic() - began))
        echo(f"      done in {summary.stages[-1][1]:.1f} s")


def collect_figures(url: str, source_rows: dict[str, dict[str, int]]) -> dict:
    from psycopg import sql

    from ndc.audit import ledger
    from ndc.conform import dbt
    from ndc.identifiers import ident

    figures: dict = {"source": source_rows}
    with database.connect(url) as wh:
        figures["landing"] = {name: {t: wh.execute(f"select count(*) from landing_{name}.{t}").fetchone()[0]
                                     for t in tables} for name, tables in source_rows.items()}
        figures["quarantine"] = wh.execute(
            "select dataset, array_to_string(checks, ','), count(*) from quarantine.rows"
            " group by 1, 2 order by 1, 2").fetchall()
        figures["shared_views"] = {
            model: wh.execute(sql.SQL("select count(*) from {}").format(ident("shared", model))).fetchone()[0]
            for model in sorted(dbt.shared_models())}
        figures["conformance"] = wh.execute(
            "select source_name, sum(linked_records), sum(identity_exceptions), sum(reference_exceptions)"
            " from shared.data_quality_summary group by 1 order by 1").fetchall()
        figures["build_schema"] = wh.execute(
            "select build_schema from ndc_meta.publications order by publication_id desc limit 1").fetchone()[0]
        figures["ledger"] = wh.execute("select kind, count(*) from ndc_meta.ledger group by 1 order by 1").fetchall()
        verified = ledger.verify(wh)
        figures["ledger_ok"], figures["ledger_head"] = verified.ok, verified.head
    with database.connect(url) as wh:
        figures["deliveries"] = wh.execute(
            "select details->>'consumer', count(*) from ndc_meta.ledger where kind = 'delivery' and"
            " outcome = 'success' group by 1 order by 1").fetchall()
    with psycopg.connect(connections.with_user(url, DEMO_AGENCY)) as agency:
        figures["consumer_rows"] = agency.execute("select count(*) from agency_quang_ngai.citizens").fetchone()[0]
        figures["consumer_sample"] = agency.execute(
            "select citizen_id_pseudonym, birth_date_year, sex, historic_province_code, historic_province_name,"
            " current_province_name from agency_quang_ngai.citizens order by historic_province_code desc,"
            " citizen_id_pseudonym limit 5").fetchall()
    return figures
