"""The source side of extract-and-load: compare the source's columns with the contract, then stream the rows
of one data window as CSV batches (bounded memory: one batch is held at a time).

PostgreSQL sources are read with ``COPY (SELECT ...) TO STDOUT (FORMAT csv)``; the stream is cut only at record
boundaries (a newline outside quotes), so values holding newlines survive intact.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl
import psycopg
from psycopg import sql

from ndc.contracts import Contract
from ndc.errors import NdcError, SchemaDriftError
from ndc.identifiers import column_list, ident
from ndc.registry import SourceConfig, TableConfig

log = logging.getLogger(__name__)

# Type families: a source column may be any member of the family its contract column belongs to.
_PG_FAMILIES = {
    "text": "text", "character varying": "text", "character": "text",
    "date": "date", "timestamp with time zone": "timestamptz",
    "smallint": "integer", "integer": "integer", "bigint": "integer",
    "numeric": "numeric", "double precision": "float", "real": "float", "boolean": "boolean",
}
_POLARS_FAMILIES = {
    pl.String: "text", pl.Date: "date", pl.Datetime: "timestamptz", pl.Int64: "integer", pl.Int32: "integer",
    pl.Float64: "float", pl.Boolean: "boolean", pl.Decimal: "numeric",
}
LANDING_TYPES = {"text": "text", "date": "date", "timestamptz": "timestamptz", "integer": "bigint",
                 "float": "double precision", "boolean": "boolean", "numeric": "numeric"}


def family_of(dtype: pl.DataType) -> str:
    for base, family in _POLARS_FAMILIES.items():
        if dtype == base or isinstance(dtype, base):
            return family
    raise NdcError(f"contract type {dtype} has no warehouse type")


@dataclass
class DriftReport:
    new_columns: list[str] = field(default_factory=list)


def source_columns(conn: psycopg.Connection, table: TableConfig) -> dict[str, str]:
    rows = conn.execute(
        "select column_name, data_type from information_schema.columns"
        " where table_schema = %s and table_name = %s order by ordinal_position",
        (table.source_schema, table.source_table),
    ).fetchall()
    return dict(rows)


def check_drift(source: SourceConfig, table: TableConfig, contract: Contract,
                found: dict[str, str]) -> DriftReport:
    """Compare the source's columns with the contract before any coercion.

    Missing or retyped columns block the hand-off (nothing is loaded); new columns are reported and filtered.
    """
    where = f"source {source.name}, table {table.source_schema}.{table.source_table}"
    if not found:
        raise SchemaDriftError(f"{where}: the table does not exist or has no columns")
    problems = []
    for column, dtype in contract.columns.items():
        if column not in found:
            problems.append(f"column {column}: missing (contract {contract.name} v{contract.version} needs it)")
            continue
        expected, actual = family_of(dtype), _PG_FAMILIES.get(found[column], found[column])
        if expected != actual:
            problems.append(f"column {column}: type {found[column]} where the contract expects {expected}")
    if problems:
        raise SchemaDriftError(f"{where}: schema drift blocks the load:\n  - " + "\n  - ".join(problems))
    report = DriftReport(new_columns=[c for c in found if c not in contract.columns])
    if report.new_columns:
        log.warning("%s: new columns not in contract %s v%s (recorded, not loaded): %s",
                    where, contract.name, contract.version, ", ".join(report.new_columns))
    return report


def _record_boundary(buffer: bytearray) -> int:
    """Index just past the last complete CSV record in ``buffer`` (which starts at a record), or 0."""
    pos = buffer.rfind(b"\n")
    while pos >= 0 and buffer.count(b'"', 0, pos) % 2:
        pos = buffer.rfind(b"\n", 0, pos)
    return pos + 1


def stream_csv(conn: psycopg.Connection, table: TableConfig, columns: list[str], window_start: datetime,
               window_end: datetime, batch_bytes: int) -> Iterator[bytes]:
    """Yield CSV chunks of about ``batch_bytes``, each holding whole records of the window."""
    inc = ident(table.incremental_column)
    query = sql.SQL("copy (select {cols} from {table} where {inc} >= {start} and {inc} < {end})"
                    " to stdout (format csv)").format(
        cols=column_list(columns), table=ident(table.source_schema, table.source_table), inc=inc,
        start=sql.Literal(window_start), end=sql.Literal(window_end))
    buffer = bytearray()
    with conn.cursor().copy(query) as copy:
        try:
            for block in copy:
                buffer += block
                if len(buffer) >= batch_bytes:
                    cut = _record_boundary(buffer)
                    if cut:
                        yield bytes(buffer[:cut])
                        del buffer[:cut]
        except BaseException:
            # Abandoned mid-stream (a failed batch, or the consumer stopped): cancel the COPY on the server,
            # or closing the copy would wait for the whole table to arrive.
            conn.cancel_safe()
            raise
    if buffer:
        yield bytes(buffer)


def read_batch(chunk: bytes, contract: Contract) -> pl.DataFrame:
    columns = contract.columns
    return pl.read_csv(io.BytesIO(chunk), has_header=False, new_columns=list(columns), schema=columns)


def connect_source(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    conn.execute("set timezone = 'UTC'")
    return conn
