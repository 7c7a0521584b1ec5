"""The source side of extract-and-load: compare what the source offers with the contract before anything loads.

Missing or retyped columns block the hand-off with a message naming the source, table (or file) and column;
new columns are reported (log and ledger) and filtered out. Reading the rows is the connectors' job
(:mod:`ndc.extract.connectors`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import polars as pl

from ndc.contracts import Contract
from ndc.errors import NdcError, SchemaDriftError
from ndc.extract.connectors.base import ColumnSet

log = logging.getLogger(__name__)

_POLARS_FAMILIES = {
    pl.String: "text", pl.Date: "date", pl.Datetime: "timestamptz", pl.Int64: "integer", pl.Int32: "integer",
    pl.Int16: "integer", pl.Int8: "integer", pl.Float64: "float", pl.Float32: "float", pl.Boolean: "boolean",
    pl.Decimal: "numeric",
}
LANDING_TYPES = {"text": "text", "date": "date", "timestamptz": "timestamptz", "integer": "bigint",
                 "float": "double precision", "boolean": "boolean", "numeric": "numeric"}
# Source families a contract family accepts without loss (a whole number fits a float column).
_COMPATIBLE = {"float": {"float", "numeric", "integer"}, "numeric": {"numeric", "float", "integer"}}


def family_of(dtype: pl.DataType) -> str:
    for base, family in _POLARS_FAMILIES.items():
        if dtype == base or isinstance(dtype, base):
            return family
    raise NdcError(f"contract type {dtype} has no warehouse type")


@dataclass
class DriftReport:
    new_columns: list[str] = field(default_factory=list)


def check_drift(source_name: str, table_name: str, contract: Contract, offered: list[ColumnSet]) -> DriftReport:
    """Compare every column set the source offers with the contract, before any coercion."""
    problems, new = [], []
    for column_set in offered:
        where = f"source {source_name}, {column_set.origin}"
        found = column_set.columns
        if not found:
            problems.append(f"{where}: does not exist or has no columns")
            continue
        for column, dtype in contract.columns.items():
            expected = family_of(dtype)
            if column not in found:
                problems.append(f"{where}: column {column}: missing "
                                f"(contract {contract.name} v{contract.version} needs it)")
            elif found[column] is not None and found[column] not in _COMPATIBLE.get(expected, {expected}):
                problems.append(f"{where}: column {column}: type {found[column]} where the contract expects "
                                f"{expected}")
        new.extend(c for c in found if c not in contract.columns and c not in new)
    if problems:
        raise SchemaDriftError("schema drift blocks the load (nothing loaded):\n  - " + "\n  - ".join(problems),
                               dataset=f"{source_name}.{table_name}", check="schema_drift")
    report = DriftReport(new_columns=new)
    if new:
        log.warning("source %s, table %s: new columns not in contract %s v%s (recorded, not loaded): %s",
                    source_name, table_name, contract.name, contract.version, ", ".join(new))
    return report
