"""Consumer reads per login and view — the third unit of sharing transactions — collected by a scheduled task
(``collect_consumer_reads``; ``ndc reads collect``).

Every agency view calls ``ndc_meta.agency_read`` once per statement (migration 0005), which counts the read on a
sequence per login and view (``ndc_meta.read_meters``). The count comes from what the statement executed, not from
its text: a ``SET search_path`` that lets a statement name the view without its schema is still counted, and a
comment naming a view counts nothing. The meters belong to ``ndc_custodian``; the runtime role reads them through
``ndc_meta.read_meter_totals()`` and cannot set them. The collection adds each meter's growth since the last
collection to ``ndc_meta.consumer_reads`` (day, login, agency, view) and records one ledger row (``kind =
'reads'``). A read in a read-only transaction cannot be counted and is refused by the view.

Limit: an agency can call ``ndc_meta.agency_read`` itself and so overstate its own reads (never another agency's,
never understate them).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import psycopg

from ndc.audit.handoff import Handoff, recorded


@dataclass
class Collected:
    reads: int = 0  # statements on agency views (one per view a statement scans)
    per_view: Counter = field(default_factory=Counter)  # (login, view) -> reads


def collect(conn: psycopg.Connection, run_id: str | None = None) -> Collected:
    from ndc.warehouse import database

    database.ensure_meta(conn)
    result = Collected()
    run = Handoff(kind="reads", source="consumers", target="agency views", run_id=run_id)
    with recorded(conn, run):
        _count_new_reads(conn, result)
        run.rows_in = run.rows_loaded = result.reads
        run.details = {"per_view": {f"{r}:{v}": n for (r, v), n in sorted(result.per_view.items())}}
    return result


def _count_new_reads(conn: psycopg.Connection, result: Collected) -> None:
    """Reads each meter counted since the last collection, per login and view, into ``consumer_reads``."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(727006)")
        for meter, role, agency, view, reads, counted in conn.execute(
                "select meter_id, role, agency, view, reads, counted from ndc_meta.read_meter_totals()").fetchall():
            new = reads - counted
            if new <= 0:
                continue
            conn.execute("select ndc_meta.mark_reads_counted(%s, %s)", (meter, reads))
            result.reads += new
            result.per_view[(role, view)] += new
            conn.execute("insert into ndc_meta.consumer_reads (day, role, agency, view, reads)"
                         " values (current_date, %s, %s, %s, %s) on conflict (day, role, view)"
                         " do update set reads = ndc_meta.consumer_reads.reads + excluded.reads",
                         (role, agency, view, new))
