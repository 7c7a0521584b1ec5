with

source as (
    select * from {{ source('enterprise', 'enterprises') }}
),

not_deleted as (
    select * from source
    where _ndc_deleted_at is null
),

renamed as (
    select
        enterprise_code,
        {{ clean_text('name') }} as enterprise_name,
        legal_form,
        province_code,
        {{ clean_text('address') }} as address,
        registered_on,
        status,
        updated_at as source_updated_at,
        _ndc_loaded_at as loaded_at
    from not_deleted
)

select * from renamed
