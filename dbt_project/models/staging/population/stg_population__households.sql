with

source as (
    select * from {{ source('population', 'households') }}
),

renamed as (
    select
        household_id,
        head_pin as head_citizen_id,
        province_code as residence_province_code,
        ward as residence_ward,
        address as residence_address,
        updated_at as source_updated_at,
        _ndc_loaded_at as loaded_at
    from source
)

select * from renamed
