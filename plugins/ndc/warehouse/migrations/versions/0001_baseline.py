"""Baseline: the platform's schema as the last release before Alembic made it (ndc_meta.schema_version 7).

A warehouse made by that release is stamped at this revision without running it (``ndc.warehouse.schema``).

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None

SCHEMAS = """
create schema if not exists ndc_meta;
create schema if not exists quarantine;
create schema if not exists shared;
"""

# Extract progress per batch: staged per batch, then merged per run.
BATCHES = """
create table ndc_meta.batches (
    batch_id uuid primary key,
    dataset text not null,
    run_id text not null,
    window_start timestamptz not null,
    window_end timestamptz not null,
    batch_no integer not null,
    rows_in integer not null,
    rows_staged integer not null,
    rows_quarantined integer not null,
    rows_repaired integer not null,
    started_at timestamptz not null,
    committed_at timestamptz not null default clock_timestamp(),
    merged_at timestamptz,
    merge_run_id text
);
create index batches_dataset_window on ndc_meta.batches (dataset, window_start, window_end);
create index batches_unmerged on ndc_meta.batches (dataset) where merged_at is null;

create table ndc_meta.watermarks (
    dataset text primary key,
    loaded_through timestamptz,
    last_run_id text not null,
    updated_at timestamptz not null default now()
);
"""

# One hash-chained row per hand-off (ndc.audit.ledger); a trigger refuses UPDATE, DELETE and TRUNCATE.
LEDGER = """
create table ndc_meta.ledger (
    ledger_id bigint primary key,
    recorded_at timestamptz not null,
    kind text not null,
    source text not null,
    target text not null,
    run_id text,
    interval_start timestamptz,
    interval_end timestamptz,
    rows_in bigint not null,
    rows_loaded bigint not null,
    rows_quarantined bigint not null,
    contract_name text,
    contract_version text,
    duration_ms bigint not null,
    outcome text not null check (outcome in ('success', 'failed')),
    details jsonb not null default '{}',
    prev_hash text not null,
    row_hash text not null unique
);
-- The operator's page reads the last ledger row per kind and target.
create index ledger_kind_target on ndc_meta.ledger (kind, target, ledger_id desc);

create function ndc_meta.ledger_is_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'ndc_meta.ledger is append-only: % is not allowed', tg_op;
end $$;
create trigger ledger_no_update before update or delete on ndc_meta.ledger
    for each row execute function ndc_meta.ledger_is_append_only();
create trigger ledger_no_truncate before truncate on ndc_meta.ledger
    for each statement execute function ndc_meta.ledger_is_append_only();

-- The ledger's identity, under which its rows are anchored outside this database (ndc.audit.anchor).
create table ndc_meta.ledger_identity (
    ledger_uuid uuid primary key default gen_random_uuid(),
    created_at timestamptz not null default now()
);
insert into ndc_meta.ledger_identity default values;
"""

# Rows a gate refused, with their whole payload and the checks they failed (ndc.audit.quarantine), and their replay.
QUARANTINE = """
create table quarantine.rows (
    quarantine_id bigint generated always as identity primary key,
    dataset text not null,
    record_key text,
    checks text[] not null,
    reasons jsonb not null,
    payload jsonb not null,
    row_hash text not null,
    contract_name text not null,
    contract_version text not null,
    batch_id uuid not null,
    run_id text not null,
    quarantined_at timestamptz not null default now(),
    replayed_at timestamptz,
    replay_run_id text,
    replay_outcome text check (replay_outcome in ('loaded', 'still_failing')),
    unique (dataset, row_hash)
);
create index quarantine_rows_dataset_checks on quarantine.rows using gin (checks);
create index quarantine_rows_dataset_age on quarantine.rows (dataset, quarantined_at);

-- Per dataset and check: rows, replay status and age.
create view quarantine.overview as
select q.dataset, c.check_name,
    count(*) as rows,
    count(*) filter (where q.replayed_at is null) as rows_not_replayed,
    count(*) filter (where q.replay_outcome = 'still_failing') as rows_still_failing,
    count(*) filter (where q.replay_outcome = 'loaded') as rows_loaded_by_replay,
    min(q.quarantined_at) as oldest_at,
    max(q.quarantined_at) as newest_at,
    date_trunc('second', now() - min(q.quarantined_at)) as oldest_age
