{#- Province codes with their validity: the 63 in force until 2025-06-30, the 34 from 2025-07-01. -#}
with

mapping as (
    select * from {{ ref('province_mapping') }}
),

before_reorganisation as (
    select distinct
        old_code as province_code,
        old_name as province_name,
        date '1900-01-01' as valid_from,
        valid_to
    from mapping
),

after_reorganisation as (
    select distinct
        new_code as province_code,
        new_name as province_name,
        valid_from,
        date '9999-12-31' as valid_to
    from mapping
),

final as (
    select * from before_reorganisation
    union all
    select * from after_reorganisation
)

select * from final
