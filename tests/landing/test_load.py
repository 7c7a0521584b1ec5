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
    expected_minus_landing,
    fingerprint,
    manifest_by_check,
    manifest_keys,
    quarantined_by_check,
)
from ndc_lab.simulate import population

from ndc.audit import ledger
from ndc.contracts import get_contract
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
    assert scalar(dbs.warehouse, f"select count(*) from landing_population.{table}_history") == scalar(
        dbs.warehouse, f"select count(*) from landing_population.{table}")


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


def test_accounting_and_ledger(dbs, loaded):
    for table, result in loaded.items():
        source_rows = scalar(dbs.source, f"select count(*) from {table}")
        assert result.rows_in == source_rows
        assert result.rows_in == result.rows_loaded + result.rows_quarantined
        assert result.rows_loaded == scalar(dbs.warehouse, f"select count(*) from landing_population.{table}")
    assert loaded["citizens"].batches > 1
    rows = query(dbs.warehouse, "select kind, target, rows_in, rows_loaded, rows_quarantined, contract_name,"
                 " contract_version, outcome from ndc_meta.ledger order by ledger_id")
    assert [(r[1], r[7]) for r in rows] == [(f"landing_population.{t}", "success") for t in KEYS]
    versions = {f"population.{t}": get_contract(f"population.{t}").version for t in KEYS}
    assert all(r[2] == r[3] + r[4] and r[6] == versions[r[5]] for r in rows)
    with psycopg.connect(dbs.warehouse) as conn:
        assert ledger.verify(conn).ok


def test_batches_record_progress(dbs, loaded):
    per_batch = query(dbs.warehouse, "select sum(rows_in), sum(rows_staged), count(*), count(merged_at)"
                      " from ndc_meta.batches where dataset = 'population.citizens' and run_id = 'acceptance'")[0]
    result = loaded["citizens"]
    assert per_batch[0] == result.rows_in and per_batch[2] == per_batch[3] == result.batches
    # staged rows become landed rows, less the older versions of duplicate keys
    duplicates = scalar(dbs.warehouse, "select count(*) from quarantine.rows where dataset = 'population.citizens'"
                        " and checks = array['duplicate_key']")
    assert per_batch[1] - duplicates == result.rows_loaded
    assert scalar(dbs.warehouse, "select count(*) from landing_population._citizens_stage") == 0


def test_watermark_is_the_latest_loaded_version(dbs, loaded):
    assert scalar(dbs.warehouse, "select loaded_through from ndc_meta.watermarks"
                  " where dataset = 'population.citizens'") == scalar(
        dbs.warehouse, "select max(updated_at) from landing_population.citizens")


def test_rerun_of_the_same_interval_changes_nothing(dbs, loaded):
    before = fingerprint(dbs.warehouse)
    for table in KEYS:
        again = extract_table("population", table, *EVERYTHING, run_id="acceptance-rerun")
        assert again.rows_new_versions == 0
    assert fingerprint(dbs.warehouse) == before
    assert scalar(dbs.warehouse, "select count(*) from ndc_meta.ledger") == 2 * len(KEYS)
