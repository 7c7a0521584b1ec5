"""Retention of personal data: quarantine, landing history and the dbt snapshots of personal data are purged
after ``NDC_RETENTION_DAYS``.

What goes (``ndc purge``; the daily ``purge_personal_data`` DAG):

- ``quarantine.rows`` quarantined before the cutoff (replayed or not — their payload is personal data);
- versions in ``landing_<source>.<table>_history`` loaded before the cutoff that are no longer the current
  version of their key (their row hash differs from the latest table's row hash for that key);
- versions of a dbt snapshot of personal data (:data:`SNAPSHOTS`: ``history.citizen_residence_history``, every
  address a citizen had) superseded before the cutoff: ``dbt_valid_to`` before it and a later version of the same
  key exists.

What stays: the latest state of every key (``<table>``) and its version in history, however old, and each
snapshot key's latest version (open, or closed by a delete at the source — landing keeps that key's last state
too) — the current state is never purged; the ledger, batches and contract results (they hold counts, no
personal data).

Deletes run in batches of ``BATCH_ROWS``, each its own transaction (locks stay short and progress is kept if the
run stops); history batches hold the dataset's lock, so no merge of that table interleaves. One ledger row
(``kind = purge``) records the cutoff, the retention (and, in ``details.overrides``, a ``retention_days`` given
instead of the setting) and the rows purged per dataset and snapshot — counts only, no keys or payload.
A dry run counts what would go and changes nothing (and writes no ledger row).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from ndc.audit.handoff import Handoff, new_run_id, recorded
from ndc.identifiers import ident
from ndc.settings import Settings, get_settings
from ndc.warehouse import database

if TYPE_CHECKING:
    from ndc.landing.load import LandingTarget

log = logging.getLogger(__name__)
BATCH_ROWS = 50_000
# dbt snapshots (SCD2) that hold personal data: (schema, snapshot, unique key). Fixed names, never from config; a
# snapshot not built yet is skipped. (enterprise_status_history holds no personal data: kept.)
SNAPSHOTS = (("history", "citizen_residence_history", "citizen_id"),)


@dataclass
class PurgeResult:
    cutoff: datetime
    retention_days: int
    run_id: str
    dry_run: bool
    quarantine: Counter = field(default_factory=Counter)       # rows purged per dataset
    history: dict[str, int] = field(default_factory=dict)      # superseded versions purged per dataset
    snapshots: dict[str, int] = field(default_factory=dict)    # superseded snapshot versions purged per snapshot
    retention_override: bool = False                           # retention_days given instead of the setting

    @property
    def total(self) -> int:
        return sum(self.quarantine.values()) + sum(self.history.values()) + sum(self.snapshots.values())


def _purge_quarantine(conn: psycopg.Connection, cutoff: datetime, dry_run: bool, purged: Counter) -> None:
    """Counts per dataset go into ``purged`` as they are deleted (so a failure still reports what went)."""
    if dry_run:
        with conn.transaction():
            purged.update(dict(conn.execute("select dataset, count(*) from quarantine.rows"
                                            " where quarantined_at < %s group by dataset", (cutoff,)).fetchall()))
        return
    while True:
        with conn.transaction():
            rows = conn.execute(
                "with gone as (delete from quarantine.rows where quarantine_id in (select quarantine_id"
                " from quarantine.rows where quarantined_at < %s limit %s) returning dataset)"
                " select dataset, count(*) from gone group by dataset", (cutoff, BATCH_ROWS)).fetchall()
        if not rows:
            return
        purged.update(dict(rows))
        log.info("purge: %d quarantine rows so far", sum(purged.values()))


def _superseded(target: LandingTarget) -> sql.Composed:
    """History versions loaded before the cutoff that are not their key's current version."""
    match = sql.SQL(" and ").join(sql.SQL("l.{0} = h.{0}").format(ident(c)) for c in target.primary_key)
    return sql.SQL(
        "select h.ctid from {history} h where h._ndc_loaded_at < %(cutoff)s"
        " and not exists (select 1 from {latest} l where {match} and l._ndc_row_hash = h._ndc_row_hash)"
    ).format(history=ident(target.schema, target.history), latest=ident(target.schema, target.table), match=match)


def _purge_history(conn: psycopg.Connection, target: LandingTarget, cutoff: datetime, dry_run: bool) -> int:
    params = {"cutoff": cutoff, "n": BATCH_ROWS, "dataset": target.dataset}
    if dry_run:
        with conn.transaction():
            return conn.execute(sql.SQL("select count(*) from ({}) s").format(_superseded(target)),
                                params).fetchone()[0]
    purged = 0
    while True:
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(hashtext(%(dataset)s))", params)
            gone = conn.execute(sql.SQL("delete from {} where ctid = any(array({} limit %(n)s))").format(
                ident(target.schema, target.history), _superseded(target)), params).rowcount
        if not gone:
            return purged
        purged += gone
        log.info("purge: %s: %d history versions so far", target.dataset, purged)


