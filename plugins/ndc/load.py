"""The warehouse side of extract-and-load: landing tables, and one transaction per batch.

Per batch, in one transaction (so a batch is committed whole or not at all, and its row in
``ndc_meta.batches`` exists exactly when its data does):

1. rows that passed the gate are COPied into a session temp table; their version hash is ``md5(row::text)``;
2. keys duplicated inside the batch: the latest version (by incremental column, then hash) is kept, the others
   go to quarantine as ``duplicate_key``;
3. keys already loaded by an earlier batch of the same window (same source table, same extract window): the
   source held two versions at once; the older one goes to quarantine as ``duplicate_key`` (moved out of
   landing if it had been loaded), whatever the batch boundaries or earlier failed attempts were;
4. new versions are appended to ``<table>_history``; ``<table>`` keeps the latest version per key;
5. rows that failed the gate go to quarantine with their checks and whole payload.

Quarantine is keyed by (dataset, row hash) and history by (key, row hash), so re-running a window changes
nothing. Batches of one dataset are serialised by an advisory lock.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl
import psycopg
from psycopg import sql

from ndc import ledger
from ndc.connectors.base import FileRef
from ndc.contracts import Contract
from ndc.extract import LANDING_TYPES, family_of
from ndc.gate import GateResult
from ndc.identifiers import column_list, ident
from ndc.warehouse import run_ddl

log = logging.getLogger(__name__)

_META_COLUMNS = ("_ndc_row_hash", "_ndc_batch_id", "_ndc_run_id", "_ndc_loaded_at")
_DELETE_COLUMNS = ("_ndc_deleted_at", "_ndc_deleted_by")
PK_NOT_NULL = "primary_key_not_null"
DUPLICATE_KEY = "duplicate_key"


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
    def columns(self) -> list[str]:
        return list(self.contract.columns)


@dataclass
class BatchStats:
    rows_in: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rows_repaired: int = 0
    rows_new_versions: int = 0
    rows_superseded_in_landing: int = 0
    loaded_through: datetime | None = None

    def add(self, other: BatchStats) -> None:
        for name in ("rows_in", "rows_loaded", "rows_quarantined", "rows_repaired", "rows_new_versions",
                     "rows_superseded_in_landing"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.loaded_through and (not self.loaded_through or other.loaded_through > self.loaded_through):
            self.loaded_through = other.loaded_through


@dataclass
class RunStats(BatchStats):
    batches: int = 0
    new_columns: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def loaded(self) -> int:
        """Rows that ended in landing (a version moved out as a duplicate later in the run is not counted)."""
        return self.rows_loaded - self.rows_superseded_in_landing

    @property
    def quarantined(self) -> int:
        return self.rows_quarantined + self.rows_superseded_in_landing


def _typed_columns(target: LandingTarget) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{} {}").format(ident(name), sql.SQL(LANDING_TYPES[family_of(dtype)]))
        for name, dtype in target.contract.columns.items())


def ensure_landing(conn: psycopg.Connection, target: LandingTarget) -> None:
    meta = sql.SQL("_ndc_row_hash text not null, _ndc_batch_id uuid not null, _ndc_run_id text not null, "
                   "_ndc_loaded_at timestamptz not null")
    pk = column_list(list(target.primary_key))
    latest = ident(target.schema, target.table)
    run_ddl(conn, sql.SQL(
        "create schema if not exists {schema};"
        "create table if not exists {latest} ({cols}, {meta}, primary key ({pk}));"
        "create table if not exists {history} ({cols}, {meta}, primary key ({pk}, _ndc_row_hash));"
        # Deleted at the source: by a tombstone row, or found missing by the full compare. Kept, never dropped.
        "alter table {latest} add column if not exists _ndc_deleted_at timestamptz,"
        " add column if not exists _ndc_deleted_by text;"
    ).format(schema=ident(target.schema), latest=latest,
             history=ident(target.schema, target.history), cols=_typed_columns(target), meta=meta, pk=pk))


def prepare_session(conn: psycopg.Connection, target: LandingTarget) -> None:
    """Session temp tables that hold one batch; emptied at every commit."""
    cols = _typed_columns(target)
    conn.execute("drop table if exists _ndc_raw, _ndc_rej")
    conn.execute(sql.SQL("create temp table _ndc_raw ({}) on commit delete rows").format(cols))
    conn.execute(sql.SQL("create temp table _ndc_rej ({}, _checks text[], _reasons jsonb) on commit delete rows")
                 .format(cols))
    conn.commit()


def _copy_frame(conn: psycopg.Connection, table: str, columns: list[str], frame: pl.DataFrame) -> None:
    if frame.is_empty():
        return
    buffer = io.BytesIO()
    frame.write_csv(buffer, include_header=False)
    stmt = sql.SQL("copy {} ({}) from stdin (format csv)").format(ident(table), column_list(columns))
    with conn.cursor().copy(stmt) as copy:
        copy.write(buffer.getbuffer())


def _pk_match(left: str, right: str, target: LandingTarget) -> sql.Composed:
    return sql.SQL(" and ").join(
        sql.SQL("{}.{} = {}.{}").format(ident(left), ident(c), ident(right), ident(c)) for c in target.primary_key)


class _Batch:
    """The SQL of one batch's transaction; ``q`` holds the statement parameters."""

    def __init__(self, conn: psycopg.Connection, target: LandingTarget, batch_id: uuid.UUID, run_id: str,
                 window: tuple[datetime, datetime]) -> None:
        self.conn, self.t = conn, target
        self.q = {"dataset": target.dataset, "batch": batch_id, "run": run_id, "ws": window[0], "we": window[1],
                  "cname": target.contract.name, "cversion": target.contract.version}
        self.ids = {"latest": ident(target.schema, target.table), "history": ident(target.schema, target.history),
                    "inc": ident(target.incremental_column), "pk": column_list(list(target.primary_key)),
                    "cols": column_list(target.columns)}

    def execute(self, statement: sql.Composable) -> int:
        return self.conn.execute(statement, self.q).rowcount

    def quarantine(self, relation: str, checks: str, reasons: str, row_hash: str) -> None:
        payload = sql.SQL(", ").join(sql.SQL("{}, q.{}").format(sql.Literal(c), ident(c)) for c in self.t.columns)
        key = sql.SQL(", ").join(sql.SQL("q.{}::text").format(ident(c)) for c in self.t.primary_key)
        self.execute(sql.SQL(
            "insert into quarantine.rows (dataset, record_key, checks, reasons, payload, row_hash,"
            " contract_name, contract_version, batch_id, run_id)"
            " select %(dataset)s, concat_ws('|', {key}), {checks}, {reasons}, jsonb_build_object({payload}),"
            " {row_hash}, %(cname)s, %(cversion)s, %(batch)s, %(run)s from {relation} q"
            " on conflict (dataset, row_hash) do nothing"
        ).format(key=key, checks=sql.SQL(checks), reasons=sql.SQL(reasons), payload=payload,
                 row_hash=sql.SQL(row_hash), relation=sql.SQL(relation)))

    def hash_incoming(self) -> int:
        return self.execute(sql.SQL("create temp table _ndc_in on commit drop as"
                                    " select r.*, md5(r::text) as _ndc_row_hash from _ndc_raw r"))

    def drop_duplicates_in_batch(self) -> int:
        losers = self.execute(sql.SQL(
            "create temp table _ndc_losers on commit drop as select * from ("
            " select i.*, i.ctid as _ctid, row_number() over"
            " (partition by {pk} order by {inc} desc, _ndc_row_hash desc) as _rank from _ndc_in i) ranked"
            " where _rank > 1").format(**self.ids))
        self.quarantine("_ndc_losers", "array['duplicate_key']",
                        """jsonb_build_object('duplicate_key', 'a newer version of this key is in the same batch')""",
                        "q._ndc_row_hash")
        self.execute(sql.SQL("delete from _ndc_in where ctid in (select _ctid from _ndc_losers)"))
        return losers

    def drop_known_duplicates(self) -> int:
        return self.execute(sql.SQL(
            "delete from _ndc_in i using quarantine.rows q where q.dataset = %(dataset)s"
            " and q.row_hash = i._ndc_row_hash and 'duplicate_key' = any(q.checks)"))

    def resolve_window_duplicates(self) -> tuple[int, int]:
        """Versions of a key also loaded by another batch of this window: the newer wins."""
        pk_in = sql.SQL(", ").join(sql.SQL("i.{}").format(ident(c)) for c in self.t.primary_key)
        found = self.execute(sql.SQL(
            "create temp table _ndc_conf on commit drop as"
            " select {pk_in}, i.ctid as _in_ctid, l._ndc_row_hash as old_hash,"
            " (i.{inc}, i._ndc_row_hash) > (l.{inc}, l._ndc_row_hash) as new_wins"
            " from _ndc_in i join {latest} l on {match}"
            " join ndc_meta.batches b on b.batch_id = l._ndc_batch_id"
            " where l._ndc_row_hash <> i._ndc_row_hash and b.dataset = %(dataset)s"
            " and b.window_start = %(ws)s and b.window_end = %(we)s"
        ).format(pk_in=pk_in, match=_pk_match("i", "l", self.t), **self.ids))
        if not found:
            return 0, 0
        match_hc = _pk_match("h", "c", self.t)
        superseded_rel = sql.SQL("(select h.* from {history} h join _ndc_conf c on {m}"
                                 " and h._ndc_row_hash = c.old_hash where c.new_wins)").format(
            history=self.ids["history"], m=match_hc)
        reason = "jsonb_build_object('duplicate_key', 'a newer version of this key is in the same extract window')"
        self.quarantine(superseded_rel.as_string(self.conn), "array['duplicate_key']", reason, "q._ndc_row_hash")
        moved = self.execute(sql.SQL(
            "delete from {history} h using _ndc_conf c where {m} and h._ndc_row_hash = c.old_hash and c.new_wins"
        ).format(history=self.ids["history"], m=match_hc))
        self.quarantine("(select i.* from _ndc_in i join _ndc_conf c on i.ctid = c._in_ctid where not c.new_wins)",
                        "array['duplicate_key']", reason, "q._ndc_row_hash")
        lost = self.execute(sql.SQL(
            "delete from _ndc_in where ctid in (select _in_ctid from _ndc_conf where not new_wins)"))
        return moved, lost

    def merge(self) -> tuple[int, int, datetime | None]:
        new_versions = self.execute(sql.SQL(
            "insert into {history} ({cols}, _ndc_row_hash, _ndc_batch_id, _ndc_run_id, _ndc_loaded_at)"
            " select {cols}, _ndc_row_hash, %(batch)s, %(run)s, now() from _ndc_in"
            " on conflict do nothing").format(**self.ids))
        updates = sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(ident(c))
                                     for c in [*self.t.columns, *_META_COLUMNS, *_DELETE_COLUMNS])
        if self.t.tombstone_column:
            deleted = sql.SQL("{0}, case when {0} is not null then 'tombstone' end").format(
                ident(self.t.tombstone_column))
        else:
            deleted = sql.SQL("null::timestamptz, null::text")
        self.execute(sql.SQL(
            "insert into {latest} as l ({cols}, _ndc_row_hash, _ndc_batch_id, _ndc_run_id, _ndc_loaded_at,"
            " _ndc_deleted_at, _ndc_deleted_by)"
            " select {cols}, _ndc_row_hash, %(batch)s, %(run)s, now(), {deleted} from _ndc_in"
            " on conflict ({pk}) do update set {updates}"
            " where (excluded.{inc}, excluded._ndc_row_hash) > (l.{inc}, l._ndc_row_hash)"
        ).format(updates=updates, deleted=deleted, **self.ids))
        loaded, through = self.conn.execute(
            sql.SQL("select count(*), max({inc}) from _ndc_in").format(**self.ids)).fetchone()
        return loaded, new_versions, through

    def quarantine_rejects(self) -> None:
        columns = sql.SQL(", ").join(sql.SQL("q.{}").format(ident(c)) for c in self.t.columns)
        self.quarantine("_ndc_rej", "q._checks", "q._reasons", f"md5(row({columns.as_string(self.conn)})::text)")


