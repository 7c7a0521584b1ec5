"""Operations at the seed's size (issue 19): the operator's views read rollups, not the ledger.

The page's views used to aggregate the whole ledger (and every contract result) on each request, so their cost grew
with the ledger's length — 2.3 billion sharing transactions at the seed's scale. Each ledger row and contract result
now updates small rollup tables as it is inserted (one trigger each, inside the inserting transaction):

* ``ndc_meta.dataset_loads``: per landing or shared dataset, its last load (the ledger row's figures), the last
  success, and how many loads and failed loads it had;
* ``ndc_meta.landing_freshness``: per landing table, when a successful extract or replay last brought rows and
  when it was last extracted;
* ``ndc_meta.sharing_daily``: deliveries and exchanges per day, kind and consumer agency;
* ``ndc_meta.contract_results_daily``: validations per dataset, gate and day.

The views ``ops_last_loads``, ``ops_freshness_inputs``, ``ops_sharing_transactions`` (through
``ops_sharing_rows()``) and ``contract_pass_rates`` keep their columns and now read the rollups: the page costs the
same with a ledger of a thousand rows or a billion. The rollups are filled from the history at upgrade. The ledger
also gets an index on ``recorded_at``: a scheduled conform run asks which sources loaded since its horizon.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"

TABLES = """
create table ndc_meta.dataset_loads (
    dataset text primary key,
    kind text not null,
    dag_id text,
    run_id text,
    recorded_at timestamptz not null,
    outcome text not null,
    rows_in bigint,
    rows_loaded bigint,
    rows_quarantined bigint,
    duration_ms bigint,
    interval_start timestamptz,
    interval_end timestamptz,
    contract_version text,
    last_success_at timestamptz,
    loads bigint not null default 0,
    failed_loads bigint not null default 0
);
create table ndc_meta.landing_freshness (
    landing_table text primary key,
    dataset text not null,
    last_loaded_at timestamptz,
    last_extract_at timestamptz
);
create table ndc_meta.sharing_daily (
    day date not null,
    unit text not null,
    agency text not null default '',   -- '' for a row that names no consumer
    transactions bigint not null,
    rows bigint not null,
    primary key (day, unit, agency)
);
create table ndc_meta.contract_results_daily (
    dataset text not null,
    gate text not null,
    day timestamptz not null,          -- date_trunc('day', checked_at), as contract_pass_rates always gave it
    validations bigint not null,
    passed bigint not null,
    failed_rows_quarantined bigint not null,
    blocked bigint not null,
    rows_checked bigint not null,
    rows_failed bigint not null,
    primary key (dataset, gate, day)
);
create index contract_results_daily_day on ndc_meta.contract_results_daily (day);
create index ledger_recorded_at on ndc_meta.ledger (recorded_at);
"""

FUNCTIONS = """
create function ndc_meta.roll_load(p_dataset text, p_kind text, p_dag_id text, l ndc_meta.ledger, p_rows_in bigint,
                                   p_rows_loaded bigint, p_rows_quarantined bigint, p_with_interval boolean)
returns void language sql as $$
    insert into ndc_meta.dataset_loads as d (dataset, kind, dag_id, run_id, recorded_at, outcome, rows_in,
        rows_loaded, rows_quarantined, duration_ms, interval_start, interval_end, contract_version, last_success_at,
        loads, failed_loads)
    values (p_dataset, p_kind, p_dag_id, l.run_id, l.recorded_at, l.outcome, p_rows_in, p_rows_loaded,
        p_rows_quarantined, l.duration_ms, case when p_with_interval then l.interval_start end,
        case when p_with_interval then l.interval_end end, case when p_with_interval then l.contract_version end,
        case when l.outcome = 'success' then l.recorded_at end, 1,
        (l.outcome = 'failed')::int)
    on conflict (dataset) do update set  -- rows are appended in order under the ledger's lock: this one is the latest
        kind = excluded.kind, dag_id = excluded.dag_id, run_id = excluded.run_id, recorded_at = excluded.recorded_at,
        outcome = excluded.outcome, rows_in = excluded.rows_in, rows_loaded = excluded.rows_loaded,
        rows_quarantined = excluded.rows_quarantined, duration_ms = excluded.duration_ms,
        interval_start = excluded.interval_start, interval_end = excluded.interval_end,
        contract_version = excluded.contract_version,
        last_success_at = greatest(d.last_success_at, excluded.last_success_at),
        loads = d.loads + 1,
        failed_loads = d.failed_loads + excluded.failed_loads
