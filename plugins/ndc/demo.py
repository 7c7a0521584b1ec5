"""``ndc demo``: the whole path on one machine, as real Airflow DAG runs, with a summary at the end.

simulate the population database -> ``extract_population`` DAG run (full refresh) -> ``conform`` DAG run (dbt via
Cosmos, then write-audit-publish) -> a consumer agency role reads its view -> summary. On the embedded default
the warehouse is rebuilt on every run (the demo starts clean); a configured ``NDC_WAREHOUSE_URL`` is never dropped.
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

from ndc import connections, embedded, warehouse
from ndc.errors import NdcError
from ndc.settings import REPO_ROOT, get_settings

DEMO_AGENCY = "ndc_agency_quang_ngai"
DEMO_PROVINCE = "51"  # Quảng Ngãi, which includes the former Kon Tum (62) since 2025-07-01
LOGICAL_DATE = "2026-01-01"  # the simulators' as-of date: every simulated row is before it


def airflow_env(warehouse_url: str) -> dict[str, str]:
    """Airflow's settings for the demo and ``ndc airflow``: metadata in the same server, this repo's DAGs."""
    metadata = connections.with_database(warehouse_url, "ndc_airflow").replace(
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


def _airflow(env: dict[str, str], *args: str) -> None:
    result = subprocess.run(airflow_command(*args), env={**os.environ, **env}, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise NdcError(f"airflow {' '.join(args)} failed (exit {result.returncode}):\n"
                       f"{(result.stdout + result.stderr)[-4000:]}")


@dataclass
class DemoSummary:
    stages: list[tuple[str, float]] = field(default_factory=list)
    figures: dict = field(default_factory=dict)


def _reset(warehouse_url: str) -> None:
    """Start clean: drop the demo's warehouse and source databases, only those on the embedded server."""
    from urllib.parse import urlsplit

    server = urlsplit(warehouse_url).netloc
    for url in (warehouse_url, connections.resolve("ndc_src_population")):
        if urlsplit(url).netloc == server:
            warehouse.drop_database(url)


def run_demo(citizens: int, seed: int, echo: Callable[[str], None]) -> DemoSummary:
    summary = DemoSummary()
    configured = bool(os.environ.get("NDC_WAREHOUSE_URL"))
    state: dict = {}

    def step_warehouse() -> None:
        state["url"] = embedded.ensure_warehouse()
        if not configured:
            _reset(state["url"])
        warehouse.ensure_database(state["url"])
        state["airflow"] = airflow_env(state["url"])
        warehouse.ensure_database(state["airflow"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", ""))

    def step_simulate() -> None:
        from ndc.simulate import population

        spec = population.PopulationSpec(citizens=citizens, seed=seed)
        population.write(connections.resolve("ndc_src_population"), population.simulate(spec), spec)

    def step_extract() -> None:
        _airflow(state["airflow"], "db", "migrate")
        _airflow(state["airflow"], "dags", "reserialize")
        _airflow(state["airflow"], "dags", "test", "extract_population", LOGICAL_DATE, "-c",
                 json.dumps({"full_refresh": True}))

    def step_conform() -> None:
        from ndc import dbt

        if not dbt.MANIFEST.exists():
            dbt.parse()
        _airflow(state["airflow"], "dags", "test", "conform", LOGICAL_DATE)

    def step_agency() -> None:
        from ndc.sharing import ProvinceAgency, apply_province_agency

        with warehouse.connect(state["url"]) as conn:
            agency = ProvinceAgency(DEMO_AGENCY, "agency_quang_ngai", DEMO_PROVINCE)
            apply_province_agency(conn, agency, state["url"])

    where = "embedded PostgreSQL" if not configured else "NDC_WAREHOUSE_URL"
    steps: list[tuple[str, Callable[[], None]]] = [
             (f"warehouse ({where})", step_warehouse),
             (f"simulate population ({citizens:,} citizens)", step_simulate),
             ("extract_population DAG run (airflow dags test, full refresh)", step_extract),
             ("conform DAG run (dbt via Cosmos, write-audit-publish)", step_conform),
             ("consumer agency: People's Committee of Quảng Ngãi", step_agency)]
    for number, (title, action) in enumerate(steps, start=1):
        echo(f"[{number}/{len(steps)}] {title} ...")
        began = time.monotonic()
        action()
        summary.stages.append((title, time.monotonic() - began))
        echo(f"      done in {summary.stages[-1][1]:.1f} s")
    summary.figures = collect_figures(state["url"])
    summary.figures["airflow_env"] = state["airflow"]
    return summary


def collect_figures(url: str) -> dict:
    from ndc import ledger

    figures: dict = {}
    source = connections.resolve("ndc_src_population")
    with psycopg.connect(source) as src:
        figures["source"] = {t: src.execute(f"select count(*) from {t}").fetchone()[0]
                             for t in ("citizens", "households", "residence_changes")}
    with warehouse.connect(url) as wh:
        figures["landing"] = {t: wh.execute(f"select count(*) from landing_population.{t}").fetchone()[0]
                              for t in figures["source"]}
        figures["quarantine"] = wh.execute(
            "select dataset, array_to_string(checks, ','), count(*) from quarantine.rows"
            " group by 1, 2 order by 1, 2").fetchall()
        figures["shared"] = wh.execute("select count(*) from shared.citizens").fetchone()[0]
        figures["build_schema"] = wh.execute(
            "select build_schema from ndc_meta.publications order by publication_id desc limit 1").fetchone()[0]
        figures["ledger"] = wh.execute("select kind, count(*) from ndc_meta.ledger group by 1 order by 1").fetchall()
        verified = ledger.verify(wh)
        figures["ledger_ok"], figures["ledger_head"] = verified.ok, verified.head
    consumer = url.replace("postgres@", f"{DEMO_AGENCY}@", 1)
    with psycopg.connect(consumer) as agency:
        figures["consumer_rows"] = agency.execute("select count(*) from agency_quang_ngai.citizens").fetchone()[0]
        figures["consumer_sample"] = agency.execute(
            "select citizen_id_masked, full_name, birth_date, historic_province_code, historic_province_name,"
            " current_province_name from agency_quang_ngai.citizens order by historic_province_code desc,"
            " citizen_id_masked limit 5").fetchall()
    return figures
