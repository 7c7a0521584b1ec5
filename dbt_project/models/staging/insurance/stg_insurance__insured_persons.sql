with

source as (
    select * from {{ source('insurance', 'insured_people') }}
),

not_deleted as (
    select * from source
    where _ndc_deleted_at is null
),

renamed as (
    select
        insurance_code,
        pin as citizen_id,
        {{ clean_text('full_name') }} as full_name,
        birth_date,
        sex,
        province_code as residence_province_code,
        employer_code as enterprise_code,
        updated_at as source_updated_at,
        _ndc_loaded_at as loaded_at
    from not_deleted
)

select * from renamed
