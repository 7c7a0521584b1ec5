"""REST API sources (the insurance API): paginated JSON over httpx, bearer token, retries with backoff.

The URL is ``http(s)://:<token>@host:port/<base path>`` (Airflow's HTTP connection URI; the token is the
password). The API offers, per resource:
- ``GET /v1/<resource>/schema``: its fields and types, compared with the contract before anything loads;
- ``GET /v1/<resource>?updated_from=&updated_to=&limit=&cursor=``: the rows of a window, keyset-paginated.
Transient failures (HTTP 429, 500, 502, 503, 504, timeouts, dropped connections, and a 200 whose JSON body is
cut short or malformed) are retried with exponential backoff and jitter, honouring ``Retry-After``, up to
``NDC_HTTP_ATTEMPTS`` attempts (8); anything else fails the task with the URL and status. A page that is still
broken after the last attempt fails the task naming its URL and a tally of what its attempts met.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

import httpx
import polars as pl

from ndc.config.sources import TableConfig
from ndc.errors import NdcError
from ndc.extract.connectors.base import Chunk, ColumnSet, ExtractRequest
from ndc.settings import DEFAULT_HTTP_ATTEMPTS, get_settings

log = logging.getLogger(__name__)

FAMILIES = {"string": "text", "date": "date", "timestamp": "timestamptz", "integer": "integer",
            "number": "float", "boolean": "boolean"}
RETRYABLE = {429, 500, 502, 503, 504}
PAGE_LIMIT = 5000


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
        self.retry = retry or RetryPolicy(attempts=get_settings().http_attempts)
        self.client = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(30.0, connect=10.0),
                                   headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
        self.retries = 0

    def get(self, path: str, params: dict | None = None) -> dict:
        shown = f"{self.base_url}{path}" + (f"?{urlencode(params)}" if params else "")
        seen: Counter = Counter()
        for attempt in range(self.retry.attempts):
            try:
                response = self.client.get(path, params=params)
            except httpx.TransportError as exc:
                problem, retry_after = f"{type(exc).__name__}: {exc}", None
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError as exc:  # a body cut short (or garbled) on its way: ask for the page again
                        problem, retry_after = _bad_json(response, exc), None
                elif response.status_code not in RETRYABLE:
                    raise NdcError(f"GET {shown}: HTTP {response.status_code}: {response.text[:300]}")
                else:
                    problem, retry_after = f"HTTP {response.status_code}", response.headers.get("Retry-After")
            seen[problem.split(" (", 1)[0]] += 1
            if attempt + 1 == self.retry.attempts:
                tally = ", ".join(f"{kind} ×{n}" for kind, n in seen.most_common())
                raise NdcError(f"GET {shown}: still failing after {self.retry.attempts} attempts ({tally}; the "
                               f"last: {problem})")
            wait = self.retry.delay(attempt, retry_after)
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
        while True:
            page = self.get(f"/v1/{request.table.source_table}", {**params, **({"cursor": cursor} if cursor else {})})
            records.extend(page.get("data", []))
            cursor = page.get("next_cursor")
            if len(records) >= request.batch_rows or (not cursor and records):
                yield Chunk(_frame(records, request.columns))
                records = []
            if not cursor:
                return

    def keys(self, table: TableConfig, batch_rows: int) -> Iterator[pl.DataFrame]:
        raise NotImplementedError("the API lists no keys: deletes arrive as tombstones")

    def close(self) -> None:
        self.client.close()


def _bad_json(response: httpx.Response, exc: ValueError) -> str:
    """What was wrong with a 200 whose body is not a JSON document: its size against the declared length."""
    declared = response.headers.get("Content-Length")
    size = f"{len(response.content):,} bytes" + (f" of a declared {int(declared):,}" if declared and
                                                   declared.isdigit() else "")
    return f"HTTP 200 with a truncated or malformed JSON body ({size}: {exc})"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _frame(records: list[dict], columns: list[str]) -> pl.DataFrame:
    """JSON records as a frame of the contract's columns; the gate casts them (dates arrive as text)."""
    return pl.DataFrame({c: [r.get(c) for r in records] for c in columns}, strict=False)
