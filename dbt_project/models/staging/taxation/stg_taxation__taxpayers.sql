with

source as (
    select * from {{ source('taxation', 'taxpayers') }}
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
    from source
)

select * from renamed