$$;

-- Every ledger row updates the rollups the operator's views read (in the inserting transaction).
create function ndc_meta.ledger_rollup() returns trigger language plpgsql as $$
declare
    model record;
begin
    if new.kind = 'extract' then
        perform ndc_meta.roll_load(regexp_replace(new.target, '^landing_', ''), new.kind, 'extract_' || new.source,
                                   new, new.rows_in, new.rows_loaded, new.rows_quarantined, true);
    elsif new.kind = 'publish' then
        -- a failed publish published nothing: it is the last load of every dataset of the publication before it
        perform ndc_meta.roll_load('shared', new.kind, 'conform', new, new.rows_loaded, new.rows_loaded, 0, false);
        if new.outcome = 'success' then
            for model in select e.key, e.value::bigint as n from jsonb_each_text(new.details->'models') e loop
                perform ndc_meta.roll_load('shared.' || model.key, new.kind, 'conform', new, model.n, model.n, 0,
                                           false);
            end loop;
        else
            for model in select u.m from unnest((select p.models from ndc_meta.publications p
                    where p.published_at <= new.recorded_at order by p.publication_id desc limit 1)) u(m) loop
                perform ndc_meta.roll_load('shared.' || model.m, new.kind, 'conform', new, 0, 0, 0, false);
            end loop;
        end if;
    end if;
    if new.kind in ('extract', 'replay') and new.outcome = 'success' then
        insert into ndc_meta.landing_freshness as f (landing_table, dataset, last_loaded_at, last_extract_at)
        values (new.target, regexp_replace(new.target, '^landing_', ''),
                case when new.rows_loaded > 0 then new.recorded_at end,
                case when new.kind = 'extract' then new.recorded_at end)
        on conflict (landing_table) do update set
            last_loaded_at = greatest(f.last_loaded_at, excluded.last_loaded_at),
            last_extract_at = greatest(f.last_extract_at, excluded.last_extract_at);
    end if;
    if new.kind in ('delivery', 'exchange') and new.outcome = 'success' then
        insert into ndc_meta.sharing_daily as s (day, unit, agency, transactions, rows)
        values ((new.recorded_at at time zone 'UTC')::date, new.kind,
                coalesce(new.details->>'consumer', new.details->>'consumer_agency', ''), 1, new.rows_loaded)
        on conflict (day, unit, agency) do update set
            transactions = s.transactions + 1, rows = s.rows + excluded.rows;
    end if;
    return null;
end $$;
create trigger ledger_rollup after insert on ndc_meta.ledger
    for each row execute function ndc_meta.ledger_rollup();

create function ndc_meta.contract_results_rollup() returns trigger language plpgsql as $$
begin
    insert into ndc_meta.contract_results_daily as r (dataset, gate, day, validations, passed,
        failed_rows_quarantined, blocked, rows_checked, rows_failed)
    values (new.dataset, new.gate, date_trunc('day', new.checked_at), 1, (new.outcome = 'pass')::int,
        (new.outcome = 'fail')::int, (new.outcome = 'blocked')::int, new.rows_checked, new.rows_failed)
    on conflict (dataset, gate, day) do update set
        validations = r.validations + 1, passed = r.passed + excluded.passed,
        failed_rows_quarantined = r.failed_rows_quarantined + excluded.failed_rows_quarantined,
        blocked = r.blocked + excluded.blocked, rows_checked = r.rows_checked + excluded.rows_checked,
        rows_failed = r.rows_failed + excluded.rows_failed;
    return null;
