"""The warehouse side of extract-and-load: every row is written once, into the storage it stays in.

**History is partitioned by load** (``<table>_history``, ``PARTITION BY LIST (_ndc_load)``). A load writes its
rows into the table's stage (``landing_<source>._<table>_stage``), which has exactly history's columns and is a
partition in waiting: its ``_ndc_load`` is fixed to the stage's own number (its OID) by a default and a CHECK.

**Stage** (one transaction per batch, so a batch is committed whole or not at all, and its row in
``ndc_meta.batches`` exists exactly when its data does): rows that passed the gate are COPied into the stage;
rows that failed go to ``quarantine.rows`` with their checks and whole payload. The stage has no index, so this
runs at COPY speed while the next batch is read and validated. Staged rows are not in history: a killed run
leaves its whole batches staged and the next run of the table merges them too.

**Merge** (one transaction, at the end of the run), in the stage itself:

1. identical rows staged twice (a rerun after a kill, a row the source lists twice) collapse to one; versions of
   one key from one extract window: the latest (by incremental column, then hash) is kept, the others go to
   quarantine as ``duplicate_key`` — whatever the batch boundaries were (looked for only when latest state's or
   history's key refuses the merge: see :func:`merge_staged`);
2. a key already merged from another run of the same window with another version: the source held two versions
   at once; the older goes to quarantine as ``duplicate_key`` (moved out of history if it had been loaded);
3. versions history already holds are dropped from the stage (a rerun of a merged interval adds nothing);
4. latest state (``<table>``, one row per key, with the source's tombstone) takes the new versions whose
   incremental value is newer: an upsert of the changed keys only (a first load fills it and builds its key);
5. the stage **becomes** history: renamed to ``_<table>_l<number>`` and attached as that load's partition (its
   key index is built once, not maintained row by row), and a new empty stage is made. A small load (under
   ``BULK_ROWS`` new versions) is appended to the partition of small loads (``_<table>_l0``) instead, so the
   number of partitions grows with large loads only.

Quarantine is keyed by (dataset, row hash) and history by (key, row hash, load) — a version is never in two loads
(step 3) — so re-running a window changes nothing. A run holds its dataset's advisory lock, so runs of one table
never interleave.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl
import psycopg
from psycopg import sql

from ndc.contracts import Contract
from ndc.contracts.validation import GateResult, reject_null_keys
from ndc.extract.connectors.base import FileRef
from ndc.extract.drift import LANDING_TYPES, family_of
from ndc.identifiers import column_list, ident
from ndc.warehouse import database
from ndc.warehouse.database import run_ddl

log = logging.getLogger(__name__)

_META_COLUMNS = ("_ndc_row_hash", "_ndc_batch_id", "_ndc_run_id", "_ndc_loaded_at")
_DELETE_COLUMNS = ("_ndc_deleted_at", "_ndc_deleted_by")
MERGE_WORK_MEM = "256MB"
BULK_ROWS = 10_000  # a load of this many new versions becomes its own history partition; a first load of latest
                    # state this large builds its primary key after inserting
LOAD_COLUMN = "_ndc_load"  # history's partition key: the number of the load (its stage's OID); 0 for small loads
SMALL_LOADS = 0
DUPLICATE_KEY = "duplicate_key"
PERSONAL_DATA_ROLE = "ndc_personal_data"  # made by the platform's schema (ndc.warehouse.schema)


@dataclass(frozen=True)
class LandingTarget:
    dataset: str
    schema: str
    table: str
    primary_key: tuple[str, ...]
    incremental_column: str
    contract: Contract
    tombstone_column: str | None = None

    @property
    def history(self) -> str:
        return f"{self.table}_history"

    @property
    def stage(self) -> str:
        return f"_{self.table}_stage"

    def partition(self, load: int) -> str:
        """History's partition holding load ``load`` (0: the small loads)."""
        return f"_{self.table}_l{load}"

    @property
    def columns(self) -> list[str]:
        return list(self.contract.columns)


@dataclass(frozen=True)
class StagedByRun:
    """What the extract knows of the rows it staged: how many batches and the newest incremental value. It holds
    for the stage only when the stage holds exactly those batches (an earlier attempt of the same run, killed, may
    have left its own)."""
    batches: int
    loaded_through: datetime | None


