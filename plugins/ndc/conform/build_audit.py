"""Gate 2: a built shared model is validated against its contract before ``shared.<model>`` switches to it.

Two kinds of check, for every shared relation of the build (``citizens``, ``citizens_v2``, …):

* **rows** — the rows this build changed (new keys or rows that differ from the published relation; every row on a
  first publish or a new relation) are streamed from PostgreSQL in batches of ``NDC_GATE2_BATCH_ROWS`` and validated
  with the relation's pandera contract (polars backend): ``shared.<model>`` at the relation's major version;
* **whole table**, in SQL: the key is unique; the row count did not change by more than
  ``NDC_PUBLISH_MAX_ROW_CHANGE`` (a share) against the published version; the keys reconcile with landing (every
  key present before the build started, none that landing does not hold) or totals with another model of the
  same build.

Every check of every relation runs, and each relation's result is stored (``ndc.audit.contract_results``, gate
``publish``).
Any failure raises :class:`PublishBlockedError` naming relation, check and sample rows (key and failing value):
nothing is published, consumers stay on the last good version.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime

import pandera.errors
import polars as pl
import psycopg
from psycopg import sql

from ndc.audit import contract_results
from ndc.contracts import Contract, get_contract
from ndc.errors import PublishBlockedError
from ndc.identifiers import column_list, ident
from ndc.settings import get_settings

log = logging.getLogger(__name__)

MIN_ROWS_FOR_CHANGE_RULE = 1_000  # a published relation smaller than this may grow or shrink freely
SAMPLE_ROWS = 5
WORK_MEM = "256MB"  # the joins and aggregates of the whole-table rules stay in memory
_VERSIONED = re.compile(r"^(?P<model>[a-z_][a-z0-9_]*?)_v(?P<major>\d+)$")


@dataclass(frozen=True)
class TableRule:
    """A whole-table rule: ``query`` returns one row ``(ok boolean, detail text)``; ``{build}`` is the built
    relation, ``{schema}`` the build schema."""

    name: str
    query: str


@dataclass(frozen=True)
class LandingReconcile:
    """The built relation holds exactly the current landing keys, allowing for extracts that ran during the build:
    every key present before the build started (a version loaded before ``as_of``) and not deleted since must be
    built, and every built key must be in landing, not deleted before the build. With no concurrent extract the
    two bounds meet: the sets are equal."""

    name: str
    build_key: str
    landing_schema: str
    landing_table: str
    landing_key: str

    def queries(self, built: sql.Composable, keys: sql.Composable | None = None) -> tuple[sql.Composed, sql.Composed]:
        """``keys``: a relation of the keys a delta changed (column ``build_key``); the other keys were reconciled
        when the version they come from was published, and nothing in landing changed for them since."""
        names = {"built": built, "bkey": ident(self.build_key), "lkey": ident(self.landing_key),
                 "landing": ident(self.landing_schema, self.landing_table),
                 "history": ident(self.landing_schema, f"{self.landing_table}_history")}
        only_l = only_b = sql.SQL("")
        if keys is not None:
            only_l = sql.SQL(" and l.{lkey} in (select k.{bkey} from {keys} k)").format(keys=keys, **names)
            only_b = sql.SQL(" and b.{bkey} in (select k.{bkey} from {keys} k)").format(keys=keys, **names)
        missing = sql.SQL(
            "select l.{lkey}::text from {landing} l where l._ndc_deleted_at is null{only_l}"
            " and exists (select from {history} h where h.{lkey} = l.{lkey} and h._ndc_loaded_at < %(as_of)s)"
            " and not exists (select from {built} b where b.{bkey} = l.{lkey})").format(only_l=only_l, **names)
        extra = sql.SQL(
            "select b.{bkey}::text from {built} b where not exists (select from {landing} l"
            " where l.{lkey} = b.{bkey} and (l._ndc_deleted_at is null or l._ndc_deleted_at >= %(as_of)s)){only_b}"
        ).format(only_b=only_b, **names)
        return missing, extra


# Reconciliations, per shared contract name: SQL written here (not configuration), names quoted when composed.
TABLE_RULES: dict[str, tuple[TableRule | LandingReconcile, ...]] = {
    "shared.citizens": (
        LandingReconcile("citizens_reconcile_with_landing", "citizen_id", "landing_population", "citizens", "pin"),
    ),
    "shared.enterprises": (
        LandingReconcile("enterprises_reconcile_with_landing", "enterprise_code", "landing_enterprise",
                         "enterprises", "enterprise_code"),
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
                  columns: list[str], key: list[str]) -> sql.Composed:
    """The build's rows that are new or differ from the published relation. With a key: a join on it (at 1M
    citizens ~1 s, where ``EXCEPT`` over all columns took 10 s); without one: ``EXCEPT``."""
    built = sql.SQL("select {} from {}").format(column_list(columns), ident(build_schema, relation))
    if not (published and _exists(conn, published, relation)):
        return built
    found = {r[0] for r in conn.execute(
        "select column_name from information_schema.columns where table_schema = %s and table_name = %s",
        (published, relation))}
    if not set(columns) <= found:  # the contract gained a column since: every row counts as changed
        return built
    if not key:
        return built + sql.SQL(" except select {} from {}").format(column_list(columns), ident(published, relation))
    side = {alias: sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(alias), ident(c)) for c in columns)
            for alias in ("b", "p")}
    return sql.SQL(
        "select {b_cols} from {built} b left join {published} p on {match}"
        " where p.{first} is null or row({p_cols}) is distinct from row({b_cols})").format(
        b_cols=side["b"], p_cols=side["p"], built=ident(build_schema, relation), published=ident(published, relation),
        match=sql.SQL(" and ").join(sql.SQL("p.{c} = b.{c}").format(c=ident(c)) for c in key), first=ident(key[0]))


def _frame(rows: list[tuple], contract: Contract) -> tuple[pl.DataFrame | None, list[str]]:
    """The batch with the contract's types; where a column's values do not fit its type exactly (e.g. 12.5 in a
    whole-dong ``numeric(18,0)`` column), no frame and the columns that do not fit."""
    # polars rounds a decimal into a smaller scale even when strict: check the scale first
    scaled = [(i, name, dtype.scale) for i, (name, dtype) in enumerate(contract.columns.items())
              if isinstance(dtype, pl.Decimal)]
    misfits = [name for i, name, scale in scaled
               if any(row[i] is not None and row[i] != round(row[i], scale or 0) for row in rows)]
    if misfits:
        return None, misfits
    try:
        return pl.DataFrame(rows, schema=contract.columns, orient="row", strict=True), []
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
        misfits = []
        for position, (name, dtype) in enumerate(contract.columns.items()):
            try:
                pl.Series(name, [row[position] for row in rows], dtype=dtype, strict=True)
            except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
                misfits.append(name)
        return None, misfits or list(contract.columns)


def _primary_key(contract: Contract) -> list[str]:
    return list(contract.model.__config__.metadata.get("primary_key") or [])


def validate_rows(conn: psycopg.Connection, build_schema: str, published: str | None, relation: str,
                  contract: Contract, result: contract_results.ContractResult) -> list[Failure]:
    """Stream the build's changed rows through the contract; count failures per check, keep a few samples."""
    columns = list(contract.columns)
    key = _primary_key(contract)
    failures: dict[str, Failure] = {}
    size = get_settings().gate2_batch_rows
    with conn.transaction(), conn.cursor(name=f"ndc_gate2_{relation}") as cursor:
        conn.execute("select set_config('work_mem', %s, true)", (WORK_MEM,))
        # every row is read: plan for all of them, not for a fast first row (a named cursor's default, which chose
        # a nested loop over the key index: 7.6 s instead of 2.2 s at 1M citizens)
        conn.execute("select set_config('cursor_tuple_fraction', '1', true)")
        cursor.itersize = size
        cursor.execute(_changed_rows(conn, build_schema, published, relation, columns, key))
        while rows := cursor.fetchmany(size):
            frame, misfits = _frame(rows, contract)
            if frame is None:
                for column in misfits:
                    label = f"value_type({column})"
                    failure = failures.setdefault(label, Failure(relation, label, 0, "values that do not fit the "
                                                                 f"contract type {contract.columns[column]}"))
                    failure.rows += len(rows)
                result.count(len(rows), [[f"value_type({c})" for c in misfits]] * len(rows))
                continue
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
        label = f"{check}({case['column']})" if case["column"] and "(" not in check else (
            f"{check} on {case['column']}" if case["column"] and case["column"] not in check else check)
        failure = failures.setdefault(label, Failure(relation, label, 0, "row check"))
        index = case["index"]
        if index is None:  # a whole-frame failure (a column of the wrong type): not pinned on rows
            failure.rows = max(failure.rows, frame.height)
            failure.detail = "whole batch"  # stored with the contract result: its failure case is in the sample
            if len(failure.sample) < SAMPLE_ROWS:
                failure.sample.append({"failure_case": _plain(case["failure_case"])})
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


