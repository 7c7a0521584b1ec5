"""Connectors: how the hub reads each kind of national database, behind one small protocol.

A connector lists what the source offers (column sets, to compare with the contract before anything loads),
streams the rows of one extract window as bounded batches, and, where the source can, lists every current key
for the full compare that finds hard deletes. Which connector serves a source is decided by its connection
URL's scheme, so a MariaDB source that falls back to PostgreSQL (the embedded default) is read as PostgreSQL.

| scheme | connector | module |
|---|---|---|
| ``postgresql://`` | ``COPY (SELECT ...) TO STDOUT`` streamed | :mod:`ndc.extract.connectors.postgres` |
| ``mysql://`` | ``mysql-connector-python`` (pure Python), unbuffered cursor | :mod:`ndc.extract.connectors.mysql` |
| ``http(s)://`` | paginated JSON over httpx, bearer token, retries | :mod:`ndc.extract.connectors.http` |
| ``file://`` | CSV / Parquet drops, loaded once by content hash | :mod:`ndc.extract.connectors.files` |
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ndc.config.sources import SourceConfig
from ndc.errors import ConfigError
from ndc.extract.connectors.base import Chunk, ColumnSet, Connector, FileRef


def open_connector(source: SourceConfig, url: str) -> Connector:
    """The connector for ``url`` (the source's resolved connection)."""
    scheme = urlsplit(url).scheme
    if scheme == "postgresql":
        from ndc.extract.connectors.postgres import PostgresConnector

        return PostgresConnector(url)
    if scheme == "mysql":
        from ndc.extract.connectors.mysql import MySQLConnector

        return MySQLConnector(url)
    if scheme in ("http", "https"):
        from ndc.extract.connectors.http import HttpConnector

        return HttpConnector(url)
    if scheme == "file":
        from ndc.extract.connectors.files import FileDropConnector

        return FileDropConnector(url, legacy_encoding=source.legacy_encoding)
    raise ConfigError(f"source {source.name}: no connector for URL scheme {scheme!r}")


__all__ = ["Chunk", "ColumnSet", "Connector", "FileRef", "open_connector"]
