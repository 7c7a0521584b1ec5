"""The data-sharing service (issue 22): consumer agencies call the platform over HTTP, and every call is a logged
sharing transaction.

* **``ndc_service``** (NOLOGIN, NOINHERIT: an agency's privileges only after ``SET ROLE``) is the group of the
  service's database login (``NDC_SERVICE_URL``'s user; ``ndc warehouse bootstrap`` makes it a member).
  ``ensure_service_member`` (called by ``ndc agreements apply``) makes it a member of each agency login and group,
  so the service answers a request with ``SET LOCAL ROLE <login>`` and the database enforces that login's
  agreement views: rows, columns, masks, validity. It reads the applied agreements, the catalogue, the
  publications and its tokens, and appends to the request log and the ledger.
* **``service_tokens``**: one row per issued token (the SHA-256 of its secret, never the secret), for an agency
  login or for a citizen portal's tracker, written only by ``issue_service_token`` and ``revoke_service_token``;
  the service accepts a token only when the ledger records its issue.
* **``service_requests``**: the request log, append-only (a trigger refuses UPDATE and DELETE; only its owner may
  TRUNCATE) and partitioned by day (UTC); ``ensure_request_partitions`` makes the days ahead. A row holds who asked,
  under which agreement and purpose, for which view, the key asked for and the keys a page returned as the
  agreement's HMAC (never in clear), the rows returned, the status, timings, the publication and the contract
  version: no row values. The service writes it only through ``log_requests`` (no INSERT of its own), in
  batches; each batch's SHA-256 is one ledger row (``kind = service_requests``), whose per-agency counts a trigger
  adds to ``sharing_daily`` (unit ``request``).
* **``applied_agreements``** gains the request purposes an agreement allows and, per view, how the service reads
  it (the key order of pages; the column a lookup matches).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"

SERVICE = """
do $$ begin
    if not exists (select from pg_roles where rolname = 'ndc_service') then
        create role ndc_service nologin noinherit;
    end if;
end $$;

alter table ndc_meta.applied_agreements add column if not exists purposes text[] not null default '{}',
    add column if not exists lookup_keys jsonb not null default '{}';

create table ndc_meta.service_tokens (
    token_id text primary key,
    scope text not null check (scope in ('agency', 'tracker')),
    login text not null,
    agency text,
    secret_sha256 text not null,
    issued_at timestamptz not null default now(),
    issued_by text not null default session_user,
    expires_at timestamptz,
    revoked_at timestamptz,
    check ((scope = 'agency') = (agency is not null))
);

create table ndc_meta.service_requests (
    requested_at timestamptz not null,
    batch_id bigint not null,
    seq int not null,
    operation text not null,
    status smallint not null,
    reason text,
    agency text,
    login text,
    agreement_id text,
    agreement_sha256 text,
    purpose text,
    view text,
    key_digest text,
    returned_digests text[],
    rows int not null,
    db_ms real,
    total_ms real,
    publication_id bigint,
    contract_version text
) partition by range (requested_at);
create index service_requests_key on ndc_meta.service_requests (key_digest) where key_digest is not null;
create index service_requests_returned on ndc_meta.service_requests using gin (returned_digests)
    where returned_digests is not null;
create index service_requests_batch on ndc_meta.service_requests (batch_id, seq);
create sequence ndc_meta.service_request_batches;
create trigger service_requests_append_only before update or delete on ndc_meta.service_requests
    for each row execute function ndc_meta.append_only();

-- Days of the request log from p_from, p_days of them (idempotent); returns the partitions made.
create function ndc_meta.ensure_request_partitions(p_from date, p_days int) returns int language plpgsql
    security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_day date;
    v_made int := 0;
    v_name text;
begin
    if p_days < 1 or p_days > 62 then
        raise exception 'days of the request log are made 1 to 62 at a time, not %', p_days;
    end if;
    for i in 0 .. p_days - 1 loop
        v_day := p_from + i;
        v_name := 'service_requests_' || to_char(v_day, 'YYYYMMDD');
        if to_regclass('ndc_meta.' || v_name) is null then
            execute format('create table ndc_meta.%I partition of ndc_meta.service_requests for values from (%L)'
                           ' to (%L)', v_name, v_day::timestamp at time zone 'UTC',
                           (v_day + 1)::timestamp at time zone 'UTC');
            v_made := v_made + 1;
        end if;
    end loop;
    return v_made;