def _key_enforced(conn: psycopg.Connection, schema: str, relation: str, key: list[str]) -> bool:
    """True where the built table has a primary key constraint on exactly ``key`` (dbt's enforced contract
    creates it): PostgreSQL has then already refused duplicates, and the uniqueness query is skipped."""
    row = conn.execute(
        "select array_agg(a.attname::text order by a.attname) from pg_constraint c"
        " cross join unnest(c.conkey) k(attnum) join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum"
        " where c.conrelid = to_regclass(%s) and c.contype = 'p' group by c.oid",
        (ident(schema, relation).as_string(conn),)).fetchone()
    return bool(row) and sorted(row[0]) == sorted(key)


def table_rules(conn: psycopg.Connection, build_schema: str, published: str | None, relation: str,
                contract: Contract, as_of: datetime, accept_row_change: bool, *, before: int | None = None,
                changed_keys: sql.Composable | None = None, waived: list[str] | None = None) -> list[Failure]:
    """The whole-table rules on ``build_schema.relation``. A delta is audited on the published table with the
    delta applied, inside the applying transaction: ``before`` is then the row count before it was applied, and
    ``changed_keys`` the keys it replaced (a landing reconciliation looks at those only). With
    ``accept_row_change`` a row-count change the rule would block is let through, and ``relation`` is added to
    ``waived`` (the publish's ledger row records the override)."""
    failures = []
    built = ident(build_schema, relation)
    key = _primary_key(contract)
    with conn.transaction():
        conn.execute("select set_config('work_mem', %s, true)", (WORK_MEM,))
        if key and not _key_enforced(conn, build_schema, relation, key):
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
        if before is None and published and _exists(conn, published, relation):
            before = conn.execute(sql.SQL("select count(*) from {}").format(ident(published, relation))).fetchone()[0]
        if before is not None:
            failures += _row_count_change(relation, rows, before, accept_row_change, waived)
        for rule in TABLE_RULES.get(contract.name, ()):
            if isinstance(rule, LandingReconcile):
                failures += _reconcile(conn, rule, built, relation, as_of, changed_keys)
                continue
            ok, detail = conn.execute(sql.SQL(rule.query).format(build=built, schema=ident(build_schema)),
                                      {"as_of": as_of}).fetchone()
            if not ok:
                failures.append(Failure(relation, rule.name, rows, detail))
    return failures


