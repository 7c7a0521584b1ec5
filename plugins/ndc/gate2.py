"""Gate 2: a built shared model is validated against its contract before ``shared.<model>`` switches to it.

Two kinds of check, for every shared relation of the build (``citizens``, ``citizens_v2``, …):

* **rows** — the rows this build changed (``build EXCEPT published``; every row on a first publish or a new
  relation) are streamed from PostgreSQL in batches of ``NDC_GATE2_BATCH_ROWS`` and validated with the relation's
  pandera contract (polars backend): ``shared.<model>`` at the relation's major version;
* **whole table**, in SQL: the key is unique; the row count did not change by more than
  ``NDC_PUBLISH_MAX_ROW_CHANGE`` (a share) against the published version; totals reconcile with landing (rows
  present in landing when the build started) or with another model of the same build.

Every check of every relation runs, and each relation's result is stored (``ndc.results``, gate ``publish``).
Any failure raises :class:`PublishBlockedError` naming relation, check and sample rows (key and failing value):
nothing is published, consumers stay on the last good version.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from datetime import datetime

import pandera.errors
import polars as pl
import psycopg
from psycopg import sql

from ndc import results
from ndc.contracts import Contract, get_contract
from ndc.errors import ConfigError, PublishBlockedError
from ndc.identifiers import column_list, ident

log = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 50_000
DEFAULT_MAX_ROW_CHANGE = 0.5
MIN_ROWS_FOR_CHANGE_RULE = 1_000  # a published relation smaller than this may grow or shrink freely
SAMPLE_ROWS = 5
_VERSIONED = re.compile(r"^(?P<model>[a-z_][a-z0-9_]*?)_v(?P<major>\d+)$")


@dataclass(frozen=True)
class TableRule:
    """A whole-table rule: ``query`` returns one row ``(ok boolean, detail text)``. ``{build}`` is the built
    relation, ``{schema}`` the build schema; ``%(as_of)s`` is when the build started (landing rows committed
    later were not read by it)."""

    name: str
    query: str


def _landing_keys(landing: str, history: str, key: str) -> str:
    """Current landing keys as the build saw them: a version loaded before the build, not deleted before it."""
    return (f"select count(*) from {landing} l where (l._ndc_deleted_at is null or l._ndc_deleted_at >= %(as_of)s)"
            f" and exists (select from {history} h where h.{key} = l.{key} and h._ndc_loaded_at < %(as_of)s)")


# Reconciliations, per shared contract name. SQL written here (not configuration), composed with quoted names.
TABLE_RULES: dict[str, tuple[TableRule, ...]] = {
    "shared.citizens": (
        TableRule("citizens_reconcile_with_landing",
                  "with built as (select count(*) as n from {build}), landed as ("
                  + _landing_keys("landing_population.citizens", "landing_population.citizens_history", "pin")
                  + ") select built.n = landed.count, format('%%s citizens built, %%s in landing', built.n,"
                  " landed.count) from built, (select * from landed) landed"),
    ),
    "shared.enterprises": (
        TableRule("enterprises_reconcile_with_landing",
                  "with built as (select count(*) as n from {build}), landed as ("
                  + _landing_keys("landing_enterprise.enterprises", "landing_enterprise.enterprises_history",
                                  "enterprise_code")
                  + ") select built.n = landed.count, format('%%s enterprises built, %%s in landing', built.n,"
                  " landed.count) from built, (select * from landed) landed"),
    ),
    "shared.province_statistics": (
        TableRule("population_reconciles_with_citizens",
                  "with last as (select max(month) as month from {build}),"
                  " counted as (select sum(population) as n from {build} s, last where s.month = last.month),"
                  " living as (select count(*) as n from {schema}.citizens c, last"
                  " where date_trunc('month', c.birth_date) <= last.month"
                  " and (c.death_date is null or date_trunc('month', c.death_date) > last.month))"
                  " select counted.n is not distinct from living.n or (counted.n is null and living.n = 0),"
                  " format('population %%s in the last month, %%s living citizens', counted.n, living.n)"
                  " from counted, living"),
        TableRule("one_row_per_province_and_month",
                  "select count(*) = 34 * count(distinct month), format('%%s rows for %%s months',"
                  " count(*), count(distinct month)) from {build}"),
    ),
}


@dataclass
class Failure:
    relation: str
    check: str
    rows: int
    detail: str
    sample: list[dict] = field(default_factory=list)

    def describe(self) -> str:
        shown = "".join(f"\n      {row}" for row in self.sample)
        return f"  - {self.relation}: check {self.check} failed ({self.rows:,} rows; {self.detail}){shown}"


def settings_share() -> float:
    raw = os.environ.get("NDC_PUBLISH_MAX_ROW_CHANGE", "")
    try:
        value = float(raw) if raw else DEFAULT_MAX_ROW_CHANGE
    except ValueError:
        raise ConfigError(f"environment variable NDC_PUBLISH_MAX_ROW_CHANGE={raw!r}: expected a share, e.g. 0.5"
                          ) from None
    if value <= 0:
        raise ConfigError(f"environment variable NDC_PUBLISH_MAX_ROW_CHANGE={raw!r}: expected a share above 0")
    return value


def batch_rows() -> int:
    raw = os.environ.get("NDC_GATE2_BATCH_ROWS", "")
    if not raw:
        return DEFAULT_BATCH_ROWS
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"environment variable NDC_GATE2_BATCH_ROWS={raw!r}: expected a whole number ≥ 1")
    return int(raw)


def contract_for(relation: str) -> Contract:
    """The contract of a shared relation: ``citizens`` → shared.citizens v1, ``citizens_v2`` → v2."""
    versioned = _VERSIONED.match(relation)
    if versioned:
        return get_contract(f"shared.{versioned['model']}", int(versioned["major"]))
    return get_contract(f"shared.{relation}", 1)


def _exists(conn: psycopg.Connection, schema: str, relation: str) -> bool:
    return conn.execute("select to_regclass(%s) is not null",
                        (ident(schema, relation).as_string(conn),)).fetchone()[0]


def _changed_rows(conn: psycopg.Connection, build_schema: str, published: str | None, relation: str,
                  columns: list[str]) -> sql.Composed:
    built = sql.SQL("select {} from {}").format(column_list(columns), ident(build_schema, relation))
    if published and _exists(conn, published, relation):
        return built + sql.SQL(" except select {} from {}").format(column_list(columns), ident(published, relation))
    return built


def _frame(rows: list[tuple], contract: Contract) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=contract.columns, orient="row", strict=False)


def _primary_key(contract: Contract) -> list[str]:
    return list(contract.model.__config__.metadata.get("primary_key") or [])


def validate_rows(conn: psycopg.Connection, build_schema: str, published: str | None, relation: str,
                  contract: Contract, result: results.ContractResult) -> list[Failure]:
    """Stream the build's changed rows through the contract; count failures per check, keep a few samples."""
    columns = list(contract.columns)
    key = _primary_key(contract)
    failures: dict[str, Failure] = {}
    size = batch_rows()
    with conn.transaction(), conn.cursor(name=f"ndc_gate2_{relation}") as cursor:
        cursor.itersize = size
        cursor.execute(_changed_rows(conn, build_schema, published, relation, columns))
        while rows := cursor.fetchmany(size):
            frame = _frame(rows, contract)
            failed_checks: list[list[str]] = []
            try:
                contract.validate(frame, lazy=True)
            except pandera.errors.SchemaErrors as exc:
                failed_checks = _record(exc.failure_cases, frame, relation, key, failures)
            result.count(frame.height, failed_checks)
            log.info("gate 2: %s %d rows checked so far, %d failed", relation, result.rows_checked,
                     result.rows_failed)
    return list(failures.values())


