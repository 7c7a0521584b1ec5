"""The ledger: one append-only, hash-chained row per hand-off.

Each row carries the hash of the row before it (the first row's ``prev_hash`` is 64 zeros) and its own hash,
``sha256(prev_hash + canonical JSON of its fields)``. Rows are appended under a table lock so the chain never
forks; a trigger refuses UPDATE, DELETE and TRUNCATE. Each appended row's id and hash are also written to the
anchor (:mod:`ndc.audit.anchor`, a database the ledger's writer cannot rewrite). ``verify`` recomputes the chain from
the first row and compares it with the anchor, so an edited row, a deleted row, a deleted tail and a rewritten
chain are each named.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

import psycopg
from psycopg.types.json import Jsonb

from ndc.audit import anchor

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
    """Append one entry in its own transaction; returns its id and hash (the new head of the chain). Called inside
    an outer transaction, the row is not anchored (it could still roll back): ``ndc ledger anchor`` does it later."""
    outer = conn.info.transaction_status.name != "IDLE"
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
        identity = conn.execute("select ledger_uuid::text from ndc_meta.ledger_identity").fetchone()
    if identity and not outer:  # after the commit: the anchor only ever holds rows that exist
        anchor.record(anchor.anchor_url(url_of(conn)), identity[0], conn.info.dbname, [(ledger_id, digest)])
    return ledger_id, digest


def url_of(conn: psycopg.Connection) -> str:
    """The URL of ``conn``'s database (with its password: the anchor is reached with the same credentials unless
    ``NDC_LEDGER_ANCHOR_URL`` says otherwise)."""
    info = conn.info
    secret = f":{quote(info.password, safe='')}" if info.password else ""
    host = info.host if not info.host.startswith("/") else quote(info.host, safe="")
    return f"postgresql://{quote(info.user, safe='')}{secret}@{host}:{info.port}/{info.dbname}"


@dataclass
class VerifyResult:
    rows: int
    head: str
    problems: list[str]
    warnings: list[str] = field(default_factory=list)
    anchored: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(conn: psycopg.Connection) -> VerifyResult:
    """Recompute the chain from the first row; every broken link is named by its ledger id."""
    problems: list[str] = []
    hashes: dict[int, str] = {}
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
            hashes[values["ledger_id"]] = values["row_hash"]
    result = VerifyResult(rows=count, head=prev, problems=problems)
    _compare_with_anchor(conn, hashes, result)
    return result


def _compare_with_anchor(conn: psycopg.Connection, hashes: dict[int, str], result: VerifyResult) -> None:
    """What the chain alone cannot show: a deleted tail, a rewritten chain, a replaced ledger."""
    with conn.transaction():
        identity = conn.execute("select ledger_uuid::text from ndc_meta.ledger_identity").fetchone()
    if identity is None:
        result.problems.append("ndc_meta.ledger_identity is empty: the ledger's identity was removed")
        return
    url = anchor.anchor_url(url_of(conn))
    anchored = anchor.anchored(url, identity[0])
    if anchored is None:
        result.problems.append("the anchor could not be read: the chain alone cannot show a deleted tail or a "
                               "rewritten chain")
        return
    if not anchored and hashes:
        result.problems.append(f"the anchor holds none of this ledger's {len(hashes)} rows (dropped or never "
                               "written): `ndc ledger anchor` re-anchors only if the chain is trusted")
    result.anchored = len(anchored)
    last = max(hashes, default=0)
    tail = sorted(i for i in anchored if i > last)
    if tail:
        result.problems.append(f"ledger_id {last + 1}..{tail[-1]}: deleted at the end of the ledger (anchored up to "
                               f"{tail[-1]}, the ledger ends at {last})")
    differing = sorted(i for i, h in anchored.items() if i in hashes and hashes[i] != h)
    if differing:
        result.problems.append(f"ledger_id {differing[0]}: hash differs from its anchor — the chain was rewritten "
                               f"from here ({len(differing)} anchored row(s) differ)")
    for other, highest in anchor.other_ledgers(url, conn.info.dbname, identity[0]):
        result.problems.append(f"the anchor holds another ledger of database {conn.info.dbname} (identity {other}, "
                               f"up to ledger_id {highest}): this ledger replaced it")
    unanchored = [i for i in hashes if i not in anchored]
    if unanchored:
        result.warnings.append(f"{len(unanchored)} row(s) not anchored yet (from ledger_id {min(unanchored)}): "
                               "`ndc ledger anchor` anchors them")


def anchor_missing(conn: psycopg.Connection) -> int:
    """Anchor every ledger row not anchored yet (after the anchor was unreachable); returns how many."""
    with conn.transaction():
        identity = conn.execute("select ledger_uuid::text from ndc_meta.ledger_identity").fetchone()
        rows = conn.execute("select ledger_id, row_hash from ndc_meta.ledger order by ledger_id").fetchall()
    url = anchor.anchor_url(url_of(conn))
    known = anchor.anchored(url, identity[0]) or {}
    return anchor.record(url, identity[0], conn.info.dbname, [(i, h) for i, h in rows if i not in known])