@dataclass
class BatchStats:
    rows_in: int = 0
    rows_staged: int = 0
    rows_rejected: int = 0
    rows_repaired: int = 0
    failed_by_check: Counter = field(default_factory=Counter)  # rejected rows per check (a row may fail several)
    staged_through: datetime | None = None    # the newest incremental value staged
    batches_staged: int = 0

    def add(self, other: BatchStats) -> None:
        for name in ("rows_in", "rows_staged", "rows_rejected", "rows_repaired", "batches_staged"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failed_by_check.update(other.failed_by_check)
        if other.staged_through is not None:
            self.staged_through = max(other.staged_through, self.staged_through or other.staged_through)

    def staged_by_run(self) -> StagedByRun:
        return StagedByRun(batches=self.batches_staged, loaded_through=self.staged_through)


@dataclass
class MergeStats:
    rows_merged: int = 0            # staged rows that are now in landing (new or already-known versions)
    rows_new_versions: int = 0
    rows_duplicates: int = 0        # staged versions that lost to a newer one of the same key and window
    rows_superseded_in_landing: int = 0
    batches: int = 0
    loaded_through: datetime | None = None
    partition: str | None = None    # the history partition the new versions went to
    seconds: dict[str, float] = field(default_factory=dict)  # per step, for the benchmark and the ledger


@dataclass
class RunStats(BatchStats):
    batches: int = 0
    new_columns: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    merge: MergeStats = field(default_factory=MergeStats)

    @property
    def loaded(self) -> int:
        """Rows that ended in landing (a version moved out as a duplicate by this run is not counted)."""
        return self.merge.rows_merged - self.merge.rows_superseded_in_landing

    @property
    def quarantined(self) -> int:
        return self.rows_rejected + self.merge.rows_duplicates + self.merge.rows_superseded_in_landing

    @property
    def loaded_through(self) -> datetime | None:
        return self.merge.loaded_through


def _typed_columns(target: LandingTarget, keyed: bool = False) -> sql.Composed:
    """Column definitions; with ``keyed``, text key columns sort bytewise (``COLLATE "C"``): their btrees are
    built and probed several times faster than under a linguistic collation, and keys need no linguistic
    order (consumers sort in their own collation)."""
    def definition(name: str, dtype) -> sql.Composed:
        landing_type = LANDING_TYPES[family_of(dtype)]
        collate = ' collate "C"' if keyed and landing_type == "text" and name in target.primary_key else ""
        return sql.SQL("{} {}").format(ident(name), sql.SQL(landing_type + collate))

    return sql.SQL(", ").join(definition(name, dtype) for name, dtype in target.contract.columns.items())


_META = ('_ndc_row_hash text collate "C" not null, _ndc_batch_id uuid not null, _ndc_run_id text not null,'
         " _ndc_loaded_at timestamptz not null")


def ensure_landing(conn: psycopg.Connection, target: LandingTarget) -> None:
    """Latest state, history (partitioned by load, with its partition of small loads) and the stage; a plain
    history table of an earlier release is made the small loads' partition, its old stage is carried over."""
    pk = column_list(list(target.primary_key))
    run_ddl(conn, sql.SQL(
        "create schema if not exists {schema};"
        "create table if not exists {latest} ({cols}, {meta}, primary key ({pk}));"
        # Deleted at the source: by a tombstone row, or found missing by the full compare. Kept, never dropped.
        "alter table {latest} add column if not exists _ndc_deleted_at timestamptz,"
        " add column if not exists _ndc_deleted_by text;"
    ).format(schema=ident(target.schema), latest=ident(target.schema, target.table),
             cols=_typed_columns(target, keyed=True), meta=sql.SQL(_META), pk=pk))
    if _relkind(conn, target.schema, target.history) != "p":
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(%s)", (database.DDL_LOCK,))
            _ensure_history(conn, target)
    if not _has_column(conn, target.schema, target.stage, LOAD_COLUMN):
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(%s)", (database.DDL_LOCK,))
            conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (target.dataset,))
            if not _has_column(conn, target.schema, target.stage, LOAD_COLUMN):
                _ensure_stage(conn, target)
    _add_new_contract_columns(conn, target)


def _relkind(conn: psycopg.Connection, schema: str, table: str) -> str | None:
    with conn.transaction():
        found = conn.execute("select c.relkind from pg_class c join pg_namespace n on n.oid = c.relnamespace"
                             " where n.nspname = %s and c.relname = %s", (schema, table)).fetchone()
    return found[0] if found else None


def _has_column(conn: psycopg.Connection, schema: str, table: str, column: str) -> bool:
    with conn.transaction():
        return conn.execute("select 1 from information_schema.columns where table_schema = %s and table_name = %s"
                            " and column_name = %s", (schema, table, column)).fetchone() is not None