def load_batch(conn: psycopg.Connection, target: LandingTarget, gated: GateResult, *, run_id: str,
               window: tuple[datetime, datetime], batch_no: int, started_at: datetime,
               completes: FileRef | None = None) -> BatchStats:
    """Load one gated batch in one transaction; returns its accounting. ``completes``: the dropped file whose
    last rows this batch holds; it is recorded as loaded in the same transaction."""
    passed, rejected = _reject_null_keys(gated, target)
    stats = BatchStats(rows_in=passed.height + rejected.height, rows_repaired=gated.repaired)
    batch_id = uuid.uuid4()
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (target.dataset,))
        _copy_frame(conn, "_ndc_raw", target.columns, passed)
        _copy_frame(conn, "_ndc_rej", [*target.columns, "_checks", "_reasons"], _array_literal(rejected))
        step = _Batch(conn, target, batch_id, run_id, window)
        step.hash_incoming()
        dropped = 0
        if passed.select(pl.struct(list(target.primary_key)).is_duplicated().any()).item():
            dropped += step.drop_duplicates_in_batch()
        dropped += step.drop_known_duplicates()
        moved, lost = step.resolve_window_duplicates()
        stats.rows_loaded, stats.rows_new_versions, stats.loaded_through = step.merge()
        step.quarantine_rejects()
        stats.rows_quarantined = rejected.height + dropped + lost
        stats.rows_superseded_in_landing = moved
        conn.execute(
            "insert into ndc_meta.batches (batch_id, dataset, run_id, window_start, window_end, batch_no, rows_in,"
            " rows_loaded, rows_quarantined, rows_repaired, rows_new_versions, rows_superseded_in_landing,"
            " started_at) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (batch_id, target.dataset, run_id, window[0], window[1], batch_no, stats.rows_in, stats.rows_loaded,
             stats.rows_quarantined, stats.rows_repaired, stats.rows_new_versions, moved, started_at))
        if completes is not None:
            conn.execute(
                "insert into ndc_meta.files (dataset, sha256, path, bytes, encoding, batch_id, run_id)"
                " values (%s, %s, %s, %s, %s, %s, %s) on conflict (dataset, sha256) do nothing",
                (target.dataset, completes.sha256, completes.path, completes.size, completes.encoding, batch_id,
                 run_id))
    return stats


