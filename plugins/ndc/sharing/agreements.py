"""Consumer agencies and sharing agreements, declared as data, approved by a separate role, applied idempotently.

* **Agencies** (``dags/agencies/<name>.yml``): a NOLOGIN group role ``ndc_agency_<name>`` and LOGIN roles for its
  users or services, each with statement, idle-in-transaction and transaction time limits and a connection limit,
  and a schema ``agency_<name>`` holding its views. Roles are made by ``ndc_custodian``'s functions (migration
  0005): a login belongs to one agency, and is admitted to its group only while an approval lists it.
* **Agreements** (``dags/agreements/<id>.yml``): the consumer agency, the legal purpose, start and expiry dates and,
  per shared view, the columns granted, the columns masked (``pseudonym``: an HMAC-SHA256 of the value keyed per
  agreement and consumer, so two agencies cannot join their masked data; ``partial``: all but the last four
  characters starred; ``year``: a date generalised to its year) and a row filter.
* **Approval** is a row in ``ndc_meta.agreement_approvals`` binding the agreement's id to the SHA-256 of its file and
  to the consumer's logins: inserted by ``ndc agreements approve`` connecting as a member of ``ndc_approver``
  (``NDC_APPROVER_URL``), never by the platform's role, and recorded in the ledger. Approvals are append-only; an
  approver withdraws one with ``ndc agreements withdraw`` (recorded too). An agreement whose file changed after
  approval is unapproved again.
* **Apply** (``ndc agreements apply``) re-checks every approval (in force, recorded in the ledger, for this file)
  and creates ``security_barrier`` views ``agency_<consumer>.<view>`` over ``shared.<view>`` with the granted
  columns, masks and row filter. Each view calls ``ndc_meta.agency_read`` once per statement: it returns nothing
  outside the agreement's validity at the statement's time (an open transaction does not extend it) and counts the
  read per login and view. Views no approved, current agreement backs are dropped. DDL waits for readers' locks a
  bounded time (:mod:`ndc.warehouse.locks`). Each grant and revocation is a ledger row.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ndc.audit.handoff import record_event
from ndc.config.agreements import Agency, Agreement, ViewGrant, load_agencies, load_agreements
from ndc.errors import NdcError
from ndc.identifiers import ident
from ndc.settings import get_settings
from ndc.warehouse import database, locks

log = logging.getLogger(__name__)
APPROVER_ROLE = "ndc_approver"
VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")


def approve(approver_url: str, agreement: Agreement, agency: Agency, note: str | None = None) -> int:
    """Record the approval of ``agreement`` (this exact file) and of ``agency``'s logins, as the approver connected
    with ``approver_url``, in the approvals and in the ledger. Returns the approval's id."""
    if agency.name != agreement.consumer:
        raise NdcError(f"{agreement.path}: the consumer is {agreement.consumer}, not {agency.name}")
    logins = sorted(u.login for u in agency.users)
    with database.connect(approver_url) as conn:
        try:
            with conn.transaction():
                found = conn.execute(
                    "select approval_id from ndc_meta.approvals_in_force where agreement_id = %s and"
                    " content_sha256 = %s and consumer = %s and logins = %s::text[] order by 1 desc limit 1",
                    (agreement.id, agreement.content_sha256, agency.name, logins)).fetchone()
                if found:  # approved already, as it is: nothing to add
                    return found[0]
                row = conn.execute(
                    "insert into ndc_meta.agreement_approvals (agreement_id, content_sha256, note, consumer, logins)"
                    " values (%s, %s, %s, %s, %s) returning approval_id, approved_by",
                    (agreement.id, agreement.content_sha256, note, agency.name, logins)).fetchone()
        except psycopg.errors.RaiseException as exc:
            raise NdcError(f"{agreement.path}: approval refused: {exc.diag.message_primary}") from None
        except psycopg.errors.InsufficientPrivilege:
            raise NdcError(f"{agreement.path}: approval refused: the role of NDC_APPROVER_URL may not write "
                           "approvals (it must be a member of ndc_approver)") from None
        record_event(conn, "agreement_approved", "approver", agreement.id, None,
                     {"approval_id": row[0], "agreement": agreement.id, "sha256": agreement.content_sha256,
                      "consumer": agency.name, "logins": logins, "approved_by": row[1]})
        return row[0]


