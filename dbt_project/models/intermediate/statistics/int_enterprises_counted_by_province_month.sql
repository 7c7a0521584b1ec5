{#- Enterprises registered and dissolved per current province (of the registered address) and month. -#}
with

enterprises as (
    select * from {{ ref('stg_enterprise__enterprises') }}
),

status_events as (
    select * from {{ ref('stg_enterprise__status_events') }}
),

mapping as (
    select * from {{ ref('province_mapping') }}
),

located_enterprises as (
    select
        enterprises.enterprise_code,
        enterprises.registered_on,
        mapping.new_code as current_province_code
    from enterprises
    inner join mapping on enterprises.province_code = mapping.old_code
),

registrations as (
    select
        current_province_code,
        date_trunc('month', registered_on)::date as month,
        enterprise_code,
        false as is_dissolution
    from located_enterprises
),

dissolutions as (
    select
        located_enterprises.current_province_code,
        date_trunc('month', status_events.effective_on)::date as month,
        status_events.enterprise_code,
        true as is_dissolution
    from status_events
    inner join located_enterprises on status_events.enterprise_code = located_enterprises.enterprise_code
    where status_events.status = 'dissolved'
),

lifecycle_events as (
    select * from registrations
    union all
    select * from dissolutions
),

final as (
    -- an enterprise with several dissolution events in a month closes once
    select
        current_province_code,
        month,
        count(*) filter (where not is_dissolution) as enterprises_opened,
        count(distinct enterprise_code) filter (where is_dissolution) as enterprises_closed
    from lifecycle_events
    group by current_province_code, month
)

select * from final