def _ensure_history(conn: psycopg.Connection, target: LandingTarget) -> None:
    """(In the caller's transaction, under the DDL lock.)"""
    history, small = ident(target.schema, target.history), ident(target.schema, target.partition(SMALL_LOADS))
    kind = _relkind(conn, target.schema, target.history)
    if kind == "p":
        return
    key = column_list([*target.primary_key, "_ndc_row_hash", LOAD_COLUMN])
    if kind == "r":  # an earlier release's plain history: every version in it becomes a small load's
        log.warning("%s: partitioning %s by load (once; its rows stay where they are)", target.dataset,
                    history.as_string(conn))
        old_key = conn.execute("select conname from pg_constraint where conrelid = %s::regclass and contype = 'p'",
                               (history.as_string(conn),)).fetchone()
        conn.execute(sql.SQL("alter table {} rename to {}").format(history, ident(target.partition(SMALL_LOADS))))
        if old_key:
            conn.execute(sql.SQL("alter table {} drop constraint {}").format(small, ident(old_key[0])))
        conn.execute(sql.SQL("alter table {small} add column {load} bigint not null default 0,"
                             " add check ({load} = 0);"
                             "create table {history} (like {small}) partition by list ({load});"
                             "alter table {history} alter column {load} drop default;"
                             "alter table {history} add primary key ({key});"
                             "alter table {history} attach partition {small} for values in (0)").format(
            small=small, history=history, load=ident(LOAD_COLUMN), key=key))
    else:
        conn.execute(sql.SQL(
            "create table {history} ({cols}, {meta}, {load} bigint not null, primary key ({key}))"
            " partition by list ({load});"
            "create table {small} partition of {history} for values in (0)").format(
            history=history, small=small, cols=_typed_columns(target, keyed=True), meta=sql.SQL(_META),
            load=ident(LOAD_COLUMN), key=key))
    # Every version ever loaded is personal data: only ndc_personal_data (created by ensure_meta) reads it.
    conn.execute(sql.SQL(f"revoke all on {{history}} from public; grant usage on schema {{schema}} to"
                         f" {PERSONAL_DATA_ROLE}; grant select on {{history}} to {PERSONAL_DATA_ROLE}").format(
        history=history, schema=ident(target.schema)))


def _ensure_stage(conn: psycopg.Connection, target: LandingTarget) -> None:
    """A stage with history's columns (under the DDL and dataset locks, in the caller's transaction); an earlier
    release's stage (contract columns, hash and batch id) is carried over, its rows with their batches' runs."""
    stage = ident(target.schema, target.stage)
    earlier = ident(target.schema, f"{target.stage}_earlier")
    had = _relkind(conn, target.schema, target.stage) is not None
    if had:
        conn.execute(sql.SQL("alter table {} rename to {}").format(stage, ident(f"{target.stage}_earlier")))
    new_stage(conn, target)
    if had:
        cols = column_list(target.columns)
        moved = conn.execute(sql.SQL(
            "insert into {stage} ({cols}, _ndc_row_hash, _ndc_batch_id, _ndc_run_id, _ndc_loaded_at)"
            " select {cols}, e._ndc_row_hash, e._ndc_batch_id, b.run_id, b.started_at from {earlier} e"
            " join ndc_meta.batches b on b.batch_id = e._ndc_batch_id; drop table {earlier}").format(
            stage=stage, cols=cols, earlier=earlier)).rowcount
        log.warning("%s: the stage now has history's columns; %d staged rows carried over", target.dataset, moved)


def new_stage(conn: psycopg.Connection, target: LandingTarget) -> int:
    """Create the (absent) stage: history's columns, no index; its rows belong to load number = its OID (a default
    and a CHECK, so attaching it needs no scan). The batch and run come from transaction settings. Returns the
    load number."""
    stage = ident(target.schema, target.stage)
    conn.execute(sql.SQL("create table {} (like {})").format(stage, ident(target.schema, target.history)))
    load = conn.execute("select %s::regclass::oid::bigint", (stage.as_string(conn),)).fetchone()[0]
    conn.execute(sql.SQL(
        "alter table {stage} alter _ndc_batch_id set default current_setting('ndc.batch_id')::uuid,"
        " alter _ndc_run_id set default current_setting('ndc.run_id'), alter _ndc_loaded_at set default now(),"
        " alter {load} set default {n}, add constraint {check} check ({load} = {n})").format(
        stage=stage, load=ident(LOAD_COLUMN), n=sql.Literal(load), check=ident(f"{target.stage}_load")))
    return load


def _add_new_contract_columns(conn: psycopg.Connection, target: LandingTarget) -> None:
    """A contract's minor version may add a (nullable) column: landing, history and stage gain it, null for the rows
    loaded before. Only when one is missing, so the usual run takes no lock for it."""
    with conn.transaction():
        present = conn.execute(
            "select table_name, array_agg(column_name::text) from information_schema.columns where table_schema = %s"
            " and table_name = any(%s) group by table_name",
            (target.schema, [target.table, target.history, target.stage])).fetchall()
    missing = {table: [c for c in target.columns if c not in set(columns)] for table, columns in present}
    statements = [sql.SQL("alter table {} {}").format(ident(target.schema, table), sql.SQL(", ").join(
        sql.SQL("add column if not exists {} {}").format(
            ident(c), sql.SQL(LANDING_TYPES[family_of(target.contract.columns[c])])) for c in columns))
        for table, columns in missing.items() if columns]
    if statements:
        log.warning("%s: contract %s v%s adds columns to landing: %s", target.dataset, target.contract.name,
                    target.contract.version, {t: c for t, c in missing.items() if c})
        run_ddl(conn, sql.SQL(";").join(statements))


