"""Consumer agencies and sharing agreements, declared as data, approved by a separate role, applied idempotently.

* **Agencies** (``dags/agencies/<name>.yml``): a NOLOGIN group role ``ndc_agency_<name>`` and LOGIN roles for its
  users or services (members of it), each with a ``statement_timeout`` and a connection limit, and a schema
  ``agency_<name>`` holding its views. No role gets CREATE anywhere.
* **Agreements** (``dags/agreements/<id>.yml``): the consumer agency, the legal purpose, start and expiry dates and,
  per shared view, the columns granted, the columns masked (``pseudonym``: an HMAC-SHA256 of the value keyed per
  agreement, so two agencies cannot join their masked data; ``partial``: all but the last four characters
  starred) and a row filter (column = value, or column in a list).
* **Approval** is a row in ``ndc_meta.agreement_approvals`` binding the agreement's id to the SHA-256 of its file:
  inserted by ``ndc agreements approve`` connecting as a member of ``ndc_approver`` (``NDC_APPROVER_URL``); a
  trigger refuses it from the role that owns the platform's schemas (whoever deploys DAGs). An agreement whose file
  changed after approval is unapproved again.
* **Apply** (``ndc agreements apply``): for each approved agreement, ``security_barrier`` views
  ``agency_<consumer>.<view>`` over ``shared.<view>`` (so they survive every publish) with the granted columns,
  masks, the row filter and the validity dates — the view itself returns nothing outside them, so expiry holds at
  read time — and SELECT to the agency's group role. Views no approved, current agreement backs are dropped (an
  expired or removed agreement is revoked). Each grant and revocation is a ledger row.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime

import psycopg
from psycopg import sql

from ndc.audit.handoff import record_event
from ndc.config.agreements import Agency, Agreement, ViewGrant, load_agencies, load_agreements
from ndc.errors import NdcError
from ndc.identifiers import ident
from ndc.warehouse import database
from ndc.warehouse.connections import database_of

log = logging.getLogger(__name__)
APPROVER_ROLE = "ndc_approver"


def approve(approver_url: str, agreement: Agreement, note: str | None = None) -> None:
    """Record the approval of ``agreement`` (this exact file) as the approver connected with ``approver_url``."""
    with psycopg.connect(approver_url) as conn:
        try:
            conn.execute("insert into ndc_meta.agreement_approvals (agreement_id, content_sha256, note)"
                         " values (%s, %s, %s) on conflict (agreement_id, content_sha256) do nothing",
                         (agreement.id, agreement.content_sha256, note))
        except psycopg.errors.RaiseException as exc:
            raise NdcError(f"{agreement.path}: approval refused: {exc.diag.message_primary}") from None
        except psycopg.errors.InsufficientPrivilege:
            raise NdcError(f"{agreement.path}: approval refused: the role of NDC_APPROVER_URL may not write "
                           "approvals (it must be a member of ndc_approver)") from None


@dataclass
class ApplyResult:
    applied: list[str]
    unapproved: list[str]
    revoked: list[str]
    roles: list[str]


def apply(conn: psycopg.Connection, warehouse_url: str, *, agencies: dict[str, Agency] | None = None,
          agreements: dict[str, Agreement] | None = None, today: date | None = None,
          run_id: str | None = None) -> ApplyResult:
    """Roles for every agency; views and grants for every approved, current agreement; revoke the rest."""
    from ndc.conform import dbt

    database.ensure_meta(conn)
    shared = dbt.shared_models()
    agencies = agencies if agencies is not None else load_agencies()
    agreements = agreements if agreements is not None else load_agreements(agencies=agencies, shared=shared)
    today = today or datetime.now(UTC).date()
    result = ApplyResult([], [], [], [])
    for agency in agencies.values():
        result.roles += _apply_agency(conn, agency, warehouse_url)
    result.revoked += _close_undeclared(conn, agencies, warehouse_url)
    # An approval counts while its approver is still an approver and is not the platform's own role.
    valid = ("select agreement_id, content_sha256 from ndc_meta.agreement_approvals a"
             " where exists (select from pg_roles r where r.rolname = a.approved_by"
             " and pg_has_role(r.oid, 'ndc_approver', 'member'))"
             " and a.approved_by <> (select pg_get_userbyid(nspowner) from pg_namespace where nspname = 'ndc_meta')")
    approved = {r[0]: r[1] for r in conn.execute(valid)}
    approved_pairs = set(conn.execute(valid))
    conn.commit()
    wanted: dict[tuple[str, str], tuple[Agreement, ViewGrant]] = {}
    for agreement in agreements.values():
        if (agreement.id, agreement.content_sha256) not in approved_pairs:
            result.unapproved.append(agreement.id)
            log.warning("agreement %s is not approved (file %s, sha256 %s%s): not applied", agreement.id,
                        agreement.path, agreement.content_sha256[:12],
                        "; an earlier version was" if agreement.id in approved else "")
            continue
        if agreement.expires < today:
            continue  # expired: revoked below
        for view in agreement.views:
            wanted[(agencies[agreement.consumer].schema, view.shared)] = (agreement, view)
    with conn.transaction():
        hmac = _pgcrypto_schema(conn)
    for _, (agreement, view) in sorted(wanted.items(), key=lambda item: item[0]):
        _apply_view(conn, agencies[agreement.consumer], agreement, view, hmac)
    changed = []
    for agreement in {a.id: a for a, _ in wanted.values()}.values():
        result.applied.append(agreement.id)
        with conn.transaction():
            before = conn.execute("select content_sha256 from ndc_meta.applied_agreements where agreement_id = %s",
                                  (agreement.id,)).fetchone()
            if before is None or before[0] != agreement.content_sha256:
                changed.append(agreement.id)
            conn.execute("insert into ndc_meta.applied_agreements (agreement_id, consumer, views, content_sha256,"
                         " starts_on, expires_on) values (%s, %s, %s, %s, %s, %s) on conflict (agreement_id) do"
                         " update set views = excluded.views, content_sha256 = excluded.content_sha256,"
                         " starts_on = excluded.starts_on, expires_on = excluded.expires_on, applied_at = now()",
                         (agreement.id, agreement.consumer, [v.shared for v in agreement.views],
                          agreement.content_sha256, agreement.start, agreement.expires))
    result.revoked += _revoke_unbacked(conn, {(s, v) for s, v in wanted}, {a.id for a, _ in wanted.values()},
                                      run_id)
    conn.commit()
    for agreement_id in changed:  # the ledger records a grant when it changes, not every idempotent apply
        agreement = agreements[agreement_id]
        record_event(conn, "agreement_applied", "shared", agencies[agreement.consumer].schema, run_id,
                     {"agreement": agreement.id, "consumer": agreement.consumer, "sha256": agreement.content_sha256,
                      "views": [v.shared for v in agreement.views], "expires": agreement.expires.isoformat()})
    from ndc.sharing import catalog

    catalog.refresh(conn)
    return result


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


def refuse_superuser(conn: psycopg.Connection, role: str) -> None:
    """An agency role must not be a superuser. Only a superuser may change that attribute (the platform's own
    role, in a deployment, is not one), so a superuser role of that name is refused rather than altered."""
    if conn.execute("select rolsuper from pg_roles where rolname = %s", (role,)).fetchone() == (True,):
        raise NdcError(f"role {role} is a superuser: an agency role must not be. A database superuser must run"
                       f" ALTER ROLE {role} NOSUPERUSER (or pick another login name in the agency file)")


def _apply_agency(conn: psycopg.Connection, agency: Agency, warehouse_url: str) -> list[str]:
    group, schema = ident(agency.group_role), ident(agency.schema)
    roles = [agency.group_role]
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(727005)")
        _create_role(conn, agency.group_role, login=False)
        refuse_superuser(conn, agency.group_role)
        conn.execute(sql.SQL("alter role {} nocreatedb nocreaterole nologin").format(group))
        for user in agency.users:
            login = ident(user.login)
            _create_role(conn, user.login, login=True)
            refuse_superuser(conn, user.login)
            conn.execute(sql.SQL("alter role {} nocreatedb nocreaterole login inherit connection limit {}")
                         .format(login, sql.Literal(user.connection_limit)))
            conn.execute(sql.SQL("alter role {} set statement_timeout = {}").format(
                login, sql.Literal(user.statement_timeout)))
            conn.execute(sql.SQL("grant {} to {}").format(group, login))
            roles.append(user.login)
        conn.execute(sql.SQL("create schema if not exists {}").format(schema))
        conn.execute(sql.SQL("revoke all on schema {} from public").format(schema))
        conn.execute(sql.SQL("grant usage on schema {} to {}").format(schema, group))
        conn.execute(sql.SQL("grant connect on database {} to {}").format(ident(database_of(warehouse_url)), group))
        receipts = ident(agency.schema, "delivery_receipts")
        conn.execute(sql.SQL("create or replace view {} with (security_barrier = true) as select delivery_id,"
                             " agreement_id, publication_id, views, ledger_id, ledger_hash, delivered_at"
                             " from ndc_meta.delivery_receipts where consumer = {}").format(
            receipts, sql.Literal(agency.name)))
        conn.execute(sql.SQL("comment on view {} is {}").format(receipts, sql.Literal(
            f"delivery receipts of {agency.name}: each carries the ledger's hash at delivery")))
        conn.execute(sql.SQL("grant select on {} to {}").format(receipts, group))
    return roles


def _close_undeclared(conn: psycopg.Connection, agencies: dict[str, Agency], warehouse_url: str) -> list[str]:
    """Members of an agency group no longer listed in its file, and every member of a group whose agency file is
    gone, lose the membership and their login; a gone agency's group loses CONNECT. Returns what was closed."""
    listed = {(a.group_role, u.login) for a in agencies.values() for u in a.users}
    closed = []
    with conn.transaction():
        members = conn.execute(
            "select g.rolname, m.rolname from pg_auth_members am join pg_roles g on g.oid = am.roleid"
            " join pg_roles m on m.oid = am.member where g.rolname like 'ndc\\_agency\\_%'").fetchall()
        for group, member in members:
            if (group, member) in listed:
                continue
            conn.execute(sql.SQL("revoke {} from {}").format(ident(group), ident(member)))
            conn.execute(sql.SQL("alter role {} nologin").format(ident(member)))
            closed.append(f"role {member} (was in {group})")
        declared = {a.group_role for a in agencies.values()}
        for (group,) in conn.execute("select rolname from pg_roles where rolname like 'ndc\\_agency\\_%'"
                                     " and not rolcanlogin").fetchall():
            if group not in declared:
                conn.execute(sql.SQL("revoke connect on database {} from {}").format(
                    ident(database_of(warehouse_url)), ident(group)))
    conn.commit()
    return closed


