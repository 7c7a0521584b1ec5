"""The fault scenarios (``ndc_lab.faults``; ``ndc faults`` prints the same as a summary), each on fresh databases:
the fault lands where partial state exists (asserted before recovery), an operator's rerun or Airflow's retry
recovers, and every promise holds afterwards: landing equals the source, no duplicates, every quarantined row has
its reason, the ledger verifies. Scenario 7 also needs Redis (it runs a Celery worker)."""

from __future__ import annotations

import ndc_lab.faults
import pytest

SCENARIOS = {
    "1": "extract killed (SIGKILL) mid-stream",
    "2": "source database lost mid-extract",
    "3": "warehouse restarted during a COPY (its own server)",
    "4": "dbt killed mid-build of a delta, the rerun publishes whole",
    "5": "same interval twice at once, then backfilled twice",
    "6": "flaky insurance API and a half-written education file",
    "7": "Celery worker killed while running a task",
    "8": "a delta's apply killed mid-way, the rerun loses nothing",
}


def test_every_scenario_of_the_issue_is_registered():
    assert sorted(ndc_lab.faults.scenarios()) == sorted(SCENARIOS)


@pytest.mark.slow
@pytest.mark.parametrize("number", list(SCENARIOS), ids=[f"{n}-{t}" for n, t in SCENARIOS.items()])
def test_the_scenario_survives(number, pg_server):
    outcome = ndc_lab.faults.run_one(ndc_lab.faults.scenarios()[number], pg_server)
    assert outcome.survived, outcome.line()
    assert outcome.expected_rows == outcome.found_rows > 0, outcome.line()
