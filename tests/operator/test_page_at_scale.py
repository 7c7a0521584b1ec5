"""The operator's page at the seed's size (issue 19), in a real browser: 3,000 generated sources of 95 agencies
(:mod:`ndc_lab.national`), each table with its ledger history, served by ``ndc airflow``.

It leads with what needs attention — failing first, then late, then quarantining — over every source; the full
list is searched and paged. The load time is measured (median of three loads of the page's own document) and
written with the screenshots to ``artifacts/``; the bound asserted here is a guard against gross regressions, the
figure is what the closing note reports.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from ndc_lab import national
from psycopg import sql
from psycopg.types.json import Jsonb

from ndc.audit import ledger
from ndc.config.sources import load_sources
from ndc.warehouse import database
from ndc.warehouse.connections import database_of
from tests.helpers.browser import ARTIFACTS, logged_in, ndc_airflow, operator_frame

FAILING = 7
LATE_SOURCES = 5
QUARANTINING = 4


def _chain(conn: psycopg.Connection, rows: list[tuple[datetime, ledger.LedgerEntry]]) -> None:
    """Ledger rows at the given times, chained as the ledger's writer chains them (in one statement batch)."""
    with conn.transaction():
        conn.execute("lock table ndc_meta.ledger in share row exclusive mode")
        last = conn.execute("select ledger_id, row_hash from ndc_meta.ledger order by ledger_id desc limit 1"
                            ).fetchone()
        ledger_id, prev = (last[0], last[1]) if last else (0, ledger.GENESIS)
        values = []
        for when, entry in rows:
            ledger_id += 1
            row = {**entry.__dict__, "ledger_id": ledger_id, "recorded_at": when}
            digest = ledger.row_hash(prev, row)
            values.append([*(Jsonb(row[k]) if k == "details" else row[k] for k in ledger._FIELDS), prev, digest])
            prev = digest
        columns = [*ledger._FIELDS, "prev_hash", "row_hash"]
        with conn.cursor() as cur:
            cur.executemany(f"insert into ndc_meta.ledger ({', '.join(columns)}) values"
                            f" ({', '.join(['%s'] * len(columns))})", values)


def _extract(source: str, table: str, outcome: str = "success", quarantined: int = 0) -> ledger.LedgerEntry:
    return ledger.LedgerEntry(kind="extract", source=source, target=f"landing_{source}.{table}",
                              run_id="scheduled__2026-12-06T00:00:00+00:00", rows_in=100, rows_loaded=100 - quarantined,
                              rows_quarantined=quarantined, duration_ms=900, outcome=outcome,
                              contract_name=f"x.{table}", contract_version="1.0.0",
                              details={"rows_new_versions": 3})


@pytest.fixture(scope="module")
def national_page(dbs):
    data_dir = Path(tempfile.mkdtemp(prefix="ndc-scale-page-", dir="/var/tmp"))
    data_dir.chmod(0o755)
    bundle = national.generate(data_dir, 3000, 95)
    sources = load_sources(bundle.dags / "sources")
    now = datetime.now(UTC)
    late = [s for s in sources if s.name.endswith("_007")][:LATE_SOURCES]
    datasets = [(s, t.name) for s in sources for t in s.tables]
    failing = [d for d in datasets if d[0] not in late][100:100 + FAILING]
    quarantining = [d for d in datasets if d[0] not in late and d not in failing][200:200 + QUARANTINING]
    rows = []
    for source, table in datasets:
        when = now - (timedelta(days=3) if source in late else timedelta(hours=1))
        rows.append((when, _extract(source.name, table, quarantined=2 if (source, table) in quarantining else 0)))
    rows += [(now - timedelta(minutes=10), _extract(s.name, t, outcome="failed")) for s, t in failing]
    with database.connect(dbs.warehouse) as conn:
        database.ensure_meta(conn)
        for n, source in enumerate(sources):  # the landing tables the loads wrote (a gone one would be "late")
            conn.execute(sql.SQL("create schema {}").format(sql.Identifier(f"landing_{source.name}")))
            for table in source.tables:
                conn.execute(sql.SQL("create table {} (_ndc_loaded_at timestamptz)").format(
                    sql.Identifier(f"landing_{source.name}", table.name)))
            if n % 200 == 199:
                conn.commit()
        conn.commit()
        _chain(conn, rows)
        for source, table in quarantining:
            for n in range(2):
                conn.execute("insert into quarantine.rows (dataset, record_key, checks, reasons, payload, row_hash,"
                             " contract_name, contract_version, batch_id, run_id) values (%s, %s, %s, '{}', '{}', %s,"
                             " %s, '1.0.0', gen_random_uuid(), 'seed')",
                             (f"{source.name}.{table}", f"k{n}", ["not_blank"], f"h{n}", f"x.{table}"))
        conn.commit()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NDC_", "AIRFLOW"))}
    env.update(NDC_DATA_DIR=str(data_dir), NDC_WAREHOUSE_URL=dbs.warehouse, NDC_DAGS_DIR=str(bundle.dags),
               NDC_DBT_PROJECT_DIR=os.environ.get("NDC_DBT_PROJECT_DIR", str(Path.cwd() / "dbt_project")))
    # Airflow itself parses the repository's DAG files (the page reads the 3,000-source registry of NDC_DAGS_DIR)
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).resolve().parents[2] / "dags")
    expected = {"datasets": len(datasets), "sources": len(sources),
                "failing": {f"{s.name}.{t}" for s, t in failing},
                "late": {f"{s.name}.{t.name}" for s in late for t in s.tables},
                "quarantining": {f"{s.name}.{t}" for s, t in quarantining},
                "agency": sources[0].path.parent.name,
                "agency_datasets": sum(len(s.tables) for s in sources if s.path.parent == sources[0].path.parent)}
    try:
        yield env, expected
    finally:
        with psycopg.connect(dbs.warehouse, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(
                sql.Identifier(f"{database_of(dbs.warehouse)[:55]}_airflow")))
        shutil.rmtree(data_dir, ignore_errors=True)


