"""Acceptance of the extract-and-load core on 100,000 simulated citizens with every defect kind injected.

Outcomes are compared with the simulator's manifest (ground truth), never with the pipeline's own counts.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import psycopg
import pytest
from ndc_lab.faults.groundtruth import (
    KEYS,
    copy_source,
    expected_latest,
    expected_minus_landing,
    expected_rows,
    fingerprint,
    manifest_by_check,
    manifest_count,
    manifest_keys,
    quarantined_by_check,
)
from ndc_lab.simulate import population

from ndc.audit import ledger
from ndc.config.sources import find_source
from ndc.contracts import get_contract
from ndc.settings import get_settings
from ndc.tasks import extract_table
from tests.helpers.database import query, scalar

EVERYTHING = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
CITIZENS = 100_000


@pytest.fixture(scope="module")
def loaded(dbs):
    spec = population.PopulationSpec(citizens=CITIZENS, seed=20251, defect_rate=0.001)
    population.write(dbs.source, population.simulate(spec), spec)
    os.environ["NDC_BATCH_BYTES"] = str(1024 * 1024)  # several batches, so cross-batch logic runs
    try:
        results = {t: extract_table("population", t, *EVERYTHING, run_id="acceptance") for t in KEYS}
    finally:
        os.environ.pop("NDC_BATCH_BYTES")
    copy_source(dbs.source, dbs.warehouse)
    return results


@pytest.mark.parametrize("table", list(KEYS))
def test_quarantined_keys_per_check_equal_the_manifest(dbs, loaded, table):
    expected = manifest_by_check(dbs.warehouse, table)
    assert expected, "the simulator injected no defects"
    assert quarantined_by_check(dbs.warehouse, table) == expected


@pytest.mark.parametrize("table", list(KEYS))
def test_landing_equals_source_minus_quarantine(dbs, loaded, table):
    assert expected_minus_landing(dbs.warehouse, table) == (0, 0)
    # a first load: one version in the history per row that landed
    assert scalar(dbs.warehouse, f"select count(*) from landing_population.{table}_history") == expected_rows(
        dbs.warehouse, table)


def test_nfd_text_is_repaired_and_counted(dbs, loaded):
    repaired = manifest_keys(dbs.warehouse, "citizens", "repaired")
    assert len(repaired) == CITIZENS // 1000
    rows = query(dbs.warehouse, "select full_name is nfc normalized and address is nfc normalized"
                 " from landing_population.citizens where pin = any(%s)", (list(repaired),))
    assert len(rows) == len(repaired) and all(r[0] for r in rows)
    source_nfd = scalar(dbs.source, "select count(*) from citizens where full_name is not nfc normalized")
    assert source_nfd == len(repaired)
    assert loaded["citizens"].rows_repaired == len(repaired)


def test_exceptions_are_loaded_for_dbt(dbs, loaded):
    """Orphan references are not a row-level defect: they land, for a dbt exceptions model to list."""
    for table in KEYS:
        orphans = manifest_keys(dbs.warehouse, table, "exception")
        assert orphans
        found = scalar(dbs.warehouse, f"select count(*) from landing_population.{table}"
                       f" where {KEYS[table]}::text = any(%s)", (list(orphans),))
        assert found == len(orphans)


def _owed(dbs, table: str) -> tuple[int, int, int]:
    """(rows in, loaded, quarantined) as the source and its manifest say: every source row is read; the rows the
    manifest quarantines or supersedes go to quarantine; the rest land."""
    return (scalar(dbs.source, f"select count(*) from {table}"), expected_rows(dbs.warehouse, table),
            manifest_count(dbs.warehouse, table, ("quarantined", "superseded")))


def test_accounting_and_ledger(dbs, loaded):
    for table, result in loaded.items():
        assert (result.rows_in, result.rows_loaded, result.rows_quarantined) == _owed(dbs, table), table
    assert loaded["citizens"].batches > 1
    rows = query(dbs.warehouse, "select target, rows_in, rows_loaded, rows_quarantined, contract_name,"
                 " contract_version, outcome from ndc_meta.ledger where run_id = 'acceptance' order by ledger_id")
    assert [(r[0], r[6]) for r in rows] == [(f"landing_population.{t}", "success") for t in KEYS]
    for table, row in zip(KEYS, rows, strict=True):
        assert row[1:4] == _owed(dbs, table), table
        assert (row[4], row[5]) == (f"population.{table}", get_contract(f"population.{table}").version)
    with psycopg.connect(dbs.warehouse) as conn:
        assert ledger.verify(conn).ok


@pytest.mark.parametrize("table", list(KEYS))
def test_batches_record_progress(dbs, loaded, table):
    """Summed over the run's batches: every source row in, the gate's rejects as the manifest's quarantined rows,
    the rest staged (the losing versions of duplicate keys leave at the merge), the manifest's repairs; all
    merged, the stage left empty."""
    per_batch = query(dbs.warehouse, "select sum(rows_in), sum(rows_staged), sum(rows_quarantined),"
                      " sum(rows_repaired), count(*), count(merged_at) from ndc_meta.batches where dataset = %s"
                      " and run_id = 'acceptance'", (f"population.{table}",))[0]
    rows_in = scalar(dbs.source, f"select count(*) from {table}")
    rejected = manifest_count(dbs.warehouse, table, ("quarantined",))
    assert per_batch[:4] == (rows_in, rows_in - rejected, rejected, manifest_count(dbs.warehouse, table,
                                                                                   ("repaired",)))
    assert per_batch[4] == per_batch[5] >= (2 if table == "citizens" else 1)
    assert scalar(dbs.warehouse, f"select count(*) from landing_population._{table}_stage") == 0


def test_watermark_is_the_latest_loaded_version(dbs, loaded):
    for table in KEYS:
        assert scalar(dbs.warehouse, "select loaded_through from ndc_meta.watermarks where dataset = %s",
                      (f"population.{table}",)) == expected_latest(dbs.warehouse, table), table


def test_an_interval_reads_the_source_rows_of_its_window(dbs, loaded):
    """A later run over one month reads exactly the source rows updated in [start - lookback, end) and, all of them
    loaded already, adds no version."""
    start, end = datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)
    window_start = start - find_source(get_settings().sources_dir, "population").lookback
    in_window = scalar(dbs.source, "select count(*) from citizens where updated_at >= %s and updated_at < %s",
                       (window_start, end))
    before = fingerprint(dbs.warehouse)
    result = extract_table("population", "citizens", start, end, run_id="acceptance-march")
    assert in_window > 0 and result.rows_in == in_window
    assert scalar(dbs.warehouse, "select sum(rows_in) from ndc_meta.batches where run_id = 'acceptance-march'"
                  ) == in_window
    assert result.rows_new_versions == 0 and fingerprint(dbs.warehouse) == before


def test_rerun_of_the_same_interval_changes_nothing(dbs, loaded):
    before = fingerprint(dbs.warehouse)
    for table in KEYS:
        again = extract_table("population", table, *EVERYTHING, run_id="acceptance-rerun")
        assert again.rows_new_versions == 0
    assert fingerprint(dbs.warehouse) == before
    assert scalar(dbs.warehouse, "select count(*) from ndc_meta.ledger where run_id = 'acceptance-rerun'") == len(KEYS)