def prepare_session(conn: psycopg.Connection, target: LandingTarget) -> None:
    """A session temp table for one batch's rejected rows; emptied at every commit."""
    conn.execute("drop table if exists _ndc_rej")
    conn.execute(sql.SQL("create temp table _ndc_rej ({}, _checks text[], _reasons jsonb, _ndc_row_hash text)"
                         " on commit delete rows").format(_typed_columns(target)))
    conn.commit()


def lock_dataset(conn: psycopg.Connection, target: LandingTarget) -> None:
    """Hold the dataset's lock for this session (runs of one table never interleave; released on disconnect)."""
    conn.execute("select pg_advisory_lock(hashtext(%s))", (target.dataset,))
    conn.commit()


# The key space of the warehouse's load slots (pg_advisory_lock(LOAD_SLOTS, slot)); distinct from hashtext() keys.
LOAD_SLOTS = 727019


def take_load_slot(conn: psycopg.Connection, max_loads: int, dataset: str, poll_seconds: float = 1.0,
                   say_every: float = 60.0) -> int:
    """The warehouse-side cap on concurrent loads: hold one of ``max_loads`` session advisory locks for this
    connection (released when the load's session ends, also when its worker dies), waiting, and saying so in the
    log, while every slot is taken. Airflow's pools cap connections per source; this caps the warehouse, whatever
    the number of sources, pools and workers. Returns the slot."""
    waited, said = time.monotonic(), time.monotonic()
    while True:
        for slot in range(max_loads):
            if conn.execute("select pg_try_advisory_lock(%s, %s)", (LOAD_SLOTS, slot)).fetchone()[0]:
                conn.commit()
                if time.monotonic() - waited > poll_seconds:
                    log.info("%s: load slot %s of %s after %.0f s", dataset, slot + 1, max_loads,
                             time.monotonic() - waited)
                return slot
        conn.commit()
        if time.monotonic() - said >= say_every:
            said = time.monotonic()
            log.info("%s: waiting for a warehouse load slot (all %s taken, NDC_WAREHOUSE_MAX_LOADS) for %.0f s",
                     dataset, max_loads, said - waited)
        time.sleep(poll_seconds)


def _copy_frame(conn: psycopg.Connection, table: sql.Composable, columns: list[str], frame: pl.DataFrame) -> None:
    if frame.is_empty():
        return
    buffer = io.BytesIO()
    frame.select(columns).write_csv(buffer, include_header=False)
    stmt = sql.SQL("copy {} ({}) from stdin (format csv)").format(table, column_list(columns))
    with conn.cursor().copy(stmt) as copy:
        copy.write(buffer.getbuffer())


def _quarantine(conn: psycopg.Connection, target: LandingTarget, params: dict, relation: sql.Composable,
                checks: str, reasons: str, row_hash: sql.Composable) -> int:
    payload = sql.SQL(", ").join(sql.SQL("{}, q.{}").format(sql.Literal(c), ident(c)) for c in target.columns)
    key = sql.SQL(", ").join(sql.SQL("q.{}::text").format(ident(c)) for c in target.primary_key)
    return conn.execute(sql.SQL(
        "insert into quarantine.rows (dataset, record_key, checks, reasons, payload, row_hash,"
        " contract_name, contract_version, batch_id, run_id)"
        " select %(dataset)s, concat_ws('|', {key}), {checks}, {reasons}, jsonb_build_object({payload}),"
        " {row_hash}, %(cname)s, %(cversion)s, {batch}, %(run)s from {relation} q"
        " on conflict (dataset, row_hash) do nothing"
    ).format(key=key, checks=sql.SQL(checks), reasons=sql.SQL(reasons), payload=payload, row_hash=row_hash,
             relation=relation, batch=sql.SQL(params.get("batch_expr", "%(batch)s"))), params).rowcount


def _params(target: LandingTarget, run_id: str, **extra) -> dict:
    return {"dataset": target.dataset, "run": run_id, "cname": target.contract.name,
            "cversion": target.contract.version, **extra}


