{#- Changes of permanent residence into and out of each current province per month. A move between two codes
    that belong to the same current province (e.g. Kon Tum to Quảng Ngãi before 2025-07-01) is no move. -#}
with

residence_changes as (
    select * from {{ ref('stg_population__residence_changes') }}
),

mapping as (
    select * from {{ ref('province_mapping') }}
),

moves as (
    select
        from_mapping.new_code as from_current_code,
        to_mapping.new_code as to_current_code,
        date_trunc('month', residence_changes.moved_on)::date as month
    from residence_changes
    inner join mapping as from_mapping on residence_changes.from_province_code = from_mapping.old_code
    inner join mapping as to_mapping on residence_changes.to_province_code = to_mapping.old_code
    where from_mapping.new_code != to_mapping.new_code
),

arrivals as (
    select
        to_current_code as current_province_code,
        month,
        1 as moves_in,
        0 as moves_out
    from moves
),

departures as (
    select
        from_current_code as current_province_code,
        month,
        0 as moves_in,
        1 as moves_out
    from moves
),

directed_moves as (
    select * from arrivals
    union all
    select * from departures
),

final as (
    select
        current_province_code,
        month,
        sum(moves_in) as moves_in,
        sum(moves_out) as moves_out
    from directed_moves
    group by current_province_code, month
)

select * from final
