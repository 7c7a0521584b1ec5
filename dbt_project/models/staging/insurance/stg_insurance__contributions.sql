with

source as (
    select * from {{ source('insurance', 'contributions') }}
),

not_deleted as (
    -- a cancelled contribution arrives as a tombstone (deleted_at) and is marked deleted in landing
    select * from source
    where _ndc_deleted_at is null
),

renamed as (
    select
        contribution_id,
        insurance_code,
        employer_code as enterprise_code,
        contribution_month,
        amount::numeric(18, 0) as amount_vnd,
        updated_at as source_updated_at,
        _ndc_loaded_at as loaded_at
    from not_deleted
)

select * from renamed
