with

source as (
    select * from {{ source('education', 'enrolments') }}
),

not_deleted as (
    select * from source
    where _ndc_deleted_at is null
),

renamed as (
    select
        enrolment_id,
        student_id,
        school_id,
        school_year,
        grade,
        exported_at as source_exported_at,
        _ndc_loaded_at as loaded_at
    from not_deleted
)

select * from renamed
