"""The one-off bootstrap a database administrator runs (``ndc warehouse bootstrap``), separate from the runtime role.

A deployment has two kinds of database credentials. The **administrator's** (``NDC_ADMIN_URL``: a superuser, or a
role with CREATEROLE and CREATEDB) is used only here, never by Airflow. The **runtime role** (the user of
``NDC_WAREHOUSE_URL``) runs every DAG and ``ndc`` command; after the bootstrap it:

* has no CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS and is no superuser, so it cannot grant itself
  ``ndc_approver``, ``ndc_custodian``, the anchor's owner or ``pg_execute_server_program``;
* owns the data it rebuilds (landing, staging, ``shared``, ``quarantine`` and the agency schemas' views) but not the
  platform's evidence: ``ndc_meta`` and its ledger, approvals, withdrawals, agency-role registry, read meters and
  HMAC keys belong to ``ndc_custodian`` (NOLOGIN, CREATEROLE), and the runtime role may only INSERT and SELECT the
  ledger and SELECT the approvals;
* makes agency roles only through ``ndc_custodian``'s functions (migration 0005), which admit a login to its agency
  only while an approval lists it.

The bootstrap also runs the schema's migrations (as ``ndc_custodian``): the runtime role cannot, so a release with a
new revision is installed by running the bootstrap again. It revokes from every other login what lets one agency
see another: ``pg_stat_statements`` and view definitions (``pg_get_viewdef``, ``pg_rewrite``). It is idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from ndc.errors import NdcError
from ndc.identifiers import ident
from ndc.warehouse.connections import database_of, redact, with_database

log = logging.getLogger(__name__)
CUSTODIAN = "ndc_custodian"
# What the runtime role must never hold (directly or through another role).
FORBIDDEN_ROLES = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files",
                   "ndc_approver", CUSTODIAN, "ndc_service")
# The platform's evidence: the runtime role reads it, appends to the ledger and to the HMAC keys, nothing else.
EVIDENCE = {
    "ndc_meta.ledger": "select, insert",
    "ndc_meta.ledger_identity": "select",
    "ndc_meta.agreement_approvals": "select",
    "ndc_meta.approval_withdrawals": "select",
    "ndc_meta.approvals_in_force": "select",
    "ndc_meta.agency_roles": "select",
    "ndc_meta.read_meters": "select",
    "ndc_meta.agreement_keys": "select, insert",
    "ndc_meta.alembic_version": "select",
    "ndc_meta.service_requests": "select",
    "ndc_meta.service_tokens": "select",
}
# Catalog functions that show any view's definition to any login (an agency's row filter, masks, agreement).
VIEW_DEFINITIONS = ("pg_catalog.pg_get_viewdef(oid)", "pg_catalog.pg_get_viewdef(oid, boolean)",
                    "pg_catalog.pg_get_viewdef(oid, integer)", "pg_catalog.pg_get_viewdef(text)",
                    "pg_catalog.pg_get_viewdef(text, boolean)")


@dataclass
class Bootstrapped:
    runtime: str
    database: str
    revision: str
    steps: list[str] = field(default_factory=list)


def bootstrap(admin_url: str, warehouse_url: str, service_url: str | None = None) -> Bootstrapped:
    """Roles, the warehouse database, the schema (as ``ndc_custodian``) and the runtime role's grants; with
    ``service_url``, its user becomes the sharing service's login (a member of ``ndc_service``)."""
    from ndc.warehouse import database, schema

    runtime, name = psycopg.conninfo.conninfo_to_dict(warehouse_url).get("user"), database_of(warehouse_url)
    if not runtime:
        raise NdcError(f"NDC_WAREHOUSE_URL ({redact(warehouse_url)}) names no user: the runtime role is its user")
    done = Bootstrapped(runtime=runtime, database=name, revision="")
    with database.connect(with_database(admin_url, "postgres"), autocommit=True) as admin:
        _check_admin(admin, admin_url)
        _roles(admin, runtime, done)
        if not admin.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            admin.execute(sql.SQL("create database {} owner {}").format(ident(name), ident(CUSTODIAN)))
            done.steps.append(f"created database {name}")
        admin.execute(sql.SQL("alter database {} owner to {}").format(ident(name), ident(CUSTODIAN)))
        admin.execute(sql.SQL("revoke connect, temporary on database {} from public").format(ident(name)))
        admin.execute(sql.SQL("grant connect, create, temporary on database {} to {}").format(ident(name),
                                                                                          ident(runtime)))
    with database.connect(with_database(admin_url, name)) as conn:
        preload = conn.execute("show shared_preload_libraries").fetchone()[0]
        if "pg_stat_statements" in preload:
            conn.execute("create extension if not exists pg_stat_statements")
        conn.execute("create schema if not exists ndc_meta authorization ndc_custodian")
        conn.execute("alter schema ndc_meta owner to ndc_custodian")
        conn.commit()
        conn.execute(sql.SQL("set role {}").format(ident(CUSTODIAN)))
        conn.commit()
        database.ensure_meta(conn)
        done.revision = schema.current(conn) or ""
        conn.execute("reset role")
        conn.commit()
        with conn.transaction():
            _grants(conn, runtime)
            _hide_other_agencies(conn, runtime)
            if service_url:
                _service_login(conn, service_url, runtime, name, done)
    done.steps.append(f"schema at revision {done.revision}, owned by {CUSTODIAN}; {runtime} granted what it runs")
    return done


