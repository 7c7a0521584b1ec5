"""Real Airflow DAG runs (``airflow dags test``): the population extract over one daily interval, then conform,
then the scheduled full compare finding rows deleted at the source."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from ndc_lab.simulate import population

from tests.helpers import REPO
from tests.helpers.database import query, scalar


@pytest.mark.airflow
@pytest.mark.slow
def test_extract_dag_run_loads_its_interval(dbs, tmp_path):
    spec = population.PopulationSpec(citizens=20_000, seed=17, defect_rate=0.002)
    population.write(dbs.source, population.simulate(spec), spec)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db"}
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    run = subprocess.run(["airflow", "dags", "test", "extract_population", "2025-07-02"], env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    start, end = datetime(2025, 7, 1, tzinfo=UTC) - timedelta(hours=2), datetime(2025, 7, 2, tzinfo=UTC)
    in_window = scalar(dbs.source, "select count(*) from citizens c where updated_at >= %s and updated_at < %s",
                       (start, end))
    rejected = scalar(dbs.source, "select count(*) from citizens c join simulator.defect_manifest m on"
                      " m.table_name = 'citizens' and m.record_key = c.pin and (m.expected_outcome = 'quarantined'"
                      " or (m.expected_outcome = 'superseded' and m.row_version = c.updated_at))"
                      " where c.updated_at >= %s and c.updated_at < %s", (start, end))
    assert in_window > 0
    assert scalar(dbs.warehouse, "select count(*) from landing_population.citizens") == in_window - rejected
    ledger = query(dbs.warehouse, "select target, outcome, interval_start, interval_end, run_id from ndc_meta.ledger")
    assert sorted(r[0] for r in ledger) == [f"landing_population.{t}" for t in
                                            ("citizens", "households", "residence_changes")]
    assert {(r[1], r[2], r[3]) for r in ledger} == {("success", start + timedelta(hours=2), end)}
    assert all(r[4].startswith("manual__") for r in ledger)

    conform = subprocess.run(["airflow", "dags", "test", "conform", "2025-07-02"], env=env, capture_output=True,
                             text=True, timeout=600, check=False)
    assert conform.returncode == 0, conform.stdout[-3000:] + conform.stderr[-3000:]
    # Succeeding only after a retry would hide a wrongly ordered test (see docs/conform-publish.md).
    assert "Task failed" not in conform.stdout + conform.stderr
    assert scalar(dbs.warehouse, "select count(*) from shared.citizens") == in_window - rejected
    assert scalar(dbs.warehouse, "select build_schema from ndc_meta.publications") == "shared_a"
    assert query(dbs.warehouse, "select kind, outcome from ndc_meta.ledger where kind = 'publish'") == [
        ("publish", "success")]

    # The full-compare DAG: two households deleted outright at the source are marked (and kept) in landing.
    gone = [r[0] for r in query(dbs.warehouse, "select household_id from landing_population.households"
                                " order by household_id limit 2")]
    with psycopg.connect(dbs.source, autocommit=True) as src:
        src.execute("delete from households where household_id = any(%s)", (gone,))
    compare = subprocess.run(["airflow", "dags", "test", "compare_population", "2025-07-02"], env=env,
                             capture_output=True, text=True, timeout=300, check=False)
    assert compare.returncode == 0, compare.stdout[-3000:] + compare.stderr[-3000:]
    assert query(dbs.warehouse, "select household_id, _ndc_deleted_by from landing_population.households"
                 " where _ndc_deleted_at is not null order by 1") == [(g, "full_compare") for g in gone]
    assert query(dbs.warehouse, "select target, rows_loaded, outcome from ndc_meta.ledger where kind = 'full_compare'"
                 " order by target") == [("landing_population.citizens", 0, "success"),
                                         ("landing_population.households", 2, "success"),
                                         ("landing_population.residence_changes", 0, "success")]

    # A contract failure: the source drops a column of one table. That task fails after its retry and alerts once
    # (first failure, not one per try); the source's other tables still load.
    with psycopg.connect(dbs.source, autocommit=True) as src:
        src.execute("alter table residence_changes rename column moved_on to moved_date")
    failing = {**env, "NDC_TASK_RETRIES": "1", "NDC_RETRY_DELAY_SECONDS": "1"}
    broken = subprocess.run(["airflow", "dags", "test", "extract_population", "2025-07-03"], env=failing,
                            capture_output=True, text=True, timeout=300, check=False)
    assert broken.returncode != 0
    tries = query(dbs.warehouse, "select outcome, message from ndc_meta.contract_results"
                  " where dataset = 'population.residence_changes' and outcome = 'blocked'")
    assert len(tries) == 2 and all("moved_on: missing" in t[1] for t in tries), "two tries, both blocked"
    alerts = query(dbs.warehouse, "select dataset, check_name, failures, owner_agency, owner_contact, dag_id, task_id"
                   " from ndc_meta.alerts")
    assert alerts == [("population.residence_changes", "schema_drift", 1, "Ministry of Public Security (Bộ Công an)",
                       alerts[0][4], "extract_population", "extract_residence_changes")]
    assert "data steward" in alerts[0][4]
    loaded = query(dbs.warehouse, "select target, outcome from ndc_meta.ledger where kind = 'extract'"
                   " and interval_end = %s", (end + timedelta(days=1),))
    assert sorted(loaded) == [("landing_population.citizens", "success"), ("landing_population.households", "success"),
                              ("landing_population.residence_changes", "failed"),
                              ("landing_population.residence_changes", "failed")]