def withdraw(approver_url: str, agreement_id: str, reason: str) -> list[int]:
    """Withdraw every approval in force of ``agreement_id`` as the approver of ``approver_url``; each withdrawal is
    recorded in the ledger. The next apply revokes the agreement's views. Returns the approvals withdrawn."""
    with database.connect(approver_url) as conn:
        try:
            with conn.transaction():
                ids = [r[0] for r in conn.execute(
                    "insert into ndc_meta.approval_withdrawals (approval_id, reason) select a.approval_id, %s"
                    " from ndc_meta.agreement_approvals a where a.agreement_id = %s and not exists (select from"
                    " ndc_meta.approval_withdrawals w where w.approval_id = a.approval_id) returning approval_id",
                    (reason, agreement_id)).fetchall()]
        except psycopg.errors.RaiseException as exc:
            raise NdcError(f"withdrawal of {agreement_id} refused: {exc.diag.message_primary}") from None
        except psycopg.errors.CheckViolation:
            raise NdcError(f"withdrawal of {agreement_id} refused: give a reason (--reason)") from None
        except psycopg.errors.InsufficientPrivilege:
            raise NdcError(f"withdrawal of {agreement_id} refused: the role of NDC_APPROVER_URL may not withdraw "
                           "approvals (it must be a member of ndc_approver)") from None
        if not ids:
            raise NdcError(f"agreement {agreement_id} has no approval in force to withdraw")
        record_event(conn, "approval_withdrawn", "approver", agreement_id, None,
                     {"agreement": agreement_id, "approval_ids": ids, "reason": reason,
                      "withdrawn_by": conn.info.user})
        return ids


def validity(agreement: Agreement) -> tuple[datetime, datetime]:
    """The agreement's validity as instants: from its start day's midnight to the end of its expiry day, both in
    Việt Nam's time."""
    return (datetime.combine(agreement.start, time(), VIETNAM),
            datetime.combine(agreement.expires + timedelta(days=1), time(), VIETNAM))


@dataclass
class ApplyResult:
    applied: list[str]
    unapproved: list[str]
    revoked: list[str]
    roles: list[str]
    awaiting: list[str]


def apply(conn: psycopg.Connection, warehouse_url: str, *, agencies: dict[str, Agency] | None = None,
          agreements: dict[str, Agreement] | None = None, today: date | None = None,
          run_id: str | None = None) -> ApplyResult:
    """Roles for every agency; views and grants for every approved, current agreement; revoke the rest."""
    from ndc.conform import dbt

    database.ensure_meta(conn)
    shared = dbt.shared_models()
    agencies = agencies if agencies is not None else load_agencies()
    agreements = agreements if agreements is not None else load_agreements(agencies=agencies, shared=shared)
    today = today or datetime.now(VIETNAM).date()
    result = ApplyResult([], [], [], [], [])
    approved = _approvals(conn)
    for agency in agencies.values():
        roles, awaiting = _apply_agency(conn, agency)
        result.roles += roles
        result.awaiting += awaiting
    result.revoked += _close_undeclared(conn, agencies)
    result.revoked += _revoke_stray_grants(conn, run_id)
    wanted: dict[tuple[str, str], tuple[Agreement, ViewGrant]] = {}
    for agreement in agreements.values():
        if (agreement.id, agreement.content_sha256) not in approved:
            result.unapproved.append(agreement.id)
            log.warning("agreement %s is not approved (file %s, sha256 %s%s): not applied", agreement.id,
                        agreement.path, agreement.content_sha256[:12],
                        "; an earlier version was" if any(i == agreement.id for i, _ in approved) else "")
            continue
        if agreement.expires < today:
            continue  # expired: revoked below
        for view in agreement.views:
            wanted[(agencies[agreement.consumer].schema, view.shared)] = (agreement, view)
    with conn.transaction():
        hmac = _pgcrypto_schema(conn)
    locks.end_long_agency_transactions(conn)
    changed = []
    keys = dbt.primary_keys()
    for agreement in {a.id: a for a, _ in wanted.values()}.values():
        result.applied.append(agreement.id)
        starts_at, expires_at = validity(agreement)
        lookups = {v.shared: found for v in agreement.views if (found := view_access(v, keys.get(v.shared, [])))}
        with conn.transaction():
            before = conn.execute("select content_sha256 from ndc_meta.applied_agreements where agreement_id = %s",
                                  (agreement.id,)).fetchone()
            if before is None or before[0] != agreement.content_sha256:
                changed.append(agreement.id)
            conn.execute("insert into ndc_meta.applied_agreements (agreement_id, consumer, views, content_sha256,"
                         " starts_on, expires_on, starts_at, expires_at, purposes, lookup_keys)"
                         " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                         " on conflict (agreement_id) do update set consumer = excluded.consumer,"
                         " views = excluded.views, content_sha256 = excluded.content_sha256,"
                         " starts_on = excluded.starts_on, expires_on = excluded.expires_on,"
                         " starts_at = excluded.starts_at, expires_at = excluded.expires_at,"
                         " purposes = excluded.purposes, lookup_keys = excluded.lookup_keys, applied_at = now()",
                         (agreement.id, agreement.consumer, [v.shared for v in agreement.views],
                          agreement.content_sha256, agreement.start, agreement.expires, starts_at, expires_at,
                          agreement.purposes, Jsonb(lookups)))
    for _, (agreement, view) in sorted(wanted.items(), key=lambda item: item[0]):
        agency = agencies[agreement.consumer]
        locks.bounded(conn, f"agreement {agreement.id}: view {agency.schema}.{view.shared}",
                      lambda a=agreement, v=view, g=agency: _apply_view(conn, g, a, v, hmac), dataset="agreements",
                      run_id=run_id)
    result.revoked += _revoke_unbacked(conn, {(s, v) for s, v in wanted}, {a.id for a, _ in wanted.values()},
                                      run_id)
    _agreements_views(conn, agencies, agreements, {a.id for a, _ in wanted.values()})
    conn.commit()
    for agreement_id in changed:  # the ledger records a grant when it changes, not every idempotent apply
        agreement = agreements[agreement_id]
        record_event(conn, "agreement_applied", "shared", agencies[agreement.consumer].schema, run_id,
                     {"agreement": agreement.id, "consumer": agreement.consumer, "sha256": agreement.content_sha256,
                      "views": [v.shared for v in agreement.views], "expires": agreement.expires.isoformat()})
    from ndc.sharing import catalog

    catalog.refresh(conn)
    return result


