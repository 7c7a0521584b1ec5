with

source as (
    select * from {{ source('population', 'households') }}
),

not_deleted as (
    -- rows deleted at the source (tombstone or full compare) stay in landing, marked; they are not current
    select * from source
    where _ndc_deleted_at is null
),

renamed as (
    select
        household_id,
        head_pin as head_citizen_id,
        province_code as residence_province_code,
        {{ clean_text('ward') }} as residence_ward,
        {{ clean_text('address') }} as residence_address,
        updated_at as source_updated_at,
        _ndc_loaded_at as loaded_at
    from not_deleted
)

select * from renamed