def loaded_files(conn: psycopg.Connection, dataset: str) -> set[str]:
    """Content hashes of the files of ``dataset`` already loaded."""
    with conn.transaction():  # ends here, so that each batch's transaction commits on its own
        rows = conn.execute("select sha256 from ndc_meta.files where dataset = %s", (dataset,)).fetchall()
    return {row[0] for row in rows}


def _reject_null_keys(gated: GateResult, target: LandingTarget) -> tuple[pl.DataFrame, pl.DataFrame]:
    null_key = pl.any_horizontal(pl.col(c).is_null() for c in target.primary_key)
    bad = gated.passed.filter(null_key)
    if bad.is_empty():
        return gated.passed, gated.rejected
    bad = bad.with_columns(pl.lit([PK_NOT_NULL], pl.List(pl.String)).alias("_checks"),
                           pl.lit(f'{{"{PK_NOT_NULL}": {{"column": null}}}}').alias("_reasons"))
    return gated.passed.filter(~null_key), pl.concat([gated.rejected, bad], how="vertical_relaxed")


def _array_literal(rejected: pl.DataFrame) -> pl.DataFrame:
    """Check names as a PostgreSQL array literal, for COPY."""
    quoted = pl.col("_checks").list.eval(pl.format('"{}"', pl.element())).list.join(",")
    return rejected.with_columns(pl.concat_str(pl.lit("{"), quoted, pl.lit("}")).alias("_checks"))


