"""The full compare: find rows deleted at the source without a tombstone (hard deletes), never silently.

A separate, scheduled task per table (``compare_<source>`` DAG; ``ndc compare``): every current key of the
source table is streamed into a session temp table and compared with landing's latest state. Rows whose key is
gone are marked ``_ndc_deleted_at`` / ``_ndc_deleted_by = 'full_compare'`` (kept, not dropped: the history and
the mark are the audit trail); a key that comes back is unmarked. One ledger row records what was found: counts
only (the sample of deleted keys is in the result and the task log; the ledger is never purged and a key is
personal data).

A source answering with no keys, or with most keys gone, is more likely broken than emptied: the compare then
fails unless ``allow_mass_delete`` is given (the ledger row then records the override and whether it took effect).
"""

from __future__ import annotations

import io
import logging
from contextlib import closing
from dataclasses import dataclass

from psycopg import sql

from ndc.audit.handoff import Handoff, new_run_id, recorded
from ndc.config.sources import SourceConfig, find_source
from ndc.errors import NdcError
from ndc.extract.connectors import open_connector
from ndc.extract.drift import LANDING_TYPES, family_of
from ndc.identifiers import column_list, ident
from ndc.landing.load import LandingTarget, ensure_landing
from ndc.settings import Settings, get_settings
from ndc.warehouse import connections, database

log = logging.getLogger(__name__)
MASS_DELETE_SHARE = 0.5


@dataclass
class CompareResult:
    dataset: str
    source_keys: int
    landing_rows: int
    newly_deleted: int
    restored: int
    sample_deleted: list[str]


def _key_table(conn, target: LandingTarget) -> None:
    types = sql.SQL(", ").join(
        sql.SQL("{} {}").format(ident(c), sql.SQL(LANDING_TYPES[family_of(target.contract.columns[c])]))
        for c in target.primary_key)
    conn.execute("drop table if exists _ndc_keys")
    conn.execute(sql.SQL("create temp table _ndc_keys ({}) on commit drop").format(types))


def _mark(conn, target: LandingTarget, run_id: str) -> tuple[int, int, list[str]]:
    latest = ident(target.schema, target.table)
    match = sql.SQL(" and ").join(sql.SQL("k.{0} = l.{0}").format(ident(c)) for c in target.primary_key)
    key_text = sql.SQL("concat_ws('|', {})").format(
        sql.SQL(", ").join(sql.SQL("l.{}::text").format(ident(c)) for c in target.primary_key))
    gone = conn.execute(sql.SQL(
        "update {latest} l set _ndc_deleted_at = now(), _ndc_deleted_by = 'full_compare', _ndc_loaded_at = now()"
        " where l._ndc_deleted_at is null and not exists (select 1 from _ndc_keys k where {match})"
        " returning {key}").format(latest=latest, match=match, key=key_text)).fetchall()
    restored = conn.execute(sql.SQL(
        "update {latest} l set _ndc_deleted_at = null, _ndc_deleted_by = null, _ndc_loaded_at = now()"
        " where l._ndc_deleted_by = 'full_compare' and exists (select 1 from _ndc_keys k where {match})"
    ).format(latest=latest, match=match)).rowcount
    return len(gone), restored, sorted(row[0] for row in gone)[:20]


def compare_table(source: SourceConfig | str, table_name: str, *, run_id: str | None = None,
                  allow_mass_delete: bool = False, settings: Settings | None = None) -> CompareResult:
    from ndc.tasks import landing_target

    settings = settings or get_settings()
    if isinstance(source, str):
        source = find_source(settings.sources_dir, source)
    target, table = landing_target(source, table_name), source.table(table_name)
    run = Handoff(kind="full_compare", source=source.name, target=f"{target.schema}.{target.table}",
                  run_id=run_id or new_run_id(), contract=target.contract,
                  # recorded even if the run fails before the keys are compared; _compare says if it took effect
                  overrides={"allow_mass_delete": {"took_effect": False}} if allow_mass_delete else {})
    with database.connect(settings.warehouse_url) as wh:
        database.ensure_meta(wh)
        ensure_landing(wh, target)
        with recorded(wh, run):
            result = _compare(wh, source, target, table, run, allow_mass_delete)
            run.rows_in, run.rows_loaded = result.source_keys, result.newly_deleted
            run.details = {"landing_rows": result.landing_rows, "restored": result.restored}
    log.info("%s full compare: %s", target.dataset, result)
    return result


def _compare(wh, source: SourceConfig, target: LandingTarget, table, run: Handoff,
             allow_mass_delete: bool) -> CompareResult:
    if not source.compares_keys:
        raise NdcError(f"source {source.name}: the full compare needs a SQL source with full_compare_schedule "
                       "set (deletes from this source arrive as tombstones)")
    connector = open_connector(source, connections.source_url(source.connection.conn_id, source.connection.engine))
    with wh.transaction(), closing(connector):
        wh.execute("select pg_advisory_xact_lock(hashtext(%s))", (target.dataset,))
        _key_table(wh, target)
        seen = 0
        copy_stmt = sql.SQL("copy _ndc_keys ({}) from stdin (format csv)").format(
            column_list(list(target.primary_key)))
        for frame in connector.keys(table, batch_rows=200_000):
            buffer = io.BytesIO()
            frame.write_csv(buffer, include_header=False)
            with wh.cursor().copy(copy_stmt) as copy:
                copy.write(buffer.getbuffer())
            seen += frame.height
        wh.execute("analyze _ndc_keys")
        live = wh.execute(sql.SQL("select count(*) from {} where _ndc_deleted_at is null").format(
            ident(target.schema, target.table))).fetchone()[0]
        deleted, restored, sample = _mark(wh, target, run.run_id)
        mass = bool(deleted) and (seen == 0 or deleted > max(10, MASS_DELETE_SHARE * live))
        if allow_mass_delete:
            run.override("allow_mass_delete", mass, rows_marked_deleted=deleted, landing_rows=live)
        if mass and not allow_mass_delete:
            raise NdcError(f"{target.dataset}: the source lists {seen:,} keys and {deleted:,} of {live:,} landing "
                           "rows would be marked deleted; refusing (the source may be broken). Rerun with "
                           "--allow-mass-delete if the deletes are real.")
    return CompareResult(target.dataset, seen, live, deleted, restored, sample)
