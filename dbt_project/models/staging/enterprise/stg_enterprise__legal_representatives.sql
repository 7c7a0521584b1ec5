with

source as (
    select * from {{ source('enterprise', 'legal_representatives') }}
),

not_deleted as (
    select * from source
    where _ndc_deleted_at is null
),

renamed as (
    select
        enterprise_code || '|' || pin as legal_representative_id,
        enterprise_code,
        pin as recorded_citizen_id,
        {{ clean_text('full_name') }} as full_name,
        birth_date,
        role as representative_role,
        appointed_on,
        updated_at as source_updated_at,
        _ndc_loaded_at as loaded_at
    from not_deleted
)

select * from renamed