def write_ledger(conn: psycopg.Connection, *, source: str, target: LandingTarget, run_id: str,
                 interval: tuple[datetime, datetime], stats: RunStats, started: float, error: str | None,
                 window: tuple[datetime, datetime]) -> None:
    details = {"batches": stats.batches, "rows_repaired": stats.rows_repaired, "files": stats.files,
               "rows_new_versions": stats.rows_new_versions,
               "rows_superseded_in_landing": stats.rows_superseded_in_landing,
               "new_columns": stats.new_columns, "window_start": window[0], "window_end": window[1]}
    if error:
        details["error"] = error
    ledger.append(conn, ledger.LedgerEntry(
        kind="extract", source=source, target=f"{target.schema}.{target.table}", run_id=run_id,
        interval_start=interval[0], interval_end=interval[1], rows_in=stats.rows_in, rows_loaded=stats.loaded,
        rows_quarantined=stats.quarantined, contract_name=target.contract.name,
        contract_version=target.contract.version, duration_ms=int((time.monotonic() - started) * 1000),
        outcome="failed" if error else "success", details=details))


def update_watermark(conn: psycopg.Connection, dataset: str, through: datetime | None, run_id: str) -> None:
    with conn.transaction():
        conn.execute(
            "insert into ndc_meta.watermarks (dataset, loaded_through, last_run_id) values (%s, %s, %s)"
            " on conflict (dataset) do update set loaded_through = greatest(ndc_meta.watermarks.loaded_through,"
            " excluded.loaded_through), last_run_id = excluded.last_run_id, updated_at = now()",
            (dataset, through, run_id))