def stage_batch(conn: psycopg.Connection, target: LandingTarget, gated: GateResult, *, run_id: str,
                window: tuple[datetime, datetime], batch_no: int, started_at: datetime,
                completes: list[FileRef] = ()) -> BatchStats:
    """Stage one gated batch in one transaction; returns its accounting. ``completes``: the dropped files whose
    last rows this batch holds; they are recorded as loaded in the same transaction."""
    passed, rejected = reject_null_keys(gated, list(target.primary_key))
    stats = BatchStats(rows_in=passed.height + rejected.height, rows_staged=passed.height,
                       rows_rejected=rejected.height, rows_repaired=gated.repaired, batches_staged=1)
    if rejected.height:
        stats.failed_by_check.update(rejected.get_column("_checks").explode().drop_nulls().to_list())
    if passed.height:
        stats.staged_through = passed.get_column(target.incremental_column).max()
    batch_id = uuid.uuid4()
    with conn.transaction():
        conn.execute("select set_config('ndc.batch_id', %s, true), set_config('ndc.run_id', %s, true)",
                     (str(batch_id), run_id))
        _copy_frame(conn, ident(target.schema, target.stage), [*target.columns, "_ndc_row_hash"], passed)
        if rejected.height:
            _copy_frame(conn, ident("_ndc_rej"), [*target.columns, "_checks", "_reasons", "_ndc_row_hash"],
                        _array_literal(_without_nul(rejected)))
            _quarantine(conn, target, _params(target, run_id, batch=batch_id), ident("_ndc_rej"), "q._checks",
                        "q._reasons", sql.SQL("q._ndc_row_hash"))
        conn.execute(
            "insert into ndc_meta.batches (batch_id, dataset, run_id, window_start, window_end, batch_no, rows_in,"
            " rows_staged, rows_quarantined, rows_repaired, started_at) values (%s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s, %s)",
            (batch_id, target.dataset, run_id, window[0], window[1], batch_no, stats.rows_in, stats.rows_staged,
             stats.rows_rejected, stats.rows_repaired, started_at))
        for done in completes:
            conn.execute(
                "insert into ndc_meta.files (dataset, sha256, path, bytes, encoding, batch_id, run_id)"
                " values (%s, %s, %s, %s, %s, %s, %s) on conflict (dataset, sha256) do nothing",
                (target.dataset, done.sha256, done.path, done.size, done.encoding, batch_id, run_id))
    return stats


