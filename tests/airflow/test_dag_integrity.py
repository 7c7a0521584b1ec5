"""DAG integrity (one test per DAG file), the factory's output, and parse cost with no database reachable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from ndc.config.sources import load_sources
from ndc.errors import ConfigError
from tests.config.test_sources import GOOD, write
from tests.helpers import REPO

DAG_FILES = sorted(p.relative_to(REPO / "dags") for p in (REPO / "dags").rglob("*.py") if "__pycache__" not in p.parts)
CLOSED = "postgresql://nobody@127.0.0.1:9/nowhere"  # port 9 (discard): nothing listens

PARSE = """
import json, os, sys
from airflow.dag_processing.dagbag import DagBag
before = dict(os.environ)
bag = DagBag(dag_folder=sys.argv[1])
after = dict(os.environ)
heavy = sorted(m for m in ("polars", "pandera", "faker", "numpy") if m in sys.modules)
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "dags": sorted(bag.dag_ids), "seconds": sum(s.duration.total_seconds() for s in bag.dagbag_stats),
                  "heavy": heavy,
                  "environ_changed": sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))}))
"""


def parse(folder: Path, tmp_path: Path) -> dict:
    env = {**os.environ, "NDC_WAREHOUSE_URL": CLOSED, "AIRFLOW_HOME": str(tmp_path),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "True"}
    out = subprocess.run([sys.executable, "-c", PARSE, str(folder)], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.as_posix())
def test_dag_file_imports_without_a_database(dag_file, tmp_path):
    folder = tmp_path / "dags"
    (folder / dag_file).parent.mkdir(parents=True)
    (folder / dag_file).write_text((REPO / "dags" / dag_file).read_text())
    for config in ("sources", "exchanges"):  # the YAML folders the factories read
        if (REPO / "dags" / config).exists():
            (folder / config).symlink_to(REPO / "dags" / config)
    result = parse(folder, tmp_path)
    assert result["errors"] == {}
    assert result["dags"], f"{dag_file.name} defines no DAG"
    assert result["heavy"] == [], "DAG parsing must not import pandera/polars/Faker/numpy"


def test_parse_time_of_all_dag_files_stays_small(tmp_path):
    """A guard against gross regressions (a database call or `dbt ls` at parse time costs seconds), not a
    benchmark: the figure is printed; the bound is loose because the machine is shared and noisy."""
    result = parse(REPO / "dags", tmp_path)
    assert result["errors"] == {}
    print(f"sum of per-file DAG parse times: {result['seconds']:.3f} s")
    assert result["seconds"] < 3.0


def test_parsing_the_dag_files_changes_no_environment_variable(tmp_path):
    """The dag-processor imports every DAG file over and over, in a process other files share: a DAG file that set
    a variable would change the settings of everything parsed after it (values are passed explicitly instead)."""
    result = parse(REPO / "dags", tmp_path)
    assert result["errors"] == {}
    assert len(result["dags"]) >= len(DAG_FILES)
    assert result["environ_changed"] == []


def test_factory_builds_one_task_per_table_with_assets():
    from ndc.airflow.factory import build_extract_dag

    source = next(s for s in load_sources(REPO / "dags" / "sources") if s.name == "population")
    dag = build_extract_dag(source)
    assert dag.dag_id == "extract_population"
    assert dag.catchup is True and dag.max_active_runs == 1
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert sorted(t.task_id for t in dag.tasks) == [f"extract_{t.name}" for t in source.tables]
    outlets = {t.task_id: [a.name for a in t.outlets] for t in dag.tasks}
    assert outlets["extract_citizens"] == ["landing_population.citizens"]
    assert all(t.retries == 2 and t.retry_exponential_backoff for t in dag.tasks)
    assert "ndc extract population" in dag.doc_md
    assert dag.default_args["retry_delay"] == timedelta(minutes=1)


def test_every_task_runs_in_its_sources_pool_and_sql_sources_get_a_compare_dag():
    from ndc.airflow.factory import extract_dags
    from ndc.config.sources import pools

    sources = load_sources(REPO / "dags" / "sources")
    dags = extract_dags(REPO / "dags" / "sources")
    for source in sources:
        extract = dags[f"extract_{source.name}"]
        assert {t.pool for t in extract.tasks} == {f"ndc_source_{source.name}"}
    assert sorted(d for d in dags if d.startswith("compare_")) == [
        "compare_enterprise", "compare_population", "compare_taxation"]  # the API and the drops list no keys
    compare = dags["compare_taxation"]
    assert compare.catchup is False and {t.pool for t in compare.tasks} == {"ndc_source_taxation"}
    assert sorted(t.task_id for t in compare.tasks) == ["compare_filings", "compare_payments", "compare_taxpayers"]
    slots = {name: pool["slots"] for name, pool in pools(sources).items()}
    assert slots == {f"ndc_source_{s.name}": s.max_connections for s in sources}


def test_factory_refuses_an_invalid_source_file_by_name(tmp_path):
    from ndc.airflow.factory import extract_dags

    write(tmp_path, "broken", GOOD.format(name="broken").replace("incremental_column: updated_at",
                                                                  "incremental_column: Updated At"))
    with pytest.raises(ConfigError, match=r"(?s)broken\.yml.*field 'tables\.0\.incremental_column'"):
        extract_dags(tmp_path)
