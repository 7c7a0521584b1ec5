"""The ledger's anchor: every appended row's id and hash, also written outside the ledger's database.

A hash chain shows an edited or a deleted middle row by itself, but not a deleted tail or a chain recomputed from
some row onwards: whoever can write the ledger can write a consistent new chain. The anchor closes that gap. It
is a second database (``NDC_LEDGER_ANCHOR_URL``; default: ``<warehouse database>_ledger_anchor`` on the same
server) holding ``ledger_anchor.anchors``: one row per ledger row (ledger identity, id, hash), append-only by
trigger. In a deployment it belongs to another administrator (an audit office), and the platform connects to it
with a role that may only INSERT and SELECT there, so the ledger's writer cannot rewrite it. ``ndc ledger verify``
compares the chain with it (:func:`ndc.audit.ledger.verify`).

Anchoring happens after the ledger row commits. If the anchor database is unreachable the hand-off still
succeeds (it is logged) and the row waits to be anchored: ``ndc ledger anchor`` verifies the chain, then anchors every
row not yet anchored. ``verify`` reports a row waiting less than ``NDC_LEDGER_ANCHOR_GRACE_SECONDS`` as a warning
and fails once one waits longer (it could have been rewritten before it was sealed).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import datetime

import psycopg
from psycopg import sql

from ndc.identifiers import ident
from ndc.settings import get_settings
from ndc.warehouse.connections import database_of, redact, with_database

log = logging.getLogger(__name__)
SUFFIX = "_ledger_anchor"

ANCHOR_DDL = """
create schema if not exists ledger_anchor;
create table if not exists ledger_anchor.anchors (
    anchor_id bigint generated always as identity primary key,
    ledger_uuid uuid not null,
    ledger_database text not null,
    ledger_id bigint not null,
    row_hash text not null,
    anchored_at timestamptz not null default clock_timestamp(),
    unique (ledger_uuid, ledger_id)
);
create or replace function ledger_anchor.append_only() returns trigger language plpgsql as $$
begin
    raise exception 'ledger_anchor.anchors is append-only: % is not allowed', tg_op;
end $$;
drop trigger if exists anchors_no_update on ledger_anchor.anchors;
create trigger anchors_no_update before update or delete on ledger_anchor.anchors
    for each row execute function ledger_anchor.append_only();
drop trigger if exists anchors_no_truncate on ledger_anchor.anchors;
create trigger anchors_no_truncate before truncate on ledger_anchor.anchors
    for each statement execute function ledger_anchor.append_only();
"""

_lock = threading.Lock()
_connections: dict[str, psycopg.Connection] = {}
_ready: set[str] = set()


def anchor_url(warehouse_url: str) -> str:
    """Where the anchors of the ledger in ``warehouse_url`` go."""
    return get_settings().ledger_anchor_url or with_database(warehouse_url, database_of(warehouse_url) + SUFFIX)


def ensure(url: str) -> None:
    """Create the anchor database and table if they do not exist (needs the right to; in a deployment the anchor's
    administrator runs this once: ``ndc ledger anchor --init``)."""
    if url in _ready:
        return
    name = database_of(url)
    with psycopg.connect(with_database(url, "postgres"), autocommit=True, connect_timeout=10) as admin:
        if not admin.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            # created meanwhile by another process: either error, depending on the moment
            with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                admin.execute(sql.SQL("create database {}").format(ident(name)))
            admin.execute(sql.SQL("revoke connect, temporary on database {} from public").format(ident(name)))
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("select pg_advisory_lock(727003)")
        try:
            if conn.execute("select to_regclass('ledger_anchor.anchors')").fetchone()[0] is None:
                conn.execute(ANCHOR_DDL)
        finally:
            conn.execute("select pg_advisory_unlock(727003)")
    _ready.add(url)


def _connection(url: str) -> psycopg.Connection:
    conn = _connections.get(url)
    if conn is None or conn.closed:
        ensure(url)
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        _connections[url] = conn
    return conn


def record(url: str, ledger_uuid: str, ledger_database: str, rows: list[tuple[int, str]]) -> int:
    """Anchor ``(ledger_id, row_hash)`` pairs; already anchored ids are left as they are. Returns rows anchored."""
    if not rows:
        return 0
    with _lock:
        try:
            conn = _connection(url)
            with conn.cursor() as cur:
                cur.executemany(
                    "insert into ledger_anchor.anchors (ledger_uuid, ledger_database, ledger_id, row_hash)"
                    " values (%s, %s, %s, %s) on conflict (ledger_uuid, ledger_id) do nothing",
                    [(ledger_uuid, ledger_database, i, h) for i, h in rows])
            return len(rows)
        except psycopg.Error as exc:
            _connections.pop(url, None)
            _ready.discard(url)
            log.warning("ledger anchor %s unreachable: %s (the ledger row is kept; `ndc ledger anchor` catches up)",
                        redact(url), str(exc).strip())
            return 0


def anchored(url: str, ledger_uuid: str) -> dict[int, str] | None:
    """The anchored hashes of one ledger by id; None when the anchor database cannot be read."""
    found = anchored_with_times(url, ledger_uuid)
    return None if found is None else {i: h for i, (h, _) in found.items()}


def anchored_with_times(url: str, ledger_uuid: str) -> dict[int, tuple[str, datetime]] | None:
    """The anchored hash and the anchor's time of each row of one ledger; None when the anchor cannot be read."""
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            if conn.execute("select to_regclass('ledger_anchor.anchors')").fetchone()[0] is None:
                return {}
            return {i: (h, at) for i, h, at in conn.execute(
                "select ledger_id, row_hash, anchored_at from ledger_anchor.anchors where ledger_uuid = %s",
                (ledger_uuid,)).fetchall()}
    except psycopg.OperationalError as exc:
        if "does not exist" in str(exc):
            return {}
        log.warning("ledger anchor %s unreadable: %s", redact(url), str(exc).strip())
        return None


def other_ledgers(url: str, ledger_database: str, ledger_uuid: str) -> list[tuple[str, int]]:
    """Other ledger identities anchored for the same database name: (uuid, highest id) — a replaced ledger."""
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            if conn.execute("select to_regclass('ledger_anchor.anchors')").fetchone()[0] is None:
                return []
            return [(str(u), n) for u, n in conn.execute(
                "select ledger_uuid, max(ledger_id) from ledger_anchor.anchors where ledger_database = %s"
                " and ledger_uuid <> %s group by ledger_uuid", (ledger_database, ledger_uuid)).fetchall()]
    except psycopg.OperationalError:
        return []
