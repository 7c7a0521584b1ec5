"""Consumer reads per role and view — the third unit of sharing transactions — collected from
``pg_stat_statements`` by a scheduled task (``collect_consumer_reads``; ``ndc reads collect``).

Each statement an agency's login role ran is attributed to the agency views it names (``agency_<x>.<view>``);
the growth of its ``calls`` since the last collection is added to ``ndc_meta.consumer_reads`` (day, role, agency,
view) and one ledger row (``kind = 'reads'``) records the collection. A reset of the statistics (calls going
down) counts the new calls from zero. ``pg_stat_statements`` must be in ``shared_preload_libraries`` (a server
restart): without it the collection says so and records nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import psycopg

from ndc.audit.handoff import Handoff, recorded
from ndc.errors import NdcError

_VIEW = re.compile(r'"?(agency_[a-z0-9_]+)"?\s*\.\s*"?([a-z_][a-z0-9_]*)"?')


@dataclass
class Collected:
    statements: int = 0
    reads: int = 0
    per_view: Counter = field(default_factory=Counter)  # (role, view) -> reads


def available(conn: psycopg.Connection) -> bool:
    preload = conn.execute("show shared_preload_libraries").fetchone()[0]
    conn.commit()
    return "pg_stat_statements" in preload


def collect(conn: psycopg.Connection, run_id: str | None = None) -> Collected:
    if not available(conn):
        raise NdcError("consumer reads are not collected: pg_stat_statements is not in shared_preload_libraries "
                       "(ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements', then restart PostgreSQL)")
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
    """Statements agency roles ran since the last collection, per role and view, into ``consumer_reads``."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(727006)")
        conn.execute("create extension if not exists pg_stat_statements")
        rows = conn.execute(
            "select s.userid, s.queryid, s.query, s.calls, r.rolname, g.rolname"
            " from pg_stat_statements s join pg_roles r on r.oid = s.userid"
            " join pg_auth_members m on m.member = s.userid join pg_roles g on g.oid = m.roleid"
            " where s.dbid = (select oid from pg_database where datname = current_database())"
            " and g.rolname like 'ndc\\_agency\\_%'").fetchall()
        known = {(u, q): c for u, q, c in conn.execute("select userid, queryid, calls from ndc_meta.read_counters")}
        for userid, queryid, query, calls, role, group in rows:
            before = known.get((userid, queryid), 0)
            new = calls - before if calls >= before else calls  # statistics were reset
            conn.execute("insert into ndc_meta.read_counters (userid, queryid, calls) values (%s, %s, %s)"
                         " on conflict (userid, queryid) do update set calls = excluded.calls",
                         (userid, queryid, calls))
            if new <= 0:
                continue
            agency = group.removeprefix("ndc_agency_")
            views = {f"{schema}.{view}" for schema, view in _VIEW.findall(query) if schema == f"agency_{agency}"}
            if not views:
                continue
            result.statements += 1
            for view in views:
                result.per_view[(role, view)] += new
                result.reads += new
                conn.execute("insert into ndc_meta.consumer_reads (day, role, agency, view, reads)"
                             " values (current_date, %s, %s, %s, %s) on conflict (day, role, view)"
                             " do update set reads = ndc_meta.consumer_reads.reads + excluded.reads",
                             (role, agency, view, new))
