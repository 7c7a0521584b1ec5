"""The hub's warehouse: connections with fixed session settings, databases, and the platform's own schemas.

Every warehouse session runs in UTC with ISO dates, so row hashes (``md5(row::text)``) and timestamps are the
same whichever client or server default is in force.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from ndc.errors import NdcError
from ndc.identifiers import ident
from ndc.warehouse import schema
from ndc.warehouse.connections import database_of, redact, with_database

DDL_LOCK = 727_001  # advisory lock that serialises the platform's DDL across processes


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """A warehouse session in UTC with ISO dates; the error names the server without its password."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise NdcError(f"cannot connect to {redact(url)}: {str(exc).strip()}") from None
    conn.execute("set timezone = 'UTC'")
    conn.execute("set datestyle = 'ISO, YMD'")
    if not autocommit:
        conn.commit()
    return conn


async def connect_async(url: str, *, autocommit: bool = True) -> psycopg.AsyncConnection:
    """:func:`connect` for an event loop (the sharing service): the same session settings and error."""
    try:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise NdcError(f"cannot connect to {redact(url)}: {str(exc).strip()}") from None
    await conn.execute("set timezone = 'UTC'")
    await conn.execute("set datestyle = 'ISO, YMD'")
    if not autocommit:
        await conn.commit()
    return conn


def ensure_database(url: str) -> None:
    """Create the database named in ``url`` if it does not exist yet.

    PostgreSQL lets every role connect to a new database; the platform's databases (warehouse, simulated
    sources, Airflow metadata) revoke that, so a consumer role reaches only what it is granted.
    """
    name = database_of(url)
    with connect(with_database(url, "postgres"), autocommit=True) as admin:
        owned = admin.execute("select pg_has_role(datdba, 'usage') from pg_database where datname = %s",
                              (name,)).fetchone()
        if owned is None:
            try:
                admin.execute(sql.SQL("create database {}").format(ident(name)))
            except psycopg.errors.InsufficientPrivilege:
                raise NdcError(f"database {name} does not exist and role {admin.info.user} may not create it: in a "
                               "deployment the database administrator creates it (`ndc warehouse bootstrap`)"
                               ) from None
            owned = (True,)
        if owned[0]:  # a database another role owns (the warehouse, in a deployment) is its owner's to lock down
            admin.execute(sql.SQL("revoke connect, temporary on database {} from public").format(ident(name)))


def drop_database(url: str) -> None:
    """Drop the database named in ``url`` (and the ledger anchor database beside it, if one was made for it)."""
    from ndc.audit.anchor import SUFFIX

    name = database_of(url)
    with connect(with_database(url, "postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("drop database if exists {} with (force)").format(ident(name)))
        if len(name + SUFFIX) <= 63:
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(ident(name + SUFFIX)))


def run_ddl(conn: psycopg.Connection, statements: str | sql.Composable) -> None:
    """Run idempotent DDL under a cluster-wide advisory lock, so concurrent first runs do not collide."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (DDL_LOCK,))
        conn.execute(statements)


def ensure_meta(conn: psycopg.Connection) -> None:
    """Create or upgrade the platform's own schema (its Alembic revisions, :mod:`ndc.warehouse.schema`). One read
    when it is current, so it never waits for (or blocks) readers of the ledger: DDL such as the ledger's triggers
    needs an exclusive lock and runs only on upgrade, under the DDL lock, so concurrent first runs do not collide."""
    if schema.is_current(schema.current(conn)):
        return
    try:
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(%s)", (DDL_LOCK,))
            schema.upgrade(conn)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise NdcError(f"the warehouse's schema needs revision {schema.head()} and role {conn.info.user} may not "
                       f"install it ({exc.diag.message_primary}): in a deployment the database administrator runs "
                       "`ndc warehouse bootstrap` (NDC_ADMIN_URL) for each release with a new revision") from None