from quarantine.rows q cross join lateral unnest(q.checks) as c(check_name)
group by q.dataset, c.check_name;

-- Quarantine and landing history hold personal data: readable only by this group role (and the owner).
-- Roles are cluster-wide: a concurrent first run in another database may create it at the same moment.
do $$ begin
    perform pg_advisory_xact_lock(727002);
    create role ndc_personal_data nologin;
exception when duplicate_object or unique_violation then null;
end $$;
revoke all on schema quarantine from public;
revoke all on all tables in schema quarantine from public;
grant usage on schema quarantine to ndc_personal_data;
grant select on all tables in schema quarantine to ndc_personal_data;
alter default privileges in schema quarantine grant select on tables to ndc_personal_data;
"""

PUBLISH_AND_FILES = """
create table ndc_meta.publications (
    publication_id bigint generated always as identity primary key,
    build_schema text not null check (build_schema in ('shared_a', 'shared_b')),
    models text[] not null,
    run_id text,
    published_at timestamptz not null default now()
);

-- Dropped files loaded by the files connector: each content hash once per dataset (ndc.extract.connectors.files).
create table ndc_meta.files (
    dataset text not null,
    sha256 text not null,
    path text not null,
    bytes bigint not null,
    encoding text not null,
    batch_id uuid not null,
    run_id text not null,
    loaded_at timestamptz not null default clock_timestamp(),
    primary key (dataset, sha256)
);
"""

# Every validation at a gate, pass or fail (ndc.audit.contract_results), and contract-failure alerts
# (ndc.audit.alerts): one open alert per dataset and check until a run of it succeeds.
RESULTS_AND_ALERTS = """
create table ndc_meta.contract_results (
    result_id bigint generated always as identity primary key,
    checked_at timestamptz not null default clock_timestamp(),
    gate text not null check (gate in ('landing', 'publish', 'exchange', 'replay')),
    dataset text not null,
    contract_name text not null,
    contract_version text not null,
    run_id text,
    rows_checked bigint not null,
    rows_failed bigint not null,
    failed_by_check jsonb not null default '{}',
    duration_ms bigint not null,
    outcome text not null check (outcome in ('pass', 'fail', 'blocked')),
    message text
);
create index contract_results_dataset on ndc_meta.contract_results (dataset, checked_at);
create view ndc_meta.contract_pass_rates as
select dataset, gate, date_trunc('day', checked_at) as day,
    count(*) as validations,
    count(*) filter (where outcome = 'pass') as passed,
    count(*) filter (where outcome = 'fail') as failed_rows_quarantined,
    count(*) filter (where outcome = 'blocked') as blocked,
    round(count(*) filter (where outcome = 'pass')::numeric / count(*), 4) as validation_pass_rate,
    sum(rows_checked) as rows_checked,
    sum(rows_failed) as rows_failed,
    round(1 - sum(rows_failed)::numeric / nullif(sum(rows_checked), 0), 6) as row_pass_rate
from ndc_meta.contract_results
group by dataset, gate, date_trunc('day', checked_at);

create table ndc_meta.alerts (
    alert_id bigint generated always as identity primary key,
    dataset text not null,
    check_name text not null,
    dag_id text,
    task_id text,
    owner_agency text,
    owner_contact text,
    first_run_id text,
    last_run_id text,
    first_failed_at timestamptz not null default clock_timestamp(),
    last_failed_at timestamptz not null default clock_timestamp(),
    failures integer not null default 1,
    message text not null,
    closed_at timestamptz,
    closed_by_run_id text
);
create unique index alerts_one_open on ndc_meta.alerts (dataset, check_name) where closed_at is null;