def _row_count_change(relation: str, rows: int, before: int, accept_row_change: bool,
                      waived: list[str] | None) -> list[Failure]:
    """The row-count rule; a change it would block is let through with ``accept_row_change`` (and noted in
    ``waived``)."""
    share = get_settings().publish_max_row_change
    if before < MIN_ROWS_FOR_CHANGE_RULE or abs(rows - before) / before <= share:
        return []
    if accept_row_change:
        log.warning("gate 2: %s changed from %d to %d rows: let through by accept_row_change", relation, before, rows)
        if waived is not None:
            waived.append(relation)
        return []
    return [Failure(relation, "row_count_change", abs(rows - before),
                    f"{rows:,} rows built against {before:,} published, a change of {abs(rows - before) / before:.1%}"
                    f" (NDC_PUBLISH_MAX_ROW_CHANGE {share:.0%}; trigger with accept_row_change if it is real)")]


def _reconcile(conn: psycopg.Connection, rule: LandingReconcile, built: sql.Composable, relation: str,
               as_of: datetime, changed_keys: sql.Composable | None = None) -> list[Failure]:
    missing_sql, extra_sql = rule.queries(built, changed_keys)
    counted = sql.SQL("select count(*) from ({}) k")
    missing = conn.execute(counted.format(missing_sql), {"as_of": as_of}).fetchone()[0]
    extra = conn.execute(counted.format(extra_sql), {"as_of": as_of}).fetchone()[0]
    if not missing and not extra:
        return []
    sample = [{"missing_from_build": r[0]} for r in conn.execute(
        missing_sql + sql.SQL(" limit %(n)s"), {"as_of": as_of, "n": SAMPLE_ROWS})]
    sample += [{"not_in_landing": r[0]} for r in conn.execute(
        extra_sql + sql.SQL(" limit %(n)s"), {"as_of": as_of, "n": SAMPLE_ROWS})]
    return [Failure(relation, rule.name, missing + extra,
                    f"{missing:,} landing keys present before the build are not in it, {extra:,} built keys are not "
                    f"in {rule.landing_schema}.{rule.landing_table}", sample)]


