"""Independent checks of what landed against the simulator's manifest (ground truth), in plain SQL.

The source tables and the manifest are copied into the warehouse database (schema ``src_copy``) so landing can
be compared with the source by ``EXCEPT`` in both directions.
"""

from __future__ import annotations

from collections import defaultdict

import psycopg

KEYS = {"citizens": "pin", "households": "household_id", "residence_changes": "change_id"}


def copy_source(source_url: str, warehouse_url: str, tables: tuple[str, ...] = tuple(KEYS)) -> None:
    with psycopg.connect(source_url) as src, psycopg.connect(warehouse_url) as wh:
        wh.execute("drop schema if exists src_copy cascade; create schema src_copy")
        for table in [*tables, "simulator.defect_manifest"]:
            name = table.split(".")[-1]
            wh.execute(f"create table src_copy.{name} as select * from landing_population.{name} with no data"
                       if table in KEYS else
                       "create table src_copy.defect_manifest (table_name text, record_key text, kind text,"
                       " expected_outcome text, expected_check text, row_version timestamptz)")
            if table in KEYS:
                for (meta,) in wh.execute("select column_name from information_schema.columns where table_schema"
                                          " = 'src_copy' and table_name = %s and column_name like '\\_ndc\\_%%'",
                                          (name,)).fetchall():
                    wh.execute(f"alter table src_copy.{name} drop column {meta}")
            columns = [r[0] for r in wh.execute(
                "select column_name from information_schema.columns where table_schema = 'src_copy'"
                " and table_name = %s order by ordinal_position", (name,))]
            cols = ", ".join(columns)
            with src.cursor().copy(f"copy (select {cols} from {table}) to stdout") as out, \
                    wh.cursor().copy(f"copy src_copy.{name} ({cols}) from stdin") as into:
                for block in out:
                    into.write(block)


def _columns(wh: psycopg.Connection, table: str) -> list[str]:
    return [r[0] for r in wh.execute(
        "select column_name from information_schema.columns where table_schema = 'src_copy' and table_name = %s"
        " order by ordinal_position", (table,))]


def _expected(table: str, shown: str = "*") -> str:
    """The source rows that should land: less those the manifest quarantines or supersedes."""
    return (f"select {shown} from src_copy.{table} s where not exists (select 1 from src_copy.defect_manifest m"
            f" where m.table_name = '{table}' and m.record_key = s.{KEYS[table]}::text and (m.expected_outcome ="
            " 'quarantined' or (m.expected_outcome = 'superseded' and m.row_version = s.updated_at)))")


def expected_rows(warehouse_url: str, table: str) -> int:
    """Rows the source should have landed: its rows less those the manifest quarantines or supersedes."""
    with psycopg.connect(warehouse_url) as wh:
        return wh.execute(_expected(table, "count(*)")).fetchone()[0]


def expected_latest(warehouse_url: str, table: str):
    """The latest ``updated_at`` among the source rows that should land: how far landing holds the source."""
    with psycopg.connect(warehouse_url) as wh:
        return wh.execute(_expected(table, "max(s.updated_at)")).fetchone()[0]


def expected_minus_landing(warehouse_url: str, table: str) -> tuple[int, int]:
    """Rows in (source - quarantined - superseded, text NFC) but not in landing, and the reverse."""
    with psycopg.connect(warehouse_url) as wh:
        columns = _columns(wh, table)
        types = dict(wh.execute(
            "select column_name, data_type from information_schema.columns where table_schema = 'src_copy'"
            " and table_name = %s", (table,)).fetchall())
        expected = _expected(table, ", ".join(f"normalize({c}, NFC) as {c}" if types[c] == "text" else c
                                              for c in columns))
        landed = f"select {', '.join(columns)} from landing_population.{table}"
        missing = wh.execute(f"select count(*) from ({expected} except {landed}) x").fetchone()[0]
        extra = wh.execute(f"select count(*) from ({landed} except {expected}) x").fetchone()[0]
    return missing, extra


def quarantined_by_check(warehouse_url: str, table: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    with psycopg.connect(warehouse_url) as wh:
        for checks, key in wh.execute("select checks, record_key from quarantine.rows where dataset = %s",
                                      (f"population.{table}",)):
            found[",".join(checks)].add(key)
    return dict(found)


def manifest_by_check(warehouse_url: str, table: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    with psycopg.connect(warehouse_url) as wh:
        for check, key in wh.execute(
                "select expected_check, record_key from src_copy.defect_manifest where table_name = %s"
                " and expected_outcome in ('quarantined', 'superseded')", (table,)):
            found[check].add(key)
    return dict(found)


def manifest_count(warehouse_url: str, table: str, outcomes: tuple[str, ...]) -> int:
    """Rows the manifest lists for ``table`` with one of ``outcomes``."""
    with psycopg.connect(warehouse_url) as wh:
        return wh.execute("select count(*) from src_copy.defect_manifest where table_name = %s"
                          " and expected_outcome = any(%s)", (table, list(outcomes))).fetchone()[0]


def manifest_keys(warehouse_url: str, table: str, outcome: str) -> set[str]:
    with psycopg.connect(warehouse_url) as wh:
        return {r[0] for r in wh.execute(
            "select record_key from src_copy.defect_manifest where table_name = %s and expected_outcome = %s",
            (table, outcome))}


def fingerprint(warehouse_url: str) -> dict[str, tuple]:
    """Every landing, history and quarantine table: row count and a digest of all its rows, metadata included."""
    tables = [f"landing_population.{t}" for t in KEYS] + [f"landing_population.{t}_history" for t in KEYS]
    with psycopg.connect(warehouse_url) as wh:
        wh.execute("set timezone = 'UTC'")
        result = {t: wh.execute(f"select count(*), md5(string_agg(x::text, '|' order by x::text)) from {t} x")
                  .fetchone() for t in tables}
        result["quarantine.rows"] = wh.execute(
            "select count(*), md5(string_agg((dataset, row_hash, checks, payload, batch_id)::text, '|'"
            " order by row_hash)) from quarantine.rows").fetchone()
    return result
