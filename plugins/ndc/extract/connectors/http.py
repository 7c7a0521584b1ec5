"""REST API sources (the insurance API): paginated JSON over httpx, bearer token, retries with backoff.

The URL is ``http(s)://:<token>@host:port/<base path>`` (Airflow's HTTP connection URI; the token is the
password). The API offers, per resource:
- ``GET /v1/<resource>/schema``: its fields and types, compared with the contract before anything loads;
- ``GET /v1/<resource>?updated_from=&updated_to=&limit=&cursor=``: the rows of a window, keyset-paginated.
Transient failures (HTTP 429, 500, 502, 503, 504, timeouts, dropped connections, and a 200 whose JSON body is
cut short or malformed) are retried with exponential backoff and jitter, honouring ``Retry-After``, up to
``NDC_HTTP_ATTEMPTS`` attempts (8); anything else fails the task with the URL and status. A page that is still
broken after the last attempt fails the task naming its URL and a tally of what its attempts met.

A source that would exhaust the hub (hostile or broken) is stopped by four limits, each blocking the extract
with an :class:`~ndc.extract.connectors.base.InputLimitError` naming the page's URL (never the token, which
travels in a header), the limit, what was measured and the setting; the run's staged batches are discarded, so
nothing of it is merged, now or by a later run:
- a response body over ``NDC_HTTP_MAX_BODY_BYTES`` (64 MiB): bodies are streamed and the read stops at the cap
  (a declared ``Content-Length`` over it is refused before reading); gzip and deflate are decoded here with the
  output bounded, so a compression bomb stops at the cap too; other encodings are refused;
- the whole extract past ``NDC_HTTP_DEADLINE_SECONDS`` (6 h): checked before each request, while a body
  streams in, before each retry's wait, and each request's timeouts are cut to the time left;
- more than ``NDC_HTTP_MAX_PAGES`` pages (100,000) in one extract;
- a ``next_cursor`` the extract has already followed (a loop; not retried: it would loop again).
What the ledger and alerts keep of these errors leaves the cursor out (it can encode a row's key); the task log
has it.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

import httpx
import polars as pl

from ndc.config.sources import TableConfig
from ndc.errors import NdcError
from ndc.extract.connectors.base import Chunk, ColumnSet, ExtractRequest, InputLimitError
from ndc.settings import DEFAULT_HTTP_ATTEMPTS, get_settings

log = logging.getLogger(__name__)

FAMILIES = {"string": "text", "date": "date", "timestamp": "timestamptz", "integer": "integer",
            "number": "float", "boolean": "boolean"}
RETRYABLE = {429, 500, 502, 503, 504}
PAGE_LIMIT = 5000
TIMEOUT, CONNECT_TIMEOUT = 30.0, 10.0
ERROR_BODY_BYTES = 4096  # what is read of a refused request's body, to show its start
_CURSOR = re.compile(r"(cursor=)[^&\s]+")
# Content-Encoding -> zlib window bits (47: a gzip or a zlib header, detected)
DECODERS = {"gzip": 47, "x-gzip": 47, "deflate": 47}


class RetryPolicy:
    def __init__(self, attempts: int = DEFAULT_HTTP_ATTEMPTS, base: float = 0.2, cap: float = 10.0,
                 seed: int | None = None) -> None:
        self.attempts, self.base, self.cap = attempts, base, cap
        self.random = random.Random(seed)  # noqa: S311 - jitter, not security

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(self.cap, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return min(self.cap, self.base * 2 ** attempt) * (0.5 + self.random.random() / 2)


class HttpConnector:
    def __init__(self, url: str, retry: RetryPolicy | None = None) -> None:
        parts = urlsplit(url)
        token = unquote(parts.password or "")
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.base_url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        settings = get_settings()
        self.retry = retry or RetryPolicy(attempts=settings.http_attempts)
        self.max_body, self.max_pages = settings.http_max_body_bytes, settings.http_max_pages
        self.deadline_seconds = settings.http_deadline.total_seconds()
        self.started = time.monotonic()  # the extract's clock: the connector is opened for one extract
        self.client = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(TIMEOUT, connect=CONNECT_TIMEOUT),
                                   headers={"Authorization": f"Bearer {token}", "Accept": "application/json",
                                            "Accept-Encoding": "gzip, deflate"})
        self.retries = 0

    def _left(self, shown: str, wait: float = 0.0) -> float:
        """Seconds left before the extract's deadline after ``wait`` more; past it, the extract is blocked."""
        elapsed = time.monotonic() - self.started
        if elapsed + wait > self.deadline_seconds:
            waiting = f" and a retry would wait {wait:.1f} s more" if wait else ""
            raise _limit(shown, f"the extract has run {elapsed:,.1f} s{waiting}, past its deadline of "
                                f"{self.deadline_seconds:,.0f} s (NDC_HTTP_DEADLINE_SECONDS); nothing of this run "
                                "merged — rerun the interval, or raise the setting if the source is this slow",
                         "NDC_HTTP_DEADLINE_SECONDS")
        return self.deadline_seconds - elapsed - wait

    def _body(self, response: httpx.Response, shown: str, cap: int, *, strict: bool = True) -> bytes:
        """The response's body, decoded (gzip, deflate), read as a stream and never past ``cap`` bytes: over it,
        ``strict`` refuses the page, else the body is cut there (a refused request's body, shown in part)."""
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
        if encoding not in DECODERS and encoding != "identity":
            raise NdcError(f"GET {shown}: HTTP {response.status_code} with Content-Encoding {encoding!r}, which the "
                           "connector does not decode (it asks for gzip or deflate)")
        declared = response.headers.get("Content-Length", "")
        if strict and encoding == "identity" and declared.isdigit() and int(declared) > cap:
            raise self._over_cap(shown, f"declares a Content-Length of {int(declared):,} bytes")
        decoder = zlib.decompressobj(DECODERS[encoding]) if encoding in DECODERS else None
        body = bytearray()
        try:
            for raw in response.iter_raw():
                self._left(shown)  # a source trickling its body is stopped at the deadline too
                body += decoder.decompress(raw, cap + 1 - len(body)) if decoder else raw
                if len(body) > cap:
                    break
            else:
                if decoder:
                    body += decoder.flush()
        except zlib.error as exc:  # a body cut short or garbled on its way: the caller retries the page
            raise httpx.DecodingError(f"{encoding} body cannot be decoded: {exc}") from None
        if len(body) > cap and strict:
            raise self._over_cap(shown, f"sent more than {cap:,} bytes" + (f" ({encoding}-decoded)" if decoder
                                                                            else ""))
        return bytes(body[:cap])

    def _over_cap(self, shown: str, measured: str) -> InputLimitError:
        return _limit(shown, f"the response {measured}, more than the body limit of {self.max_body:,} bytes "
                             "(NDC_HTTP_MAX_BODY_BYTES); not read past the limit, nothing of this run merged — ask "
                             "for smaller pages or raise the setting", "NDC_HTTP_MAX_BODY_BYTES")

    def _fetch(self, path: str, params: dict | None, shown: str) -> tuple[int, httpx.Headers, bytes]:
        """(status, headers, body) of one request: a 200's whole body within the cap, else the start of it."""
        left = self._left(shown)
        timeout = httpx.Timeout(min(TIMEOUT, left), connect=min(CONNECT_TIMEOUT, left))
        with self.client.stream("GET", path, params=params, timeout=timeout) as response:
            ok = response.status_code == 200
            body = self._body(response, shown, self.max_body if ok else ERROR_BODY_BYTES, strict=ok)
            return response.status_code, response.headers, body

    def get(self, path: str, params: dict | None = None) -> dict:
        shown = f"{self.base_url}{path}" + (f"?{urlencode(params)}" if params else "")
        seen: Counter = Counter()
        for attempt in range(self.retry.attempts):
            try:
                status, headers, body = self._fetch(path, params, shown)
            except (httpx.TransportError, httpx.DecodingError) as exc:
                problem, retry_after = f"{type(exc).__name__}: {exc}", None
            else:
                if status == 200:
                    try:
                        return json.loads(body)
                    except ValueError as exc:  # a body cut short (or garbled) on its way: ask for the page again
                        problem, retry_after = _bad_json(body, headers.get("Content-Length"), exc), None
                elif status not in RETRYABLE:
                    text = body.decode("utf-8", errors="replace")
                    raise NdcError(f"GET {shown}: HTTP {status}: {text[:300]}",
                                   summary=f"GET {self.base_url}{path}: HTTP {status}")
                else:
                    problem, retry_after = f"HTTP {status}", headers.get("Retry-After")
            seen[problem.split(" (", 1)[0]] += 1
            if attempt + 1 == self.retry.attempts:
                tally = ", ".join(f"{kind} ×{n}" for kind, n in seen.most_common())
                raise NdcError(f"GET {shown}: still failing after {self.retry.attempts} attempts ({tally}; the "
                               f"last: {problem})")
            wait = self.retry.delay(attempt, retry_after)
            self._left(shown, wait)
            self.retries += 1
            log.info("GET %s: %s; retry %d in %.2f s", shown, problem, attempt + 1, wait)
            time.sleep(wait)
        raise AssertionError("unreachable")

    def column_sets(self, table: TableConfig, request: ExtractRequest | None = None) -> list[ColumnSet]:
        body = self.get(f"/v1/{table.source_table}/schema")
        fields = {f["name"]: FAMILIES.get(f["type"], f["type"]) for f in body.get("fields", [])}
        return [ColumnSet(f"resource {self.base_url}/v1/{table.source_table}", fields)]

    def chunks(self, request: ExtractRequest) -> Iterator[Chunk]:
        params = {"updated_from": _iso(request.window[0]), "updated_to": _iso(request.window[1]),
                  "limit": min(PAGE_LIMIT, request.batch_rows)}
        records: list[dict] = []
        cursor = None
        followed: dict[str, int] = {}  # every cursor of this extract and the page that handed it out
        path = f"/v1/{request.table.source_table}"
        for pages in range(1, self.max_pages + 1):
            query = {**params, **({"cursor": cursor} if cursor else {})}
            page = self.get(path, query)
            records.extend(page.get("data", []))
            cursor = page.get("next_cursor")
            if cursor is not None and str(cursor) in followed:
                log.error("page %d repeats the next_cursor of page %d: %r", pages, followed[str(cursor)], cursor)
                raise _limit(f"{self.base_url}{path}?{urlencode(query)}",
                             f"page {pages:,} hands out the next_cursor page {followed[str(cursor)]:,} handed out, "
                             "which this extract has already followed — the source's pagination loops; nothing of "
                             "this run merged", "repeated_cursor")
            if cursor is not None:
                followed[str(cursor)] = pages
            if len(records) >= request.batch_rows or (not cursor and records):
                yield Chunk(_frame(records, request.columns))
                records = []
            if not cursor:
                return
        raise _limit(f"{self.base_url}{path}?{urlencode(query)}",
                     f"page {self.max_pages:,} still hands out a next_cursor — more than the page limit of "
                     f"{self.max_pages:,} pages in one extract (NDC_HTTP_MAX_PAGES); nothing of this run merged — "
                     "extract a shorter interval or raise the setting", "NDC_HTTP_MAX_PAGES")

    def keys(self, table: TableConfig, batch_rows: int) -> Iterator[pl.DataFrame]:
        raise NotImplementedError("the API lists no keys: deletes arrive as tombstones")

    def close(self) -> None:
        self.client.close()


def _limit(shown: str, text: str, limit: str) -> InputLimitError:
    """The error of a limit the page at ``shown`` broke; what is kept of it (its summary) leaves the cursor out."""
    kept = _CURSOR.sub(r"\1…", shown)
    return InputLimitError(f"GET {shown}: {text}", limit=limit, summary=f"GET {kept}: {text}")


def _bad_json(body: bytes, declared: str | None, exc: ValueError) -> str:
    """What was wrong with a 200 whose body is not a JSON document: its size against the declared length."""
    size = f"{len(body):,} bytes" + (f" of a declared {int(declared):,}" if declared and declared.isdigit() else "")
    return f"HTTP 200 with a truncated or malformed JSON body ({size}: {exc})"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _frame(records: list[dict], columns: list[str]) -> pl.DataFrame:
    """JSON records as a frame of the contract's columns; the gate casts them (dates arrive as text)."""
    return pl.DataFrame({c: [r.get(c) for r in records] for c in columns}, strict=False)
