"""Plumbing shared by the fault scenarios: the scenario's own settings, its own databases, the ``ndc`` command."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from ndc.warehouse.connections import with_database
from ndc.warehouse.database import drop_database, ensure_database
from ndc_lab.demo import ndc_command  # noqa: F401 - the scenarios' way to run ``ndc``
from ndc_lab.environment import restore, snapshot
from ndc_lab.faults import Outcome

log = logging.getLogger(__name__)

# Settings a scenario sets for itself: none of the caller's leak into it (every NDC_*, source connection and dbt
# setting is cleared), and the caller's come back afterwards. libpq's PG* variables stay: they are how the caller
# reaches the server the scenario was given.
CLEARED_PREFIXES = ("NDC_", "AIRFLOW_CONN_", "DBT_")


@contextmanager
def environment(**values: str) -> Iterator[dict[str, str]]:
    """``os.environ`` with the scenario's settings (and none of the caller's) until the block ends."""
    cleared = [key for key in os.environ if key.startswith(CLEARED_PREFIXES)]
    saved = snapshot({*cleared, *values})
    for key in cleared:
        os.environ.pop(key, None)
    os.environ.update(values)
    try:
        yield dict(os.environ)
    finally:
        for key in [k for k in os.environ if k.startswith(CLEARED_PREFIXES)]:
            if key not in saved:
                os.environ.pop(key)
        restore(saved)


@contextmanager
def databases(server_url: str, number: str, *suffixes: str) -> Iterator[list[str]]:
    """Fresh databases ``ndc_fault_<n>_<random>[_suffix]`` on ``server_url``, always dropped afterwards."""
    tag = f"ndc_fault_{number}_{secrets.token_hex(4)}"
    urls = [with_database(server_url, f"{tag}_{s}" if s else tag) for s in suffixes]
    try:
        for url in urls:
            ensure_database(url)
        yield urls
    finally:
        for url in urls:
            try:
                drop_database(url)
            except Exception:  # the scenario's own outcome matters more than a failed clean-up
                log.exception("fault scenario %s: could not drop %s", number, url)


def query(url: str, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url, connect_timeout=10, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()


def scalar(url: str, statement: str, params: tuple = ()):
    return query(url, statement, params)[0][0]


_SPAWNED: list[subprocess.Popen] = []


def spawn(command: list[str], **options) -> subprocess.Popen:
    """Start a scenario's process in a session of its own; :func:`stop_spawned` ends whatever is left of it when
    the scenario ends, whichever way it ends."""
    proc = subprocess.Popen(command, start_new_session=True, **options)
    _SPAWNED.append(proc)
    return proc


def stop_spawned() -> None:
    """SIGKILL every process of every session a scenario spawned and that is still there."""
    from contextlib import suppress

    from ndc_lab.cluster import session_members

    while _SPAWNED:
        proc = _SPAWNED.pop()
        for pid in session_members(proc.pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def merged(outcome: Outcome, problems: list[str]) -> Outcome:
    """The promises' outcome with the scenario's own problems (partial state, recovery) in front."""
    outcome.problems[:0] = problems
    outcome.survived = outcome.survived and not problems
    return outcome