def _new_result(relation: str, run_id: str | None) -> tuple[Contract, contract_results.ContractResult]:
    contract = contract_for(relation)
    return contract, contract_results.ContractResult(gate="publish", dataset=f"shared.{relation}",
                                                     contract_name=contract.name, contract_version=contract.version,
                                                     run_id=run_id)


def _conclude(conn: psycopg.Connection, what: str, found: dict[str, tuple[contract_results.ContractResult,
                                                                            list[Failure]]]) -> dict[str, int]:
    """Record one contract result per relation; raise PublishBlockedError listing every failed check if any."""
    failures: list[Failure] = []
    checked: dict[str, int] = {}
    for relation, (result, failed) in sorted(found.items()):
        for failure in failed:
            if failure.check not in result.failed_by_check:
                result.failed_by_check[failure.check] = failure.rows
        if failed:
            result.blocked = "; ".join(f"{f.check}: {f.rows} rows ({f.detail})" for f in failed)
        contract_results.record(conn, result)
        checked[relation] = result.rows_checked
        failures += failed
        log.info("gate 2: %s %s (%d changed rows checked%s)", relation, "failed" if failed else "passed",
                 result.rows_checked, "; " + ", ".join(f.check for f in failed) if failed else "")
    if failures:
        first = failures[0]
        summary = "; ".join(f"{f.relation}: {f.check} ({f.rows:,} rows)" for f in failures)
        raise PublishBlockedError(
            f"gate 2 blocked the publish of {what}: {len(failures)} check(s) failed; nothing was published "
            "and consumers still read the last good version (runbook: README.md#runbook-contract-failures)\n"
            + "\n".join(f.describe() for f in failures),
            dataset=f"shared.{first.relation}", check=first.check, summary=summary,
            failures=[{"relation": f.relation, "check": f.check, "rows": f.rows} for f in failures])
    return checked


def audit(conn: psycopg.Connection, build_schema: str, published: str | None, relations: dict[str, list[str]],
          *, run_id: str | None, as_of: datetime, accept_row_change: bool = False,
          waived: list[str] | None = None) -> dict[str, int]:
    """Validate every built shared relation; record one contract result each; raise PublishBlockedError listing
    every failed check if any failed. Returns the rows checked per relation."""
    found = {}
    for relation in sorted(relations):
        contract, result = _new_result(relation, run_id)
        failed = validate_rows(conn, build_schema, published, relation, contract, result)
        failed += table_rules(conn, build_schema, published, relation, contract, as_of, accept_row_change,
                              waived=waived)
        found[relation] = (result, failed)
    return _conclude(conn, build_schema, found)


@dataclass
class Applied:
    """What applying a delta did to one published relation, for its whole-table rules."""

    rows_before: int
    rows_deleted: int
    rows_inserted: int
    changed_keys: sql.Composable | None = None  # a relation of the keys replaced (None: compared row by row)


class _Blocked(Exception):
    """Leaves the applying transaction (rolled back) when a whole-table rule failed."""


def audit_delta(conn: psycopg.Connection, delta_schema: str, published: str, relations: dict[str, list[str]],
                apply, commit, *, run_id: str | None, as_of: datetime,
                accept_row_change: bool = False, waived: list[str] | None = None) -> dict[str, int]:
    """Gate 2 on a delta: the delta's rows that differ from the published ones through each contract; then, in one
    transaction, ``apply(conn) -> {relation: Applied}`` writes the delta into the published tables, the
    whole-table rules run on the result (what consumers would read) and ``commit(conn, applied)`` records the
    publication, or everything is rolled back and consumers never saw any of it. One contract result per
    relation either way; PublishBlockedError if any check failed."""
    found: dict[str, tuple[contract_results.ContractResult, list[Failure]]] = {}
    contracts = {}
    for relation in sorted(relations):
        contract, result = _new_result(relation, run_id)
        contracts[relation] = contract
        found[relation] = (result, validate_rows(conn, delta_schema, published, relation, contract, result))
    if not any(failed for _, failed in found.values()):
        try:
            with conn.transaction():
                applied = apply(conn)
                for relation in sorted(relations):
                    done = applied[relation]
                    found[relation][1].extend(table_rules(
                        conn, published, None, relation, contracts[relation], as_of, accept_row_change,
                        before=done.rows_before, changed_keys=done.changed_keys, waived=waived))
                if any(failed for _, failed in found.values()):
                    raise _Blocked
                commit(conn, applied)
        except _Blocked:
            pass
    return _conclude(conn, f"the delta in {delta_schema}", found)