class _Merge:
    """The SQL of the merge transaction, over the stage (``i``); ``q`` holds the statement parameters."""

    def __init__(self, conn: psycopg.Connection, target: LandingTarget, run_id: str) -> None:
        self.conn, self.t = conn, target
        self.q = _params(target, run_id, batch_expr="q._ndc_batch_id")
        self.ids = {"latest": ident(target.schema, target.table), "history": ident(target.schema, target.history),
                    "stage": ident(target.schema, target.stage), "inc": ident(target.incremental_column),
                    "pk": column_list(list(target.primary_key)), "cols": column_list(target.columns),
                    "pk_i": self._key("i")}

    def execute(self, statement: sql.Composable) -> int:
        return self.conn.execute(statement, self.q).rowcount

    def exists(self, relation: str) -> bool:
        return self.conn.execute(sql.SQL("select exists (select 1 from {})").format(self.ids[relation])
                                 ).fetchone()[0]

    def quarantine(self, relation: sql.Composable, reason: str) -> int:
        return _quarantine(self.conn, self.t, self.q, relation, "array['duplicate_key']",
                           f"jsonb_build_object('duplicate_key', '{reason}')", sql.SQL("q._ndc_row_hash"))

    def drop_repeated(self) -> tuple[int, int]:
        """Keys staged more than once. Identical copies (a batch staged again after a killed run, a source row
        listed twice, the same version under two windows) collapse to one; of one key's versions from one window
        the newest stays and the others go to quarantine. Returns (rows removed, versions quarantined)."""
        # Find the repeated keys with a hash aggregate first; only those need ranking (usually a handful).
        repeated = self.execute(sql.SQL(
            "create temp table _ndc_repeated on commit drop as select {pk} from {stage}"
            " group by {pk} having count(*) > 1").format(**self.ids))
        if not repeated:
            return 0, 0
        extra = self.execute(sql.SQL(
            "create temp table _ndc_losers on commit drop as select * from ("
            " select i.*, i.ctid as _ctid, first_value(i._ndc_row_hash) over w as _winner,"
            " row_number() over w as _rank,"
            " row_number() over (partition by {pk_i}, i._ndc_row_hash order by i.ctid) as _copy"
            " from {stage} i join _ndc_repeated d on {match}"
            " join ndc_meta.batches b on b.batch_id = i._ndc_batch_id"
            " window w as (partition by {pk_i}, b.window_start, b.window_end"
            " order by i.{inc} desc, i._ndc_row_hash desc, i.ctid)) r"
            " where _rank > 1 or _copy > 1").format(match=_pk_match("i", "d", self.t), **self.ids))
        if not extra:
            return 0, 0
        self.execute(sql.SQL("delete from {stage} where ctid in (select _ctid from _ndc_losers)").format(**self.ids))
        losers = extra - self.execute(sql.SQL("delete from _ndc_losers where _rank = 1 or _ndc_row_hash = _winner"))
        if losers:
            self.quarantine(ident("_ndc_losers"), "a newer version of this key is in the same extract window")
        return extra, losers

    def drop_known_duplicates(self) -> int:
        """Versions already judged the losing version of their key stay in quarantine when read again."""
        if not self.conn.execute("select exists (select 1 from quarantine.rows where dataset = %s"
                                 " and 'duplicate_key' = any(checks))", (self.t.dataset,)).fetchone()[0]:
            return 0
        return self.execute(sql.SQL(
            "delete from {stage} i using quarantine.rows q where q.dataset = %(dataset)s"
            " and q.row_hash = i._ndc_row_hash and 'duplicate_key' = any(q.checks)").format(**self.ids))

    def resolve_earlier_runs(self) -> tuple[int, int]:
        """Versions of a key merged by another run of the same window: the newer wins. (The window of the
        landed version is looked up per key, after the row hashes differ: joined to the batches, every staged row
        met every batch of its window before the key lookup, and a rerun of an interval of 60 batches took 30 s.)"""
        found = self.execute(sql.SQL(
            "create temp table _ndc_conf on commit drop as"
            " select {pk_i}, i.ctid as _in_ctid, l._ndc_row_hash as old_hash,"
            " (i.{inc}, i._ndc_row_hash) > (l.{inc}, l._ndc_row_hash) as new_wins"
            " from {stage} i join ndc_meta.batches bi on bi.batch_id = i._ndc_batch_id join {latest} l on {match}"
            " where l._ndc_row_hash <> i._ndc_row_hash and (select (b.window_start, b.window_end)"
            " from ndc_meta.batches b where b.batch_id = l._ndc_batch_id and b.dataset = %(dataset)s)"
            " = (bi.window_start, bi.window_end)"
        ).format(match=_pk_match("i", "l", self.t), **self.ids))
        if not found:
            return 0, 0
        match_hc = _pk_match("h", "c", self.t)
        reason = "a newer version of this key is in the same extract window"
        self.quarantine(sql.SQL("(select h.* from {history} h join _ndc_conf c on {m}"
                                " and h._ndc_row_hash = c.old_hash where c.new_wins)").format(
            history=self.ids["history"], m=match_hc), reason)
        moved = self.execute(sql.SQL(
            "delete from {history} h using _ndc_conf c where {m} and h._ndc_row_hash = c.old_hash and c.new_wins"
        ).format(history=self.ids["history"], m=match_hc))
        self.quarantine(sql.SQL("(select i.* from {stage} i join _ndc_conf c on i.ctid = c._in_ctid"
                                " where not c.new_wins)").format(**self.ids), reason)
        lost = self.execute(sql.SQL(
            "delete from {stage} where ctid in (select _in_ctid from _ndc_conf where not new_wins)"
        ).format(**self.ids))
        return moved, lost

    def drop_known_versions(self) -> int:
        """Versions history already holds (a rerun of a merged interval): nothing to add. History's key index
        (key, hash, load) answers each probe."""
        return self.execute(sql.SQL(
            "delete from {stage} i where exists (select 1 from {history} h where {match}"
            " and h._ndc_row_hash = i._ndc_row_hash)").format(match=_pk_match("h", "i", self.t), **self.ids))

    def _key(self, alias: str) -> sql.Composed:
        return sql.SQL(", ").join(sql.SQL("{}.{}").format(ident(alias), ident(c)) for c in self.t.primary_key)

    def _bulk(self, table: str, rows: int) -> _BulkLoad | None:
        """A first load into an empty table inserts without its primary key and builds it afterwards (several
        times faster than maintaining a btree row by row); the build still proves the keys unique."""
        if rows < BULK_ROWS or self.conn.execute(
                sql.SQL("select exists (select 1 from {})").format(ident(self.t.schema, table))).fetchone()[0]:
            return None
        return _BulkLoad(self.conn, self.t.schema, table)

    def upsert_latest(self, rows: int, windows: int) -> None:
        """The new versions into latest state: each key takes its newest version (by incremental value, then
        hash); an older version never replaces a newer one."""
        updates = sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(ident(c))
                                     for c in [*self.t.columns, *_META_COLUMNS, *_DELETE_COLUMNS])
        if self.t.tombstone_column:
            deleted = sql.SQL("{0}, case when {0} is not null then 'tombstone' end").format(
                ident(self.t.tombstone_column))
        else:
            deleted = sql.SQL("null::timestamptz, null::text")
        # One version per key: after the window dedupe that holds unless rows of several windows were staged
        # (a killed run's leftovers, a replay); then the newest per key.
        relation = sql.SQL("(select distinct on ({pk}) * from {stage} order by {pk}, {inc} desc,"
                           " _ndc_row_hash desc) i").format(**self.ids) if windows > 1 else \
            sql.SQL("{stage} i").format(**self.ids)
        insert = sql.SQL(
            "insert into {latest} as l ({cols}, _ndc_row_hash, _ndc_batch_id, _ndc_run_id, _ndc_loaded_at,"
            " _ndc_deleted_at, _ndc_deleted_by)"
            " select {cols}, _ndc_row_hash, _ndc_batch_id, %(run)s, now(), {deleted} from {relation}"
        ).format(deleted=deleted, relation=relation, **self.ids)
        bulk = self._bulk(self.t.table, rows)
        if bulk:
            with bulk:
                self.execute(insert)
        else:
            self.execute(insert + sql.SQL(
                " on conflict ({pk}) do update set {updates}"
                " where (excluded.{inc}, excluded._ndc_row_hash) > (l.{inc}, l._ndc_row_hash)"
            ).format(updates=updates, **self.ids))

    def publish_history(self, rows: int) -> str | None:
        """The stage's rows become history: a large load's stage is attached as its own partition (its key index
        built once) and a new stage made; a small load is appended to the small loads' partition. Returns the
        partition written."""
        t = self.t
        if not rows:
            self.execute(sql.SQL("truncate {stage}").format(**self.ids))
            return None
        if rows < BULK_ROWS:
            self.execute(sql.SQL(
                "insert into {history} ({cols}, _ndc_row_hash, _ndc_batch_id, _ndc_run_id, _ndc_loaded_at, {load})"
                " select {cols}, _ndc_row_hash, _ndc_batch_id, _ndc_run_id, _ndc_loaded_at, {small} from {stage};"
                "truncate {stage}").format(load=ident(LOAD_COLUMN), small=sql.Literal(SMALL_LOADS), **self.ids))
            return t.partition(SMALL_LOADS)
        load = self.conn.execute("select %s::regclass::oid::bigint", (self.ids["stage"].as_string(self.conn),)
                                 ).fetchone()[0]
        partition = t.partition(load)
        self.execute(sql.SQL("alter table {stage} rename to {partition};"
                             "alter table {history} attach partition {qualified} for values in ({load})").format(
            partition=ident(partition), qualified=ident(t.schema, partition), load=sql.Literal(load), **self.ids))
        new_stage(self.conn, t)
        return partition


