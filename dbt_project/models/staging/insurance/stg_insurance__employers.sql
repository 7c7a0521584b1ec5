with

source as (
    select * from {{ source('insurance', 'employers') }}
),

not_deleted as (
    select * from source
    where _ndc_deleted_at is null
),

renamed as (
    select
        employer_code as enterprise_code,
        {{ clean_text('name') }} as employer_name,
        province_code,
        updated_at as source_updated_at,
        _ndc_loaded_at as loaded_at
    from not_deleted
)

select * from renamed
