"""The data-sharing service: consumer agencies' systems look up records and read pages of their agreed views over
HTTP; every request is a logged sharing transaction (:mod:`ndc.service.requestlog`).

An ASGI application (FastAPI on uvicorn). PostgREST was the first choice (a database role per request, all
authorisation in the database) but it cannot be installed from the registries here (no Debian or PyPI package of
the server), and a request log written by group commit with batch hashes in the ledger, a rate limit per agency and
a purpose check against the agreement are outside what it does. The service keeps PostgREST's model for the data:
each answer is read by ``SET LOCAL ROLE <agency login>`` from the agency's own agreement views, so the database
enforces rows, columns, masks and validity at the statement's time, and the service adds nothing the agreement does
not allow.

Per request: the bearer token (``Authorization: Bearer ndc_<id>.<secret>``, :mod:`ndc.service.tokens`), the
agency's rate (HTTP 429), the agreement (the caller's agency must be its consumer), the purpose the caller names
(``X-NDC-Purpose``, one of the agreement's ``purposes``), the view (one of the agreement's), then one transaction
sent as one query string: the agreement in force at the statement's time and the latest publication (as the
service), the rows (as the login). The request's log row is committed before the answer leaves."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import json
import logging
import re
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import psycopg
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import sql
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ndc.errors import NdcError
from ndc.identifiers import is_identifier
from ndc.service import tokens
from ndc.service.ratelimit import RateLimit
from ndc.service.requestlog import Request as Logged
from ndc.service.requestlog import RequestLog
from ndc.settings import Settings, get_settings
from ndc.warehouse import database

log = logging.getLogger(__name__)
API = "/v1"
KEY = r"[0-9A-Za-z_.-]{1,64}"  # a key in a path (a PIN, a code, a pseudonym): nothing in it needs escaping
NAME = r"[a-z][a-z0-9_]{0,62}"  # an agreement, a view, a purpose
NAME_ONLY, KEY_ONLY = f"^{NAME}$", f"^{KEY}$"
PSEUDONYM = re.compile(r"^[0-9a-f]{64}$")
MAX_PAGE = 1000
# Module level: the handlers' annotations are strings (``from __future__ import annotations``), resolved here.
BEARER = HTTPBearer(auto_error=False, description="ndc_<id>.<secret>, issued per agency login or portal")


class Refused(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers


@dataclass(frozen=True)
class Applied:
    """An applied agreement as the service caches it (the database re-checks validity per request)."""
    agreement_id: str
    consumer: str
    sha256: str
    purposes: frozenset[str]
    views: frozenset[str]
    lookup_keys: dict


class Problem(BaseModel):
    status: int
    error: str


class Record(BaseModel):
    agreement: str
    view: str
    publication_id: int | None
    contract_version: str | None
    record: dict


class Page(BaseModel):
    agreement: str
    view: str
    publication_id: int | None
    contract_version: str | None
    rows: list[dict]
    next: str | None


class Receipt(BaseModel):
    agency: str
    channel: str
    at: datetime
    agreement: str
    purpose: str | None
    view: str | None
    login: str | None


class Tracked(BaseModel):
    receipts: list[Receipt]


class Pool:
    """A fixed set of warehouse connections, each prepared statements' home."""

    def __init__(self, url: str, size: int) -> None:
        self._url, self._size = url, size
        self._idle: asyncio.Queue[psycopg.AsyncConnection] = asyncio.Queue()
        self.prepared: weakref.WeakKeyDictionary[psycopg.AsyncConnection, set[str]] = weakref.WeakKeyDictionary()

    async def open(self) -> None:
        for _ in range(self._size):
            self._idle.put_nowait(await self._connect())

    async def _connect(self) -> psycopg.AsyncConnection:
        conn = await database.connect_async(self._url)
        await conn.execute("set statement_timeout = '10s'")
        self.prepared[conn] = set()
        return conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        conn = await self._idle.get()
        try:
            yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError):
            await conn.close()
            conn = await self._connect()
            raise
        finally:
            if not conn.closed and conn.info.transaction_status.name != "IDLE":
                await conn.rollback()
            self._idle.put_nowait(conn)

    async def close(self) -> None:
        while not self._idle.empty():
            await (self._idle.get_nowait()).close()


