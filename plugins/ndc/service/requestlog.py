"""The request log: every request to the sharing service, refused ones too, is a row of the append-only,
day-partitioned ``ndc_meta.service_requests`` before its answer leaves.

Requests are written by group commit: a writer (a task of the service's event loop) writes what is pending in
one call of ``ndc_meta.log_requests`` (the service's only way to write the log) and only then releases the
answers; when the write fails the requests get HTTP 503 and no data. After an idle spell the writer waits
``NDC_SERVICE_LOG_FLUSH_MS`` for more requests to join; under load, what arrived during one write is the next
write. Keys asked for and keys a page returned are turned into the agreement's HMAC by the database as they are
written; no key in clear and no row value is stored.

Rows belong to the writer's open *batch*. A batch is sealed after ``NDC_SERVICE_BATCH_REQUESTS`` requests or
``NDC_SERVICE_BATCH_SECONDS``: one ledger row (``kind = service_requests``) holds its count, its time span, the
SHA-256 of its rows (each ``row_to_json`` in UTC, in order) and its counts per agency and view, which
``ndc_meta.sharing_transactions`` and the operator's page add up. :func:`verify` recomputes every sealed batch;
:func:`seal_unsealed` seals batches a stopped service left open (marked ``late``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from ndc.audit.handoff import record_event
from ndc.warehouse import database

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Request:
    """One request as the log keeps it. ``key`` and ``returned`` are in clear only on their way to the database
    (which stores their HMACs); ``key_digest``/``returned_digests`` are set when the caller gave HMACs already."""
    operation: str
    status: int
    reason: str | None = None
    agency: str | None = None
    login: str | None = None
    agreement_id: str | None = None
    agreement_sha256: str | None = None
    purpose: str | None = None
    view: str | None = None
    key: str | None = None
    key_digest: str | None = None
    returned: list[str] | None = None
    returned_are_digests: bool = False
    rows: int = 0
    db_ms: float | None = None
    total_ms: float | None = None
    publication_id: int | None = None
    contract_version: str | None = None
    requested_at: datetime = field(default_factory=lambda: datetime.now(UTC))


INSERT = "select ndc_meta.log_requests(%(batch)s, %(first)s, %(rows)s::jsonb)"
FIELDS = tuple(f for f in Request.__dataclass_fields__ if f != "requested_at")


# The canonical text of a batch: its rows' JSON (timestamps in UTC), in order, one per line.
BATCH_DIGEST = """
select count(*), min(requested_at), max(requested_at),
    encode(sha256(convert_to(coalesce(string_agg(row_to_json(r)::text, E'\\n' order by r.seq), ''), 'UTF8')), 'hex')
from ndc_meta.service_requests r where r.batch_id = %(batch)s and r.requested_at between %(first)s and %(last)s
"""
BATCH_COUNTS = """
select coalesce(agency, ''), coalesce(view, ''), count(*) filter (where status = 200),
    coalesce(sum(rows) filter (where status = 200), 0), count(*) filter (where status <> 200)