def _superseded_snapshot(schema: str, snapshot: str, key: str) -> sql.Composed:
    """Snapshot versions closed before the cutoff that a later version of their key superseded."""
    return sql.SQL(
        "select s.ctid from {snap} s where s.dbt_valid_to < %(cutoff)s"
        " and exists (select from {snap} n where n.{key} = s.{key} and n.dbt_valid_from > s.dbt_valid_from)"
    ).format(snap=ident(schema, snapshot), key=ident(key))


def _purge_snapshots(conn: psycopg.Connection, cutoff: datetime, dry_run: bool, purged: dict[str, int]) -> None:
    """Counts per snapshot go into ``purged`` as they are deleted (so a failure still reports what went)."""
    for schema, snapshot, key in SNAPSHOTS:
        name = f"{schema}.{snapshot}"
        with conn.transaction():
            if conn.execute("select to_regclass(%s)", (ident(schema, snapshot).as_string(conn),)).fetchone()[0] \
                    is None:
                continue
        superseded = _superseded_snapshot(schema, snapshot, key)
        params = {"cutoff": cutoff, "n": BATCH_ROWS}
        if dry_run:
            with conn.transaction():
                found = conn.execute(sql.SQL("select count(*) from ({}) s").format(superseded), params).fetchone()[0]
            if found:
                purged[name] = found
            continue
        while True:
            with conn.transaction():
                gone = conn.execute(sql.SQL("delete from {} where ctid = any(array({} limit %(n)s))").format(
                    ident(schema, snapshot), superseded), params).rowcount
            if not gone:
                break
            purged[name] = purged.get(name, 0) + gone
            log.info("purge: %s: %d superseded snapshot versions so far", name, purged[name])


def _targets(conn: psycopg.Connection, settings: Settings) -> list[LandingTarget]:
    """The landing targets of every registered source table whose history table exists."""
    from ndc.config.sources import load_sources
    from ndc.tasks import landing_target

    found = []
    for source in load_sources(settings.sources_dir):
        for table in source.tables:
            target = landing_target(source, table.name)
            relation = ident(target.schema, target.history).as_string(conn)
            with conn.transaction():
                if conn.execute("select to_regclass(%s)", (relation,)).fetchone()[0] is not None:
                    found.append(target)
    return found


def purge(*, retention_days: int | None = None, dry_run: bool = False, run_id: str | None = None,
          settings: Settings | None = None) -> PurgeResult:
    """Delete quarantine rows, superseded history versions and superseded snapshot versions older than the
    retention period (see the module's docstring); ``retention_days`` defaults to ``NDC_RETENTION_DAYS`` (given, it
    is a safety override: the ledger row records it and the setting it replaced)."""
    settings = settings or get_settings()
    days = settings.retention_days if retention_days is None else retention_days
    if days < 1:
        raise ValueError(f"retention_days must be at least 1, got {days}")
    run_id = run_id or new_run_id()
    result = PurgeResult(cutoff=datetime.now(UTC) - timedelta(days=days), retention_days=days, run_id=run_id,
                         dry_run=dry_run, retention_override=retention_days is not None)
    # What was purged before a failure stays purged, and its ledger row counts it.
    run = Handoff(kind="purge", source="quarantine.rows, landing history, snapshots", target="(deleted)",
                  run_id=run_id, interval=(None, result.cutoff), write=not dry_run)
    if retention_days is not None:
        run.override("retention_days", days != settings.retention_days, value=days,
                     setting=settings.retention_days)
    with database.connect(settings.warehouse_url) as conn:
        database.ensure_meta(conn)
        with recorded(conn, run):
            try:
                _purge_quarantine(conn, result.cutoff, dry_run, result.quarantine)
                for target in _targets(conn, settings):
                    purged = _purge_history(conn, target, result.cutoff, dry_run)
                    if purged:
                        result.history[target.dataset] = purged
                _purge_snapshots(conn, result.cutoff, dry_run, result.snapshots)
            finally:
                run.rows_in = result.total
                run.details = {"cutoff": result.cutoff, "retention_days": result.retention_days,
                               "quarantine_rows": dict(result.quarantine), "history_versions": result.history,
                               "snapshot_versions": result.snapshots}
    log.info("purge%s: cutoff %s, %d rows (quarantine %s, history %s, snapshots %s)", " (dry run)" if dry_run else "",
             result.cutoff.isoformat(), result.total, result.quarantine, result.history, result.snapshots)
    return result
