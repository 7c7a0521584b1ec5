"""Least privilege and tamper evidence (issue 21): what the platform's runtime role may no longer do by itself.

* **Approvals are append-only** for everyone but their owner: a trigger refuses UPDATE, DELETE and TRUNCATE of
  ``agreement_approvals`` and of the new ``approval_withdrawals`` (an approver withdraws an approval by a row
  there). An approval records the consumer agency's logins it covers (``consumer``, ``logins``). Approvers may
  append ledger rows (an approval and a withdrawal are each recorded in the ledger).
* **The ledger extends its chain or refuses the row**: a trigger checks that a new row's id follows the last one
  and that its ``prev_hash`` is the last row's hash, so a writer that only has INSERT cannot fork the chain. Its
  rollup trigger runs as the function's owner, so an approver's ledger row updates the rollups too.
* **Agency roles are made by the functions below**, run as their owner (in a deployment ``ndc_custodian``, which has
  CREATEROLE; the runtime role has not): a group ``ndc_agency_<agency>`` and its logins, registered in
  ``ndc_meta.agency_roles``. A login is admitted to its agency's group only while an approval (not withdrawn)
  lists it; a login belongs to one agency; a role the platform did not make as an agency login is refused, so the
  runtime role cannot use them to grant itself (or anyone) another role. Agency logins get statement,
  idle-in-transaction (and, on PostgreSQL 17+, transaction) time limits.
* **Reads are metered by the views themselves**: every agency view calls ``ndc_meta.agency_read(agreement, view)``
  once per statement. It refuses rows outside the agreement's validity (checked against the statement's time, not
  the transaction's) and counts the read on a sequence per login and view, whatever the statement's text says.
  ``ndc_meta.read_counters`` (the ``pg_stat_statements`` counters this replaces) is dropped.
* **HMAC keys are per agreement and consumer**: an agreement id reused for another consumer gets a new key.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"

APPROVALS = """
-- The same file may be approved again after a withdrawal: a new approval, never the old one revived.
alter table ndc_meta.agreement_approvals drop constraint if exists agreement_approvals_agreement_id_content_sha256_key;
alter table ndc_meta.agreement_approvals add column if not exists consumer text,
    add column if not exists logins text[] not null default '{}';
create table ndc_meta.approval_withdrawals (
    withdrawal_id bigint generated always as identity primary key,
    approval_id bigint not null unique references ndc_meta.agreement_approvals,
    withdrawn_by text not null default session_user,
    withdrawn_at timestamptz not null default now(),
    reason text not null check (length(btrim(reason)) >= 3)
);
create function ndc_meta.append_only() returns trigger language plpgsql as $$
begin
    raise exception '%.% is append-only: % is not allowed', tg_table_schema, tg_table_name, tg_op;
end $$;
create trigger approvals_append_only before update or delete on ndc_meta.agreement_approvals
    for each row execute function ndc_meta.append_only();
create trigger approvals_no_truncate before truncate on ndc_meta.agreement_approvals
    for each statement execute function ndc_meta.append_only();
create trigger withdrawals_append_only before update or delete on ndc_meta.approval_withdrawals
    for each row execute function ndc_meta.append_only();
create trigger withdrawals_no_truncate before truncate on ndc_meta.approval_withdrawals
    for each statement execute function ndc_meta.append_only();

-- The platform's roles own ndc_meta (embedded) or shared (a deployment's runtime role): neither may approve.
create or replace function ndc_meta.approval_by_approver() returns trigger language plpgsql
    set search_path = pg_catalog, pg_temp as $$
begin
    if session_user in (select pg_get_userbyid(nspowner) from pg_namespace where nspname in ('ndc_meta', 'shared'))
    then
        raise exception 'an agreement is approved by an approver role, not by the platform''s own role (%)',
            session_user;
    end if;
    if not pg_has_role(session_user, 'ndc_approver', 'member') then
        raise exception 'role % is not a member of ndc_approver', session_user;
    end if;
    if tg_table_name = 'agreement_approvals' then
        new.approved_by := session_user;
        new.approved_at := now();
    else
        new.withdrawn_by := session_user;
        new.withdrawn_at := now();
    end if;
    return new;
end $$;
create trigger withdrawals_by_approver before insert on ndc_meta.approval_withdrawals
    for each row execute function ndc_meta.approval_by_approver();
revoke all on ndc_meta.approval_withdrawals from public;
grant select, insert on ndc_meta.approval_withdrawals to ndc_approver;
grant select, insert on ndc_meta.ledger to ndc_approver;
grant select on ndc_meta.ledger_identity to ndc_approver;