def discard_staged(conn: psycopg.Connection, target: LandingTarget, run_id: str) -> int:
    """Empty the stage of one run's batches (a blocked run: nothing of it is merged). Its rows stay in the source
    and are read again by the next run of the window — dropped files too: their load records go, so the next run
    reads them again; its batches are marked so no merge waits for them. Returns the rows discarded."""
    with conn.transaction():
        discarded = conn.execute(sql.SQL(
            "delete from {stage} s using ndc_meta.batches b where b.batch_id = s._ndc_batch_id and b.run_id = %s"
        ).format(stage=ident(target.schema, target.stage)), (run_id,)).rowcount
        conn.execute("delete from ndc_meta.files where dataset = %s and run_id = %s", (target.dataset, run_id))
        conn.execute("update ndc_meta.batches set merged_at = clock_timestamp(), merge_run_id = %s"
                     " where dataset = %s and run_id = %s and merged_at is null",
                     (f"{run_id}:blocked", target.dataset, run_id))
    return discarded


def previous_load(conn: psycopg.Connection, target: LandingTarget, interval: tuple[datetime, datetime],
                  full_refresh: bool) -> tuple[int, str] | None:
    """Rows in and run id of the last successful load of ``target`` comparable with this one: a full refresh
    with the last full refresh, an interval with the last interval of the same length."""
    with conn.transaction():
        return conn.execute(
            "select rows_in, run_id from ndc_meta.ledger where kind = 'extract' and outcome = 'success'"
            " and target = %s and coalesce((details->>'full_refresh')::boolean, false) = %s"
            " and (%s or interval_end - interval_start = %s::timestamptz - %s::timestamptz)"
            " order by ledger_id desc limit 1",
            (f"{target.schema}.{target.table}", full_refresh, full_refresh, interval[1], interval[0])).fetchone()


def merge_staged(conn: psycopg.Connection, target: LandingTarget, run_id: str,
                 staged_by_run: StagedByRun | None = None) -> MergeStats:
    """Merge everything staged for ``target`` into history and latest state, in one transaction.

    Optimistic about repeated keys when the stage holds one extract window: the merge first runs without looking
    for them (a hash aggregate over the whole stage), since latest state's key refuses a key twice — the key build
    of a first load, or the upsert ("cannot affect row a second time") — and history's key refuses the same version
    twice. If either does, the attempt is rolled back to its savepoint and the merge runs again with the repeated
    keys resolved. Several windows (a killed run's leftovers, a replay) always resolve them first."""
    stats = MergeStats()
    clock = _Clock(stats.seconds)
    with conn.transaction():
        # Sorts and hashes of a whole run, and the key builds of a large load, stay in memory.
        conn.execute("select set_config('work_mem', %s, true), set_config('maintenance_work_mem', %s, true)",
                     (MERGE_WORK_MEM, MERGE_WORK_MEM))
        merge = _Merge(conn, target, run_id)
        with clock("collect"):
            staged, windows, batches = conn.execute(
                "select coalesce(sum(rows_staged), 0), count(distinct (window_start, window_end)), count(*)"
                " from ndc_meta.batches where dataset = %s and merged_at is null", (target.dataset,)).fetchone()
        if staged:
            only_this_run = staged_by_run is not None and staged_by_run.batches == batches
            through = staged_by_run.loaded_through if only_this_run else None
            try:
                with conn.transaction():
                    _merge_steps(merge, stats, clock, staged, windows, through, resolve_repeated=windows > 1)
            except (psycopg.errors.UniqueViolation, psycopg.errors.CardinalityViolation) as repeated:
                if windows > 1:
                    raise
                log.info("%s: the stage holds a key more than once (%s); merging again with them resolved",
                         target.dataset, str(repeated).splitlines()[0])
                stats = MergeStats(seconds=stats.seconds)
                clock = _Clock(stats.seconds)
                _merge_steps(merge, stats, clock, staged, windows, through, resolve_repeated=True)
        stats.batches = conn.execute(
            "update ndc_meta.batches set merged_at = clock_timestamp(), merge_run_id = %s"
            " where dataset = %s and merged_at is null", (run_id, target.dataset)).rowcount
    return stats