def view_access(view: ViewGrant, primary_key: list[str]) -> dict[str, object]:
    """How the sharing service reads the agency's view: ``order``, the columns pages are read in (the shared
    relation's primary key as the view shows it) and, for a single-column key granted in clear or as the
    agreement's pseudonym, ``key`` (the shared column), ``column`` (what a lookup matches) and ``given``
    (``key`` or ``pseudonym``: what the caller gives). Empty when the view shows no key: read with SQL only."""
    shown = []
    for column in primary_key:
        if column in view.columns:
            shown.append((column, "key"))
        elif view.masked.get(column) == "pseudonym":
            shown.append((f"{column}_pseudonym", "pseudonym"))
        else:
            return {}
    if not shown:
        return {}
    access: dict[str, object] = {"order": [c for c, _ in shown]}
    if len(shown) == 1:
        access.update(column=shown[0][0], given=shown[0][1], key=primary_key[0])
    return access


def _approvals(conn: psycopg.Connection) -> set[tuple[str, str]]:
    """(agreement, sha256) of every approval in force that the ledger records: an approval row alone (say, one
    written by the approvals' owner behind the approvers' backs) is not enough."""
    with conn.transaction():
        in_force = conn.execute("select approval_id, agreement_id, content_sha256 from ndc_meta.approvals_in_force"
                                ).fetchall()
        recorded = {int(r[0]) for r in conn.execute(
            "select details->>'approval_id' from ndc_meta.ledger where kind = 'agreement_approved'"
            " and target = any(%s)", (sorted({r[1] for r in in_force}),)) if r[0]}
    missing = sorted(r[0] for r in in_force if r[0] not in recorded)
    if missing:
        log.warning("approval(s) %s are not recorded in the ledger: not counted as approvals", missing)
    return {(agreement, sha) for approval, agreement, sha in in_force if approval in recorded}