class Service:
    """What the handlers share: the pool, the caches, the rate limit and the request log."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = Pool(settings.service_url, settings.service_pool)
        self.limit = RateLimit(settings.service_rate, settings.service_burst)
        self.log = RequestLog(settings.service_url, flush_ms=settings.service_flush_ms,
                              batch_requests=settings.service_batch_requests,
                              batch_seconds=settings.service_batch_seconds.total_seconds())
        self.ttl = settings.service_cache_seconds.total_seconds()
        self._credentials: dict[str, tuple[tokens.Credential | None, float]] = {}
        self._agreements: dict[str, Applied] = {}
        self._contracts: dict[str, str] = {}
        self._agreements_at = -1e9
        self._refreshing = asyncio.Lock()

    async def start(self) -> None:
        await self.log.start()
        await self.pool.open()

    async def stop(self) -> None:
        await self.log.stop()
        await self.pool.close()

    async def credential(self, token_id: str) -> tokens.Credential | None:
        cached = self._credentials.get(token_id)
        if cached and time.monotonic() - cached[1] < self.ttl:
            return cached[0]
        async with self.pool.connection() as conn:
            row = await (await conn.execute(tokens.CREDENTIAL_QUERY, (token_id,))).fetchone()
            await conn.commit()
        found = tokens.Credential(*row) if row else None
        if len(self._credentials) > 100_000:  # forged ids must not grow the cache without end
            self._credentials.clear()
        self._credentials[token_id] = (found, time.monotonic())
        return found

    async def agreements(self) -> tuple[dict[str, Applied], dict[str, str]]:
        if time.monotonic() - self._agreements_at < self.ttl:
            return self._agreements, self._contracts
        async with self._refreshing:
            if time.monotonic() - self._agreements_at >= self.ttl:
                async with self.pool.connection() as conn:
                    rows = await (await conn.execute(
                        "select agreement_id, consumer, content_sha256, purposes, views, lookup_keys"
                        " from ndc_meta.applied_agreements")).fetchall()
                    contracts = await (await conn.execute(
                        "select relation, contract_version from ndc_meta.catalog")).fetchall()
                    await conn.commit()
                self._agreements = {r[0]: Applied(r[0], r[1], r[2], frozenset(r[3] or ()), frozenset(r[4] or ()),
                                                  r[5] or {}) for r in rows}
                self._contracts = {r[0]: r[1] for r in contracts}
                self._agreements_at = time.monotonic()
        return self._agreements, self._contracts


def _problem(status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps({"status": status, "error": reason}, ensure_ascii=False), status_code=status,
                    media_type="application/json", headers=headers)


async def _authenticate(service: Service, auth: HTTPAuthorizationCredentials | None, scope: str, logged: Logged
                        ) -> tokens.Credential:
    if auth is None:
        raise Refused(401, "a bearer token is required (Authorization: Bearer ndc_<id>.<secret>)",
                      {"WWW-Authenticate": "Bearer"})
    parsed = tokens.parse(auth.credentials.strip())
    found = await service.credential(parsed[0]) if parsed else None
    if found is None or not found.accepts(parsed[1], datetime.now(UTC)):
        raise Refused(401, "the token is not valid (unknown, forged, expired or revoked)",
                      {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    logged.login, logged.agency = found.login, found.agency
    if found.scope != scope:
        raise Refused(403, f"this token is for the {found.scope} API, not the {scope} API")
    if scope == "agency":
        wait = service.limit.take(found.agency)
        if wait:
            raise Refused(429, f"agency {found.agency} is over its rate of {service.limit.rate:g} requests per "
                               "second", {"Retry-After": RateLimit.retry_after(wait)})
    return found


def _agreement_of(agreements: dict[str, Applied], contracts: dict[str, str], credential: tokens.Credential,
                  agreement_id: str, view: str, purpose: str | None, logged: Logged) -> tuple[Applied, str | None]:
    applied = agreements.get(agreement_id)
    if applied is None or applied.consumer != credential.agency:
        raise Refused(403, f"agency {credential.agency} has no agreement {agreement_id} in force")
    logged.agreement_sha256 = applied.sha256
    if not purpose:
        raise Refused(400, "name the purpose of the request (X-NDC-Purpose: one of the agreement's purposes)")
    if purpose not in applied.purposes:
        raise Refused(403, f"purpose {purpose!r} is not one agreement {agreement_id} allows"
                           + (f" ({', '.join(sorted(applied.purposes))})" if applied.purposes else
                              " (it allows none: it is read with SQL only)"))
    if view not in applied.views:
        raise Refused(404, f"agreement {agreement_id} shares no view {view!r}")
    return applied, contracts.get(view)


# Run as the service, then (after the role switch) as the login, in one transaction sent as one query string
# (values quoted by psycopg): one round trip. Lookups run as statements prepared once per connection (EXECUTE in the
# same string), so a lookup is planned once, not per request.
IN_FORCE = ("select set_config('role', $1, true), (select a.content_sha256 from ndc_meta.applied_agreements a"
            " where a.agreement_id = $2 and statement_timestamp() >= a.starts_at"
            " and statement_timestamp() < a.expires_at), (select max(publication_id) from ndc_meta.publications)")
IN_FORCE_NAME = "ndc_in_force"


PLAIN = re.compile(KEY_ONLY)


def _literal(conn: psycopg.AsyncConnection, value: object) -> str:
    """``value`` as an SQL literal: a plain name or key (letters, digits, ``_.-``: nothing to escape) directly,
    anything else quoted by psycopg."""
    if isinstance(value, str) and PLAIN.match(value):
        return f"'{value}'"
    return sql.Literal(value).as_string(conn)


async def _read(service: Service, login: str, agreement_id: str, statement: str, values: tuple,
                logged: Logged) -> tuple:
    """The agreement in force now and the latest publication (as the service), then ``statement`` (its ``$n``
    bound to ``values``) as ``login``, in one transaction. Returns the statement's row."""
    started = time.perf_counter()
    try:
        async with service.pool.connection() as conn:
            prepared = service.pool.prepared.setdefault(conn, set())
            name = "ndc_" + hashlib.sha256(statement.encode()).hexdigest()[:20]
            # prepared as the service (the check) and as the login (the read: only it may name the agency's schema)
            check = "" if IN_FORCE_NAME in prepared else f"prepare {IN_FORCE_NAME} as {IN_FORCE}; "
            read = "" if name in prepared else f"prepare {name} as {statement}; "
            arguments = f"({', '.join(_literal(conn, v) for v in values)})" if values else ""
            cursor = psycopg.AsyncClientCursor(conn)
            try:
                await cursor.execute(f"{check}begin; execute {IN_FORCE_NAME}({_literal(conn, login)}, "
                                     f"{_literal(conn, agreement_id)}); {read}execute {name}{arguments}; commit")
            except psycopg.DatabaseError:
                await _forget_prepared(conn, prepared)
                raise
            prepared.update((IN_FORCE_NAME, name))
            while cursor.description is None:  # past PREPARE and BEGIN
                cursor.nextset()
            _, sha, publication = await cursor.fetchone()
            cursor.nextset()
            while cursor.description is None:  # past PREPARE
                cursor.nextset()
            found = await cursor.fetchone()
    except psycopg.errors.InsufficientPrivilege:
        raise Refused(403, f"login {login} is not admitted to this agreement's views (an approval must list it)"
                      ) from None
    except psycopg.errors.InvalidParameterValue:
        raise Refused(403, f"login {login} is not an agency login the service may act as") from None
    except psycopg.errors.QueryCanceled:
        raise Refused(503, "the warehouse did not answer in time") from None
    except (psycopg.OperationalError, psycopg.InterfaceError):
        raise Refused(503, "the warehouse is not reachable") from None
    finally:
        logged.db_ms = (time.perf_counter() - started) * 1000
    logged.publication_id = publication
    if sha is None:
        raise Refused(403, f"agreement {agreement_id} is not in force (expired, withdrawn or not yet valid)")
    return found