def _merge_steps(merge: _Merge, stats: MergeStats, clock: _Clock, staged: int, windows: int,
                 through: datetime | None, *, resolve_repeated: bool) -> None:
    with clock("dedupe"):
        removed = 0
        if resolve_repeated:
            removed, stats.rows_duplicates = merge.drop_repeated()
        known_duplicates = merge.drop_known_duplicates()
        stats.rows_duplicates += known_duplicates
        lost = 0
        if merge.exists("latest"):
            stats.rows_superseded_in_landing, lost = merge.resolve_earlier_runs()
            stats.rows_duplicates += lost
        stats.rows_merged = staged - removed - known_duplicates - lost
        stats.loaded_through = through or merge.conn.execute(
            sql.SQL("select max({inc}) from {stage}").format(**merge.ids)).fetchone()[0]
        known = merge.drop_known_versions() if merge.exists("history") else 0
        stats.rows_new_versions = stats.rows_merged - known
    with clock("latest"):
        merge.upsert_latest(stats.rows_new_versions, windows)
    with clock("history"):
        stats.partition = merge.publish_history(stats.rows_new_versions)


class _BulkLoad:
    """Drop an empty table's primary key for the duration of a bulk insert, then build it (same name)."""

    def __init__(self, conn: psycopg.Connection, schema: str, table: str) -> None:
        self.conn, self.table = conn, ident(schema, table)
        self.name, self.columns = conn.execute(
            "select c.conname, array_agg(a.attname order by k.ord) from pg_constraint c"
            " cross join unnest(c.conkey) with ordinality k(attnum, ord)"
            " join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum"
            " where c.conrelid = %s::regclass and c.contype = 'p' group by c.conname",
            (self.table.as_string(conn),)).fetchone()

    def __enter__(self) -> _BulkLoad:
        self.conn.execute(sql.SQL("alter table {} drop constraint {}").format(self.table, ident(self.name)))
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.conn.execute(sql.SQL("alter table {} add constraint {} primary key ({})").format(
                self.table, ident(self.name), column_list(list(self.columns))))


class _Clock:
    """Times named steps into a dict (seconds)."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into = into

    @contextmanager
    def __call__(self, name: str):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.into[name] = round(self.into.get(name, 0.0) + time.perf_counter() - began, 3)


def _pk_match(left: str, right: str, target: LandingTarget) -> sql.Composed:
    return sql.SQL(" and ").join(
        sql.SQL("{}.{} = {}.{}").format(ident(left), ident(c), ident(right), ident(c)) for c in target.primary_key)


def loaded_files(conn: psycopg.Connection, dataset: str) -> set[str]:
    """Content hashes of the files of ``dataset`` already loaded."""
    with conn.transaction():  # ends here, so that each batch's transaction commits on its own
        rows = conn.execute("select sha256 from ndc_meta.files where dataset = %s", (dataset,)).fetchall()
    return {row[0] for row in rows}


def _without_nul(rejected: pl.DataFrame) -> pl.DataFrame:
    """PostgreSQL text and jsonb cannot hold a NUL character: a rejected row keeps it as the six characters
    ``\\u0000`` in its payload (such a row always fails ``text_without_control_characters``; passed rows hold none)."""
    text = [c for c, dtype in rejected.schema.items() if dtype == pl.String]
    return rejected.with_columns(pl.col(c).str.replace_all("\x00", "\\u0000", literal=True) for c in text)


def _array_literal(rejected: pl.DataFrame) -> pl.DataFrame:
    """Check names as a PostgreSQL array literal, for COPY."""
    quoted = pl.col("_checks").list.eval(pl.format('"{}"', pl.element())).list.join(",")
    return rejected.with_columns(pl.concat_str(pl.lit("{"), quoted, pl.lit("}")).alias("_checks"))
