"""The promises every fault scenario proves after recovery, on the population source (PostgreSQL):

- landing equals the source: rows of the source less those the simulator's manifest sends to quarantine (or
  supersedes), compared by SQL ``EXCEPT`` in both directions (:mod:`ndc.faults.groundtruth`);
- no duplicate keys in landing (latest and history) nor staged batches left unmerged;
- every quarantined row names its checks and reasons;
- the ledger verifies (hash chain and anchors) and has no row of an unknown outcome.
"""

from __future__ import annotations

import psycopg

from ndc import ledger
from ndc.faults import Outcome
from ndc.faults.groundtruth import KEYS, copy_source, expected_minus_landing


def population_promises(number: str, title: str, warehouse_url: str, source_url: str,
                        tables: tuple[str, ...] = tuple(KEYS)) -> Outcome:
    """Check every promise for ``tables`` of the population source; the outcome lists what failed."""
    problems: list[str] = []
    copy_source(source_url, warehouse_url, tables)
    expected = found = 0
    with psycopg.connect(warehouse_url) as wh:
        for table in tables:
            key = KEYS[table]
            missing, extra = expected_minus_landing(warehouse_url, table)
            if missing or extra:
                problems.append(f"landing_population.{table}: {missing} source rows missing, {extra} rows extra")
            landed = wh.execute(f"select count(*) from landing_population.{table}").fetchone()[0]
            found += landed
            expected += landed - extra + missing
            dupes = wh.execute(f"select count(*) from (select {key} from landing_population.{table} group by {key}"
                               " having count(*) > 1) d").fetchone()[0]
            if dupes:
                problems.append(f"landing_population.{table}: {dupes} duplicate keys")
        unmerged = wh.execute("select count(*) from ndc_meta.batches where merged_at is null").fetchone()[0]
        if unmerged:
            problems.append(f"{unmerged} staged batches never merged")
        reasonless = wh.execute("select count(*) from quarantine.rows where cardinality(checks) = 0 or reasons"
                                " = '{}'::jsonb or reasons is null").fetchone()[0]
        if reasonless:
            problems.append(f"{reasonless} quarantined rows without a check or reason")
        verified = ledger.verify(wh)
        if not verified.ok:
            problems.append("ledger: " + "; ".join(verified.problems[:5]))
    return Outcome(number, title, not problems, expected, found, problems=problems)
