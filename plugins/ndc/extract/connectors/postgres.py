"""PostgreSQL sources: ``COPY (SELECT ...) TO STDOUT (FORMAT csv)`` streamed in byte-sized batches.

The stream is cut only at record boundaries (a newline outside quotes), so values holding newlines survive
intact; one batch is held at a time.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import polars as pl
import psycopg
from psycopg import sql

from ndc.config.sources import TableConfig
from ndc.extract.connectors.base import Chunk, ColumnSet, ExtractRequest
from ndc.identifiers import column_list, ident

FAMILIES = {
    "text": "text", "character varying": "text", "character": "text",
    "date": "date", "timestamp with time zone": "timestamptz",
    "smallint": "integer", "integer": "integer", "bigint": "integer",
    "numeric": "numeric", "double precision": "float", "real": "float", "boolean": "boolean",
}


def record_boundary(buffer: bytearray) -> int:
    """Index just past the last complete CSV record in ``buffer`` (which starts at a record), or 0."""
    pos = buffer.rfind(b"\n")
    while pos >= 0 and buffer.count(b'"', 0, pos) % 2:
        pos = buffer.rfind(b"\n", 0, pos)
    return pos + 1


def read_csv_batch(chunk: bytes, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.read_csv(io.BytesIO(chunk), has_header=False, new_columns=list(schema), schema=schema)


class PostgresConnector:
    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        self.conn.execute("set timezone = 'UTC'")

    def column_sets(self, table: TableConfig, request: ExtractRequest | None = None) -> list[ColumnSet]:
        rows = self.conn.execute(
            "select column_name, data_type from information_schema.columns"
            " where table_schema = %s and table_name = %s order by ordinal_position",
            (table.source_schema, table.source_table),
        ).fetchall()
        return [ColumnSet(f"table {table.source_schema}.{table.source_table}",
                          {name: FAMILIES.get(dtype, dtype) for name, dtype in rows})]

    def _copy(self, query: sql.Composable, batch_bytes: int) -> Iterator[bytes]:
        buffer = bytearray()
        with self.conn.cursor().copy(query) as copy:
            try:
                for block in copy:
                    buffer += block
                    if len(buffer) >= batch_bytes:
                        cut = record_boundary(buffer)
                        if cut:
                            yield bytes(buffer[:cut])
                            del buffer[:cut]
            except BaseException:
                # Abandoned mid-stream (a failed batch, or the consumer stopped): cancel the COPY on the server,
                # or closing the copy would wait for the whole table to arrive.
                self.conn.cancel_safe()
                raise
        if buffer:
            yield bytes(buffer)

    def chunks(self, request: ExtractRequest) -> Iterator[Chunk]:
        table, inc = request.table, ident(request.table.incremental_column)
        query = sql.SQL("copy (select {cols} from {table} where {inc} >= {start} and {inc} < {end})"
                        " to stdout (format csv)").format(
            cols=column_list(request.columns), table=ident(table.source_schema, table.source_table), inc=inc,
            start=sql.Literal(request.window[0]), end=sql.Literal(request.window[1]))
        for block in self._copy(query, request.batch_bytes):
            yield Chunk(read_csv_batch(block, request.contract_schema))

    def keys(self, table: TableConfig, batch_rows: int) -> Iterator[pl.DataFrame]:
        schema = dict.fromkeys(table.primary_key, pl.String)
        query = sql.SQL("copy (select {cols} from {table}) to stdout (format csv)").format(
            cols=column_list(table.primary_key), table=ident(table.source_schema, table.source_table))
        for block in self._copy(query, batch_rows * 32):
            yield read_csv_batch(block, schema)

    def close(self) -> None:
        self.conn.close()