end $$;
create trigger contract_results_rollup after insert on ndc_meta.contract_results
    for each row execute function ndc_meta.contract_results_rollup();
"""

# The history, rolled up once (the old views computed exactly this on every request).
BACKFILL = """
insert into ndc_meta.dataset_loads (dataset, kind, dag_id, run_id, recorded_at, outcome, rows_in, rows_loaded,
    rows_quarantined, duration_ms, interval_start, interval_end, contract_version, last_success_at, loads,
    failed_loads)
select o.dataset, o.kind, o.dag_id, o.run_id, o.recorded_at, o.outcome, o.rows_in, o.rows_loaded,
    o.rows_quarantined, o.duration_ms, o.interval_start, o.interval_end, o.contract_version, o.last_success_at,
    o.loads, o.failed_loads
from ndc_meta.ops_last_loads o;
insert into ndc_meta.landing_freshness (landing_table, dataset, last_loaded_at, last_extract_at)
select landing_table, dataset, last_loaded_at, last_extract_at from ndc_meta.ops_freshness_inputs;
insert into ndc_meta.sharing_daily (day, unit, agency, transactions, rows)
select (l.recorded_at at time zone 'UTC')::date, l.kind,
    coalesce(l.details->>'consumer', l.details->>'consumer_agency', ''), count(*), coalesce(sum(l.rows_loaded), 0)
from ndc_meta.ledger l where l.kind in ('delivery', 'exchange') and l.outcome = 'success'
group by 1, 2, 3;
insert into ndc_meta.contract_results_daily
select dataset, gate, day, validations, passed, failed_rows_quarantined, blocked, rows_checked, rows_failed
from ndc_meta.contract_pass_rates;
"""

VIEWS = """
drop view ndc_meta.ops_last_loads;
create view ndc_meta.ops_last_loads as
select dataset, kind, dag_id, run_id, recorded_at, outcome, rows_in, rows_loaded, rows_quarantined, duration_ms,
    interval_start, interval_end, contract_version, last_success_at, loads, failed_loads
from ndc_meta.dataset_loads;

drop view ndc_meta.ops_freshness_inputs;
create view ndc_meta.ops_freshness_inputs as
select dataset, landing_table, last_loaded_at, last_extract_at,
    exists (select from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
            where n.nspname = split_part(landing_table, '.', 1) and c.relname = split_part(landing_table, '.', 2)
            and c.relkind in ('r', 'p')) as landing_table_exists  -- the catalog: its reader has no landing grant
from ndc_meta.landing_freshness;

create or replace function ndc_meta.ops_sharing_rows()
returns table (day date, unit text, agency text, transactions bigint, rows bigint)
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
begin
    return query select s.day, s.unit, nullif(s.agency, ''), s.transactions, s.rows from ndc_meta.sharing_daily s;
    if to_regclass('ndc_meta.consumer_reads') is not null then
        return query execute 'select day, ''read''::text, agency::text, sum(reads)::bigint, null::bigint'
            ' from ndc_meta.consumer_reads group by 1, 3';
    end if;
end $$;

drop view ndc_meta.contract_pass_rates;
create view ndc_meta.contract_pass_rates as
select dataset, gate, day, validations, passed, failed_rows_quarantined, blocked,
    round(passed::numeric / validations, 4) as validation_pass_rate,
    rows_checked, rows_failed,
    round(1 - rows_failed::numeric / nullif(rows_checked, 0), 6) as row_pass_rate
from ndc_meta.contract_results_daily;

grant select on ndc_meta.ops_last_loads, ndc_meta.ops_freshness_inputs, ndc_meta.contract_pass_rates
    to ndc_operator;
"""


def upgrade() -> None:
    op.execute(TABLES)
    op.execute(BACKFILL)
    op.execute(VIEWS)
    op.execute(FUNCTIONS)
