with

source as (
    select * from {{ source('education', 'students') }}
),

not_deleted as (
    select * from source
    where _ndc_deleted_at is null
),

renamed as (
    select
        student_id,
        pin as citizen_id,
        {{ clean_text('full_name') }} as full_name,
        birth_date,
        sex,
        province_code,
        exported_at as source_exported_at,
        _ndc_loaded_at as loaded_at
    from not_deleted
)

select * from renamed
