"""Gate 1's whole-batch rules and the contract-result history they write.

A load whose row count fell further than ``row_count_drop`` allows is blocked (nothing merged, the stage emptied,
a clear message naming the file and field); a missing required column blocks too; every run, pass, fail or
blocked, leaves one row in ``ndc_meta.contract_results`` and shows in ``ndc_meta.contract_pass_rates``.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime

import pytest
import yaml
from ndc_lab.simulate import population

from ndc.errors import BatchBlockedError, SchemaDriftError
from ndc.tasks import extract_table
from tests.helpers import REPO
from tests.helpers.database import query, scalar

EVERYTHING = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def source(dbs, tmp_path_factory):
    """The population source (2,000 citizens, defects on) and a sources folder whose citizens table has the rule."""
    folder = tmp_path_factory.mktemp("sources")
    config = yaml.safe_load((REPO / "dags/sources/public_security/population.yml").read_text())
    citizens = next(t for t in config["tables"] if t["name"] == "citizens")
    citizens["row_count_drop"] = {"max_share": 0.5, "min_previous_rows": 100}
    (folder / "population.yml").write_text(yaml.safe_dump(config, allow_unicode=True))
    spec = population.PopulationSpec(citizens=2_000, seed=61, defect_rate=0.01)
    population.write(dbs.source, population.simulate(spec), spec)
    saved = os.environ.get("NDC_SOURCES_DIR")
    os.environ["NDC_SOURCES_DIR"] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop("NDC_SOURCES_DIR")
    else:
        os.environ["NDC_SOURCES_DIR"] = saved
    shutil.rmtree(folder, ignore_errors=True)


def results(dbs, dataset: str) -> list[tuple]:
    return query(dbs.warehouse, "select run_id, outcome, rows_checked, rows_failed, failed_by_check, message"
                 " from ndc_meta.contract_results where dataset = %s order by result_id", (dataset,))


def test_a_run_records_its_contract_result(dbs, source):
    first = extract_table("population", "citizens", *EVERYTHING, run_id="r1", full_refresh=True)
    (row,) = results(dbs, "population.citizens")
    assert row[:4] == ("r1", "fail", first.rows_in, first.rows_quarantined)
    quarantined = dict(query(dbs.warehouse, "select c, count(*) from quarantine.rows, unnest(checks) c"
                             " where dataset = 'population.citizens' group by c"))
    assert row[4] == quarantined, "rows failed per check are the quarantine's, check by check"


def test_a_row_count_drop_blocks_the_load_and_loses_nothing(dbs, source):
    landed = scalar(dbs.warehouse, "select count(*) from landing_population.citizens")
    with psycopg_source(dbs) as src:
        src.execute("delete from citizens where pin not in (select pin from citizens order by pin limit 300)")
    with pytest.raises(BatchBlockedError) as blocked:
        extract_table("population", "citizens", *EVERYTHING, run_id="r2", full_refresh=True)
    message = str(blocked.value)
    assert "population.citizens" in message and "row_count_drop" in message
    assert str(source / "population.yml") in message and "accept_row_drop" in message
    assert blocked.value.check == "row_count_drop"
    assert scalar(dbs.warehouse, "select count(*) from landing_population._citizens_stage") == 0
    assert scalar(dbs.warehouse, "select count(*) from landing_population.citizens") == landed
    assert scalar(dbs.warehouse, "select count(*) from ndc_meta.batches where run_id = 'r2' and merged_at is null") == 0
    entry = query(dbs.warehouse, "select outcome, details->>'error' from ndc_meta.ledger where run_id = 'r2'")
    assert entry[0][0] == "failed" and "row_count_drop" in entry[0][1]
    assert results(dbs, "population.citizens")[-1][1] == "blocked"

    accepted = extract_table("population", "citizens", *EVERYTHING, run_id="r3", full_refresh=True,
                             accept_row_drop=True)
    assert accepted.rows_in == 300
    assert results(dbs, "population.citizens")[-1][:2] == ("r3", "pass" if not accepted.rows_quarantined else "fail")


def test_a_missing_required_column_blocks_and_is_recorded(dbs, source):
    with psycopg_source(dbs) as src:
        src.execute("alter table households rename column ward to commune")
    try:
        with pytest.raises(SchemaDriftError, match="column ward: missing"):
            extract_table("population", "households", *EVERYTHING, run_id="r4")
    finally:
        with psycopg_source(dbs) as src:
            src.execute("alter table households rename column commune to ward")
    (row,) = results(dbs, "population.households")
    assert row[1] == "blocked" and "ward" in row[5]


def test_the_pass_rate_view_shows_passes_failures_and_blocks(dbs, source):
    extract_table("population", "residence_changes", *EVERYTHING, run_id="r5")
    rates = {r[0]: r[1:] for r in query(
        dbs.warehouse, "select dataset, validations, passed, failed_rows_quarantined, blocked, row_pass_rate"
        " from ndc_meta.contract_pass_rates where gate = 'landing'")}
    citizens = rates["population.citizens"]
    assert citizens[0] == 3 and citizens[3] == 1, "three validations of citizens, one of them blocked"
    assert 0 < citizens[4] < 1
    assert rates["population.households"][3] == 1


def psycopg_source(dbs):
    import psycopg

    return psycopg.connect(dbs.source, autocommit=True)


def test_a_blocked_file_run_leaves_its_files_pending(dbs, source, tmp_path, monkeypatch):
    """A blocked run of a files source loads nothing, and the files it read are read again by the next run."""
    import polars as pl
    from ndc_lab.simulate import education
    from ndc_lab.simulate.common import SourceSpec

    config = yaml.safe_load((REPO / "dags/sources/education/education.yml").read_text())
    schools = next(t for t in config["tables"] if t["name"] == "schools")
    schools["row_count_drop"] = {"max_share": 0.5, "min_previous_rows": 10}
    (source / "education.yml").write_text(yaml.safe_dump(config, allow_unicode=True))
    monkeypatch.setenv("AIRFLOW_CONN_NDC_SRC_EDUCATION", tmp_path.as_uri())
    spec = SourceSpec(citizens=2_000, seed=5, defect_rate=0.0)
    education.write(tmp_path.as_uri(), education.simulate(spec), spec)
    window = (datetime(2024, 7, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    first = extract_table("education", "schools", *window, run_id="f1")
    assert first.rows_in >= 10

    original = next(p for p in sorted((tmp_path / "schools").rglob("*.csv")) if p.read_bytes().startswith(b"school_id"))
    two = pl.read_csv(original, infer_schema=False).head(2).with_columns(
        pl.lit("Trường Đổi Tên").alias("name"), pl.lit("2025-12-31T23:00:00Z").alias("exported_at"))
    late = original.with_name("late_" + original.name)
    two.write_csv(late)
    with pytest.raises(BatchBlockedError, match="row_count_drop"):
        extract_table("education", "schools", *window, run_id="f2")
    assert scalar(dbs.warehouse, "select count(*) from ndc_meta.files where run_id = 'f2'") == 0
    assert scalar(dbs.warehouse, "select count(*) from landing_education.schools where name = 'Trường Đổi Tên'") == 0
    quiet = extract_table("education", "schools", *window, run_id="f3", accept_row_drop=True)
    assert quiet.files == [str(late)] and quiet.rows_in == 2
    assert scalar(dbs.warehouse, "select count(*) from landing_education.schools where name = 'Trường Đổi Tên'") == 2
    assert extract_table("education", "schools", *window, run_id="f4").rows_in == 0, "no new file: not a drop"