-- Approvals in force: not withdrawn, by a role that is still an approver.
create view ndc_meta.approvals_in_force as
select a.* from ndc_meta.agreement_approvals a
 where not exists (select from ndc_meta.approval_withdrawals w where w.approval_id = a.approval_id)
   and exists (select from pg_roles r where r.rolname = a.approved_by
               and pg_has_role(r.oid, 'ndc_approver', 'member'))
   and a.approved_by not in (select pg_get_userbyid(nspowner) from pg_namespace
                             where nspname in ('ndc_meta', 'shared'));
grant select on ndc_meta.approvals_in_force to ndc_approver;
"""

LEDGER = """
create function ndc_meta.ledger_extends_chain() returns trigger language plpgsql
    set search_path = pg_catalog, pg_temp as $$
declare
    last_id bigint;
    last_hash text;
begin
    select ledger_id, row_hash into last_id, last_hash from ndc_meta.ledger order by ledger_id desc limit 1;
    if not found then
        last_id := 0;
        last_hash := repeat('0', 64);
    end if;
    if new.ledger_id <> last_id + 1 or new.prev_hash <> last_hash then
        raise exception 'ledger row % does not extend the chain: the last row is % with hash %', new.ledger_id,
            last_id, left(last_hash, 16);
    end if;
    return new;
end $$;
create trigger ledger_extends_chain before insert on ndc_meta.ledger
    for each row execute function ndc_meta.ledger_extends_chain();
alter function ndc_meta.ledger_rollup() security definer set search_path = ndc_meta, pg_catalog, pg_temp;
alter function ndc_meta.roll_load(text, text, text, ndc_meta.ledger, bigint, bigint, bigint, boolean)
    set search_path = ndc_meta, pg_catalog, pg_temp;
"""

AGENCY_ROLES = """
create table ndc_meta.agency_roles (
    role text primary key,
    agency text not null,
    kind text not null check (kind in ('group', 'login')),
    registered_at timestamptz not null default now()
);
revoke all on ndc_meta.agency_roles from public;

create function ndc_meta.ensure_agency_group(p_agency text) returns text language plpgsql security definer
    set search_path = pg_catalog, pg_temp as $$
declare
    v_group text := 'ndc_agency_' || p_agency;
    v_kind text;
begin
    if p_agency !~ '^[a-z][a-z0-9_]{0,45}$' then
        raise exception 'agency name % is not a lower-case identifier', p_agency;
    end if;
    select kind into v_kind from ndc_meta.agency_roles where role = v_group;
    if not found then
        if exists (select from pg_roles where rolname = v_group) then
            -- a group of a release before the registry: adopted if it is a plain NOLOGIN role
            if exists (select from pg_roles where rolname = v_group and (rolcanlogin or rolsuper or rolcreaterole
                       or rolcreatedb or rolreplication or rolbypassrls)) then
                raise exception 'role % exists and is not an agency group: the database administrator drops or '
                    'renames it', v_group;
            end if;
        else
            execute format('create role %I nologin', v_group);
        end if;
        insert into ndc_meta.agency_roles (role, agency, kind) values (v_group, p_agency, 'group');
    elsif v_kind <> 'group' then
        raise exception 'role % is registered as an agency login, not a group', v_group;
    end if;
    execute format('grant connect on database %I to %I', current_database(), v_group);
    return v_group;
end $$;

create function ndc_meta.ensure_agency_login(p_login text, p_agency text, p_statement_timeout text,
        p_connection_limit int, p_idle_in_transaction_timeout text, p_transaction_timeout text)
    returns text language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_group text := 'ndc_agency_' || p_agency;
    v_owner text;
    v_kind text;
    v_approved boolean;
