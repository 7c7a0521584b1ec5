"""Plain queries against a test database, for assertions (never through the code under test)."""

from __future__ import annotations

import psycopg


def mysql_connect(url: str):
    """A mysql-connector connection to ``url`` (the database part may be empty)."""
    from urllib.parse import unquote, urlsplit

    import mysql.connector

    parts = urlsplit(url)
    return mysql.connector.connect(
        host=parts.hostname, port=parts.port or 3306, user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""), database=parts.path.lstrip("/") or None, use_pure=True,
        autocommit=True, connection_timeout=5)


def query(url: str, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        conn.execute("set timezone = 'UTC'")
        return conn.execute(statement, params).fetchall()


def scalar(url: str, statement: str, params: tuple = ()):
    return query(url, statement, params)[0][0]


def frame(url: str, statement: str, params: tuple = ()):
    """The result as a polars frame, columns named as the query names them."""
    import polars as pl

    with psycopg.connect(url) as conn:
        conn.execute("set timezone = 'UTC'")
        cursor = conn.execute(statement, params)
        return pl.DataFrame(cursor.fetchall(), schema=[c.name for c in cursor.description], orient="row",
                            infer_schema_length=None)