def _create_role(conn: psycopg.Connection, name: str, *, login: bool) -> None:
    if not conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone():
        conn.execute(sql.SQL("create role {} {}").format(ident(name), sql.SQL("login" if login else "nologin")))


def _pgcrypto_schema(conn: psycopg.Connection) -> str:
    """Where pgcrypto lives (``ndc_meta`` when the platform installed it; elsewhere if it was there before)."""
    row = conn.execute("select extnamespace::regnamespace::text from pg_extension where extname = 'pgcrypto'"
                       ).fetchone()
    if row is None:
        raise NdcError("the pgcrypto extension is missing: pseudonyms are HMAC-SHA256 (postgresql-contrib)")
    return row[0]


def _key(conn: psycopg.Connection, agreement_id: str) -> None:
    conn.execute("insert into ndc_meta.agreement_keys (agreement_id, hmac_key) values (%s, %s)"
                 " on conflict (agreement_id) do nothing", (agreement_id, secrets.token_bytes(32)))


def _apply_view(conn: psycopg.Connection, agency: Agency, agreement: Agreement, view: ViewGrant,
                hmac_schema: str) -> None:
    """``agency_<x>.<view>``: granted columns, masked columns, the row filter and the validity dates."""
    items = [ident(c) for c in view.columns]
    hmac = ident(hmac_schema, "hmac")
    for column, how in view.masked.items():
        if how == "pseudonym":
            items.append(sql.SQL(
                "encode({hmac}(convert_to({c}::text, 'UTF8'), (select k.hmac_key from ndc_meta.agreement_keys k"
                " where k.agreement_id = {id}), 'sha256'), 'hex') as {alias}").format(
                hmac=hmac, c=ident(column), id=sql.Literal(agreement.id), alias=ident(f"{column}_pseudonym")))
        else:
            items.append(sql.SQL("repeat('*', greatest(length({c}::text) - 4, 0)) || right({c}::text, 4) as {alias}")
                         .format(c=ident(column), alias=ident(f"{column}_masked")))
    # The Việt Nam date, whatever TimeZone the reader sets in their session.
    today = sql.SQL("(now() at time zone 'Asia/Ho_Chi_Minh')::date")
    conditions = [sql.SQL("{today} >= {} and {today} <= {}").format(
        sql.Literal(agreement.start), sql.Literal(agreement.expires), today=today)]
    for column, value in view.row_filter.items():
        values = value if isinstance(value, list) else [value]
        conditions.append(sql.SQL("{} = any({})").format(ident(column), sql.Literal(values)))
    target = ident(agency.schema, view.shared)
    with conn.transaction():
        _key(conn, agreement.id)
        existing = conn.execute("select 1 from pg_views where schemaname = %s and viewname = %s",
                                (agency.schema, view.shared)).fetchone()
        if existing:  # the columns may change between versions of an agreement: replace, not alter
            conn.execute(sql.SQL("drop view {}").format(target))
        conn.execute(sql.SQL("create view {target} with (security_barrier = true) as select {items} from {source}"
                             " where {conditions}").format(
            target=target, items=sql.SQL(", ").join(items), source=ident("shared", view.shared),
            conditions=sql.SQL(" and ").join(conditions)))
        conn.execute(sql.SQL("comment on view {} is {}").format(target, sql.Literal(
            f"agreement {agreement.id} ({agreement.start} to {agreement.expires}): {agreement.purpose}")))
        conn.execute(sql.SQL("revoke all on {} from public").format(target))
        conn.execute(sql.SQL("grant select on {} to {}").format(target, ident(agency.group_role)))


def _revoke_unbacked(conn: psycopg.Connection, wanted: set[tuple[str, str]], applied: set[str],
                     run_id: str | None) -> list[str]:
    """Drop agency views no approved, current agreement backs; forget agreements no longer applied."""
    revoked = []
    with conn.transaction():
        views = conn.execute("select schemaname, viewname from pg_views where schemaname like 'agency\\_%'"
                             " and viewname <> 'delivery_receipts'").fetchall()
    for schema, view in views:
        if (schema, view) not in wanted:
            with conn.transaction():
                conn.execute(sql.SQL("drop view {}").format(ident(schema, view)))
            revoked.append(f"{schema}.{view}")
    with conn.transaction():
        gone = [r[0] for r in conn.execute("select agreement_id from ndc_meta.applied_agreements"
                                           " where not (agreement_id = any(%s))", (sorted(applied),))]
    for agreement_id in gone:
        with conn.transaction():
            conn.execute("delete from ndc_meta.applied_agreements where agreement_id = %s", (agreement_id,))
        record_event(conn, "agreement_revoked", "shared", agreement_id, run_id,
                     {"agreement": agreement_id, "views_dropped": revoked})
    conn.commit()
    return revoked