end $$;

-- The service's writer: one call per group commit. Rows are JSON objects (no key in clear is stored: a key or
-- the keys a page returned, when given in clear, are stored as the agreement's HMAC, computed here with one join).
create function ndc_meta.log_requests(p_batch bigint, p_first int, p_rows jsonb) returns int language plpgsql
    security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_schema text;
    v_count int;
begin
    select extnamespace::regnamespace::text into v_schema from pg_extension where extname = 'pgcrypto';
    execute format($f$
        insert into ndc_meta.service_requests (requested_at, batch_id, seq, operation, status, reason, agency,
            login, agreement_id, agreement_sha256, purpose, view, key_digest, returned_digests, rows, db_ms,
            total_ms, publication_id, contract_version)
        select r.requested_at, $1, $2 + o.n - 1, r.operation, r.status, r.reason, r.agency, r.login,
            r.agreement_id, r.agreement_sha256, r.purpose, r.view,
            coalesce(r.key_digest, case when r.key is not null and k.hmac_key is not null then
                encode(%1$I.hmac(convert_to(r.key, 'UTF8'), k.hmac_key, 'sha256'), 'hex') end),
            case when r.returned is null then null
                 when r.returned_are_digests then array(select jsonb_array_elements_text(r.returned))
                 else array(select encode(%1$I.hmac(convert_to(e, 'UTF8'), k.hmac_key, 'sha256'), 'hex')
                            from jsonb_array_elements_text(r.returned) e) end,
            r.rows, r.db_ms, r.total_ms, r.publication_id, r.contract_version
        from jsonb_array_elements($3) with ordinality as o(x, n)
        cross join lateral jsonb_to_record(o.x) as r(requested_at timestamptz, operation text, status smallint,
            reason text, agency text, login text, agreement_id text, agreement_sha256 text, purpose text,
            view text, key text, key_digest text, returned jsonb, returned_are_digests boolean, rows int,
            db_ms real, total_ms real, publication_id bigint, contract_version text)
        left join ndc_meta.applied_agreements a on a.agreement_id = r.agreement_id
        left join ndc_meta.agreement_keys k on k.agreement_id = a.agreement_id and k.consumer = a.consumer
        $f$, v_schema) using p_batch, p_first, p_rows;
    get diagnostics v_count = row_count;
    return v_count;
end $$;

-- Tokens are written only by these two functions (the runtime role may read the table, not write it); the service
-- accepts a token only when the ledger records its issue, so a token made behind the ledger's back is refused.
create function ndc_meta.issue_service_token(p_token_id text, p_scope text, p_login text, p_secret_sha256 text,
        p_expires_at timestamptz) returns text language plpgsql security definer
    set search_path = pg_catalog, pg_temp as $$
declare
    v_agency text;
begin
    if p_scope = 'agency' then
        select agency into v_agency from ndc_meta.agency_roles where role = p_login and kind = 'login';
        if not found then
            raise exception '% is not an agency login the platform registered', p_login;
        end if;
    end if;
    insert into ndc_meta.service_tokens (token_id, scope, login, agency, secret_sha256, expires_at, issued_by)
    values (p_token_id, p_scope, p_login, v_agency, p_secret_sha256, p_expires_at, session_user);
    return v_agency;
end $$;
create function ndc_meta.revoke_service_token(p_token_id text) returns table (login text, agency text)
    language sql security definer set search_path = pg_catalog, pg_temp as $$
    update ndc_meta.service_tokens t set revoked_at = now() where t.token_id = p_token_id and t.revoked_at is null
    returning t.login, t.agency
$$;
create index ledger_token_issues on ndc_meta.ledger ((details->>'token_id')) where kind = 'service_token_issued';
create index ledger_request_batches on ndc_meta.ledger (((details->>'batch_id')::bigint))
    where kind = 'service_requests';

-- Every agreement's HMAC of one key (a citizen's PIN): what the tracker looks up in the request log.
create function ndc_meta.key_digests(p_key text) returns table (agreement_id text, consumer text, digest text)
    language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_schema text;