def _record(cases: pl.DataFrame, frame: pl.DataFrame, relation: str, key: list[str],
            failures: dict[str, Failure]) -> list[list[str]]:
    """Fold pandera's failure cases into per-check failures; returns each failing row's checks."""
    per_row: dict[int, set[str]] = {}
    for case in cases.iter_rows(named=True):
        check = str(case["check"])
        label = f"{check.split('(')[0]}({case['column']})" if case["column"] and "(" not in check else check
        failure = failures.setdefault(label, Failure(relation, label, 0, "row check"))
        index = case["index"]
        if index is None:  # a whole-frame failure (a column of the wrong type): not pinned on rows
            failure.rows = max(failure.rows, frame.height)
            failure.detail = f"{case['failure_case']}"
            continue
        if label not in per_row.setdefault(int(index), set()):
            failure.rows += 1
            per_row[int(index)].add(label)
            if len(failure.sample) < SAMPLE_ROWS:
                shown = [c for c in [*key, case["column"]] if c and c in frame.columns]
                failure.sample.append({c: _plain(frame[int(index), c]) for c in dict.fromkeys(shown)})
    return [sorted(checks) for checks in per_row.values()]


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def table_rules(conn: psycopg.Connection, build_schema: str, published: str | None, relation: str,
                contract: Contract, as_of: datetime, accept_row_change: bool) -> list[Failure]:
    failures = []
    built = ident(build_schema, relation)
    key = _primary_key(contract)
    with conn.transaction():
        if key:
            duplicates = conn.execute(sql.SQL(
                "select {key}, count(*) from {built} group by {key} having count(*) > 1 order by 2 desc limit %s"
            ).format(key=column_list(key), built=built), (SAMPLE_ROWS,)).fetchall()
            if duplicates:
                total = conn.execute(sql.SQL("select count(*) from (select from {built} group by {key}"
                                             " having count(*) > 1) d").format(built=built,
                                                                                key=column_list(key))).fetchone()[0]
                failures.append(Failure(relation, "primary_key_unique", total, f"key {', '.join(key)} repeated",
                                        [dict(zip([*key, "copies"], r, strict=True)) for r in duplicates]))
        rows = conn.execute(sql.SQL("select count(*) from {}").format(built)).fetchone()[0]
        if published and _exists(conn, published, relation) and not accept_row_change:
            before = conn.execute(sql.SQL("select count(*) from {}").format(ident(published, relation))).fetchone()[0]
            share = settings_share()
            if before >= MIN_ROWS_FOR_CHANGE_RULE and abs(rows - before) / before > share:
                failures.append(Failure(
                    relation, "row_count_change", abs(rows - before),
                    f"{rows:,} rows built against {before:,} published, a change of {abs(rows - before) / before:.1%}"
                    f" (NDC_PUBLISH_MAX_ROW_CHANGE {share:.0%}; trigger with accept_row_change if it is real)"))
        for rule in TABLE_RULES.get(contract.name, ()):
            ok, detail = conn.execute(sql.SQL(rule.query).format(build=built, schema=ident(build_schema)),
                                      {"as_of": as_of}).fetchone()
            if not ok:
                failures.append(Failure(relation, rule.name, rows, detail))
    return failures


