with

source as (
    select * from {{ source('education', 'schools') }}
),

not_deleted as (
    select * from source
    where _ndc_deleted_at is null
),

renamed as (
    select
        school_id,
        {{ clean_text('name') }} as school_name,
        level as school_level,
        province_code,
        {{ clean_text('ward') }} as ward,
        exported_at as source_exported_at,
        _ndc_loaded_at as loaded_at
    from not_deleted
)

select * from renamed
