"""The ledger: one append-only, hash-chained row per hand-off.

Each row carries the hash of the row before it (the first row's ``prev_hash`` is 64 zeros) and its own hash,
``sha256(prev_hash + canonical JSON of its fields)``. Rows are appended under a table lock so the chain never
forks; a trigger refuses UPDATE, DELETE and TRUNCATE. ``verify`` recomputes the chain from the first row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg.types.json import Jsonb

GENESIS = "0" * 64
_FIELDS = (
    "ledger_id", "recorded_at", "kind", "source", "target", "run_id", "interval_start", "interval_end",
    "rows_in", "rows_loaded", "rows_quarantined", "contract_name", "contract_version", "duration_ms",
    "outcome", "details",
)


@dataclass
class LedgerEntry:
    kind: str
    source: str
    target: str
    rows_in: int
    rows_loaded: int
    rows_quarantined: int
    duration_ms: int
    outcome: str
    run_id: str | None = None
    interval_start: datetime | None = None
    interval_end: datetime | None = None
    contract_name: str | None = None
    contract_version: str | None = None
    details: dict = field(default_factory=dict)


def _canonical(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return value


def row_hash(prev_hash: str, values: dict) -> str:
    body = json.dumps({k: _canonical(values[k]) for k in _FIELDS}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def append(conn: psycopg.Connection, entry: LedgerEntry) -> tuple[int, str]:
    """Append one entry in its own transaction; returns its id and hash (the new head of the chain)."""
    with conn.transaction():
        conn.execute("lock table ndc_meta.ledger in share row exclusive mode")
        last = conn.execute(
            "select ledger_id, row_hash from ndc_meta.ledger order by ledger_id desc limit 1").fetchone()
        ledger_id, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        values = {**entry.__dict__, "ledger_id": ledger_id, "recorded_at": datetime.now(UTC)}
        values["details"] = json.loads(json.dumps(values["details"], default=str))
        digest = row_hash(prev, values)
        columns = [*_FIELDS, "prev_hash", "row_hash"]
        placeholders = ", ".join(["%s"] * len(columns))
        params = [Jsonb(values[k]) if k == "details" else values[k] for k in _FIELDS]
        conn.execute(
            f"insert into ndc_meta.ledger ({', '.join(columns)}) values ({placeholders})",
            [*params, prev, digest],
        )
    return ledger_id, digest


@dataclass
class VerifyResult:
    rows: int
    head: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(conn: psycopg.Connection) -> VerifyResult:
    """Recompute the chain from the first row; every broken link is named by its ledger id."""
    problems: list[str] = []
    prev, expected_id, count = GENESIS, 1, 0
    with conn.cursor(name="ndc_ledger_verify") as cur:
        cur.execute(f"select {', '.join(_FIELDS)}, prev_hash, row_hash from ndc_meta.ledger order by ledger_id")
        for row in cur:
            values = dict(zip([*_FIELDS, "prev_hash", "row_hash"], row, strict=True))
            count += 1
            if values["ledger_id"] != expected_id:
                problems.append(f"ledger_id {expected_id}..{values['ledger_id'] - 1}: rows missing")
            if values["prev_hash"] != prev:
                problems.append(f"ledger_id {values['ledger_id']}: prev_hash does not match the row before")
            if row_hash(values["prev_hash"], values) != values["row_hash"]:
                problems.append(f"ledger_id {values['ledger_id']}: contents do not match its hash")
            prev, expected_id = values["row_hash"], values["ledger_id"] + 1
    return VerifyResult(rows=count, head=prev, problems=problems)
