"""The defect manifest the simulators write beside the data they make."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

MANIFEST_DDL = """
create schema if not exists simulator;
drop table if exists simulator.defect_manifest;
create table simulator.defect_manifest (
    table_name text not null,
    record_key text not null,
    kind text not null,
    expected_outcome text not null check (expected_outcome in ('quarantined', 'superseded', 'repaired', 'exception')),
    expected_check text,
    row_version timestamptz
);
drop table if exists simulator.runs;
create table simulator.runs (source text, spec jsonb, created_at timestamptz default now());
"""


@dataclass(frozen=True)
class Defect:
    kind: str
    outcome: str
    check: str | None


def manifest_rows(table: str, keys: pl.Series, defect: Defect, versions: pl.Series | None = None) -> pl.DataFrame:
    n = keys.len()
    return pl.DataFrame({
        "table_name": pl.Series([table] * n, dtype=pl.String),
        "record_key": keys.cast(pl.String),
        "kind": pl.Series([defect.kind] * n, dtype=pl.String),
        "expected_outcome": pl.Series([defect.outcome] * n, dtype=pl.String),
        "expected_check": pl.Series([defect.check] * n, dtype=pl.String),
        "row_version": versions if versions is not None
        else pl.Series([None] * n, dtype=pl.Datetime("us", "UTC")),
    })


def empty_manifest() -> pl.DataFrame:
    return manifest_rows("", pl.Series([], dtype=pl.String), Defect("", "", None)).clear()


__all__ = ["MANIFEST_DDL", "Defect", "empty_manifest", "manifest_rows"]
