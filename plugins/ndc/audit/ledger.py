"""The ledger: one append-only, hash-chained row per hand-off.

Each row carries the hash of the row before it (the first row's ``prev_hash`` is 64 zeros) and its own hash,
``sha256(prev_hash + canonical JSON of its fields)``. Rows are appended under a table lock so the chain never
forks; a trigger refuses UPDATE, DELETE and TRUNCATE, and another refuses a row that does not extend the chain.
In a deployment the ledger belongs to ``ndc_custodian``: its writer (the runtime role) may only INSERT and SELECT,
so it cannot disable those triggers. Each appended row's id and hash are also written to the anchor
(:mod:`ndc.audit.anchor`, a database the ledger's writer cannot rewrite). ``verify`` recomputes the chain from the
first row and compares it with the anchor, so an edited row, a deleted row, a deleted tail and a rewritten chain
are each named; it also checks each row's ``recorded_at`` against the anchor's time, and fails when a row has
waited longer than the grace (``NDC_LEDGER_ANCHOR_GRACE_SECONDS``) to be anchored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import psycopg
from psycopg.types.json import Jsonb

from ndc.audit import anchor
from ndc.errors import NdcError
from ndc.settings import get_settings

GENESIS = "0" * 64
LEDGER_LOCK = 727_007
CLOCK_SKEW = timedelta(minutes=5)  # between the writer's clock and the anchor's
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
        # Appenders queue here (the writer may not LOCK the table: it has INSERT and SELECT only).
        conn.execute("select pg_advisory_xact_lock(%s)", (LEDGER_LOCK,))
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
    identity: str | None = None
    waiting: list[tuple[int, str]] = field(default_factory=list)  # (ledger_id, row_hash) not anchored yet
    overdue: list[int] = field(default_factory=list)  # of those, waiting longer than the grace
    sealable: list[str] = field(default_factory=list)  # the problems `ndc ledger anchor --late` resolves

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(conn: psycopg.Connection) -> VerifyResult:
    """Recompute the chain from the first row; every broken link is named by its ledger id."""
    problems: list[str] = []
    hashes: dict[int, str] = {}
    recorded: dict[int, datetime] = {}
    prev, expected_id, count, latest = GENESIS, 1, 0, None
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
            if latest is not None and values["recorded_at"] < latest - CLOCK_SKEW:
                problems.append(f"ledger_id {values['ledger_id']}: recorded_at {values['recorded_at']} is before the "
                                f"row before it ({latest}): backdated")
            latest = values["recorded_at"] if latest is None else max(latest, values["recorded_at"])
            prev, expected_id = values["row_hash"], values["ledger_id"] + 1
            hashes[values["ledger_id"]] = values["row_hash"]
            recorded[values["ledger_id"]] = values["recorded_at"]
    result = VerifyResult(rows=count, head=prev, problems=problems)
    _compare_with_anchor(conn, hashes, recorded, result)
    return result


def _compare_with_anchor(conn: psycopg.Connection, hashes: dict[int, str], recorded: dict[int, datetime],
                         result: VerifyResult) -> None:
    """What the chain alone cannot show: a deleted tail, a rewritten chain, a replaced ledger."""
    with conn.transaction():
        identity = conn.execute("select ledger_uuid::text from ndc_meta.ledger_identity").fetchone()
    if identity is None:
        result.problems.append("ndc_meta.ledger_identity is empty: the ledger's identity was removed")
        return
    result.identity = identity[0]
    url = anchor.anchor_url(url_of(conn))
    sealed = anchor.anchored_with_times(url, identity[0])
    anchored = None if sealed is None else {i: h for i, (h, _) in sealed.items()}
    if anchored is None:
        result.problems.append("the anchor could not be read: the chain alone cannot show a deleted tail or a "
                               "rewritten chain")
        return
    if not anchored and hashes:
        result.sealable.append(f"the anchor holds none of this ledger's {len(hashes)} rows (dropped or never "
                               "written): `ndc ledger anchor --late` re-anchors them, only if the chain is trusted")
        result.problems.append(result.sealable[-1])
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
    result.waiting = [(i, h) for i, h in hashes.items() if i not in sealed]
    _check_times(recorded, sealed, result)


def _check_times(recorded: dict[int, datetime], sealed: dict[int, tuple[str, datetime]], result: VerifyResult) -> None:
    """A row is sealed after it was recorded, and within the grace; a row waiting longer fails verification."""
    grace = get_settings().ledger_anchor_grace
    now = datetime.now(UTC)
    before = sorted(i for i, (_, at) in sealed.items() if i in recorded and at < recorded[i] - CLOCK_SKEW)
    if before:
        result.problems.append(f"ledger_id {before[0]}: recorded_at {recorded[before[0]]} is after the anchor sealed "
                               f"it ({sealed[before[0]][1]}): {len(before)} row(s) claim a time they were not "
                               "written at")
    late = sorted(i for i, (_, at) in sealed.items() if i in recorded and at - recorded[i] > grace)
    if late:
        result.warnings.append(f"{len(late)} row(s) were anchored more than {grace} after they were recorded "
                               f"(from ledger_id {late[0]}): sealed late, with `ndc ledger anchor --late`")
    waiting = sorted(i for i in recorded if i not in sealed)
    result.overdue = overdue = [i for i in waiting if now - recorded[i] > grace]
    if overdue:
        result.sealable.append(f"{len(overdue)} row(s) not anchored for more than {grace} (from ledger_id "
                               f"{overdue[0]}, recorded {recorded[overdue[0]]}): they could have been rewritten "
                               "before they were sealed. Restore the anchor, then `ndc ledger anchor --late`")
        result.problems.append(result.sealable[-1])
    elif waiting:
        result.warnings.append(f"{len(waiting)} row(s) not anchored yet (from ledger_id {waiting[0]}): `ndc ledger "
                               f"anchor` anchors them; verify fails once one waits longer than {grace}")


def anchor_missing(conn: psycopg.Connection, *, late: bool = False) -> int:
    """Anchor every ledger row not anchored yet (after the anchor was unreachable); returns how many.

    The chain is verified first: a ledger that does not verify is not sealed as it is. A row waiting longer than
    the grace is sealed only with ``late`` (an operator's decision, itself recorded as a ledger row)."""
    result = verify(conn)
    conn.commit()
    problems = [p for p in result.problems if p not in result.sealable]
    if problems:
        raise NdcError("the ledger does not verify, so its rows are not anchored as they are:\n  "
                       + "\n  ".join(problems))
    if result.sealable and not late:
        raise NdcError("rows wait to be anchored longer than they may (NDC_LEDGER_ANCHOR_GRACE_SECONDS): check them, "
                       "then `ndc ledger anchor --late` seals them and records that they were sealed late:\n  "
                       + "\n  ".join(result.sealable))
    count = anchor.record(anchor.anchor_url(url_of(conn)), result.identity, conn.info.dbname, result.waiting)
    if result.sealable and count:
        late_ids = result.overdue or [i for i, _ in result.waiting]
        append(conn, LedgerEntry(kind="ledger_anchored_late", source="ledger", target="ledger_anchor", rows_in=count,
                                 rows_loaded=count, rows_quarantined=0, duration_ms=0, outcome="success",
                                 details={"ledger_ids": [late_ids[0], late_ids[-1]], "rows": len(late_ids)}))
    return count