-- Which runs raised or repeated each alert (a repeat overwrites alerts.last_run_id): how a DAG run's failure
-- callback knows a task of the same attempt already alerted (ndc.audit.alerts.dag_failed).
create table ndc_meta.alert_runs (
    alert_id bigint not null references ndc_meta.alerts,
    dag_id text,
    task_id text,
    run_id text,
    raised_at timestamptz not null default clock_timestamp()
);
create index alert_runs_run on ndc_meta.alert_runs (dag_id, run_id, raised_at);
"""

# Direct exchanges (ndc.sharing.exchange). The hub keeps no payload of an exchange: of a row that was not delivered
# only its key, the checks it failed and a keyed hash (HMAC-SHA256 with NDC_EXCHANGE_HASH_KEY).
EXCHANGES = """
create table ndc_meta.exchange_rejections (
    rejection_id bigint generated always as identity primary key,
    exchange text not null,
    record_key text not null,
    checks text[] not null,
    row_hmac text not null,
    contract_name text not null,
    contract_version text not null,
    run_id text not null,
    rejected_at timestamptz not null default clock_timestamp(),
    unique (exchange, row_hmac)
);
create table ndc_meta.exchange_watermarks (
    exchange text primary key,
    delivered_through timestamptz,
    last_run_id text not null,
    updated_at timestamptz not null default now()
);
"""

# The release before Alembic kept its schema's version here; the upgrade to Alembic reads and drops it.
SCHEMA_VERSION = """
create table ndc_meta.schema_version (version integer primary key, applied_at timestamptz default now());
insert into ndc_meta.schema_version (version) values (7);
"""

# The operator's page (ndc.operator). Aggregates only, read by the NOLOGIN group role ndc_operator: USAGE on
# ndc_meta, SELECT on these views and contract_pass_rates, nothing else (no quarantine, landing or ledger table).
# The views belong to the platform's role, so they aggregate tables their reader cannot read.
OPERATOR_ROLE = """
do $$ begin
    perform pg_advisory_xact_lock(727002);
    create role ndc_operator nologin;
exception when duplicate_object or unique_violation then null;
end $$;
do $$ begin  -- the page may connect as the platform's role and SET ROLE ndc_operator (a superuser already may)
    if not pg_has_role(current_user, 'ndc_operator', 'member') then
        grant ndc_operator to current_user;
    end if;
exception when insufficient_privilege or unique_violation or internal_error then null;  -- a concurrent first run
end $$;                                                    -- in another database may grant it; else NDC_OPERATOR_URL
do $$ begin
    execute format('grant connect on database %I to ndc_operator', current_database());
end $$;
"""

OPERATOR_VIEWS = """
-- The last load of each landing dataset (its extract) and shared dataset (the publish), from the ledger. A failed
-- publish published nothing: it is the last load of every shared dataset of the publication before it.
create view ndc_meta.ops_last_loads as
with loads as (
    select l.ledger_id, l.recorded_at, l.kind, regexp_replace(l.target, '^landing_', '') as dataset,
        'extract_' || l.source as dag_id, l.run_id, l.outcome, l.rows_in, l.rows_loaded, l.rows_quarantined,
        l.duration_ms, l.interval_start, l.interval_end, l.contract_version
    from ndc_meta.ledger l
    where l.kind = 'extract'
    union all
    select l.ledger_id, l.recorded_at, l.kind, m.dataset, 'conform', l.run_id, l.outcome, m.rows, m.rows, 0,
        l.duration_ms, null, null, null
    from ndc_meta.ledger l
    cross join lateral (
        select 'shared', l.rows_loaded
        union all
        select 'shared.' || e.key, e.value::bigint
        from jsonb_each_text(case when l.outcome = 'success' then l.details->'models' else '{}' end) e
        union all
        select 'shared.' || u.model, 0::bigint
        from unnest((select p.models from ndc_meta.publications p where l.outcome = 'failed'
            and p.published_at <= l.recorded_at order by p.publication_id desc limit 1)) u(model)
    ) m(dataset, rows)
    where l.kind = 'publish'
)
select distinct on (dataset) dataset, kind, dag_id, run_id, recorded_at, outcome, rows_in, rows_loaded,
    rows_quarantined, duration_ms, interval_start, interval_end, contract_version,
    max(recorded_at) filter (where outcome = 'success') over (partition by dataset) as last_success_at,
    count(*) over (partition by dataset) as loads,
    count(*) filter (where outcome = 'failed') over (partition by dataset) as failed_loads
