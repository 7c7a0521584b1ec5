{#- Insured persons with a (not cancelled) contribution for the month, by the current province of their residence. -#}
with

contributions as (
    select * from {{ ref('stg_insurance__contributions') }}
),

insured_persons as (
    select * from {{ ref('stg_insurance__insured_persons') }}
),

mapping as (
    select * from {{ ref('province_mapping') }}
),

final as (
    select
        mapping.new_code as current_province_code,
        contributions.contribution_month as month,
        count(distinct contributions.insurance_code) as insured_workers
    from contributions
    inner join insured_persons on contributions.insurance_code = insured_persons.insurance_code
    inner join mapping on insured_persons.residence_province_code = mapping.old_code
    group by 1, 2
)

select * from final
