"""A load killed (SIGKILL) in the middle of streaming leaves only whole batches, and a rerun completes it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime

import pytest
from ndc_lab.faults.groundtruth import copy_source, expected_minus_landing
from ndc_lab.simulate import population

from ndc.tasks import extract_table
from tests.helpers.database import query, scalar

EVERYTHING = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))


@pytest.mark.slow
def test_killed_load_leaves_whole_batches_and_rerun_completes(dbs):
    spec = population.PopulationSpec(citizens=60_000, seed=11, defect_rate=0.002)
    population.write(dbs.source, population.simulate(spec), spec)
    total = scalar(dbs.source, "select count(*) from citizens")
    env = {**os.environ, "NDC_BATCH_BYTES": "32768"}
    proc = subprocess.Popen(["ndc", "extract", "population", "citizens", "--start", "2000-01-01",
                             "--end", "2030-01-01", "--run-id", "to-be-killed"], env=env)
    deadline = time.monotonic() + 120
    while scalar(dbs.warehouse, "select count(*) from pg_tables where schemaname = 'ndc_meta'") < 1 or scalar(
            dbs.warehouse, "select count(*) from ndc_meta.batches where run_id = 'to-be-killed'") < 5:
        assert proc.poll() is None and time.monotonic() < deadline, "the load ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = query(dbs.warehouse, "select count(*), coalesce(sum(rows_in), 0), coalesce(sum(rows_staged), 0),"
                      " count(merged_at) from ndc_meta.batches")[0]
    assert 0 < committed[1] < total, "partial state must exist before recovery"
    # Nothing half-loaded: the stage holds exactly the rows of the committed batches, each tagged with its
    # batch; nothing was merged into landing by the killed run.
    assert scalar(dbs.warehouse, "select count(*) from landing_population._citizens_stage s where not exists"
                  " (select 1 from ndc_meta.batches b where b.batch_id = s._ndc_batch_id)") == 0
    assert scalar(dbs.warehouse, "select count(*) from landing_population._citizens_stage") == committed[2]
    assert committed[3] == 0
    assert scalar(dbs.warehouse, "select count(*) from landing_population.citizens_history") == 0
    result = extract_table("population", "citizens", *EVERYTHING, run_id="after-kill")
    assert scalar(dbs.warehouse, "select count(*) from ndc_meta.batches where merged_at is null") == 0
    assert result.rows_in == total
    copy_source(dbs.source, dbs.warehouse, ("citizens",))
    assert expected_minus_landing(dbs.warehouse, "citizens") == (0, 0)
    assert scalar(dbs.warehouse, "select count(*) from (select pin from landing_population.citizens_history"
                  " group by pin having count(*) > 1) d") == 0