from loads
order by dataset, ledger_id desc;

-- What freshness is judged on, per landing table: when a successful extract or replay last brought rows into it
-- (what max(_ndc_loaded_at) of the conform gate sees), when it was last extracted, and whether it still exists.
create view ndc_meta.ops_freshness_inputs as
select regexp_replace(l.target, '^landing_', '') as dataset, l.target as landing_table,
    max(l.recorded_at) filter (where l.rows_loaded > 0) as last_loaded_at,
    max(l.recorded_at) filter (where l.kind = 'extract') as last_extract_at,
    exists (select from pg_catalog.pg_tables t where t.schemaname = split_part(l.target, '.', 1)
        and t.tablename = split_part(l.target, '.', 2)) as landing_table_exists
from ndc_meta.ledger l
where l.kind in ('extract', 'replay') and l.outcome = 'success'
group by l.target;

-- Open quarantine (not loaded by a replay) per dataset and check, and per dataset (all_checks: rows counted once).
create view ndc_meta.ops_open_quarantine as
select q.dataset, c.check_name, grouping(c.check_name) = 1 as all_checks,
    count(distinct q.quarantine_id) as open_rows,
    count(distinct q.quarantine_id) filter (where q.replayed_at is null) as rows_not_replayed,
    count(distinct q.quarantine_id) filter (where q.replay_outcome = 'still_failing') as rows_still_failing,
    min(q.quarantined_at) as oldest_at,
    max(q.quarantined_at) as newest_at
from quarantine.rows q
left join lateral unnest(q.checks) c(check_name) on true
where q.replay_outcome is distinct from 'loaded'
group by grouping sets ((q.dataset, c.check_name), (q.dataset));

-- Open alerts without their message (a task's error text may quote data).
create view ndc_meta.ops_open_alerts as
select dataset, check_name, failures, first_failed_at, last_failed_at, dag_id, task_id, owner_agency, last_run_id
from ndc_meta.alerts
where closed_at is null;

-- Sharing transactions per day, unit and agency, each counted once (docs/sharing.md): a delivery (one per applied
-- agreement per publish, whatever the number of its views) or an exchange batch is one ledger row; reads come from
-- ndc_meta.consumer_reads when it exists. Read through a function of the platform's role. (The view
-- ndc_meta.sharing_transactions splits the same transactions per dataset, so its sum over datasets counts a
-- delivery of two views twice.)
create function ndc_meta.ops_sharing_rows()
returns table (day date, unit text, agency text, transactions bigint, rows bigint)
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
begin
    return query select (l.recorded_at at time zone 'UTC')::date, l.kind,
            coalesce(l.details->>'consumer', l.details->>'consumer_agency'), count(*)::bigint,
            sum(l.rows_loaded)::bigint
        from ndc_meta.ledger l where l.kind in ('delivery', 'exchange') and l.outcome = 'success'
        group by 1, 2, 3;
    if to_regclass('ndc_meta.consumer_reads') is not null then
        return query execute 'select day, ''read''::text, agency::text, sum(reads)::bigint, null::bigint'
            ' from ndc_meta.consumer_reads group by 1, 3';
    end if;
end $$;
create view ndc_meta.ops_sharing_transactions as
select day, unit, agency, transactions, rows from ndc_meta.ops_sharing_rows();

revoke all on function ndc_meta.ops_sharing_rows() from public;
grant execute on function ndc_meta.ops_sharing_rows() to ndc_operator;
grant usage on schema ndc_meta to ndc_operator;
grant select on ndc_meta.ops_last_loads, ndc_meta.ops_freshness_inputs, ndc_meta.ops_open_quarantine,
    ndc_meta.ops_open_alerts, ndc_meta.ops_sharing_transactions, ndc_meta.contract_pass_rates to ndc_operator;
"""


def upgrade() -> None:
    for statements in (SCHEMAS, BATCHES, LEDGER, QUARANTINE, PUBLISH_AND_FILES, RESULTS_AND_ALERTS, EXCHANGES,
                       SCHEMA_VERSION, OPERATOR_ROLE, OPERATOR_VIEWS):
        op.execute(statements)
