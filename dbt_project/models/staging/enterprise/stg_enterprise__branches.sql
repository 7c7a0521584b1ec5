with

source as (
    select * from {{ source('enterprise', 'branches') }}
),

not_deleted as (
    -- a closed branch is soft-deleted at the source (tombstone) and marked deleted in landing
    select * from source
    where _ndc_deleted_at is null
),

renamed as (
    select
        branch_code,
        enterprise_code,
        {{ clean_text('name') }} as branch_name,
        province_code,
        {{ clean_text('address') }} as address,
        opened_on,
        updated_at as source_updated_at,
        _ndc_loaded_at as loaded_at
    from not_deleted
)

select * from renamed
