"""MariaDB/MySQL sources through the pure-Python ``mysql-connector-python`` driver (no compiler needed).

The URL is ``mysql://user:password@host:port/database``; the database named there is the source schema (MySQL
has no schemas inside a database, so a table's ``source_schema`` is ignored). Rows are streamed with an
unbuffered cursor and ``fetchmany``; the session runs in UTC, so ``DATETIME``/``TIMESTAMP`` values are UTC.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import polars as pl

from ndc.config.sources import TableConfig
from ndc.extract.connectors.base import Chunk, ColumnSet, ExtractRequest, frame_from_rows

log = logging.getLogger(__name__)

FAMILIES = {
    "varchar": "text", "char": "text", "text": "text", "mediumtext": "text", "longtext": "text",
    "tinytext": "text", "enum": "text", "date": "date", "datetime": "timestamptz", "timestamp": "timestamptz",
    "tinyint": "integer", "smallint": "integer", "mediumint": "integer", "int": "integer", "bigint": "integer",
    "decimal": "numeric", "double": "float", "float": "float",
}


def quote_mysql(name: str) -> str:
    """A MySQL identifier in backticks (names were validated as plain identifiers by the registry)."""
    return "`" + name.replace("`", "``") + "`"


class MySQLConnector:
    def __init__(self, url: str) -> None:
        import mysql.connector

        parts = urlsplit(url)
        self.database = parts.path.lstrip("/")
        self.conn = mysql.connector.connect(
            host=parts.hostname or "127.0.0.1", port=parts.port or 3306, user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""), database=self.database, use_pure=True, autocommit=True,
            connection_timeout=10, charset="utf8mb4", collation="utf8mb4_unicode_ci")
        cursor = self.conn.cursor()
        cursor.execute("set time_zone = '+00:00'")
        cursor.close()

    def column_sets(self, table: TableConfig, request: ExtractRequest | None = None) -> list[ColumnSet]:
        cursor = self.conn.cursor()
        cursor.execute("select column_name, data_type, column_type from information_schema.columns"
                       " where table_schema = %s and table_name = %s order by ordinal_position",
                       (self.database, table.source_table))
        found = {}
        for name, data_type, column_type in cursor.fetchall():
            data_type, column_type = _text(data_type).lower(), _text(column_type).lower()
            found[_text(name)] = "boolean" if column_type.startswith("tinyint(1)") else FAMILIES.get(
                data_type, data_type)
        cursor.close()
        return [ColumnSet(f"table {self.database}.{table.source_table}", found)]

    def _stream(self, statement: str, params: tuple, columns: list[str],
                batch_rows: int) -> Iterator[pl.DataFrame]:
        cursor = self.conn.cursor(buffered=False)
        try:
            cursor.execute(statement, params)
            while rows := cursor.fetchmany(batch_rows):
                yield frame_from_rows(rows, columns)
        finally:
            try:
                cursor.close()
            except Exception as exc:  # an abandoned unbuffered read: the connection is closed next anyway
                log.info("closing an abandoned MySQL read: %s", exc)

    def chunks(self, request: ExtractRequest) -> Iterator[Chunk]:
        table = request.table
        inc = quote_mysql(table.incremental_column)
        # Names were validated as identifiers by the registry and are quoted here.
        statement = (f"select {', '.join(quote_mysql(c) for c in request.columns)}"
                     f" from {quote_mysql(table.source_table)} where {inc} >= %s and {inc} < %s")
        window = tuple(moment.replace(tzinfo=None) for moment in request.window)  # UTC session
        # Types as the driver returns them; the gate casts to the contract's (naive DATETIME values are UTC).
        for frame in self._stream(statement, window, request.columns, request.batch_rows):
            yield Chunk(frame)

    def keys(self, table: TableConfig, batch_rows: int) -> Iterator[pl.DataFrame]:
        statement = (f"select {', '.join(quote_mysql(c) for c in table.primary_key)}"
                     f" from {quote_mysql(table.source_table)}")
        for frame in self._stream(statement, (), table.primary_key, batch_rows):
            yield frame.select(pl.all().cast(pl.String))

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception as exc:  # after an abandoned read the server side is gone with the socket anyway
            log.info("closing the MySQL connection: %s", exc)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)
