"""Bounded waits for the locks readers hold: publish and ``ndc agreements apply`` never wait without limit.

Replacing a shared view or an agency view needs an exclusive lock on it, which waits for every open transaction
that has read it — an agency session left inside a transaction would hold the platform forever. A step that takes
such a lock runs here: in its own (sub)transaction with ``lock_timeout`` (``NDC_LOCK_TIMEOUT_SECONDS``), retried up
to ``NDC_LOCK_ATTEMPTS`` times. Before each retry, agency transactions older than ``NDC_AGENCY_TRANSACTION_SECONDS``
are ended (PostgreSQL before 17 has no transaction time limit). When every attempt times out, an alert names the
sessions holding the locks and the step fails with the same message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

from ndc.errors import NdcError
from ndc.settings import get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")
LOCK_WAIT_CHECK = "lock_wait"


def bounded(conn: psycopg.Connection, what: str, step: Callable[[], T], *, dataset: str,
            run_id: str | None = None) -> T:
    """Run ``step`` (which takes locks on ``conn``) with a lock timeout and retries; ``what`` names it in errors."""
    settings = get_settings()
    for attempt in range(1, settings.lock_attempts + 1):
        try:
            with conn.transaction():
                conn.execute(f"set local lock_timeout = '{settings.lock_timeout_seconds}s'")
                return step()
        except psycopg.errors.LockNotAvailable:
            holders = lock_holders(conn)
            log.warning("%s: waited %s s for a lock (attempt %s of %s); held by %s", what,
                        settings.lock_timeout_seconds, attempt, settings.lock_attempts, holders or "nobody now")
            end_long_agency_transactions(conn)
            if attempt < settings.lock_attempts:
                time.sleep(min(0.5 * 2 ** attempt, 10))
    message = (f"{what}: gave up after {settings.lock_attempts} attempts of {settings.lock_timeout_seconds} s each: "
               f"the lock is held by {lock_holders(conn) or 'sessions that have ended since'}. Nothing was changed; "
               "the next run tries again (an agency session left in a transaction is ended after "
               "NDC_AGENCY_IDLE_IN_TRANSACTION_SECONDS)")
    from ndc.audit import alerts

    alerts.raise_alert(conn, dataset=dataset, check=LOCK_WAIT_CHECK, message=message, owner_agency="platform",
                       run_id=run_id)
    raise NdcError(message)


def lock_holders(conn: psycopg.Connection) -> str:
    """Sessions in a transaction holding a lock on a shared or agency relation: pid, role, state, since when."""
    with conn.transaction():
        if conn.execute("select to_regprocedure('ndc_meta.lock_holders()')").fetchone()[0] is None:
            return ""
        rows = conn.execute("select pid, role, state, xact_start from ndc_meta.lock_holders()").fetchall()
    return "; ".join(f"pid {pid} ({role}, {state}, in a transaction since {since:%Y-%m-%d %H:%M:%S %Z})"
                     for pid, role, state, since in rows)


def end_long_agency_transactions(conn: psycopg.Connection) -> int:
    """End agency transactions older than ``NDC_AGENCY_TRANSACTION_SECONDS``; returns how many were ended."""
    limit = get_settings().agency_transaction_limit
    with conn.transaction():
        if conn.execute("select to_regprocedure('ndc_meta.end_long_agency_transactions(interval)')").fetchone()[0] \
                is None:
            return 0
        ended = conn.execute("select ndc_meta.end_long_agency_transactions(%s)", (limit,)).fetchone()[0]
    if ended:
        log.warning("ended %s agency session(s) whose transaction ran longer than %s", ended, limit)
    return ended