def test_the_page_with_3000_sources_leads_with_what_needs_attention(national_page):
    env, expected = national_page
    attention = expected["failing"] | expected["late"] | expected["quarantining"]
    log = Path(env["NDC_DATA_DIR"]) / "ndc-airflow.log"
    with ndc_airflow(env, log) as (base, password), logged_in(base, password) as page:
        frame = operator_frame(page, base)
        page.screenshot(path=str(ARTIFACTS / "operator-page-3000-sources-in-airflow.png"))
        # first: what needs attention, failing before late before quarantining
        assert frame.locator("h2").first.inner_text().startswith("Needs attention")
        assert frame.get_by_test_id("attention-total").inner_text() == str(len(attention))
        assert frame.get_by_test_id("attention-count-failing").inner_text() == str(len(expected["failing"]))
        assert frame.get_by_test_id("attention-count-late").inner_text() == str(len(expected["late"]))
        assert frame.get_by_test_id("attention-count-quarantining").inner_text() == str(
            len(expected["quarantining"]))
        shown = [t.removeprefix("attention-row-") for t in frame.locator("[data-testid^=attention-row-]")
                 .evaluate_all("rows => rows.map(r => r.dataset.testid)")]
        assert shown[:len(expected["failing"])] == sorted(expected["failing"])
        assert set(shown[len(expected["failing"]):len(expected["failing"]) + len(expected["late"])]) == \
            expected["late"]
        assert set(shown) == attention
        # then every source, searched and paged
        total = expected["datasets"]
        assert frame.get_by_test_id("sources-matching").get_attribute("data-value") == str(total)
        assert frame.get_by_test_id("sources-page").inner_text() == f"page 1 of {-(-total // 100)}"
        assert frame.locator("[data-testid^=source-row-]").count() == 100
        # the page's own document, loaded three times (the figure of the closing note)
        seconds = []
        for _ in range(3):
            started = time.monotonic()
            page.goto(base + "/ndc/", wait_until="load")
            seconds.append(time.monotonic() - started)
        page.screenshot(path=str(ARTIFACTS / "operator-page-3000-sources.png"))
        page.get_by_test_id("sources-search").fill(expected["agency"])
        with page.expect_navigation(wait_until="load"):
            page.get_by_test_id("sources-search").press("Enter")
        assert page.get_by_test_id("sources-matching").get_attribute("data-value") == str(
            expected["agency_datasets"])
        page.goto(base + "/ndc/?page=2", wait_until="load")
        assert page.get_by_test_id("sources-page").inner_text().startswith("page 2 of")
        with page.expect_navigation(wait_until="load"):
            page.get_by_test_id("sources-next").click()
        assert page.get_by_test_id("sources-page").inner_text().startswith("page 3 of")
    figure = {"sources": expected["sources"], "datasets": total, "load_seconds": [round(s, 3) for s in seconds],
              "median_load_seconds": round(statistics.median(seconds), 3), "target_seconds": 2.0}
    (ARTIFACTS / "operator-page-3000-sources.json").write_text(json.dumps(figure, indent=2) + "\n")
    print(f"operator page with {expected['sources']} sources ({total} landing datasets): {figure}")
    assert (ARTIFACTS / "operator-page-3000-sources.png").stat().st_size > 10_000
    assert figure["median_load_seconds"] < 10, "a gross regression (the target, 2 s, is reported, not asserted)"
