"""The platform's own schema (``ndc_meta``, ``quarantine``, ``shared`` and the roles they grant to) as Alembic
revisions, in ``migrations/versions`` beside this module.

* Revisions are numbered ``0001``, ``0002``, ... (the number is the revision id and starts the file's name), so a
  later revision sorts after an earlier one and the head is known without importing Alembic: checking that a
  warehouse is current costs one query. A warehouse at a revision this release does not know (a newer release's)
  counts as current, so an older worker never touches a newer schema.
* ``0001`` is the schema of the last release before Alembic, which versioned it in ``ndc_meta.schema_version``
  (7). Such a warehouse is stamped at ``0001`` without running it, then upgraded.
* Alembic's version table is ``ndc_meta.alembic_version``: Airflow keeps its own ``alembic_version`` elsewhere.
* Alembic is configured here, not by an alembic.ini, and runs on the caller's psycopg connection inside the
  caller's transaction (:func:`upgrade`): the DDL commits or rolls back with it, under its advisory lock.
* Revisions only go forward (none has a downgrade): the schema holds the ledger; going back is a restore.

To change the schema, add ``versions/<next number>_<what it does>.py`` with ``revision`` set to that number,
``down_revision`` to the one before, and an ``upgrade()`` of plain SQL (``op.execute``).
"""

from __future__ import annotations

import functools
import importlib.resources
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from ndc.errors import NdcError

SCRIPT_LOCATION = "ndc.warehouse:migrations"
VERSION_SCHEMA = "ndc_meta"
VERSION_TABLE = "alembic_version"
BASELINE = "0001"
PREVIOUS_RELEASE_VERSION = 7  # ndc_meta.schema_version of the schema BASELINE is
_RUNNING = threading.Lock()  # Alembic's `op` and `context` are module-wide: one run per process at a time


@functools.cache
def head() -> str:
    """The newest revision this release has."""
    versions = importlib.resources.files("ndc.warehouse") / "migrations" / "versions"
    return max(entry.name[:4] for entry in versions.iterdir()
               if entry.name.endswith(".py") and entry.name[:4].isdigit())


def current(conn: psycopg.Connection) -> str | None:
    """The revision the warehouse is at; None before its first upgrade."""
    try:
        with conn.transaction():
            row = conn.execute(f"select version_num from {VERSION_SCHEMA}.{VERSION_TABLE}").fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return row[0] if row else None


def is_current(revision: str | None) -> bool:
    return revision is not None and revision >= head()


def upgrade(conn: psycopg.Connection) -> str:
    """Bring the warehouse to the head revision; returns the revision it is at.

    The caller holds the platform's DDL lock in an open transaction (``ndc.warehouse.database.ensure_meta``), so
    the revision read here is the one no other process is changing."""
    revision = current(conn)
    if is_current(revision):
        return revision
    from alembic import command
    from sqlalchemy.exc import DBAPIError

    with _RUNNING, _alembic(conn) as config:
        try:
            if revision is None and _previous_release(conn):
                command.stamp(config, BASELINE)
            command.upgrade(config, "head")
        except DBAPIError as exc:  # the driver's own error, as every other warehouse call raises
            raise exc.orig from exc
    return head()


def _previous_release(conn: psycopg.Connection) -> bool:
    """Whether the warehouse was made by the last release before Alembic (which is then not run again)."""
    if conn.execute("select to_regclass('ndc_meta.schema_version')").fetchone()[0] is None:
        return False
    version = conn.execute("select max(version) from ndc_meta.schema_version").fetchone()[0]
    if version != PREVIOUS_RELEASE_VERSION:
        raise NdcError(f"the warehouse's ndc_meta.schema_version is {version}: this release upgrades a warehouse "
                       f"at version {PREVIOUS_RELEASE_VERSION}, the last release before Alembic. Open it once with "
                       "that release first (any `ndc` command on the warehouse, e.g. `ndc ledger verify`)")
    return True


class _LentConnection:
    """The caller's psycopg connection as SQLAlchemy's DBAPI connection. Committing, rolling back and closing stay
    the caller's, so Alembic's DDL runs in the caller's transaction; SQLAlchemy's notice handler is not added to a
    connection it does not own."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def __getattr__(self, name: str):
        return getattr(self._conn, name)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass

    def add_notice_handler(self, handler) -> None:
        pass


@contextmanager
def _alembic(conn: psycopg.Connection) -> Iterator:
    """An Alembic configuration for this package's revisions, with a SQLAlchemy connection over ``conn``."""
    from sqlalchemy import create_engine, pool

    engine = create_engine("postgresql+psycopg://", creator=lambda: _LentConnection(conn), poolclass=pool.NullPool,
                           use_native_hstore=False)  # hstore's type lookup needs psycopg's own connection class
    try:
        with engine.connect() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            yield config
    finally:
        engine.dispose()


def alembic_config():
    """Alembic's configuration of this package's revisions: where they are, nothing else."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config
