"""The promises every fault scenario proves after recovery, on the population source (PostgreSQL):

- landing equals the source: rows of the source less those the simulator's manifest sends to quarantine (or
  supersedes), compared by SQL ``EXCEPT`` in both directions (:mod:`ndc_lab.faults.groundtruth`); the rows expected are
  counted from the source, the rows found from landing;
- no duplicates: the key constraints of latest and history are in place (a rerun cannot have dropped them) and
  every latest row's version is in history; no staged batch is left unmerged;
- quarantine: every key the manifest sends to quarantine is there, and every quarantined row names its checks and
  reasons;
- the ledger verifies (hash chain and anchors).
"""

from __future__ import annotations

import psycopg

from ndc.audit import ledger
from ndc_lab.faults import Outcome
from ndc_lab.faults.groundtruth import KEYS, copy_source, expected_minus_landing, expected_rows, manifest_keys

# What a reader of the shared views sees, in one statement: province_statistics' population in its last month,
# the living citizens at the end of that month, and all citizens. The first two agree only if the reader never
# sees one view from one build and the other from another (tests/conform/test_build_audit.py, fault scenarios 4 and 8).
SHARED_CONSISTENT = """
with last as (select max(month) as month from shared.province_statistics)
select (select sum(population) from shared.province_statistics s, last where s.month = last.month),
       (select count(*) from shared.citizens c, last where date_trunc('month', c.birth_date) <= last.month
        and (c.death_date is null or date_trunc('month', c.death_date) > last.month)),
       (select count(*) from shared.citizens)
"""


def _table_problems(wh: psycopg.Connection, warehouse_url: str, table: str) -> list[str]:
    problems = []
    key = KEYS[table]
    missing, extra = expected_minus_landing(warehouse_url, table)
    if missing or extra:
        problems.append(f"landing_population.{table}: {missing} source rows missing, {extra} rows extra")
    for relation in (table, f"{table}_history"):
        if not wh.execute("select 1 from pg_constraint where conrelid = %s::regclass and contype = 'p'",
                          (f"landing_population.{relation}",)).fetchone():
            problems.append(f"landing_population.{relation}: its primary key is gone")
    unversioned = wh.execute(
        f"select count(*) from landing_population.{table} l where not exists (select 1 from"
        f" landing_population.{table}_history h where h.{key} = l.{key} and h._ndc_row_hash = l._ndc_row_hash)"
    ).fetchone()[0]
    if unversioned:
        problems.append(f"landing_population.{table}: {unversioned} latest rows without their version in history")
    quarantined = {r[0] for r in wh.execute("select record_key from quarantine.rows where dataset = %s",
                                            (f"population.{table}",))}
    lost = manifest_keys(warehouse_url, table, "quarantined") - quarantined
    if lost:
        problems.append(f"population.{table}: {len(lost)} rows the contract rejects are not in quarantine")
    return problems


def population_promises(number: str, title: str, warehouse_url: str, source_url: str,
                        tables: tuple[str, ...] = tuple(KEYS)) -> Outcome:
    """Check every promise for ``tables`` of the population source; the outcome lists what failed."""
    problems: list[str] = []
    copy_source(source_url, warehouse_url, tables)
    expected = found = 0
    with psycopg.connect(warehouse_url) as wh:
        for table in tables:
            problems += _table_problems(wh, warehouse_url, table)
            expected += expected_rows(warehouse_url, table)
            found += wh.execute(f"select count(*) from landing_population.{table}").fetchone()[0]
        problems += warehouse_problems(wh)
    return Outcome(number, title, not problems and expected == found, expected, found, problems=problems)


def warehouse_problems(wh: psycopg.Connection) -> list[str]:
    """The promises that hold for the whole warehouse, whatever the source: no staged batch left unmerged, every
    quarantined row names its checks and reasons, the ledger verifies."""
    problems = []
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
    return problems
