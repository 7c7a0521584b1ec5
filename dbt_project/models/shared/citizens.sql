with

located as (
    select * from {{ ref('int_citizens_located') }}
),

final as (
    select
        citizen_id,
        full_name,
        birth_date,
        death_date,
        sex,
        ethnicity,
        household_id,
        has_registered_household,
        residence_province_code as historic_province_code,
        historic_province_name,
        current_province_code,
        current_province_name,
        residence_recorded_on,
        source_updated_at
    from located
)

select * from final