begin
    if p_login !~ '^[a-z_][a-z0-9_]{0,62}$' then
        raise exception 'login % is not a lower-case identifier', p_login;
    end if;
    if not exists (select from ndc_meta.agency_roles where role = v_group and kind = 'group') then
        raise exception 'agency % has no group role yet: ensure_agency_group first', p_agency;
    end if;
    select agency, kind into v_owner, v_kind from ndc_meta.agency_roles where role = p_login;
    if found and (v_kind <> 'login' or v_owner <> p_agency) then
        raise exception 'login % belongs to agency %, not %: a login belongs to one agency', p_login, v_owner,
            p_agency;
    end if;
    if not found then
        if exists (select from pg_roles where rolname = p_login) then
            -- a login of a release before the registry is adopted only if it is already in this agency's group
            -- and in no other role: never a role the platform did not make as this agency's login
            if not exists (select from pg_roles r where r.rolname = p_login and not r.rolsuper
                           and not r.rolcreaterole and not r.rolcreatedb and not r.rolreplication and not r.rolbypassrls
                           and pg_has_role(r.oid, v_group, 'member'))
               or exists (select from pg_auth_members m join pg_roles g on g.oid = m.roleid
                          join pg_roles r on r.oid = m.member where r.rolname = p_login and g.rolname <> v_group)
               or exists (select from pg_auth_members m join pg_roles r on r.oid = m.roleid
                          where r.rolname = p_login) then
                raise exception 'role % exists and is not a login of agency %: pick another login name in the '
                    'agency file (the platform never takes over an existing role)', p_login, p_agency;
            end if;
        else
            execute format('create role %I nologin', p_login);
        end if;
        insert into ndc_meta.agency_roles (role, agency, kind) values (p_login, p_agency, 'login');
    end if;
    execute format('alter role %I nocreatedb nocreaterole inherit connection limit %s', p_login, p_connection_limit);
    execute format('alter role %I set statement_timeout = %L', p_login, p_statement_timeout);
    execute format('alter role %I set idle_in_transaction_session_timeout = %L', p_login,
                   p_idle_in_transaction_timeout);
    if current_setting('server_version_num')::int >= 170000 then
        execute format('alter role %I set transaction_timeout = %L', p_login, p_transaction_timeout);
    end if;
    v_approved := exists (select from ndc_meta.approvals_in_force a where a.consumer = p_agency
                          and p_login = any(a.logins));
    if v_approved then
        execute format('grant %I to %I', v_group, p_login);
        execute format('alter role %I login', p_login);
        return 'admitted';
    end if;
    if pg_has_role(p_login, v_group, 'member') then
        execute format('revoke %I from %I', v_group, p_login);
    end if;
    execute format('alter role %I nologin', p_login);
    return 'awaiting approval';
end $$;

-- A login no longer listed (or of a removed agency): out of every agency group, no login.
create function ndc_meta.close_agency_login(p_login text) returns void language plpgsql security definer
    set search_path = pg_catalog, pg_temp as $$
declare
    v_group text;
begin
    if not exists (select from ndc_meta.agency_roles where role = p_login and kind = 'login') then
        raise exception 'role % is not an agency login', p_login;
    end if;
    for v_group in select g.rolname from pg_auth_members m join pg_roles g on g.oid = m.roleid
                   join pg_roles r on r.oid = m.member where r.rolname = p_login loop
        execute format('revoke %I from %I', v_group, p_login);
    end loop;
    execute format('alter role %I nologin', p_login);
end $$;

create function ndc_meta.close_agency_group(p_group text) returns void language plpgsql security definer
    set search_path = pg_catalog, pg_temp as $$
begin
    if not exists (select from ndc_meta.agency_roles where role = p_group and kind = 'group') then
        raise exception 'role % is not an agency group', p_group;
    end if;
    execute format('revoke connect on database %I from %I', current_database(), p_group);
end $$;

-- Agency sessions whose transaction has run longer than p_limit are ended (PostgreSQL before 17 has no
-- transaction_timeout). Returns the sessions ended.
create function ndc_meta.end_long_agency_transactions(p_limit interval) returns int language plpgsql
    security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_ended int := 0;
    v_pid int;
begin
    for v_pid in select a.pid from pg_stat_activity a join ndc_meta.agency_roles r on r.role = a.usename
                 where r.kind = 'login' and a.xact_start < clock_timestamp() - p_limit loop
        if pg_terminate_backend(v_pid) then
            v_ended := v_ended + 1;
        end if;
    end loop;
    return v_ended;
