"""A citizen's data tracker: every agency that received a person's record, when, under which agreement and
purpose, and how — from what the request log and the ledger prove, nothing else.

* **service**: a request of the sharing service that answered with the record (a lookup by the PIN or by the
  agreement's pseudonym of it, or a page that held it). The log keeps keys as each agreement's HMAC, so the PIN
  is turned into every agreement's HMAC (``ndc_meta.key_digests``) and those are looked up.
* **delivery**: a delivery (a ledger row) of an agreement whose view holds the person's record now, read from that
  agreement's own view (as its agency's group when the caller is the service). A delivery shares the whole view,
  so this is what the ledger proves of a delivery for one person; a record the view no longer holds is not listed.

SQL reads by an agency login are counted per view, not per person: they are not listed (``docs/service.md``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from ndc.identifiers import ident
from ndc.warehouse import database

SERVICE_RECEIPTS = """
with d as (select * from ndc_meta.key_digests(%(pin)s))
select r.agency, r.requested_at, r.agreement_id, r.purpose, r.view, r.login, r.operation
from ndc_meta.service_requests r join d on d.agreement_id = r.agreement_id and d.consumer = r.agency
where r.key_digest = d.digest and r.status = 200 and r.rows > 0
union all
select r.agency, r.requested_at, r.agreement_id, r.purpose, r.view, r.login, r.operation
from ndc_meta.service_requests r join d on d.agreement_id = r.agreement_id and d.consumer = r.agency
where r.returned_digests @> array[d.digest] and r.status = 200
"""


@dataclass(frozen=True)
class Receipt:
    agency: str
    channel: str  # service | delivery
    at: datetime
    agreement: str
    purpose: str | None
    view: str | None
    login: str | None

    def as_json(self) -> dict:
        return {"agency": self.agency, "channel": self.channel, "at": self.at.isoformat(),
                "agreement": self.agreement, "purpose": self.purpose, "view": self.view, "login": self.login}


def track(url: str, pin: str) -> list[Receipt]:
    """Every receipt of ``pin``'s record, oldest first. ``url``'s role reads the agreement views as their owner
    (the platform's role) or as each agency's group (the service's role)."""
    with database.connect(url) as conn:
        found = [Receipt(a, "service", at, agreement, purpose, view, login)
                 for a, at, agreement, purpose, view, login, _ in conn.execute(SERVICE_RECEIPTS, {"pin": pin})]
        conn.commit()
        found += _deliveries(conn, pin)
    return sorted(found, key=lambda r: (r.at, r.agency, r.channel))


def _deliveries(conn: psycopg.Connection, pin: str) -> list[Receipt]:
    applied = conn.execute("select a.agreement_id, a.consumer, a.purposes, a.lookup_keys, d.digest"
                           " from ndc_meta.applied_agreements a left join ndc_meta.key_digests(%s) d"
                           " on d.agreement_id = a.agreement_id and d.consumer = a.consumer order by 1",
                           (pin,)).fetchall()
    conn.commit()
    holding: dict[str, tuple[str, list[str], list[str]]] = {}
    member = not conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()[0] and \
        conn.execute("select pg_has_role('ndc_service', 'member')").fetchone()[0]
    conn.commit()
    for agreement_id, consumer, purposes, access, digest in applied:
        for view, spec in (access or {}).items():
            if spec.get("key") != "citizen_id" or not spec.get("column"):
                continue
            given = pin if spec["given"] == "key" else digest
            with conn.transaction():
                if member:
                    conn.execute("select set_config('role', %s, true)", (f"ndc_agency_{consumer}",))
                held = conn.execute(sql.SQL("select exists (select from {} v where v.{} = %s)").format(
                    ident(f"agency_{consumer}", view), ident(spec["column"])), (given,)).fetchone()[0]
            if held:
                holding.setdefault(agreement_id, (consumer, purposes, []))[2].append(view)
    if not holding:
        return []
    rows = conn.execute("select recorded_at, details->>'agreement', details->'views' from ndc_meta.ledger"
                        " where kind = 'delivery' and outcome = 'success' and details->>'agreement' = any(%s)"
                        " order by ledger_id", (sorted(holding),)).fetchall()
    conn.commit()
    receipts = []
    for at, agreement_id, views in rows:
        consumer, purposes, held = holding[agreement_id]
        for view in sorted(set(views or []) & set(held)):
            receipts.append(Receipt(consumer, "delivery", at, agreement_id, ", ".join(purposes) or None, view, None))
    return receipts
