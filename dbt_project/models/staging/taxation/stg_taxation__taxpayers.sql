with

source as (
    select * from {{ source('taxation', 'taxpayers') }}
),

not_deleted as (
    select * from source
    where _ndc_deleted_at is null
),

renamed as (
    select
        taxpayer_id,
        taxpayer_kind,
        pin as citizen_id,
        legacy_tax_code,
        {{ clean_text('full_name') }} as taxpayer_name,
        birth_date,
        province_code as tax_office_province_code,
        registered_on,
        updated_at as source_updated_at,
        _ndc_loaded_at as loaded_at
    from not_deleted
)

select * from renamed