def bootstrap_anchor(admin_url: str, anchor_url: str) -> list[str]:
    """The ledger's anchor database, owned by ``ndc_anchor_owner`` (NOLOGIN; in a deployment, another
    administrator's), and its writer (the user of ``anchor_url``), which may only INSERT and SELECT there."""
    from ndc.audit.anchor import ANCHOR_DDL

    writer, name = psycopg.conninfo.conninfo_to_dict(anchor_url).get("user"), database_of(anchor_url)
    steps = []
    with psycopg.connect(with_database(admin_url, "postgres"), autocommit=True) as admin:
        _check_admin(admin, admin_url)
        for role, login in (("ndc_anchor_owner", False), (writer, True)):
            if not admin.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone():
                admin.execute(sql.SQL("create role {} {}").format(ident(role), sql.SQL("login" if login else
                                                                                        "nologin")))
                steps.append(f"created role {role}")
        if not admin.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            admin.execute(sql.SQL("create database {} owner ndc_anchor_owner").format(ident(name)))
            steps.append(f"created database {name}")
        admin.execute(sql.SQL("revoke connect, temporary on database {} from public").format(ident(name)))
        admin.execute(sql.SQL("grant connect on database {} to {}").format(ident(name), ident(writer)))
    with psycopg.connect(with_database(admin_url, name), autocommit=True) as conn:
        conn.execute("set role ndc_anchor_owner")
        conn.execute("revoke create on schema public from public")
        if conn.execute("select to_regclass('ledger_anchor.anchors')").fetchone()[0] is None:
            conn.execute(ANCHOR_DDL)
        conn.execute(sql.SQL("grant usage on schema ledger_anchor to {}").format(ident(writer)))
        conn.execute(sql.SQL("grant select, insert on ledger_anchor.anchors to {}").format(ident(writer)))
    return steps


def _check_admin(admin: psycopg.Connection, admin_url: str) -> None:
    row = admin.execute("select rolsuper, rolcreaterole and rolcreatedb from pg_roles where rolname = current_user"
                        ).fetchone()
    if not (row[0] or row[1]):
        raise NdcError(f"the bootstrap needs a database administrator (a superuser, or CREATEROLE and CREATEDB): "
                       f"{redact(admin_url)} is neither (NDC_ADMIN_URL)")


def _roles(admin: psycopg.Connection, runtime: str, done: Bootstrapped) -> None:
    for role in (CUSTODIAN, "ndc_approver", "ndc_operator", "ndc_personal_data"):
        if not admin.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone():
            admin.execute(sql.SQL("create role {} nologin").format(ident(role)))
            done.steps.append(f"created role {role}")
    # The custodian makes agency roles (CREATEROLE), sees which sessions hold locks and ends overlong agency
    # transactions (pg_read_all_stats, pg_signal_backend).
    admin.execute(sql.SQL("alter role {} nologin createrole nocreatedb").format(ident(CUSTODIAN)))
    admin.execute(sql.SQL("grant pg_signal_backend, pg_read_all_stats to {}").format(ident(CUSTODIAN)))
    row = admin.execute("select rolsuper from pg_roles where rolname = %s", (runtime,)).fetchone()
    if row is None:
        admin.execute(sql.SQL("create role {} login").format(ident(runtime)))
        done.steps.append(f"created role {runtime} (set its password: ALTER ROLE ... PASSWORD)")
    elif row[0]:
        raise NdcError(f"the runtime role {runtime} (the user of NDC_WAREHOUSE_URL) is a superuser: a deployment "
                       "runs the platform as a role without it (ALTER ROLE ... NOSUPERUSER, or another user)")
    admin.execute(sql.SQL("alter role {} login nocreaterole nocreatedb noreplication nobypassrls").format(
        ident(runtime)))
    for (granted,) in admin.execute(
            "select g.rolname from pg_auth_members m join pg_roles g on g.oid = m.roleid"
            " join pg_roles r on r.oid = m.member where r.rolname = %s", (runtime,)).fetchall():
        if granted in FORBIDDEN_ROLES or granted.startswith("ndc_agency_") or granted == "ndc_anchor_owner":
            admin.execute(sql.SQL("revoke {} from {}").format(ident(granted), ident(runtime)))
            done.steps.append(f"revoked {granted} from {runtime}")
    # The runtime role reads quarantine and history (personal data) as their owner, and may read the operator's
    # views; it is a member of nothing else.
    admin.execute(sql.SQL("grant ndc_operator, ndc_personal_data to {}").format(ident(runtime)))


