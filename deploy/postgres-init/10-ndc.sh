#!/usr/bin/env bash
# Runs once, when the postgres service starts on an empty data volume (the image runs every file in
# /docker-entrypoint-initdb.d as the superuser). It creates:
#   - role airflow, owner of database airflow (Airflow's metadata and the Celery result backend);
#   - role ndc_service_api, the data-sharing service's login (made a member of ndc_service by ndc-bootstrap);
#   - role ndc, the platform's runtime role: a plain LOGIN (no CREATEDB, no CREATEROLE, no predefined role),
#     owner of the simulated source databases and the direct exchange's consumer database. The warehouse (ndc) is
#     created here and handed over by the ndc-bootstrap service (`ndc warehouse bootstrap`, as this superuser) to
#     ndc_custodian, which owns the platform's evidence (ledger, approvals) and makes agency roles;
#   - the ledger anchor (database ndc_ledger_anchor) owned by ndc_anchor_owner, which ndc does not own, with
#     the login role ndc_anchor_writer that may only INSERT and SELECT there (see docs/sharing.md for the limit);
#   - extension pg_stat_statements in the warehouse (needs the superuser; preloaded by the service's command;
#     the bootstrap revokes it from every login but ndc's).
# Passwords come from the environment the compose file passes (.env); nothing secret is stored here.
# Changing a password in .env later does not change it here: ALTER ROLE ... PASSWORD by hand (docs/deploy.md).
set -euo pipefail

: "${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD in .env}"
: "${NDC_DB_PASSWORD:?set NDC_DB_PASSWORD in .env}"
: "${NDC_ANCHOR_DB_PASSWORD:?set NDC_ANCHOR_DB_PASSWORD in .env}"
: "${NDC_OPERATOR_DB_PASSWORD:?set NDC_OPERATOR_DB_PASSWORD in .env}"
: "${NDC_SERVICE_DB_PASSWORD:?set NDC_SERVICE_DB_PASSWORD in .env}"

run_psql() {
  psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" "$@"
}

run_psql --dbname postgres \
  -v airflow_pw="$AIRFLOW_DB_PASSWORD" -v ndc_pw="$NDC_DB_PASSWORD" -v anchor_pw="$NDC_ANCHOR_DB_PASSWORD" \
  -v operator_pw="$NDC_OPERATOR_DB_PASSWORD" -v service_pw="$NDC_SERVICE_DB_PASSWORD" <<'SQL'
select format('create role airflow login password %L', :'airflow_pw')
 where not exists (select from pg_roles where rolname = 'airflow') \gexec
select format('create role ndc login nocreatedb nocreaterole password %L', :'ndc_pw')
 where not exists (select from pg_roles where rolname = 'ndc') \gexec
select 'create role ndc_anchor_owner nologin'
 where not exists (select from pg_roles where rolname = 'ndc_anchor_owner') \gexec
select format('create role ndc_anchor_writer login password %L', :'anchor_pw')
 where not exists (select from pg_roles where rolname = 'ndc_anchor_writer') \gexec
-- The operator's page reads as this login, a member of the read-only role ndc_operator (its grants come with the
-- platform's schema, ndc.warehouse.schema), so the API server never holds the platform's role.
-- The data-sharing service's login (ndc-bootstrap makes it a member of ndc_service, nothing more).
select format('create role ndc_service_api login nocreatedb nocreaterole password %L', :'service_pw')
 where not exists (select from pg_roles where rolname = 'ndc_service_api') \gexec
select 'create role ndc_operator nologin'
 where not exists (select from pg_roles where rolname = 'ndc_operator') \gexec
select format('create role ndc_operator_page login password %L in role ndc_operator', :'operator_pw')
 where not exists (select from pg_roles where rolname = 'ndc_operator_page') \gexec

select format('create database %I owner %I', db, owner)
  from (values ('airflow', 'airflow'),
               ('ndc', 'postgres'),
               ('ndc_src_population', 'ndc'),
               ('ndc_src_taxation', 'ndc'),
               ('ndc_src_insurance_backend', 'ndc'),
               ('ndc_agency_taxation', 'ndc'),
               ('ndc_ledger_anchor', 'ndc_anchor_owner')) as wanted(db, owner)
 where not exists (select from pg_database where datname = db) \gexec

-- As ndc.warehouse.database.ensure_database does: only granted roles may connect.
select format('revoke connect, temporary on database %I from public', datname)
  from pg_database
 where datname in ('airflow', 'ndc', 'ndc_src_population', 'ndc_src_taxation', 'ndc_src_insurance_backend',
                   'ndc_agency_taxation', 'ndc_ledger_anchor') \gexec
grant connect on database ndc_ledger_anchor to ndc_anchor_writer;
grant connect on database ndc to ndc_operator_page;
SQL

# Consumer reads per role and view (ndc.sharing.reads): the extension needs the superuser to be created.
run_psql --dbname ndc <<'SQL'
create extension if not exists pg_stat_statements;
SQL

# The anchor table as ndc.audit.anchor.ANCHOR_DDL creates it, owned by ndc_anchor_owner (tests/deploy/test_compose.py checks
# that every statement of ANCHOR_DDL is here word for word).
run_psql --dbname ndc_ledger_anchor <<'SQL'
set role ndc_anchor_owner;
revoke create on schema public from public;
create schema if not exists ledger_anchor;
create table if not exists ledger_anchor.anchors (
    anchor_id bigint generated always as identity primary key,
    ledger_uuid uuid not null,
    ledger_database text not null,
    ledger_id bigint not null,
    row_hash text not null,
    anchored_at timestamptz not null default clock_timestamp(),
    unique (ledger_uuid, ledger_id)
);
create or replace function ledger_anchor.append_only() returns trigger language plpgsql as $$
begin
    raise exception 'ledger_anchor.anchors is append-only: % is not allowed', tg_op;
end $$;
drop trigger if exists anchors_no_update on ledger_anchor.anchors;
create trigger anchors_no_update before update or delete on ledger_anchor.anchors
    for each row execute function ledger_anchor.append_only();
drop trigger if exists anchors_no_truncate on ledger_anchor.anchors;
create trigger anchors_no_truncate before truncate on ledger_anchor.anchors
    for each statement execute function ledger_anchor.append_only();
grant usage on schema ledger_anchor to ndc_anchor_writer;
grant select, insert on ledger_anchor.anchors to ndc_anchor_writer;
reset role;
SQL