async def _forget_prepared(conn: psycopg.AsyncConnection, prepared: set[str]) -> None:
    """After an error the connection's prepared statements are unknown (PREPARE outlives a rollback): start over."""
    prepared.clear()
    if conn.info.transaction_status.name == "INERROR":
        await conn.rollback()
    if not conn.closed:
        await conn.execute("deallocate all")


@functools.lru_cache(maxsize=4096)
def _statement(kind: str, schema: str, view: str, columns: tuple[str, ...]) -> str:
    """The read of a lookup or a page, identifiers quoted, values (keys, a page's bound and its size) as ``$1``...
    (bound per request). Identifiers come from applied agreements and were checked at apply; checked again here."""
    target = ".".join(f'"{part}"' for part in (_checked(schema), _checked(view)))
    names = ", ".join(f'"{_checked(c)}"' for c in columns)
    if kind == "lookup":
        return f"select coalesce(json_agg(v), '[]')::text, count(*) from {target} v where v.{names} = $1"
    bound = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
    condition, limit_at = (f"where ({names}) > ({bound})", len(columns) + 1) if kind == "after" else ("", 1)
    return (f"select coalesce(json_agg(t), '[]')::text, count(*) from (select * from {target} v {condition}"
            f" order by {names} limit ${limit_at}::int) t")