def audit(conn: psycopg.Connection, build_schema: str, published: str | None, relations: dict[str, list[str]],
          *, run_id: str | None, as_of: datetime, accept_row_change: bool = False) -> dict[str, int]:
    """Validate every built shared relation; record one contract result each; raise PublishBlockedError listing
    every failed check if any failed. Returns the rows checked per relation."""
    failures: list[Failure] = []
    checked: dict[str, int] = {}
    for relation in sorted(relations):
        contract = contract_for(relation)
        result = results.ContractResult(gate="publish", dataset=f"shared.{relation}", contract_name=contract.name,
                                        contract_version=contract.version, run_id=run_id)
        found = validate_rows(conn, build_schema, published, relation, contract, result)
        found += table_rules(conn, build_schema, published, relation, contract, as_of, accept_row_change)
        for failure in found:
            if failure.check not in result.failed_by_check:
                result.failed_by_check[failure.check] = failure.rows
        if found:
            result.blocked = "; ".join(f"{f.check}: {f.rows} rows ({f.detail})" for f in found)
        results.record(conn, result)
        checked[relation] = result.rows_checked
        failures += found
        log.info("gate 2: %s %s (%d changed rows checked%s)", relation, "failed" if found else "passed",
                 result.rows_checked, "; " + ", ".join(f.check for f in found) if found else "")
    if failures:
        first = failures[0]
        raise PublishBlockedError(
            f"gate 2 blocked the publish of {build_schema}: {len(failures)} check(s) failed; nothing was published "
            "and consumers still read the last good version (runbook: README.md#runbook-contract-failures)\n"
            + "\n".join(f.describe() for f in failures),
            dataset=f"shared.{first.relation}", check=first.check)
    return checked