from ndc_meta.service_requests where batch_id = %(batch)s and requested_at between %(first)s and %(last)s
group by 1, 2 order by 1, 2
"""


def _jsonable(request: Request) -> dict:
    row = {name: getattr(request, name) for name in FIELDS}
    row["requested_at"] = request.requested_at.isoformat()
    return row


def seal(conn: psycopg.Connection, batch_id: int, first: datetime, last: datetime, *, late: bool = False) -> int:
    """One ledger row for ``batch_id``'s rows written between ``first`` and ``last``: their count, span,
    SHA-256 and counts per agency and view. Returns the rows sealed (0: nothing to seal, or sealed already)."""
    params = {"batch": batch_id, "first": first, "last": last}
    with conn.transaction():
        if conn.execute("select 1 from ndc_meta.ledger where kind = 'service_requests'"
                        " and (details->>'batch_id')::bigint = %s", (batch_id,)).fetchone():
            return 0  # sealed already (by its service, or by `ndc service seal`)
        conn.execute("set local timezone = 'UTC'")
        count, first_at, last_at, digest = conn.execute(BATCH_DIGEST, params).fetchone()
        counts = conn.execute(BATCH_COUNTS, params).fetchall()
    if not count:
        return 0
    record_event(conn, "service_requests", "service", "ndc_meta.service_requests", None,
                 {"batch_id": batch_id, "requests": count, "first_at": first_at.isoformat(),
                  "last_at": last_at.isoformat(), "sha256": digest, "late": late,
                  "counts": [{"agency": a, "view": v, "answered": n, "rows": r, "refused": x}
                             for a, v, n, r, x in counts]}, rows=count)
    return count


def verify(conn: psycopg.Connection) -> tuple[int, list[str]]:
    """Recompute every sealed batch from the log. Returns the batches checked and the problems: a batch whose
    rows no longer hash to what the ledger holds (a row changed, removed or added)."""
    sealed = conn.execute("select ledger_id, (details->>'batch_id')::bigint, (details->>'requests')::bigint,"
                          " (details->>'first_at')::timestamptz, (details->>'last_at')::timestamptz,"
                          " details->>'sha256' from ndc_meta.ledger where kind = 'service_requests'"
                          " order by ledger_id").fetchall()
    conn.commit()
    problems = []
    for ledger_id, batch_id, requests, first, last, expected in sealed:
        with conn.transaction():
            conn.execute("set local timezone = 'UTC'")
            count, _, _, digest = conn.execute(BATCH_DIGEST, {"batch": batch_id, "first": first, "last": last}
                                               ).fetchone()
        if count != requests or digest != expected:
            problems.append(f"request batch {batch_id} (ledger row {ledger_id}): {count} rows hash to "
                            f"{digest[:16]}…, the ledger sealed {requests} rows hashing to {expected[:16]}…")
    return len(sealed), problems


def seal_unsealed(conn: psycopg.Connection, older_than: timedelta) -> list[int]:
    """Seal (``late``) every batch in the log that no ledger row holds and that got no request for
    ``older_than``: a service that stopped without sealing. Returns the batches sealed."""
    open_batches = conn.execute(
        "select r.batch_id, min(r.requested_at), max(r.requested_at) from ndc_meta.service_requests r"
        " where not exists (select from ndc_meta.ledger l where l.kind = 'service_requests'"
        " and (l.details->>'batch_id')::bigint = r.batch_id) group by 1 having max(r.requested_at) < now() - %s"
        " order by 1", (older_than,)).fetchall()
    conn.commit()
    return [batch_id for batch_id, first, last in open_batches if seal(conn, batch_id, first, last, late=True)]


class RequestLog:
    """The service's writer, a task of the service's event loop (no thread contends with the requests for the
    interpreter): :meth:`submit` returns a future settled once the request's row is committed. Sealing, which reads
    a whole batch back and appends to the ledger, runs on its own thread and connection."""

    def __init__(self, url: str, *, flush_ms: int, batch_requests: int, batch_seconds: float) -> None:
        self._url, self._flush = url, flush_ms / 1000
        self._batch_requests, self._batch_seconds = batch_requests, batch_seconds
        self._pending: list[tuple[Request, asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._conn: psycopg.AsyncConnection | None = None
        self._task: asyncio.Task | None = None
        self._batch: int | None = None
        self._batch_rows = 0
        self._batch_span: tuple[datetime, datetime] | None = None
        self._batch_opened = 0.0
        self._partitions_day = None
        self._to_seal: queue.Queue[tuple[int, tuple[datetime, datetime]] | None] = queue.Queue()
        self._sealer = threading.Thread(target=self._seal_batches, name="ndc-request-log-seal", daemon=True)
        self.written = 0

    async def start(self) -> None:
        self._conn = await database.connect_async(self._url)
        await self._ensure_partitions()
        self._sealer.start()
        self._task = asyncio.create_task(self._run(), name="ndc-request-log")

    def submit(self, request: Request) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        self._wake.set()
        return future

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._rotate()
        self._to_seal.put(None)
        await asyncio.to_thread(self._sealer.join, 60)
        if self._conn is not None:
            await self._conn.close()

    async def _ensure_partitions(self) -> None:
        today = datetime.now(UTC).date()
        if self._partitions_day != today:
            await self._conn.execute("select ndc_meta.ensure_request_partitions(%s, 3)", (today - timedelta(days=1),))
            self._partitions_day = today

    async def _run(self) -> None:
        while not (self._stopping and not self._pending):
            if not self._pending:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._due_in())
                self._wake.clear()
                if len(self._pending) == 1 and not self._stopping:
                    await asyncio.sleep(self._flush)  # after an idle spell: let more requests join
            taken, self._pending = self._pending, []
            if taken:
                await self._write(taken)
            if self._batch is not None and (self._batch_rows >= self._batch_requests
                                            or time.monotonic() - self._batch_opened >= self._batch_seconds):
                self._rotate()

    def _due_in(self) -> float | None:
        return None if self._batch is None else max(0.01, self._batch_opened + self._batch_seconds
                                                    - time.monotonic())

    async def _write(self, taken: list[tuple[Request, asyncio.Future]]) -> None:
        error: Exception | None = None
        try:
            await self._ensure_partitions()
            if self._batch is None:
                cursor = await self._conn.execute("select nextval('ndc_meta.service_request_batches')")
                self._batch = (await cursor.fetchone())[0]
                self._batch_rows, self._batch_opened, self._batch_span = 0, time.monotonic(), None
            requests = [r for r, _ in taken]
            await self._conn.execute(INSERT, {"batch": self._batch, "first": self._batch_rows + 1,
                                              "rows": json.dumps([_jsonable(r) for r in requests])})
            first = min(r.requested_at for r in requests)
            last = max(r.requested_at for r in requests)
            span = self._batch_span
            self._batch_span = (min(first, span[0]), max(last, span[1])) if span else (first, last)
            self._batch_rows += len(requests)
            self.written += len(requests)
        except Exception as exc:  # the answers are withheld (HTTP 503): no data leaves unlogged
            log.exception("the request log could not be written: %d requests refused", len(taken))
            error = exc
            await self._reconnect()
        for _, future in taken:
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

    def _rotate(self) -> None:
        """Hand the open batch to the sealer; the next write opens a new one."""
        if self._batch is not None and self._batch_span is not None:
            self._to_seal.put((self._batch, self._batch_span))
        self._batch, self._batch_span, self._batch_rows = None, None, 0

    def _seal_batches(self) -> None:
        conn = None
        while (item := self._to_seal.get()) is not None:
            try:
                conn = conn if conn is not None and not conn.closed else database.connect(self._url)
                seal(conn, item[0], *item[1])
            except Exception:  # sealed later by `ndc service seal`
                log.exception("request batch %s could not be sealed in the ledger", item[0])
                if conn is not None:
                    conn.close()
        if conn is not None:
            conn.close()

    async def _reconnect(self) -> None:
        try:
            await self._conn.close()
            self._conn = await database.connect_async(self._url)
        except Exception:
            log.exception("the request log's connection could not be reopened")