def deliver(conn: psycopg.Connection, publication_id: int, run_id: str | None = None) -> int:
    """After a publish: one delivery per applied agreement — a ledger row (the sharing transaction) and a receipt
    carrying that row's hash (the chain's head then), which the agency reads in ``agency_<x>.delivery_receipts``.
    Returns the deliveries made."""
    if conn.execute("select to_regclass('ndc_meta.applied_agreements')").fetchone()[0] is None:
        conn.commit()
        return 0
    applied = conn.execute(
        "select agreement_id, consumer, views from ndc_meta.applied_agreements where (now() at time zone"
        " 'Asia/Ho_Chi_Minh')::date between starts_on and expires_on order by 1").fetchall()
    conn.commit()
    for agreement_id, consumer, views in applied:
        ledger_id, digest = record_event(conn, "delivery", "shared", f"agency_{consumer}", run_id,
                                         {"agreement": agreement_id, "consumer": consumer, "views": views,
                                          "publication_id": publication_id})
        with conn.transaction():
            conn.execute("insert into ndc_meta.delivery_receipts (agreement_id, consumer, publication_id, views,"
                         " ledger_id, ledger_hash) values (%s, %s, %s, %s, %s, %s)",
                         (agreement_id, consumer, publication_id, views, ledger_id, digest))
    return len(applied)


def _apply_agency(conn: psycopg.Connection, agency: Agency) -> tuple[list[str], list[str]]:
    """The agency's group, its logins (admitted only while an approval lists them) and its schema. Returns the
    roles and the logins awaiting an approval."""
    settings = get_settings()
    group, schema = ident(agency.group_role), ident(agency.schema)
    roles, awaiting = [agency.group_role], []
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(727005)")
        try:
            conn.execute("select ndc_meta.ensure_agency_group(%s)", (agency.name,))
            conn.execute("select ndc_meta.ensure_service_member(%s)", (agency.group_role,))
            for user in agency.users:
                state = conn.execute(
                    "select ndc_meta.ensure_agency_login(%s, %s, %s, %s, %s, %s)",
                    (user.login, agency.name, user.statement_timeout, user.connection_limit,
                     f"{int(settings.agency_idle_in_transaction.total_seconds())}s",
                     f"{int(settings.agency_transaction_limit.total_seconds())}s")).fetchone()[0]
                roles.append(user.login)
                conn.execute("select ndc_meta.ensure_service_member(%s)", (user.login,))
                if state != "admitted":
                    awaiting.append(user.login)
                    log.warning("login %s of agency %s awaits an approval that lists it: not admitted",
                                user.login, agency.name)
        except psycopg.errors.RaiseException as exc:
            raise NdcError(f"{agency.path}: {exc.diag.message_primary}") from None
        conn.execute(sql.SQL("create schema if not exists {}").format(schema))
        conn.execute(sql.SQL("revoke all on schema {} from public").format(schema))
        conn.execute(sql.SQL("grant usage on schema {} to {}").format(schema, group))
        receipts = ident(agency.schema, "delivery_receipts")
        conn.execute(sql.SQL("create or replace view {} with (security_barrier = true) as select delivery_id,"
                             " agreement_id, publication_id, views, ledger_id, ledger_hash, delivered_at"
                             " from ndc_meta.delivery_receipts where consumer = {}").format(
            receipts, sql.Literal(agency.name)))
        conn.execute(sql.SQL("comment on view {} is {}").format(receipts, sql.Literal(
            f"delivery receipts of {agency.name}: each carries the ledger's hash at delivery")))
        conn.execute(sql.SQL("grant select on {} to {}").format(receipts, group))
    return roles, awaiting


def _close_undeclared(conn: psycopg.Connection, agencies: dict[str, Agency]) -> list[str]:
    """Agency logins no longer listed in their agency's file, and every login of an agency whose file is gone,
    leave the group and lose their login; a gone agency's group loses CONNECT. Returns what was closed."""
    listed = {(a.name, u.login) for a in agencies.values() for u in a.users}
    closed = []
    with conn.transaction():
        registered = conn.execute("select role, agency, kind from ndc_meta.agency_roles order by 1").fetchall()
        for role, agency, kind in registered:
            if kind == "login" and (agency, role) not in listed:
                open_login = conn.execute(
                    "select rolcanlogin or exists (select from pg_auth_members m where m.member = r.oid)"
                    " from pg_roles r where rolname = %s", (role,)).fetchone()
                if open_login and open_login[0]:
                    conn.execute("select ndc_meta.close_agency_login(%s)", (role,))
                    closed.append(f"role {role} (was in ndc_agency_{agency})")
            elif kind == "group" and agency not in agencies:
                conn.execute("select ndc_meta.close_agency_group(%s)", (role,))
    conn.commit()
    return closed