def _service_login(conn: psycopg.Connection, service_url: str, runtime: str, database: str,
                   done: Bootstrapped) -> None:
    """The sharing service's login: a member of ``ndc_service`` (which acts as agency logins only by SET ROLE),
    never the runtime role (which may not write the request log)."""
    login = psycopg.conninfo.conninfo_to_dict(service_url).get("user")
    if not login or login == runtime:
        raise NdcError(f"NDC_SERVICE_URL ({redact(service_url)}) must name its own user, not the runtime role's: "
                       "the service's login writes the request log, which the runtime role may only read")
    row = conn.execute("select rolsuper from pg_roles where rolname = %s", (login,)).fetchone()
    if row is None:
        conn.execute(sql.SQL("create role {} login").format(ident(login)))
        done.steps.append(f"created role {login} (set its password: ALTER ROLE ... PASSWORD)")
    elif row[0]:
        raise NdcError(f"the service's login {login} (the user of NDC_SERVICE_URL) is a superuser")
    conn.execute(sql.SQL("alter role {} login inherit nocreaterole nocreatedb noreplication nobypassrls").format(
        ident(login)))
    conn.execute(sql.SQL("grant ndc_service to {}").format(ident(login)))
    conn.execute(sql.SQL("grant connect on database {} to {}").format(ident(database), ident(login)))
    done.steps.append(f"{login} is the sharing service's login (ndc_service)")


def _grants(conn: psycopg.Connection, runtime: str) -> None:
    role = ident(runtime)
    for name in ("shared", "quarantine"):
        conn.execute(sql.SQL("create schema if not exists {}").format(ident(name)))
        conn.execute(sql.SQL("alter schema {} owner to {}").format(ident(name), role))
    for (table,) in conn.execute("select format('%%I.%%I', schemaname, tablename) from pg_tables"
                                 " where schemaname in ('shared', 'quarantine') and tableowner <> %s",
                                 (runtime,)).fetchall():
        conn.execute(sql.SQL("alter table {} owner to {}").format(sql.SQL(table), role))
    for (view,) in conn.execute("select format('%%I.%%I', schemaname, viewname) from pg_views"
                                " where schemaname in ('shared', 'quarantine') and viewowner <> %s",
                                (runtime,)).fetchall():
        conn.execute(sql.SQL("alter view {} owner to {}").format(sql.SQL(view), role))
    conn.execute(sql.SQL("grant usage on schema ndc_meta to {}").format(role))
    conn.execute(sql.SQL("grant select, insert, update, delete on all tables in schema ndc_meta to {}").format(role))
    conn.execute(sql.SQL("grant usage, select, update on all sequences in schema ndc_meta to {}").format(role))
    conn.execute(sql.SQL("grant execute on all functions in schema ndc_meta to {}").format(role))
    for table, allowed in EVIDENCE.items():
        conn.execute(sql.SQL("revoke all on {} from {}").format(sql.SQL(table), role))
        conn.execute(sql.SQL("grant {} on {} to {}").format(sql.SQL(allowed), sql.SQL(table), role))
    # The read meters' sequences: counted by the views, never set by the runtime role.
    for (seq,) in conn.execute("select format('%%I.%%I', schemaname, sequencename) from pg_sequences"
                               " where schemaname = 'ndc_meta' and sequencename like 'read\\_meter\\_%'").fetchall():
        conn.execute(sql.SQL("revoke all on {} from {}").format(sql.SQL(seq), role))


def _hide_other_agencies(conn: psycopg.Connection, runtime: str) -> None:
    """No login but the runtime role reads other roles' statement statistics or any view's definition."""
    role = ident(runtime)
    if conn.execute("select 1 from pg_extension where extname = 'pg_stat_statements'").fetchone():
        for name in ("pg_stat_statements", "pg_stat_statements_info"):
            if conn.execute("select to_regclass(%s)", (f"public.{name}",)).fetchone()[0]:
                conn.execute(sql.SQL("revoke all on {} from public").format(ident("public", name)))
                conn.execute(sql.SQL("grant select on {} to {}").format(ident("public", name), role))
        for (function,) in conn.execute("select p.oid::regprocedure::text from pg_proc p join pg_namespace n"
                                        " on n.oid = p.pronamespace where p.proname like 'pg\\_stat\\_statements%'"
                                        ).fetchall():
            conn.execute(sql.SQL("revoke all on function {} from public").format(sql.SQL(function)))
    for function in VIEW_DEFINITIONS:
        conn.execute(sql.SQL("revoke execute on function {} from public").format(sql.SQL(function)))
        conn.execute(sql.SQL("grant execute on function {} to {}").format(sql.SQL(function), role))
    conn.execute(sql.SQL("revoke select on pg_catalog.pg_rewrite from public"))
    conn.execute(sql.SQL("grant select on pg_catalog.pg_rewrite to {}").format(role))
