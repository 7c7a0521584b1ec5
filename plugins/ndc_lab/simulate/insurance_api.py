"""The REST API of the simulated Vietnam Social Security database: JSON over HTTP on loopback, read-only.

Standard library only (``http.server.ThreadingHTTPServer``) plus psycopg reading the backend PostgreSQL database
that ``ndc_lab.simulate.insurance.write`` created; no framework.

Every request needs ``Authorization: Bearer <token>`` (else 401). Resources are the backend tables
(``insured_people``, ``employers``, ``contributions``):

- ``GET /v1/<resource>/schema`` -> ``{"resource": r, "fields": [{"name": ..., "type": ...}, ...]}`` in column
  order; types are ``string``, ``date``, ``timestamp``, ``integer``, ``number`` or ``boolean``, derived from the
  backend table's columns (so a changed backend shows up here as schema drift).
- ``GET /v1/<resource>?updated_from=&updated_to=&limit=&cursor=`` -> ``{"data": [...], "next_cursor": ...}``:
  rows with ``updated_from <= updated_at < updated_to`` (ISO 8601; either bound may be left out; a time without
  offset is UTC), ordered by (updated_at, primary key), ``limit`` rows (default 1000, at most 5000). Paging is by
  keyset: the opaque cursor encodes the last (updated_at, key) served, never an offset, so rows committed while
  a client pages never shift a page. ``next_cursor`` is null on the last page. Dates are ``YYYY-MM-DD``,
  timestamps ISO 8601 UTC with microseconds and ``Z``, numbers JSON numbers, nulls null.
- Errors are JSON ``{"error": message, "status": code}``: 404 for an unknown path or resource, 400 naming the
  bad parameter (unknown parameters are refused too), 405 for methods other than GET.

Faults, deterministic for a seed (so a test or a demo can reproduce them):
- a token bucket per token (``rate_limit`` requests per second, burst = ``rate_limit``, at least 1) answers
  429 with a ``Retry-After`` header in seconds, possibly fractional (``"0.2"``); ``rate_limit <= 0`` disables it;
- each data request (not the schema) fails with 500 with probability ``fault_rate``, drawn from a
  ``random.Random(seed)`` in the order requests arrive.

Entry points: ``serve()`` (blocking) and ``start_in_thread()`` (tests; ``server.shutdown()`` stops it).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import math
import queue
import random
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import psycopg
from psycopg import sql

from ndc_lab.simulate.insurance import PRIMARY_KEYS

log = logging.getLogger(__name__)

DEFAULT_LIMIT, MAX_LIMIT = 1000, 5000
PARAMETERS = ("updated_from", "updated_to", "limit", "cursor")
_PATH = re.compile(r"^/v1/([A-Za-z0-9_]+)(/schema)?/?$")
_TYPES = {
    "text": "string", "character varying": "string", "character": "string", "date": "date",
    "timestamp with time zone": "timestamp", "timestamp without time zone": "timestamp",
    "smallint": "integer", "integer": "integer", "bigint": "integer",
    "numeric": "number", "double precision": "number", "real": "number", "boolean": "boolean",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class Response:
    status: int
    payload: dict
    headers: dict[str, str] = field(default_factory=dict)


class _Pool:
    """A few idle read-only backend connections, reused across requests (one per request at a time)."""

    def __init__(self, url: str, idle: int = 4) -> None:
        self.url, self.idle = url, queue.LifoQueue(maxsize=idle)

    @contextmanager
    def connection(self):
        try:
            conn = self.idle.get_nowait()
        except queue.Empty:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10,
                                   options="-c default_transaction_read_only=on -c timezone=UTC")
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        try:
            self.idle.put_nowait(conn)
        except queue.Full:
            conn.close()

    def close(self) -> None:
        while True:
            try:
                self.idle.get_nowait().close()
            except queue.Empty:
                return


class _Buckets:
    """Token buckets per token: ``rate`` tokens a second, holding at most max(rate, 1)."""

    def __init__(self, rate: float) -> None:
        self.rate, self.capacity = rate, max(rate, 1.0)
        self.state: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def wait(self, token: str) -> float:
        """0 if a request may go now (and takes a token), else the seconds until one may."""
        if self.rate <= 0:
            return 0.0
        with self.lock:
            now = time.monotonic()
            tokens, last = self.state.get(token, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self.state[token] = (tokens - 1.0, now)
                return 0.0
            self.state[token] = (tokens, now)
            return (1.0 - tokens) / self.rate


class _Faults:
    def __init__(self, rate: float, seed: int) -> None:
        self.rate, self.random, self.lock = rate, random.Random(seed), threading.Lock()  # noqa: S311 - not crypto

    def fail(self) -> bool:
        with self.lock:
            return self.random.random() < self.rate


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_value(value):
    if isinstance(value, datetime):
        return _timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)  # always a JSON number with a fraction part, so readers infer one type per field
    return value


def _instant(name: str, text: str) -> datetime:
    for candidate in (text, text.replace(" ", "+")):  # an unencoded '+' in a query string arrives as a space
        try:
            moment = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    raise ApiError(400, f"parameter {name}: expected an ISO 8601 timestamp, got {text!r}")


def encode_cursor(updated_at: datetime, key) -> str:
    raw = json.dumps([_timestamp(updated_at), key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str) -> tuple[datetime, object]:
    try:
        stamp, key = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(stamp, str) or not isinstance(key, str | int) or isinstance(key, bool):
            raise ValueError(key)
        return datetime.fromisoformat(stamp), key
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "parameter cursor: not a cursor this API issued") from None


@dataclass
class _Query:
    updated_from: datetime | None = None
    updated_to: datetime | None = None
    limit: int = DEFAULT_LIMIT
    after: tuple[datetime, object] | None = None


def _limit(text: str) -> int:
    if not re.fullmatch(r"\d{1,9}", text) or not 1 <= int(text) <= MAX_LIMIT:
        raise ApiError(400, f"parameter limit: expected a whole number from 1 to {MAX_LIMIT}, got {text!r}")
    return int(text)


def parse_query(query: str) -> _Query:
    given: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in PARAMETERS:
            raise ApiError(400, f"parameter {name}: unknown (expected {', '.join(PARAMETERS)})")
        if name in given:
            raise ApiError(400, f"parameter {name}: given more than once")
        given[name] = value
    found = _Query()
    if "updated_from" in given:
        found.updated_from = _instant("updated_from", given["updated_from"])
    if "updated_to" in given:
        found.updated_to = _instant("updated_to", given["updated_to"])
    if found.updated_from and found.updated_to and found.updated_to <= found.updated_from:
        raise ApiError(400, "parameter updated_to: must be later than updated_from")
    if "limit" in given:
        found.limit = _limit(given["limit"])
    if "cursor" in given:
        found.after = _decode_cursor(given["cursor"])
    return found


class InsuranceApi:
    """The application: maps (path, query, Authorization header) to a Response; no HTTP machinery here."""

    def __init__(self, backend_url: str, *, token: str, rate_limit: float, fault_rate: float, seed: int) -> None:
        if not token:
            raise ValueError("the insurance API needs a non-empty token")
        self.token = token.encode()
        self.pool = _Pool(backend_url)
        self.buckets = _Buckets(rate_limit)
        self.faults = _Faults(fault_rate, seed)

    def handle(self, target: str, authorization: str | None) -> Response:
        try:
            self._authorise(authorization)
            parts = urlsplit(target)
            match = _PATH.match(parts.path)
            if not match:
                raise ApiError(404, f"no such path {parts.path!r} (try /v1/<resource>)")
            resource = match.group(1)
            if resource not in PRIMARY_KEYS:
                raise ApiError(404, f"unknown resource {resource!r} (resources: {', '.join(PRIMARY_KEYS)})")
            if match.group(2):
                return Response(200, {"resource": resource, "fields": self._fields(resource)})
            return Response(200, self._page(resource, parse_query(parts.query)))
        except ApiError as exc:
            return Response(exc.status, {"error": exc.message, "status": exc.status}, exc.headers)

    def _authorise(self, authorization: str | None) -> None:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token):
            raise ApiError(401, "missing or invalid bearer token", {"WWW-Authenticate": 'Bearer realm="vss"'})
        wait = self.buckets.wait(given.strip())
        if wait > 0:
            seconds = f"{math.ceil(wait * 1000) / 1000:g}"
            raise ApiError(429, f"rate limit exceeded; retry after {seconds} s", {"Retry-After": seconds})

    def _columns(self, conn: psycopg.Connection, resource: str) -> list[tuple[str, str]]:
        rows = conn.execute(
            "select column_name, data_type from information_schema.columns where table_schema = 'public'"
            " and table_name = %s order by ordinal_position", (resource,)).fetchall()
        if not rows:
            raise ApiError(503, f"resource {resource!r} is not available (the backend has no such table)")
        return rows

    def _fields(self, resource: str) -> list[dict[str, str]]:
        with self.pool.connection() as conn:
            columns = self._columns(conn, resource)
        return [{"name": name, "type": _TYPES.get(dtype, "string")} for name, dtype in columns]

    def _page(self, resource: str, query: _Query) -> dict:
        if self.faults.fail():
            raise ApiError(500, "internal server error (injected fault); retry the request")
        key = PRIMARY_KEYS[resource]
        conditions, params = [], []
        if query.updated_from is not None:
            conditions.append(sql.SQL("updated_at >= %s"))
            params.append(query.updated_from)
        if query.updated_to is not None:
            conditions.append(sql.SQL("updated_at < %s"))
            params.append(query.updated_to)
        if query.after is not None:
            conditions.append(sql.SQL("(updated_at, {}) > (%s, %s)").format(sql.Identifier(key)))
            params.extend(query.after)
        with self.pool.connection() as conn:
            columns = [name for name, _ in self._columns(conn, resource)]
            statement = sql.SQL("select {} from {} where {} order by updated_at, {} limit %s").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(resource),
                sql.SQL(" and ").join(conditions) if conditions else sql.SQL("true"), sql.Identifier(key))
            rows = conn.execute(statement, [*params, query.limit + 1]).fetchall()
        records = [dict(zip(columns, row, strict=True)) for row in rows[: query.limit]]
        last = records[-1] if len(rows) > query.limit else None
        return {"data": [{k: _json_value(v) for k, v in record.items()} for record in records],
                "next_cursor": encode_cursor(last["updated_at"], last[key]) if last else None}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: InsuranceApiServer

    def do_GET(self) -> None:
        try:
            response = self.server.api.handle(self.path, self.headers.get("Authorization"))
        except Exception:
            log.exception("insurance API: %s failed", self.path)
            response = Response(500, {"error": "internal server error", "status": 500})
        self._send(response)

    def _refuse(self) -> None:
        self.close_connection = True  # a body we did not read must not be taken for the next request
        self._send(Response(405, {"error": f"method {self.command} not allowed (GET only)", "status": 405},
                            {"Allow": "GET"}))

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

    def _send(self, response: Response) -> None:
        body = json.dumps(response.payload, ensure_ascii=False, separators=(",", ":")).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        log.debug("insurance API %s: " + format, self.address_string(), *args)


class InsuranceApiServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], api: InsuranceApi) -> None:
        self.api = api
        super().__init__(address, _Handler)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def shutdown(self) -> None:
        super().shutdown()
        self.api.pool.close()

    def server_close(self) -> None:
        super().server_close()
        self.api.pool.close()


def serve(backend_url: str, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          rate_limit: float = 50.0, fault_rate: float = 0.02, seed: int = 0) -> None:
    """Serve the backend at ``backend_url`` until interrupted (``token`` defaults to NDC_INSURANCE_TOKEN)."""
    import os

    token = token or os.environ.get("NDC_INSURANCE_TOKEN")
    if not token:
        raise ValueError("give a token (or set NDC_INSURANCE_TOKEN)")
    api = InsuranceApi(backend_url, token=token, rate_limit=rate_limit, fault_rate=fault_rate, seed=seed)
    with InsuranceApiServer((host, port), api) as server:
        log.info("insurance API on %s (rate limit %s/s, fault rate %s, seed %s)", server.base_url, rate_limit,
                 fault_rate, seed)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            log.info("insurance API stopped")


def start_in_thread(backend_url: str, *, port: int = 0, token: str, rate_limit: float = 50.0,
                    fault_rate: float = 0.02, seed: int = 0) -> tuple[InsuranceApiServer, str]:
    """Serve on 127.0.0.1 from a daemon thread (port 0: any free port); returns the server and its base URL
    (``http://127.0.0.1:<port>``, no trailing slash). ``server.shutdown()`` stops it."""
    api = InsuranceApi(backend_url, token=token, rate_limit=rate_limit, fault_rate=fault_rate, seed=seed)
    server = InsuranceApiServer(("127.0.0.1", port), api)

    def run() -> None:
        try:
            server.serve_forever()
        finally:
            server.server_close()

    threading.Thread(target=run, name=f"insurance-api-{server.server_address[1]}", daemon=True).start()
    return server, server.base_url
