"""The defect manifest the simulators write beside the data they make."""

from __future__ import annotations

from collections.abc import Iterable
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


# Defects that several sources carry, each caught by the same contract check (or repaired the same way) wherever
# it occurs; a source's own defects are defined beside it.
PROVINCE = Defect("unknown_or_retired_province", "quarantined", "province_code_valid")
BLANK_FULL_NAME = Defect("blank_name", "quarantined", "full_name_not_blank")
BLANK_NAME = Defect("blank_name", "quarantined", "name_not_blank")
PIN_FORMAT = Defect("pin_format", "quarantined", "pin_format")
FUTURE_BIRTH = Defect("future_birth_date", "quarantined", "birth_date_range")
DUPLICATE = Defect("duplicate_key", "superseded", "duplicate_key")
NFD = Defect("nfd_text", "repaired", None)


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


def picked_manifest(table: str, frame: pl.DataFrame, key: str | pl.Expr, picks: dict[Defect, list[int]],
                    defects: Iterable[Defect] | None = None,
                    duplicate_versions: pl.Series | None = None) -> list[pl.DataFrame]:
    """Manifest rows for the rows each defect was injected into (``picks``: defect -> ``_row`` values), keyed by
    ``key`` and in row order, for ``defects`` (default: every picked one, in pick order). ``duplicate_versions``
    are the ``row_version`` of the ``DUPLICATE`` rows, in the same order."""
    found = []
    for defect in picks if defects is None else defects:
        chosen = frame.filter(pl.col("_row").is_in(picks[defect])).sort("_row")
        versions = duplicate_versions if defect == DUPLICATE else None
        found.append(manifest_rows(table, chosen.select(key).to_series(), defect, versions))
    return found


def quarantined_rows(picks: dict[Defect, list[int]]) -> list[int]:
    """The picked rows that the contracts must quarantine (they never land, so nothing else may refer to them)."""
    return [row for defect, rows in picks.items() if defect.outcome == "quarantined" for row in rows]


__all__ = ["BLANK_FULL_NAME", "BLANK_NAME", "DUPLICATE", "FUTURE_BIRTH", "MANIFEST_DDL", "NFD", "PIN_FORMAT",
           "PROVINCE", "Defect", "empty_manifest", "manifest_rows", "picked_manifest", "quarantined_rows"]