begin
    select extnamespace::regnamespace::text into v_schema from pg_extension where extname = 'pgcrypto';
    return query execute format('select k.agreement_id, k.consumer, encode(%I.hmac(convert_to($1, ''UTF8''),'
                                ' k.hmac_key, ''sha256''), ''hex'') from ndc_meta.agreement_keys k order by 1, 2',
                                v_schema) using p_key;
end $$;

-- The service may act as an agency login or group (SET ROLE), and only as one the platform registered: as a login
-- to answer its requests, as a group for the tracker (which agreements' views hold a citizen's record).
create function ndc_meta.ensure_service_member(p_role text) returns void language plpgsql security definer
    set search_path = pg_catalog, pg_temp as $$
begin
    if not exists (select from ndc_meta.agency_roles where role = p_role) then
        raise exception 'role % is not an agency login or group', p_role;
    end if;
    if not pg_has_role('ndc_service', p_role, 'member') then
        execute format('grant %I to ndc_service', p_role);
    end if;
end $$;

-- Requests answered per agency, from each batch's ledger row (the request log itself is never scanned).
create function ndc_meta.service_requests_rollup() returns trigger language plpgsql security definer
    set search_path = pg_catalog, pg_temp as $$
begin
    insert into ndc_meta.sharing_daily as s (day, unit, agency, transactions, rows)
    select (new.recorded_at at time zone 'UTC')::date, 'request', c->>'agency', sum((c->>'answered')::bigint),
        sum((c->>'rows')::bigint)
    from jsonb_array_elements(new.details->'counts') c where (c->>'answered')::bigint > 0 group by 3
    on conflict (day, unit, agency) do update set
        transactions = s.transactions + excluded.transactions, rows = s.rows + excluded.rows;
    return null;
end $$;
create trigger ledger_service_rollup after insert on ndc_meta.ledger
    for each row when (new.kind = 'service_requests') execute function ndc_meta.service_requests_rollup();

create or replace view ndc_meta.sharing_transactions as
select date_trunc('day', l.recorded_at)::date as day, l.kind as unit,
    coalesce(l.details->>'consumer', l.details->>'consumer_agency') as agency, v.dataset,
    count(*)::bigint as transactions, sum(l.rows_loaded)::bigint as rows
from ndc_meta.ledger l
cross join lateral jsonb_array_elements_text(coalesce(l.details->'views', jsonb_build_array(l.target))) v(dataset)
where l.kind in ('delivery', 'exchange') and l.outcome = 'success'
group by 1, 2, 3, 4
union all
select day, 'read', agency, view, sum(reads)::bigint, null::bigint from ndc_meta.consumer_reads group by 1, 2, 3, 4
union all
select date_trunc('day', l.recorded_at)::date, 'request', c->>'agency', c->>'view',
    sum((c->>'answered')::bigint)::bigint, sum((c->>'rows')::bigint)::bigint
from ndc_meta.ledger l cross join lateral jsonb_array_elements(l.details->'counts') c
where l.kind = 'service_requests' and (c->>'answered')::bigint > 0
group by 1, 2, 3, 4;

revoke all on ndc_meta.service_tokens, ndc_meta.service_requests from public;
revoke all on function ndc_meta.ensure_request_partitions(date, int), ndc_meta.log_requests(bigint, int, jsonb),
    ndc_meta.issue_service_token(text, text, text, text, timestamptz), ndc_meta.revoke_service_token(text),
    ndc_meta.key_digests(text), ndc_meta.ensure_service_member(text) from public;
grant usage on schema ndc_meta to ndc_service;
grant select on ndc_meta.applied_agreements, ndc_meta.catalog, ndc_meta.publications, ndc_meta.service_tokens,
    ndc_meta.ledger_identity, ndc_meta.alembic_version to ndc_service;
grant select on ndc_meta.service_requests to ndc_service;
grant select, insert on ndc_meta.ledger to ndc_service;
grant usage on sequence ndc_meta.service_request_batches to ndc_service;
grant execute on function ndc_meta.ensure_request_partitions(date, int), ndc_meta.log_requests(bigint, int, jsonb),
    ndc_meta.key_digests(text) to ndc_service;
"""


def upgrade() -> None:
    op.execute(SERVICE)
    op.execute("select ndc_meta.ensure_request_partitions((now() at time zone 'UTC')::date - 1, 3)")

