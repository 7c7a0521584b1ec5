"""Client credentials of the sharing service: a bearer token per agency login (or per citizen portal, for the
tracker). The token is ``ndc_<id>.<secret>``; the warehouse keeps its id and the SHA-256 of its secret, never the
secret, and the ledger records each issue and revocation. The secret is shown once, when it is issued. Tokens are
written only through the custodian's functions (``ndc_meta.issue_service_token``, ``revoke_service_token``), and the
service accepts one only when the ledger records its issue."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from ndc.audit.handoff import record_event
from ndc.errors import NdcError
from ndc.identifiers import is_identifier

TOKEN = re.compile(r"^ndc_([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")
SCOPES = ("agency", "tracker")


@dataclass(frozen=True)
class Credential:
    """What the service knows of a token after checking it."""
    token_id: str
    scope: str
    login: str
    agency: str | None
    secret_sha256: str
    expires_at: datetime | None
    revoked_at: datetime | None

    def accepts(self, secret: str, now: datetime) -> bool:
        return (self.revoked_at is None and (self.expires_at is None or now < self.expires_at)
                and hmac.compare_digest(self.secret_sha256, secret_sha256(secret)))


def secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    found = TOKEN.match(token)
    return (found.group(1), found.group(2)) if found else None


def issue(conn: psycopg.Connection, *, login: str, scope: str = "agency", days: int | None = 365) -> str:
    """A new token for an agency login (scope ``agency``: the login must be one the platform registered) or for a
    citizen portal named ``login`` (scope ``tracker``). Returns the token; only its hash is kept."""
    if scope not in SCOPES:
        raise NdcError(f"token scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    if not is_identifier(login):
        raise NdcError(f"{login!r} is not a lower-case identifier (a login or a portal's name)")
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(days=days) if days else None
    try:
        with conn.transaction():
            agency = conn.execute("select ndc_meta.issue_service_token(%s, %s, %s, %s, %s)",
                                  (token_id, scope, login, secret_sha256(secret), expires_at)).fetchone()[0]
    except psycopg.errors.RaiseException as exc:
        raise NdcError(f"{exc.diag.message_primary} (listed in an agency file and applied with `ndc agreements "
                       "apply`)") from None
    record_event(conn, "service_token_issued", "service", login, None,
                 {"token_id": token_id, "scope": scope, "login": login, "consumer": agency,
                  "expires_at": expires_at.isoformat() if expires_at else None, "issued_by": conn.info.user})
    return f"ndc_{token_id}.{secret}"


def revoke(conn: psycopg.Connection, token_id: str, reason: str) -> None:
    """Revoke a token from now on (the service refuses it within ``NDC_SERVICE_CACHE_SECONDS``); recorded."""
    with conn.transaction():
        row = conn.execute("select * from ndc_meta.revoke_service_token(%s)", (token_id,)).fetchone()
    if row is None:
        raise NdcError(f"no token {token_id} in force (see `ndc service token list`)")
    record_event(conn, "service_token_revoked", "service", row[0], None,
                 {"token_id": token_id, "login": row[0], "consumer": row[1], "reason": reason})


# A token counts only when the ledger records its issue (a row written behind the ledger's back is refused).
CREDENTIAL_QUERY = ("select t.token_id, t.scope, t.login, t.agency, t.secret_sha256, t.expires_at, t.revoked_at"
                    " from ndc_meta.service_tokens t where t.token_id = %s and exists (select from ndc_meta.ledger l"
                    " where l.kind = 'service_token_issued' and l.details->>'token_id' = t.token_id)")


def listed(conn: psycopg.Connection) -> list[tuple]:
    """Every token: id, scope, login, agency, issued, expires, revoked (never a secret)."""
    rows = conn.execute("select token_id, scope, login, coalesce(agency, ''), issued_at, expires_at, revoked_at"
                        " from ndc_meta.service_tokens order by issued_at").fetchall()
    conn.commit()
    return rows