def _revoke_stray_grants(conn: psycopg.Connection, run_id: str | None) -> list[str]:
    """Privileges an agency role holds on a relation outside its own schema (granted by hand, say by someone with
    the runtime role, with no approval behind them) are revoked, and each revocation is a ledger row."""
    with conn.transaction():
        stray = conn.execute(
            "select 'table', c.oid::regclass::text, r.role, r.agency, a.privilege_type from pg_class c"
            " cross join lateral aclexplode(c.relacl) a join pg_roles g on g.oid = a.grantee"
            " join ndc_meta.agency_roles r on r.role = g.rolname"
            " where c.relnamespace <> coalesce(to_regnamespace('agency_' || r.agency), 0)::oid"
            " union all select 'schema', quote_ident(n.nspname), r.role, r.agency, a.privilege_type"
            " from pg_namespace n cross join lateral aclexplode(n.nspacl) a join pg_roles g on g.oid = a.grantee"
            " join ndc_meta.agency_roles r on r.role = g.rolname where n.nspname <> 'agency_' || r.agency"
            " order by 2, 3, 5").fetchall()
        for kind, name, role, _, privilege in stray:
            conn.execute(sql.SQL("revoke {} on {} {} from {}").format(
                sql.SQL(privilege), sql.SQL("schema" if kind == "schema" else "table"), sql.SQL(name), ident(role)))
    for kind, name, role, agency, privilege in stray:
        log.warning("revoked %s on %s %s from %s: no agreement backs it", privilege, kind, name, role)
        record_event(conn, "stray_grant_revoked", "shared", name, run_id,
                     {"role": role, "agency": agency, "privilege": privilege, "on": kind})
    return [f"{privilege} on {name} from {role}" for _, name, role, _, privilege in stray]


def _agreements_views(conn: psycopg.Connection, agencies: dict[str, Agency], agreements: dict[str, Agreement],
                      applied: set[str]) -> None:
    """``agency_<x>.agreements``: the agency's own applied agreements, their purposes and dates — the only place
    an agency reads them (view comments and definitions are not readable by other logins)."""
    for agency in agencies.values():
        mine = [a for a in agreements.values() if a.consumer == agency.name and a.id in applied]
        rows = [sql.SQL("select {}::text, {}::text, {}::date, {}::date, {}::text[]").format(
            sql.Literal(a.id), sql.Literal(a.purpose.strip()), sql.Literal(a.start), sql.Literal(a.expires),
            sql.Literal([v.shared for v in a.views])) for a in mine]
        body = sql.SQL(" union all ").join(rows) if rows else sql.SQL(
            "select null::text, null::text, null::date, null::date, null::text[] where false")
        target = ident(agency.schema, "agreements")
        with conn.transaction():
            conn.execute(sql.SQL("create or replace view {} (agreement_id, purpose, starts_on, expires_on, views) as "
                                 "{}").format(target, body))
            conn.execute(sql.SQL("revoke all on {} from public").format(target))
            conn.execute(sql.SQL("grant select on {} to {}").format(target, ident(agency.group_role)))


def _meters(conn: psycopg.Connection, agency: Agency, view: str) -> None:
    """A read meter per login of the agency and view (the view counts every statement on it)."""
    for user in agency.users:
        conn.execute("select ndc_meta.ensure_read_meter(%s, %s, %s)", (user.login, agency.name, view))


def _pgcrypto_schema(conn: psycopg.Connection) -> str:
    """Where pgcrypto lives (``ndc_meta`` when the platform installed it; elsewhere if it was there before)."""
    row = conn.execute("select extnamespace::regnamespace::text from pg_extension where extname = 'pgcrypto'"
                       ).fetchone()
    if row is None:
        raise NdcError("the pgcrypto extension is missing: pseudonyms are HMAC-SHA256 (postgresql-contrib)")
    return row[0]


def _key(conn: psycopg.Connection, agreement: Agreement) -> None:
    """The agreement's HMAC key for its consumer: an agreement id reused for another consumer gets a new key."""
    conn.execute("insert into ndc_meta.agreement_keys (agreement_id, consumer, hmac_key) values (%s, %s, %s)"
                 " on conflict (agreement_id, consumer) do nothing",
                 (agreement.id, agreement.consumer, secrets.token_bytes(32)))