def _checked(name: str) -> str:
    if not is_identifier(name):
        raise Refused(400, f"not a valid name: {name!r}")
    return name


def _cursor(values: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode().rstrip("=")


def _uncursor(cursor: str, width: int) -> list:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Refused(400, "the cursor is not one this service gave (use the previous page's `next`)") from None
    if not isinstance(values, list) or len(values) != width or not all(isinstance(v, str | int | float)
                                                                        for v in values):
        raise Refused(400, "the cursor is not one this service gave (use the previous page's `next`)")
    return values


async def _lookup(service: Service, auth: HTTPAuthorizationCredentials | None, agreement_id: str, view: str,
                  key: str, purpose: str | None, logged: Logged) -> Response:
    agreements, contracts = await service.agreements()
    known = agreements.get(agreement_id)
    spec = known.lookup_keys.get(view) or {} if known else {}
    if spec.get("given") == "pseudonym" and PSEUDONYM.match(key):
        logged.key_digest = key  # logged as the agreement's HMAC, refused or not
    elif spec.get("given") == "key":
        logged.key = key
    credential = await _authenticate(service, auth, "agency", logged)
    applied, contract = _agreement_of(agreements, contracts, credential, agreement_id, view, purpose, logged)
    logged.contract_version = contract
    if "column" not in spec:
        raise Refused(400, f"view {view} of agreement {agreement_id} has no single key to look up: read "
                           "its pages")
    if spec["given"] == "pseudonym" and not PSEUDONYM.match(key):
        raise Refused(400, "this view is looked up by the agreement's pseudonym (64 hexadecimal characters), not "
                           "by the key in clear")
    statement = _statement("lookup", f"agency_{applied.consumer}", view, (spec["column"],))
    body, count = await _read(service, credential.login, agreement_id, statement, (key,), logged)
    logged.rows = count
    if not count:
        raise Refused(404, "no record with this key in what the agreement shares")
    head = json.dumps({"agreement": agreement_id, "view": view, "publication_id": logged.publication_id,
                       "contract_version": contract}, ensure_ascii=False)
    return Response(f"{head[:-1]}, \"record\": {body[1:-1]}}}", media_type="application/json")


async def _page(service: Service, auth: HTTPAuthorizationCredentials | None, agreement_id: str, view: str,
                after: str | None, limit: int, purpose: str | None, logged: Logged) -> Response:
    agreements, contracts = await service.agreements()
    credential = await _authenticate(service, auth, "agency", logged)
    applied, contract = _agreement_of(agreements, contracts, credential, agreement_id, view, purpose, logged)
    logged.contract_version = contract
    spec = applied.lookup_keys.get(view) or {}
    order = spec.get("order") or []
    if not order:
        raise Refused(400, f"view {view} of agreement {agreement_id} shows no key to page by")
    bound = _uncursor(after, len(order)) if after else ()
    statement = _statement("after" if bound else "first", f"agency_{applied.consumer}", view, tuple(order))
    body, count = await _read(service, credential.login, agreement_id, statement, (*bound, limit), logged)
    rows = json.loads(body)
    logged.rows = count
    if spec.get("column"):
        logged.returned = [str(r[spec["column"]]) for r in rows]
        logged.returned_are_digests = spec["given"] == "pseudonym"
    following = _cursor([rows[-1][c] for c in order]) if count == limit else None
    return JSONResponse({"agreement": agreement_id, "view": view, "publication_id": logged.publication_id,
                         "contract_version": contract, "rows": rows, "next": following})


async def _track(service: Service, auth: HTTPAuthorizationCredentials | None, pin: str, logged: Logged
                 ) -> Response:
    from ndc.service.tracker import track

    await _authenticate(service, auth, "tracker", logged)
    receipts = await asyncio.to_thread(track, service.settings.service_url, pin)
    logged.rows = len(receipts)
    return JSONResponse({"receipts": [r.as_json() for r in receipts]})


async def _answer(service: Service, logged: Logged, started: float, work) -> Response:
    """Run ``work``; log the request (refused or answered) and wait until its row is committed; then answer."""
    try:
        response = await work()
    except Refused as refused:
        logged.reason = refused.reason
        response = _problem(refused.status, refused.reason, refused.headers)
    except (psycopg.OperationalError, psycopg.InterfaceError, NdcError):  # NdcError: a connection could not reopen
        logged.reason = "the warehouse is not reachable"
        response = _problem(503, logged.reason)
    except Exception:  # still logged, with no data
        log.exception("request %s failed", logged.operation)
        logged.reason = "internal error"
        response = _problem(500, logged.reason)
    logged.status = response.status_code
    logged.total_ms = (time.perf_counter() - started) * 1000
    try:
        await service.log.submit(logged)
    except Exception:
        return _problem(503, "the request could not be logged: nothing is answered unlogged")
    return response


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="NDC data-sharing service", version="1", lifespan=lifespan, docs_url="/docs",
                  redoc_url=None, description=(
                      "Look up one record, or read pages, of a view a sharing agreement grants your agency; see "
                      "who received a citizen's record (the citizen portal). Every request is a logged sharing "
                      "transaction. Authenticate with `Authorization: Bearer <token>` (`ndc service token issue`); "
                      "name the purpose of each agency request in `X-NDC-Purpose`."))
    app.state.service = service
    refusals = {s: {"model": Problem} for s in (400, 401, 403, 404, 429, 503)}

    @app.get(API + "/agreements/{agreement_id}/views/{view}/records/{key}", response_model=Record,
             responses=refusals, summary="Look up one record by its key")
    async def lookup(agreement_id: Annotated[str, Path(pattern=NAME_ONLY)],
                     view: Annotated[str, Path(pattern=NAME_ONLY)],
                     key: Annotated[str, Path(pattern=KEY_ONLY, description="the PIN or enterprise code, or the "
                                                                       "agreement's pseudonym of it")],
                     purpose: Annotated[str | None, Header(alias="X-NDC-Purpose", pattern=NAME_ONLY)] = None,
                     auth: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None) -> Response:
        started = time.perf_counter()
        logged = Logged(operation="lookup", status=0, agreement_id=agreement_id, view=view, purpose=purpose)
        return await _answer(service, logged, started,
                             lambda: _lookup(service, auth, agreement_id, view, key, purpose, logged))

    @app.get(API + "/agreements/{agreement_id}/views/{view}/records", response_model=Page, responses=refusals,
             summary="Read a page of an agreed view, in key order")
    async def page(agreement_id: Annotated[str, Path(pattern=NAME_ONLY)], view: Annotated[str, Path(pattern=NAME_ONLY)],
                   after: Annotated[str | None, Query(max_length=512, description="the previous page's `next`")] = None,
                   limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                   purpose: Annotated[str | None, Header(alias="X-NDC-Purpose", pattern=NAME_ONLY)] = None,
                   auth: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None) -> Response:
        started = time.perf_counter()
        logged = Logged(operation="page", status=0, agreement_id=agreement_id, view=view, purpose=purpose)
        return await _answer(service, logged, started,
                             lambda: _page(service, auth, agreement_id, view, after, limit, purpose, logged))

    @app.get(API + "/tracker/{pin}", response_model=Tracked, responses=refusals,
             summary="Every agency that received a citizen's record (for the citizen portal)")
    async def tracker(pin: Annotated[str, Path(pattern=r"^[0-9]{12}$", description="the citizen's PIN")],
                      auth: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None) -> Response:
        started = time.perf_counter()
        logged = Logged(operation="tracker", status=0)
        return await _answer(service, logged, started, lambda: _track(service, auth, pin, logged))

    @app.get("/health", include_in_schema=False)
    async def health() -> dict:
        return {"status": "ok", "logged": service.log.written}

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return await _refused_early(service, request, 400, "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def not_here(request: Request, exc: StarletteHTTPException) -> Response:
        return await _refused_early(service, request, exc.status_code, str(exc.detail))

    return app


class FastLookups:
    """The lookup route without FastAPI's per-request machinery (the hot path: one record by key). A request whose
    path and headers are well formed is answered here by the same code as the route; anything else goes to the
    FastAPI application, which validates, refuses with the reasons, and describes the API."""

    PATH = re.compile(f"^{API}/agreements/({NAME})/views/({NAME})/records/({KEY})$")  # the route's own patterns
    PURPOSE = re.compile(NAME_ONLY)

    def __init__(self, app: FastAPI) -> None:
        self.app, self.service = app, app.state.service

    async def __call__(self, scope, receive, send) -> None:
        found = self.PATH.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "GET" else None
        if found is not None:
            headers = dict(scope["headers"])
            purpose = headers.get(b"x-ndc-purpose", b"").decode("latin-1") or None
            if purpose is None or self.PURPOSE.match(purpose):
                started = time.perf_counter()
                agreement_id, view, key = found.groups()
                auth = _bearer(headers.get(b"authorization", b"").decode("latin-1"))
                logged = Logged(operation="lookup", status=0, agreement_id=agreement_id, view=view, purpose=purpose)
                response = await _answer(self.service, logged, started,
                                         lambda: _lookup(self.service, auth, agreement_id, view, key, purpose, logged))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _bearer(header: str) -> HTTPAuthorizationCredentials | None:
    """As FastAPI's HTTPBearer reads the Authorization header."""
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        return None
    return HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials)


async def _refused_early(service: Service, request: Request, status: int, reason: str) -> Response:
    """A request refused before its handler (no such path, a malformed key or header) is logged too."""
    logged = Logged(operation="invalid", status=status, reason=reason[:500])
    if request.url.path.startswith(API):
        try:
            await service.log.submit(logged)
        except Exception:
            return _problem(503, "the request could not be logged: nothing is answered unlogged")
    return _problem(status, reason)
