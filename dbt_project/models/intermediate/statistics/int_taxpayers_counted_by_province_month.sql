{#- Taxpayers (individuals and enterprises) registered per month, by the current province of their tax office. -#}
with

taxpayers as (
    select * from {{ ref('stg_taxation__taxpayers') }}
),

mapping as (
    select * from {{ ref('province_mapping') }}
),

final as (
    select
        mapping.new_code as current_province_code,
        date_trunc('month', taxpayers.registered_on)::date as month,
        count(*) as taxpayers_registered
    from taxpayers
    inner join mapping on taxpayers.tax_office_province_code = mapping.old_code
    group by 1, 2
)

select * from final