def _apply_view(conn: psycopg.Connection, agency: Agency, agreement: Agreement, view: ViewGrant,
                hmac_schema: str) -> None:
    """``agency_<x>.<view>``: granted columns, masked columns, the row filter, and the statement-time validity and
    read meter of ``ndc_meta.agency_read``. Runs inside :func:`ndc.warehouse.locks.bounded`'s transaction."""
    items = [ident(c) for c in view.columns]
    hmac = ident(hmac_schema, "hmac")
    for column, how in view.masked.items():
        if how == "pseudonym":
            items.append(sql.SQL(
                "encode({hmac}(convert_to({c}::text, 'UTF8'), (select k.hmac_key from ndc_meta.agreement_keys k"
                " where k.agreement_id = {id} and k.consumer = {consumer}), 'sha256'), 'hex') as {alias}").format(
                hmac=hmac, c=ident(column), id=sql.Literal(agreement.id), consumer=sql.Literal(agreement.consumer),
                alias=ident(f"{column}_pseudonym")))
        elif how == "year":
            items.append(sql.SQL("extract(year from {c})::int as {alias}").format(
                c=ident(column), alias=ident(f"{column}_year")))
        else:
            items.append(sql.SQL("repeat('*', greatest(length({c}::text) - 4, 0)) || right({c}::text, 4) as {alias}")
                         .format(c=ident(column), alias=ident(f"{column}_masked")))
    # Once per statement (an uncorrelated subquery): validity at the statement's time, and the read meter.
    conditions = [sql.SQL("(select ndc_meta.agency_read({}, {}))").format(
        sql.Literal(agreement.id), sql.Literal(f"{agency.schema}.{view.shared}"))]
    for column, value in view.row_filter.items():
        values = value if isinstance(value, list) else [value]
        conditions.append(sql.SQL("{} = any({})").format(ident(column), sql.Literal(values)))
    target = ident(agency.schema, view.shared)
    _key(conn, agreement)
    existing = conn.execute("select 1 from pg_views where schemaname = %s and viewname = %s",
                            (agency.schema, view.shared)).fetchone()
    if existing:  # the columns may change between versions of an agreement: replace, not alter
        conn.execute(sql.SQL("drop view {}").format(target))
    conn.execute(sql.SQL("create view {target} with (security_barrier = true) as select {items} from {source}"
                         " where {conditions}").format(
        target=target, items=sql.SQL(", ").join(items), source=ident("shared", view.shared),
        conditions=sql.SQL(" and ").join(conditions)))
    conn.execute(sql.SQL("revoke all on {} from public").format(target))
    conn.execute(sql.SQL("grant select on {} to {}").format(target, ident(agency.group_role)))
    _meters(conn, agency, f"{agency.schema}.{view.shared}")


def _revoke_unbacked(conn: psycopg.Connection, wanted: set[tuple[str, str]], applied: set[str],
                     run_id: str | None) -> list[str]:
    """Forget agreements no longer applied — from that commit on, their views return nothing, even to a session
    that holds them open — then drop agency views no approved, current agreement backs (each waits a bounded
    time for readers' locks; a view still held is named in the error and dropped by the next apply)."""
    with conn.transaction():
        gone = [r[0] for r in conn.execute("select agreement_id from ndc_meta.applied_agreements"
                                           " where not (agreement_id = any(%s))", (sorted(applied),))]
        views = conn.execute("select schemaname, viewname from pg_views where schemaname like 'agency\\_%'"
                             " and viewname not in ('delivery_receipts', 'agreements')").fetchall()
    with conn.transaction():
        conn.execute("delete from ndc_meta.applied_agreements where agreement_id = any(%s)", (gone,))
    revoked, held = [], []
    for schema, view in views:
        if (schema, view) in wanted:
            continue
        try:
            locks.bounded(conn, f"revoking {schema}.{view}",
                          lambda s=schema, v=view: conn.execute(sql.SQL("drop view {}").format(ident(s, v))),
                          dataset="agreements", run_id=run_id)
            revoked.append(f"{schema}.{view}")
        except NdcError as exc:
            held.append(str(exc))
    for agreement_id in gone:
        record_event(conn, "agreement_revoked", "shared", agreement_id, run_id,
                     {"agreement": agreement_id, "views_dropped": revoked})
    conn.commit()
    if held:
        raise NdcError("access is revoked (the views return nothing), but not every view could be dropped:\n  "
                       + "\n  ".join(held))
    return revoked