end $$;
-- Who holds a lock on a shared or agency relation (the runtime role sees no other role's session details).
create function ndc_meta.lock_holders() returns table (pid int, role text, state text, xact_start timestamptz)
    language sql security definer set search_path = pg_catalog, pg_temp as $$
    select distinct a.pid, a.usename::text, a.state, a.xact_start from pg_locks l
      join pg_stat_activity a on a.pid = l.pid join pg_class c on c.oid = l.relation
      join pg_namespace n on n.oid = c.relnamespace
     where l.granted and a.pid <> pg_backend_pid() and a.xact_start is not null
       and (n.nspname = 'shared' or n.nspname like 'agency\\_%')
     order by a.xact_start
$$;
revoke all on function ndc_meta.lock_holders() from public;
revoke all on function ndc_meta.ensure_agency_group(text),
    ndc_meta.ensure_agency_login(text, text, text, int, text, text),
    ndc_meta.close_agency_login(text), ndc_meta.close_agency_group(text),
    ndc_meta.end_long_agency_transactions(interval) from public;
"""

READS = """
alter table ndc_meta.applied_agreements add column if not exists starts_at timestamptz,
    add column if not exists expires_at timestamptz;
update ndc_meta.applied_agreements set starts_at = starts_on::timestamp at time zone 'Asia/Ho_Chi_Minh',
    expires_at = (expires_on + 1)::timestamp at time zone 'Asia/Ho_Chi_Minh';
create table ndc_meta.read_meters (
    meter_id bigint generated always as identity primary key,
    role text not null,
    agency text not null,
    view text not null,
    counted bigint not null default 0,
    unique (role, view)
);
revoke all on ndc_meta.read_meters from public;

create function ndc_meta.ensure_read_meter(p_login text, p_agency text, p_view text) returns bigint
    language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_id bigint;
begin
    if not exists (select from ndc_meta.agency_roles where role = p_login and agency = p_agency and kind = 'login')
    then
        raise exception 'role % is not a login of agency %', p_login, p_agency;
    end if;
    insert into ndc_meta.read_meters (role, agency, view) values (p_login, p_agency, p_view)
        on conflict (role, view) do nothing;
    select meter_id into v_id from ndc_meta.read_meters where role = p_login and view = p_view;
    execute format('create sequence if not exists ndc_meta.%I', 'read_meter_' || v_id);
    return v_id;
end $$;

-- Called once per statement by every agency view (an uncorrelated subquery): false outside the agreement's
-- validity at the statement's time; otherwise counts the read for the session's login and returns true.
create function ndc_meta.agency_read(p_agreement text, p_view text) returns boolean language plpgsql
    security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_meter bigint;
begin
    if not exists (select from ndc_meta.applied_agreements a where a.agreement_id = p_agreement
                   and statement_timestamp() >= a.starts_at and statement_timestamp() < a.expires_at) then
        return false;
    end if;
    select meter_id into v_meter from ndc_meta.read_meters where role = session_user and view = p_view;
    if found then
        perform nextval(format('ndc_meta.%I', 'read_meter_' || v_meter)::regclass);
    end if;
    return true;
end $$;
grant execute on function ndc_meta.agency_read(text, text) to public;

-- Reads per meter so far (a sequence never called has counted nothing).
create function ndc_meta.read_meter_totals() returns table (meter_id bigint, role text, agency text, view text,
        reads bigint, counted bigint) language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    m record;
    v_last bigint;
    v_called boolean;
begin
    for m in select * from ndc_meta.read_meters order by 1 loop
        execute format('select last_value, is_called from ndc_meta.%I', 'read_meter_' || m.meter_id)
            into v_last, v_called;
        meter_id := m.meter_id; role := m.role; agency := m.agency; view := m.view;
        reads := case when v_called then v_last else 0 end;
        counted := m.counted;
        return next;
    end loop;
end $$;
create function ndc_meta.mark_reads_counted(p_meter bigint, p_counted bigint) returns void language sql
    security definer set search_path = pg_catalog, pg_temp as $$
    update ndc_meta.read_meters set counted = greatest(counted, p_counted) where meter_id = p_meter
$$;
revoke all on function ndc_meta.ensure_read_meter(text, text, text), ndc_meta.read_meter_totals(),
    ndc_meta.mark_reads_counted(bigint, bigint) from public;
-- The pg_stat_statements counters the meters replace.
drop table if exists ndc_meta.read_counters;

-- One HMAC key per agreement and consumer: an agreement id reused for another consumer never gets the old key.
alter table ndc_meta.agreement_keys add column if not exists consumer text;
update ndc_meta.agreement_keys k set consumer = a.consumer from ndc_meta.applied_agreements a
 where a.agreement_id = k.agreement_id and k.consumer is null;
update ndc_meta.agreement_keys set consumer = '' where consumer is null;
alter table ndc_meta.agreement_keys alter column consumer set not null,
    drop constraint agreement_keys_pkey, add primary key (agreement_id, consumer);
"""


def upgrade() -> None:
    op.execute(APPROVALS)
    op.execute(LEDGER)
    op.execute(AGENCY_ROLES)
    op.execute(READS)
